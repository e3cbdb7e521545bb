"""Memory-bounded scoring and checks (issue 14 items 2 and 5): features as lazily indexed rows of a memory map,
statistics in one chunked float64 pass, baselines from statistics equal to scikit-learn's, k-means trained on a
deliberate sample and assigned in chunks, the probe's per-class subsample, the checks' subsample, results that do
not depend on the chunk size, and the Fisher scores where the Fisher subspace is the whole span (K − 1 ≥ d)."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_pipeline.config import CheckConfig, KMeansConfig, ProbeConfig, ScoreConfig
from ssl_pipeline.data.labelled import LabelledFeatures, load_npz_features
from ssl_pipeline.data.rows import FeatureRows, open_npz, take_rows
from ssl_pipeline.scoring.projections import baseline_projection
from ssl_pipeline.theory import chunks
from ssl_pipeline.theory.subspaces import class_statistics, fisher_cos2, fisher_estimate, orthonormal_basis


def mixture(rng: np.random.Generator, n: int, d: int, k: int, spread: float = 3.0, offset: float = 50.0):
    """Labelled points of k Gaussian classes with a shared random covariance, far from the origin (so a one-pass
    second moment without shifts would cancel badly)."""
    means = offset + spread * rng.standard_normal((k, d))
    root = rng.standard_normal((d, d)) / np.sqrt(d)
    y = rng.integers(0, k, n)
    y[:k] = np.arange(k)  # every class present
    return (means[y] + rng.standard_normal((n, d)) @ root.T).astype(np.float32), y


def two_pass(x: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    x = x.astype(np.float64)
    means = np.stack([x[y == c].mean(axis=0) for c in range(k)])
    residual = x - means[y]
    return means, residual.T @ residual / len(x)


def memmapped(tmp_path, x: np.ndarray) -> np.memmap:
    path = tmp_path / f"x{x.dtype}.npy"
    np.save(path, x)
    return np.load(path, mmap_mode="r")


@pytest.fixture
def small_chunks(monkeypatch):
    """A few rows per chunk everywhere (``theory.chunks.CHUNK_BYTES`` is read at every call)."""
    monkeypatch.setattr(chunks, "CHUNK_BYTES", 8 * 8 * 7)  # 7 rows of 8 float64 columns, 1–3 rows when wider


def test_one_pass_statistics_equal_two_pass_whatever_the_chunk(rng, tmp_path, monkeypatch):
    x, y = mixture(rng, 3000, 12, 7)
    means, within = two_pass(x, y, 7)
    view = FeatureRows(memmapped(tmp_path, x), np.arange(len(x)))
    for chunk_bytes in (8 * 12, 8 * 12 * 5, 8 * 12 * 333, chunks.CHUNK_BYTES):
        monkeypatch.setattr(chunks, "CHUNK_BYTES", chunk_bytes)
        for data in (x, view):
            stats = class_statistics(data, y, 7)
            np.testing.assert_allclose(stats.means, means, rtol=1e-12)
            np.testing.assert_allclose(stats.within_covariance, within, rtol=1e-10, atol=1e-13 * np.abs(within).max())
            np.testing.assert_array_equal(stats.counts, np.bincount(y, minlength=7))


def test_statistics_of_float16_rows_and_restricted_statistics(rng, tmp_path):
    x, y = mixture(rng, 2000, 10, 4, offset=5.0)
    half = x.astype(np.float16)
    stats = class_statistics(FeatureRows(memmapped(tmp_path, half)), y, 4)
    means, within = two_pass(half.astype(np.float32), y, 4)
    np.testing.assert_allclose(stats.means, means, rtol=1e-12)
    np.testing.assert_allclose(stats.within_covariance, within, rtol=1e-9)
    basis = np.linalg.qr(rng.standard_normal((10, 3)))[0]
    direct = class_statistics(half, y, 4, basis=basis)
    restricted = stats.restricted(basis)
    np.testing.assert_allclose(restricted.means, direct.means, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(restricted.within_covariance, direct.within_covariance, rtol=1e-9)
    assert restricted.ledoit_wolf_shrinkage == pytest.approx(direct.ledoit_wolf_shrinkage, rel=1e-8)


def test_feature_rows_are_a_lazy_array_like(rng, tmp_path):
    x = rng.standard_normal((50, 4)).astype(np.float32)
    index = np.array([1, 4, 9, 10, 33, 49])
    rows = FeatureRows(memmapped(tmp_path, x), index)
    assert rows.shape == (6, 4) and len(rows) == 6 and rows.dtype == np.float32 and rows.ndim == 2
    np.testing.assert_array_equal(np.asarray(rows), x[index])
    np.testing.assert_array_equal(rows[2], x[9])
    np.testing.assert_array_equal(rows[1:3], x[[4, 9]])
    np.testing.assert_array_equal(rows[np.array([0, 5])], x[[1, 49]])
    np.testing.assert_array_equal(rows[np.array([True, False, True, False, False, False])], x[[1, 9]])
    np.testing.assert_array_equal(np.asarray(rows.rows([0, 2])), x[[1, 9]])
    np.testing.assert_array_equal(np.concatenate(list(rows.chunks(4, np.float64))), x[index].astype(np.float64))
    np.testing.assert_allclose(rows.mean(axis=0), x[index].mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(take_rows(x, index)), x[index])
    as64 = FeatureRows(memmapped(tmp_path, x.astype(np.float64)), index, np.float32)
    assert as64.dtype == np.float32 and np.asarray(as64).dtype == np.float32


def test_npz_features_stay_memory_maps(rng, tmp_path):
    x, y = mixture(rng, 600, 6, 3)
    x_test, y_test = mixture(rng, 200, 6, 3)
    np.savez(tmp_path / "f.npz", x_train=x, y_train=y, x_test=x_test, y_test=y_test)
    np.savez_compressed(tmp_path / "c.npz", x_train=x, y_train=y, x_test=x_test, y_test=y_test)
    assert isinstance(open_npz(tmp_path / "f.npz")["x_train"], np.memmap)
    assert not isinstance(open_npz(tmp_path / "c.npz")["x_train"], np.memmap)
    mapped = load_npz_features(str(tmp_path / "f.npz"), None, 0.2, 0)
    loaded = load_npz_features(str(tmp_path / "c.npz"), None, 0.2, 0)
    assert isinstance(mapped.x_train, FeatureRows) and isinstance(mapped.x_train.source, np.memmap)
    assert isinstance(loaded.x_train, np.ndarray)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(np.asarray(getattr(mapped, f"x_{split}")), getattr(loaded, f"x_{split}"))
        np.testing.assert_array_equal(getattr(mapped, f"y_{split}"), getattr(loaded, f"y_{split}"))
    assert mapped.statistics() is mapped.statistics()  # computed once per features


def aligned(z: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """z with each column's sign flipped to agree with the reference's (both centred)."""
    z, reference = z - z.mean(axis=0), reference - reference.mean(axis=0)
    return z * np.sign(np.sum(z * reference, axis=0))


@pytest.mark.parametrize("shrinkage", [0.0, 0.3])
def test_lda_and_pca_from_statistics_equal_sklearn(rng, shrinkage):
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x, y = mixture(rng, 3000, 16, 6, offset=2.0)
    x[:, :2] = 1.5  # two constant channels
    reference = (LinearDiscriminantAnalysis(solver="svd") if shrinkage == 0 else
                 LinearDiscriminantAnalysis(solver="eigen", shrinkage=shrinkage)).fit(x.astype(np.float64), y)
    lda = baseline_projection("lda", x, y, 3, 0, shrinkage)
    expected = reference.transform(x.astype(np.float64))[:, :3]
    np.testing.assert_allclose(aligned(lda.apply(x), expected), expected - expected.mean(axis=0),
                               atol=1e-5 * np.abs(expected).max())
    assert fisher_cos2(lda.subspace, orthonormal_basis(reference.scalings_[:, :3])) > 0.999
    pca = baseline_projection("pca", x, y, 4, 0, None)
    expected = PCA(4, svd_solver="covariance_eigh").fit(x.astype(np.float64)).transform(x.astype(np.float64))
    np.testing.assert_allclose(aligned(pca.apply(x), expected), expected, atol=1e-5 * np.abs(expected).max())


def test_kmeans_assignment_in_chunks_equals_one_search(rng):
    from ssl_pipeline.scoring.kmeans import assign, import_faiss, kmeans_plusplus

    faiss = import_faiss()
    z = rng.standard_normal((1500, 8)).astype(np.float32)
    index = faiss.IndexFlatL2(8)
    index.add(kmeans_plusplus(z, 20, 0))
    distances, whole = index.search(z, 1)
    for chunk in (7, 100, 4096):
        result = assign(index, z, chunk)
        np.testing.assert_array_equal(result.assignments, whole[:, 0])
        assert result.inertia == pytest.approx(float(distances.sum(dtype=np.float64)), rel=1e-6)


def test_kmeans_trains_on_a_deliberate_sample_and_assigns_every_point(rng):
    from ssl_pipeline.scoring.kmeans import faiss_kmeans, training_sample

    centres = 8 * rng.standard_normal((6, 4))
    labels = rng.integers(0, 6, 3000)
    z = (centres[labels] + rng.standard_normal((3000, 4))).astype(np.float32)
    capped = KMeansConfig(niter=20, nredo=2, max_points_per_centroid=100)
    assert training_sample(3000, 6, KMeansConfig(), 0) is None
    assert training_sample(3000, 6, KMeansConfig(max_points_per_centroid=500), 0) is None
    sample = training_sample(3000, 6, capped, 0)
    assert len(sample) == 600 and np.all(np.diff(sample) > 0)
    np.testing.assert_array_equal(sample, training_sample(3000, 6, capped, 0))
    assert not np.array_equal(sample, training_sample(3000, 6, capped, 1))
    result = faiss_kmeans(z, 6, capped, 0)
    assert len(result.assignments) == 3000
    from ssl_pipeline.scoring.metrics import clustering_scores

    assert clustering_scores(labels, result.assignments)["acc"] > 0.99
    # a cap every point fits under is the uncapped path, exactly
    uncapped = faiss_kmeans(z, 6, KMeansConfig(niter=20, nredo=2), 0)
    np.testing.assert_array_equal(faiss_kmeans(z, 6, KMeansConfig(niter=20, nredo=2, max_points_per_centroid=501), 0)
                                  .assignments, uncapped.assignments)


def test_probe_subsample_rule(rng, monkeypatch):
    from ssl_pipeline.scoring import probe

    y = np.repeat(np.arange(10), [50, 50, 50, 50, 50, 50, 50, 50, 50, 3])
    assert probe.probe_rows(y, 10) is None  # 483 · 10 ≤ 2·10⁷
    monkeypatch.setattr(probe, "PROBE_MAX_CELLS", 2000)  # 20 per class
    rows = probe.probe_rows(y, 10)
    assert np.bincount(y[rows]).tolist() == [20] * 9 + [3] and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(rows, probe.probe_rows(y, 10))


def features_of(x, y, x_val, y_val, x_test, y_test, **extra) -> LabelledFeatures:
    return LabelledFeatures(x, y, x_val, y_val, x_test, y_test, dataset="t", data_kind="real", split_seed=0, **extra)


SCORE = ScoreConfig(kmeans=KMeansConfig(niter=15, nredo=1), probe=ProbeConfig(l2_grid=[1e-3]))


def score_all(features: LabelledFeatures, r: int = 3) -> dict[str, dict]:
    from ssl_pipeline.scoring.score import ProjectionScorer, reference_subspaces

    references = reference_subspaces(features, r, None)
    scores = {}
    for method in ("lda", "pca", "random", "raw"):
        projection = baseline_projection(method, features.x_train, features.y_train, r, 0, None,
                                         stats=features.statistics())
        scores[method] = ProjectionScorer(projection, features, references, SCORE).scores(0)
    return scores


def test_scores_do_not_depend_on_memory_maps_or_the_chunk_size(rng, tmp_path, monkeypatch):
    x, y = mixture(rng, 1500, 8, 5, spread=1.5, offset=3.0)
    xv, yv = mixture(rng, 300, 8, 5, spread=1.5, offset=3.0)
    xt, yt = mixture(rng, 600, 8, 5, spread=1.5, offset=3.0)
    in_memory = score_all(features_of(x, y, xv, yv, xt, yt))
    np.savez(tmp_path / "f.npz", x_train=x, y_train=y, x_val=xv, y_val=yv, x_test=xt, y_test=yt)
    mapped = load_npz_features(str(tmp_path / "f.npz"), None, 0.2, 0)
    monkeypatch.setattr(chunks, "CHUNK_BYTES", 8 * 8 * 13)
    chunked = score_all(mapped)
    for method, metrics in in_memory.items():
        for name, value in metrics.items():
            if value is None:
                assert chunked[method][name] is None, (method, name)
            else:
                assert chunked[method][name] == pytest.approx(value, abs=1e-6), (method, name)


def test_fisher_scores_when_the_fisher_subspace_fills_the_span(rng):
    """K − 1 ≥ d: fisher_cos2, fisher_energy and means_cos2 are null, fisher_top_cos2 and fisher_rank are reported; with K − 1 < d
    fisher_cos2 is reported and fisher_top_cos2 too whenever r < K − 1."""
    from ssl_pipeline.scoring.score import fisher_note, reference_subspaces

    many = features_of(*mixture(rng, 3000, 6, 12), *mixture(rng, 600, 6, 12), *mixture(rng, 1200, 6, 12))
    references = reference_subspaces(many, 2, None)
    assert references.fisher_fills_span and references.feature_rank == references.fisher_rank == 6
    assert "fisher_cos2, fisher_energy and means_cos2 are null" in fisher_note(references)
    scores = score_all(many, r=2)
    for method in ("lda", "pca", "random"):
        assert scores[method]["fisher_cos2"] is None and scores[method]["means_cos2"] is None
        assert scores[method]["fisher_energy"] is None  # 1 for every head in the span: says nothing either
        assert 0 <= scores[method]["fisher_top_cos2"] <= 1 + 1e-9 and scores[method]["fisher_rank"] == 6
        assert 0 < scores[method]["probe_acc"] <= 1
    assert scores["lda"]["fisher_top_cos2"] > 0.99  # LDA's top 2 directions are the top-2 Fisher subspace
    assert scores["raw"]["fisher_top_cos2"] is None
    few = features_of(*mixture(rng, 3000, 10, 4), *mixture(rng, 600, 10, 4), *mixture(rng, 1200, 10, 4))
    references = reference_subspaces(few, 2, None)
    assert not references.fisher_fills_span and fisher_note(references) is None
    scores = score_all(few, r=2)
    assert scores["lda"]["fisher_cos2"] is not None and scores["lda"]["fisher_top_cos2"] > 0.99
    assert scores["random"]["fisher_energy"] < 0.9
    assert scores["lda"]["fisher_rank"] == 3
    assert score_all(few, r=3)["lda"]["fisher_top_cos2"] is None  # r = K − 1: the top 3 are all of S_F


def test_ordered_fisher_directions_nest_and_span_the_estimate(rng):
    x, y = mixture(rng, 4000, 10, 5)
    estimate = fisher_estimate(x, y, 5)
    assert estimate.ordered.shape == (10, 4) and np.all(np.diff(estimate.eigenvalues) <= 0)
    np.testing.assert_allclose(estimate.ordered.T @ estimate.ordered, np.eye(4), atol=1e-10)
    assert fisher_cos2(estimate.ordered, estimate.basis) == pytest.approx(1.0, abs=1e-9)


def test_gmm_checks_with_more_classes_than_dimensions_and_chunk_size(rng, monkeypatch):
    from ssl_pipeline.checking.statistics import run_checks

    k, d = 15, 6
    means = 4 * rng.standard_normal((k, d))

    def split(per_class: int):
        labels = np.repeat(np.arange(k), per_class)
        return (means[labels] + rng.standard_normal((len(labels), d))).astype(np.float32), labels

    features = features_of(*split(60), *split(20), *split(40))
    cfg = CheckConfig(pca_dim=4, surrogates=2, repeats=1, em_max_iter=20)
    whole = run_checks(features, cfg)
    assert whole.lda_half_bases[0].shape == (d, 4)  # the halves fill the span: their top-4 are compared
    assert 0 < whole.lda_split_half < 1 + 1e-9
    monkeypatch.setattr(chunks, "CHUNK_BYTES", 8 * k * 5)
    chunked = run_checks(features, cfg)
    for name, value in whole.scalar_statistics().items():
        assert chunked.scalar_statistics()[name] == pytest.approx(value, rel=1e-7, abs=1e-9), name
    np.testing.assert_allclose(chunked.test_distances, whole.test_distances, rtol=1e-8)


def test_checks_run_on_a_stratified_subsample_of_large_splits(rng):
    from ssl_pipeline.checking.statistics import check_sample
    from ssl_pipeline.checking.surrogate import sample_surrogate

    x, y = mixture(rng, 5000, 6, 4)
    features = features_of(x, y, *mixture(rng, 800, 6, 4), *mixture(rng, 1500, 6, 4))
    assert check_sample(features, 0, max_rows=5000) is features
    sampled = check_sample(features, 0, max_rows=1000)
    assert len(sampled.y_train) == 1000 and len(sampled.y_val) == 800 and len(sampled.y_test) == 1000
    expected = np.bincount(y) * 1000 / len(y)
    assert np.all(np.abs(np.bincount(sampled.y_train) - expected) < 1)
    assert isinstance(sampled.x_train, FeatureRows)  # a view, not a copy
    np.testing.assert_array_equal(np.asarray(sampled.x_train), x[sampled.x_train.index])
    again = check_sample(features, 0, max_rows=1000)
    np.testing.assert_array_equal(again.y_train, sampled.y_train)
    surrogate = sample_surrogate(sampled, None, 1)
    assert surrogate.x_train.shape == (1000, 6) and np.array_equal(surrogate.y_train, sampled.y_train)


def test_em_and_model_fit_in_chunks_equal_whole(rng, small_chunks):
    from scipy.special import logsumexp

    from ssl_pipeline.theory import gmm_checks

    z_train = rng.standard_normal((400, 3)) + np.repeat(3 * rng.standard_normal((4, 3)), 100, axis=0)
    y_train = np.repeat(np.arange(4), 100)
    z_test, y_test = z_train[::2] + 0.1, y_train[::2]
    gaussians = gmm_checks.fit_labelled_gaussians(z_train, y_train, 4)
    for model in gmm_checks.MODELS:
        fit = gmm_checks.model_fit(gaussians, model, z_train, z_test, y_test)
        log_density = gmm_checks.log_density_matrix(z_test, gaussians.stats.means, gaussians.covariances(model), model)
        assert fit.heldout_loglik == pytest.approx(np.mean(log_density[np.arange(len(y_test)), y_test]), rel=1e-12)
        mixture = logsumexp(log_density + np.log(gaussians.stats.weights), axis=1)
        assert fit.heldout_mixture_loglik == pytest.approx(np.mean(mixture), rel=1e-12)
    em = gmm_checks.fit_tied_em(z_train, z_test, y_test, 4, 0, max_iter=50, n_init=1, max_points=None)
    assert 0 <= em.nmi <= 1 and np.isfinite(em.heldout_mixture_loglik)
    # EM's points: check.em_max_points, and at most EM_MAX_CELLS / K (the same rule for real data and surrogates)
    assert gmm_checks.em_points(20_000, 1000) == 5_000 and gmm_checks.em_points(20_000, 100) == 20_000
    assert gmm_checks.em_points(None, 10) == 500_000


def test_probe_loss_in_blocks_equals_one_block(rng, monkeypatch):
    from ssl_pipeline.scoring import probe
    from ssl_pipeline.scoring.probe import linear_probe

    centres = 1.5 * rng.standard_normal((5, 6))
    labels = rng.integers(0, 5, 1500)
    z = (centres[labels] + rng.standard_normal((1500, 6))).astype(np.float32)
    cfg = ProbeConfig(l2_grid=[1e-2, 1e-4])
    whole = linear_probe(z[:1000], labels[:1000], z[1000:1200], labels[1000:1200], z[1200:], labels[1200:], 5, cfg)
    monkeypatch.setattr(probe, "PROBE_BLOCK_BYTES", 4 * 5 * 300)  # 300 rows of logits per block
    blocks = linear_probe(z[:1000], labels[:1000], z[1000:1200], labels[1000:1200], z[1200:], labels[1200:], 5, cfg)
    assert blocks.l2 == whole.l2 and blocks.test_accuracy == pytest.approx(whole.test_accuracy, abs=0.01)
    assert blocks.val_accuracy == pytest.approx(whole.val_accuracy, abs=0.01)
