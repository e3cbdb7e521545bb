"""The spectral view of δ-pairs (docs/theory.md, "Spectral view of the pairs"): the pair statistics Σ_T and Σ_Δ,
accumulated from given pairs (``data.pairs.sampled_pair_moments`` feeds it the pairs the heads' own sampler
draws), their exact expectation under that sampler, and the closed-form head they determine.

Σ_T = Cov(x), Σ_Δ = ½E[(x − x⁺)(x − x⁺)ᵀ]. The closed form is the r generalised eigenvectors of (Σ_Δ, Σ_T) with
the smallest eigenvalues, solved inside the span Σ_T occupies above ``FEATURE_FLOOR``: the linear optimum of the
spectral contrastive loss, and in the population the Fisher subspace for every δ > 0 (Σ_Δ = δΣ_W + (1 − δ)Σ_T).
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

import numpy as np

from ssl_pipeline.errors import DataError
from ssl_pipeline.theory.subspaces import FEATURE_FLOOR, class_statistics, feature_span, total_covariance

MIN_PAIRS_PER_DIMENSION = 10
"""Σ_Δ needs at least this many sampled pairs per feature dimension (else its smallest eigenvalues are noise)."""


class PairMoments(NamedTuple):
    """Σ_T [d, d] (biased, of the training features), Σ_Δ [d, d] from ``pairs`` sampled pairs, float64."""

    total: np.ndarray
    delta_covariance: np.ndarray
    pairs: int


class ClosedForm(NamedTuple):
    """The closed-form head [d, r] (feature coordinates), its generalised eigenvalues [r] (ascending) and the
    rank of Σ_T kept by the floor."""

    basis: np.ndarray
    eigenvalues: np.ndarray
    rank: int


def pair_moments(
    x: np.ndarray, y: np.ndarray, pairs: Iterable[np.ndarray], chunk: int = 8192, total: np.ndarray | None = None
) -> PairMoments:
    """Σ_T of x [N, d] (biased; ``total`` if already computed) and Σ_Δ = ½·mean over the given pairs of
    (x_a − x_b)(x_a − x_b)ᵀ, ``pairs`` being index arrays [2, P] (e.g. one per epoch of the heads' sampler,
    ``data.pairs.sampled_pair_moments``). Accumulated in float64 chunks; fewer than ``MIN_PAIRS_PER_DIMENSION``·d
    pairs are refused."""
    import torch  # float64 GEMMs through torch's BLAS (MKL): numpy's took 4× longer on the main job

    x = np.ascontiguousarray(x)
    d = x.shape[1]
    features = torch.from_numpy(x)
    scatter = torch.zeros(d, d, dtype=torch.float64)
    count = 0
    for block in pairs:
        block = torch.as_tensor(np.asarray(block))
        for start in range(0, block.shape[1], chunk):
            a, b = block[:, start : start + chunk]
            diff = features[a].double() - features[b].double()
            scatter += diff.T @ diff
        count += block.shape[1]
    scatter = scatter.numpy()
    if count < MIN_PAIRS_PER_DIMENSION * d:
        raise DataError(f"Σ_Δ from {count} sampled pairs in {d} dimensions is noise; it needs at least "
                        f"{MIN_PAIRS_PER_DIMENSION}·d = {MIN_PAIRS_PER_DIMENSION * d} pairs (raise heads.epochs or "
                        "the number of training points)")
    if total is None:
        total = total_covariance(class_statistics(x, y, int(y.max()) + 1))
    return PairMoments(total, 0.5 * scatter / count, count)


def expected_pair_covariance(x: np.ndarray, y: np.ndarray, delta: float) -> np.ndarray:
    """The exact expectation of Σ_Δ under ``sample_delta_positives`` on (x, y): δ·Σ_k (n_k/N)(n_k/(n_k − 1)) S_k
    + (1 − δ) S_T, with S_k, S_T the biased class and total covariances (the same-class draw excludes the anchor,
    the uniform draw does not)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    total = np.cov(x.T, bias=True)
    within = np.zeros_like(total)
    for k in np.unique(y):
        members = x[y == k]
        n_k = len(members)
        within += (n_k / n) * (n_k / (n_k - 1)) * np.cov(members.T, bias=True)
    return delta * within + (1 - delta) * total


def spectral_closed_form(moments: PairMoments, r: int, relative_floor: float = FEATURE_FLOOR) -> ClosedForm:
    """The r generalised eigenvectors of (Σ_Δ, Σ_T) with the smallest eigenvalues, [d, r]: Σ_T is whitened inside
    the span it occupies above the floor (U Λ^(−1/2)), the whitened Σ_Δ is diagonalised there, and its r smallest
    eigenvectors are mapped back. ``r`` must stay below that span's rank."""
    span = feature_span(moments.total, relative_floor)
    if r >= span.rank:
        raise DataError(f"heads.r={r} must stay below the rank the features occupy ({span.rank} directions of Σ_T "
                        f"above the relative eigenvalue floor {relative_floor:g}); choose r < {span.rank}")
    whiten = span.basis / np.sqrt(span.eigenvalues)
    eigenvalues, vectors = np.linalg.eigh(whiten.T @ moments.delta_covariance @ whiten)
    return ClosedForm(whiten @ vectors[:, :r], eigenvalues[:r], span.rank)
