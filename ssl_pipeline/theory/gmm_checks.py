"""GMM checks: how well the theory's tied-covariance Gaussian mixture fits labelled features (docs/theory.md, "GMM checks
on real features").

``run_checks`` computes on one dataset, in one PCA space of ``pca_dim`` dimensions fitted on val:
labelled Gaussians with tied / full / per-class diagonal covariances compared by held-out log-likelihood per test
sample and by BIC on train; the distance of every class covariance from the tied one; squared Mahalanobis
distances of test points (Gaussianity); an unsupervised tied EM GMM against the labels; and, in the full feature
space, the LDA split-half agreement (docs/theory.md, "Subspace recovery"). Run unchanged on surrogates
(``theory.surrogate``), it gives the parametric bootstrap that ``calibrate`` turns into the checks.json records.

Statistics are float64; the [N, d] feature matrix is only read in chunks (``class_statistics``, ``_project``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from scipy.linalg import eigh, solve_triangular
from scipy.special import logsumexp
from scipy.stats import ks_2samp
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import normalized_mutual_info_score
from sklearn.mixture import GaussianMixture

from ssl_pipeline.config import CheckConfig
from ssl_pipeline.data.labelled import LabelledFeatures, stratified_split
from ssl_pipeline.errors import ConfigError, DataError
from ssl_pipeline.theory.subspaces import (
    class_statistics,
    estimate_fisher_subspace,
    fisher_cos2,
    shrunk_within_covariance,
)

MODELS = ("tied", "full", "diag")
_CHUNK = 65536
_LOG_2PI = float(np.log(2 * np.pi))


@dataclass
class GMMCheckResult:
    """The statistics of one dataset (real or surrogate). Per-class arrays are indexed by class [K].

    ``heldout_loglik``/``heldout_mixture_loglik`` map each model of ``MODELS`` to the mean over test points of
    log N(x | μ_y, Σ_y) and of log Σ_k π_k N(x | μ_k, Σ_k) (π_k = n_k/N on train); ``bic`` = −2 log L + m log N on
    train, L the joint likelihood Π_i π_{y_i} N(x_i | μ_{y_i}, Σ_{y_i}) and m the free parameters (lower is
    better). ``heterogeneity`` [K]: ``covariance_distance(Σ_k, Σ)``, Σ the tied covariance (shrunk by
    ``tied_shrinkage``); ``test_distances`` [N_test]: (x − μ_y)ᵀ Σ⁻¹ (x − μ_y); ``lda_half_bases``: the two
    half-fit Fisher subspaces [d, q] in the full feature space (of the first split seed); ``seconds``: wall time
    of each part. EM's NMI and log-likelihood and the split-half agreement are means over ``CheckConfig.repeats``
    seeds; ``em_iterations`` is the largest count, ``em_converged`` whether every fit converged.
    """

    data_kind: str
    pca_dim: int
    class_counts: np.ndarray
    tied_shrinkage: float
    heldout_loglik: dict[str, float]
    heldout_mixture_loglik: dict[str, float]
    bic: dict[str, float]
    heterogeneity: np.ndarray
    test_distances: np.ndarray
    test_labels: np.ndarray
    em_nmi: float
    em_heldout_mixture_loglik: float
    em_iterations: int
    em_converged: bool
    lda_split_half: float
    lda_half_bases: tuple[np.ndarray, np.ndarray]
    seconds: dict[str, float]

    def scalar_statistics(self) -> dict[str, float]:
        """Every statistic that is one number per dataset, by its checks.json name."""
        stats: dict[str, float] = {}
        for model in MODELS:
            stats[f"heldout_loglik_{model}"] = self.heldout_loglik[model]
            stats[f"heldout_mixture_loglik_{model}"] = self.heldout_mixture_loglik[model]
            stats[f"bic_{model}"] = self.bic[model]
        for model in MODELS[1:]:
            stats[f"heldout_loglik_{model}_minus_tied"] = self.heldout_loglik[model] - self.heldout_loglik["tied"]
            stats[f"bic_{model}_minus_tied"] = self.bic[model] - self.bic["tied"]
        labelled = self.heldout_mixture_loglik["tied"]
        return stats | {
            "heterogeneity_mean": float(np.mean(self.heterogeneity)),
            "heterogeneity_median": float(np.median(self.heterogeneity)),
            "heterogeneity_max": float(np.max(self.heterogeneity)),
            "em_nmi": self.em_nmi,
            "em_heldout_mixture_loglik": self.em_heldout_mixture_loglik,
            "em_minus_labelled_mixture_loglik": self.em_heldout_mixture_loglik - labelled,
            "em_iterations": float(self.em_iterations),
            "em_converged": float(self.em_converged),
            "lda_split_half_cos2": self.lda_split_half,
        }


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


def lda_split_half(
    x: np.ndarray, y: np.ndarray, num_classes: int, seed: int, shrinkage: float | None = None
) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
    """LDA split-half agreement (docs/theory.md, "Subspace recovery"): ``fisher_cos2`` between the Fisher subspaces
    [d, q] estimated (``estimate_fisher_subspace``, full feature space) on two disjoint stratified halves of
    x [N, d], y [N], split by ``seed``. Returns the agreement and both bases, to score heads against each."""
    halves = stratified_split(y, 0.5, seed)
    first, second = (estimate_fisher_subspace(x[half], y[half], num_classes, shrinkage) for half in halves)
    return fisher_cos2(first, second), (first, second)


def run_checks(features: LabelledFeatures, cfg: CheckConfig, lda_shrinkage: float | None = None) -> GMMCheckResult:
    """Every GMM check on one dataset: Gaussians fitted on train, scored on test (docs/theory.md, "GMM checks on real
    features"). The tied covariance is shrunk as ``auto_shrinkage`` says in the PCA space; ``lda_shrinkage`` is the
    pipeline's LDA shrinkage (``ScoreConfig.lda_shrinkage``) for the split-half Fisher subspaces."""
    num_classes, p = features.num_classes, cfg.pca_dim
    counts = _check_pca_dim(features, p)
    seconds: dict[str, float] = {}
    with _timed(seconds, "pca"):
        # The PCA space is fitted on val, independent of the train split that fits the Gaussians and of the test
        # split that scores them: a basis chosen on train picks the directions where train's variance came out
        # high by chance, test points then look too close, and that selection bias differs between real data and
        # surrogate (on the isotropic-nuisance pancakes it made a true tied GMM fail Gaussianity in 5 of 5 classes).
        # With an independent basis, every statistic of a Gaussian model is affine-invariant given the basis.
        mean, basis = pca_basis(features.x_val, features.y_val, num_classes, p)
        z_train, z_test = _project(features.x_train, mean, basis), _project(features.x_test, mean, basis)
    train_members = np.split(np.argsort(features.y_train, kind="stable"), np.cumsum(counts)[:-1])
    with _timed(seconds, "likelihoods"):
        stats = class_statistics(z_train, features.y_train, num_classes)
        tied, shrinkage = shrunk_within_covariance(stats, None)
        full = np.stack([np.cov(z_train[rows], rowvar=False, bias=True) for rows in train_members])
        covariances = {"tied": np.broadcast_to(tied, full.shape), "full": full, "diag": full * np.eye(p)}
        free = {"tied": p * (p + 1) // 2, "full": num_classes * p * (p + 1) // 2, "diag": num_classes * p}
        heldout, mixture, bic = {}, {}, {}
        for model in MODELS:
            heldout[model], mixture[model], bic[model] = _likelihoods(
                z_train, train_members, z_test, features.y_test, stats.means, stats.weights, covariances[model],
                model, num_classes - 1 + num_classes * p + free[model],
            )
    with _timed(seconds, "heterogeneity"):
        heterogeneity = np.array([covariance_distance(c, tied) for c in full])
    with _timed(seconds, "gaussianity"):
        tied_cholesky = _cholesky(tied, "tied", 0)
        distances = np.zeros(len(features.y_test))
        for k in range(num_classes):
            rows = np.flatnonzero(features.y_test == k)
            distances[rows] = squared_mahalanobis(z_test[rows], stats.means[k], tied_cholesky)
    seeds = [cfg.seed + i for i in range(cfg.repeats)]  # docs/theory.md, "Seeds": means over ≥ 3 seeds
    with _timed(seconds, "em"):
        fits = [_fit_em(z_train, z_test, features.y_test, num_classes, cfg, seed) for seed in seeds]
        em_nmi, em_loglik = (float(np.mean([fit[i] for fit in fits])) for i in (0, 1))
        em_iterations, em_converged = int(np.max([fit[2] for fit in fits])), all(fit[3] for fit in fits)
    with _timed(seconds, "lda_split_half"):
        splits = [lda_split_half(features.x_train, features.y_train, num_classes, seed, lda_shrinkage) for seed in seeds]
        agreement, half_bases = float(np.mean([split[0] for split in splits])), splits[0][1]
    return GMMCheckResult(
        features.data_kind, p, counts, shrinkage, heldout, mixture, bic, heterogeneity, distances,
        np.asarray(features.y_test), em_nmi, em_loglik, em_iterations, em_converged, agreement, half_bases, seconds,
    )


def pca_basis(x: np.ndarray, y: np.ndarray, num_classes: int, pca_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean [d] and top-``pca_dim`` principal directions [d, p] of x [N, d], from the total covariance
    S_W + Σ_k π_k (μ_k − μ̄)(μ_k − μ̄)ᵀ of one ``class_statistics`` pass (x is never copied in float64)."""
    stats = class_statistics(x, y, num_classes)
    mean = stats.weights @ stats.means
    centred = stats.means - mean
    total = stats.within_covariance + (centred.T * stats.weights) @ centred
    d = total.shape[0]
    _, vectors = eigh(total, subset_by_index=[d - pca_dim, d - 1])
    return mean, vectors[:, ::-1]


def calibrate(real: GMMCheckResult, surrogates: Sequence[GMMCheckResult], cfg: CheckConfig) -> list[dict]:
    """The checks.json records: each statistic on the real data against its surrogate distribution (docs/theory.md,
    "GMM checks on real features"). One record per statistic (``class`` None) and per class for
    ``heterogeneity`` and ``gaussianity_ks``, each {statistic, class, real, surrogate_mean, surrogate_std (ddof 1),
    gap = real − surrogate_mean, p_value, p_holm, rejected} (the last three null except for Gaussianity).

    Gaussianity: the two-sample Kolmogorov–Smirnov distance between the squared Mahalanobis distances of a class's
    test points and those of the same class in the surrogates. So that real and surrogate values share the
    reference size, the real value is the mean over s of its distance to the surrogates other than s, and surrogate
    s gets its distance to the other surrogates; the p-value compares the real distances with all surrogates',
    Holm-corrected across classes and rejected at ``cfg.alpha``. ``gaussianity_rejected`` counts rejections (for
    a surrogate: of its own tests against the others); ``gaussianity_ks_pooled`` pools all classes (the QQ plot).
    """
    if len(surrogates) < 2:
        raise ConfigError(f"calibration needs at least 2 surrogates, got {len(surrogates)}; set check.surrogates ≥ 2")
    surrogate_scalars = [s.scalar_statistics() for s in surrogates]
    records = [calibrated_record(name, None, value, [s[name] for s in surrogate_scalars])
               for name, value in real.scalar_statistics().items()]
    records += [calibrated_record("heterogeneity", k, value, [s.heterogeneity[k] for s in surrogates])
                for k, value in enumerate(real.heterogeneity)]
    classes = np.unique(real.test_labels)
    tests = [_ks_calibrated([r.test_distances[r.test_labels == k] for r in (real, *surrogates)]) for k in classes]
    real_ks, p_values, surrogate_ks, surrogate_p = (np.array(column) for column in zip(*tests))
    p_holm = holm(p_values)
    rejected = p_holm < cfg.alpha
    records += [calibrated_record("gaussianity_ks", int(k), real_ks[i], surrogate_ks[i], float(p_values[i]),
                                  float(p_holm[i]), bool(rejected[i])) for i, k in enumerate(classes)]
    surrogate_rejected = [np.sum(holm(column) < cfg.alpha) for column in surrogate_p.T]
    pooled_ks, pooled_p, pooled_surrogate, _ = _ks_calibrated([r.test_distances for r in (real, *surrogates)])
    return records + [
        calibrated_record("gaussianity_rejected", None, np.sum(rejected), surrogate_rejected),
        calibrated_record("gaussianity_ks_mean", None, real_ks.mean(), surrogate_ks.mean(axis=0)),
        calibrated_record("gaussianity_ks_pooled", None, pooled_ks, pooled_surrogate, pooled_p),
    ]


def qq_quantiles(sample: GMMCheckResult, references: Sequence[GMMCheckResult], points: int = 200
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Quantiles [points] of the held-out squared Mahalanobis distances of ``sample`` (all classes pooled) and
    of the references' distances pooled, at probabilities (i + ½)/points: the QQ plot of Gaussianity."""
    probabilities = (np.arange(points) + 0.5) / points
    pooled = np.concatenate([r.test_distances for r in references])
    return np.quantile(sample.test_distances, probabilities), np.quantile(pooled, probabilities)


def _ks_calibrated(samples: list[np.ndarray]) -> tuple[float, float, np.ndarray, np.ndarray]:
    """samples = [real, surrogate_1..S]: the real KS distance (mean over leave-one-out pools), its p-value
    against all surrogates, and each surrogate's KS distance [S] and p-value [S] against the other surrogates."""
    real, surrogates = samples[0], samples[1:]
    pools = [np.concatenate(surrogates[:s] + surrogates[s + 1 :]) for s in range(len(surrogates))]
    real_ks = np.mean([ks_2samp(real, pool).statistic for pool in pools])
    surrogate_tests = [ks_2samp(sample, pool) for sample, pool in zip(surrogates, pools)]
    return (float(real_ks), float(ks_2samp(real, np.concatenate(surrogates)).pvalue),
            np.array([t.statistic for t in surrogate_tests]), np.array([t.pvalue for t in surrogate_tests]))


def calibrated_record(statistic: str, klass: int | None, real: float, surrogate: Sequence[float],
                      p_value: float | None = None, p_holm: float | None = None, rejected: bool | None = None) -> dict:
    """One checks.json record: the real value against the surrogates' (mean, std with ddof 1, gap = real − mean);
    the surrogate fields are null when there are too few surrogate values for them."""
    values = np.asarray(surrogate, dtype=np.float64)
    mean = float(values.mean()) if len(values) else None
    return {"statistic": statistic, "class": klass, "real": float(real), "surrogate_mean": mean,
            "surrogate_std": float(values.std(ddof=1)) if len(values) > 1 else None,
            "gap": float(real) - mean if mean is not None else None,
            "p_value": p_value, "p_holm": p_holm, "rejected": rejected}


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


def _likelihoods(z_train: np.ndarray, train_members: list[np.ndarray], z_test: np.ndarray, y_test: np.ndarray,
                 means: np.ndarray, weights: np.ndarray, covariances: np.ndarray, model: str, parameters: int
                 ) -> tuple[float, float, float]:
    """(held-out label-conditional, held-out mixture) log-likelihood per test point and BIC on train of the
    labelled Gaussians of ``model`` (means [K, p], weights [K], covariances [K, p, p])."""
    log_density = log_density_matrix(z_test, means, covariances, model)
    conditional = float(np.mean(log_density[np.arange(len(y_test)), y_test]))
    mixture = float(np.mean(logsumexp(log_density + np.log(weights), axis=1)))
    joint = sum(float(np.sum(gaussian_log_density(z_train[rows], means[k], _cholesky(covariances[k], model, k))))
                + len(rows) * np.log(weights[k]) for k, rows in enumerate(train_members))
    return conditional, mixture, float(-2 * joint + parameters * np.log(len(z_train)))


def _cholesky(covariance: np.ndarray, model: str, k: int) -> np.ndarray:
    try:
        return np.linalg.cholesky(covariance)
    except np.linalg.LinAlgError as error:
        which = "tied covariance" if model == "tied" else f"{model} covariance of class {k}"
        raise DataError(f"the {which} is singular in the PCA space (features of rank below check.pca_dim?); "
                        "lower check.pca_dim") from error


def _fit_em(z_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray, num_classes: int, cfg: CheckConfig,
            seed: int) -> tuple[float, float, int, bool]:
    """One tied EM GMM on (a subsample of) train: test NMI against the labels, held-out mixture log-likelihood
    per sample, iterations, converged."""
    em = GaussianMixture(num_classes, covariance_type="tied", max_iter=cfg.em_max_iter, n_init=cfg.em_n_init,
                         random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # recorded as em_converged
        em.fit(z_train[_em_subsample(len(z_train), cfg.em_max_points, seed)])
    nmi = normalized_mutual_info_score(y_test, em.predict(z_test), average_method="arithmetic")
    return float(nmi), float(em.score(z_test)), int(em.n_iter_), bool(em.converged_)


def _em_subsample(n: int, max_points: int | None, seed: int) -> np.ndarray:
    """Rows EM is fitted on: all, or a seeded random ``max_points`` of them (sklearn's tied EM costs n·K·p² per
    iteration: minutes at 50k × 100 classes)."""
    if max_points is None or n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


def _check_pca_dim(features: LabelledFeatures, pca_dim: int) -> np.ndarray:
    """Train class counts [K]; DataError unless 1 ≤ pca_dim ≤ d and every class has more than pca_dim + 1."""
    if not 1 <= pca_dim <= features.dim:
        raise DataError(f"check.pca_dim = {pca_dim} must be between 1 and the feature dimension {features.dim}")
    if len(features.y_val) <= pca_dim:
        raise DataError(f"the val split has {len(features.y_val)} samples, too few to fit the {pca_dim}-dimensional PCA "
                        f"space of the checks; lower check.pca_dim or raise data.val_fraction")
    counts = np.bincount(features.y_train, minlength=features.num_classes)
    k = int(np.argmin(counts))
    if counts[k] <= pca_dim + 1:
        name = f" ({features.class_names[k]})" if k < len(features.class_names) else ""
        advice = f"set check.pca_dim ≤ {counts[k] - 2}" if counts[k] >= 3 else "give every class at least 3 samples"
        raise DataError(f"class {k}{name} has {counts[k]} training samples, too few for a full covariance in "
                        f"{pca_dim} PCA dimensions (needs more than pca_dim + 1); {advice}")
    return counts


def _project(x: np.ndarray, mean: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """(x − mean) @ basis [N, p] in float64, x [N, d] read in chunks."""
    return np.concatenate([(x[start : start + _CHUNK].astype(np.float64) - mean) @ basis
                           for start in range(0, len(x), _CHUNK)])


@contextmanager
def _timed(seconds: dict[str, float], part: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    seconds[part] = time.perf_counter() - start
