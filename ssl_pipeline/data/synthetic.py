"""Shared-covariance Gaussian mixtures (docs/theory.md, "GMM"): the "parallel pancakes" and a random-Σ preset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import ortho_group

from ssl_pipeline.config import GMMConfig
from ssl_pipeline.data.labelled import LabelledFeatures
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


def regular_simplex(k: int, edge: float) -> np.ndarray:
    """K points [K, K−1] centred at 0 with every pairwise distance equal to ``edge``."""
    centred = np.eye(k) - 1.0 / k
    basis = np.linalg.svd(centred)[0][:, : k - 1]
    return centred @ basis * (edge / np.sqrt(2.0))


def pancakes_parameters(cfg: GMMConfig, rng: np.random.Generator) -> GMMParameters:
    """Means separated only along K−1 low-variance directions, under d−K+1 high-variance nuisance ones."""
    signal = cfg.k - 1
    means = np.zeros((cfg.k, cfg.d))
    means[:, :signal] = regular_simplex(cfg.k, cfg.separation * cfg.signal_std)
    variances = np.full(cfg.d, cfg.nuisance_std**2)
    variances[:signal] = cfg.signal_std**2
    return GMMParameters(np.full(cfg.k, 1.0 / cfg.k), means, np.diag(variances))


def random_parameters(cfg: GMMConfig, rng: np.random.Generator) -> GMMParameters:
    """Random SPD Σ (log-uniform spectrum), Gaussian means scaled to mean pairwise Mahalanobis distance."""
    eigenvalues = np.exp(rng.uniform(2 * np.log(cfg.signal_std), 2 * np.log(cfg.nuisance_std), cfg.d))
    basis = ortho_group.rvs(cfg.d, random_state=rng) if cfg.d > 1 else np.ones((1, 1))
    covariance = (basis * eigenvalues) @ basis.T
    means = rng.standard_normal((cfg.k, cfg.d))
    whitened = means @ (basis / np.sqrt(eigenvalues))
    pairwise = np.sqrt(((whitened[:, None] - whitened[None]) ** 2).sum(-1))
    mean_distance = pairwise[np.triu_indices(cfg.k, 1)].mean()
    return GMMParameters(np.full(cfg.k, 1.0 / cfg.k), means * (cfg.separation / mean_distance), covariance)


def gmm_parameters(cfg: GMMConfig) -> GMMParameters:
    """The mixture of a config, seeded by ``cfg.seed`` (optionally rotated by one random orthogonal matrix)."""
    rng = np.random.default_rng(cfg.seed)
    params = pancakes_parameters(cfg, rng) if cfg.preset == "pancakes" else random_parameters(cfg, rng)
    if cfg.rotate and cfg.d > 1:
        rotation = ortho_group.rvs(cfg.d, random_state=rng)
        params = GMMParameters(params.weights, params.means @ rotation.T, rotation @ params.covariance @ rotation.T)
    return params


def make_synthetic(cfg: GMMConfig) -> LabelledFeatures:
    """Train/val/test splits drawn from the config's mixture, with its true Fisher subspace attached."""
    params = gmm_parameters(cfg)
    rng = np.random.default_rng([cfg.seed, 1])
    x_train, y_train = params.sample(cfg.n_train, rng)
    x_val, y_val = params.sample(cfg.n_val, rng)
    x_test, y_test = params.sample(cfg.n_test, rng)
    return LabelledFeatures(
        x_train, y_train, x_val, y_val, x_test, y_test,
        dataset=f"gmm-{cfg.preset}", data_kind="synthetic", split_seed=cfg.seed,
        class_names=[f"component_{k}" for k in range(cfg.k)], fisher_basis=params.fisher_basis(),
    )
