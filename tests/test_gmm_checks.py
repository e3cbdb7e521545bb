"""GMM checks and the surrogate (docs/theory.md, "GMM checks on real features", "LDA split-half agreement")."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from ssl_pipeline.checking.calibration import calibrate
from ssl_pipeline.checking.statistics import run_checks
from ssl_pipeline.checking.surrogate import sample_surrogate
from ssl_pipeline.config import CheckConfig, GMMConfig
from ssl_pipeline.data.labelled import LabelledFeatures
from ssl_pipeline.data.synthetic import make_synthetic
from ssl_pipeline.errors import DataError
from ssl_pipeline.reporting.check_plots import save_check_figures
from ssl_pipeline.theory.gmm_checks import covariance_distance, holm, log_density_matrix, squared_mahalanobis
from ssl_pipeline.theory.subspaces import class_statistics
from ssl_pipeline.theory.surrogate import fit_tied_gmm

K, D, PCA_DIM, PER_CLASS = 4, 8, 6, 500


def labelled(rng: np.random.Generator, factors: list[np.ndarray], student_df: float | None = None) -> LabelledFeatures:
    """Classes k with means 4·N(0, I) and noise L_k g (g standard normal, or multivariate Student-t with
    ``student_df`` degrees of freedom); PER_CLASS train and test, a tenth of that in val."""
    means = 4 * rng.standard_normal((K, D))

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(K), n)
        noise = np.einsum("nij,nj->ni", np.stack(factors)[y], rng.standard_normal((len(y), D)))
        if student_df is not None:
            noise /= np.sqrt(rng.chisquare(student_df, (len(y), 1)) / student_df)
        return (means[y] + noise).astype(np.float32), y

    return LabelledFeatures(*split(PER_CLASS), *split(PER_CLASS // 10), *split(PER_CLASS), dataset="test",
                            data_kind="synthetic", split_seed=0, class_names=[f"c{k}" for k in range(K)])


def calibrated(features: LabelledFeatures, cfg: CheckConfig) -> tuple[list[dict], dict]:
    real = run_checks(features, cfg)
    surrogates = [run_checks(sample_surrogate(features, cfg.shrinkage, cfg.seed + s), cfg)
                  for s in range(cfg.surrogates)]
    table = calibrate(real, surrogates, cfg)
    return table, {"real": real, "surrogates": surrogates}


def summary(table: list[dict], statistic: str) -> dict:
    return next(r for r in table if r["statistic"] == statistic and r["class"] is None)


@pytest.fixture(scope="module")
def tied_case():
    features = make_synthetic(GMMConfig(preset="random", d=16, k=K, n_train=2000, n_val=200, n_test=2000,
                                        separation=12.0, seed=0))
    cfg = CheckConfig(pca_dim=8, surrogates=3)
    return features, cfg, *calibrated(features, cfg)


def test_tied_gmm_passes_every_check(tied_case):
    _, _, table, results = tied_case
    real = results["real"]
    assert real.bic["tied"] < real.bic["diag"] and real.bic["tied"] < real.bic["full"]
    heterogeneity = summary(table, "heterogeneity_mean")
    assert abs(heterogeneity["gap"]) < 3 * heterogeneity["surrogate_std"] + 0.03
    gaussianity = [r for r in table if r["statistic"] == "gaussianity_ks"]
    assert len(gaussianity) == K and not any(r["rejected"] for r in gaussianity)
    assert all(r["p_value"] <= r["p_holm"] <= 1 for r in gaussianity)
    assert summary(table, "em_nmi")["real"] > 0.9
    assert summary(table, "lda_split_half_cos2")["real"] > 0.95
    assert set(real.seconds) == {"pca", "likelihoods", "heterogeneity", "gaussianity", "em", "lda_split_half"}
    assert all(set(r) == set(table[0]) and (r["gap"] == r["real"] - r["surrogate_mean"]) for r in table)


def test_class_specific_covariances_show_heterogeneity_and_prefer_full(rng):
    factors = [np.linalg.qr(rng.standard_normal((D, D)))[0] * np.exp(rng.uniform(-1, 1, D)) * 3.0**k for k in range(K)]
    table, results = calibrated(labelled(rng, factors), CheckConfig(pca_dim=PCA_DIM))
    heterogeneity = summary(table, "heterogeneity_mean")
    assert heterogeneity["gap"] > 0.5 and heterogeneity["gap"] > 10 * heterogeneity["surrogate_std"]
    assert results["real"].bic["full"] < results["real"].bic["tied"]
    assert summary(table, "bic_full_minus_tied")["gap"] < 0


def test_heavy_tailed_classes_reject_gaussianity(rng):
    factor = np.linalg.cholesky(np.eye(D) + 0.3)
    table, _ = calibrated(labelled(rng, [factor] * K, student_df=3), CheckConfig(pca_dim=PCA_DIM))
    assert summary(table, "gaussianity_rejected")["real"] >= K - 1
    assert summary(table, "gaussianity_ks_pooled")["p_value"] < 1e-6


def test_too_few_samples_for_pca_dim_names_class_and_usable_dim(rng):
    features = labelled(rng, [np.eye(D)] * K)
    keep = np.flatnonzero((features.y_train != 2) | (np.cumsum(features.y_train == 2) <= 7))
    features.x_train, features.y_train = features.x_train[keep], features.y_train[keep]
    with pytest.raises(DataError, match=r"class 2 \(c2\) has 7 training samples.*check\.pca_dim ≤ 5"):
        run_checks(features, CheckConfig(pca_dim=PCA_DIM))


def test_surrogate_keeps_labels_and_matches_fitted_gmm(tied_case):
    features, *_ = tied_case
    first, again, other = (sample_surrogate(features, None, seed) for seed in (3, 3, 4))
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(first, f"y_{split}"), getattr(features, f"y_{split}"))
        assert getattr(first, f"x_{split}").shape == getattr(features, f"x_{split}").shape
        assert getattr(first, f"x_{split}").dtype == np.float32
        np.testing.assert_array_equal(getattr(first, f"x_{split}"), getattr(again, f"x_{split}"))
    assert not np.allclose(first.x_train, other.x_train)
    assert first.data_kind == "surrogate" and first.fisher_basis is None and first.class_names == features.class_names
    assert first.features_key != other.features_key and first.dataset == features.dataset
    fitted = fit_tied_gmm(features.x_train, features.y_train, K, None)
    stats = class_statistics(first.x_train, first.y_train, K)
    standard_error = np.sqrt(np.diag(fitted.covariance) / stats.counts[:, None])
    assert np.all(np.abs(stats.means - fitted.means) < 4.5 * standard_error)
    covariance = fitted.covariance
    tolerance = 4 * np.sqrt((np.trace(covariance @ covariance) + np.trace(covariance) ** 2) / len(first.y_train))
    assert np.linalg.norm(stats.within_covariance - covariance) < tolerance


def test_log_densities_match_scipy(rng):
    z, means = rng.standard_normal((50, 3)), rng.standard_normal((2, 3))
    roots = rng.standard_normal((2, 3, 3))
    full = roots @ roots.transpose(0, 2, 1) + np.eye(3)
    for model, covariances in {"full": full, "diag": full * np.eye(3), "tied": np.stack([full[0], full[0]])}.items():
        expected = np.stack([multivariate_normal(m, c).logpdf(z) for m, c in zip(means, covariances)], axis=1)
        np.testing.assert_allclose(log_density_matrix(z, means, covariances, model), expected, rtol=1e-10)
    distances = squared_mahalanobis(z, means[0], np.linalg.cholesky(full[0]))
    np.testing.assert_allclose(distances, np.einsum("ni,ij,nj->n", z - means[0], np.linalg.inv(full[0]), z - means[0]))


def test_covariance_distance_is_affine_invariant_and_zero_only_at_equality(rng):
    root = rng.standard_normal((5, 5))
    pooled, other = root @ root.T + np.eye(5), np.diag(rng.uniform(0.5, 3, 5))
    mapping = rng.standard_normal((5, 5))
    assert covariance_distance(pooled, pooled) == pytest.approx(0, abs=1e-7)
    assert covariance_distance(4 * pooled, pooled) == pytest.approx(np.log(4))
    assert covariance_distance(mapping @ other @ mapping.T, mapping @ pooled @ mapping.T) == pytest.approx(
        covariance_distance(other, pooled))


def test_holm_adjusts_step_down():
    np.testing.assert_allclose(holm(np.array([0.04, 0.01, 0.03, 0.5])), [0.09, 0.04, 0.09, 0.5])


def test_check_figures_are_written_as_png(tied_case, tmp_path):
    _, _, _, results = tied_case
    paths = save_check_figures(results["real"], results["surrogates"], tmp_path / "checks")
    assert set(paths) == {"gaussianity_qq", "heterogeneity", "loglik"}
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in paths.values())


@pytest.mark.slow
def test_true_tied_gmm_with_isotropic_nuisance_passes_gaussianity_and_calibrates():
    """The pancakes (95 nuisance directions of equal variance): a PCA basis chosen on train picked the directions
    whose train variance came out high by chance and rejected Gaussianity in 5 of 5 classes of a true tied GMM;
    the basis is fitted on val, so nothing is rejected and the affine-invariant statistics calibrate to ≈ 0."""
    features = make_synthetic(GMMConfig(d=100, k=5, n_train=3000, n_val=2000, n_test=5000, seed=0))
    cfg = CheckConfig(pca_dim=16, surrogates=3, seed=0)
    real = run_checks(features, cfg)
    surrogates = [run_checks(sample_surrogate(features, None, seed), cfg) for seed in (1, 2, 3)]
    records = {r["statistic"]: r for r in calibrate(real, surrogates, cfg) if r["class"] is None}
    assert records["gaussianity_rejected"]["real"] == 0
    for name in ("heterogeneity_mean", "heldout_loglik_full_minus_tied", "lda_split_half_cos2"):
        r = records[name]
        assert abs(r["gap"]) <= 4 * r["surrogate_std"] + 0.02, (name, r)
