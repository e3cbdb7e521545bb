"""Placing augmentation recipes on the δ axis (docs/theory.md, "Augmentation views"): the effective δ of a view-pair
record is the δ at which the δ-pair curve of the same method reaches its NMI."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Optional, Sequence

from ssl_pipeline.records.results import aggregate

CURVE_FIELDS = ("method", "data", "dataset", "features", "r", "tau", "xi", "regularizer", "loss_weights",
                "similarity", "symmetric", "lr", "weight_decay", "parametrization", "tower", "target")
"""The settings a view record and the δ-pair records of its curve share (everything but δ, seed, epochs, batch
size and the pairs themselves)."""
STATISTICS = ("view_fisher_share", "within_fisher_share", "view_within_ratio")
"""The pair statistics of a recipe, on its closed-form records (``scoring.run.view_pair_statistics``)."""


def effective_delta(deltas: Sequence[float], values: Sequence[float], target: float) -> tuple[Optional[float], Optional[int]]:
    """Where the curve (δ_i, v_i) reaches ``target``: the first segment, by increasing δ, whose values bracket it,
    interpolated linearly (a flat segment at the target gives its lower δ) → (δ, None); outside every segment →
    (None, −1) when the target is below every value ("below δ = lowest") or (None, +1) above every value ("above δ =
    highest"). A curve of one point matches only its own value. NaN values are dropped."""
    points = sorted((float(d), float(v)) for d, v in zip(deltas, values) if v is not None and not math.isnan(v))
    if not points:
        return None, None
    for (d0, v0), (d1, v1) in zip(points, points[1:]):
        low, high = min(v0, v1), max(v0, v1)
        if low <= target <= high:
            return (d0 if v1 == v0 else d0 + (target - v0) / (v1 - v0) * (d1 - d0)), None
    if len(points) == 1 and target == points[0][1]:
        return points[0][0], None
    lowest = min(v for _, v in points)
    return (None, -1) if target < lowest else (None, 1)


def delta_curves(rows: list[dict[str, Any]], metric: str = "nmi") -> dict[tuple, dict[float, float]]:
    """From ``records.results.aggregate`` rows: per ``CURVE_FIELDS`` setting, δ → the mean ``metric`` over seeds of
    its δ-pair rows (``pairs: delta``)."""
    curves: dict[tuple, dict[float, float]] = defaultdict(dict)
    for row in rows:
        if row.get("pairs") == "delta" and row.get(metric) is not None and row.get("delta") is not None:
            curves[tuple(row.get(k) for k in CURVE_FIELDS)][float(row["delta"])] = row[metric][0]
    return curves


def place(curve: dict[float, float], value: Optional[float]) -> tuple[Optional[float], Optional[int]]:
    """``effective_delta`` of ``value`` on a δ → metric curve; (None, None) without a curve or a value."""
    if not curve or value is None:
        return None, None
    deltas = sorted(curve)
    return effective_delta(deltas, [curve[d] for d in deltas], value)


def add_effective_deltas(records: list[dict[str, Any]], metric: str = "nmi") -> None:
    """Set ``effective_delta`` / ``effective_delta_outside`` on every view-pair record (``pairs: views``) against
    the δ-pair records of the same ``CURVE_FIELDS`` (mean ``metric`` over seeds at each δ: ``delta_curves``). A
    view record whose method has no δ curve is left null."""
    curves = delta_curves(aggregate(records), metric)
    for record in records:
        if record.get("pairs") == "views":
            curve = curves.get(tuple(record.get(k) for k in CURVE_FIELDS), {})
            if curve and record.get(metric) is not None:
                record["effective_delta"], record["effective_delta_outside"] = place(curve, record[metric])


def effective_delta_text(value: Optional[float], outside: Optional[int], deltas: Sequence[float]) -> str:
    """``0.27``, ``below δ = 0`` or ``above δ = 1`` (the curve's lowest / highest δ), ``–`` without a curve."""
    if value is not None:
        return f"{value:.2f}"
    if outside is None or not deltas:
        return "–"
    return f"below δ = {min(deltas):g}" if outside < 0 else f"above δ = {max(deltas):g}"


def view_rows(records: list[dict[str, Any]], metric: str = "nmi") -> list[dict[str, Any]]:
    """The ``records.results.aggregate`` rows of the view-pair settings (recipe, method, …), each with the effective
    δ of its mean ``metric`` on the δ curve of the same ``CURVE_FIELDS`` (``place``) as a number, a side and text,
    that curve (``curve``: δ → mean) and its δ grid (``deltas``), and its recipe's pair statistics
    (``view_fisher_share``, ``within_fisher_share``, ``view_within_ratio``, from the recipe's closed-form rows)."""
    rows = aggregate(records)
    curves = delta_curves(rows, metric)
    statistics_by_recipe = {
        (row.get("features"), row["views"]): {name: row[name][0] for name in STATISTICS}
        for row in rows if row.get("pairs") == "views" and row.get(STATISTICS[0]) is not None
    }
    placed = []
    for row in rows:
        if row.get("pairs") != "views":
            continue
        curve = curves.get(tuple(row.get(k) for k in CURVE_FIELDS), {})
        value, outside = place(curve, row[metric][0] if row.get(metric) else None)
        deltas = sorted(curve)
        placed.append({**row, **statistics_by_recipe.get((row.get("features"), row["views"]), {}),
                       "effective_delta": value, "effective_delta_outside": outside, "deltas": deltas,
                       "effective_delta_text": effective_delta_text(value, outside, deltas),
                       "curve": {d: curve[d] for d in deltas}})
    return placed
