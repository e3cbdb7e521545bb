"""How a linear head is parametrised: A = basis·B with B [G, m, r] the trained parameter, the basis spanning the
directions the training inputs occupy above the eigenvalue floor (docs/theory.md, "Linear heads").

Adam takes steps of about ``lr`` in every coordinate of B whatever the size of its gradient, so the basis decides
how far each direction of the features moves per step. With U [d, m] the eigenvectors of the input covariance Σ̂
above the floor and Λ their variances:

- ``orthonormal``: basis U. A step moves the output along u_i by ≈ lr·√λ_i: the step depends on the features'
  units (features ×10 train 10× faster) as well as on the spectrum.
- ``scaled``: basis U/√λ_1 (λ_1 the largest variance): ``orthonormal`` made unit-free. The top direction's
  output moves by ≈ lr of its standard deviation per step, a direction of variance λ_i by ≈ lr·√(λ_i/λ_1): the
  low-variance directions, where a batch's second moments are noisiest relative to their signal, move slowest.
- ``whitened``: basis UΛ^(−1/2). Every direction's output moves by ≈ lr per step, the low-variance ones
  included: on features with many directions above the floor a batch's gradient is dominated by them, and a head
  that has not finished learning sits in the **minor** subspace (the bottom of Σ̂'s spectrum).

Measured (median of 3 seeds or seed 0, Adam, the shipped configs' lr and epochs; fisher_cos2 / optimum_cos2 to the
pairs' closed form): on ``spectrum`` (512 directions, λ over three decades, 1,320 steps) whitened heads ended at
optimum_cos2 0.36–0.83 where ``scaled`` reached 0.93–0.99; on ``fisher_vs_means`` with quiet directions (variances up
to 270) ``orthonormal`` failed for SimSiam and spectral contrastive (optimum_cos2 0.15–0.20: steps of lr·15 output
standard deviations) where ``scaled`` reached ≥ 0.99; on the quiet pancakes and on digits ``scaled`` matched or
beat ``whitened`` for every method (benchmarks/README.md, "Head parametrisation"). ``auto`` therefore gives
``scaled`` to SimSiam with the covariance guard and the spectral heads, and keeps ``orthonormal`` for InfoNCE, the
Euclidean-guarded SimSiam and CLIP towers (cosine losses, whose numbers the labs' claims were set on).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ssl_pipeline.theory.subspaces import FeatureSpan

PARAMETRIZATIONS = ("orthonormal", "scaled", "whitened")


class HeadBasis(NamedTuple):
    """basis [d, m] (A = basis·B) and the variances [m] of the inputs' coordinates in it, diag(basisᵀΣ̂ basis)
    (Σ̂ is diagonal in its eigenbasis): SimSiam's covariance guard ‖AᵀΣ̂A − I‖²_F = ‖Bᵀ diag(variances) B − I‖²_F."""

    basis: np.ndarray
    variances: np.ndarray


def head_basis(span: FeatureSpan, parametrization: str) -> HeadBasis:
    """The basis of ``parametrization`` (module docstring) for the inputs' span (eigenvectors [d, m] and their
    variances [m], descending)."""
    eigenvalues = np.asarray(span.eigenvalues, dtype=np.float64)
    if parametrization == "orthonormal":
        factor = np.ones_like(eigenvalues)
    elif parametrization == "scaled":
        factor = np.full_like(eigenvalues, 1.0 / np.sqrt(eigenvalues[0]))
    elif parametrization == "whitened":
        factor = 1.0 / np.sqrt(eigenvalues)
    else:
        raise ValueError(f"unknown parametrization {parametrization!r}; valid: {', '.join(PARAMETRIZATIONS)}")
    return HeadBasis(span.basis * factor, eigenvalues * factor**2)


def orthonormal_init(num_heads: int, dim: int, r: int, seed: int) -> Tensor:
    """G random matrices [G, d, r] with orthonormal columns (QR of a seeded Gaussian): B's initial value. With the
    ``orthonormal`` and ``scaled`` bases the untrained head's column space is a uniformly random r-subspace of the
    span; the ``whitened`` basis tilts it toward the low-variance directions. A first layer wider than its span
    (r > dim: a one-hidden-layer head's W) gets orthonormal rows instead."""
    generator = torch.Generator().manual_seed(seed)
    if r > dim:
        return torch.linalg.qr(torch.randn(num_heads, r, dim, generator=generator)).Q.transpose(-1, -2)
    return torch.linalg.qr(torch.randn(num_heads, dim, r, generator=generator)).Q
