"""The statistics of the GMM checks: how well the theory's tied-covariance Gaussian mixture fits labelled points
(docs/theory.md, "GMM checks on real features"). Arrays in, numbers and small records out;
``checking.statistics.run_checks`` computes them all on one dataset.

Labelled Gaussians with tied / full / per-class diagonal covariances (``fit_labelled_gaussians``) compared by
held-out log-likelihood and BIC (``model_fit``); the distance of a class covariance from the tied one
(``covariance_distance``); squared Mahalanobis distances (Gaussianity) and their Kolmogorov–Smirnov calibration
against surrogates (``ks_calibrated``, ``holm``); an unsupervised tied EM GMM against the labels (``fit_tied_em``);
and the LDA split-half agreement (``lda_split_half``; docs/theory.md, "Subspace recovery").

Statistics are float64; an [N, d] feature matrix is only read in chunks (``class_statistics``, ``project``,
``theory.chunks``), halves of it are lazy row views (``theory.chunks.take_rows``), and the [n, K] matrices of
log-densities are computed ``chunk_rows(K)`` points at a time, so at K = 1000 nothing holds n·K numbers.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.linalg import eigh, solve_triangular
from scipy.special import logsumexp
from scipy.stats import ks_2samp
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import normalized_mutual_info_score
from sklearn.mixture import GaussianMixture

from ssl_pipeline.errors import DataError
from ssl_pipeline.theory.chunks import chunk_rows, row_chunks, take_rows
from ssl_pipeline.theory.subspaces import (
    ClassStatistics,
    class_statistics,
    fisher_cos2,
    fisher_estimate,
    shrunk_within_covariance,
)

MODELS = ("tied", "full", "diag")
_LOG_2PI = float(np.log(2 * np.pi))


def squared_mahalanobis(z: np.ndarray, mean: np.ndarray, cholesky: np.ndarray) -> np.ndarray:
    """(z − μ)ᵀ Σ⁻¹ (z − μ) [n] for points z [n, p], mean [p] and the lower Cholesky factor L of Σ = L Lᵀ [p, p]."""
    white = solve_triangular(cholesky, (z - mean).T, lower=True, check_finite=False)
    return np.einsum("pn,pn->n", white, white)


def gaussian_log_density(z: np.ndarray, mean: np.ndarray, cholesky: np.ndarray) -> np.ndarray:
    """log N(z | μ, Σ) [n] for points z [n, p], Σ = L Lᵀ given by its lower Cholesky factor [p, p]."""
    log_det = 2 * np.sum(np.log(np.diag(cholesky)))
    return -0.5 * (squared_mahalanobis(z, mean, cholesky) + log_det + len(mean) * _LOG_2PI)


def covariance_distance(class_covariance: np.ndarray, covariance: np.ndarray) -> float:
    """Affine-invariant distance d_k = ‖log(Σ^{-1/2} Σ_k Σ^{-1/2})‖_F / √p = √(Σ_i log² λ_i / p), λ_i the
    eigenvalues of the generalised problem Σ_k v = λ Σ v (both [p, p], SPD).

    Scale-free: unchanged when both are mapped by any invertible A (Σ ↦ A Σ Aᵀ), 0 iff Σ_k = Σ; d_k = |log c|
    when Σ_k = c Σ. Used for covariance heterogeneity (docs/theory.md, "GMM checks on real features").
    """
    eigenvalues = eigh(class_covariance, covariance, eigvals_only=True)
    return float(np.sqrt(np.mean(np.log(eigenvalues) ** 2)))


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values [m]: p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j)) in ascending order."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    return adjusted


class SplitHalf(NamedTuple):
    """The LDA split-half agreement and the two half-fit Fisher subspaces [d, q]."""

    agreement: float
    bases: tuple[np.ndarray, np.ndarray]


def lda_split_half(x: np.ndarray, y: np.ndarray, halves: tuple[np.ndarray, np.ndarray], num_classes: int,
                   shrinkage: float | None = None, top: int | None = None) -> SplitHalf:
    """LDA split-half agreement (docs/theory.md, "Subspace recovery"): ``fisher_cos2`` between the Fisher subspaces
    [d, q] estimated (``fisher_estimate``, full feature space) on two disjoint halves of x [N, d], y [N], given as
    row indices (read as lazy row views, in chunks). Returns the agreement and both bases, to score heads against
    each. Where a half's Fisher subspace fills the span its features occupy (K − 1 ≥ that rank:
    ``FisherEstimate.fills_span``), the two would agree trivially; with ``top`` the agreement is then between
    the halves' top-``top`` Fisher subspaces (generalised eigenvectors of (Σ_B, S_W), ``FisherEstimate.top``)."""
    estimates = [fisher_estimate(take_rows(x, half), np.asarray(y)[half], num_classes, shrinkage) for half in halves]
    if top is not None and any(estimate.fills_span for estimate in estimates):
        first, second = (estimate.top(top) for estimate in estimates)
    else:
        first, second = (estimate.basis for estimate in estimates)
    return SplitHalf(agreement=fisher_cos2(first, second), bases=(first, second))


def pca_basis(x: np.ndarray, y: np.ndarray, num_classes: int, pca_dim: int,
              stats: ClassStatistics | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean [d] and top-``pca_dim`` principal directions [d, p] of x [N, d], from the total covariance
    S_W + Σ_k π_k (μ_k − μ̄)(μ_k − μ̄)ᵀ of one ``class_statistics`` pass (``stats``, if already computed; x is
    never copied)."""
    stats = class_statistics(x, y, num_classes) if stats is None else stats
    mean = stats.weights @ stats.means
    centred = stats.means - mean
    total = stats.within_covariance + (centred.T * stats.weights) @ centred
    d = total.shape[0]
    _, vectors = eigh(total, subset_by_index=[d - pca_dim, d - 1])
    return mean, vectors[:, ::-1]


def project(x: np.ndarray, mean: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """(x − mean) @ basis [N, p] in float64, x [N, d] read in chunks."""
    blocks = [(block - mean) @ basis for _, block in row_chunks(x, np.float64)]
    return np.concatenate(blocks) if blocks else np.zeros((0, basis.shape[1]))


@dataclass
class LabelledGaussians:
    """One Gaussian per class of labelled points z [N, p], float64: ``stats`` (counts, means [K, p], weights
    π_k = n_k/N), ``members`` (each class's row indices), the pooled within-class covariance ``tied`` [p, p] shrunk
    as ``auto_shrinkage`` says (by ``tied_shrinkage``) and each class's own covariance ``full`` [K, p, p]
    (divided by n_k)."""

    stats: ClassStatistics
    members: list[np.ndarray]
    tied: np.ndarray
    tied_shrinkage: float
    full: np.ndarray

    def covariances(self, model: str) -> np.ndarray:
        """Σ_k [K, p, p] of ``model``: the tied one for every class (``tied``), each class's own (``full``) or its
        diagonal (``diag``)."""
        if model == "tied":
            return np.broadcast_to(self.tied, self.full.shape)
        return self.full if model == "full" else self.full * np.eye(self.full.shape[1])

    def free_parameters(self, model: str) -> int:
        """Free parameters m of the labelled mixture of ``model``: K − 1 weights, K·p means and the covariances."""
        k, p = self.full.shape[:2]
        covariances = {"tied": p * (p + 1) // 2, "full": k * p * (p + 1) // 2, "diag": k * p}[model]
        return k - 1 + k * p + covariances


def fit_labelled_gaussians(z: np.ndarray, y: np.ndarray, num_classes: int) -> LabelledGaussians:
    """The Gaussians of every class of z [N, p], y [N] (every class needs at least two points)."""
    stats = class_statistics(z, y, num_classes)
    counts = np.bincount(y, minlength=num_classes)
    members = np.split(np.argsort(y, kind="stable"), np.cumsum(counts)[:-1])
    tied, shrinkage = shrunk_within_covariance(stats, None)
    full = np.stack([np.cov(z[rows], rowvar=False, bias=True) for rows in members])
    return LabelledGaussians(stats=stats, members=members, tied=tied, tied_shrinkage=shrinkage, full=full)


class ModelFit(NamedTuple):
    """How one covariance model of the labelled Gaussians fits: per test point, the mean label-conditional
    log N(x | μ_y, Σ_y) and mixture log Σ_k π_k N(x | μ_k, Σ_k) log-likelihoods; BIC = −2 log L + m log N on train,
    L = Π_i π_{y_i} N(x_i | μ_{y_i}, Σ_{y_i}) (lower is better)."""

    heldout_loglik: float
    heldout_mixture_loglik: float
    bic: float


def model_fit(gaussians: LabelledGaussians, model: str, z_train: np.ndarray, z_test: np.ndarray,
              y_test: np.ndarray) -> ModelFit:
    """``ModelFit`` of ``model`` for the Gaussians fitted on z_train [N, p], scored on z_test [M, p], y_test [M].
    No [M, K] matrix is held: tied and diag take the log-densities ``chunk_rows(K)`` test points at a time; full,
    one class at a time over every test point (K triangular solves, not K per chunk), the mixture's log-sum-exp
    accumulated class by class."""
    means, weights, covariances = gaussians.stats.means, gaussians.stats.weights, gaussians.covariances(model)
    with np.errstate(divide="ignore"):
        log_weights = np.log(weights)
    if model == "full":
        peak = np.full(len(z_test), -np.inf)  # running max over classes of log π_k + log N(z | μ_k, Σ_k)
        total = np.zeros(len(z_test))  # Σ_k exp(· − peak)
        conditional_sum = 0.0
        for k, (mean, covariance) in enumerate(zip(means, covariances)):
            density = gaussian_log_density(z_test, mean, _cholesky(covariance, model, k))
            conditional_sum += float(np.sum(density[y_test == k]))
            weighted = density + log_weights[k]
            higher = np.maximum(peak, weighted)
            with np.errstate(invalid="ignore"):  # −inf − (−inf) where nothing is seen yet or π_k = 0
                total = np.nan_to_num(total * np.exp(peak - higher)) + np.nan_to_num(np.exp(weighted - higher))
            peak = higher
        mixture_sum = float(np.sum(peak + np.log(total)))
    else:
        conditional_sum = mixture_sum = 0.0
        step = chunk_rows(len(means))
        for start in range(0, len(z_test), step):
            log_density = log_density_matrix(z_test[start : start + step], means, covariances, model)
            labels = y_test[start : start + step]
            conditional_sum += float(np.sum(log_density[np.arange(len(labels)), labels]))
            mixture_sum += float(np.sum(logsumexp(log_density + log_weights, axis=1)))
    conditional = conditional_sum / len(y_test) if len(y_test) else float("nan")
    mixture = mixture_sum / len(y_test) if len(y_test) else float("nan")
    joint = sum(float(np.sum(gaussian_log_density(z_train[rows], means[k], _cholesky(covariances[k], model, k))))
                + len(rows) * np.log(weights[k]) for k, rows in enumerate(gaussians.members))
    bic = float(-2 * joint + gaussians.free_parameters(model) * np.log(len(z_train)))
    return ModelFit(heldout_loglik=conditional, heldout_mixture_loglik=mixture, bic=bic)


def tied_squared_distances(z: np.ndarray, y: np.ndarray, means: np.ndarray, covariance: np.ndarray) -> np.ndarray:
    """(z_i − μ_{y_i})ᵀ Σ⁻¹ (z_i − μ_{y_i}) [n] for points z [n, p], labels y [n], means [K, p], Σ [p, p]."""
    factor = _cholesky(covariance, "tied", 0)
    distances = np.zeros(len(y))
    for k in range(len(means)):
        rows = np.flatnonzero(y == k)
        distances[rows] = squared_mahalanobis(z[rows], means[k], factor)
    return distances


def log_density_matrix(z: np.ndarray, means: np.ndarray, covariances: np.ndarray, model: str) -> np.ndarray:
    """log N(z_i | μ_k, Σ_k) [n, K] for points z [n, p], means [K, p], covariances [K, p, p] of ``model``:
    tied (one whitening by the Cholesky factor, then inner products) and diag in closed form, full per class."""
    p = z.shape[1]
    if model == "full":
        return np.stack([gaussian_log_density(z, m, _cholesky(c, model, k))
                         for k, (m, c) in enumerate(zip(means, covariances))], axis=1)
    if model == "tied":
        factor = _cholesky(covariances[0], model, 0)
        white = solve_triangular(factor, z.T, lower=True, check_finite=False).T
        white_means = solve_triangular(factor, means.T, lower=True, check_finite=False).T
        squared = np.sum(white**2, axis=1)[:, None] - 2 * white @ white_means.T + np.sum(white_means**2, axis=1)
        log_det = np.full(len(means), 2 * np.sum(np.log(np.diag(factor))))
    else:
        precision = 1 / np.diagonal(covariances, axis1=1, axis2=2)
        squared = (z**2) @ precision.T - 2 * z @ (means * precision).T + np.sum(means**2 * precision, axis=1)
        log_det = -np.sum(np.log(precision), axis=1)
    return -0.5 * (squared + log_det + p * _LOG_2PI)


class EMFit(NamedTuple):
    """One unsupervised tied EM GMM: NMI of its test clusters against the labels, held-out mixture log-likelihood
    per test point, iterations run, whether it converged."""

    nmi: float
    heldout_mixture_loglik: float
    iterations: int
    converged: bool


def fit_tied_em(z_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray, num_classes: int, seed: int, *,
                max_iter: int, n_init: int, max_points: int | None) -> EMFit:
    """A tied EM GMM (scikit-learn) of ``num_classes`` components fitted on z_train [N, p] (at most
    ``em_points(max_points, K)`` seeded random rows: ``_em_subsample``, the same rule for the real data and every
    surrogate), scored on z_test [M, p] against y_test [M] (``chunk_rows(K)`` test points at a time)."""
    em = GaussianMixture(num_classes, covariance_type="tied", max_iter=max_iter, n_init=n_init, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # recorded as EMFit.converged
        em.fit(z_train[_em_subsample(len(z_train), em_points(max_points, num_classes), seed)])
    step = chunk_rows(num_classes)
    predicted = np.concatenate([em.predict(z_test[start : start + step]) for start in range(0, len(z_test), step)])
    log_likelihood = sum(float(np.sum(em.score_samples(z_test[start : start + step])))
                         for start in range(0, len(z_test), step))
    nmi = normalized_mutual_info_score(y_test, predicted, average_method="arithmetic")
    return EMFit(nmi=float(nmi), heldout_mixture_loglik=log_likelihood / len(z_test), iterations=int(em.n_iter_),
                 converged=bool(em.converged_))


EM_MAX_CELLS = 5_000_000
"""EM points × components above which EM is fitted on fewer points (``em_points``): scikit-learn's EM holds about
six [n, K] float64 arrays (responsibilities, log-densities, log-sum-exp temporaries): 20,000 points × K = 1000 raised
the checks' peak RssAnon by 1.05 GB; 5·10⁶ cells keep it near 240 MB."""


def em_points(max_points: int | None, num_classes: int) -> int:
    """The most train points EM is fitted on: ``check.em_max_points`` (None: no cap of its own), and at most
    ⌊``EM_MAX_CELLS``/K⌋ (5,000 at K = 1000; 50,000 at K = 100, where the default 20,000 rules)."""
    cap = max(1, EM_MAX_CELLS // num_classes)
    return cap if max_points is None else min(max_points, cap)


def _em_subsample(n: int, max_points: int | None, seed: int) -> np.ndarray:
    """Rows EM is fitted on: all, or a seeded random ``max_points`` of them (sklearn's tied EM costs n·K·p² per
    iteration: minutes at 50k × 100 classes)."""
    if max_points is None or n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


class CalibratedKS(NamedTuple):
    """Kolmogorov–Smirnov distances of one sample of distances against surrogate ones (``ks_calibrated``)."""

    real: float
    p_value: float
    surrogate: np.ndarray
    surrogate_p_values: np.ndarray


def ks_calibrated(samples: list[np.ndarray]) -> CalibratedKS:
    """samples = [real, surrogate_1..S]: the real KS distance (mean over leave-one-out pools), its p-value
    against all surrogates, and each surrogate's KS distance [S] and p-value [S] against the other surrogates."""
    real, surrogates = samples[0], samples[1:]
    pools = [np.concatenate(surrogates[:s] + surrogates[s + 1 :]) for s in range(len(surrogates))]
    real_ks = np.mean([ks_2samp(real, pool).statistic for pool in pools])
    surrogate_tests = [ks_2samp(sample, pool) for sample, pool in zip(surrogates, pools)]
    return CalibratedKS(real=float(real_ks), p_value=float(ks_2samp(real, np.concatenate(surrogates)).pvalue),
                        surrogate=np.array([t.statistic for t in surrogate_tests]),
                        surrogate_p_values=np.array([t.pvalue for t in surrogate_tests]))


def qq_quantiles(sample: np.ndarray, references: Sequence[np.ndarray], points: int = 200
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Quantiles [points] of ``sample`` and of the ``references`` pooled, at probabilities (i + ½)/points: the QQ
    plot of Gaussianity (held-out squared Mahalanobis distances)."""
    probabilities = (np.arange(points) + 0.5) / points
    return np.quantile(sample, probabilities), np.quantile(np.concatenate(references), probabilities)


def _cholesky(covariance: np.ndarray, model: str, k: int) -> np.ndarray:
    try:
        return np.linalg.cholesky(covariance)
    except np.linalg.LinAlgError as error:
        which = "tied covariance" if model == "tied" else f"{model} covariance of class {k}"
        raise DataError(f"the {which} is singular in the PCA space (features of rank below check.pca_dim?); "
                        "lower check.pca_dim") from error
