"""Figures of a run: metrics against δ for every head, with the baselines as horizontal lines."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ssl_pipeline.records.results import aggregate
from ssl_pipeline.reporting.figures import delta_sweep, write_png


DELTA_SWEEP_METRICS = ("fisher_cos2", "nmi", "probe_acc", "energy_shared", "retrieval_map")
"""The panels of ``delta_sweep.png``; a metric no record has is left out, so energy_shared appears on paired
synthetic data and retrieval_map with CLIP heads (one curve per tower), and unimodal runs keep three panels."""


def plot_delta_sweep(records: list[dict], path: Path, metrics: Sequence[str] = DELTA_SWEEP_METRICS) -> Path:
    """One panel per metric with values: mean ± std over seeds against δ for each head method (each CLIP tower
    apart), LDA/PCA/random as lines.

    Written atomically as a PNG; returns its path.
    """
    return write_png(delta_sweep(aggregate(records), metrics), path)
