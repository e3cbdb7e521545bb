"""Linear CLIP heads on paired features (docs/theory.md, "CLIP loss"): two towers f₁(x₁) = A₁ᵀ(x₁ − x̄₁) and
f₂(x₂) = A₂ᵀ(x₂ − x̄₂), A_m [d_m, r], trained with the symmetric cross-modal InfoNCE on δ-partners.

Each modality-1 training item is an anchor once per epoch; its partner is a modality-2 item of the same shared
label k_s with probability δ, else a uniformly random modality-2 item (``data.pairs.cross_modal_candidates``).
The three draws behind a partner do not depend on δ, so CLIP heads of one seed share them and train as a grid
(``ClipGrid``, a ``HeadGrid`` whose members are ``ClipHead``s), exactly like the unimodal heads. Each tower is
optimised inside the span of its modality's training inputs (orthonormal eigenbasis above the floor, as InfoNCE).
The logit scale is fixed at 1/τ or learned (log-parametrised, clamped to [1, 100] after every optimiser step,
open_clip's rule, ``heads.losses.clamp_log_logit_scale_``); under DDP both towers' outputs are all-gathered with
their gradients (open_clip's ``local_loss=True, gather_with_grad=True``).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch
from torch import Tensor, nn

from ssl_pipeline.data.pairs import delta_choice
from ssl_pipeline.heads.distributed import gather_with_gradient
from ssl_pipeline.heads.grid import HeadGrid, centred, first_equal_basis, project_heads, unit_scale
from ssl_pipeline.heads.losses import clamp_log_logit_scale_, clip_loss
from ssl_pipeline.heads.modules import LinearHead
from ssl_pipeline.heads.parametrization import orthonormal_init
from ssl_pipeline.heads.settings import HeadSettings

if TYPE_CHECKING:
    from ssl_pipeline.data.multimodal import PairedFeatures
    from ssl_pipeline.heads.fitted import FittedHead

SECOND_TOWER_SEED = 7919
"""Tower 2 is initialised from seed + this, so the two towers of a head do not start from the same draw."""


class ClipHead(LinearHead):
    """Two linear towers (tower 1: ``LinearHead``'s weight on modality 1; tower 2: ``weight2`` on modality 2), each
    in the basis of its modality's training span, and the logit scale (``log_scale``: a parameter when learned, a
    buffer when fixed), one per head of the stack."""

    def __init__(
        self, settings: dict, dim: int, mean: Tensor, scale: Tensor, num_heads: int = 1,
        basis: Optional[Tensor] = None, dim2: int = 0, mean2: Optional[Tensor] = None,
        scale2: Optional[Tensor] = None, basis2: Optional[Tensor] = None,
    ) -> None:
        super().__init__(settings, dim, mean, scale, num_heads, basis)
        s = self.settings
        inner2 = dim2 if basis2 is None else basis2.shape[1]
        self.weight2 = nn.Parameter(orthonormal_init(num_heads, inner2, s.r, s.seed + SECOND_TOWER_SEED))
        self.register_buffer("mean2", mean2.float())
        self.register_buffer("scale2", scale2.float())
        self.register_buffer("basis2", None if basis2 is None else basis2.float(), persistent=False)
        log_scale = torch.full((num_heads,), math.log(1.0 / s.tau))
        if s.learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def head_weight2(self) -> Tensor:
        """A₂ [G, d₂, r] on the module's (centred, scaled) modality-2 input."""
        return self.weight2 if self.basis2 is None else self.basis2 @ self.weight2

    def logit_scale(self) -> Tensor:
        """The scale exp(log_scale) [G] the loss multiplies the cosine similarities by (1/τ when fixed)."""
        return self.log_scale.exp()

    def parameter_groups(self) -> list[dict]:
        groups = [{"params": [self.weight, self.weight2]}]
        if self.settings.learn_scale:
            groups.append({"params": [self.log_scale], "weight_decay": 0.0})  # open_clip: no decay on the scale
        return groups

    def output_losses(self, z1: Tensor, z2: Tensor) -> Tensor:
        """One loss per head, [G], of the towers' outputs on B local pairs z1, z2 [G, B, r]; under DDP the
        candidates are every rank's outputs, gathered with their gradients."""
        candidates1, offset = gather_with_gradient(z1)
        candidates2, _ = gather_with_gradient(z2)
        targets = torch.arange(z1.shape[1], device=z1.device) + offset
        return clip_loss(z1, z2, self.logit_scale(), targets, candidates1, candidates2)

    def clamp_scale(self) -> None:
        if self.settings.learn_scale:
            clamp_log_logit_scale_(self.log_scale)


class ClipGrid(HeadGrid):
    """CLIP heads trained together (see ``HeadGrid``): a step's batch is the anchors' modality-1 blocks [S, B, d₁],
    the partners' candidate blocks [S, 2, B, d₂] (same-k_s, uniform) and the coins [S, B] of every seed; each
    tower's weights come from one GEMM per distinct basis, each head picks its partners with its own δ."""

    def __init__(self, members: list[ClipHead], features_key: Optional[str] = None, on_finished=None, on_epoch=None):
        super().__init__(members, features_key, on_finished, on_epoch)
        self.basis2_owner = [first_equal_basis(members, h, attribute="basis2") for h in range(len(members))]
        self.unit_scale2 = unit_scale(members[0].scale2)

    def grid_losses(self, blocks1: Tensor, blocks2: Tensor, coins: Tensor, heads: list[int]) -> dict[int, Tensor]:
        first = self.members[0]
        weights1 = self.head_weights(heads)
        weights2 = self.head_weights(heads, tower=2)
        losses = {}
        for s, seed_heads in enumerate(self.by_seed):
            active = [h for h in seed_heads if h in heads]
            if not active:
                continue
            z1 = project_heads(centred(blocks1[s], first.mean, None if self.unit_scale else first.scale), weights1, active)
            z2 = project_heads(centred(blocks2[s], first.mean2, None if self.unit_scale2 else first.scale2), weights2, active)
            for h in active:
                member = self.members[h]
                keep = delta_choice(coins[s], member.settings.delta)[:, None]
                partner = torch.where(keep, z2[h][0], z2[h][1])
                losses[h] = member.output_losses(z1[h][None], partner[None])[0]
        return losses

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        for member in self.members:
            member.clamp_scale()

    def fitted_head(self, h: int) -> "FittedHead":
        head = super().fitted_head(h)
        member = self.members[h]
        head.weight2 = member.head_weight2().detach().cpu().numpy()
        head.mean2 = member.mean2.cpu().numpy()
        head.scale2 = member.scale2.cpu().numpy()
        head.logit_scale = float(member.logit_scale().detach()[0])
        return head


def clip_head_module(paired: "PairedFeatures", settings: HeadSettings, num_heads: int = 1) -> ClipHead:
    """The untrained ``ClipHead`` of ``settings``: each tower with its modality's training mean, scale and span
    basis (``heads.inputs.head_module``'s rules, per modality)."""
    from ssl_pipeline.heads.inputs import head_module

    unimodal = HeadSettings(**{**asdict(settings), "method": "infonce", "learn_scale": None})  # span: orthonormal
    towers = [head_module(paired.view(m), unimodal) for m in (1, 2)]
    return ClipHead.from_settings(
        settings, towers[0].mean.shape[0], towers[0].mean, towers[0].scale, num_heads, basis=towers[0].basis,
        dim2=towers[1].mean.shape[0], mean2=towers[1].mean, scale2=towers[1].scale, basis2=towers[1].basis,
    )


def paired_tensors(paired: "PairedFeatures", split: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x₁, k_s of modality 1, x₂, k_s of modality 2) of one split as tensors (features float32)."""
    tensors = []
    for m in (1, 2):
        modality = paired.modality(m)
        tensors.append(torch.from_numpy(np.ascontiguousarray(getattr(modality, f"x_{split}"), dtype=np.float32)))
        tensors.append(torch.from_numpy(np.asarray(getattr(modality, f"shared_{split}"), dtype=np.int64)))
    return tuple(tensors)
