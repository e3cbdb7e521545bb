"""Weights & Biases logging: one run per command, on global rank 0 only (config section ``wandb``).

A run holds the resolved config with its provenance (secrets scrubbed), each head fit's loss curve (through
Lightning's ``WandbLogger``), the ``results.json`` records as a W&B Table, their means over seeds in the summary,
and the figures. Offline (the default) it is written under ``<run_dir>/wandb/offline-run-*`` and can be uploaded
later with ``wandb sync``. Metric names avoid ``.`` and ``-`` (W&B cannot sort or filter by such names), so
δ = 0.5 is written ``delta0_5``.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from ssl_pipeline.config import ExperimentConfig
from ssl_pipeline.errors import ConfigError
from ssl_pipeline.records.results import SETTING_FIELDS, aggregate, axis_key, method_label, metric_fields, swept_fields

SECRET_WORDS = ("key", "token", "secret", "password")
REDACTED = "[redacted]"
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID")
MODE_ALIASES = {"dryrun": "offline", "run": "online"}
MODES = ("online", "offline", "disabled")


def scrub_secrets(value: Any) -> Any:
    """A copy of ``value`` (nested dicts and lists) where every entry whose key names a secret (``key``, ``token``,
    ``secret``, ``password``, any case) and every string containing ``WANDB_API_KEY``'s value is ``[redacted]``."""
    api_key = os.environ.get("WANDB_API_KEY")
    if isinstance(value, Mapping):
        return {
            k: REDACTED if any(word in str(k).lower() for word in SECRET_WORDS) else scrub_secrets(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [scrub_secrets(v) for v in value]
    if api_key and isinstance(value, str) and api_key in value:
        return REDACTED
    return value


def error_reason(error: BaseException) -> str:
    """The first line of a W&B error (or its type), with the API key redacted: for one-line ConfigErrors."""
    text = str(error).strip()
    return scrub_secrets(text.splitlines()[0] if text else type(error).__name__)


def resolve_mode(cfg: ExperimentConfig) -> str:
    """``online``, ``offline`` or ``disabled``: the ``WANDB_MODE`` environment variable when set, else the config."""
    mode = os.environ.get("WANDB_MODE") or cfg.wandb.mode
    mode = MODE_ALIASES.get(mode, mode)
    if mode not in MODES:
        raise ConfigError(f"WANDB_MODE={mode!r} is not one of {', '.join(MODES)}; set it to one of them or unset it")
    return mode


def is_global_rank_zero() -> bool:
    """False in every process but global rank 0 of a distributed job (launcher variables, or an initialised
    torch.distributed group; torch is not imported for this)."""
    for name in RANK_VARIABLES:
        if os.environ.get(name, "0").strip() not in ("", "0"):
            return False
    torch = sys.modules.get("torch")
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return True


def run_tags(cfg: ExperimentConfig) -> list[str]:
    """``wandb.tags`` plus the backbone (``packaged:efficientnet_lite0``), dataset, head methods and data kind;
    deduplicated, each at most 64 characters (W&B's limit)."""
    data = cfg.data
    if data.source == "synthetic":
        derived = [f"gmm-{data.synthetic.preset}", "synthetic"]
    elif data.source == "npz":
        derived = [data.name or Path(data.path or "features.npz").stem, "real"]
    else:
        backbone = data.backbone
        identity = ":".join([backbone.kind, backbone.name] + ([backbone.pretrained] if backbone.pretrained else []))
        derived = [identity, data.dataset.name, "real"]
    tags = [*cfg.wandb.tags, *derived, *cfg.heads.methods]
    return list(dict.fromkeys(tag[:64] for tag in tags if tag))


def run_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """The resolved config as a plain dict with fresh provenance (git commit, versions, device), secrets scrubbed."""
    from ssl_pipeline.reporting.provenance import provenance

    payload = asdict(cfg)
    payload["provenance"] = provenance(cfg.heads.trainer.accelerator)
    return scrub_secrets(payload)


def delta_name(delta: float) -> str:
    """``delta1``, ``delta0_5``: δ in a metric name."""
    return f"delta{delta:g}".replace(".", "_").replace("-", "_")


def series_names(rows: list[dict[str, Any]]) -> list[str]:
    """Per aggregate row, its method in metric names: ``infonce``, a CLIP head's towers as ``clip_tower1`` and
    ``clip_tower2``, with the values of the sweep axes the run swept for it (``results.swept_fields``) appended,
    ``infonce_r8_tau0_2``, so rows that differ only there keep apart keys (a W&B sweep run has one value per axis:
    plain method names)."""
    swept = swept_fields(rows)
    return [row["method"] + ("" if row.get("tower") is None else f"_tower{row['tower']}")
            + axis_key(row, swept.get(method_label(row), ())) for row in rows]


def summary_metrics(records: list[dict[str, Any]]) -> dict[str, float]:
    """Means and stds over seeds of every metric, per method (with its swept axis values, ``series_names``) and δ.

    ``summary/{method}/{delta_name}/{metric}_mean|_std`` for each head setting, and ``summary/{method}/{metric}_mean``
    per method: a baseline's value, or a head's at the largest δ of the run (recorded in ``summary/{method}/delta``),
    so a sweep run (one δ) has one key to optimise, e.g. ``summary/infonce/nmi_mean`` (a CLIP tower's
    ``summary/clip_tower1/nmi_mean``).
    """
    rows = aggregate(records)
    names = series_names(rows)
    out: dict[str, float] = {}
    top_delta: dict[str, float] = {}
    for row, method in zip(rows, names):
        if row["delta"] is not None:
            top_delta[method] = max(row["delta"], top_delta.get(method, 0.0))
    metrics = metric_fields(records)  # the contract's and the per-label ones some record has
    for row, method in zip(rows, names):
        delta = row["delta"]
        for metric in metrics:
            if row.get(metric) is None:
                continue
            mean, std = row[metric]
            if delta is not None:
                out[f"summary/{method}/{delta_name(delta)}/{metric}_mean"] = mean
                out[f"summary/{method}/{delta_name(delta)}/{metric}_std"] = std
            if delta is None or delta == top_delta[method]:
                out[f"summary/{method}/{metric}_mean"] = mean
    out.update({f"summary/{method}/delta": delta for method, delta in top_delta.items()})
    return out


def delta_rows(records: list[dict[str, Any]]) -> list[dict[str, float]]:
    """One history row per δ (ascending): ``by_delta/delta`` and ``by_delta/{method}/{metric}`` (mean over seeds) for
    every head method (with its swept axis values, ``series_names``), with every baseline's value repeated, so a
    W&B line plot with x = ``by_delta/delta`` draws the metric against δ with the baselines as flat lines."""
    rows = aggregate(records)
    names = series_names(rows)
    metrics = metric_fields(records)
    baselines = {
        f"by_delta/{method}/{metric}": row[metric][0]
        for row, method in zip(rows, names) if row["delta"] is None
        for metric in metrics if row.get(metric) is not None
    }
    by_delta: dict[float, dict[str, float]] = {}
    for row, method in zip(rows, names):
        if row["delta"] is not None:
            values = by_delta.setdefault(row["delta"], {"by_delta/delta": row["delta"], **baselines})
            values.update({f"by_delta/{method}/{m}": row[m][0] for m in metrics if row.get(m) is not None})
    return [by_delta[delta] for delta in sorted(by_delta)]


class WandbRun:
    """A started W&B run and what the pipeline logs to it."""

    def __init__(self, run: Any) -> None:
        self.run = run

    def log_metrics(self, metrics: Mapping[str, Any], step: Optional[int] = None) -> None:
        self.run.log(dict(metrics), step=step)

    def log_records(self, records: list[dict[str, Any]], key: str = "results") -> None:
        """The records as a Table (columns: the contract's setting and metric fields, and the per-label metrics some
        record has), their means over seeds in
        the summary (``summary_metrics``) and one history row per δ (``delta_rows``)."""
        import wandb

        columns = list(SETTING_FIELDS + metric_fields(records))
        self.run.log({key: wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in records])})
        for row in delta_rows(records):
            self.run.log(row)
        self.run.summary.update(summary_metrics(records))

    def log_figures(self, paths: Mapping[str, Path]) -> None:
        """Images under ``figures/{name}``."""
        import wandb

        self.run.log({f"figures/{name}": wandb.Image(str(path)) for name, path in paths.items()})

    def fit_logger(self, prefix: str):
        """A Lightning ``WandbLogger`` writing into this run, its metrics under ``{prefix}/`` (``.`` and ``-``
        replaced by ``_``) and plotted against ``trainer/global_step``; no checkpoints are uploaded."""
        from pytorch_lightning.loggers import WandbLogger

        prefix = prefix.replace(".", "_").replace("-", "_")
        logger = WandbLogger(experiment=self.run, prefix=prefix, log_model=False)
        if prefix:
            # W&B makes one chart section per name before the first "/"; its default join "-" would not.
            logger.LOGGER_JOIN_CHAR = "/"
            self.run.define_metric("trainer/global_step")
            self.run.define_metric(f"{prefix}/*", step_metric="trainer/global_step")
        return logger

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


def start_run(cfg: ExperimentConfig, command: str, run_dir: Optional[Path]) -> Optional[WandbRun]:
    """Start the W&B run of one command (``run``, ``fit``, ``score``, ``extract``, ``synthetic``), or None when W&B
    is disabled or this is not global rank 0.

    Grouped by ``wandb.group`` (default: the experiment name), job type ``command``, named ``{name}-{command}``,
    tagged by ``run_tags``; files go under ``run_dir/wandb``. An online run that cannot start (no API key, no
    network) raises ConfigError; the key never appears in the message.
    """
    mode = resolve_mode(cfg)
    if mode == "disabled" or not is_global_rank_zero():
        return None
    import wandb

    settings = wandb.Settings(silent=True, console="off", save_code=False, disable_code=True)
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    try:
        run = wandb.init(
            project=cfg.wandb.project, entity=cfg.wandb.entity, group=cfg.wandb.group or cfg.name,
            job_type=command, name=f"{cfg.name}-{command}", tags=run_tags(cfg), config=run_config(cfg),
            dir=str(run_dir) if run_dir is not None else None, id=cfg.wandb.resume_id,
            resume="allow" if cfg.wandb.resume_id else None, mode=mode, reinit="create_new", settings=settings,
        )
    except Exception as error:  # wandb raises several types (UsageError, CommError, timeouts) for one cause
        if mode != "online":
            raise
        offline_runs = Path(run_dir or ".") / "wandb" / "offline-run-*"
        raise ConfigError(f"W&B could not start an online run ({error_reason(error)}); set wandb.mode=offline (or "
                          f"WANDB_MODE=offline) to log locally, then `wandb sync {offline_runs}`") from None
    return WandbRun(run)


@contextmanager
def wandb_run(cfg: ExperimentConfig, command: str, run_dir: Optional[Path]) -> Iterator[Optional[WandbRun]]:
    """``start_run`` as a context: the run finishes on exit, with exit code 1 if the body raised."""
    run = start_run(cfg, command, run_dir)
    try:
        yield run
    except BaseException:
        if run is not None:
            run.finish(exit_code=1)
        raise
    if run is not None:
        run.finish()
