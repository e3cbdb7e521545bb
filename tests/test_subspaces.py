"""Subspace recovery scores and the Fisher subspace (docs/theory.md, "Fisher subspace", "Subspace recovery")."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.covariance import ledoit_wolf_shrinkage

from ssl_pipeline.config import GMMConfig
from ssl_pipeline.data.synthetic import gmm_parameters, make_synthetic
from ssl_pipeline.theory.subspaces import (
    class_statistics,
    effective_rank,
    estimate_fisher_subspace,
    fisher_cos2,
    fisher_energy,
    fisher_subspace,
    orthonormal_basis,
)


def random_basis(rng: np.random.Generator, d: int, m: int) -> np.ndarray:
    return np.linalg.qr(rng.standard_normal((d, m)))[0]


def test_fisher_subspace_is_sigma_inverse_of_centred_means(rng):
    d, k = 6, 3
    means = rng.standard_normal((k, d))
    root = rng.standard_normal((d, d))
    covariance = root @ root.T + np.eye(d)
    weights = np.array([0.2, 0.3, 0.5])
    basis = fisher_subspace(means, covariance, weights)
    assert basis.shape == (d, k - 1)
    np.testing.assert_allclose(basis.T @ basis, np.eye(k - 1), atol=1e-10)
    for mean in means:
        direction = np.linalg.solve(covariance, mean - weights @ means)
        residual = direction - basis @ (basis.T @ direction)
        assert np.linalg.norm(residual) < 1e-10 * np.linalg.norm(direction)


def test_rank_tolerance_drops_dependent_directions(rng):
    a = rng.standard_normal((10, 2))
    assert orthonormal_basis(np.hstack([a, a @ np.array([[1.0], [2.0]])])).shape == (10, 2)


def test_head_spanning_fisher_subspace_scores_one_even_if_scaled_and_mixed(rng):
    fisher = random_basis(rng, 30, 4)
    head = fisher @ rng.standard_normal((4, 4)) * 17.0
    assert fisher_cos2(head, fisher) == pytest.approx(1.0, abs=1e-9)
    assert fisher_energy(head, fisher) == pytest.approx(1.0, abs=1e-9)


def test_collapsed_rank_one_head_does_not_score_as_recovered(rng):
    fisher = random_basis(rng, 30, 4)
    collapsed = np.outer(fisher[:, 0], np.ones(4)) + 1e-6 * rng.standard_normal((30, 4))
    assert fisher_cos2(collapsed, fisher) == pytest.approx(1 / 4, abs=1e-3)
    assert effective_rank(rng.standard_normal((500, 30)) @ collapsed) == pytest.approx(1.0, abs=0.01)
    assert effective_rank(rng.standard_normal((5000, 4))) > 3.9


def test_random_subspace_scores_near_random_level(rng):
    d, r, q = 100, 4, 4
    fisher = random_basis(rng, d, q)
    scores = [fisher_cos2(rng.standard_normal((d, r)), fisher) for _ in range(400)]
    energies = [fisher_energy(rng.standard_normal((d, r)), fisher) for _ in range(400)]
    assert np.mean(scores) == pytest.approx(max(r, q) / d, rel=0.1)
    assert np.mean(energies) == pytest.approx(q / d, rel=0.1)


def test_orthogonal_head_scores_zero(rng):
    basis = random_basis(rng, 20, 8)
    assert fisher_cos2(basis[:, 4:], basis[:, :4]) == pytest.approx(0.0, abs=1e-12)
    assert fisher_energy(basis[:, 4:], basis[:, :4]) == pytest.approx(0.0, abs=1e-12)


def test_streamed_ledoit_wolf_matches_sklearn(rng):
    x = (rng.standard_normal((3000, 12)) * np.linspace(0.5, 3, 12)).astype(np.float32)
    y = rng.integers(0, 4, 3000)
    stats = class_statistics(x, y, 4)
    residuals = x.astype(np.float64) - stats.means[y]
    assert stats.ledoit_wolf_shrinkage == pytest.approx(ledoit_wolf_shrinkage(residuals, assume_centered=True), rel=1e-8)
    np.testing.assert_allclose(stats.within_covariance, residuals.T @ residuals / len(x), rtol=1e-8)


@pytest.mark.parametrize("preset", ["pancakes", "random"])
def test_estimated_fisher_subspace_matches_truth_for_large_n(preset):
    cfg = GMMConfig(preset=preset, d=30, k=4, n_train=60000, n_val=8, n_test=8, seed=3)
    features = make_synthetic(cfg)
    estimated = estimate_fisher_subspace(features.x_train, features.y_train, cfg.k)
    assert estimated.shape[1] == cfg.k - 1
    assert fisher_cos2(estimated, gmm_parameters(cfg).fisher_basis()) >= 0.99


def test_fisher_cos2_equals_the_principal_angles_formula_on_any_reference(rng):
    """‖keptᵀQ‖²_F / min(r, q) is Σ cos²θ_i / min(r, q) with θ scipy's principal angles, for orthonormal, scaled
    and mixed, and rank-deficient references (whose null directions ``orth`` drops), and heads with a dropped
    direction (a singular value below 1e-3 of the largest)."""
    from scipy.linalg import subspace_angles

    from ssl_pipeline.theory.subspaces import significant_directions, subspace_cos2

    def by_angles(head, reference):
        kept = significant_directions(head)
        return float(np.sum(np.cos(subspace_angles(kept, reference)) ** 2) / min(head.shape[1], reference.shape[1]))

    d = 40
    for trial in range(20):
        r, q = rng.integers(1, 10, size=2)
        head = rng.normal(size=(d, r))
        if trial % 4 == 1 and r > 1:
            head[:, -1] = head[:, 0] * 1e-5 + head[:, -1] * 1e-6  # a direction below the 1e-3 cut
        reference = np.linalg.qr(rng.normal(size=(d, q)))[0]
        if trial % 4 == 2:
            reference = reference @ rng.normal(size=(q, q))  # same span, not orthonormal
        if trial % 4 == 3 and q > 1:
            reference[:, -1] = reference[:, 0] * 2.0  # rank q − 1
        if trial % 5 == 0:
            reference = np.hstack([reference, head[:, :1]])  # shares a direction with the head
        found = fisher_cos2(head, reference)
        assert found == pytest.approx(by_angles(head, reference), abs=1e-12)
        assert subspace_cos2(significant_directions(head), r, reference) == found
