"""Fit one head on δ-pairs of the training split; save and load fitted heads (safetensors, no pickle)."""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from ssl_pipeline.atomic import atomic_write_bytes
from ssl_pipeline.config import HeadSettings, TrainerConfig, constrains_output_moments
from ssl_pipeline.data.labelled import LabelledFeatures
from ssl_pipeline.errors import DataError
from ssl_pipeline.theory.subspaces import FEATURE_FLOOR, FeatureSpan, class_statistics, feature_span, total_covariance

if TYPE_CHECKING:
    import torch
    from pytorch_lightning.loggers import Logger


@dataclass
class FittedHead:
    """A trained head: A [G, d, r] in training coordinates, the training mean [d] and scale D^(−1/2) [d]."""

    settings: HeadSettings
    weight: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    fit_seconds: float
    features_key: Optional[str] = None
    epochs_trained: Optional[int] = None
    """Epochs behind the kept weights (fewer than configured when early stopping kept an earlier epoch)."""
    weight2: Optional[np.ndarray] = None
    """CLIP heads: the second tower A₂ [G, d₂, r] on modality 2 (with ``mean2``, ``scale2``); None otherwise."""
    mean2: Optional[np.ndarray] = None
    scale2: Optional[np.ndarray] = None
    logit_scale: Optional[float] = None
    """CLIP heads: the logit scale at the end of training (1/τ when fixed, the learned value otherwise)."""

    def feature_space_weight(self, head: int = 0, tower: int = 1) -> np.ndarray:
        """Ã = D^(−1/2) A [d, r] for head ``head`` of the stack (``tower`` 2: a CLIP head's second tower)."""
        if tower == 2:
            return self.scale2[:, None] * self.weight2[head]
        return self.scale[:, None] * self.weight[head]

    def project(self, x: np.ndarray, head: int = 0, tower: int = 1) -> np.ndarray:
        """z = Ãᵀ(x − x̄_train) → [N, r] (``tower`` 2: modality-2 features through a CLIP head's second tower)."""
        mean = self.mean2 if tower == 2 else self.mean
        return (x - mean) @ self.feature_space_weight(head, tower)

    def save(self, path: Path) -> None:
        """Write atomically (temp file + rename) as safetensors, settings in the metadata."""
        from safetensors.numpy import save

        tensors = {"weight": self.weight, "mean": self.mean, "scale": self.scale}
        if self.weight2 is not None:
            tensors.update(weight2=self.weight2, mean2=self.mean2, scale2=self.scale2)
        metadata = {
            "settings": json.dumps(asdict(self.settings)),
            "fit_seconds": repr(self.fit_seconds),
            "features_key": self.features_key or "",
            "epochs_trained": str(self.epochs_trained or ""),
            "logit_scale": "" if self.logit_scale is None else repr(self.logit_scale),
        }
        arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
        atomic_write_bytes(path, save(arrays, metadata))

    @classmethod
    def load(cls, path: Path) -> "FittedHead":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                metadata = f.metadata()
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as error:  # safetensors raises several types for corrupt files
            raise DataError(f"cannot read head file {path} ({error}); re-run `ssl-pipeline fit`") from error
        settings = json.loads(metadata["settings"])
        if settings["method"] == "simsiam" and settings.get("regularizer") is None:
            settings["regularizer"] = "euclidean"  # heads saved before the covariance guard existed (schema 1)
        return cls(
            settings=HeadSettings(**settings),
            fit_seconds=float(metadata["fit_seconds"]),
            features_key=metadata["features_key"] or None,
            epochs_trained=int(metadata["epochs_trained"]) if metadata.get("epochs_trained") else None,
            logit_scale=float(metadata["logit_scale"]) if metadata.get("logit_scale") else None,
            **tensors,
        )


def standardization_scale(std: torch.Tensor, relative_floor: float = 1e-6) -> torch.Tensor:
    """D^(−1/2) [d]: 1/σ per feature, and 0 for features constant on train (σ ≤ floor · max σ).

    Real backbones have dead channels (120 of EfficientNet-Lite0's 1280 on digits). They carry no information,
    and 1/σ there would blow Ã = D^(−1/2) A up along directions the data never moves in, so every subspace
    score would see only them. Unlike the eigenvalue floor of Σ_T (``FEATURE_FLOOR``, 10⁻³ of the largest
    variance), this floor only catches constant channels: standardising exists to undo per-channel units, and a
    channel in small units (tests: scales spanning 0.05–20, a variance ratio of 6·10⁻⁶) still carries signal.
    Near-constant channels are then left out by the span the span-restricted heads are optimised in.
    """
    import torch

    keep = std > relative_floor * std.max()
    return torch.where(keep, 1.0 / torch.where(keep, std, torch.ones_like(std)), torch.zeros_like(std))


def input_span(features: LabelledFeatures, scale: np.ndarray) -> FeatureSpan:
    """The eigenbasis [d, m] and variances [m] of the head's training input D^(−1/2)(x − x̄_train) above the floor
    (Σ̂ = D^(−1/2) Σ_T D^(−1/2), Σ_T accumulated in float64 chunks). Kept on ``features`` per scale, so the many
    heads of a run decompose Σ̂ once."""
    cache = features.__dict__.setdefault("_input_spans", {})
    key = (id(features.x_train), scale.tobytes())
    if key not in cache:
        sigma_t = total_covariance(class_statistics(features.x_train, features.y_train, features.num_classes))
        cache[key] = feature_span(scale[:, None] * sigma_t * scale[None, :])
    return cache[key]


def input_statistics(features: LabelledFeatures, standardize: bool) -> tuple["torch.Tensor", "torch.Tensor"]:
    """The training mean [d] and scale D^(−1/2) [d] (ones unless ``standardize``) of a head's input, float64,
    computed once per features and kept on them: the heads of a run share them, and a float32 copy of the
    training split per head (18 heads on 45k × 1280: 4 GiB of freed copies the tuned allocator kept) is gone."""
    import torch

    from ssl_pipeline.theory.chunks import row_chunks

    cache = features.__dict__.setdefault("_input_statistics", {})
    key = (id(features.x_train), standardize)
    if key not in cache:
        # one chunked float64 pass over the (possibly memory-mapped) split: no copy of it; each block rounded to
        # float32 first, the values the head sees
        total = np.zeros(features.dim)
        squares = np.zeros(features.dim)
        for _, block in row_chunks(features.x_train, np.float32):
            block = block.astype(np.float64)
            total += block.sum(axis=0)
            squares += np.einsum("ij,ij->j", block, block)
        n = len(features.x_train)
        mean = torch.from_numpy(total / n)
        scale = torch.ones(features.dim, dtype=torch.float64)
        if standardize:  # the unbiased std, as torch.std
            variance = np.maximum(squares - n * (total / n) ** 2, 0.0) / max(n - 1, 1)
            scale = standardization_scale(torch.from_numpy(np.sqrt(variance)))
        cache[key] = (mean, scale)
    return cache[key]


def feature_table(x) -> tuple["torch.Tensor", Optional["torch.Tensor"]]:
    """A training split as (table [M, d], row index [N] or None) for gathering batches: a memory-mapped split
    (``data.rows.FeatureRows``) is the map itself in its stored dtype (float16 or float32, no copy: pages are read
    as batches touch them) with the split's rows; an in-memory split is itself as float32. Batches are gathered as
    ``table[index[i]]`` and widened to float32 (``data.pairs.gather_candidates``)."""
    import torch

    from ssl_pipeline.theory.chunks import FeatureRows

    if isinstance(x, FeatureRows) and x.source.dtype in (np.float16, np.float32):
        with warnings.catch_warnings():  # a read-only map: the table is only read
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            table = torch.from_numpy(x.source)
        return table, None if x.index is None else torch.from_numpy(x.index)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), None


def head_module(features: LabelledFeatures, settings: HeadSettings, num_heads: int = 1):
    """The untrained LightningModule of ``settings`` on ``features``' training split: its mean and scale
    D^(−1/2) (``standardization_scale``), and the basis of the span of its training inputs it is optimised in,
    in the coordinates of its parametrization (``heads.parametrization``)."""
    from ssl_pipeline.heads.modules import head_class

    mean, scale, basis, variances = head_inputs(features, settings)
    return head_class(settings.method).from_settings(
        settings, features.dim, mean.float(), scale.float(), num_heads, basis=basis, basis_variances=variances
    )


def head_inputs(features: LabelledFeatures, settings: HeadSettings):
    """(mean [d], scale [d] float64; basis [d, m], its variances [m] float32) of a head of ``settings``: what
    ``head_module`` builds the module from and ``initial_weight`` the untrained head (without Lightning). The basis
    is one tensor per span and parametrization, shared by the heads of a run."""
    import torch

    from ssl_pipeline.heads.parametrization import head_basis

    mean, scale = input_statistics(features, settings.standardize)
    kept = input_span(features, scale.numpy())
    if settings.r > kept.rank:
        raise DataError(f"heads.r={settings.r} exceeds the rank the training features occupy ({kept.rank} "
                        f"directions above the relative eigenvalue floor {FEATURE_FLOOR:g}); choose r ≤ {kept.rank}")
    parametrization = settings.parametrization or legacy_parametrization(settings)
    bases = features.__dict__.setdefault("_head_bases", {})
    key = (id(features.x_train), scale.numpy().tobytes(), parametrization)
    if key not in bases:
        basis, variances = head_basis(kept, parametrization)
        bases[key] = tuple(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in (basis, variances))
    return (mean, scale, *bases[key])


def legacy_parametrization(settings: HeadSettings) -> str:
    """The parametrization of a head saved before ``heads.parametrization`` existed: whitened for SimSiam with the
    covariance guard and the spectral heads, orthonormal otherwise."""
    return "whitened" if constrains_output_moments(settings.method, settings.regularizer) else "orthonormal"


def initial_weight(features: LabelledFeatures, settings: HeadSettings) -> np.ndarray:
    """Ã [d, r] of the untrained head of ``settings`` (same parametrisation, basis, scale and seed as the trained
    one, ``head_module``): what a head that learned nothing scores (``init_fisher_cos2``, ``init_minor_cos2``)."""
    from ssl_pipeline.heads.parametrization import orthonormal_init

    _, scale, basis, _ = head_inputs(features, settings)
    weight = basis @ orthonormal_init(1, basis.shape[1], settings.r, settings.seed)[0]  # LinearHead's A = basis·B
    return (scale.float()[:, None] * weight).double().numpy()


def held_out_features(features: LabelledFeatures) -> dict:
    """The val split as tensors for the held-out δ-pairs of early stopping (refused without two samples of a class)."""
    import torch

    if len(features.y_val) < 2 or np.bincount(features.y_val).max() < 2:
        raise DataError("early stopping needs held-out δ-pairs: the val split needs at least 2 samples of a class")
    return dict(
        val_features=torch.from_numpy(np.ascontiguousarray(features.x_val, dtype=np.float32)),
        val_labels=torch.from_numpy(features.y_val.astype(np.int64)),
    )


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


def fit_head(
    features: LabelledFeatures, settings: HeadSettings, trainer_cfg: TrainerConfig, logger: Optional[Logger] = None
) -> FittedHead:
    """Train one head (G = 1) with Lightning on δ-pairs of ``features``' training split; with
    ``early_stopping_patience``, stop on the loss of held-out δ-pairs of the val split. ``logger`` (e.g.
    ``WandbRun.fit_logger``) receives the loss curves; None logs nothing. ``experiment.fit_heads`` trains the heads
    of a run as grids (``heads.grid.fit_grid``), each with this function's result; this solo path is their
    reference."""
    import torch
    from pytorch_lightning.callbacks import EarlyStopping

    from ssl_pipeline.data.pairs import DeltaPairDataModule
    from ssl_pipeline.heads.callbacks import KeepBestWeights

    x = torch.from_numpy(np.ascontiguousarray(features.x_train, dtype=np.float32))
    y = torch.from_numpy(features.y_train.astype(np.int64))
    module = head_module(features, settings)
    stopping = settings.early_stopping_patience is not None
    held_out = {}
    callbacks = []
    best_weights: Optional[KeepBestWeights] = None
    if stopping:
        held_out = held_out_features(features)
        best_weights = KeepBestWeights("val/loss")
        callbacks = [EarlyStopping("val/loss", patience=settings.early_stopping_patience, mode="min"), best_weights]
    datamodule = DeltaPairDataModule(x, y, settings.delta, settings.batch_size, settings.seed, **held_out)
    trainer = head_trainer(trainer_cfg, settings.epochs, logger, stopping, callbacks)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start
    return FittedHead(
        settings=settings,
        weight=module.head_weight().detach().cpu().numpy(),  # float32, or float64 at precision 64-true
        mean=module.mean.cpu().numpy(),
        scale=module.scale.cpu().numpy(),
        fit_seconds=fit_seconds,
        features_key=features.features_key,
        epochs_trained=best_weights.best_epoch if best_weights else settings.epochs,
    )
