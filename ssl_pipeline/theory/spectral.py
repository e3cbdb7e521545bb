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
from ssl_pipeline.theory.chunks import row_chunks
from ssl_pipeline.theory.subspaces import FEATURE_FLOOR, class_statistics, feature_span, total_covariance

MIN_PAIRS_PER_DIMENSION = 10
"""Σ_Δ needs at least this many sampled pairs per feature dimension (else its smallest eigenvalues are noise)."""
PAIR_BLOCK_BYTES = 256 * 2**20
"""Float64 bytes of one block of feature columns over all N points in ``pair_moments`` (one block at the main
job's and the holdout's sizes)."""


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
    x: np.ndarray, y: np.ndarray, pairs: Iterable[np.ndarray], total: np.ndarray | None = None,
    block_bytes: int = PAIR_BLOCK_BYTES,
) -> PairMoments:
    """Σ_T of x [N, d] (biased; ``total`` if already computed) and Σ_Δ = ½·mean over the given pairs of
    (x_a − x_b)(x_a − x_b)ᵀ, ``pairs`` being index arrays [2, P] (e.g. one per epoch of the heads' sampler,
    ``data.pairs.sampled_pair_moments``); fewer than ``MIN_PAIRS_PER_DIMENSION``·d pairs are refused.

    The pairs are not replayed: with W the symmetric pair-count matrix [N, N] (W_ij = how often (i, j) or (j, i)
    was drawn; sparse, at most 2P entries) and D = diag(W·1), Σ over the pairs of (x_a − x_b)(x_a − x_b)ᵀ =
    X̃ᵀ(D − W)X̃, X̃ = x − x̄ (a difference does not see the centre; centring keeps both terms small): one sparse
    product and one N·d² GEMM instead of P·d² (P = epochs·N: the main job's closed forms cost 60× less). The sum is
    the replayed one up to float64 rounding (``tests/test_spectral_closed_form.py``). Columns go in blocks of at
    most ``block_bytes`` of float64 over the N points, so memory stays bounded at any N."""
    import scipy.sparse

    x = np.ascontiguousarray(x)
    n, d = x.shape
    blocks = [np.asarray(block).reshape(2, -1) for block in pairs]
    first = np.concatenate([block[0] for block in blocks]) if blocks else np.zeros(0, dtype=np.int64)
    second = np.concatenate([block[1] for block in blocks]) if blocks else np.zeros(0, dtype=np.int64)
    count = len(first)
    if count < MIN_PAIRS_PER_DIMENSION * d:
        raise DataError(f"Σ_Δ from {count} sampled pairs in {d} dimensions is noise; it needs at least "
                        f"{MIN_PAIRS_PER_DIMENSION}·d = {MIN_PAIRS_PER_DIMENSION * d} pairs (raise heads.epochs or "
                        "the number of training points)")
    drawn = scipy.sparse.coo_matrix((np.ones(count), (first, second)), shape=(n, n)).tocsr()
    counts = (drawn + drawn.T).tocsr()  # duplicates summed: integer counts, exact in float64
    degree = np.asarray(counts.sum(axis=1)).ravel()
    mean = np.zeros(d)
    for _, rows in row_chunks(x):
        mean += rows.sum(axis=0)
    mean /= n
    scatter = np.zeros((d, d))
    width = max(1, block_bytes // (8 * max(1, n)))
    for j in range(0, d, width):
        columns = x[:, j : j + width].astype(np.float64) - mean[j : j + width]  # X̃ [N, w]
        laplacian_columns = degree[:, None] * columns - counts @ columns  # (D − W) X̃ [N, w]
        for start, rows in row_chunks(x):
            scatter[:, j : j + width] += (rows - mean).T @ laplacian_columns[start : start + len(rows)]
    scatter = 0.5 * (scatter + scatter.T)  # symmetric up to rounding
    if total is None:
        total = total_covariance(class_statistics(x, y, int(y.max()) + 1))
    return PairMoments(total, 0.5 * scatter / count, count)


VIEW_BLOCK_BYTES = 256 * 2**20
"""Float64 bytes of the images' views [n, V, d] ``view_pair_moments`` holds at once."""


def view_pair_moments(table: np.ndarray, num_views: int, images: np.ndarray,
                      block_bytes: int = VIEW_BLOCK_BYTES) -> PairMoments:
    """Σ_T and Σ_Δ of the view pairs of ``images`` (rows of the whole train split) in a view table [N_all·V, d]
    (``data.views.ViewTable``; docs/theory.md, "Augmentation views"): Σ_T the biased covariance of all their views,
    Σ_Δ = ½·E[(x_a − x_b)(x_a − x_b)ᵀ] over two different views a ≠ b of one image, which is the mean over images
    of the unbiased covariance of an image's V views — the population of the pairs a view head draws (every ordered
    pair of different views equally likely), not a sample of it. Images go in blocks of at most ``block_bytes``."""
    d = table.shape[1]
    views = table.reshape(-1, num_views, d)
    images = np.asarray(images)
    n = len(images)
    if n < 2:
        raise DataError(f"view-pair moments need at least 2 images; got {n}")
    step = max(1, block_bytes // (8 * num_views * d))
    total_sum, second, within = np.zeros(d), np.zeros((d, d)), np.zeros((d, d))
    shift = None  # the first block's mean: the second moments are taken about it (no cancellation at large means)
    for start in range(0, n, step):
        block = np.asarray(views[images[start : start + step]], dtype=np.float64)  # [b, V, d]
        if shift is None:
            shift = block.reshape(-1, d).mean(axis=0)
        flat = block.reshape(-1, d) - shift
        total_sum += flat.sum(axis=0)
        second += flat.T @ flat
        deviations = (block - block.mean(axis=1, keepdims=True)).reshape(-1, d)
        within += deviations.T @ deviations
    count = n * num_views
    mean = total_sum / count  # of the shifted views
    total = second / count - np.outer(mean, mean)
    delta_covariance = within / (n * (num_views - 1))
    return PairMoments(0.5 * (total + total.T), 0.5 * (delta_covariance + delta_covariance.T),
                       n * num_views * (num_views - 1) // 2)


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
