"""The surrogate: points drawn from the tied GMM fitted to labelled features, the parametric bootstrap that
calibrates every GMM check and every head score (docs/theory.md, "GMM checks on real features")."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ssl_pipeline.theory.gmm import GMMParameters
from ssl_pipeline.theory.subspaces import class_statistics, shrunk_within_covariance

_CHUNK = 8192
_STREAM = 0x5EED  # keeps surrogate draws apart from other generators seeded with the same integer


def fit_tied_gmm(x: np.ndarray, y: np.ndarray, num_classes: int, shrinkage: float | None) -> GMMParameters:
    """The tied GMM of labelled x [N, d], y [N] (docs/theory.md, "GMM"): π_k = n_k/N, class means μ_k [K, d] and the
    pooled within-class covariance shrunk toward (tr Σ/d)·I by ``shrinkage`` (None: ``auto_shrinkage``), float64."""
    stats = class_statistics(x, y, num_classes)
    covariance, _ = shrunk_within_covariance(stats, shrinkage)
    return GMMParameters(stats.weights, stats.means, covariance)


def sample_given_labels(params: GMMParameters, labels: Sequence[np.ndarray], seed: int) -> list[np.ndarray]:
    """One array x [N, d] float32 per label array y [N] of ``labels``, x_i ~ N(μ_{y_i}, Σ): x = μ + L g with
    Σ = L Lᵀ (float64 Cholesky), drawn per class in chunks, the arrays in order from one generator seeded by
    ``seed``. Raises ``numpy.linalg.LinAlgError`` when Σ is singular."""
    factor = np.linalg.cholesky(params.covariance)
    rng = np.random.default_rng([seed, _STREAM])
    return [_sample_like(y, params.means, factor, rng) for y in labels]


def _sample_like(y: np.ndarray, means: np.ndarray, factor: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """x [N, d] float32 with x_i ~ N(μ_{y_i}, L Lᵀ), labels y [N], means [K, d], lower factor L [d, d]."""
    x = np.empty((len(y), means.shape[1]), dtype=np.float32)
    for k in np.unique(y):
        rows = np.flatnonzero(y == k)
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            x[chunk] = means[k] + rng.standard_normal((len(chunk), means.shape[1])) @ factor.T
    return x
