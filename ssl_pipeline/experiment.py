"""Stages of an experiment on labelled features: fit heads → score heads and baselines → results.json.

Stages talk through artifacts in the run directory: ``config.yaml``, ``heads/<tag>.safetensors`` and
``results.json``; ``score`` can run alone on a directory that ``fit`` wrote.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ssl_pipeline.atomic import atomic_write_bytes
from ssl_pipeline.config import DataConfig, ExperimentConfig, HeadSettings, resolve_head_settings
from ssl_pipeline.data.labelled import LabelledFeatures
from ssl_pipeline.digests import file_sha256, json_digest
from ssl_pipeline.errors import ConfigError, DataError
from ssl_pipeline.heads.fit import FittedHead

HEADS_DIR = "heads"


def load_features(cfg: DataConfig, console: Optional[Console] = None) -> LabelledFeatures:
    """The labelled feature source of a config, validated, with its identity in ``features_key``."""
    if cfg.source == "synthetic":
        from ssl_pipeline.data.synthetic import make_synthetic

        features = make_synthetic(cfg.synthetic)
        features.features_key = "gmm-" + json_digest(asdict(cfg.synthetic))
        features.validate()
        return features
    if cfg.source == "images":
        from ssl_pipeline.features.source import load_image_features

        return load_image_features(cfg, console)
    from ssl_pipeline.data.labelled import load_npz_features

    features = load_npz_features(cfg.path, cfg.name, cfg.val_fraction, cfg.split_seed)
    features.features_key = "npz-" + file_sha256(cfg.path)[:16]
    return features


def resolve_run_dir(cfg: ExperimentConfig) -> Path:
    run_dir = Path(cfg.run_dir) if cfg.run_dir else Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.name}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create run_dir {run_dir} ({error.strerror}); give a writable directory for --run_dir") from None
    return run_dir


def write_config(cfg: ExperimentConfig, run_dir: Path) -> None:
    """``config.yaml``: the resolved config with its provenance (git commit, versions, device)."""
    import yaml

    from ssl_pipeline.reporting.provenance import provenance

    payload = asdict(cfg)
    payload["run_dir"] = str(run_dir)
    payload["provenance"] = provenance(cfg.heads.trainer.accelerator)
    atomic_write_bytes(run_dir / "config.yaml", yaml.safe_dump(payload, sort_keys=False, allow_unicode=True).encode())


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[current]}"), console=console, transient=False,
    )


def quiet_lightning() -> None:
    """Silence Lightning's per-fit banners and the few-workers hint (the data are in-memory tensors)."""
    import pytorch_lightning  # noqa: F401  (its import sets its logger to INFO; set the levels after it)

    for name in ("pytorch_lightning", "lightning.fabric", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def head_jobs(cfg: ExperimentConfig) -> list[HeadSettings]:
    """Every (method, δ, seed) head a config asks for, with its resolved settings."""
    return [
        resolve_head_settings(cfg.heads, method, delta, seed)
        for method in cfg.heads.methods for delta in cfg.deltas for seed in cfg.seeds
    ]


def fit_heads(
    cfg: ExperimentConfig, features: LabelledFeatures, run_dir: Path, console: Console, wandb_run=None
) -> list[FittedHead]:
    """Fit every (method, δ, seed) head on train and save it under ``run_dir/heads``; with a W&B run, each fit's
    loss curve is logged under its tag (``infonce_delta0_5_seed1/train/loss_step`` and ``…/train/loss_epoch``;
    the interval is ``heads.trainer.log_every_n_steps``). Ctrl-C raises KeyboardInterrupt naming the heads saved
    before it (they are kept)."""
    from ssl_pipeline.heads.fit import fit_head

    quiet_lightning()
    jobs = head_jobs(cfg)
    heads = []
    with SigintWatch() as ctrl_c:
        try:
            with progress_bar(console) as progress:
                task = progress.add_task("fitting heads", total=len(jobs), current="")
                for settings in jobs:
                    progress.update(task, current=settings.tag)
                    logger = wandb_run.fit_logger(settings.tag) if wandb_run is not None else None
                    head = fit_head(features, settings, cfg.heads.trainer, logger=logger)
                    head.save(run_dir / HEADS_DIR / f"{settings.tag}.safetensors")
                    heads.append(head)
                    progress.advance(task)
        except (KeyboardInterrupt, SystemExit) as stop:
            # Lightning answers Ctrl-C inside trainer.fit with its own cleanup and sys.exit(1).
            if isinstance(stop, SystemExit) and not ctrl_c.pressed:
                raise
            raise KeyboardInterrupt(kept_heads_message(run_dir, [h.settings.tag for h in heads], jobs)) from None
    return heads


def kept_heads_message(run_dir: Path, kept: list[str], jobs: list[HeadSettings]) -> str:
    """What an interrupted ``fit_heads`` leaves: the heads saved before the interrupt, and the one it stopped."""
    stopped = f"; {jobs[len(kept)].tag} was not saved" if len(kept) < len(jobs) else ""
    if not kept:
        return f"no head was finished, none saved in {run_dir / HEADS_DIR}{stopped}"
    heads = "head" if len(kept) == 1 else "heads"
    return f"kept the {len(kept)} {heads} finished before it in {run_dir / HEADS_DIR} ({', '.join(kept)}){stopped}"


class SigintWatch:
    """While active, records whether SIGINT (Ctrl-C) arrived, then hands it to the handler that was installed
    (Python's raises KeyboardInterrupt); restores that handler on exit (Lightning leaves SIGINT ignored after
    an interrupted fit). Outside the main thread, or when SIGINT is ignored, it changes nothing."""

    def __init__(self) -> None:
        self.pressed = False
        self._previous = None

    def __enter__(self) -> "SigintWatch":
        previous = signal.getsignal(signal.SIGINT)
        if callable(previous) and threading.current_thread() is threading.main_thread():
            self._previous = previous
            signal.signal(signal.SIGINT, self._record)
        return self

    def _record(self, signum, frame) -> None:
        self.pressed = True
        self._previous(signum, frame)

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def load_heads(cfg: ExperimentConfig, run_dir: Path, features: LabelledFeatures) -> list[FittedHead]:
    """The heads the config asks for, as ``fit`` saved them in ``run_dir`` (other files there are ignored),
    checked against the settings and the features they will be scored on."""
    jobs = head_jobs(cfg)
    paths = [run_dir / HEADS_DIR / f"{settings.tag}.safetensors" for settings in jobs]
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


def score_run(
    cfg: ExperimentConfig, features: LabelledFeatures, heads: list[FittedHead], run_dir: Path, console: Console
) -> list[dict]:
    """Score every head and every baseline (one record per seed), write ``results.json`` and a 2-D sample of the
    main projections (``projections.npz``, for the report's scatter plots)."""
    from ssl_pipeline.reporting.results import write_json_atomic

    records, scored = _score(cfg, features, heads, console)
    write_json_atomic(run_dir / "results.json", records)
    write_projection_sample(cfg, features, scored, run_dir)
    return records


def write_projection_sample(cfg: ExperimentConfig, features: LabelledFeatures, scored: dict, run_dir: Path) -> None:
    """First two coordinates of PCA, LDA and each head method (first seed, largest δ) on a test subsample.
    ``scored`` holds the projections scoring already fitted; PCA/LDA are fitted here only if not among them."""
    from ssl_pipeline.reporting.scatter import save_projection_sample
    from ssl_pipeline.scoring.projections import baseline_projection

    projections = {
        method: scored.get(method) or baseline_projection(
            method, features.x_train, features.y_train, cfg.heads.r, cfg.seeds[0], cfg.score.lda_shrinkage
        )
        for method in ("pca", "lda")
    }
    projections |= {method: scored[method] for method in cfg.heads.methods if method in scored}
    save_projection_sample(run_dir / "projections.npz", features.x_test, features.y_test, projections,
                           features.class_names, seed=cfg.seeds[0])


def _score(
    cfg: ExperimentConfig, features: LabelledFeatures, heads: list[FittedHead], console: Console
) -> tuple[list[dict], dict]:
    """The records, and the projections of the first seed (heads at the largest δ, baselines) for the scatter."""
    from ssl_pipeline.reporting.results import make_record
    from ssl_pipeline.scoring.projections import baseline_projection, head_projection
    from ssl_pipeline.scoring.score import ProjectionScorer, score_projection
    from ssl_pipeline.theory.subspaces import estimate_fisher_subspace

    fisher_basis = features.fisher_basis
    if fisher_basis is None:
        fisher_basis = estimate_fisher_subspace(
            features.x_train, features.y_train, features.num_classes, cfg.score.lda_shrinkage
        )
    common = dict(
        data=features.data_kind, dataset=features.dataset, backbone=features.backbone,
        features=features.features_key, split="test", split_seed=features.split_seed,
    )
    records, first_seed = [], {}
    top = max(cfg.deltas)
    total = len(heads) + len(cfg.score.baselines) * len(cfg.seeds)
    with progress_bar(console) as progress:
        task = progress.add_task("scoring", total=total, current="")
        for head in heads:
            s = head.settings
            progress.update(task, current=s.tag)
            projection = head_projection(head)
            if s.seed == cfg.seeds[0] and s.delta == top:
                first_seed.setdefault(s.method, projection)
            metrics = score_projection(projection, features, fisher_basis, cfg.score, s.seed)
            records.append(make_record(
                **common, method=s.method, delta=s.delta, r=s.r, tau=s.tau, xi=s.xi, similarity=s.similarity,
                symmetric=s.symmetric, epochs=s.epochs, batch_size=s.batch_size, normalized=projection.normalized,
                seed=s.seed, fit_seconds=head.fit_seconds, **metrics,
            ))
            progress.advance(task)
        for method in cfg.score.baselines:
            for seed in cfg.seeds:
                progress.update(task, current=f"{method}_seed{seed}")
                # Only the random projection depends on the seed; the others are fitted and probed once and
                # only their k-means is seeded.
                if method == "random" or seed == cfg.seeds[0]:
                    start = time.perf_counter()
                    projection = baseline_projection(
                        method, features.x_train, features.y_train, cfg.heads.r, seed, cfg.score.lda_shrinkage
                    )
                    fit_seconds = time.perf_counter() - start
                    scorer = ProjectionScorer(projection, features, fisher_basis, cfg.score)
                    first_seed.setdefault(method, projection)
                records.append(make_record(
                    **common, method=method, r=projection.r, normalized=False, seed=seed,
                    fit_seconds=fit_seconds, **scorer.scores(seed),
                ))
                progress.advance(task)
    if features.text_features is not None:
        records.append(zeroshot_record(features, common))
    return records, first_seed


def zeroshot_record(features: LabelledFeatures, common: dict) -> dict:
    """The text-prompt classifier of a CLIP backbone on test (method ``zeroshot``; no head, no seed)."""
    from ssl_pipeline.features.extract import zeroshot_accuracy, zeroshot_classifier
    from ssl_pipeline.reporting.results import make_record

    classifier = zeroshot_classifier(features.text_features, features.num_classes)
    return make_record(**common, method="zeroshot", zeroshot_acc=zeroshot_accuracy(features.x_test, features.y_test, classifier))


def report(
    records: list[dict], run_dir: Path, console: Console, title: Optional[str] = None, wandb_run=None, wide: bool = False
) -> None:
    """Print the summary table (every metric with ``wide``) and plot the metrics against δ (``delta_sweep.png``);
    log both to W&B."""
    from ssl_pipeline.reporting.plots import plot_delta_sweep
    from ssl_pipeline.reporting.results import summary_table

    console.print(summary_table(records, title or "results (mean ± std over seeds)", wide))
    figure = plot_delta_sweep(records, run_dir / "delta_sweep.png")
    if wandb_run is not None:
        wandb_run.log_records(records)
        wandb_run.log_figures({"delta_sweep": figure})
    console.print(f"wrote {run_dir / 'results.json'}, {run_dir / 'config.yaml'} and {figure}")


def check_devices(cfg: ExperimentConfig) -> None:
    """Refuse a CUDA request on a machine without CUDA before any work is done."""
    import torch

    if torch.cuda.is_available():
        return
    if cfg.heads.trainer.accelerator in ("gpu", "cuda"):
        raise ConfigError(f"heads.trainer.accelerator={cfg.heads.trainer.accelerator} but no CUDA device is visible; use auto or cpu")
    if cfg.score.probe.device.startswith("cuda"):
        raise ConfigError(f"score.probe.device={cfg.score.probe.device} but no CUDA device is visible; use auto or cpu")


def run(
    command: str, cfg: ExperimentConfig, console: Console, wide: bool = False
) -> tuple[Optional[list[dict]], Path]:
    """``fit`` (heads only), ``score`` (heads saved in the run dir), or ``run``/``synthetic`` (fit + score); the
    table shows every metric with ``wide``."""
    if command == "synthetic" and cfg.data.source != "synthetic":
        raise ConfigError(f"`synthetic` generates its data; data.source is {cfg.data.source!r} (use `run`)")
    if command == "score" and not cfg.run_dir:
        raise ConfigError("`score` needs --run_dir, the directory where `fit` saved the heads")
    check_devices(cfg)
    features = load_features(cfg.data, console)
    if cfg.heads.r > features.dim:
        raise ConfigError(f"heads.r={cfg.heads.r} exceeds the feature dimension d={features.dim}; choose r ≤ d")
    if command == "score":
        # The heads are checked before anything is written: a refused score leaves the run's config.yaml
        # matching its heads and results.json.
        run_dir = Path(cfg.run_dir)
        heads = load_heads(cfg, run_dir, features)
    else:
        run_dir = resolve_run_dir(cfg)
    write_config(cfg, run_dir)
    from ssl_pipeline.reporting.wandb_logging import wandb_run

    with wandb_run(cfg, command, run_dir) as logger:
        if command != "score":
            heads = fit_heads(cfg, features, run_dir, console, logger)
            if command == "fit":
                console.print(f"saved the heads in {run_dir / HEADS_DIR}")
                return None, run_dir
        records = score_run(cfg, features, heads, run_dir, console)
        title = f"{cfg.name}: {records[0]['dataset']} (mean ± std over {len(cfg.seeds)} seeds)"
        report(records, run_dir, console, title, logger, wide)
    return records, run_dir
