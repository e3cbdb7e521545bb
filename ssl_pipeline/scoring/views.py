"""Placing augmentation recipes on the δ axis (docs/theory.md, "Augmentation views"): the effective δ of a view-pair
record is the δ at which the δ-pair curve of the same method reaches its NMI."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any, Optional, Sequence

CURVE_FIELDS = ("method", "data", "dataset", "features", "r", "tau", "xi", "regularizer", "loss_weights",
                "similarity", "symmetric", "lr", "weight_decay", "parametrization", "tower", "target")
"""The settings a view record and the δ-pair records of its curve share (everything but δ, seed, epochs, batch
size and the pairs themselves)."""


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


def add_effective_deltas(records: list[dict[str, Any]], metric: str = "nmi") -> None:
    """Set ``effective_delta`` / ``effective_delta_outside`` on every view-pair record (``pairs: views``) against
    the δ-pair records of the same ``CURVE_FIELDS`` (mean ``metric`` over seeds at each δ). A view record whose
    method has no δ curve is left null."""
    curves: dict[tuple, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        if record.get("pairs") == "delta" and record.get(metric) is not None and record.get("delta") is not None:
            curves[tuple(record.get(k) for k in CURVE_FIELDS)][float(record["delta"])].append(record[metric])
    for record in records:
        if record.get("pairs") != "views" or record.get(metric) is None:
            continue
        curve = curves.get(tuple(record.get(k) for k in CURVE_FIELDS))
        if not curve:
            continue
        deltas = sorted(curve)
        value, outside = effective_delta(deltas, [statistics.fmean(curve[d]) for d in deltas], record[metric])
        record["effective_delta"], record["effective_delta_outside"] = value, outside


def effective_delta_text(value: Optional[float], outside: Optional[int], deltas: Sequence[float]) -> str:
    """``0.27``, ``below δ = 0`` or ``above δ = 1`` (the curve's lowest / highest δ), ``–`` without a curve."""
    if value is not None:
        return f"{value:.2f}"
    if outside is None or not deltas:
        return "–"
    return f"below δ = {min(deltas):g}" if outside < 0 else f"above δ = {max(deltas):g}"


def view_rows(records: list[dict[str, Any]], metric: str = "nmi") -> list[dict[str, Any]]:
    """One row per view-pair setting (recipe, method and the other ``CURVE_FIELDS``): the mean and std over seeds of
    ``metric``, fisher_cos2 and minor_cos2, the effective δ of the mean against the δ curve of mean values
    (``effective_delta``) as a number and as text, the δ grid of that curve, and the recipe's pair statistics
    (``view_fisher_share``, ``within_fisher_share``, ``view_within_ratio``, from its closed-form records)."""
    curves: dict[tuple, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    groups: dict[tuple, list[dict]] = defaultdict(list)
    shares: dict[tuple, dict] = {}
    for record in records:
        key = tuple(record.get(k) for k in CURVE_FIELDS)
        if record.get("pairs") == "delta" and record.get(metric) is not None and record.get("delta") is not None:
            curves[key][float(record["delta"])].append(record[metric])
        elif record.get("pairs") == "views":
            groups[(record["views"], *key)].append(record)
            if record.get("view_fisher_share") is not None:
                shares[record.get("features"), record["views"]] = {
                    name: record[name] for name in ("view_fisher_share", "within_fisher_share", "view_within_ratio")}
    rows = []
    for (recipe, *key), members in groups.items():
        row: dict[str, Any] = {"views": recipe, **dict(zip(CURVE_FIELDS, key)), "seeds": len(members)}
        for name in (metric, "fisher_cos2", "minor_cos2"):
            values = [m[name] for m in members if m.get(name) is not None]
            row[name] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0) if values else None
        curve = curves.get(tuple(key), {})
        deltas = sorted(curve)
        value, outside = (effective_delta(deltas, [statistics.fmean(curve[d]) for d in deltas], row[metric][0])
                          if curve and row[metric] else (None, None))
        row.update(effective_delta=value, effective_delta_outside=outside, deltas=deltas,
                   effective_delta_text=effective_delta_text(value, outside, deltas),
                   curve={d: statistics.fmean(curve[d]) for d in deltas},
                   **shares.get((row.get("features"), recipe), {}))
        rows.append(row)
    return rows
