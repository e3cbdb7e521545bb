"""Losses as pure functions over stacks of G heads (docs/theory.md, "InfoNCE", "SimSiam").

Shapes: G heads, B local pairs, M candidates (M = B, or the global batch under DDP), r output dimensions.
Each function returns one loss per head, [G]; summing them trains the G heads independently.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def similarity_matrix(a: Tensor, b: Tensor, similarity: str, scale: float = 1.0) -> Tensor:
    """scale · s(a_i, b_j) for a [G, B, r] and b [G, M, r] → [G, B, M]; ``cosine`` or ``dot``.

    The scale is applied to a before the product ([B, r] work, not [B, M]: 17 % of an InfoNCE step at B=4096).
    """
    if similarity == "cosine":
        a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    return (a * scale) @ b.transpose(-1, -2)


def info_nce_loss(anchors: Tensor, candidates: Tensor, targets: Tensor, tau: float, similarity: str = "cosine") -> Tensor:
    """InfoNCE (Oord et al. 2018; docs/theory.md "InfoNCE"): L = −(1/B) Σ_i log softmax_j(s(z_i, z⁺_j)/τ)[target_i].

    anchors [G, B, r]; candidates [G, M, r] hold every positive (the local batch, or all ranks' under DDP);
    targets [B] index each anchor's own positive among the candidates. Returns [G].
    """
    logits = similarity_matrix(anchors, candidates, similarity, scale=1.0 / tau)
    return F.cross_entropy(logits.flatten(0, 1), targets.repeat(anchors.shape[0]), reduction="none").view(
        anchors.shape[0], -1
    ).mean(dim=1)


def simsiam_loss(predicted: Tensor, predicted_positive: Tensor, z: Tensor, z_positive: Tensor) -> Tensor:
    """SimSiam (Chen & He 2021; docs/theory.md "SimSiam"): −½[cos(h(f(x)), sg f(x⁺)) + cos(h(f(x⁺)), sg f(x))].

    All inputs [G, B, r]; the stop-gradient is applied here to z and z_positive. Returns [G].
    """
    forward = F.cosine_similarity(predicted, z_positive.detach(), dim=-1)
    backward = F.cosine_similarity(predicted_positive, z.detach(), dim=-1)
    return -0.5 * (forward + backward).mean(dim=-1)


def orthogonality_penalty(weight: Tensor) -> Tensor:
    """‖AᵀA − I‖²_F for a stack of heads A [G, d, r] (the theory's collapse guard). Returns [G]."""
    gram = weight.transpose(-1, -2) @ weight
    identity = torch.eye(weight.shape[-1], device=weight.device, dtype=weight.dtype)
    return ((gram - identity) ** 2).sum(dim=(-1, -2))
