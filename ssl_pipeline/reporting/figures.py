"""Figure builders of runs and reports (matplotlib, Agg, no pyplot state); each returns a ``Figure`` that the
caller saves (``write_png``), embeds or logs.

``rows`` are the aggregates of ``results.aggregate``: one per setting, each metric as (mean, std) over seeds or
None; the report's rows also carry their ``run``, and rows of different runs are drawn apart. Head methods are
the rows with a δ; LDA, PCA and the random projection are drawn as horizontal lines.
"""

from __future__ import annotations

import io
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ssl_pipeline.atomic import atomic_write_bytes
from ssl_pipeline.records.results import AXIS_SYMBOLS, _method_order, axis_label, method_label, swept_fields
from ssl_pipeline.scoring.projection_sample import ProjectionSample

BASELINE_STYLES = {"lda": ("black", "-"), "means": ("tab:purple", "-."), "pca": ("tab:red", ":"),
                   "minor": ("tab:brown", (0, (1, 3))),
                   "random": ("grey", "--")}
CLOSED_FORMS = ("spectral",)
"""Methods with a δ that are computed, not trained (the spectral closed form): drawn dashed with square markers."""
SERIES_FIELDS = ("r", "features", "run")
"""Settings that split one method into several curves (runs on other features or with another r, and repeated
runs of one setting in a report); so do the sweep axes τ, ξ and lr where a method has several values of one at a
δ (``results.swept_fields``), but not the per-δ overrides (τ, epochs), which change only with δ."""
DELTA_LABEL = "δ (probability that a positive shares the class)"
MARKERS = ("o", "^", "D", "v", "P", "X", "*")
"""Markers of the head methods (in ``_method_order``) when some method sweeps an axis, so that curves of a colour
that repeats stay apart."""
MAX_LEGEND_CLASSES = 12
DPI = 110


def png_bytes(figure: Figure) -> bytes:
    """``figure`` rendered as PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def write_png(figure: Figure, path: Path) -> Path:
    """Render ``figure`` as PNG and write it atomically; returns ``path``."""
    atomic_write_bytes(path, png_bytes(figure))
    return Path(path)


def has_head_curve(rows: list[dict], metric: str) -> bool:
    """Whether some head method has ``metric`` at one δ or more (else there is no curve to draw)."""
    return any(row.get("delta") is not None and row.get(metric) is not None for row in rows)


def _labelled_series(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows of each method split by ``SERIES_FIELDS`` and its swept axes (one curve per combination of values); a
    label names the fields that differ within a method: ``infonce (r=8, τ=0.2)``."""
    swept = swept_fields(rows)
    series: dict[tuple, list[dict]] = defaultdict(list)
    for row in sorted(rows, key=_method_order):
        label = method_label(row)
        fields = SERIES_FIELDS + tuple(f for f in swept.get(label, ()) if f not in SERIES_FIELDS)
        series[(label, tuple((f, row.get(f)) for f in fields))].append(row)
    labelled = {}
    for (label, pairs), members in series.items():
        siblings = [other for name, other in series if name == label]
        varying = [(f, value) for i, (f, value) in enumerate(pairs) if len({other[i][1] for other in siblings}) > 1]
        detail = ", ".join(f"{AXIS_SYMBOLS.get(f, f)}={_short(f, value)}" for f, value in varying)
        labelled[f"{label} ({detail})" if detail else label] = members
    return labelled


def _short(field: str, value: object) -> str:
    """A legend's value: feature keys (long digests) cut to 10 characters, numbers as ``:g``, anything else whole."""
    if field == "features":
        return str(value)[:10]
    return f"{value:g}" if isinstance(value, float) else str(value)


def _draw_metric_vs_delta(axis: Axes, rows: list[dict], metric: str) -> None:
    """Draw the curves and baselines of ``metric`` (markers per method and fainter repeated baselines where some
    method sweeps an axis)."""
    heads = [row for row in rows if row.get("delta") is not None and row.get(metric) is not None]
    series = _labelled_series(heads)
    swept = bool(swept_fields(heads))
    methods = list(dict.fromkeys(members[0]["method"] for members in series.values()))
    palette = colormaps["tab20"] if swept and len(series) > 10 else None
    for index, (label, members) in enumerate(series.items()):
        members = sorted(members, key=lambda row: row["delta"])
        closed = members[0]["method"] in CLOSED_FORMS
        marker = MARKERS[methods.index(members[0]["method"]) % len(MARKERS)] if swept else "o"
        axis.errorbar(
            [row["delta"] for row in members], [row[metric][0] for row in members],
            yerr=[row[metric][1] for row in members], marker="s" if closed else marker, capsize=3,
            linestyle="--" if closed else "-", label=f"{label} (closed form)" if closed else label,
            **({"color": palette(index % 20)} if palette is not None else {}),
        )
    baselines = [row for row in rows if row["method"] in BASELINE_STYLES and row.get(metric) is not None]
    drawn: dict[str, int] = defaultdict(int)
    for label, members in _labelled_series(shared_baselines(baselines, metric)).items():
        method = members[0]["method"]
        color, style = BASELINE_STYLES[method]
        # one baseline at several r (a heads.r sweep): fainter lines for the later values
        alpha = 1.0 / (1 + 0.6 * drawn[method]) if swept else 1.0
        drawn[method] += 1
        axis.axhline(members[0][metric][0], color=color, linestyle=style, linewidth=1.2, alpha=alpha, label=label)
    axis.set_xlabel(DELTA_LABEL)
    axis.set_ylabel(f"{metric} (mean ± std over seeds)")
    axis.set_xlim(-0.05, 1.05)
    axis.grid(alpha=0.3)


def shared_baselines(rows: list[dict], metric: str) -> list[dict]:
    """The baseline rows with one row per (method, setting) whose ``metric`` is the same in every run that has it
    (to 1e-12: the runs of a report that share features and seeds give identical baselines), its ``run`` dropped
    so it is drawn once; the rows of a baseline that differs between runs are kept, one line per run."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["method"], *((f, row.get(f)) for f in SERIES_FIELDS if f != "run"))].append(row)
    kept = []
    for members in groups.values():
        values = [row[metric] for row in members]
        same = all(abs(v[0] - values[0][0]) <= 1e-12 and abs(v[1] - values[0][1]) <= 1e-12 for v in values)
        kept += [{**members[0], "run": None}] if same else members
    return kept


def metric_vs_delta(rows: list[dict], metric: str, title: str) -> Figure:
    """``metric`` against δ for every head method (mean ± std error bars), LDA (solid black), PCA and the
    random projection as horizontal lines."""
    figure = Figure(figsize=(5.2, 3.8), layout="constrained")
    axis = figure.subplots()
    _draw_metric_vs_delta(axis, rows, metric)
    low, high = axis.get_ylim()  # keep baseline lines off the frame
    axis.set_ylim(low - 0.04 * (high - low), high + 0.04 * (high - low))
    axis.set_title(title, fontsize=10)
    _place_legend(figure, axis)
    return figure


def _place_legend(figure: Figure, axis: Axes) -> None:
    """``axis``'s legend to the right of the figure, outside the axes, so that it never covers a curve (the
    figure widened for it and, for a long legend, heightened)."""
    handles, labels = axis.get_legend_handles_labels()
    if not labels:
        return
    columns = 1 + (len(labels) - 1) // 30
    figure.set_figwidth(figure.get_figwidth() + 2.8 * columns)
    figure.set_figheight(max(figure.get_figheight(), 0.8 + 0.17 * -(-len(labels) // columns)))
    figure.legend(handles, labels, loc="outside right upper", fontsize=7, ncols=columns)


def delta_sweep(
    rows: list[dict],
    metrics: Sequence[str] = ("fisher_cos2", "means_cos2", "pca_cos2", "minor_cos2", "nmi", "probe_acc"),
) -> Figure:
    """One ``metric_vs_delta`` panel per metric with values, side by side (a run's ``delta_sweep.png``): which
    subspace the heads learned (Fisher, class means, PCA, minor) and how well they cluster and classify."""
    metrics = [m for m in metrics if any(row.get(m) is not None for row in rows)] or list(metrics[:1])
    figure = Figure(figsize=(4.2 * len(metrics), 3.6), layout="constrained")
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    for axis, metric in zip(axes, metrics):
        _draw_metric_vs_delta(axis, rows, metric)
        axis.set_title(metric)
        axis.set_ylabel("")
    _place_legend(figure, axes[0])
    return figure


def _bar_values(rows: list[dict], metric: str) -> dict[str, tuple[float, float]]:
    """Per bar label: baselines, and each head at its largest δ (the first row of a label is kept); one bar per
    swept axis value (``infonce r=8 δ=1``) and one per run, its label ending in ``[run]``, when the rows come from
    several runs."""
    several_runs = len({row.get("run") for row in rows}) > 1
    swept = swept_fields(rows)
    largest: dict[tuple, float] = {}
    for row in rows:
        if row.get("delta") is not None:
            series = (method_label(row), row.get("run"))
            largest[series] = max(row["delta"], largest.get(series, row["delta"]))
    values: dict[str, tuple[float, float]] = {}
    for row in sorted(rows, key=_method_order):
        delta = row.get("delta")
        if row.get(metric) is None or (delta is not None and delta != largest[(method_label(row), row.get("run"))]):
            continue
        axes = axis_label(row, swept.get(method_label(row), ()))
        label = f"{method_label(row)} {axes}" if axes else method_label(row)
        label = label if delta is None else f"{label} δ={delta:g}"
        values.setdefault(f"{label} [{row['run']}]" if several_runs else label, row[metric])
    return values


def method_bars(rows_by_backbone: dict[str, list[dict]], metric: str) -> Figure:
    """Grouped bars: one group per backbone (x), one bar per method (colour) with its std over seeds as an
    error bar; heads at their largest δ."""
    values = {backbone: _bar_values(rows, metric) for backbone, rows in rows_by_backbone.items()}
    labels = list(dict.fromkeys(label for per_backbone in values.values() for label in per_backbone))
    figure = Figure(figsize=(max(5.2, 2.4 + 0.3 * len(labels) * len(values)), 3.8), layout="constrained")
    axis = figure.subplots()
    width = 0.8 / max(1, len(labels))
    colors = [f"C{i % 10}" for i in range(len(labels))]
    for index, label in enumerate(labels):
        positions = [x for x, per_backbone in enumerate(values.values()) if label in per_backbone]
        bars = [per_backbone[label] for per_backbone in values.values() if label in per_backbone]
        offsets = np.asarray(positions) - 0.4 + width * (index + 0.5)
        axis.bar(offsets, [b[0] for b in bars], width, yerr=[b[1] for b in bars], capsize=2, color=colors[index], label=label)
    ticks = ["\n".join(textwrap.wrap(backbone.replace(" / ", "\n"), 24, replace_whitespace=False)) for backbone in values]
    axis.set_xticks(range(len(values)), ticks, fontsize=8)
    axis.set_ylabel(f"{metric} (mean ± std over seeds)")
    axis.set_title(f"{metric} per backbone (heads at their largest δ)")
    axis.grid(axis="y", alpha=0.3)
    if labels:
        figure.legend(loc="outside right upper", fontsize=8)
    return figure


def label_bars(rows: list[dict], metrics: list[str]) -> Figure:
    """Grouped bars: one group per row (method and δ, and its run when the rows come from several), one bar per metric of ``metrics`` (e.g. ``label_energy_fine``,
    ``label_energy_coarse``), mean ± std over seeds; rows without the metric leave their bar out."""
    several = len({row.get("run") for row in rows}) > 1  # rows of several runs: name the run
    names = [method_label(row) + (f" δ={row['delta']:g}" if row.get("delta") is not None else "")
             + (f" [{row.get('run')}]" if several else "") for row in rows]
    figure = Figure(figsize=(max(5.0, 0.9 * len(rows) + 2), 3.6), layout="constrained")
    axis = figure.subplots()
    width = 0.8 / max(1, len(metrics))
    for j, metric in enumerate(metrics):
        positions = [i + (j - (len(metrics) - 1) / 2) * width for i, row in enumerate(rows) if row.get(metric)]
        values = [row[metric] for row in rows if row.get(metric)]
        if values:
            axis.bar(positions, [v[0] for v in values], width, yerr=[v[1] for v in values], capsize=2,
                     label=metric, color=colormaps["tab10"](j % 10))
    axis.set_xticks(range(len(rows)), ["\n".join(textwrap.wrap(name, 16)) for name in names], fontsize=7)
    axis.set_ylim(0, 1.05)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=7, loc="best")
    return figure


def projection_scatter(sample: ProjectionSample) -> Figure:
    """One panel per projection: the first two coordinates of the sampled test points, coloured by class (a
    legend with the class names when there are at most 12 classes)."""
    methods = list(sample["projections"])
    columns = min(4, max(1, len(methods)))
    rows = -(-len(methods) // columns)
    figure = Figure(figsize=(3.4 * columns, 3.3 * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    labels = sample["labels"]
    classes = max(len(sample["class_names"]), int(labels.max()) + 1 if len(labels) else 0)
    palette = "tab10" if classes <= 10 else "tab20" if classes <= 20 else "turbo"
    colormap = colormaps[palette].resampled(max(classes, 1))
    for axis, method in zip(axes, methods):
        z = sample["projections"][method]
        y = z[:, 1] if z.shape[1] > 1 else np.zeros(len(z))
        axis.scatter(z[:, 0], y, c=colormap(labels), s=5, alpha=0.7, linewidths=0)
        suffix = " (L2-normalised)" if sample["normalized"][method] else ""
        axis.set_title(f"{method}{suffix}", fontsize=10)
        axis.set_xlabel("z₁")
        axis.set_ylabel("z₂" if z.shape[1] > 1 else "(1-d projection)")
        axis.tick_params(labelsize=7)
    for axis in axes[len(methods):]:
        axis.set_visible(False)
    if 0 < len(sample["class_names"]) <= MAX_LEGEND_CLASSES:
        handles = [
            Line2D([], [], marker="o", linestyle="", color=colormap(k), label=name)
            for k, name in enumerate(sample["class_names"])
        ]
        figure.legend(handles=handles, loc="outside lower center", ncols=min(6, len(handles)), fontsize=8)
    return figure


def effective_delta_figure(view_rows: list[dict], metric: str = "nmi") -> Figure:
    """One panel per method (of ``scoring.views.view_rows``): its δ-pair curve of ``metric`` (mean over seeds) and
    each recipe's view-pair head placed on it at its effective δ (a labelled marker; a recipe below or above the
    curve is drawn at the curve's lowest or highest δ with a ▼ or ▲ marker and its value)."""
    methods = list(dict.fromkeys(method_label({**row, "views": None}) for row in view_rows))
    figure = Figure(figsize=(4.2 * max(1, len(methods)), 3.6), layout="constrained")
    axes = figure.subplots(1, max(1, len(methods)), squeeze=False)[0]
    recipes = list(dict.fromkeys(row["views"] for row in view_rows))
    colors = {recipe: colormaps["tab10"](i % 10) for i, recipe in enumerate(recipes)}
    for axis, method in zip(axes, methods):
        rows = [row for row in view_rows if method_label({**row, "views": None}) == method]
        curve = rows[0]["curve"]
        if curve:
            axis.plot(list(curve), list(curve.values()), marker="o", color="black", label=f"{method}: δ-pairs")
        for row in rows:
            mean = row[metric][0]
            if row["effective_delta"] is not None:
                x, marker = row["effective_delta"], "*"
            elif row["effective_delta_outside"] is not None and row["deltas"]:
                below = row["effective_delta_outside"] < 0
                x, marker = (min(row["deltas"]) if below else max(row["deltas"])), ("v" if below else "^")
            else:
                continue
            axis.plot([x], [mean], marker=marker, markersize=11, linestyle="none", color=colors[row["views"]],
                      label=f"views:{row['views']} (δ_eff {row['effective_delta_text']})")
        axis.set_title(method, fontsize=10)
        axis.set_xlabel(DELTA_LABEL)
        axis.set_ylabel(f"{metric} (mean over seeds)")
        axis.set_xlim(-0.05, 1.05)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="best")
    return figure
