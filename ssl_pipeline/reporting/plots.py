"""Figures of a run: metrics against δ for every head, with the baselines as horizontal lines."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ssl_pipeline.reporting.results import aggregate

HEAD_METHODS = ("infonce", "simsiam", "clip")
BASELINE_STYLES = {"lda": ("black", "-"), "pca": ("tab:red", ":"), "random": ("grey", "--")}


def plot_delta_sweep(records: list[dict], path: Path, metrics: Sequence[str] = ("fisher_cos2", "nmi", "probe_acc")) -> Path:
    """One panel per metric: mean ± std over seeds against δ for each head method, LDA/PCA/random as lines.

    Written atomically as a PNG; returns its path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = aggregate(records)
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        for method in HEAD_METHODS:
            points = sorted((r["delta"], r[metric]) for r in rows if r["method"] == method and r[metric] is not None)
            if points:
                deltas = [p[0] for p in points]
                means = [p[1][0] for p in points]
                stds = [p[1][1] for p in points]
                axis.errorbar(deltas, means, yerr=stds, marker="o", capsize=3, label=method)
        for method, (color, style) in BASELINE_STYLES.items():
            for row in rows:
                if row["method"] == method and row[metric] is not None:
                    axis.axhline(row[metric][0], color=color, linestyle=style, linewidth=1, label=method)
        axis.set_xlabel("δ (probability that a positive shares the class)")
        axis.set_title(metric)
        axis.set_xlim(-0.05, 1.05)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    tmp.replace(path)
    return path
