"""The synthetic GMM lab: seeded, correct moments, and the pancakes defeat PCA."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.decomposition import PCA

from ssl_pipeline.config import GMMConfig
from ssl_pipeline.data.synthetic import gmm_parameters, make_synthetic
from ssl_pipeline.theory.gmm import regular_simplex, subspace_report, with_quiet_dims
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


LAB = Path(__file__).resolve().parents[1] / "configs" / "synthetic"


def _shipped(name: str) -> GMMConfig:
    from ssl_pipeline.cli import parse_command

    return parse_command(["synthetic", "--config", str(LAB / f"{name}.yaml")])[1].data.synthetic


@pytest.mark.parametrize("name", ["pancakes", "fisher_vs_means", "spectrum"])
def test_the_shipped_labs_keep_the_fisher_subspace_off_the_top_and_bottom_of_the_spectrum(name):
    """A lab decides something only where the Fisher, PCA and minor subspaces are far apart (population cos²)."""
    report = subspace_report(gmm_parameters(_shipped(name)))
    assert report["fisher_vs_minor"] <= 0.1, report
    assert report["fisher_vs_pca"] <= 0.1, report
    assert report["pca_vs_minor"] <= 0.1, report


@pytest.mark.parametrize(("name", "without"), [("pancakes", 0.999), ("fisher_vs_means", 0.98)])
def test_without_quiet_directions_the_fisher_subspace_is_the_minor_one(name, without):
    """The blind spot the quiet directions remove: without them the bottom-(K − 1) eigenvectors of Σ_T are the
    Fisher subspace (1.000 on the pancakes, 0.982 on fisher_vs_means)."""
    report = subspace_report(gmm_parameters(replace(_shipped(name), quiet_dims=0)))
    assert report["fisher_vs_minor"] >= without


def test_spectrum_means_are_a_mahalanobis_simplex_and_its_fisher_subspace_spreads_over_the_spectrum():
    cfg = GMMConfig(preset="spectrum", d=64, k=6, separation=4.0, alpha=1.0, rotate=False, seed=3)
    params = gmm_parameters(cfg)
    eigenvalues, vectors = np.linalg.eigh(params.covariance)
    np.testing.assert_allclose(np.sort(eigenvalues), np.sort(np.arange(1, 65) ** -1.0), rtol=1e-9)
    whitened = params.means @ (vectors / np.sqrt(eigenvalues))
    distances = np.linalg.norm(whitened[:, None] - whitened[None], axis=-1)[np.triu_indices(6, 1)]
    np.testing.assert_allclose(distances, 4.0, rtol=1e-9)
    # the Fisher directions Σ⁻¹(μ_k − μ̄) have components all along the spectrum, not only at one end
    share = (vectors.T @ params.fisher_basis()) ** 2  # [d (ascending variance), q]
    assert share[:16].sum() / 5 < 0.6 and share[-16:].sum() / 5 < 0.6


def test_quiet_directions_are_class_free_and_below_the_spectrum():
    cfg = GMMConfig(preset="pancakes", d=20, k=3, quiet_dims=4, quiet_std=0.5, rotate=False)
    params = gmm_parameters(cfg)
    assert params.means.shape == (3, 24) and np.all(params.means[:, 20:] == 0)
    np.testing.assert_allclose(np.diag(params.covariance)[20:], 0.25)
    with pytest.raises(ValueError, match="quiet_std must be in"):
        with_quiet_dims(gmm_parameters(replace(cfg, quiet_dims=0)), 4, 3.0)
