"""The fitting entry points: ``fit_grid`` trains the heads of one grid with one ``Trainer.fit`` (what a run
uses, ``fit_stage.fit_heads``); ``fit_head`` trains one head alone, the straightforward Lightning path that is the
grid's **reference**: the tests hold every grid head equal to its solo fit, and the benchmarks time both. Both
build their ``pl.Trainer`` with ``head_trainer``."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
import torch

from ssl_pipeline.config import TrainerConfig
from ssl_pipeline.data.labelled import LabelledFeatures
from ssl_pipeline.data.rows import FeatureRows
from ssl_pipeline.errors import DataError
from ssl_pipeline.heads.clip import ClipGrid, clip_head_module, paired_tensors
from ssl_pipeline.heads.fitted import FittedHead
from ssl_pipeline.heads.grid import EpochReport, GridCheckpoint, HeadGrid, grid_key
from ssl_pipeline.heads.inputs import feature_table, head_module, held_out_features, training_labels
from ssl_pipeline.heads.settings import HeadSettings

if TYPE_CHECKING:
    from pytorch_lightning.loggers import Logger


def quiet_lightning() -> None:
    """Silence Lightning's per-fit banners and the few-workers hint (the data are in-memory tensors)."""
    import pytorch_lightning  # noqa: F401  (its import sets its logger to INFO; set the levels after it)

    for name in ("pytorch_lightning", "lightning.fabric", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def fit_grid(
    features: LabelledFeatures, jobs: list[HeadSettings], trainer_cfg: TrainerConfig,
    logger: Optional[Logger] = None, on_finished: Optional[Callable[[FittedHead], None]] = None,
    checkpoint: Optional[Path] = None, on_epoch: Optional[Callable[[EpochReport], None]] = None,
    resident: Optional[bool] = None,
) -> list[FittedHead]:
    """Train the heads ``jobs`` (one grid: equal ``grid_key``) with one ``Trainer.fit``; return them in job order,
    each as its solo ``fit_head`` would, ``fit_seconds`` its share of the grid's epochs. ``logger`` receives each
    head's loss under ``<tag>/train/loss`` (and ``<tag>/val/loss`` with early stopping); None logs nothing.
    ``on_finished`` (picklable) receives each head on global rank 0 as soon as its training is over.
    ``on_epoch`` (picklable) receives an ``EpochReport`` after every epoch on global rank 0.
    ``checkpoint``: the grid's state is saved there after the first epoch and then every ~10 s
    (``GridCheckpoint``); if the file exists, the fit resumes from it — the heads end bit-identical to an uninterrupted fit — and it is removed at the end.
    The features go to the trainer's CUDA/MPS device once when they take at most ``feature_memory_share`` of it
    (``CandidateDataModule``); ``resident`` forces that path either way (tests)."""
    from ssl_pipeline.data.pairs import CandidateDataModule, CandidateSampler, CrossModalDataModule, LabelSampler

    if len({grid_key(s) for s in jobs}) != 1:
        raise ValueError("the heads of one grid need the same batch size, standardize and optimizer (grid_groups)")
    stopping = any(s.early_stopping_patience is not None for s in jobs)
    if jobs[0].method == "clip":  # paired features (data.multimodal.PairedFeatures)
        grid = ClipGrid([clip_head_module(features, s) for s in jobs], features.features_key, on_finished, on_epoch)
        held_out = {"val": paired_tensors(features, "val")} if stopping else {}
        datamodule = CrossModalDataModule(*paired_tensors(features, "train"), grid.seeds, jobs[0].batch_size, **held_out)
    elif jobs[0].views is not None:  # view pairs of one recipe (heads.pairs: views): the recipe's view table
        grid = HeadGrid([head_module(features, s) for s in jobs], features.features_key, on_finished, on_epoch)
        datamodule = view_pair_data(features, jobs[0].views, grid.seeds, jobs[0].batch_size, stopping,
                                    trainer_cfg.feature_memory_share, resident)
    else:
        supervised = jobs[0].method == "supervised"  # labelled batches of the score label, not pairs
        x, rows = feature_table(features.x_train)  # a memory map stays one: batches are gathered from it
        y = torch.from_numpy(np.asarray(training_labels(features, supervised), dtype=np.int64))
        grid = HeadGrid([head_module(features, s) for s in jobs], features.features_key, on_finished, on_epoch)
        held_out = held_out_features(features, supervised) if stopping else {}
        datamodule = CandidateDataModule(x, y, grid.seeds, jobs[0].batch_size, **held_out,
                                         device_share=trainer_cfg.feature_memory_share, resident=resident, rows=rows,
                                         sampler=LabelSampler if supervised else CandidateSampler)
    if str(trainer_cfg.precision).startswith("64"):
        grid = grid.double()  # so that ddp_spawn's ranks hand their float64 weights back unrounded
    callbacks = [] if checkpoint is None else [GridCheckpoint(checkpoint)]
    trainer = head_trainer(trainer_cfg, max(s.epochs for s in jobs), logger, stopping, callbacks=callbacks)
    resume = checkpoint if checkpoint is not None and Path(checkpoint).is_file() else None
    trainer.fit(grid, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    if checkpoint is not None and trainer.is_global_zero:
        Path(checkpoint).unlink(missing_ok=True)
    return [grid.fitted_head(h) for h in range(len(jobs))]


def view_pair_data(features: LabelledFeatures, recipe: str, seeds: list[int], batch_size: int, stopping: bool,
                   device_share: float, resident: Optional[bool]):
    """The ``ViewPairDataModule`` of ``recipe``'s view table on ``features`` (extracted by ``heads.pairs: views``);
    DataError naming what to run when the features carry no views of that recipe."""
    from ssl_pipeline.data.pairs import ViewPairDataModule

    if features.views is None or recipe not in features.views:
        raise DataError(f"no augmented views of recipe {recipe!r} on these features; extract them with "
                        "`ssl-pipeline extract --config CONFIG` where heads.pairs is views and data.views.recipes "
                        f"names {recipe}")
    views = features.views[recipe]
    table, _ = feature_table(FeatureRows(views.table))  # the memory map itself (float16/32): gathered per batch
    y = torch.from_numpy(np.asarray(features.y_train, dtype=np.int64))
    held_out = {}
    if stopping:
        held_out = {"val_labels": torch.from_numpy(np.asarray(features.y_val, dtype=np.int64)),
                    "val_rows": torch.from_numpy(np.asarray(views.val_images, dtype=np.int64))}
    return ViewPairDataModule(table, y, torch.from_numpy(np.asarray(views.train_images, dtype=np.int64)),
                              views.num_views, seeds, batch_size, **held_out, device_share=device_share,
                              resident=resident)


def fit_head(
    features: LabelledFeatures, settings: HeadSettings, trainer_cfg: TrainerConfig, logger: Optional[Logger] = None
) -> FittedHead:
    """Train one head (G = 1) with Lightning on δ-pairs of ``features``' training split; with
    ``early_stopping_patience``, stop on the loss of held-out δ-pairs of the val split. ``logger`` (e.g.
    ``WandbRun.fit_logger``) receives the loss curves; None logs nothing. ``fit_stage.fit_heads`` trains the heads
    of a run as grids (``heads.fit.fit_grid``), each with this function's result; this solo path is their
    reference."""
    import torch
    from pytorch_lightning.callbacks import EarlyStopping

    from ssl_pipeline.data.pairs import CandidateDataModule, DeltaPairDataModule, LabelSampler
    from ssl_pipeline.heads.callbacks import KeepBestWeights

    supervised = settings.method == "supervised"
    x = torch.from_numpy(np.ascontiguousarray(features.x_train, dtype=np.float32))
    y = torch.from_numpy(training_labels(features, supervised).astype(np.int64))
    module = head_module(features, settings)
    stopping = settings.early_stopping_patience is not None
    held_out = {}
    callbacks = []
    best_weights: Optional[KeepBestWeights] = None
    if stopping:
        held_out = held_out_features(features, supervised)
        best_weights = KeepBestWeights("val/loss")
        callbacks = [EarlyStopping("val/loss", patience=settings.early_stopping_patience, mode="min"), best_weights]
    if supervised:  # labelled batches: the grid's sampler for one seed
        datamodule = CandidateDataModule(x, y, [settings.seed], settings.batch_size, **held_out, sampler=LabelSampler)
    else:
        datamodule = DeltaPairDataModule(x, y, settings.delta, settings.batch_size, settings.seed, **held_out)
    trainer = head_trainer(trainer_cfg, settings.epochs, logger, stopping, callbacks)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start
    return FittedHead.of_module(module, fit_seconds, features.features_key,
                                best_weights.best_epoch if best_weights else settings.epochs)


def head_trainer(
    trainer_cfg: TrainerConfig, max_epochs: int, logger: Optional[Logger], validate: bool, callbacks: list
):
    """The ``pl.Trainer`` of a head fit (solo or grid): no checkpoints but a grid's own (``GridCheckpoint``), no
    sanity check, our own samplers, and validation only for early stopping."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import Checkpoint

    from ssl_pipeline.heads.teardown import EndProcessGroup

    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator=trainer_cfg.accelerator,
        devices=trainer_cfg.devices,
        strategy=trainer_cfg.strategy,
        precision=trainer_cfg.precision,
        log_every_n_steps=trainer_cfg.log_every_n_steps,
        enable_progress_bar=trainer_cfg.progress_bar,
        logger=logger if logger is not None else False,
        enable_checkpointing=any(isinstance(c, Checkpoint) for c in callbacks),  # only a grid's own (heads.grid)
        enable_model_summary=False,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        limit_val_batches=None if validate else 0,
        # spawned DDP ranks must not exit with Gloo's threads alive (teardown.py)
        callbacks=[*callbacks, EndProcessGroup()],
    )
