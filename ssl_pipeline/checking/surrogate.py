"""Surrogate features: labelled splits drawn from the tied GMM fitted to real ones (``theory.surrogate``), the
parametric bootstrap that calibrates every GMM check and every head score (docs/theory.md, "GMM checks on real
features")."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ssl_pipeline.data.labelled import LabelledFeatures
from ssl_pipeline.errors import DataError
from ssl_pipeline.theory.gmm import GMMParameters
from ssl_pipeline.theory.subspaces import shrunk_within_covariance
from ssl_pipeline.theory.surrogate import sample_given_labels


def sample_surrogate(features: LabelledFeatures, shrinkage: float | None, seed: int) -> LabelledFeatures:
    """Train/val/test [N, d] float32 drawn from the tied GMM fitted on ``features``' train split, with the real
    label arrays (so the same class sizes per split). Deterministic per ``seed``; ``fisher_basis`` is None, so the
    pipeline estimates it as on real features. Dataset, backbone, class names and text features are kept (the
    surrogate lives in the same coordinates). The tied GMM is ``theory.surrogate.fit_tied_gmm``'s, from the
    training split's cached class statistics (``LabelledFeatures.statistics``: one chunked pass for all surrogates).
    """
    stats = features.statistics("train")
    covariance, _ = shrunk_within_covariance(stats, shrinkage)
    params = GMMParameters(stats.weights, stats.means, covariance)
    absent = np.setdiff1d(np.concatenate([features.y_val, features.y_test]), features.y_train)
    if absent.size:
        raise DataError(f"class {int(absent[0])} has val/test samples but none in train, so the surrogate has no "
                        "mean for it; drop the class or re-split the features")
    try:
        x_train, x_val, x_test = sample_given_labels(params, [features.y_train, features.y_val, features.y_test], seed)
    except np.linalg.LinAlgError as error:
        raise DataError("the pooled within-class covariance is singular, so no surrogate can be drawn; "
                        "set check.shrinkage > 0") from error
    base = features.features_key or features.dataset
    key = f"{base}-surrogate{seed}" + ("" if shrinkage is None else f"-shrinkage{shrinkage:g}")
    return replace(
        features, x_train=x_train, y_train=features.y_train.copy(), x_val=x_val, y_val=features.y_val.copy(),
        x_test=x_test, y_test=features.y_test.copy(), data_kind="surrogate", features_key=key, fisher_basis=None,
        class_names=list(features.class_names),
    )
