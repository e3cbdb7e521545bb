"""Figures of the GMM checks (docs/theory.md, "GMM checks on real features"): each real statistic against its surrogate
distribution. Builders return matplotlib ``Figure``s (Agg, no pyplot state); ``save_check_figures`` writes them
as PNGs into a run's ``checks/`` directory, which the HTML report embeds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ssl_pipeline.reporting.figures import write_png
from ssl_pipeline.checking.statistics import GMMCheckResult
from ssl_pipeline.theory.gmm_checks import MODELS, qq_quantiles

REAL_COLOR, SURROGATE_COLOR = "tab:blue", "grey"


def gaussianity_qq_figure(real: GMMCheckResult, surrogates: Sequence[GMMCheckResult]) -> Figure:
    """QQ plot of held-out squared Mahalanobis distances (all classes pooled): real against the surrogates, and
    each surrogate against the other surrogates (the spread expected if the features were a tied GMM)."""
    figure = Figure(figsize=(5.2, 5.0), layout="constrained")
    axis = figure.subplots()
    for s, surrogate in enumerate(surrogates if len(surrogates) > 1 else []):
        others = [o.test_distances for i, o in enumerate(surrogates) if i != s]
        sample, reference = qq_quantiles(surrogate.test_distances, others)
        axis.plot(reference, sample, color=SURROGATE_COLOR, lw=1, alpha=0.7,
                  label="surrogate vs other surrogates" if s == 0 else None)
    sample, reference = qq_quantiles(real.test_distances, [s.test_distances for s in surrogates])
    axis.plot(reference, sample, "o", ms=3, color=REAL_COLOR, label="real vs surrogates")
    limits = [min(sample.min(), reference.min()), max(sample.max(), reference.max())]
    axis.plot(limits, limits, "k--", lw=0.8)
    axis.set(xscale="log", yscale="log", xlabel="surrogate quantile", ylabel="quantile",
             title=f"Squared Mahalanobis distances, test split ({real.pca_dim} PCA dims)")
    axis.legend(fontsize=8)
    return figure


def heterogeneity_figure(real: GMMCheckResult, surrogates: Sequence[GMMCheckResult]) -> Figure:
    """Per-class affine-invariant distance of Σ_k from the tied Σ: real points over the surrogate mean ± 2 std."""
    values = np.stack([s.heterogeneity for s in surrogates])
    mean, std = values.mean(axis=0), _spread(values)
    classes = np.arange(len(real.heterogeneity))
    figure = Figure(figsize=(max(6.0, 0.08 * len(classes) + 2), 3.8), layout="constrained")
    axis = figure.subplots()
    axis.fill_between(classes, mean - 2 * std, mean + 2 * std, color=SURROGATE_COLOR, alpha=0.35, step="mid",
                      label=f"surrogate mean ± 2 std ({len(surrogates)})")
    axis.plot(classes, mean, color=SURROGATE_COLOR, lw=1, drawstyle="steps-mid")
    axis.plot(classes, real.heterogeneity, "o", ms=3, color=REAL_COLOR, label="real")
    axis.set(xlabel="class", ylabel="‖log(Σ^-1/2 Σ_k Σ^-1/2)‖_F / √p", ylim=(0, None),
             title=f"Class covariance vs tied covariance ({real.pca_dim} PCA dims)")
    axis.legend(fontsize=8)
    return figure


def loglik_figure(real: GMMCheckResult, surrogates: Sequence[GMMCheckResult]) -> Figure:
    """Held-out log-likelihood per test sample of tied / full / diagonal Gaussians, label-conditional and mixture:
    real against the surrogate mean ± std."""
    figure = Figure(figsize=(8.0, 3.6), layout="constrained")
    positions = np.arange(len(MODELS))
    for axis, field, title in zip(figure.subplots(1, 2), ("heldout_loglik", "heldout_mixture_loglik"),
                                  ("log N(x | μ_y, Σ_y)", "log Σ_k π_k N(x | μ_k, Σ_k)")):
        values = np.array([[getattr(s, field)[m] for m in MODELS] for s in surrogates])
        axis.errorbar(positions + 0.1, values.mean(axis=0), yerr=_spread(values), fmt="s", color=SURROGATE_COLOR,
                      capsize=4, label="surrogate mean ± std")
        axis.plot(positions - 0.1, [getattr(real, field)[m] for m in MODELS], "o", color=REAL_COLOR, label="real")
        axis.set(xticks=positions, xticklabels=MODELS, ylabel="per test sample", title=title)
        axis.legend(fontsize=8)
    return figure


def _spread(values: np.ndarray) -> np.ndarray:
    """Standard deviation (ddof 1) over surrogates of values [S, m]; zeros for a single surrogate."""
    return values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros(values.shape[1])


def save_check_figures(result_real: GMMCheckResult, results_surrogate: Sequence[GMMCheckResult],
                       out_dir: Path) -> dict[str, Path]:
    """Write every check figure as ``<out_dir>/<name>.png`` (atomically); returns name → path."""
    builders = {"gaussianity_qq": gaussianity_qq_figure, "heterogeneity": heterogeneity_figure, "loglik": loglik_figure}
    paths = {}
    for name, build in builders.items():
        paths[name] = Path(out_dir) / f"{name}.png"
        write_png(build(result_real, results_surrogate), paths[name])
    return paths
