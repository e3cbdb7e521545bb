"""The Fisher estimate inside the span the features occupy (theory.subspaces.fisher_estimate; docs/theory.md,
"The span the features occupy"): constant channels, near-constant channels without signal, the rank used."""

import numpy as np
import pytest
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from ssl_pipeline.theory.gmm import pancakes_parameters
from ssl_pipeline.theory.subspaces import FEATURE_FLOOR, fisher_cos2, fisher_estimate, orthonormal_basis


def _pancakes(n: int, seed: int, d: int = 20, k: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    params = pancakes_parameters(k=k, d=d, separation=4.0, signal_std=1.0, nuisance_std=2.0)
    x, y = params.sample(n, np.random.default_rng(seed))
    return x.astype(np.float64), y, params.fisher_basis()


def test_constant_channels_are_left_out_and_the_estimate_matches_sklearns_svd_solver():
    x, y, _ = _pancakes(4000, seed=0)
    x = np.concatenate([x, np.full((len(x), 3), 2.5)], axis=1)  # three dead channels
    with pytest.raises(np.linalg.LinAlgError):  # what the unfloored solve did
        np.linalg.solve(np.cov(x.T), np.ones(x.shape[1]))
    estimate = fisher_estimate(x, y, 4)
    assert estimate.rank == 20
    assert np.allclose(estimate.basis[20:], 0.0, atol=1e-12)
    lda = LinearDiscriminantAnalysis(solver="svd").fit(x, y)
    reference = orthonormal_basis(lda.scalings_[:, :3])
    assert fisher_cos2(estimate.basis, reference) > 0.9999


def test_near_constant_channels_without_signal_do_not_take_over_the_estimate():
    """Two channels of std 0.01 carrying only noise: below the floor they are ignored; without it they dominate."""
    x, y, truth = _pancakes(3000, seed=1)
    rng = np.random.default_rng(2)
    x = np.concatenate([x, 0.01 * rng.standard_normal((len(x), 2))], axis=1)
    truth = np.concatenate([truth, np.zeros((2, truth.shape[1]))])
    floored = fisher_estimate(x, y, 4)
    unfloored = fisher_estimate(x, y, 4, relative_floor=0.0)
    assert floored.rank == 20 and unfloored.rank == 22
    assert fisher_cos2(floored.basis, truth) > 0.97
    assert fisher_cos2(unfloored.basis, truth) < fisher_cos2(floored.basis, truth) - 0.05


def test_the_floor_is_relative_to_the_largest_eigenvalue():
    x, y, _ = _pancakes(3000, seed=3)
    scaled = fisher_estimate(1000.0 * x, y, 4)
    assert scaled.rank == fisher_estimate(x, y, 4).rank == 20
    assert 0 < FEATURE_FLOOR < 0.01
