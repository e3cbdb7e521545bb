"""The spectral heads' losses (ssl_pipeline/heads/spectral.py): per-head references written from the papers'
equations, stacking, lightly's implementations, the population identity of the spectral contrastive loss and the
population forms of VICReg and BarlowTwins, the DDP gradient, and recovery of the closed-form span by training.

Conventions against lightly 1.6 (``lightly.loss``), compared on one process:
- VICRegLoss(lambda_param, mu_param, nu_param, eps) follows the official code as ``vicreg_loss`` does (F.mse_loss
  invariance, unbiased variance with eps inside the square root, hinge averaged over the two branches, covariance
  with B − 1 and the off-diagonal squares divided by r, summed over branches). Its default gather_distributed=False
  computes the variance and covariance terms on the local batch under DDP; the heads always use the global batch.
- BarlowTwinsLoss(lambda_param) standardises with F.batch_norm (biased variance, eps 1e-5) as ``barlowtwins_loss``
  does. Its default λ is 5e-3 (the paper's; the pipeline's default ``lambda_off`` is 1). Under DDP with
  gather_distributed=True it averages per-rank cross-correlations standardised with each rank's own statistics,
  which is not the global batch's C; the heads standardise with the global batch (as the official code's
  SyncBatchNorm + all_reduce does).
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.multiprocessing as mp

from ssl_pipeline.config import HeadsConfig
from ssl_pipeline.heads import spectral
from ssl_pipeline.heads.registry import SPECTRAL_HEAD_CLASSES
from ssl_pipeline.heads.settings import resolve_head_settings
from ssl_pipeline.heads.spectral import (
    SpectralContrastiveHead,
    barlowtwins_loss,
    spectral_contrastive_loss,
    vicreg_loss,
)
from ssl_pipeline.theory.subspaces import fisher_cos2

WEIGHTS = {"sim_coeff": 25.0, "std_coeff": 25.0, "cov_coeff": 1.0}


# --- per-head references from the papers' equations (float64 numpy, one head at a time) ---------------------------


def reference_spectral_contrastive(z: np.ndarray, zp: np.ndarray) -> float:
    b = len(z)
    positive = np.mean([z[i] @ zp[i] for i in range(b)])
    negative = np.mean([(z[i] @ zp[j]) ** 2 for i in range(b) for j in range(b) if i != j])
    return -2 * positive + negative


def reference_vicreg(z: np.ndarray, zp: np.ndarray, sim: float, std: float, cov: float, eps: float = 1e-4) -> float:
    r = z.shape[1]

    def hinge(t):
        return np.mean(np.maximum(0.0, 1 - np.sqrt(t.var(axis=0, ddof=1) + eps)))

    def off_diagonal(t):
        c = np.cov(t, rowvar=False)  # B − 1 normaliser
        return (np.sum(c**2) - np.sum(np.diag(c) ** 2)) / r

    invariance = np.mean((z - zp) ** 2)
    return sim * invariance + std * (hinge(z) + hinge(zp)) / 2 + cov * (off_diagonal(z) + off_diagonal(zp))


def reference_barlowtwins(z: np.ndarray, zp: np.ndarray, lambda_off: float, eps: float = 1e-5) -> float:
    def standardise(t):
        return (t - t.mean(axis=0)) / np.sqrt(t.var(axis=0) + eps)  # biased, as BatchNorm1d in training

    c = standardise(z).T @ standardise(zp) / len(z)
    r = c.shape[0]
    return sum((1 - c[i, i]) ** 2 for i in range(r)) + lambda_off * sum(
        c[i, j] ** 2 for i in range(r) for j in range(r) if i != j
    )


LOSSES = {
    "spectral_contrastive": (lambda z, zp: spectral_contrastive_loss(z, zp), reference_spectral_contrastive),
    "vicreg": (lambda z, zp: vicreg_loss(z, zp, **WEIGHTS), lambda z, zp: reference_vicreg(z, zp, *WEIGHTS.values())),
    "barlowtwins": (lambda z, zp: barlowtwins_loss(z, zp, 0.3), lambda z, zp: reference_barlowtwins(z, zp, 0.3)),
}


def random_branches(g: int = 3, b: int = 12, r: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Correlated pairs with per-output scales around 1, so VICReg's hinge is active for some outputs only."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.5, 1.5, r, dtype=torch.float64)
    z = torch.randn(g, b, r, generator=generator, dtype=torch.float64) * scales
    zp = 0.7 * z + 0.5 * torch.randn(g, b, r, generator=generator, dtype=torch.float64)
    return z, zp


@pytest.mark.parametrize("name", list(LOSSES))
def test_each_loss_matches_the_papers_equations_head_by_head(name):
    loss, reference = LOSSES[name]
    z, zp = random_branches()
    got = loss(z, zp)
    assert got.shape == (3,)
    expected = [reference(z[g].numpy(), zp[g].numpy()) for g in range(3)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", list(LOSSES))
def test_stacked_heads_equal_each_head_alone(name):
    loss, _ = LOSSES[name]
    z, zp = random_branches(g=4, seed=1)
    stacked = loss(z, zp)
    alone = torch.cat([loss(z[g : g + 1], zp[g : g + 1]) for g in range(4)])
    torch.testing.assert_close(stacked, alone, rtol=1e-12, atol=1e-12)


def test_vicreg_and_barlowtwins_equal_lightly():
    lightly_loss = pytest.importorskip("lightly.loss")
    z, zp = random_branches(seed=2)
    vicreg = lightly_loss.VICRegLoss(lambda_param=25.0, mu_param=25.0, nu_param=1.0, eps=1e-4)
    expected = torch.stack([vicreg(z[g], zp[g]) for g in range(3)])
    torch.testing.assert_close(vicreg_loss(z, zp, **WEIGHTS), expected, rtol=1e-5, atol=1e-8)
    for lambda_off in (5e-3, 1.0):
        barlow = lightly_loss.BarlowTwinsLoss(lambda_param=lambda_off)
        expected = torch.stack([barlow(z[g], zp[g]) for g in range(3)])
        torch.testing.assert_close(barlowtwins_loss(z, zp, lambda_off), expected, rtol=1e-5, atol=1e-8)


# --- population forms --------------------------------------------------------------------------------------------


def pair_covariances(d: int, eigenvalues, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random SPD Σ_T and Σ_Δ with the given generalised eigenvalues of (Σ_Δ, Σ_T) (in [0, 2], so the pair's
    joint covariance [[Σ_T, Σ_T − Σ_Δ], [Σ_T − Σ_Δ, Σ_T]] is PSD)."""
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    sigma_t = q @ np.diag(rng.uniform(0.5, 2.0, d)) @ q.T
    root = scipy.linalg.sqrtm(sigma_t).real
    u = np.linalg.qr(rng.standard_normal((d, d)))[0]
    return sigma_t, root @ u @ np.diag(eigenvalues) @ u.T @ root


def sample_pairs(sigma_t: np.ndarray, sigma_delta: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n centred Gaussian pairs with Cov(x) = Cov(x⁺) = Σ_T and E[x x⁺ᵀ] = Σ_T − Σ_Δ."""
    d = len(sigma_t)
    cross = sigma_t - sigma_delta
    joint = np.block([[sigma_t, cross], [cross, sigma_t]])
    xx = np.random.default_rng(seed).standard_normal((n, 2 * d)) @ np.linalg.cholesky(joint + 1e-12 * np.eye(2 * d)).T
    return xx[:, :d], xx[:, d:]


def test_spectral_contrastive_batch_loss_is_unbiased_for_the_population_loss():
    d, r, b, batches = 5, 3, 4, 40_000
    sigma_t, sigma_delta = pair_covariances(d, [0.1, 0.4, 0.9, 1.2, 1.6], seed=3)
    a = np.random.default_rng(4).standard_normal((d, r)) / np.sqrt(d)
    x, xp = sample_pairs(sigma_t, sigma_delta, b * batches, seed=5)
    z = torch.from_numpy(x @ a).view(batches, b, r)  # batches on the head axis: one loss per batch
    zp = torch.from_numpy(xp @ a).view(batches, b, r)
    per_batch = spectral_contrastive_loss(z, zp).numpy()
    population = -2 * np.trace(a.T @ (sigma_t - sigma_delta) @ a) + np.sum((a.T @ sigma_t @ a) ** 2)
    standard_error = per_batch.std(ddof=1) / np.sqrt(batches)
    assert abs(per_batch.mean() - population) < 5 * standard_error
    # The check has power: counting the i = j pairs in the second term (a biased estimator) is rejected.
    cross = (z @ zp.transpose(1, 2)).numpy()
    with_diagonal = -2 * np.einsum("gii->g", cross) / b + np.sum(cross**2, axis=(1, 2)) / b**2
    assert abs(with_diagonal.mean() - population) > 5 * standard_error


def test_vicreg_and_barlowtwins_approach_their_population_forms():
    """The module docstring's forms: r·L_VICReg = 2λ tr(AᵀΣ_Δ A) + μ Σ_j (1 − √(S_jj + eps))₊ + 2ν Σ_{i≠j} S_ij² and
    L_BT = Σ_i (1 − C_ii)² + λ_off Σ_{i≠j} C_ij², C = D^{−1/2}(S − AᵀΣ_Δ A)D^{−1/2}, S = AᵀΣ_T A, D = diag(S)."""
    d, r, b, batches, lambda_off = 5, 3, 20_000, 16, 0.5
    sigma_t, sigma_delta = pair_covariances(d, [0.1, 0.4, 0.9, 1.2, 1.6], seed=6)
    a = np.random.default_rng(7).standard_normal((d, r))
    s = a.T @ sigma_t @ a
    a = a / np.sqrt(np.diag(s)) * np.array([0.5, 0.9, 1.4])  # output stds 0.5, 0.9, 1.4: the hinge acts on two
    s, invariant = a.T @ sigma_t @ a, a.T @ sigma_delta @ a
    lam, mu, nu = WEIGHTS.values()

    def off(m):
        return np.sum(m**2) - np.sum(np.diag(m) ** 2)

    hinge = np.sum(np.maximum(0, 1 - np.sqrt(np.diag(s) + 1e-4)))
    vicreg = (2 * lam * np.trace(invariant) + mu * hinge + 2 * nu * off(s)) / r
    scale = 1 / np.sqrt(np.diag(s))
    c = scale[:, None] * (s - invariant) * scale[None, :]
    barlow = np.sum((1 - np.diag(c)) ** 2) + lambda_off * off(c)

    x, xp = sample_pairs(sigma_t, sigma_delta, b * batches, seed=8)
    z, zp = torch.from_numpy(x @ a).view(batches, b, r), torch.from_numpy(xp @ a).view(batches, b, r)
    for loss, population in ((vicreg_loss(z, zp, **WEIGHTS), vicreg), (barlowtwins_loss(z, zp, lambda_off), barlow)):
        per_batch = loss.numpy()
        standard_error = per_batch.std(ddof=1) / np.sqrt(batches)
        assert abs(per_batch.mean() - population) < 5 * standard_error + 1e-3 * abs(population)


# --- DDP ---------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def head_settings(method: str) -> dict:
    return asdict(resolve_head_settings(HeadsConfig(r=3), method, 1.0, 0))


def _ddp_worker(rank: int, world: int, port: int, x: torch.Tensor, xp: torch.Tensor, out_file: str):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    gather = spectral.gather_with_gradient
    results = {}
    try:
        for method, cls in SPECTRAL_HEAD_CLASSES.items():
            for variant in ("global", "local"):  # local: each rank's own statistics, the control
                spectral.gather_with_gradient = gather if variant == "global" else (lambda t: (t, 0))
                head = cls(head_settings(method), x.shape[1], torch.zeros(x.shape[1]), torch.ones(x.shape[1]), 2)
                b = len(x) // world
                losses = head.head_losses(x[rank * b : (rank + 1) * b], xp[rank * b : (rank + 1) * b])
                losses.sum().backward()
                grad = head.weight.grad.clone()
                dist.all_reduce(grad)  # what DDP does with the ranks' gradients: average them
                every_loss = [torch.zeros_like(losses) for _ in range(world)]
                dist.all_gather(every_loss, losses.detach())
                results[method, variant] = (torch.stack(every_loss), grad / world)
    finally:
        spectral.gather_with_gradient = gather
    if rank == 0:
        torch.save(results, out_file)
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_loss_and_gradient_equal_the_single_process_ones_over_the_global_batch(tmp_path):
    generator = torch.Generator().manual_seed(0)
    x = 0.8 * torch.randn(16, 8, generator=generator)  # output stds below 1: VICReg's hinge acts
    xp = 0.6 * x + 0.5 * torch.randn(16, 8, generator=generator)
    out_file = str(tmp_path / "ddp.pt")
    mp.spawn(_ddp_worker, args=(2, _free_port(), x, xp, out_file), nprocs=2, join=True)
    ddp = torch.load(out_file, weights_only=False)
    for method, cls in SPECTRAL_HEAD_CLASSES.items():
        single = cls(head_settings(method), 8, torch.zeros(8), torch.ones(8), 2)
        losses = single.head_losses(x, xp)
        losses.sum().backward()
        rank_losses, grad = ddp[method, "global"]
        for rank_loss in rank_losses:  # every rank computes the global batch's loss
            torch.testing.assert_close(rank_loss, losses.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, single.weight.grad, rtol=1e-4, atol=1e-6)
        _, local_grad = ddp[method, "local"]
        assert not torch.allclose(local_grad, single.weight.grad, rtol=1e-2, atol=1e-4), method


# --- training recovers the closed form ---------------------------------------------------------------------------


def test_training_spectral_contrastive_recovers_the_generalised_eigenvectors():
    d, r = 6, 2
    eigenvalues = [0.1, 0.25, 0.8, 0.9, 1.0, 1.3]
    sigma_t, sigma_delta = pair_covariances(d, eigenvalues, seed=9)
    x, xp = (torch.from_numpy(t).float() for t in sample_pairs(sigma_t, sigma_delta, 4096, seed=10))
    settings = head_settings("spectral_contrastive") | {"r": r}
    head = SpectralContrastiveHead(settings, d, torch.zeros(d), torch.ones(d))
    optimizer = torch.optim.Adam(head.parameters(), lr=0.02)
    generator = torch.Generator().manual_seed(0)
    for step in range(400):
        if step == 300:  # a smaller step at the end, so minibatch noise does not blur the variances checked below
            optimizer.param_groups[0]["lr"] = 0.004
        batch = torch.randint(0, len(x), (512,), generator=generator)
        optimizer.zero_grad()
        head.head_losses(x[batch], xp[batch]).sum().backward()
        optimizer.step()
    a = head.feature_space_weight()[0].detach().double().numpy()
    target = scipy.linalg.eigh(sigma_delta, sigma_t)[1][:, :r]
    assert fisher_cos2(a, target) >= 0.95
    # and the closed form's output variances: AᵀΣ_T A ≈ diag(1 − λ_1, 1 − λ_2) up to rotation
    np.testing.assert_allclose(np.linalg.eigvalsh(a.T @ sigma_t @ a), [0.75, 0.9], atol=0.05)
