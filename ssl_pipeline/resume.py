"""Resumable sweeps: where a run's grids keep their checkpoints, and the refusal to resume with another config.

A grid (``heads.grid``) saves its whole training state after its first epoch and then every ~10 s in
``<run_dir>/checkpoints/grid<k>.ckpt`` (``GridCheckpoint``; removed when the grid finishes). Running ``fit``/``run`` again into the run dir — e.g. with
``--config <run_dir>/config.yaml`` — skips the heads whose files are complete and resumes each interrupted grid from
its last saved epoch, ending bit-identical (on CPU) to an uninterrupted fit (``fit_stage.fit_heads``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ssl_pipeline.config import ExperimentConfig
from ssl_pipeline.errors import ConfigError

CHECKPOINTS_DIR = "checkpoints"

FITTING_SECTIONS = ("data", "heads", "deltas", "seeds")
"""The parts of a config a head's training depends on; the others (scoring, checks, W&B, name) may change."""

NOT_FITTING = {"heads.trainer.progress_bar", "heads.trainer.log_every_n_steps"}
"""Fields inside ``FITTING_SECTIONS`` that do not change a head's weights."""


def grid_checkpoint(run_dir: Path, index: int) -> Path:
    """The checkpoint of the run's ``index``-th grid (``heads.grid.grid_groups`` order)."""
    return run_dir / CHECKPOINTS_DIR / f"grid{index}.ckpt"


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def config_difference(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """(field, old value, new value) for every fitting field (``FITTING_SECTIONS``) that differs."""
    old_flat = _flatten({k: old.get(k) for k in FITTING_SECTIONS})
    new_flat = _flatten({k: new.get(k) for k in FITTING_SECTIONS})
    return [
        (key, old_flat.get(key), new_flat.get(key))
        for key in sorted(set(old_flat) | set(new_flat))
        if key not in NOT_FITTING and old_flat.get(key) != new_flat.get(key)
    ]


def check_resumable(cfg: ExperimentConfig, run_dir: Path) -> None:
    """Refuse (ConfigError, one line) to fit into a run dir that holds an interrupted fit (grid checkpoints) made
    with a config whose fitting fields differ from ``cfg``'s: its checkpoints would be resumed with other settings.
    Called before ``config.yaml`` is rewritten."""
    from dataclasses import asdict

    checkpoints = sorted((run_dir / CHECKPOINTS_DIR).glob("grid*.ckpt"))
    saved = run_dir / "config.yaml"
    if not checkpoints or not saved.is_file():
        return
    old = yaml.safe_load(saved.read_text()) or {}
    differences = config_difference(old, yaml.safe_load(yaml.safe_dump(asdict(cfg))))
    if differences:
        field, before, after = differences[0]
        more = f" (and {len(differences) - 1} more field(s))" if len(differences) > 1 else ""
        raise ConfigError(
            f"run_dir {run_dir} holds an interrupted fit made with {field}={before!r}, this config gives {after!r}{more}; "
            f"resume with --config {saved}, or delete {run_dir / CHECKPOINTS_DIR} to start over"
        )


def remove_empty_checkpoints(run_dir: Path) -> None:
    """Remove the checkpoints folder once every grid has finished (each grid deletes its own checkpoint)."""
    folder = run_dir / CHECKPOINTS_DIR
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
