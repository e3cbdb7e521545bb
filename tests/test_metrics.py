"""Clustering scores, FAISS k-means and the linear probe against scikit-learn/scipy and hand-computed cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from ssl_pipeline.config import KMeansConfig, ProbeConfig
from ssl_pipeline.scoring.kmeans import faiss_kmeans
from ssl_pipeline.scoring.metrics import clustering_scores, hungarian_accuracy
from ssl_pipeline.scoring.probe import linear_probe


def brute_force_accuracy(labels: np.ndarray, clusters: np.ndarray) -> float:
    k = max(labels.max(), clusters.max()) + 1
    return max(np.mean(np.array(perm)[clusters] == labels) for perm in itertools.permutations(range(k)))


def test_permuted_labels_score_perfectly(rng):
    labels = rng.integers(0, 6, 300)
    clusters = rng.permutation(6)[labels]
    scores = clustering_scores(labels, clusters)
    assert scores == {"nmi": pytest.approx(1.0), "ari": pytest.approx(1.0), "acc": 1.0}


def test_hand_computed_cases():
    labels = np.array([0, 0, 0, 1, 1, 1])
    clusters = np.array([1, 1, 0, 0, 0, 0])
    # best matching: cluster 1 → label 0 (2 right), cluster 0 → label 1 (3 right)
    assert hungarian_accuracy(labels, clusters) == pytest.approx(5 / 6)
    # independent partition: knowing the cluster tells nothing
    independent = clustering_scores(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]))
    assert independent["nmi"] == pytest.approx(0.0, abs=1e-12)
    assert independent["acc"] == pytest.approx(0.5)
    assert independent["ari"] == pytest.approx(-0.5)  # (0 - 1/3) / (1 - 1/3) for this table


def test_hungarian_accuracy_equals_brute_force_and_sklearn_metrics_agree(rng):
    for _ in range(20):
        labels, clusters = rng.integers(0, 4, 40), rng.integers(0, 4, 40)
        scores = clustering_scores(labels, clusters)
        assert scores["acc"] == pytest.approx(brute_force_accuracy(labels, clusters))
        assert scores["nmi"] == pytest.approx(normalized_mutual_info_score(labels, clusters, average_method="arithmetic"))
        assert scores["ari"] == pytest.approx(adjusted_rand_score(labels, clusters))


def test_hungarian_accuracy_handles_more_clusters_than_labels():
    labels = np.array([0, 0, 1, 1])
    assert hungarian_accuracy(labels, np.array([0, 1, 2, 2])) == pytest.approx(3 / 4)


def blobs(rng: np.random.Generator, n: int, d: int, k: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.standard_normal((k, d)) * spread
    labels = rng.integers(0, k, n)
    return (centres[labels] + rng.standard_normal((n, d))).astype(np.float32), labels


def test_faiss_kmeans_recovers_separated_clusters_with_sklearn_level_inertia(rng):
    x, labels = blobs(rng, 3000, 8, 5, spread=6.0)
    result = faiss_kmeans(x, 5, KMeansConfig(niter=30, nredo=3), seed=0)
    assert clustering_scores(labels, result.assignments)["acc"] > 0.99
    sklearn_inertia = KMeans(5, n_init=3, random_state=0).fit(x).inertia_
    assert result.inertia <= sklearn_inertia * 1.01


def test_faiss_lloyd_iterations_equal_sklearn_from_the_same_start(rng):
    """FAISS runs on the BLAS kernels ``import_faiss`` selects for this CPU: its Lloyd iterations must give
    scikit-learn's result from the same initial centroids."""
    from ssl_pipeline.scoring.kmeans import import_faiss, kmeans_plusplus

    faiss = import_faiss()
    x, _ = blobs(rng, 6000, 256, 20, spread=0.5)
    start = kmeans_plusplus(x, 20, seed=0)
    kmeans = faiss.Kmeans(256, 20, niter=10, max_points_per_centroid=10_000, min_points_per_centroid=1)
    kmeans.train(x, init_centroids=start)
    reference = KMeans(20, init=start, n_init=1, max_iter=10, tol=0, algorithm="lloyd").fit(x)
    assignments = kmeans.index.search(x, 1)[1][:, 0]
    assert np.mean(assignments == reference.predict(x)) > 0.999
    np.testing.assert_allclose(kmeans.centroids, reference.cluster_centers_, rtol=1e-3, atol=1e-3)


def test_faiss_kmeans_is_seeded(rng):
    x, _ = blobs(rng, 2000, 4, 8, spread=1.0)
    cfg = KMeansConfig(niter=10, nredo=1)
    np.testing.assert_array_equal(faiss_kmeans(x, 8, cfg, 3).assignments, faiss_kmeans(x, 8, cfg, 3).assignments)


def test_probe_matches_sklearn_logistic_regression(rng):
    x, labels = blobs(rng, 3000, 10, 4, spread=0.6)
    train, val, test = slice(0, 2000), slice(2000, 2500), slice(2500, 3000)
    l2 = 1e-3
    ours = linear_probe(x[train], labels[train], x[val], labels[val], x[test], labels[test], 4, ProbeConfig(l2_grid=[l2]))
    # sklearn minimises C·Σ CE + ½‖W‖², i.e. mean CE + ‖W‖² / (2·C·n): C = 1 / (2·λ·n)
    mean, std = x[train].mean(0), x[train].std(0) + 1e-8
    reference = LogisticRegression(C=1 / (2 * l2 * 2000), max_iter=1000).fit((x[train] - mean) / std, labels[train])
    reference_accuracy = reference.score((x[test] - mean) / std, labels[test])
    assert ours.test_accuracy == pytest.approx(reference_accuracy, abs=0.01)
    assert 0.5 < ours.test_accuracy < 1.0  # overlapping classes: the probe has work to do


def test_probe_chooses_regularisation_on_validation(rng):
    # 200 noise dimensions, 60 training samples: weak regularisation overfits, strong generalises
    x, labels = blobs(rng, 1060, 200, 2, spread=0.3)
    result = linear_probe(x[:60], labels[:60], x[60:560], labels[60:560], x[560:], labels[560:], 2,
                          ProbeConfig(l2_grid=[1.0, 1e-6]))
    assert result.l2 == 1.0


def test_kmeans_plusplus_seeds_one_centre_per_separated_blob(rng):
    from ssl_pipeline.scoring.kmeans import kmeans_plusplus

    x, labels = blobs(rng, 2000, 6, 10, spread=20.0)
    for seed in range(5):
        centres = kmeans_plusplus(x, 10, seed)
        rows = [int(np.flatnonzero((x == c).all(axis=1))[0]) for c in centres]  # centres are data points
        assert len(set(labels[rows])) == 10
