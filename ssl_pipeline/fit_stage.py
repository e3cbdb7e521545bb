"""The fit stage of a run: every head of the config (method × δ × seed × sweep-axis values) fitted as grids on the
training split and saved in the run directory as soon as it is finished, resumable after an interrupt. ``run``
(``experiment``) and ``check`` (``checks``) both fit their heads here; the fitting itself is ``heads.fit``."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Optional

from rich.console import Console

from ssl_pipeline.config import ExperimentConfig
from ssl_pipeline.data.labelled import LabelledFeatures
from ssl_pipeline.errors import ConfigError, DataError
from ssl_pipeline.heads.fitted import FittedHead
from ssl_pipeline.heads.settings import HeadSettings
from ssl_pipeline.records.progress import progress_bar
from ssl_pipeline.reporting.wandb_logging import WandbRun
from ssl_pipeline.resume import grid_checkpoint, remove_empty_checkpoints
from ssl_pipeline.rundir import HEADS_DIR, head_jobs, head_path


def check_devices(cfg: ExperimentConfig) -> None:
    """Refuse a CUDA request on a machine without CUDA before any work is done."""
    import torch

    if torch.cuda.is_available():
        return
    if cfg.heads.trainer.accelerator in ("gpu", "cuda"):
        raise ConfigError(f"heads.trainer.accelerator={cfg.heads.trainer.accelerator} but no CUDA device is visible; use auto or cpu")
    if cfg.score.probe.device.startswith("cuda"):
        raise ConfigError(f"score.probe.device={cfg.score.probe.device} but no CUDA device is visible; use auto or cpu")


def fit_heads(
    cfg: ExperimentConfig, features: LabelledFeatures, run_dir: Path, console: Console,
    logger: Optional[WandbRun] = None,
) -> list[FittedHead]:
    """Fit every head of ``head_jobs`` (method × δ × seed × sweep-axis values) on train and save it under
    ``run_dir/heads``, as grids: one ``Trainer.fit`` per group of heads that share batches (``heads.grid``), each
    head with its solo ``fit_head`` result. A head is saved as soon as its training is over, even while its grid
    goes on. With a W&B run, each head's loss curve is logged under its tag (``infonce_delta0_5_seed1/train/loss_step``
    and ``…/train/loss_epoch``, against ``trainer/global_step``; the interval is
    ``heads.trainer.log_every_n_steps``). Ctrl-C raises KeyboardInterrupt naming the heads saved before it (they are kept). Returns the heads in
    ``head_jobs`` order."""
    from ssl_pipeline.heads.fit import fit_grid, quiet_lightning
    from ssl_pipeline.heads.grid import grid_groups, metric_tag

    quiet_lightning()
    jobs = head_jobs(cfg)
    fitted: dict[int, FittedHead] = finished_heads(jobs, run_dir, features)
    saved = SaveFinishedHeads(run_dir)
    grid_jobs: list[HeadSettings] = []
    with SigintWatch() as ctrl_c:
        try:
            with progress_bar(console, "head-epoch") as progress:
                todo = [s.epochs for i, s in enumerate(jobs) if i not in fitted]
                task = progress.add_task(f"fitting {len(todo)} of {len(jobs)} heads", total=sum(todo), current="")
                trainer = cfg.heads.trainer
                budget = None if trainer.step_memory_mb is None else trainer.step_memory_mb << 20
                for k, all_group in enumerate(grid_groups(jobs, budget, trainer.devices)):
                    checkpoint = grid_checkpoint(run_dir, k)
                    group = grid_members(jobs, all_group, fitted, checkpoint)
                    if not group:
                        continue
                    grid_jobs = [jobs[i] for i in group]
                    progress.update(task, current=f"grid of {len(group)}" if len(group) > 1 else grid_jobs[0].tag)
                    if checkpoint.is_file():
                        console.print(f"resuming {len(group)} head(s) from {checkpoint}")
                    grid_logger = None
                    if logger is not None:
                        grid_logger = logger.fit_logger("")
                        logger.run.define_metric("trainer/global_step")
                        for settings in grid_jobs:  # each head's curves against the trainer's step, as fit_logger does
                            logger.run.define_metric(f"{metric_tag(settings.tag)}/*", step_metric="trainer/global_step")
                    saved.progress = (progress, task)
                    data = features.paired if grid_jobs[0].method == "clip" else features
                    heads = fit_grid(data, grid_jobs, cfg.heads.trainer, logger=grid_logger, on_finished=saved,
                                     checkpoint=checkpoint, on_epoch=saved.epoch_done)
                    saved.progress = None
                    for i, head in zip(group, heads):
                        if head.settings.tag not in saved.tags:  # finished in a spawned DDP process: save it here
                            saved(head)
                        fitted[i] = head
        except (KeyboardInterrupt, SystemExit) as stop:
            # Lightning answers Ctrl-C inside trainer.fit with its own cleanup and sys.exit(1).
            if isinstance(stop, SystemExit) and not ctrl_c.pressed:
                raise
            stopped = [s.tag for s in grid_jobs if s.tag not in saved.tags]
            raise KeyboardInterrupt(kept_heads_message(run_dir, saved.tags, stopped)) from None
    remove_empty_checkpoints(run_dir)
    return [fitted[i] for i in range(len(jobs))]


def finished_heads(jobs: list[HeadSettings], run_dir: Path, features: LabelledFeatures) -> dict[int, FittedHead]:
    """The jobs whose head file in ``run_dir`` is complete — fitted with these settings on these features — by job
    index: a resumed (or repeated) fit does not fit them again. Files are written atomically, so a file that exists
    is whole; one that cannot be read is fitted again."""
    done = {}
    for i, settings in enumerate(jobs):
        path = head_path(run_dir, settings.tag)
        if not path.is_file():
            continue
        try:
            head = FittedHead.load(path)
        except DataError:
            continue
        if head.settings == settings and head.features_key == features.features_key:
            done[i] = head
    return done


def grid_members(jobs: list[HeadSettings], group: list[int], done: dict[int, FittedHead], checkpoint: Path) -> list[int]:
    """The jobs of grid ``group`` to fit: the heads not finished yet, or — when the grid left a checkpoint
    (an interrupted fit) — exactly the heads of that checkpoint, so the fit resumes from it. ``run`` refuses a
    checkpoint made with another config before this is reached (``check_resumable``)."""
    from ssl_pipeline.heads.grid import checkpoint_settings

    if not checkpoint.is_file():
        return [i for i in group if i not in done]
    index = {jobs[i]: i for i in group}
    held = checkpoint_settings(checkpoint)
    missing = [settings.tag for settings in held if settings not in index]
    if missing:
        raise ConfigError(f"{checkpoint} holds an interrupted fit of heads this config does not ask for "
                          f"({', '.join(missing[:3])}); resume with the run's own --config {checkpoint.parents[1] / 'config.yaml'} "
                          f"or delete {checkpoint.parent} to start over")
    return [index[settings] for settings in held]


class SaveFinishedHeads:
    """``fit_grid``'s ``on_finished`` and ``on_epoch``: save a head in the run dir as soon as it is finished, and
    advance the progress by the head-epochs of every grid epoch, showing the heads' losses and the heads just saved
    (in this process; a spawned DDP process saves and the main process catches up when the grid returns)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.tags: list[str] = []
        self.progress = None
        self.just_saved: list[str] = []

    def __call__(self, head: FittedHead) -> None:
        head.save(head_path(self.run_dir, head.settings.tag))
        self.tags.append(head.settings.tag)
        self.just_saved.append(finished_head_note(head))

    def epoch_done(self, report) -> None:
        """A grid epoch is over (``heads.grid.EpochReport``)."""
        if self.progress is not None:
            progress, task = self.progress
            saved = f" · saved {saved_heads_note(self.just_saved)}" if self.just_saved else ""
            progress.update(task, advance=report.done, note=report.summary() + saved, current=report.summary())
        self.just_saved = []

    def __getstate__(self) -> dict:
        return {**self.__dict__, "progress": None}  # a rich Progress holds locks and threads


def saved_heads_note(notes: list[str], shown: int = 3) -> str:
    """The heads saved in one grid epoch, each by ``finished_head_note``: all of them when few, else how many and
    the first and last (the default main job saves 45 heads in its last epoch; a log line stays readable)."""
    if len(notes) <= shown + 1:
        return ", ".join(notes)
    return f"{len(notes)} heads: {', '.join(notes[:shown - 1])}, …, {notes[-1]}"


def finished_head_note(head: FittedHead) -> str:
    """What a plain progress line (not a terminal) says about the head just fitted."""
    epochs = f", {head.epochs_trained} epochs" if head.epochs_trained else ""
    return f"{head.settings.tag} ({head.fit_seconds:.1f} s{epochs})"


def kept_heads_message(run_dir: Path, kept: list[str], stopped_tags: list[str]) -> str:
    """What an interrupted ``fit_heads`` leaves: the heads saved before the interrupt, and the unfinished heads of
    the grid it stopped."""
    verb = "was" if len(stopped_tags) == 1 else "were"
    stopped = f"; {', '.join(stopped_tags)} {verb} not saved" if stopped_tags else ""
    resume = f"; to resume from the last finished epoch, run it again with --config {run_dir / 'config.yaml'}"
    if not kept:
        return f"no head was finished, none saved in {run_dir / HEADS_DIR}{stopped}{resume}"
    heads = "head" if len(kept) == 1 else "heads"
    return f"kept the {len(kept)} {heads} finished before it in {run_dir / HEADS_DIR} ({', '.join(kept)}){stopped}{resume}"


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
