"""The surrogate: labelled features drawn from the tied GMM fitted to real ones, the parametric bootstrap that
calibrates every GMM check and every head score (docs/theory.md, "GMM checks on real features")."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ssl_pipeline.data.labelled import LabelledFeatures
from ssl_pipeline.data.synthetic import GMMParameters
from ssl_pipeline.errors import DataError
from ssl_pipeline.theory.subspaces import class_statistics, shrunk_within_covariance

_CHUNK = 8192
_STREAM = 0x5EED  # keeps surrogate draws apart from other generators seeded with the same integer


def fit_tied_gmm(x: np.ndarray, y: np.ndarray, num_classes: int, shrinkage: float | None) -> GMMParameters:
    """The tied GMM of labelled x [N, d], y [N] (docs/theory.md, "GMM"): π_k = n_k/N, class means μ_k [K, d] and the
    pooled within-class covariance shrunk toward (tr Σ/d)·I by ``shrinkage`` (None: ``auto_shrinkage``), float64."""
    stats = class_statistics(x, y, num_classes)
    covariance, _ = shrunk_within_covariance(stats, shrinkage)
    return GMMParameters(stats.weights, stats.means, covariance)


def sample_surrogate(features: LabelledFeatures, shrinkage: float | None, seed: int) -> LabelledFeatures:
    """Train/val/test [N, d] float32 drawn from the tied GMM fitted on ``features``' train split, with the real
    label arrays (so the same class sizes per split): x_i ~ N(μ_{y_i}, Σ), x = μ + L g with Σ = L Lᵀ (float64
    Cholesky), drawn per class in chunks. Deterministic per ``seed``; ``fisher_basis`` is None, so the pipeline
    estimates it as on real features. Dataset, backbone, class names and text features are kept (the surrogate
    lives in the same coordinates)."""
    params = fit_tied_gmm(features.x_train, features.y_train, features.num_classes, shrinkage)
    absent = np.setdiff1d(np.concatenate([features.y_val, features.y_test]), features.y_train)
    if absent.size:
        raise DataError(f"class {int(absent[0])} has val/test samples but none in train, so the surrogate has no "
                        "mean for it; drop the class or re-split the features")
    try:
        factor = np.linalg.cholesky(params.covariance)
    except np.linalg.LinAlgError as error:
        raise DataError("the pooled within-class covariance is singular, so no surrogate can be drawn; "
                        "set check.shrinkage > 0") from error
    rng = np.random.default_rng([seed, _STREAM])
    x_train, x_val, x_test = (_sample_like(y, params.means, factor, rng)
                              for y in (features.y_train, features.y_val, features.y_test))
    base = features.features_key or features.dataset
    key = f"{base}-surrogate{seed}" + ("" if shrinkage is None else f"-shrinkage{shrinkage:g}")
    return replace(
        features, x_train=x_train, y_train=features.y_train.copy(), x_val=x_val, y_val=features.y_val.copy(),
        x_test=x_test, y_test=features.y_test.copy(), data_kind="surrogate", features_key=key, fisher_basis=None,
        class_names=list(features.class_names),
    )


def _sample_like(y: np.ndarray, means: np.ndarray, factor: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """x [N, d] float32 with x_i ~ N(μ_{y_i}, L Lᵀ), labels y [N], means [K, d], lower factor L [d, d]."""
    x = np.empty((len(y), means.shape[1]), dtype=np.float32)
    for k in np.unique(y):
        rows = np.flatnonzero(y == k)
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            x[chunk] = means[k] + rng.standard_normal((len(chunk), means.shape[1])) @ factor.T
    return x
