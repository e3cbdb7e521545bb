"""The run directory: where a run's artifacts live, how they are named, and how saved heads are read back.

``config.yaml`` (the resolved config with its provenance; a valid ``--config``), ``heads/<tag>.safetensors`` (one
fitted head per (method, δ, seed) and sweep-axis values: ``infonce_delta0.5_seed1``, ``infonce_delta1_seed0_r8``),
``results.json`` and the figures. Commands that read heads a run saved check them before writing anything: the
directory is resolved, the heads validated against the config and the features, and only then is ``config.yaml``
written, so a refused command leaves the run's config matching its heads and results.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import yaml

from ssl_pipeline.atomic import atomic_write_bytes
from ssl_pipeline.config import ExperimentConfig
from ssl_pipeline.data.labelled import LabelledFeatures
from ssl_pipeline.errors import ConfigError, DataError
from ssl_pipeline.heads.fitted import FittedHead
from ssl_pipeline.heads.settings import HeadSettings, resolve_head_settings
from ssl_pipeline.reporting.provenance import provenance

HEADS_DIR = "heads"


def resolve_run_dir(cfg: ExperimentConfig) -> Path:
    """``cfg.run_dir``, or ``runs/<time>-<name>`` without one; created if missing (ConfigError if it cannot be)."""
    run_dir = Path(cfg.run_dir) if cfg.run_dir else Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.name}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create run_dir {run_dir} ({error.strerror}); give a writable directory for --run_dir") from None
    return run_dir


def write_config(cfg: ExperimentConfig, run_dir: Path) -> None:
    """``config.yaml``: the resolved config with its provenance (git commit, versions, device)."""
    payload = asdict(cfg)
    payload["run_dir"] = str(run_dir)
    payload["provenance"] = provenance(cfg.heads.trainer.accelerator)
    atomic_write_bytes(run_dir / "config.yaml", yaml.safe_dump(payload, sort_keys=False, allow_unicode=True).encode())


def head_jobs(cfg: ExperimentConfig) -> list[HeadSettings]:
    """Every head a config asks for, with its resolved settings, in the order method × δ × seed × the sweep axes
    that apply to the method (``HeadsConfig.axis_grid``: r × τ (InfoNCE) × ξ (SimSiam) × lr, lr innermost), each
    loop in the order the config lists its values; with ``heads.pairs: views``, then the view heads, method ×
    recipe × seed × axes (``HeadSettings.views``). ``supervised`` heads are one per seed × axes (δ does not apply:
    they train on the score label; their settings carry δ = 1's ``per_delta``)."""
    jobs = [
        resolve_head_settings(cfg.heads, method, delta, seed, **values)
        for method in cfg.heads.methods for delta in (cfg.deltas if method != "supervised" else [1.0])
        for seed in cfg.seeds for values in cfg.heads.axis_grid(method)
    ]
    if cfg.heads.pairs == "views":  # then one head per method × recipe × seed × axes on view pairs
        jobs += [
            dataclasses.replace(resolve_head_settings(cfg.heads, method, 1.0, seed, **values), views=recipe.name)
            for method in cfg.heads.methods if method != "supervised" for recipe in cfg.data.views.recipes
            for seed in cfg.seeds for values in cfg.heads.axis_grid(method)
        ]
    return jobs


def head_path(run_dir: Path, tag: str) -> Path:
    """Where the head ``tag`` (``HeadSettings.tag``) of a run is saved."""
    return run_dir / HEADS_DIR / f"{tag}.safetensors"


def load_heads(cfg: ExperimentConfig, run_dir: Path, features: LabelledFeatures) -> list[FittedHead]:
    """The heads the config asks for, as ``fit`` saved them in ``run_dir`` (other files there are ignored),
    checked against the settings and the features they will be scored on."""
    jobs = head_jobs(cfg)
    paths = [head_path(run_dir, settings.tag) for settings in jobs]
    missing = [path.stem for path in paths if not path.is_file()]
    if missing:
        raise DataError(
            f"missing fitted head(s) {', '.join(missing)} in {run_dir / HEADS_DIR}; "
            "run `ssl-pipeline fit` with this config and --run_dir first"
        )
    heads = [FittedHead.load(path) for path in paths]
    for path, head, settings in zip(paths, heads, jobs):
        if head.features_key != features.features_key:
            raise DataError(
                f"{path} was fitted on features {head.features_key} but the config gives {features.features_key}; "
                "score with the config used for fit (its config.yaml) or re-run `ssl-pipeline fit`"
            )
        if head.settings != settings:
            raise DataError(f"{path} was fitted with other settings than this config's; re-run `ssl-pipeline fit`")
    return heads


def saved_heads(cfg: ExperimentConfig, run_dir: Path, features: LabelledFeatures) -> Optional[list[FittedHead]]:
    """None when none of the heads the config asks for is saved in ``run_dir``; otherwise ``load_heads``, which
    refuses missing heads and heads fitted on other features or with other settings."""
    if not any(head_path(run_dir, settings.tag).is_file() for settings in head_jobs(cfg)):
        return None
    return load_heads(cfg, run_dir, features)
