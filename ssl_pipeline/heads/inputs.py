"""What a head is built from on a features object: the training mean and scale D^(−1/2) of its input, the span
those inputs occupy and its basis in the head's parametrization (computed once per features and kept on them,
``LabelledFeatures.remember``), the untrained module and weight, the training table batches are gathered from,
and the held-out split of early stopping."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Optional

import numpy as np

from ssl_pipeline.data.labelled import LabelledFeatures
from ssl_pipeline.errors import DataError
from ssl_pipeline.heads.fitted import legacy_parametrization
from ssl_pipeline.heads.settings import HeadSettings
from ssl_pipeline.theory.subspaces import FEATURE_FLOOR, FeatureSpan, class_statistics, feature_span, total_covariance

if TYPE_CHECKING:
    import torch


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
    def span() -> FeatureSpan:
        sigma_t = total_covariance(class_statistics(features.x_train, features.y_train, features.num_classes))
        return feature_span(scale[:, None] * sigma_t * scale[None, :])

    return features.remember(("input_span", id(features.x_train), scale.tobytes()), span)


def input_statistics(features: LabelledFeatures, standardize: bool) -> tuple["torch.Tensor", "torch.Tensor"]:
    """The training mean [d] and scale D^(−1/2) [d] (ones unless ``standardize``) of a head's input, float64,
    computed once per features and kept on them: the heads of a run share them, and a float32 copy of the
    training split per head (18 heads on 45k × 1280: 4 GiB of freed copies the tuned allocator kept) is gone."""
    import torch

    from ssl_pipeline.theory.chunks import row_chunks

    def statistics() -> tuple[torch.Tensor, torch.Tensor]:
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
        return mean, scale

    return features.remember(("input_statistics", id(features.x_train), standardize), statistics)


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
    from ssl_pipeline.heads.registry import head_class

    mean, scale, basis, variances = head_inputs(features, settings)
    extra = {"num_classes": features.num_classes} if settings.method == "supervised" else {}  # the score label's
    return head_class(settings.method).from_settings(
        settings, features.dim, mean.float(), scale.float(), num_heads, basis=basis, basis_variances=variances,
        **extra)


def head_inputs(features: LabelledFeatures, settings: HeadSettings):
    """(mean [d], scale [d] float64; basis [d, m], its variances [m] float32) of a head of ``settings``: what
    ``head_module`` builds the module from and ``initial_weight`` the untrained head (without Lightning). The basis
    is one tensor per span and parametrization, shared by the heads of a run."""
    import torch

    from ssl_pipeline.heads.parametrization import head_basis

    mean, scale = input_statistics(features, settings.standardize)
    kept = input_span(features, scale.numpy())
    if settings.hidden is None and settings.r > kept.rank:  # a hidden layer's outputs are not bound by it
        raise DataError(f"heads.r={settings.r} exceeds the rank the training features occupy ({kept.rank} "
                        f"directions above the relative eigenvalue floor {FEATURE_FLOOR:g}); choose r ≤ {kept.rank}")
    parametrization = settings.parametrization or legacy_parametrization(settings)
    def basis() -> tuple[torch.Tensor, torch.Tensor]:
        arrays = head_basis(kept, parametrization)
        return tuple(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in arrays)

    key = ("head_basis", id(features.x_train), scale.numpy().tobytes(), parametrization)
    return (mean, scale, *features.remember(key, basis))


def initial_weight(features: LabelledFeatures, settings: HeadSettings) -> np.ndarray:
    """Ã [d, r] of the untrained head of ``settings`` (same parametrisation, basis, scale and seed as the trained
    one, ``head_module``): what a head that learned nothing scores (``init_fisher_cos2``, ``init_minor_cos2``); the
    first layer W̃ [d, w] of a one-hidden-layer head."""
    from ssl_pipeline.heads.parametrization import orthonormal_init

    _, scale, basis, _ = head_inputs(features, settings)
    weight = basis @ orthonormal_init(1, basis.shape[1], settings.width, settings.seed)[0]  # LinearHead's A = basis·B
    return (scale.float()[:, None] * weight).double().numpy()


def training_labels(features: LabelledFeatures, supervised: bool, split: str = "train") -> np.ndarray:
    """The labels a head trains on in ``split`` (train or val): what its δ-pairs share (``pair_labels``), or for a
    ``supervised`` head its target, the score label."""
    return getattr(features, f"y_{split}") if supervised else features.pair_labels(split)


def held_out_features(features: LabelledFeatures, supervised: bool = False) -> dict:
    """The val split as tensors for the held-out δ-pairs of early stopping (refused without two samples of a
    class); ``supervised``: labelled by the score label instead of the pair label (``training_labels``)."""
    import torch

    labels = training_labels(features, supervised, "val")
    if len(labels) < 2 or np.bincount(labels).max() < 2:
        raise DataError("early stopping needs held-out δ-pairs: the val split needs at least 2 samples of a class")
    return dict(
        val_features=torch.from_numpy(np.ascontiguousarray(features.x_val, dtype=np.float32)),
        val_labels=torch.from_numpy(labels.astype(np.int64)),
    )
