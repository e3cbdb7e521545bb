"""The view-pair part of a run's report (``heads.pairs: views``): each recipe's heads placed on the δ axis."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ssl_pipeline.records.results import _format, method_label
from ssl_pipeline.reporting.figures import effective_delta_figure, write_png

VIEW_COLUMNS = ("recipe", "method", "seeds", "nmi", "effective δ", "fisher_cos2", "minor_cos2", "Σ_Δ^view in Fisher",
                "Σ_W in Fisher", "tr Σ_Δ^view / tr Σ_W")


def _share(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.3f}"


def view_table_rows(rows: list[dict]) -> list[list[str]]:
    """The cells of the view-pair table of ``scoring.views.view_rows``, one row per recipe and method (the
    recipe's closed form as method ``spectral``), in ``VIEW_COLUMNS`` order."""
    rows = sorted(rows, key=lambda row: (row["views"], row["method"] == "spectral", row["method"]))
    return [[row["views"], method_label({**row, "views": None}), str(row["seeds"]), _format(row["nmi"], "nmi"),
             row["effective_delta_text"], _format(row["fisher_cos2"], "fisher_cos2"),
             _format(row["minor_cos2"], "minor_cos2"), _share(row.get("view_fisher_share")),
             _share(row.get("within_fisher_share")), _share(row.get("view_within_ratio"))] for row in rows]


def views_table(rows: list[dict], title: str = "view pairs on the δ axis"):
    """A rich Table of ``view_table_rows`` (``rows``: ``scoring.views.view_rows``)."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True)
    for column in VIEW_COLUMNS:
        table.add_column(column, justify="left" if column in ("recipe", "method") else "right", overflow="fold")
    for row in view_table_rows(rows):
        table.add_row(*row)
    return table


def plot_effective_delta(rows: list[dict], path: Path) -> Path:
    """``views.png`` of ``scoring.views.view_rows``: each method's δ curve with its recipes' view heads at their
    effective δ."""
    return write_png(effective_delta_figure(rows), path)
