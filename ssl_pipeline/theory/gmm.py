"""Shared-covariance Gaussian mixtures (docs/theory.md, "GMM"): the parameters, their true Fisher subspace, draws,
and the two constructions of the synthetic lab, the "parallel pancakes" and a random-Σ mixture."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import ortho_group

from ssl_pipeline.theory.subspaces import fisher_subspace


@dataclass
class GMMParameters:
    """weights π [K], means μ [K, d], shared covariance Σ [d, d]."""

    weights: np.ndarray
    means: np.ndarray
    covariance: np.ndarray

    def fisher_basis(self) -> np.ndarray:
        """The true Fisher subspace [d, q] from μ_k and Σ."""
        return fisher_subspace(self.means, self.covariance, self.weights)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw k ~ π, x ~ N(μ_k, Σ): features [n, d] float32, labels [n] int64."""
        labels = rng.choice(len(self.weights), size=n, p=self.weights)
        factor = np.linalg.cholesky(self.covariance)
        noise = rng.standard_normal((n, self.means.shape[1])) @ factor.T
        return (self.means[labels] + noise).astype(np.float32), labels.astype(np.int64)

    def rotated(self, rotation: np.ndarray) -> GMMParameters:
        """The mixture of R x for x from this one, R [d, d] orthogonal: means μ_k Rᵀ and covariance R Σ Rᵀ."""
        return GMMParameters(self.weights, self.means @ rotation.T, rotation @ self.covariance @ rotation.T)


def regular_simplex(k: int, edge: float) -> np.ndarray:
    """K points [K, K−1] centred at 0 with every pairwise distance equal to ``edge``."""
    centred = np.eye(k) - 1.0 / k
    basis = np.linalg.svd(centred)[0][:, : k - 1]
    return centred @ basis * (edge / np.sqrt(2.0))


def pancakes_parameters(k: int, d: int, separation: float, signal_std: float, nuisance_std: float) -> GMMParameters:
    """The "parallel pancakes": K equally weighted means at the vertices of a regular simplex of edge
    ``separation`` × ``signal_std`` in the first K−1 coordinates (standard deviation ``signal_std``), under d−K+1
    nuisance coordinates of standard deviation ``nuisance_std``; Σ diagonal [d, d]."""
    signal = k - 1
    means = np.zeros((k, d))
    means[:, :signal] = regular_simplex(k, separation * signal_std)
    variances = np.full(d, nuisance_std**2)
    variances[:signal] = signal_std**2
    return GMMParameters(np.full(k, 1.0 / k), means, np.diag(variances))


def random_parameters(k: int, d: int, separation: float, signal_std: float, nuisance_std: float,
                      rng: np.random.Generator) -> GMMParameters:
    """K equally weighted Gaussian means and a random SPD Σ [d, d] whose eigenvalues are log-uniform in
    [signal_std², nuisance_std²]; the means are rescaled so their mean pairwise Mahalanobis distance is
    ``separation``."""
    eigenvalues = np.exp(rng.uniform(2 * np.log(signal_std), 2 * np.log(nuisance_std), d))
    basis = ortho_group.rvs(d, random_state=rng) if d > 1 else np.ones((1, 1))
    covariance = (basis * eigenvalues) @ basis.T
    means = rng.standard_normal((k, d))
    whitened = means @ (basis / np.sqrt(eigenvalues))
    pairwise = np.sqrt(((whitened[:, None] - whitened[None]) ** 2).sum(-1))
    mean_distance = pairwise[np.triu_indices(k, 1)].mean()
    return GMMParameters(np.full(k, 1.0 / k), means * (separation / mean_distance), covariance)
