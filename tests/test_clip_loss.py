"""The CLIP loss (docs/theory.md, "CLIP loss") against open_clip's ``ClipLoss`` on identical float64 inputs: the
loss and its gradients with respect to both towers' outputs and the learnable log logit scale, per head of a
stack, single-process and as one rank of a DDP world."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from ssl_pipeline.heads.losses import LOGIT_SCALE_MAX, clamp_log_logit_scale_, clip_loss

TOLERANCE = 1e-10


def _leaves(heads: int, batch: int, r: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    z1 = torch.randn(heads, batch, r, generator=generator, dtype=torch.float64).requires_grad_()
    z2 = torch.randn(heads, batch, r, generator=generator, dtype=torch.float64).requires_grad_()
    log_scale = (math.log(1 / 0.07) + 0.5 * torch.randn(heads, generator=generator, dtype=torch.float64))
    return z1, z2, log_scale.requires_grad_()


def _open_clip(z1, z2, log_scale, g, loss=None):
    """open_clip's loss for head g: the model normalises the features and exponentiates the scale, the loss does
    neither."""
    loss = ClipLoss() if loss is None else loss
    return loss(F.normalize(z1[g], dim=-1), F.normalize(z2[g], dim=-1), log_scale[g].exp())


@pytest.mark.parametrize("batch,r", [(8, 3), (33, 16)])
def test_loss_and_gradients_equal_open_clip_per_head(batch, r):
    z1, z2, log_scale = _leaves(3, batch, r, seed=batch)
    ours = clip_loss(z1, z2, log_scale.exp())
    assert ours.shape == (3,)
    ours_grads = torch.autograd.grad(ours.sum(), (z1, z2, log_scale))
    theirs = torch.stack([_open_clip(z1, z2, log_scale, g) for g in range(3)])
    theirs_grads = torch.autograd.grad(theirs.sum(), (z1, z2, log_scale))
    assert torch.max(torch.abs(ours - theirs)) <= TOLERANCE
    for mine, reference in zip(ours_grads, theirs_grads):
        assert mine.dtype == torch.float64
        assert torch.max(torch.abs(mine - reference)) <= TOLERANCE
    assert all(torch.count_nonzero(grad) > 0 for grad in ours_grads)


def test_a_scalar_scale_is_shared_by_every_head():
    z1, z2, _ = _leaves(2, 10, 4, seed=1)
    as_float = clip_loss(z1, z2, 14.0)
    as_tensor = clip_loss(z1, z2, torch.tensor(14.0, dtype=torch.float64))
    per_head = clip_loss(z1, z2, torch.full((2,), 14.0, dtype=torch.float64))
    assert torch.equal(as_float, as_tensor) and torch.allclose(as_float, per_head, rtol=0, atol=TOLERANCE)
    reference = torch.stack([ClipLoss()(F.normalize(z1[g], dim=-1), F.normalize(z2[g], dim=-1), 14.0)
                             for g in range(2)])
    assert torch.max(torch.abs(as_float - reference)) <= TOLERANCE


def test_the_loss_ignores_the_norms_of_the_outputs():
    z1, z2, log_scale = _leaves(1, 12, 5, seed=2)
    stretched = z1 * torch.rand(1, 12, 1, dtype=torch.float64) * 10
    assert torch.allclose(clip_loss(z1, z2, log_scale.exp()), clip_loss(stretched, z2, log_scale.exp()),
                          rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_one_rank_of_a_ddp_world_equals_open_clip_local_loss_with_gathered_features(rank, monkeypatch):
    """Under DDP each rank passes its local pairs, every rank's outputs gathered with gradient, and the positions
    of its pairs among them: open_clip's ClipLoss(local_loss=True, gather_with_grad=True) on that rank (its
    all_gather replaced by the concatenation it would return)."""
    import open_clip.loss

    world, batch, r = 3, 6, 4
    z1, z2, log_scale = _leaves(2, world * batch, r, seed=3 + rank)
    local = slice(rank * batch, (rank + 1) * batch)
    targets = torch.arange(batch) + rank * batch
    ours = clip_loss(z1[:, local], z2[:, local], log_scale.exp(), targets=targets, candidates1=z1, candidates2=z2)
    ours_grads = torch.autograd.grad(ours.sum(), (z1, z2, log_scale))

    theirs = []
    for g in range(2):
        a, b = F.normalize(z1[g], dim=-1), F.normalize(z2[g], dim=-1)
        monkeypatch.setattr(open_clip.loss, "gather_features", lambda *args, a=a, b=b, **kwargs: (a, b))
        loss = ClipLoss(local_loss=True, gather_with_grad=True, rank=rank, world_size=world)
        theirs.append(loss(a[local], b[local], log_scale[g].exp()))
    theirs = torch.stack(theirs)
    theirs_grads = torch.autograd.grad(theirs.sum(), (z1, z2, log_scale))
    assert torch.max(torch.abs(ours - theirs)) <= TOLERANCE
    for mine, reference in zip(ours_grads, theirs_grads):
        assert torch.max(torch.abs(mine - reference)) <= TOLERANCE


def test_the_mean_over_ranks_of_the_local_losses_is_the_global_batch_loss_with_its_gradient():
    world, batch = 4, 5
    z1, z2, log_scale = _leaves(2, world * batch, 3, seed=7)
    per_rank = [clip_loss(z1[:, w * batch:(w + 1) * batch], z2[:, w * batch:(w + 1) * batch], log_scale.exp(),
                          targets=torch.arange(batch) + w * batch, candidates1=z1, candidates2=z2)
                for w in range(world)]
    averaged = torch.stack(per_rank).mean(dim=0)
    global_loss = clip_loss(z1, z2, log_scale.exp())
    assert torch.max(torch.abs(averaged - global_loss)) <= TOLERANCE
    for mine, reference in zip(torch.autograd.grad(averaged.sum(), (z1, z2, log_scale)),
                               torch.autograd.grad(global_loss.sum(), (z1, z2, log_scale))):
        assert torch.max(torch.abs(mine - reference)) <= TOLERANCE


def test_matched_towers_score_low_and_shuffled_ones_near_log_batch():
    z = torch.randn(1, 64, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    matched = float(clip_loss(z, z, 50.0))
    shuffled = float(clip_loss(z, z[:, torch.randperm(64, generator=torch.Generator().manual_seed(5))], 50.0))
    assert matched < 0.5 < math.log(64) < shuffled


def test_the_log_scale_is_clamped_in_place_to_open_clips_range():
    log_scale = torch.nn.Parameter(torch.tensor([-1.0, 1.0, 7.0], dtype=torch.float64))
    out = clamp_log_logit_scale_(log_scale)
    assert out is log_scale and log_scale.requires_grad
    assert torch.allclose(log_scale.detach(), torch.tensor([0.0, 1.0, math.log(100.0)], dtype=torch.float64))
    assert LOGIT_SCALE_MAX == 100.0 and float(log_scale.detach().exp().max()) == pytest.approx(100.0)
