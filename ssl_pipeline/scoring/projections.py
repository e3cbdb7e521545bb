"""Projections to score: fitted heads and the baselines (docs/theory.md, "Clustering score").

Every projection is fitted on train and maps features x [N, d] as stored (it centres them with the training
mean itself) to z [N, m]; ``subspace``
[d, m] is the matrix whose column space is compared with the Fisher subspace (None for raw features).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ssl_pipeline.heads.fit import FittedHead
from ssl_pipeline.theory.subspaces import auto_shrinkage, class_mean_subspace, class_statistics


@dataclass
class Projection:
    method: str
    transform: Callable[[np.ndarray], np.ndarray]
    subspace: Optional[np.ndarray]
    normalized: bool
    """Whether z is L2-normalised before clustering (cosine heads)."""
    r: int
    """The nominal output dimension (the denominator of ``fisher_cos2``)."""


def head_projection(head: FittedHead) -> Projection:
    """z = Ãᵀ(x − x̄_train); cosine heads (InfoNCE-cosine, SimSiam) are L2-normalised for clustering."""
    normalized = head.settings.method in ("simsiam", "clip") or head.settings.similarity == "cosine"
    return Projection(head.settings.method, head.project, head.feature_space_weight(), normalized, head.settings.r)


def baseline_projection(
    method: str, x_train: np.ndarray, y_train: np.ndarray, r: int, seed: int, lda_shrinkage: Optional[float]
) -> Projection:
    """LDA (sklearn's within-class-whitened ``transform``, min(r, K−1) components), PCA(r), the class means'
    subspace (``means``: orthogonal projection onto the first min(r, K−1) directions of span{μ_k − μ̄} estimated on
    train), a random Gaussian projection(r) or the raw centred features, all fitted on train."""
    mean = x_train.mean(axis=0, dtype=np.float64).astype(np.float32)
    if method == "lda":
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        num_classes = int(y_train.max()) + 1
        shrinkage = auto_shrinkage(class_statistics(x_train, y_train, num_classes), lda_shrinkage)
        components = min(r, len(np.unique(y_train)) - 1)
        # Unshrunk: the exact SVD solver; shrunk: scikit-learn's eigen solver (which shrinks standardised data).
        solver = {"solver": "svd"} if shrinkage == 0 else {"solver": "eigen", "shrinkage": shrinkage}
        lda = LinearDiscriminantAnalysis(n_components=components, **solver).fit(x_train, y_train)
        return Projection("lda", lda.transform, lda.scalings_[:, :components], False, r)
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=r, svd_solver="covariance_eigh").fit(x_train)
        return Projection("pca", pca.transform, pca.components_.T, False, r)
    if method == "means":
        basis = class_mean_subspace(x_train, y_train, int(y_train.max()) + 1)[:, :r].astype(np.float32)
        return Projection("means", lambda x: (x - mean) @ basis, basis, False, r)
    if method == "random":
        matrix = np.random.default_rng([seed, 7]).standard_normal((x_train.shape[1], r)).astype(np.float32)
        return Projection("random", lambda x: (x - mean) @ matrix, matrix, False, r)
    if method == "raw":
        return Projection("raw", lambda x: x - mean, None, False, x_train.shape[1])
    raise ValueError(f"unknown baseline {method!r}")


def closed_form_projection(x_train: np.ndarray, basis: np.ndarray) -> Projection:
    """The ``spectral`` baseline: z = Wᵀ(x − x̄_train) with W [d, r] the closed form of the sampled pair statistics
    (``theory.spectral.spectral_closed_form``), unnormalised (the spectral losses compare raw projections)."""
    mean = x_train.mean(axis=0, dtype=np.float64).astype(np.float32)
    weight = basis.astype(np.float32)
    return Projection("spectral", lambda x: (x - mean) @ weight, basis, False, basis.shape[1])
