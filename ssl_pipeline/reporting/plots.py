"""Figures of a run: metrics against δ for every head, with the baselines as horizontal lines."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ssl_pipeline.reporting.figures import delta_sweep, write_png
from ssl_pipeline.reporting.results import aggregate


def plot_delta_sweep(records: list[dict], path: Path, metrics: Sequence[str] = ("fisher_cos2", "nmi", "probe_acc")) -> Path:
    """One panel per metric: mean ± std over seeds against δ for each head method, LDA/PCA/random as lines.

    Written atomically as a PNG; returns its path.
    """
    return write_png(delta_sweep(aggregate(records), metrics), path)
