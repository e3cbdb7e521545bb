"""Linear heads: coordinates (docs/theory.md, "Coordinates"), stacked weights, saving without pickle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_pipeline.config import GMMConfig, HeadsConfig, TrainerConfig
from ssl_pipeline.data.synthetic import gmm_parameters, make_synthetic
from ssl_pipeline.heads.fit import fit_head, quiet_lightning
from ssl_pipeline.heads.fitted import FittedHead
from ssl_pipeline.heads.modules import SimSiamHead
from ssl_pipeline.heads.settings import resolve_head_settings
from ssl_pipeline.theory.subspaces import fisher_cos2, fisher_subspace


def test_heads_are_stacks_and_feature_space_weight_undoes_standardisation():
    heads = HeadsConfig(r=3)
    heads.simsiam.regularizer = "euclidean"
    settings = resolve_head_settings(heads, "simsiam", 1.0, 0)
    mean, scale = torch.randn(7), torch.rand(7) + 0.5
    head = SimSiamHead.from_settings(settings, 7, mean, scale, num_heads=4)  # no basis: A is the parameter
    assert head.weight.shape == (4, 7, 3) and head.predictor.shape == (4, 3, 3)
    x = torch.randn(11, 7)
    z = head(x)
    assert z.shape == (4, 11, 3)
    torch.testing.assert_close(z, (x - mean) @ head.feature_space_weight())
    losses = head.head_losses(x, x + 0.1)
    assert losses.shape == (4,)


def test_fitted_head_round_trips_through_safetensors(tmp_path):
    settings = resolve_head_settings(HeadsConfig(r=2), "infonce", 0.5, 3)
    head = FittedHead(settings, np.random.rand(1, 5, 2).astype(np.float32), np.random.rand(5).astype(np.float32),
                      np.random.rand(5).astype(np.float32), fit_seconds=1.5, features_key="gmm-abc")
    path = tmp_path / "heads" / f"{settings.tag}.safetensors"
    head.save(path)
    loaded = FittedHead.load(path)
    assert loaded.settings == settings and loaded.features_key == "gmm-abc" and loaded.fit_seconds == 1.5
    for name in ("weight", "mean", "scale"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(head, name))
    x = np.random.rand(4, 5).astype(np.float32)
    np.testing.assert_allclose(loaded.project(x), (x - head.mean) @ (head.scale[:, None] * head.weight[0]), rtol=1e-6)
    assert not list(tmp_path.rglob("*.tmp"))


def test_corrupt_head_file_gives_a_clear_error(tmp_path):
    from ssl_pipeline.errors import DataError

    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="re-run `ssl-pipeline fit`"):
        FittedHead.load(path)


def test_standardised_head_is_compared_in_feature_coordinates():
    """A head trained on z = D^(-1/2)(x − x̄) recovers S_F only as Ã = D^(-1/2) A, not as A."""
    quiet_lightning()
    cfg = GMMConfig(preset="pancakes", d=20, k=3, n_train=6000, rotate=True, seed=1)
    features = make_synthetic(cfg)
    scales = np.geomspace(0.05, 20, cfg.d).astype(np.float32)  # very unequal feature scales
    for split in ("train", "val", "test"):
        setattr(features, f"x_{split}", getattr(features, f"x_{split}") * scales)
    params = gmm_parameters(cfg)
    fisher = fisher_subspace(params.means * scales, params.covariance * np.outer(scales, scales), params.weights)
    heads = HeadsConfig(r=2, epochs=15, batch_size=512, standardize=True)
    head = fit_head(features, resolve_head_settings(heads, "infonce", 1.0, 0), TrainerConfig())
    assert fisher_cos2(head.feature_space_weight(), fisher) >= 0.95
    assert fisher_cos2(head.weight[0], fisher) < 0.5


def test_early_stopping_on_held_out_pairs_keeps_the_best_epoch():
    quiet_lightning()
    features = make_synthetic(GMMConfig(d=20, k=3, n_train=3000, n_val=600, seed=2))
    heads = HeadsConfig(r=2, epochs=60, batch_size=256, early_stopping_patience=2)
    head = fit_head(features, resolve_head_settings(heads, "infonce", 1.0, 0), TrainerConfig())
    assert head.epochs_trained is not None and 1 <= head.epochs_trained < 60 - 2
    assert fisher_cos2(head.feature_space_weight(), features.fisher_basis) >= 0.95


def test_constant_features_get_zero_scale_so_they_cannot_dominate_the_head():
    from ssl_pipeline.heads.inputs import standardization_scale

    std = torch.tensor([2.0, 0.5, 0.0, 1e-9], dtype=torch.float64)
    assert standardization_scale(std).tolist() == [0.5, 2.0, 0.0, 0.0]


def _rank_deficient_features(seed: int = 0):
    """40 training points in 60 dimensions (rank ≤ 39) with 5 constant channels: the head's input covariance is
    singular, as on real backbone features."""
    from ssl_pipeline.data.labelled import LabelledFeatures

    rng = np.random.default_rng(seed)
    means = 3.0 * rng.standard_normal((4, 60))

    def draw(n):
        y = np.arange(n) % 4
        x = means[y] + rng.standard_normal((n, 60))
        x[:, :5] = 1.5
        return x.astype(np.float32), y

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = draw(40), draw(40), draw(40)
    return LabelledFeatures(x_train, y_train, x_val, y_val, x_test, y_test, dataset="deficient",
                            data_kind="synthetic", split_seed=0)


@pytest.mark.parametrize(("method", "regularizer"), [("simsiam", "covariance"), ("simsiam", "euclidean"),
                                                     ("infonce", None), ("barlowtwins", None)])
def test_heads_leave_no_weight_outside_the_span_of_the_training_features(method, regularizer):
    """Every head is optimised inside the span of the training inputs (A = basis·B): no weight in the constant
    channels or the directions no training point reaches. An unconfined head keeps its random initial weight
    there (about half of it here), which test points see and every subspace score counts."""
    from ssl_pipeline.heads.inputs import head_module, input_span
    from ssl_pipeline.heads.parametrization import orthonormal_init

    quiet_lightning()
    features = _rank_deficient_features()
    heads = HeadsConfig(r=3, epochs=5, batch_size=20)
    if regularizer:
        heads.simsiam.regularizer = regularizer
    settings = resolve_head_settings(heads, method, 1.0, 0)
    fitted = fit_head(features, settings, TrainerConfig())
    span = input_span(features, np.ones(60))
    assert span.rank <= 39  # rank-deficient: 40 points, less what the floor drops

    def share_outside(weight: np.ndarray) -> float:
        outside = weight - span.basis @ (span.basis.T @ weight)
        return float(np.linalg.norm(outside) / np.linalg.norm(weight))

    assert share_outside(fitted.feature_space_weight().astype(np.float64)) < 1e-5
    assert share_outside(orthonormal_init(1, 60, 3, 0)[0].double().numpy()) > 0.3
    if regularizer == "covariance":  # the guard in the head's basis is ‖AᵀΣ̂A − I‖²_F
        module = head_module(features, settings)
        a = module.head_weight()[0].double()
        x = torch.from_numpy(features.x_train).double()
        centred = x - x.mean(0)
        gram = a.T @ (centred.T @ centred / len(x)) @ a
        expected = ((gram - torch.eye(3, dtype=torch.float64)) ** 2).sum()
        torch.testing.assert_close(module.collapse_guard()[0].double(), expected, rtol=1e-4, atol=1e-6)


def test_r_above_the_rank_of_the_training_features_is_refused_in_one_line():
    from ssl_pipeline.errors import DataError

    features = _rank_deficient_features()
    settings = resolve_head_settings(HeadsConfig(r=50), "vicreg", 1.0, 0)
    with pytest.raises(DataError, match=r"^heads.r=50 exceeds the rank the training features occupy \(\d+ directions "
                                        r"above the relative eigenvalue floor 0.001\); choose r ≤ \d+$"):
        fit_head(features, settings, TrainerConfig())


def test_a_schema_one_simsiam_head_file_loads_as_the_euclidean_guard(tmp_path):
    """Head files written before the covariance guard have no ``regularizer`` in their settings: they were trained
    with the Euclidean guard and load as such (so re-scoring them needs ``--heads.simsiam.regularizer euclidean``)."""
    import json
    from dataclasses import asdict

    from safetensors.numpy import save_file

    settings = asdict(resolve_head_settings(HeadsConfig(r=2), "simsiam", 1.0, 0))
    for new in ("regularizer", "sim_coeff", "std_coeff", "cov_coeff", "lambda_off"):
        settings.pop(new)
    arrays = {"weight": np.ones((1, 4, 2), np.float32), "mean": np.zeros(4, np.float32), "scale": np.ones(4, np.float32)}
    path = tmp_path / "simsiam_delta1_seed0.safetensors"
    save_file(arrays, str(path), metadata={"settings": json.dumps(settings), "fit_seconds": "1.0",
                                           "features_key": "", "epochs_trained": "3"})
    loaded = FittedHead.load(path)
    assert loaded.settings.regularizer == "euclidean" and loaded.settings.tag == "simsiam-euclidean_delta1_seed0"
