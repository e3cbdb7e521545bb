"""The synthetic GMM lab: seeded, correct moments, and the pancakes defeat PCA."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA

from ssl_pipeline.config import GMMConfig
from ssl_pipeline.data.synthetic import gmm_parameters, make_synthetic
from ssl_pipeline.theory.gmm import regular_simplex
from ssl_pipeline.theory.subspaces import fisher_cos2


def test_regular_simplex_has_equal_pairwise_distances():
    points = regular_simplex(5, 6.0)
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)[np.triu_indices(5, 1)]
    np.testing.assert_allclose(distances, 6.0)
    np.testing.assert_allclose(points.mean(axis=0), 0.0, atol=1e-12)


def test_generator_is_seeded():
    a, b = make_synthetic(GMMConfig(n_train=500, seed=4)), make_synthetic(GMMConfig(n_train=500, seed=4))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, make_synthetic(GMMConfig(n_train=500, seed=5)).x_train)


@pytest.mark.parametrize("preset", ["pancakes", "random"])
def test_samples_have_the_mixture_moments(preset):
    cfg = GMMConfig(preset=preset, d=12, k=3, n_train=60000, seed=2)
    params, features = gmm_parameters(cfg), make_synthetic(cfg)
    for k in range(cfg.k):
        members = features.x_train[features.y_train == k].astype(np.float64)
        np.testing.assert_allclose(members.mean(axis=0), params.means[k], atol=0.1)
        covariance = np.cov(members.T)
        assert np.linalg.norm(covariance - params.covariance) / np.linalg.norm(params.covariance) < 0.05


def test_random_preset_has_requested_mahalanobis_separation():
    cfg = GMMConfig(preset="random", d=20, k=6, separation=4.0, seed=1)
    params = gmm_parameters(cfg)
    whitener = np.linalg.cholesky(np.linalg.inv(params.covariance))
    w = params.means @ whitener
    distances = np.linalg.norm(w[:, None] - w[None], axis=-1)[np.triu_indices(cfg.k, 1)]
    assert distances.mean() == pytest.approx(4.0, rel=1e-6)


def test_pca_picks_the_wrong_subspace_on_pancakes():
    cfg = GMMConfig(preset="pancakes", d=50, k=5, n_train=10000)
    features = make_synthetic(cfg)
    pca = PCA(n_components=4).fit(features.x_train)
    assert features.fisher_basis.shape == (50, 4)
    assert fisher_cos2(pca.components_.T, features.fisher_basis) <= 0.2
