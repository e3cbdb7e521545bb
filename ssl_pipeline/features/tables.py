"""Tables of feature-cache entries: ``ssl-pipeline cache list`` and the summary at the end of an extraction."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from ssl_pipeline.features.cache import CacheEntry


def human_bytes(size: float) -> str:
    """``512 B``, ``1.5 KiB`` … ``2.0 TiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def entries_table(entries: list[dict]) -> Table:
    """The rows of ``FeatureCache.entries()``: key, complete or partial (shards done), dataset, split, backbone,
    shape, size on disk, creation time."""
    table = Table(title="feature cache")
    for column in ("key", "status", "dataset", "split", "backbone", "items", "dim", "size", "created"):
        table.add_column(column, justify="right" if column in ("items", "dim", "size") else "left")
    for row in entries:
        status = (
            "complete" if row["complete"] else f"partial {row.get('shards_done', 0)}/{row.get('num_shards') or '?'}"
        )
        cells = (row["key"], status, row["dataset"], row["split"], row["backbone"], row["n"], row["dim"])
        table.add_row(*("" if c is None else str(c) for c in cells), human_bytes(row["bytes"]), row["created"] or "")
    return table


def extraction_table(entries: dict[str, CacheEntry], backbone: str, extracted: bool) -> Table:
    """The end-of-extraction table: one row per cache entry (split, key, shape, where it lives, img/s)."""
    table = Table(title=f"features of {backbone}" + ("" if extracted else " (all from the cache)"), header_style="bold")
    for column in ("split", "cache key", "items", "dim", "img/s", "path"):
        table.add_column(column, justify="right" if column in ("items", "dim", "img/s") else "left")
    for name, entry in entries.items():
        rate = entry.manifest.get("timing", {}).get("images_per_second")
        table.add_row(name, entry.key, str(entry.manifest["num_items"]), str(entry.manifest["dim"]),
                      f"{rate:.0f}" if rate else "–", str(entry.path))
    return table
