"""Losses as pure functions over stacks of G heads (docs/theory.md, "InfoNCE", "SimSiam", "CLIP loss").

Shapes: G heads, B local pairs, M candidates (M = B, or the global batch under DDP), r output dimensions.
Each function returns one loss per head, [G]; summing them trains the G heads independently.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor


def similarity_matrix(a: Tensor, b: Tensor, similarity: str, scale: Union[float, Tensor] = 1.0) -> Tensor:
    """scale · s(a_i, b_j) for a [G, B, r] and b [G, M, r] → [G, B, M]; ``cosine`` or ``dot``.

    The scale is applied to a before the product ([B, r] work, not [B, M]: 17 % of an InfoNCE step at B=4096).
    """
    if similarity == "cosine":
        a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    return (a * scale) @ b.transpose(-1, -2)


def info_nce_loss(anchors: Tensor, candidates: Tensor, targets: Tensor, tau: Union[float, Tensor],
                  similarity: str = "cosine") -> Tensor:
    """InfoNCE (Oord et al. 2018; docs/theory.md "InfoNCE"): L = −(1/B) Σ_i log softmax_j(s(z_i, z⁺_j)/τ)[target_i].

    anchors [G, B, r]; candidates [G, M, r] hold every positive (the local batch, or all ranks' under DDP);
    targets [B] index each anchor's own positive among the candidates; τ one float, or one per head [G].
    Returns [G].
    """
    scale = 1.0 / tau if not torch.is_tensor(tau) else (1.0 / tau).to(anchors.device, anchors.dtype).reshape(-1, 1, 1)
    logits = similarity_matrix(anchors, candidates, similarity, scale=scale)
    return F.cross_entropy(logits.flatten(0, 1), targets.repeat(anchors.shape[0]), reduction="none").view(
        anchors.shape[0], -1
    ).mean(dim=1)


LOGIT_SCALE_MAX = 100.0
"""The largest CLIP logit scale (1/τ ≥ 0.01): open_clip's training loop clamps its learnable log-scale to
[0, ln 100] after every optimiser step (``clamp_log_logit_scale_``)."""


def clamp_log_logit_scale_(log_scale: Tensor) -> Tensor:
    """Clamp a learnable log logit scale in place to [0, ln LOGIT_SCALE_MAX] (the scale to [1, 100]), without
    recording it for autograd: open_clip_train's rule, applied after each optimiser step (not inside the loss,
    whose gradient is therefore never cut by the clamp). Returns ``log_scale``."""
    with torch.no_grad():
        return log_scale.clamp_(0.0, math.log(LOGIT_SCALE_MAX))


def clip_loss(z1: Tensor, z2: Tensor, logit_scale: Union[Tensor, float], targets: Optional[Tensor] = None,
              candidates1: Optional[Tensor] = None, candidates2: Optional[Tensor] = None) -> Tensor:
    """The symmetric cross-modal InfoNCE of CLIP (Radford et al. 2021; docs/theory.md "CLIP loss"), per head.

    z1, z2 [G, B, r]: the two towers' outputs for B local pairs (row i of z1 with row i of z2); both are
    L2-normalised here. ``logit_scale``: the scale s = 1/τ itself (already exponentiated), a float, a scalar
    tensor or one per head [G]. With ẑ the normalised outputs,

      L = ½ [ CE(s ẑ1 ĉ2ᵀ, t) + CE(s ẑ2 ĉ1ᵀ, t) ]   (each cross-entropy averaged over the B local rows),

    where c1, c2 [G, M, r] are the candidates (default z1, z2: M = B, t = 0..B−1). Under DDP pass every rank's
    outputs gathered with gradient as ``candidates1``/``candidates2`` and ``targets`` [B], the positions of the
    local pairs among them: this is open_clip's ``ClipLoss(local_loss=True, gather_with_grad=True)``, and the
    mean over ranks of the local losses is the loss over the global batch. Returns [G].
    """
    z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    c1 = z1 if candidates1 is None else F.normalize(candidates1, dim=-1)
    c2 = z2 if candidates2 is None else F.normalize(candidates2, dim=-1)
    if targets is None:
        targets = torch.arange(z1.shape[1], device=z1.device)
    scale = torch.as_tensor(logit_scale, dtype=z1.dtype, device=z1.device)
    scale = scale.reshape(-1, 1, 1) if scale.ndim else scale
    heads, rows = z1.shape[0], z1.shape[1]
    labels = targets.repeat(heads)

    def cross_entropy(anchors: Tensor, candidates: Tensor) -> Tensor:
        logits = (scale * anchors) @ candidates.transpose(-1, -2)  # scaled on [B, r], not [B, M]
        return F.cross_entropy(logits.flatten(0, 1), labels, reduction="none").view(heads, rows).mean(dim=1)

    return 0.5 * (cross_entropy(z1, c2) + cross_entropy(z2, c1))


def simsiam_loss(predicted: Tensor, predicted_positive: Tensor, z: Tensor, z_positive: Tensor) -> Tensor:
    """SimSiam (Chen & He 2021; docs/theory.md "SimSiam"): −½[cos(h(f(x)), sg f(x⁺)) + cos(h(f(x⁺)), sg f(x))].

    All inputs [G, B, r]; the stop-gradient is applied here to z and z_positive. Returns [G].
    """
    forward = F.cosine_similarity(predicted, z_positive.detach(), dim=-1)
    backward = F.cosine_similarity(predicted_positive, z.detach(), dim=-1)
    return -0.5 * (forward + backward).mean(dim=-1)


def orthogonality_penalty(weight: Tensor, metric: Optional[Tensor] = None) -> Tensor:
    """‖AᵀA − I‖²_F for a stack of heads A [G, d, r] (the theory's collapse guard), or ‖Aᵀdiag(m)A − I‖²_F with a
    diagonal ``metric`` m [d] shared by the stack, or one per head [G, d] (the covariance guard in an eigenbasis of
    Σ̂). Returns [G]."""
    gram = weight.transpose(-1, -2) @ (weight if metric is None else metric[..., None] * weight)
    identity = torch.eye(weight.shape[-1], device=weight.device, dtype=weight.dtype)
    return ((gram - identity) ** 2).sum(dim=(-1, -2))
