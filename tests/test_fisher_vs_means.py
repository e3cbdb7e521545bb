"""The "fisher_vs_means" mixture (theory.gmm.fisher_vs_means_parameters): Fisher, class-mean and PCA subspaces
pairwise far apart, unequal Fisher eigenvalues, classes separable by LDA but not in the class-mean subspace.

Every geometric quantity is recomputed here from (π, μ, Σ) with numpy/scipy, independently of ``subspace_report``
(which is then checked against it)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import eigh, subspace_angles
from scipy.stats import ortho_group

from ssl_pipeline.theory.gmm import (
    FISHER_VS_MEANS_EIGENVALUE_RATIO,
    fisher_vs_means_min_nuisance_std,
    fisher_vs_means_parameters,
    subspace_report,
)
from ssl_pipeline.theory.subspaces import fisher_subspace

SEPARATION = 6.0
# (k, d, nuisance_std): the shipped sizes, each with a nuisance_std above the minimum the construction needs.
SIZES = [(5, 100, 15.0), (10, 64, 15.0), (3, 20, 16.0)]


def _params(k, d, nuisance_std, seed, rotate=True):
    rng = np.random.default_rng(seed)
    params = fisher_vs_means_parameters(k, d, SEPARATION, 1.0, nuisance_std, rng)
    return params.rotated(ortho_group.rvs(d, random_state=rng)) if rotate else params


def _geometry(params):
    """S_F, S_M, top-(K−1) PCA of Σ_T (orthonormal bases), Σ_B, and the q largest generalised eigenpairs of (Σ_B, Σ)."""
    w = params.weights / params.weights.sum()
    centred = params.means - w @ params.means
    between = (centred.T * w) @ centred
    q = len(w) - 1
    values, vectors = eigh(between, params.covariance)
    values, vectors = values[::-1][:q], vectors[:, ::-1][:, :q]
    fisher = np.linalg.qr(vectors)[0]
    means = np.linalg.svd(centred.T, full_matrices=False)[0][:, :q]
    pca = np.linalg.eigh(params.covariance + between)[1][:, ::-1][:, :q]
    return fisher, means, pca, between, values


def _cos2(a, b):
    return float(np.sum(np.cos(subspace_angles(a, b)) ** 2) / min(a.shape[1], b.shape[1]))


@pytest.mark.parametrize("k,d,nuisance_std", SIZES)
@pytest.mark.parametrize("seed", range(5))
def test_fisher_means_and_pca_subspaces_are_pairwise_far_apart(k, d, nuisance_std, seed):
    params = _params(k, d, nuisance_std, seed)
    fisher, means, pca, _, _ = _geometry(params)
    pairs = {"fisher_vs_means": _cos2(fisher, means), "fisher_vs_pca": _cos2(fisher, pca),
             "means_vs_pca": _cos2(means, pca)}
    assert all(value <= 0.2 for value in pairs.values()), pairs
    report = subspace_report(params)
    for key, value in pairs.items():
        assert report[key] == pytest.approx(value, abs=1e-6)


@pytest.mark.parametrize("k,d,nuisance_std", SIZES)
def test_fisher_eigenvalues_are_spread_and_set_by_the_separation(k, d, nuisance_std):
    params = _params(k, d, nuisance_std, seed=3)
    _, _, _, _, values = _geometry(params)
    assert values[0] / values[-1] == pytest.approx(FISHER_VS_MEANS_EIGENVALUE_RATIO, rel=1e-6)
    assert values[0] / values[-1] >= 2.9
    # The documented scale: a regular simplex of Mahalanobis edge `separation`, stretched by factors in [1, √3].
    assert values[-1] == pytest.approx(SEPARATION**2 / (2 * k), rel=1e-6)
    assert np.allclose(subspace_report(params)["fisher_eigenvalues"], values, rtol=1e-6)


@pytest.mark.parametrize("k,d,nuisance_std", SIZES)
def test_every_pair_of_means_is_at_least_separation_apart_in_the_mahalanobis_metric(k, d, nuisance_std):
    params = _params(k, d, nuisance_std, seed=1)
    precision = np.linalg.inv(params.covariance)
    diffs = params.means[:, None] - params.means[None]
    distances = np.sqrt(np.einsum("abi,ij,abj->ab", diffs, precision, diffs))[np.triu_indices(k, 1)]
    assert distances.min() >= SEPARATION * (1 - 1e-6)
    assert distances.min() <= SEPARATION * np.sqrt(FISHER_VS_MEANS_EIGENVALUE_RATIO)


@pytest.mark.parametrize("k,d,nuisance_std", SIZES)
def test_true_fisher_basis_is_the_fisher_subspace(k, d, nuisance_std):
    params = _params(k, d, nuisance_std, seed=2)
    basis = params.fisher_basis()
    assert basis.shape == (d, k - 1)
    assert _cos2(basis, fisher_subspace(params.means, params.covariance, params.weights)) == pytest.approx(1.0)
    fisher, _, _, _, _ = _geometry(params)  # the generalised eigenvectors of (Σ_B, Σ)
    assert _cos2(basis, fisher) == pytest.approx(1.0, abs=1e-8)


def test_pca_picks_nuisance_directions_with_a_gap():
    k, d, nuisance_std = 5, 100, 15.0
    params = _params(k, d, nuisance_std, seed=0, rotate=False)
    _, _, _, between, _ = _geometry(params)
    total = params.covariance + between
    signal = 2 * (k - 1)
    assert np.linalg.eigvalsh(total[:signal, :signal]).max() <= 0.8 * nuisance_std**2 * (1 + 1e-9)
    assert np.allclose(total[signal:, signal:], nuisance_std**2 * np.eye(d - signal))
    assert np.allclose(params.means[:, signal:], 0)


def test_seeds_give_different_mixtures():
    a, b = (_params(5, 100, 15.0, seed, rotate=False) for seed in (0, 1))
    assert not np.allclose(a.means, b.means)
    assert not np.allclose(a.covariance, b.covariance)


def test_lda_separates_the_classes_but_the_class_mean_subspace_does_not():
    from sklearn.cluster import KMeans
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.metrics import normalized_mutual_info_score

    k, d = 5, 100
    params = _params(k, d, 15.0, seed=0)
    x_train, y_train = params.sample(5000, np.random.default_rng(10))
    x_test, y_test = params.sample(5000, np.random.default_rng(11))
    lda = LinearDiscriminantAnalysis().fit(x_train, y_train)
    accuracy = lda.score(x_test, y_test)

    def kmeans_nmi(z):
        labels = KMeans(k, n_init=3, random_state=0).fit_predict(z)
        return normalized_mutual_info_score(y_test, labels)

    _, means, _, _, _ = _geometry(params)
    nmi_lda = kmeans_nmi(lda.transform(x_test))
    nmi_means = kmeans_nmi((x_test - x_train.mean(axis=0)) @ means)  # centred, not whitened
    assert accuracy >= 0.95
    assert nmi_lda >= 0.9
    assert nmi_means <= 0.8 * nmi_lda, (nmi_means, nmi_lda)


def test_too_small_d_is_refused():
    with pytest.raises(ValueError, match=r"d ≥ 3\(k−1\) = 12"):
        fisher_vs_means_parameters(5, 11, SEPARATION, 1.0, 15.0, np.random.default_rng(0))
    fisher_vs_means_parameters(5, 12, SEPARATION, 1.0, 15.0, np.random.default_rng(0))  # the boundary is allowed


def test_too_small_nuisance_std_is_refused_with_the_minimum():
    minimum = fisher_vs_means_min_nuisance_std(5, SEPARATION, 1.0)
    assert 5.0 < minimum < 15.0
    with pytest.raises(ValueError, match="needs nuisance_std ≥"):
        fisher_vs_means_parameters(5, 100, SEPARATION, 1.0, 0.99 * minimum, np.random.default_rng(0))
    params = fisher_vs_means_parameters(5, 100, SEPARATION, 1.0, 1.01 * minimum, np.random.default_rng(0))
    assert subspace_report(params)["fisher_vs_means"] <= 0.2


def _means_subspace_eigenvalue_share(params):
    """Fisher eigenvalues of the mixture projected onto S_M (centred, not whitened) over the full ones: how much of
    the squared Mahalanobis separation survives clustering in the class-mean subspace."""
    _, means, _, between, values = _geometry(params)
    restricted = eigh(means.T @ between @ means, means.T @ params.covariance @ means, eigvals_only=True)[::-1]
    return restricted / values


def test_the_class_mean_subspace_loses_most_of_the_separation_and_more_with_more_nuisance_room():
    share_13 = _means_subspace_eigenvalue_share(_params(5, 100, 13.0, seed=0))
    share_15 = _means_subspace_eigenvalue_share(_params(5, 100, 15.0, seed=0))
    assert share_15.max() <= 0.1  # measured 0.074 on every axis
    assert share_15.max() < share_13.min()  # measured 0.146 at nuisance_std 13
