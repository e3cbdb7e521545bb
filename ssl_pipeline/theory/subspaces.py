"""Fisher subspace, principal angles and the subspace-recovery scores (docs/theory.md, "Fisher subspace",
"Subspace recovery").

All subspaces live in the coordinates of the features as given (centred, not rescaled). Statistics are
accumulated in float64 over chunks (``data.rows.row_chunks``) in one pass, so a feature matrix (in memory or a
memory map) is never copied whole; everything else here is computed from those statistics.
"""

from __future__ import annotations

import collections
import functools
import hashlib
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

import numpy as np

from ssl_pipeline.theory.chunks import row_chunks


def orthonormal_basis(vectors: np.ndarray, rtol: float = 1e-6) -> np.ndarray:
    """Orthonormal basis [d, q] of the column span of ``vectors`` [d, m]; directions with singular value below
    ``rtol`` × the largest are dropped (the rank tolerance)."""
    u, s, _ = np.linalg.svd(np.asarray(vectors, dtype=np.float64), full_matrices=False)
    if s.size == 0 or s[0] == 0:
        return u[:, :0]
    return u[:, s > rtol * s[0]]


def fisher_subspace(means: np.ndarray, covariance: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """S_F = span{Σ⁻¹(μ_k − μ̄)}, μ̄ = Σ_k π_k μ_k, as an orthonormal basis [d, q], q ≤ K−1.

    means [K, d], covariance [d, d] (SPD), weights [K].
    """
    means = np.asarray(means, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64) / np.sum(weights)
    centred = means - weights @ means
    directions = np.linalg.solve(np.asarray(covariance, dtype=np.float64), centred.T)
    return orthonormal_basis(directions)[:, : len(weights) - 1]


@dataclass
class ClassStatistics:
    """Per-class counts [K], means [K, d] and the pooled within-class covariance [d, d] (divided by N), float64.

    ``ledoit_wolf_shrinkage`` (of the within-class covariance) needs the fourth moment of the residuals, one more
    pass over the data the statistics came from: it is computed on first use only (``auto_shrinkage`` asks for it
    only when N − K < 10·d), and kept."""

    counts: np.ndarray
    means: np.ndarray
    within_covariance: np.ndarray
    source: Optional[tuple] = field(default=None, repr=False, compare=False)
    """(x, y, basis): the data the statistics were accumulated from, for the deferred Ledoit–Wolf pass."""

    @property
    def weights(self) -> np.ndarray:
        return self.counts / self.counts.sum()

    @functools.cached_property
    def ledoit_wolf_shrinkage(self) -> float:
        """The formula of ``sklearn.covariance.ledoit_wolf_shrinkage`` applied to the residuals x − μ_y (one
        chunked pass, without materialising them)."""
        if self.source is None:
            raise ValueError("these class statistics carry no data to compute the Ledoit–Wolf shrinkage from")
        x, y, basis = self.source
        fourth_moment = 0.0
        for start, block in row_chunks(x, np.float64):
            residual = (block if basis is None else block @ basis) - self.means[y[start : start + len(block)]]
            fourth_moment += float(np.sum(np.einsum("nd,nd->n", residual, residual) ** 2))
        covariance, n = self.within_covariance, float(self.counts.sum())
        d = covariance.shape[0]
        mu = np.trace(covariance) / d
        delta = (np.sum(covariance**2) - 2 * mu * np.trace(covariance) + d * mu**2) / d
        beta = min((fourth_moment / n - np.sum(covariance**2)) / (d * n), delta)
        return 0.0 if delta == 0 else float(beta / delta)

    def restricted(self, basis: np.ndarray) -> ClassStatistics:
        """The statistics of the coordinates x·U in ``basis`` U [d, m] (means·U, UᵀS_WU), without a pass over the
        data (the deferred Ledoit–Wolf pass projects it)."""
        basis = np.asarray(basis, dtype=np.float64)
        source = None
        if self.source is not None:
            x, y, previous = self.source
            source = (x, y, basis if previous is None else previous @ basis)
        return ClassStatistics(self.counts, self.means @ basis, basis.T @ self.within_covariance @ basis, source)


def class_statistics(
    x: np.ndarray, y: np.ndarray, num_classes: int, basis: np.ndarray | None = None
) -> ClassStatistics:
    """One chunked float64 pass over x [N, d] (an ndarray, a memory map or any row-sliceable array-like such as
    ``data.rows.FeatureRows``; any float dtype; ``theory.chunks.row_chunks``), or over its coordinates x·U in ``basis`` U [d, m]: class counts, means and the pooled within-class
    covariance. Each class's rows are shifted by a provisional mean (its rows in the first chunk where it
    appears) before their sums and cross products are accumulated, so the one-pass formula
    S_W = Σ (x − s_y)(x − s_y)ᵀ − Σ_k n_k (μ_k − s_k)(μ_k − s_k)ᵀ cancels only the small offsets μ_k − s_k (the
    two-pass result to ~1e-13 relative, tests/test_chunked.py). The Ledoit–Wolf shrinkage is deferred
    (``ClassStatistics.ledoit_wolf_shrinkage``)."""
    from scipy.sparse import csr_matrix

    y = np.asarray(y)
    n = len(y)
    d = x.shape[1] if basis is None else basis.shape[1]
    basis = None if basis is None else np.asarray(basis, dtype=np.float64)
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    shift = np.zeros((num_classes, d))
    seen = np.zeros(num_classes, dtype=bool)
    sums = np.zeros((num_classes, d))
    cross = np.zeros((d, d))
    for start, block in row_chunks(x, np.float64):
        if basis is not None:
            block = block @ basis
        labels = y[start : start + len(block)]
        onehot = csr_matrix((np.ones(len(labels)), (labels, np.arange(len(labels)))), shape=(num_classes, len(labels)))
        fresh = np.flatnonzero(~seen & (np.bincount(labels, minlength=num_classes) > 0))
        if fresh.size:
            local = np.bincount(labels, minlength=num_classes)
            shift[fresh] = (onehot[fresh] @ block) / local[fresh, None]
            seen[fresh] = True
        residual = block - shift[labels]
        sums += onehot @ residual
        cross += residual.T @ residual
    offsets = sums / np.maximum(counts, 1)[:, None]
    scatter = cross - (sums.T @ offsets)
    means = np.where(counts[:, None] > 0, shift + offsets, 0.0)
    return ClassStatistics(counts, means, scatter / n, (x, y, basis))


WELL_DETERMINED_RATIO = 10

FEATURE_FLOOR = 1e-3
"""Relative eigenvalue floor of the total covariance Σ_T (docs/theory.md, "The span the features occupy"):
directions whose variance is at most ``FEATURE_FLOOR`` × the largest eigenvalue of Σ_T are treated as absent, by
the Fisher estimate, the spectral closed forms, SimSiam's covariance guard and ``standardization_scale``. Real
backbones have exactly constant channels (120 of EfficientNet-Lite0's 1,280 on digits), where S_W is singular,
and near-constant ones, whose inverse variance turns estimation noise into a dominant discriminant direction
(two channels at std 0.01 against ≈ 1: cos² of the estimate to the true S_F 0.99 → 0.43 without the floor)."""


def total_covariance(stats: ClassStatistics) -> np.ndarray:
    """Σ_T = S_W + Σ_k π_k (μ_k − μ̄)(μ_k − μ̄)ᵀ [d, d] (biased, divided by N), from the class statistics."""
    weights = stats.weights
    centred = stats.means - weights @ stats.means
    return stats.within_covariance + (centred.T * weights) @ centred


class FeatureSpan(NamedTuple):
    """The directions the features occupy: orthonormal eigenvectors [d, m] of a covariance with eigenvalue above
    the floor, and those eigenvalues [m] (descending)."""

    basis: np.ndarray
    eigenvalues: np.ndarray

    @property
    def rank(self) -> int:
        return self.basis.shape[1]


SPAN_MEMO_SIZE = 4
"""Eigen-decompositions ``feature_span`` keeps (by the covariance's content): a run asks for the span of the same
Σ_T [d, d] many times (references, every spectral closed form, the random and minor baselines): at d = 1,280 each
is a 0.3–0.5 s ``eigh``, against ~10 ms to hash the matrix."""
_SPANS: "collections.OrderedDict[tuple, FeatureSpan]" = collections.OrderedDict()


def feature_span(covariance: np.ndarray, relative_floor: float = FEATURE_FLOOR) -> FeatureSpan:
    """Eigenvectors of ``covariance`` [d, d] whose eigenvalue exceeds ``relative_floor`` × the largest. The result
    (read-only arrays) is kept for the last ``SPAN_MEMO_SIZE`` distinct matrices: a pure function, decomposed once
    per content."""
    covariance = np.ascontiguousarray(covariance, dtype=np.float64)
    key = (covariance.shape, float(relative_floor), hashlib.blake2b(covariance.data, digest_size=16).digest())
    if key in _SPANS:
        _SPANS.move_to_end(key)
        return _SPANS[key]
    eigenvalues, vectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, vectors = eigenvalues[order], vectors[:, order]
    keep = eigenvalues > relative_floor * max(float(eigenvalues[0]), 0.0) if eigenvalues.size else eigenvalues > 0
    if eigenvalues.size and eigenvalues[0] <= 0:
        keep[:] = False
    span = FeatureSpan(vectors[:, keep], eigenvalues[keep])
    for array in span:
        array.flags.writeable = False
    _SPANS[key] = span
    while len(_SPANS) > SPAN_MEMO_SIZE:
        _SPANS.popitem(last=False)
    return span


def auto_shrinkage(stats: ClassStatistics, shrinkage: float | None) -> float:
    """The within-class covariance shrinkage to use: ``shrinkage`` if given; else 0 when the pooled covariance
    is well determined (N − K ≥ 10·d samples), otherwise the Ledoit–Wolf value.

    Shrinking toward a multiple of I when it is not needed is harmful exactly where the theory is interesting:
    the Fisher directions of the pancakes have small variance, and on the rotated pancakes (d = 50, N = 10k)
    scikit-learn's ``shrinkage="auto"`` drops LDA's cos² to the Fisher subspace from 0.9998 to 0.67.
    """
    if shrinkage is not None:
        return shrinkage
    n, d, k = stats.counts.sum(), stats.means.shape[1], int(np.sum(stats.counts > 0))
    return 0.0 if n - k >= WELL_DETERMINED_RATIO * d else stats.ledoit_wolf_shrinkage


def shrunk_within_covariance(stats: ClassStatistics, shrinkage: float | None) -> tuple[np.ndarray, float]:
    """The pooled within-class covariance shrunk toward (tr S_W / d)·I, [d, d] float64, and the shrinkage used
    (``auto_shrinkage``)."""
    s = auto_shrinkage(stats, shrinkage)
    cov = stats.within_covariance
    d = cov.shape[0]
    return (1 - s) * cov + s * (np.trace(cov) / d) * np.eye(d), s


class FisherEstimate(NamedTuple):
    """The estimated Fisher subspace [d, q], the rank of Σ_T kept by the floor, and the shrinkage used.

    ``ordered`` [d, min(K − 1, rank)]: orthonormal, its first j columns spanning the generalised eigenvectors of
    (Σ_B, S_W) with the j largest eigenvalues (inside the kept span, S_W shrunk as for ``basis``), for every j:
    ``top(r)`` is the top-r Fisher subspace. ``eigenvalues``: those eigenvalues, descending. ``classes``: the
    number K of classes present."""

    basis: np.ndarray
    rank: int
    shrinkage: float
    ordered: Optional[np.ndarray] = None
    eigenvalues: Optional[np.ndarray] = None
    classes: int = 0

    @property
    def fills_span(self) -> bool:
        """Whether the Fisher subspace is the whole span the features occupy: K − 1 ≥ the rank kept by the floor
        (judged on that rank, not on d, nor on the numerical rank of ``basis``). Every head inside that span then
        has ``fisher_cos2`` 1 against it, which says nothing."""
        return self.classes - 1 >= self.rank

    def top(self, r: int) -> np.ndarray:
        """The top-r Fisher subspace [d, min(r, q)] (orthonormal)."""
        assert self.ordered is not None
        return self.ordered[:, :r]


def fisher_estimate(
    x: np.ndarray, y: np.ndarray, num_classes: int, shrinkage: float | None = None,
    relative_floor: float = FEATURE_FLOOR,
) -> FisherEstimate:
    """The Fisher subspace estimated from labelled data (``fisher_estimate_from_statistics`` of one chunked
    ``class_statistics`` pass over x [N, d])."""
    return fisher_estimate_from_statistics(class_statistics(x, y, num_classes), shrinkage, relative_floor)


def fisher_estimate_from_statistics(
    stats: ClassStatistics, shrinkage: float | None = None, relative_floor: float = FEATURE_FLOOR,
) -> FisherEstimate:
    """The Fisher subspace estimated from labelled data, S_W⁻¹(μ_k − μ̄), solved inside the span the features
    occupy (``feature_span`` of Σ_T with ``relative_floor``): S_W and the means are expressed in that basis
    [m] (``ClassStatistics.restricted``), the within-class covariance there is shrunk as ``auto_shrinkage`` says
    (with m as the dimension), and the directions are mapped back to the features' coordinates [d, q]. Constant
    channels then cost nothing (S_W is singular there) and near-constant ones cannot dominate. Also the
    generalised eigenvectors of (Σ_B, S_W) there, by decreasing eigenvalue (``FisherEstimate.ordered``)."""
    span = feature_span(total_covariance(stats), relative_floor)
    u = span.basis
    reduced = stats.restricted(u)
    present = reduced.counts > 0
    shrunk, used = shrunk_within_covariance(reduced, shrinkage)
    means, counts = reduced.means[present], reduced.counts[present]
    basis = fisher_subspace(means, shrunk, counts)
    weights = counts / counts.sum()
    centred = means - weights @ means
    between = (centred.T * weights) @ centred
    q = min(int(present.sum()) - 1, span.rank)
    if q > 0:
        from scipy.linalg import eigh

        eigenvalues, vectors = eigh(between, shrunk)
        eigenvalues, vectors = eigenvalues[::-1][:q], vectors[:, ::-1][:, :q]
        ordered = np.linalg.qr(u @ vectors)[0]
    else:
        eigenvalues, ordered = np.zeros(0), np.zeros((u.shape[0], 0))
    return FisherEstimate(u @ basis, span.rank, used, ordered, eigenvalues, int(present.sum()))


def estimate_fisher_subspace(
    x: np.ndarray, y: np.ndarray, num_classes: int, shrinkage: float | None = None
) -> np.ndarray:
    """The Fisher subspace estimated from labelled data [d, q] (``fisher_estimate``)."""
    return fisher_estimate(x, y, num_classes, shrinkage).basis


def class_mean_subspace_from_statistics(stats: ClassStatistics) -> np.ndarray:
    """S_M = span{μ_k − μ̄} estimated from class statistics, an orthonormal basis [d, q ≤ K − 1] (docs/theory.md,
    "Subspace recovery"): the subspace a head would learn if it followed the class means, not the Fisher
    directions."""
    present = stats.counts > 0
    means, weights = stats.means[present], stats.weights[present]
    return orthonormal_basis((means - weights @ means).T)[:, : int(present.sum()) - 1]


def significant_directions(head: np.ndarray, rtol: float = 1e-3) -> np.ndarray:
    """An orthonormal basis [d, ≤ r] of col(head) without the directions whose singular value is below ``rtol`` of
    the largest (what ``fisher_cos2`` compares; compute it once to compare one head with many references:
    ``subspace_cos2``)."""
    u, s, _ = np.linalg.svd(np.asarray(head, dtype=np.float64), full_matrices=False)
    return u[:, s > rtol * s[0]] if s.size and s[0] > 0 else u[:, :0]


def orthonormal_columns(basis: np.ndarray) -> np.ndarray:
    """``basis`` itself when its columns are orthonormal (to 1e-10), else an orthonormal basis of its column space
    (scipy ``orth``, the basis ``subspace_angles`` uses, rank-deficient directions dropped)."""
    from scipy.linalg import orth

    basis = np.asarray(basis, dtype=np.float64)
    gram = basis.T @ basis
    if np.allclose(gram, np.eye(basis.shape[1]), rtol=0, atol=1e-10):
        return basis
    return orth(basis)


def subspace_cos2(kept: np.ndarray, r: int, reference: np.ndarray) -> float:
    """``fisher_cos2`` of a head whose ``significant_directions`` are ``kept`` [d, ≤ r] (nominal r) against any
    ``reference`` [d, q]: Σ cos²θ_i = ‖keptᵀQ‖²_F with Q an orthonormal basis of the reference (the squared
    singular values of keptᵀQ are the cos² of the principal angles), over min(r, q)."""
    q = reference.shape[1]
    if kept.shape[1] == 0 or q == 0:
        return 0.0
    return float(np.sum((kept.T @ orthonormal_columns(reference)) ** 2) / min(r, q))


def fisher_cos2(head: np.ndarray, fisher_basis: np.ndarray) -> float:
    """Σ cos²θ_i / min(r, q) between col(head) [d, r] and S_F [d, q], after dropping directions of the head
    whose singular value is below 1e-3 of the largest. The denominator uses the nominal r, so a collapsed
    head cannot score: a rank-1 head inside S_F scores 1/min(r, q)."""
    return subspace_cos2(significant_directions(head), head.shape[1], fisher_basis)


def fisher_energy(head: np.ndarray, fisher_basis: np.ndarray) -> float:
    """‖P_F Ã‖²_F / ‖Ã‖²_F: the share of the head's weight inside S_F (random ≈ q/d)."""
    head = np.asarray(head, dtype=np.float64)
    total = float(np.sum(head**2))
    return float(np.sum((fisher_basis.T @ head) ** 2) / total) if total > 0 else 0.0


def effective_rank(z: np.ndarray) -> float:
    """exp(−Σ p_i log p_i), p_i = σ_i / Σσ_j over the singular values of the centred projection z [N, r]: σ_i² are
    the eigenvalues of the centred Gram matrix [r, r], accumulated in float64 over row chunks (z is not copied)."""
    n, r = len(z), z.shape[1]
    if n == 0 or r == 0:
        return 0.0
    total, gram = np.zeros(r), np.zeros((r, r))
    shift = np.asarray(z[:1], dtype=np.float64)[0]
    for _, block in row_chunks(z, np.float64):
        block = block - shift
        total += block.sum(axis=0)
        gram += block.T @ block
    mean = total / n
    gram -= n * np.outer(mean, mean)
    s = np.sqrt(np.clip(np.linalg.eigvalsh((gram + gram.T) / 2), 0.0, None))
    if s.sum() <= 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))
