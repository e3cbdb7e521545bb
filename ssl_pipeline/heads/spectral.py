"""Spectral heads: spectral contrastive, VICReg and BarlowTwins losses over stacks of G linear heads, and their
LightningModules (docs/theory.md, "Spectral view of the pairs").

Shapes as in losses.py: z, z⁺ [G, B, r] → one loss per head, [G]. The three losses are functions of the batch's
second moments, so under DDP the heads gather both branches and every rank computes the global batch's loss
(`SpectralHead`).

Population forms (B → ∞, eps → 0). x, x⁺ centred, both with covariance Σ_T; Σ_Δ = ½E[(x − x⁺)(x − x⁺)ᵀ], so the
cross-covariance is C = E[x x⁺ᵀ] = Σ_T − Σ_Δ (symmetric pairs). Whitened: Â = Σ_T^{1/2}A (columns â_j),
N = Σ_T^{−1/2} Σ_Δ Σ_T^{−1/2} with eigenpairs (λ_k, w_k), λ_1 ≤ λ_2 ≤ …, M = I − N, m_k = 1 − λ_k. The λ_k are the
generalised eigenvalues of (Σ_Δ, Σ_T), Σ_Δ v_k = λ_k Σ_T v_k with v_k = Σ_T^{−1/2} w_k, and the closed-form span is
V_r = span(v_1 … v_r). For δ-pairs λ_k = 1 − δρ_k, ρ_k the eigenvalues of (Σ_B, Σ_T): V_q = S_F for every δ > 0.

**Spectral contrastive** (exact for every setting): L = −2tr(ÂᵀMÂ) + ‖ÂᵀÂ‖²_F = ‖ÂÂᵀ − M‖²_F − ‖M‖²_F, minimised
(Eckart–Young) by ÂÂᵀ = Σ_{k≤r} (m_k)₊ w_k w_kᵀ: col(A) = span of the v_k, k ≤ r, with λ_k < 1 (unique if
λ_r < λ_{r+1}); AᵀΣ_T A has eigenvalues (1 − λ_k)₊ (any rotation of the outputs is as good); minimum
−Σ_{k≤r} (1 − λ_k)₊². Directions with λ_k ≥ 1 get weight 0 (δ-pairs, r > q: the head has rank q).

**VICReg** (λ, μ, ν = sim, std, cov coefficients; s_j = ‖â_j‖ the std of output j):
r·L = 2λ tr(ÂᵀNÂ) + μ Σ_j (1 − s_j)₊ + 2ν Σ_{i≠j} (â_iᵀâ_j)².
- Hinge binding (all s_j = 1): among unit-std heads the global optimum is ÂÂᵀ = Σ_{k≤r} p_k w_k w_kᵀ with
  p_k = 1 + (λ/2ν)(λ̄ − λ_k), λ̄ = mean(λ_1 … λ_r) (von Neumann's trace inequality, Schur–Horn for the unit
  diagonal, then water-filling), if λ_r − λ̄ < 2ν/λ: col(A) = V_r exactly, but the outputs are correlated (ÂᵀÂ
  has unit diagonal and eigenvalues p_k) unless λ_1 = … = λ_r. If λ_r − λ̄ ≥ 2ν/λ the largest λ's starve (rank < r).
  This is a KKT point of the full loss iff λ̄ ≤ μ/(4λ) (the smooth part's derivative in every s_j is 4λλ̄).
- Hinge slack (λ̄ > μ/(4λ); at 25/25/1 λ̄ > 1/4, i.e. δρ̄ < 3/4 for δ-pairs): stds fall below 1; no closed form
  derived. Duplicating every column on v_1 (rank 1, std s) is a local minimum iff λ(λ_2 − λ_1) ≥ 2νr s², with
  s = min(1, root of 4λλ_1 s + 8ν(r − 1)s³ = μ). For r = 2, minimising the population loss numerically (17 cases,
  ν ∈ {0.25, 1, 5, 25}) gave col(A) = V_2 exactly whenever duplication was not a local minimum, rank 1 otherwise
  (e.g. λ = (0.5, 0.6) at 25/25/1: both columns on v_1 with std 0.48). r ≥ 3 (partial duplication) is not derived.
- ν = 0: every column on v_1 when λ_1 < λ_2.

**BarlowTwins**: with S = AᵀΣ_T A, D = diag(S) and R = D^{−1/2} S D^{−1/2} the outputs' correlation matrix,
C = D^{−1/2}(S − AᵀΣ_Δ A)D^{−1/2} = R − D^{−1/2}AᵀΣ_Δ A D^{−1/2} (= I − … only for decorrelated outputs), i.e.
C = UᵀMU with unit columns u_j = â_j/‖â_j‖, and L = Σ_i (1 − u_iᵀMu_i)² + λ_off Σ_{i≠j} (u_iᵀMu_j)²: scale-free.
- U = (w_1 … w_r) is stationary for every λ_off (C = diag(m_k), L = Σ_{k≤r} λ_k²); it is a local minimum iff for
  all i < j ≤ r: λ_off[m_i²(1 − m_i) − m_j²(1 − m_j)] ≥ (m_i − m_j)(1 − m_i)(1 − m_j) (matched the numerical Hessian
  in 40 random cases at r = 3). When m_i²(1 − m_i) ≤ m_j²(1 − m_j) (m_i near 1) no λ_off makes it one; the
  optimum then tilts the columns (inside V_2 for r = 2, numerically).
- λ_off → ∞ (C diagonal): optimum span V_r if M ⪰ 0, m_r > 0 and m_1 ≤ 1 (δ-pairs with r ≤ q): the M^{1/2}u_i
  are orthogonal, and Schur–Horn with majorisation puts the best such set in span(w_1 … w_r).
- Duplicating every column on v_1 (rank 1; loss r(1 − m_1)² + λ_off r(r − 1)m_1² against Σ_{k≤r}(1 − m_k)² spread)
  is a local minimum iff λ_off ≤ (1 − m_1)(m_1 − m_2) / (m_1((r − 1)m_1 + m_2)) (and m_1 ≤ 1/(1 + λ_off(r − 1)),
  else duplicates sit at m = 1/(1 + λ_off(r − 1))). For r = 2 numerics (30 cases, λ_off ∈ [0.003, 10]) gave
  col(A) = V_2 exactly whenever duplication was not a local minimum, rank 1 otherwise; e.g. m = (0.9, 0.5):
  threshold 0.032, so the paper's 5e-3 duplicates. r ≥ 3 (partial duplication) is not derived.

These are population statements; at finite B the batch estimates of VICReg's and BarlowTwins' statistics are biased.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_pipeline.heads.distributed import gather_with_gradient
from ssl_pipeline.heads.modules import LinearHead


def _off_diagonal_squares(m: Tensor) -> Tensor:
    """Σ_{i≠j} m_ij² of [G, r, r] → [G]."""
    return (m**2).sum(dim=(-1, -2)) - (torch.diagonal(m, dim1=-2, dim2=-1) ** 2).sum(dim=-1)


def spectral_contrastive_loss(z: Tensor, z_positive: Tensor) -> Tensor:
    """Spectral contrastive loss (HaoChen et al. 2021): −2 E_i[z_iᵀz⁺_i] + E_{i≠j}[(z_iᵀz⁺_j)²].

    z, z⁺ [G, B, r] → [G]. The second term averages the B(B − 1) off-diagonal (ordered) pairs of the batch: z_i and
    z⁺_j of different pairs are independent, so the batch loss is an unbiased estimate of the population loss
    −2tr(AᵀCA) + ‖AᵀΣ_T A‖²_F, C = E[x x⁺ᵀ] = Σ_T − Σ_Δ (second moments about the head's centre).
    """
    b = z.shape[1]
    cross = z @ z_positive.transpose(-1, -2)
    positive = torch.diagonal(cross, dim1=-2, dim2=-1).sum(dim=-1) / b
    return -2 * positive + _off_diagonal_squares(cross) / (b * (b - 1))


def vicreg_loss(
    z: Tensor, z_positive: Tensor, sim_coeff: float, std_coeff: float, cov_coeff: float, eps: float = 1e-4
) -> Tensor:
    """VICReg (Bardes et al. 2022), the official code's conventions: z, z⁺ [G, B, r] → [G].

    λ·mean_{i,j}(z_ij − z⁺_ij)² (F.mse_loss) + μ·½[h(z) + h(z⁺)], h = mean_j relu(1 − √(Var z_j + eps)),
    + ν·[c(z) + c(z⁺)], c = Σ_{i≠j} Cov_ij² / r; Var and Cov over the batch with the B − 1 normaliser. Equal to
    lightly's VICRegLoss(λ, μ, ν, eps=eps) on one process; lightly computes the variance and covariance terms on the
    local batch unless gather_distributed=True, where these heads always use the global batch.
    """
    b, r = z.shape[1], z.shape[2]
    invariance = ((z - z_positive) ** 2).mean(dim=(1, 2))

    def variance_and_covariance(t: Tensor) -> tuple[Tensor, Tensor]:
        t = t - t.mean(dim=1, keepdim=True)
        cov = t.transpose(-1, -2) @ t / (b - 1)
        std = torch.sqrt(torch.diagonal(cov, dim1=-2, dim2=-1) + eps)
        return F.relu(1 - std).mean(dim=-1), _off_diagonal_squares(cov) / r

    hinge, cov = variance_and_covariance(z)
    hinge_positive, cov_positive = variance_and_covariance(z_positive)
    return sim_coeff * invariance + std_coeff * 0.5 * (hinge + hinge_positive) + cov_coeff * (cov + cov_positive)


def barlowtwins_loss(z: Tensor, z_positive: Tensor, lambda_off: float, eps: float = 1e-5) -> Tensor:
    """BarlowTwins (Zbontar et al. 2021): Σ_i (1 − C_ii)² + λ_off Σ_{i≠j} C_ij², C = z̃ᵀz̃⁺ / B. z, z⁺ [G, B, r] → [G].

    z̃ standardises each output over the batch as the official code's BatchNorm1d(affine=False) in training mode:
    (z − mean) / √(biased Var + eps), eps = 1e-5 (lightly's F.batch_norm is the same).
    """
    b = z.shape[1]

    def standardise(t: Tensor) -> Tensor:
        t = t - t.mean(dim=1, keepdim=True)
        return t / torch.sqrt((t**2).mean(dim=1, keepdim=True) + eps)

    c = standardise(z).transpose(-1, -2) @ standardise(z_positive) / b
    on_diagonal = ((1 - torch.diagonal(c, dim1=-2, dim2=-1)) ** 2).sum(dim=-1)
    return on_diagonal + lambda_off * _off_diagonal_squares(c)


class SpectralHead(LinearHead):
    """Base class: a loss of the global batch's second moments of z = f(x) and z⁺ = f(x⁺).

    Under DDP (docs/theory.md, "Under DDP") both branches are gathered with `gather_with_gradient`, so every rank
    computes the same loss L of the global batch. Its backward sums, for each rank's piece z_w, the W identical
    ∂L/∂z_w back to rank w, whose weight gradient is then W·(∂L/∂z_w)(∂z_w/∂A); DDP's average over ranks gives
    Σ_w (∂L/∂z_w)(∂z_w/∂A) = ∂L/∂A, the single-process gradient on the global batch.
    """

    def pair_loss(self, z: Tensor, z_positive: Tensor) -> Tensor:
        """The loss of [G, M, r] global branches, [G]."""
        raise NotImplementedError

    def output_losses(self, z: Tensor, z_positive: Tensor) -> Tensor:
        z, _ = gather_with_gradient(z)
        z_positive, _ = gather_with_gradient(z_positive)
        return self.pair_loss(z, z_positive)

    def batched_loss_key(self) -> Optional[tuple]:
        """Heads of one method, r and loss weights share one loss call in a grid: the losses act on each [B, r]
        slice of the stacked [G, B, r] outputs alone (a fit of the digits main job's 45 heads: 22 s → 16 s)."""
        s = self.settings
        return (s.method, s.r, s.loss_weights)

    def batched_losses(self, z: Tensor, z_positive: Tensor, heads: list[LinearHead]) -> Tensor:
        """The losses [G] of heads of equal ``batched_loss_key`` from their stacked outputs (equal weights, so this
        head's settings serve them all)."""
        return self.output_losses(z, z_positive)


class SpectralContrastiveHead(SpectralHead):
    """Linear spectral contrastive head; its optimum is the closed form, col(A) = V_r (module docstring)."""

    def pair_loss(self, z: Tensor, z_positive: Tensor) -> Tensor:
        return spectral_contrastive_loss(z, z_positive)


class VICRegHead(SpectralHead):
    """Linear VICReg head (``sim_coeff``, ``std_coeff``, ``cov_coeff``). Its optimum spans V_r only for some weights:
    at unit stds iff λ_r − λ̄ < 2ν/λ; duplicated columns are a local optimum iff λ(λ_2 − λ_1) ≥ 2νr s²
    (module docstring)."""

    def pair_loss(self, z: Tensor, z_positive: Tensor) -> Tensor:
        s = self.settings
        return vicreg_loss(z, z_positive, s.sim_coeff, s.std_coeff, s.cov_coeff)


class BarlowTwinsHead(SpectralHead):
    """Linear BarlowTwins head (``lambda_off``). Duplicated columns on v_1 are a local optimum iff
    λ_off ≤ (1 − m_1)(m_1 − m_2)/(m_1((r − 1)m_1 + m_2)); for r = 2 the optimum spanned V_2 otherwise (numerically;
    module docstring)."""

    def pair_loss(self, z: Tensor, z_positive: Tensor) -> Tensor:
        return barlowtwins_loss(z, z_positive, self.settings.lambda_off)
