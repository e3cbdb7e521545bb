"""Every GMM check on one labelled dataset (docs/theory.md, "GMM checks on real features"): the statistics of
``theory.gmm_checks`` computed in one PCA space of ``check.pca_dim`` dimensions fitted on val.

Labelled Gaussians with tied / full / per-class diagonal covariances compared by held-out log-likelihood per test
sample and by BIC on train; the distance of every class covariance from the tied one; squared Mahalanobis
distances of test points (Gaussianity); an unsupervised tied EM GMM against the labels; and, in the full feature
space, the LDA split-half agreement (docs/theory.md, "Subspace recovery"). Run unchanged on surrogates
(``checking.surrogate``), it gives the parametric bootstrap that ``checking.calibration.calibrate`` turns into the
checks.json records.

At scale the checks run on a seeded stratified subsample (``check_sample``): every split of more than
``MAX_CHECK_ROWS`` rows is cut to that many (lazy row views, no copy), and the surrogates are drawn with the
subsample's labels, so real and surrogate statistics come from datasets of the same size (BIC, the KS distances,
heterogeneity's estimation noise and the split-half agreement all depend on n; a real statistic on all N rows
against surrogates of n rows would not be calibrated).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np

from ssl_pipeline.config import CheckConfig
from ssl_pipeline.data.labelled import LabelledFeatures, stratified_split
from ssl_pipeline.data.rows import take_rows
from ssl_pipeline.errors import DataError
from ssl_pipeline.theory.gmm_checks import (
    MODELS,
    covariance_distance,
    fit_labelled_gaussians,
    fit_tied_em,
    lda_split_half,
    model_fit,
    pca_basis,
    project,
    tied_squared_distances,
)


MAX_CHECK_ROWS = 100_000
"""Rows per split above which the checks (and the surrogates they are calibrated with) use a seeded stratified
subsample of this many (``check_sample``): ImageNet's 1.2M training images become ~100 per class (class-proportional), and one
surrogate's three splits then take ~0.4 GB at d = 512 instead of 2.6 GB."""
_SAMPLE_STREAM = 0xC4EC


def proportional_sample(y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of ``size`` rows of y drawn per class in proportion to the class sizes (largest remainders
    get the leftover rows), uniformly within each class, seeded."""
    counts = np.bincount(y)
    exact = counts * size / len(y)
    quotas = np.floor(exact).astype(np.int64)
    leftover = size - int(quotas.sum())
    quotas[np.argsort(-(exact - quotas), kind="stable")[:leftover]] += 1
    rng = np.random.default_rng([seed, _SAMPLE_STREAM])
    order = np.argsort(y, kind="stable")
    groups = np.split(order, np.cumsum(counts)[:-1])
    chosen = [rng.choice(rows, quota, replace=False) for rows, quota in zip(groups, quotas) if quota]
    return np.sort(np.concatenate(chosen))


def check_sample(features: LabelledFeatures, seed: int, max_rows: int = MAX_CHECK_ROWS) -> LabelledFeatures:
    """``features`` with every split of more than ``max_rows`` rows cut to a seeded stratified (proportional)
    subsample of ``max_rows`` (``proportional_sample``; row views, nothing copied); the same object when no split
    is that large. The subsample is what the checks and the surrogates see (module docstring)."""
    changes = {}
    for split in ("train", "val", "test"):
        y = getattr(features, f"y_{split}")
        if len(y) > max_rows:
            rows = proportional_sample(np.asarray(y), max_rows, seed + {"train": 0, "val": 1, "test": 2}[split])
            changes |= {f"x_{split}": take_rows(getattr(features, f"x_{split}"), rows), f"y_{split}": y[rows]}
    if not changes:
        return features
    whole = {split: len(getattr(features, f"y_{split}")) for split in ("train", "val", "test")}
    return replace(features, **changes, sampled_from=whole)


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
        mean, basis = pca_basis(features.x_val, features.y_val, num_classes, p, features.statistics("val"))
        z_train, z_test = project(features.x_train, mean, basis), project(features.x_test, mean, basis)
    with _timed(seconds, "likelihoods"):
        gaussians = fit_labelled_gaussians(z_train, features.y_train, num_classes)
        fits = {model: model_fit(gaussians, model, z_train, z_test, features.y_test) for model in MODELS}
    with _timed(seconds, "heterogeneity"):
        heterogeneity = np.array([covariance_distance(c, gaussians.tied) for c in gaussians.full])
    with _timed(seconds, "gaussianity"):
        distances = tied_squared_distances(z_test, features.y_test, gaussians.stats.means, gaussians.tied)
    seeds = [cfg.seed + i for i in range(cfg.repeats)]  # docs/theory.md, "Seeds": means over ≥ 3 seeds
    with _timed(seconds, "em"):
        em_fits = [fit_tied_em(z_train, z_test, features.y_test, num_classes, seed, max_iter=cfg.em_max_iter,
                               n_init=cfg.em_n_init, max_points=cfg.em_max_points) for seed in seeds]
    with _timed(seconds, "lda_split_half"):
        # top=p: where K − 1 ≥ the features' rank the halves' Fisher subspaces are the whole span and would agree
        # trivially; their top-p generalised eigenvectors are compared instead (theory.gmm_checks.lda_split_half)
        splits = [lda_split_half(features.x_train, features.y_train, stratified_split(features.y_train, 0.5, seed),
                                 num_classes, lda_shrinkage, top=p) for seed in seeds]
    return GMMCheckResult(
        data_kind=features.data_kind,
        pca_dim=p,
        class_counts=counts,
        tied_shrinkage=gaussians.tied_shrinkage,
        heldout_loglik={model: fit.heldout_loglik for model, fit in fits.items()},
        heldout_mixture_loglik={model: fit.heldout_mixture_loglik for model, fit in fits.items()},
        bic={model: fit.bic for model, fit in fits.items()},
        heterogeneity=heterogeneity,
        test_distances=distances,
        test_labels=np.asarray(features.y_test),
        em_nmi=float(np.mean([fit.nmi for fit in em_fits])),
        em_heldout_mixture_loglik=float(np.mean([fit.heldout_mixture_loglik for fit in em_fits])),
        em_iterations=int(np.max([fit.iterations for fit in em_fits])),
        em_converged=all(fit.converged for fit in em_fits),
        lda_split_half=float(np.mean([split.agreement for split in splits])),
        lda_half_bases=splits[0].bases,
        seconds=seconds,
    )


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


@contextmanager
def _timed(seconds: dict[str, float], part: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    seconds[part] = time.perf_counter() - start
