"""Losses as pure functions (docs/theory.md, "InfoNCE", "SimSiam") and the DDP gather's gradient."""

from __future__ import annotations

import math
import os
import socket
from dataclasses import asdict

import pytest
import torch
import torch.multiprocessing as mp

from ssl_pipeline.config import HeadsConfig
from ssl_pipeline.heads.losses import info_nce_loss, orthogonality_penalty, simsiam_loss
from ssl_pipeline.heads.modules import InfoNCEHead
from ssl_pipeline.heads.settings import resolve_head_settings


def reference_info_nce(z: torch.Tensor, zp: torch.Tensor, tau: float, cosine: bool) -> float:
    """The docs/theory.md formula written as a plain double loop."""
    def s(a, b):
        return float(a @ b / (a.norm() * b.norm())) if cosine else float(a @ b)

    total = 0.0
    for i in range(len(z)):
        denominator = sum(math.exp(s(z[i], zp[j]) / tau) for j in range(len(zp)))
        total += -math.log(math.exp(s(z[i], zp[i]) / tau) / denominator)
    return total / len(z)


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_info_nce_matches_the_formula(similarity):
    generator = torch.Generator().manual_seed(0)
    z, zp = torch.randn(2, 7, 3, generator=generator), torch.randn(2, 7, 3, generator=generator)
    losses = info_nce_loss(z, zp, torch.arange(7), tau=0.5, similarity=similarity)
    assert losses.shape == (2,)
    for g in range(2):
        assert float(losses[g]) == pytest.approx(reference_info_nce(z[g], zp[g], 0.5, similarity == "cosine"), rel=1e-5)


def test_info_nce_is_low_when_positives_match_and_high_when_shuffled():
    z = torch.randn(1, 64, 8, generator=torch.Generator().manual_seed(1))
    matched = info_nce_loss(z, z, torch.arange(64), tau=0.1)
    shuffled = info_nce_loss(z, z[:, torch.randperm(64)], torch.arange(64), tau=0.1)
    assert float(matched) < 1.0 < math.log(64) / 2 < float(shuffled)


def test_simsiam_stops_the_gradient_through_the_targets():
    z = torch.randn(1, 16, 4, requires_grad=True)
    zp = torch.randn(1, 16, 4, requires_grad=True)
    predictor = torch.eye(4)
    loss = simsiam_loss(z @ predictor + 0.0 * zp, zp.detach() @ predictor, z, zp)
    loss.sum().backward()
    # zp enters only as a stop-gradient target (and with weight 0 above): no gradient may reach it
    assert torch.count_nonzero(zp.grad) == 0
    assert float(simsiam_loss(z, z, z, z).detach()) == pytest.approx(-1.0, abs=1e-6)


def test_orthogonality_penalty_is_zero_only_for_orthonormal_columns():
    q = torch.linalg.qr(torch.randn(3, 10, 4)).Q
    assert torch.allclose(orthogonality_penalty(q), torch.zeros(3), atol=1e-10)
    assert float(orthogonality_penalty(2 * q[:1])[0]) == pytest.approx(4 * 9.0, rel=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CASES = {"plain": (False, False), "symmetric": (True, False), "detached": (False, True)}


def _ddp_worker(rank: int, world: int, port: int, x: torch.Tensor, xp: torch.Tensor, out_file: str):
    import torch.distributed as dist

    from ssl_pipeline.heads import modules

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    correct = modules.gather_with_gradient

    def detached(t):  # the wrong way: remote negatives without gradient
        pieces = [torch.zeros_like(t) for _ in range(world)]
        dist.all_gather(pieces, t.detach())
        pieces[rank] = t
        return torch.cat(pieces, dim=1), rank * t.shape[1]

    gradients = {}
    for name, (symmetric, detach) in CASES.items():
        modules.gather_with_gradient = detached if detach else correct
        head = InfoNCEHead(head_settings(symmetric), x.shape[1], torch.zeros(x.shape[1]), torch.ones(x.shape[1]))
        b = len(x) // world
        head.head_losses(x[rank * b : (rank + 1) * b], xp[rank * b : (rank + 1) * b]).sum().backward()
        grad = head.weight.grad.clone()
        dist.all_reduce(grad)  # what DDP does with the ranks' gradients: average them
        gradients[name] = grad / world
    modules.gather_with_gradient = correct
    if rank == 0:
        torch.save(gradients, out_file)
    dist.destroy_process_group()


def head_settings(symmetric: bool) -> dict:
    heads = HeadsConfig(r=3)
    heads.infonce.symmetric = symmetric
    return asdict(resolve_head_settings(heads, "infonce", 1.0, 0))


@pytest.mark.slow
def test_ddp_gradient_equals_single_process_gradient_over_the_global_batch(tmp_path):
    generator = torch.Generator().manual_seed(0)
    x, xp = torch.randn(16, 6, generator=generator), torch.randn(16, 6, generator=generator)
    out_file = str(tmp_path / "gradients.pt")
    mp.spawn(_ddp_worker, args=(2, _free_port(), x, xp, out_file), nprocs=2, join=True)
    ddp = torch.load(out_file, weights_only=True)
    for name, (symmetric, _) in CASES.items():
        single = InfoNCEHead(head_settings(symmetric), 6, torch.zeros(6), torch.ones(6))
        single.head_losses(x, xp).sum().backward()
        if name == "detached":  # the control: detaching remote negatives gives a different gradient
            assert not torch.allclose(ddp[name], single.weight.grad, rtol=1e-3, atol=1e-5)
        else:
            torch.testing.assert_close(ddp[name], single.weight.grad, rtol=1e-4, atol=1e-6)
