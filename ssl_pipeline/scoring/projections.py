"""Projections to score: fitted heads and the baselines (docs/theory.md, "Clustering score").

Every projection is fitted on train and maps features x [N, d] as stored (it centres them with the training
mean itself) to z [N, m]; ``subspace``
[d, m] is the matrix whose column space is compared with the Fisher subspace (None for raw features).

The baselines are fitted from the training split's class statistics (``LabelledFeatures.statistics``: one
chunked float64 pass), never from a copy of the feature matrix, and ``Projection.apply`` maps a split chunk by
chunk: LDA reproduces scikit-learn's ``LinearDiscriminantAnalysis`` (the SVD solver unshrunk, the eigen solver
shrunk) and PCA its ``covariance_eigh`` solver, up to the sign of each column and float32 rounding (sklearn
fits float32 data in float32; tests/test_chunked.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ssl_pipeline.data.rows import ArrayLike, row_chunks, take_rows
from ssl_pipeline.heads.fitted import FittedHead
from ssl_pipeline.theory.subspaces import (
    ClassStatistics,
    auto_shrinkage,
    class_mean_subspace_from_statistics,
    class_statistics,
    feature_span,
    total_covariance,
)


@dataclass
class Projection:
    method: str
    transform: Callable[[np.ndarray], np.ndarray]
    """z = f(x) for an in-memory block x [n, d]; ``apply`` calls it chunk by chunk."""
    subspace: Optional[np.ndarray]
    normalized: bool
    """Whether z is L2-normalised before clustering (cosine heads)."""
    r: int
    """The nominal output dimension (the denominator of ``fisher_cos2``)."""

    def apply(self, x: ArrayLike, rows: Optional[np.ndarray] = None) -> np.ndarray:
        """z [n, m] float32 of x [N, d] (an ndarray or ``FeatureRows``), or of its rows ``rows``, read in chunks of
        float32 rows (``data.rows.row_chunks``): the projection of one row does not depend on the others."""
        if rows is not None:
            x = take_rows(x, rows)
        blocks = [np.asarray(self.transform(block), dtype=np.float32) for _, block in row_chunks(x, np.float32)]
        if blocks:
            return np.concatenate(blocks)
        return np.zeros((0, self.r if self.subspace is None else self.subspace.shape[1]), dtype=np.float32)


def head_projection(head: FittedHead) -> Projection:
    """z = Ãᵀ(x − x̄_train); cosine heads (InfoNCE-cosine, SimSiam) are L2-normalised for clustering. A
    one-hidden-layer head maps through both layers, and its subspace is its first layer's row space W̃ [d, w]
    (nominal dimension w)."""
    normalized = head.settings.method in ("simsiam", "clip") or head.settings.similarity == "cosine"
    return Projection(head.settings.method, head.project, head.feature_space_weight(), normalized,
                      head.settings.width)


def _affine(method: str, mean: np.ndarray, matrix: np.ndarray, subspace: Optional[np.ndarray], r: int) -> Projection:
    mean32, matrix32 = mean.astype(np.float32), matrix.astype(np.float32)
    return Projection(method, lambda x: (np.asarray(x, dtype=np.float32) - mean32) @ matrix32, subspace, False, r)


def baseline_projection(
    method: str, x_train: ArrayLike, y_train: np.ndarray, r: int, seed: int, lda_shrinkage: Optional[float],
    stats: Optional[ClassStatistics] = None,
) -> Projection:
    """LDA (scikit-learn's within-class-whitened ``transform``, min(r, K−1) components: ``lda_scalings``), PCA(r)
    (the top-r eigenvectors of Σ_T), ``minor``(r) (the bottom-r eigenvectors of Σ_T inside the span above the
    eigenvalue floor: what a head biased toward low variance finds), the class means' subspace (``means``: orthogonal projection onto the first
    min(r, K−1) directions of span{μ_k − μ̄} estimated on train), a random Gaussian projection(r) inside the span
above the eigenvalue floor (where the heads are optimised: chance ``fisher_cos2`` max(r, q)/m) or the raw
    centred features, all fitted on train: from ``stats`` (the training split's ``class_statistics``), computed
    here in one chunked pass if not given."""
    if stats is None:
        stats = class_statistics(x_train, y_train, int(np.max(y_train)) + 1)
    mean = stats.weights @ stats.means
    d = stats.means.shape[1]
    if method == "lda":
        shrinkage = auto_shrinkage(stats, lda_shrinkage)
        scalings = lda_scalings(stats, r, shrinkage)
        return _affine("lda", mean, scalings, scalings, r)
    if method == "pca":
        if not 1 <= r <= d:
            raise ValueError(f"PCA with n_components={r} needs 1 ≤ r ≤ the feature dimension {d}")
        eigenvalues, vectors = np.linalg.eigh(total_covariance(stats))
        components = vectors[:, np.argsort(eigenvalues)[::-1][:r]]
        return _affine("pca", mean, components, components, r)
    if method == "minor":
        span = feature_span(total_covariance(stats))
        if not 1 <= r <= span.rank:
            raise ValueError(f"the minor baseline with r={r} needs 1 ≤ r ≤ the rank above the floor {span.rank}")
        components = span.basis[:, ::-1][:, :r]
        return _affine("minor", mean, components, components, r)
    if method == "means":
        basis = class_mean_subspace_from_statistics(stats)[:, :r]
        return _affine("means", mean, basis, basis.astype(np.float32), r)
    if method == "random":
        # inside the span above the floor, where the heads are optimised: chance max(r, q)/m, m its rank
        span = feature_span(total_covariance(stats)).basis
        matrix = (span @ np.random.default_rng([seed, 7]).standard_normal((span.shape[1], r))).astype(np.float32)
        return _affine("random", mean, matrix, matrix, r)
    if method == "raw":
        mean32 = mean.astype(np.float32)
        return Projection("raw", lambda x: np.asarray(x, dtype=np.float32) - mean32, None, False, d)
    raise ValueError(f"unknown baseline {method!r}")


LDA_TOLERANCE = 1e-4
"""scikit-learn's ``LinearDiscriminantAnalysis(tol=1e-4)``: the rank tolerance of the SVD solver."""


def lda_scalings(stats: ClassStatistics, r: int, shrinkage: float) -> np.ndarray:
    """The LDA directions [d, ≤ min(r, K − 1)] of scikit-learn's ``LinearDiscriminantAnalysis`` fitted on the
    data of ``stats`` (its ``scalings_[:, :components]``; the classes present in train), from the statistics:

    - ``shrinkage`` 0: the SVD solver. Within-class whitening W = D⁻¹V S⁻¹ from the eigen-decomposition of the
      standardised pooled covariance D⁻¹ S_W D⁻¹ (D² = diag S_W, 1 on constant channels; singular values
      S ≤ ``LDA_TOLERANCE`` dropped), then the right singular vectors of the whitened, prior-weighted class means
      (those below ``LDA_TOLERANCE`` × the largest dropped): sklearn's SVDs of the data, up to column signs.
    - ``shrinkage`` s > 0: the eigen solver (scikit-learn ≥ 1.6 shrinks each class covariance toward its mean
      variance): S_W = (1 − s)S_W + s·(tr S_W/d)·I, S_T likewise, S_B = S_T − S_W, and the generalised
      eigenvectors of (S_B, S_W) by decreasing eigenvalue, normalised to vᵀS_W v = 1.
    """
    present = stats.counts > 0
    counts, means = stats.counts[present], stats.means[present]
    n, k, d = float(counts.sum()), int(present.sum()), means.shape[1]
    priors = counts / n
    xbar = priors @ means
    components = min(r, k - 1)
    if shrinkage == 0:
        std = np.sqrt(np.maximum(np.diag(stats.within_covariance), 0.0))
        std[std == 0] = 1.0
        gram = stats.within_covariance / np.outer(std, std)
        eigenvalues, vectors = np.linalg.eigh((gram + gram.T) / 2)
        order = np.argsort(eigenvalues)[::-1]
        singular = np.sqrt(np.maximum(eigenvalues[order], 0.0))
        rank = int(np.sum(singular > LDA_TOLERANCE))
        whitening = (vectors[:, order[:rank]] / std[:, None]) / singular[:rank]
        between = (np.sqrt(n * priors / max(k - 1, 1))[:, None] * (means - xbar)) @ whitening
        _, s_between, vt = np.linalg.svd(between, full_matrices=False)
        kept = int(np.sum(s_between > LDA_TOLERANCE * s_between[0])) if s_between.size else 0
        return (whitening @ vt.T[:, :kept])[:, :components]
    from scipy.linalg import eigh

    within = (1 - shrinkage) * stats.within_covariance + shrinkage * np.trace(stats.within_covariance) / d * np.eye(d)
    total = total_covariance(stats)
    total = (1 - shrinkage) * total + shrinkage * np.trace(total) / d * np.eye(d)
    eigenvalues, vectors = eigh(total - within, within)
    return vectors[:, np.argsort(eigenvalues)[::-1]][:, :components]


def closed_form_projection(x_train: ArrayLike, basis: np.ndarray, mean: Optional[np.ndarray] = None) -> Projection:
    """The ``spectral`` baseline: z = Wᵀ(x − x̄_train) with W [d, r] the closed form of the sampled pair statistics
    (``theory.spectral.spectral_closed_form``), unnormalised (the spectral losses compare raw projections).
    ``mean``: x̄_train if known (else one chunked pass)."""
    if mean is None:
        mean = x_train.mean(axis=0, dtype=np.float64)
    return _affine("spectral", np.asarray(mean, dtype=np.float64), basis, basis, basis.shape[1])
