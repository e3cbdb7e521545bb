"""The two-modality mixture of the ``clip`` preset (docs/theory.md, "CLIP-GMM"): one modality's population
parameters, its ground-truth subspaces (shared Fisher, private Fisher, noise block) and draws.

Each modality m has d_m coordinates in three mutually orthogonal blocks, then one random rotation:

- **shared** (2 q_s coordinates, q_s = K_s − 1): the signal block of ``fisher_vs_means_parameters`` for the K_s
  shared classes: q_s mean axes and q_s partner axes, in which Σ turns the Fisher directions away from the means;
- **private** (q_m = K_m − 1 coordinates): a regular simplex of the K_m private means, isotropic variance
  signal_std²;
- **noise** (d_noise = d_m − 2 q_s − q_m coordinates): no class signal, isotropic variance nuisance_std², the
  largest of the modality, so PCA picks it.

x = U_s a_{k_s} + U_p b_{k_m} + ε, ε ~ N(0, Σ), Σ block-diagonal across the blocks; k_s and k_m are independent
and uniform.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import eigh
from scipy.stats import ortho_group

from ssl_pipeline.theory.gmm import FISHER_VS_MEANS_PCA_GAP, fisher_vs_means_parameters, regular_simplex
from ssl_pipeline.theory.subspaces import fisher_cos2, fisher_energy, fisher_subspace, orthonormal_basis

ENERGY_BLOCKS = ("shared_fisher", "shared_rest", "private", "noise")
"""The names of ``ModalityParameters.energy_blocks``: four mutually orthogonal subspaces that together span R^d."""


def clip_min_dim(k_s: int, k_m: int) -> int:
    """The least d of a modality: its shared (2 q_s) and private (q_m) blocks plus a noise block of q_s + q_m
    dimensions, so that the top-(q_s + q_m) PCA subspace fits inside the noise block."""
    return 3 * (k_s - 1) + 2 * (k_m - 1)


def private_total_variance(k_m: int, private_separation: float, signal_std: float) -> float:
    """The variance of Σ_T along every private direction: signal_std² (1 + private_separation² / (2 K_m)) (a
    regular simplex of edge e has between-class variance e² / (2K) along each of its K − 1 axes)."""
    return signal_std**2 * (1.0 + private_separation**2 / (2.0 * k_m))


def _between(means: np.ndarray) -> np.ndarray:
    """Σ_B = (1/K) Σ_k (μ_k − μ̄)(μ_k − μ̄)ᵀ of equally weighted means [K, d]."""
    centred = means - means.mean(axis=0)
    return centred.T @ centred / len(means)


@dataclass
class ModalityParameters:
    """One modality of the CLIP-GMM: x | (k_s, k_m) ~ N(shared_means[k_s] + private_means[k_m], covariance), k_s
    and k_m independent and uniform.

    shared_means [K_s, d] (centred, inside the shared block), private_means [K_m, d] (centred, inside the private
    block), covariance Σ [d, d] (block-diagonal across the blocks); the blocks as orthonormal bases:
    shared_block [d, 2 q_s], private_block [d, q_m], noise_block [d, d_noise] (mutually orthogonal, together R^d).
    """

    shared_means: np.ndarray
    private_means: np.ndarray
    covariance: np.ndarray
    shared_block: np.ndarray
    private_block: np.ndarray
    noise_block: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.covariance.shape[0])

    @property
    def k_shared(self) -> int:
        return len(self.shared_means)

    @property
    def k_private(self) -> int:
        return len(self.private_means)

    def shared_between(self) -> np.ndarray:
        """Between-class covariance w.r.t. k_s [d, d]: Cov(E[x | k_s])."""
        return _between(self.shared_means)

    def private_between(self) -> np.ndarray:
        """Between-class covariance w.r.t. k_m [d, d]: Cov(E[x | k_m])."""
        return _between(self.private_means)

    def shared_within(self) -> np.ndarray:
        """Within-class covariance w.r.t. k_s: Σ + the private means' spread (k_m varies inside a shared class)."""
        return self.covariance + self.private_between()

    def private_within(self) -> np.ndarray:
        """Within-class covariance w.r.t. k_m: Σ + the shared means' spread."""
        return self.covariance + self.shared_between()

    def total_covariance(self) -> np.ndarray:
        """Σ_T = Σ + Σ_B(k_s) + Σ_B(k_m) (k_s and k_m independent)."""
        return self.covariance + self.shared_between() + self.private_between()

    def shared_fisher_basis(self) -> np.ndarray:
        """The shared Fisher subspace [d, q_s]: span{Σ_W(k_s)⁻¹(E[x | k_s] − E x)}, from the population parameters."""
        return fisher_subspace(self.shared_means, self.shared_within(), np.ones(self.k_shared))

    def private_fisher_basis(self) -> np.ndarray:
        """The private Fisher subspace [d, q_m]: span{Σ_W(k_m)⁻¹(E[x | k_m] − E x)}."""
        return fisher_subspace(self.private_means, self.private_within(), np.ones(self.k_private))

    def shared_means_basis(self) -> np.ndarray:
        """span{E[x | k_s] − E x} [d, q_s]: the shared class means (far from the shared Fisher subspace)."""
        return orthonormal_basis(self.shared_means.T)[:, : self.k_shared - 1]

    def private_means_basis(self) -> np.ndarray:
        """span{E[x | k_m] − E x} [d, q_m] (equal to the private Fisher subspace: isotropic private block)."""
        return orthonormal_basis(self.private_means.T)[:, : self.k_private - 1]

    def pca_basis(self, r: int) -> np.ndarray:
        """The top-r eigenvectors of Σ_T [d, r]."""
        return np.linalg.eigh(self.total_covariance())[1][:, ::-1][:, :r]

    def energy_blocks(self) -> dict[str, np.ndarray]:
        """Four mutually orthogonal orthonormal bases that together span R^d (``ENERGY_BLOCKS``): the shared Fisher
        subspace [d, q_s], the rest of the shared block [d, q_s], the private block [d, q_m] (= the private Fisher
        subspace) and the noise block [d, d_noise]. ``block_energies`` of any head over them sums to 1."""
        fisher = self.shared_fisher_basis()
        inside = self.shared_block.T @ fisher  # [2 q_s, q_s]: the Fisher basis in shared-block coordinates
        complement = np.linalg.svd(inside, full_matrices=True)[0][:, fisher.shape[1]:]
        return {"shared_fisher": fisher, "shared_rest": self.shared_block @ complement,
                "private": self.private_block, "noise": self.noise_block}

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw k_s, k_m independently and uniformly and x | (k_s, k_m) ~ N(μ[k_s, k_m], Σ): features [n, d]
        float32, shared labels [n] and private labels [n] int64."""
        shared = rng.integers(self.k_shared, size=n)
        private = rng.integers(self.k_private, size=n)
        factor = np.linalg.cholesky(self.covariance)
        noise = rng.standard_normal((n, self.dim)) @ factor.T
        x = self.shared_means[shared] + self.private_means[private] + noise
        return x.astype(np.float32), shared.astype(np.int64), private.astype(np.int64)


def clip_modality_parameters(k_s: int, k_m: int, d: int, separation: float, private_separation: float,
                             signal_std: float, nuisance_std: float, rng: np.random.Generator,
                             rotate: bool = True) -> ModalityParameters:
    """One modality of the CLIP-GMM (docs/theory.md, "CLIP-GMM"), coordinates [shared | private | noise] then one
    random rotation of all d axes (``rotate``).

    - Shared block (2 q_s coordinates, q_s = K_s − 1): the signal block of
      ``fisher_vs_means_parameters(K_s, 3 q_s, separation, signal_std, nuisance_std, rng)`` — its means and its
      covariance restricted to the mean and partner axes (its own nuisance axes are dropped: the noise block plays
      their part). The shared Fisher subspace is q_s-dimensional inside it, at cos² 0.15 from the shared means,
      and every pair of shared means is at Mahalanobis distance ≥ ``separation``.
    - Private block (q_m = K_m − 1 coordinates): a regular simplex of edge ``private_separation`` · signal_std,
      variance signal_std² along every axis (so Mahalanobis distance ``private_separation`` between any two).
    - Noise block (d − 2 q_s − q_m ≥ q_s + q_m coordinates): variance nuisance_std².

    ValueError when d < ``clip_min_dim``, when nuisance_std is below the least ``fisher_vs_means`` needs, or when
    the private block's total variance exceeds FISHER_VS_MEANS_PCA_GAP · nuisance_std² (PCA must take the noise).
    """
    q_s, q_m = k_s - 1, k_m - 1
    if k_s < 2 or k_m < 2:
        raise ValueError(f"the CLIP-GMM needs at least 2 shared and 2 private classes, got K_s={k_s}, K_m={k_m}")
    if d < clip_min_dim(k_s, k_m):
        raise ValueError(f"d={d} is below 3(K_s − 1) + 2(K_m − 1) = {clip_min_dim(k_s, k_m)} for K_s={k_s}, "
                         f"K_m={k_m} (shared block 2q_s, private block q_m, noise block ≥ q_s + q_m)")
    if private_separation <= 0:
        raise ValueError(f"private_separation must be > 0, got {private_separation}")
    private_variance = private_total_variance(k_m, private_separation, signal_std)
    if private_variance > FISHER_VS_MEANS_PCA_GAP * nuisance_std**2:
        raise ValueError(f"the private block's variance {private_variance:.3g} exceeds {FISHER_VS_MEANS_PCA_GAP} × "
                         f"nuisance_std² = {FISHER_VS_MEANS_PCA_GAP * nuisance_std**2:.3g}: PCA would find it")
    shared = fisher_vs_means_parameters(k_s, 3 * q_s, separation, signal_std, nuisance_std, rng)
    s, p = 2 * q_s, 2 * q_s + q_m
    shared_means = np.zeros((k_s, d))
    shared_means[:, :s] = shared.means[:, :s]
    private_means = np.zeros((k_m, d))
    private_means[:, s:p] = regular_simplex(k_m, private_separation * signal_std)
    covariance = np.zeros((d, d))
    covariance[:s, :s] = shared.covariance[:s, :s]
    covariance[s:p, s:p] = np.eye(q_m) * signal_std**2
    covariance[p:, p:] = np.eye(d - p) * nuisance_std**2
    axes = np.eye(d)
    if rotate:
        rotation = ortho_group.rvs(d, random_state=rng)
        shared_means, private_means = shared_means @ rotation.T, private_means @ rotation.T
        covariance = rotation @ covariance @ rotation.T
        covariance = (covariance + covariance.T) / 2
        axes = rotation
    return ModalityParameters(shared_means, private_means, covariance, axes[:, :s].copy(), axes[:, s:p].copy(),
                              axes[:, p:].copy())


def clip_subspace_report(params: ModalityParameters) -> dict[str, float | list[float]]:
    """Population geometry of one modality: ``fisher_cos2`` between the shared Fisher subspace, the shared class
    means and the top-q_s PCA subspace of Σ_T (``shared_fisher_vs_means``, ``shared_fisher_vs_pca``,
    ``shared_means_vs_pca``), between the private Fisher subspace and the private means
    (``private_fisher_vs_means``, 1 by construction), the share of the top-(q_s + q_m) PCA subspace in the noise
    block (``pca_noise_energy``, 1 by construction), and the shared Fisher eigenvalues (generalised eigenvalues of
    (Σ_B(k_s), Σ_W(k_s)) on the shared Fisher subspace, descending)."""
    q_s, q_m = params.k_shared - 1, params.k_private - 1
    fisher, means = params.shared_fisher_basis(), params.shared_means_basis()
    pca = params.pca_basis(q_s)
    eigenvalues = eigh(fisher.T @ params.shared_between() @ fisher, fisher.T @ params.shared_within() @ fisher,
                       eigvals_only=True)[::-1]
    return {
        "shared_fisher_vs_means": fisher_cos2(means, fisher),
        "shared_fisher_vs_pca": fisher_cos2(pca, fisher),
        "shared_means_vs_pca": fisher_cos2(pca, means),
        "private_fisher_vs_means": fisher_cos2(params.private_means_basis(), params.private_fisher_basis()),
        "pca_noise_energy": fisher_energy(params.pca_basis(q_s + q_m), params.noise_block),
        "shared_fisher_eigenvalues": [float(v) for v in eigenvalues],
    }
