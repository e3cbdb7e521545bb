"""The gradient-carrying all-gather of the heads' outputs under DDP (lightly's ``utils/dist.py`` pattern): the
losses of every head method see the global batch, and each rank's gradient equals the single-process one
(docs/theory.md, "Under DDP")."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


class _GatherWithGradient(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for a piece back to the rank that owns it
    (lightly's GatherLayer). With torch 2.14 + gloo, torch.distributed.nn's all_gather gave head gradients
    that did not match the single-process ones (tests/test_losses.py checks this version does)."""

    @staticmethod
    def forward(ctx, t: Tensor) -> tuple[Tensor, ...]:
        pieces = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(pieces, t.contiguous())
        return tuple(pieces)

    @staticmethod
    def backward(ctx, *grads: Tensor) -> Tensor:
        stacked = torch.stack([g.contiguous() for g in grads])
        dist.all_reduce(stacked)
        return stacked[dist.get_rank()]


def gather_with_gradient(t: Tensor) -> tuple[Tensor, int]:
    """All-gather [G, B, r] from every rank along dim 1 → ([G, W·B, r], this rank's offset).

    The backward sums gradients back to the owning rank, so with DDP's gradient averaging the update equals
    the single-process gradient of the loss over the global batch (docs/theory.md, "Under DDP").
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t, 0
    return torch.cat(_GatherWithGradient.apply(t), dim=1), dist.get_rank() * t.shape[1]
