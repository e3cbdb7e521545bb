"""One-hidden-layer heads and the supervised head (docs/theory.md, "One-hidden-layer heads"): a trunk head of every
unimodal method is its solo fit inside a grid (float64, 1e-9), a head file keeps both layers, a supervised linear head
finds the Fisher subspace, the scores read the first layer's row space, and bad trunk settings are refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ssl_pipeline.config import GMMConfig, HeadsConfig, TrainerConfig, TrunkConfig
from ssl_pipeline.data.synthetic import make_synthetic
from ssl_pipeline.heads.fit import fit_grid, fit_head, quiet_lightning
from ssl_pipeline.heads.fitted import FittedHead
from ssl_pipeline.heads.inputs import head_module
from ssl_pipeline.heads.settings import HeadSettings, resolve_head_settings
from ssl_pipeline.theory.subspaces import fisher_cos2

DOUBLE = TrainerConfig(precision="64-true", progress_bar=False)
SINGLE = TrainerConfig(progress_bar=False)


@pytest.fixture(scope="module")
def features():
    quiet_lightning()
    return make_synthetic(GMMConfig(d=12, k=3, n_train=600, n_val=120, n_test=60))


def head(method: str, delta: float, seed: int, hidden=8, activation="relu", **changes) -> HeadSettings:
    trunk = None if hidden is None else TrunkConfig(hidden=hidden, activation=activation)
    heads = HeadsConfig(r=2, epochs=3, batch_size=128, trunk=trunk)
    return dataclasses.replace(resolve_head_settings(heads, method, delta, seed), **changes)


TRUNKS = [
    head("infonce", 1.0, 0),
    head("infonce", 0.5, 1, activation="tanh", tau=0.3),
    head("simsiam", 0.5, 0),  # covariance guard on the outputs' batch covariance
    head("simsiam", 1.0, 1, regularizer="euclidean", xi=0.5),
    head("spectral_contrastive", 1.0, 0, hidden=16),
    head("vicreg", 0.5, 1),
    head("barlowtwins", 0.2, 0, epochs=2),
    head("infonce", 1.0, 1, hidden=None),  # a linear head in the same grid
]


def test_every_trunk_head_of_a_float64_grid_equals_its_solo_fit(features):
    for settings, fitted in zip(TRUNKS, fit_grid(features, TRUNKS, DOUBLE)):
        solo = fit_head(features, settings, DOUBLE)
        assert fitted.settings == settings and fitted.weight.shape[-1] == settings.width
        assert np.abs(fitted.weight - solo.weight).max() <= 1e-9, settings.tag
        if settings.hidden is None:
            assert fitted.readout is None
            continue
        assert fitted.readout.shape == (1, settings.hidden, settings.r)
        assert np.abs(fitted.readout - solo.readout).max() <= 1e-9, settings.tag
        initial = head_module(features, settings)
        assert np.abs(fitted.weight - initial.head_weight().detach().numpy()).max() > 1e-3, settings.tag
        assert np.abs(fitted.readout - initial.readout.detach().numpy()).max() > 1e-3, settings.tag


def test_supervised_heads_of_a_grid_equal_their_solo_fits(features):
    jobs = [head("supervised", 1.0, 0, hidden=None), head("supervised", 1.0, 1, lr=0.02),
            head("supervised", 1.0, 0, activation="tanh", epochs=2)]
    for settings, fitted in zip(jobs, fit_grid(features, jobs, DOUBLE)):
        solo = fit_head(features, settings, DOUBLE)
        assert np.abs(fitted.weight - solo.weight).max() <= 1e-9, settings.tag
        assert settings.tag.startswith("supervised") and "delta" not in settings.tag


def test_a_trunk_head_file_keeps_both_layers_and_projects_through_them(features, tmp_path):
    settings = head("vicreg", 1.0, 0, hidden=6, activation="tanh", epochs=1)
    fitted = fit_head(features, settings, SINGLE)
    fitted.save(tmp_path / "head.safetensors")
    loaded = FittedHead.load(tmp_path / "head.safetensors")
    assert loaded.settings == settings and loaded.settings.tag == "vicreg-tanh6_delta1_seed0"
    np.testing.assert_array_equal(loaded.readout, fitted.readout)
    x = features.x_test[:50]
    expected = np.tanh((x - fitted.mean) @ (fitted.scale[:, None] * fitted.weight[0])) @ fitted.readout[0]
    np.testing.assert_allclose(loaded.project(x), expected, rtol=1e-5, atol=1e-6)
    assert loaded.feature_space_weight().shape == (features.dim, 6)  # the row space the scores read


def test_a_supervised_linear_head_finds_the_fisher_subspace():
    """Cross-entropy on the label through r = K − 1 linear outputs: the outputs must span the directions that
    separate the classes, the Fisher subspace (pancakes: PCA's top directions are nuisance, cos² ≈ 0 there)."""
    lab = make_synthetic(GMMConfig(d=20, k=4, n_train=2000, n_val=400, n_test=400, nuisance_std=4.0))
    settings = dataclasses.replace(head("supervised", 1.0, 0, hidden=None), r=3, epochs=30, lr=0.03)
    fitted = fit_head(lab, settings, SINGLE)
    initial = head_module(lab, settings).head_weight().detach().numpy()[0]
    assert fisher_cos2(initial, lab.fisher_basis) < 0.5
    assert fisher_cos2(fitted.feature_space_weight(), lab.fisher_basis) > 0.95


@pytest.mark.parametrize(("argv", "message"), [
    (["--heads.trunk.hidden", "0"], "heads.trunk.hidden=0 must be at least 1"),
    (["--heads.trunk.activation", "sigmoid"], "heads.trunk.activation='sigmoid' must be one of relu, tanh"),
    (["--heads.trunk", "{hidden: 2}", "--heads.r", "4"], "heads.r=4 exceeds heads.trunk.hidden=2"),
    (["--config", "configs/synthetic/clip_gmm.yaml", "--heads.trunk.hidden", "8"],
     "heads.trunk is for heads on one modality; clip heads have two linear towers"),
    (["--config", "configs/synthetic/clip_gmm.yaml", "--heads.methods", "[supervised]"],
     "heads.methods has supervised, which trains on the score label, but these are paired features"),
    (["--data.synthetic.preset", "label_hidden", "--data.synthetic.k", "3"], "data.synthetic.k=3 must be 2 for the label_hidden preset"),
    (["--data.synthetic.preset", "label_hidden", "--data.synthetic.k", "2", "--heads.pair_label", "coarse"],
     "heads.pair_label='coarse' is not a label of the data (data.source synthetic carries label, hidden, combined)"),
])
def test_bad_trunks_and_supervised_heads_are_refused_in_one_line(argv, message):
    from ssl_pipeline.cli import parse_command
    from ssl_pipeline.errors import ConfigError

    config = [] if "--config" in argv else ["--config", "configs/synthetic/pancakes.yaml"]
    with pytest.raises(ConfigError) as error:
        parse_command(["synthetic", *config, *argv])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_label_hidden_puts_the_label_on_e1_and_the_hidden_feature_on_e2():
    lab = make_synthetic(GMMConfig(preset="label_hidden", d=10, k=2, n_train=4000, n_val=400, n_test=400,
                                   separation=4.0, hidden_separation=3.0))
    assert lab.label_names == ["label", "hidden", "combined"]
    label, hidden, combined = (lab.label_references[name][0] for name in lab.label_names)
    assert label.shape[1] == hidden.shape[1] == 1 and combined.shape[1] == 2
    assert abs(float(label[:, 0] @ hidden[:, 0])) < 1e-9  # orthogonal directions
    assert fisher_cos2(np.hstack([label, hidden]), combined) > 1 - 1e-9
    train_hidden = lab.other_labels["hidden"][0]
    assert abs(np.corrcoef(lab.y_train, train_hidden)[0, 1]) < 0.05  # independent of the label
    # the class means differ by separation·σ along e₁ and by hidden_separation·σ along e₂
    x = lab.x_train
    gap_label = (x[lab.y_train == 1].mean(0) - x[lab.y_train == 0].mean(0)) @ label[:, 0]
    gap_hidden = (x[train_hidden == 1].mean(0) - x[train_hidden == 0].mean(0)) @ hidden[:, 0]
    assert abs(abs(gap_label) - 4.0) < 0.15 and abs(abs(gap_hidden) - 3.0) < 0.15


def test_a_trunk_run_records_its_trunk_and_every_labels_hidden_probe_and_energy(tmp_path):
    import json

    from ssl_pipeline.cli import main

    argv = ["synthetic", "--config", "configs/synthetic/label_hidden.yaml", "--seeds", "[0]", "--deltas", "[1]",
            "--heads.epochs", "3", "--heads.trunk.hidden", "8", "--data.synthetic.n_train", "800",
            "--score.baselines", "[lda]", "--wandb.mode", "disabled", "--run_dir", str(tmp_path / "run")]
    assert main(argv) == 0
    records = {r["method"]: r for r in json.loads((tmp_path / "run" / "results.json").read_text())}
    ssl, supervised, lda = records["infonce"], records["supervised"], records["lda"]
    assert ssl["trunk"] == supervised["trunk"] == "relu8" and lda["trunk"] is None
    assert (ssl["pairs"], ssl["delta"], ssl["pair_label"]) == ("delta", 1.0, "combined")
    assert (supervised["pairs"], supervised["delta"], supervised["pair_label"]) == ("labels", None, None)
    for name in ("label", "hidden", "combined"):
        assert 0.5 <= ssl[f"hidden_probe_{name}"] <= 1.0 and 0.0 <= ssl[f"label_energy_{name}"] <= 1.0
        assert f"hidden_probe_{name}" not in lda
    assert lda["label_energy_label"] > 0.95 and lda["label_energy_hidden"] < 0.05  # LDA of y: e₁ only
    # e₂ is orthogonal to e₁: the hidden feature's subspace beyond the label's is all of it
    assert ssl["beyond_energy_hidden"] == pytest.approx(ssl["label_energy_hidden"], abs=1e-9)
    assert "beyond_energy_label" not in ssl and 0.5 <= supervised["init_hidden_probe_hidden"] <= 1.0
    assert "init_hidden_probe_label" not in lda
    # the HTML report: one row per method with every label's energy, the trunk heads' hidden probes, and bars
    from ssl_pipeline.reporting.html import build_report

    artifacts = build_report([tmp_path / "run"], tmp_path / "report")
    assert "What the pairs taught about every label" in artifacts.html.read_text()
    (table,) = [rows for key, rows in artifacts.tables.items() if key.endswith("-labels")]
    by_method = {row["method"]: row for row in table}
    assert set(by_method) == {"infonce relu8 pairs:combined", "supervised relu8", "lda"}
    assert by_method["lda"]["label_energy_label_mean"] == pytest.approx(lda["label_energy_label"])
    assert by_method["lda"]["hidden_probe_hidden_mean"] is None
    assert by_method["supervised relu8"]["hidden_probe_hidden_mean"] == pytest.approx(supervised["hidden_probe_hidden"])
    assert sum(key.endswith(("label_energy", "hidden_probe")) for key in artifacts.figures) == 2


def test_beyond_a_nested_labels_subspace_lie_the_fine_directions_within_the_coarse_classes():
    from ssl_pipeline.scoring.labels import beyond_subspaces, label_subspaces

    lab = make_synthetic(GMMConfig(preset="hierarchy", d=24, k=8, k_coarse=4, n_train=800, n_val=200, n_test=200))
    bases = label_subspaces(lab, None)  # the score label is the primary, fine
    assert (bases["fine"].shape[1], bases["coarse"].shape[1]) == (7, 3)
    assert fisher_cos2(bases["coarse"], bases["fine"]) > 1 - 1e-9  # nested: coarse ⊂ fine
    from ssl_pipeline.data.labelled import choose_labels

    scored_on_coarse = choose_labels(lab, None, "coarse")
    beyond = beyond_subspaces(scored_on_coarse, None)["fine"]
    assert beyond.shape[1] == 4  # 7 fine directions, 3 of them the coarse ones
    assert np.abs(beyond.T @ label_subspaces(scored_on_coarse, None)["coarse"]).max() < 1e-9
    np.testing.assert_allclose(beyond.T @ beyond, np.eye(4), atol=1e-9)


def test_per_label_metrics_reach_the_wide_table_and_wandb():
    from ssl_pipeline.records.results import make_record, metric_fields, summary_table
    from ssl_pipeline.reporting.wandb_logging import delta_rows, summary_metrics

    records = [make_record(method="infonce", delta=1.0, seed=s, nmi=0.5, label_energy_hidden=0.1 + 0.1 * s,
                           hidden_probe_hidden=0.9) for s in (0, 1)]
    records.append(make_record(method="lda", seed=0, nmi=0.6, label_energy_hidden=0.0))
    assert metric_fields(records)[-2:] == ("hidden_probe_hidden", "label_energy_hidden")
    with pytest.raises(ValueError, match="unknown record fields"):
        make_record(method="infonce", hidden_energy=0.1)  # not a per-label metric
    summary = summary_metrics(records)
    assert summary["summary/infonce/label_energy_hidden_mean"] == pytest.approx(0.15)
    assert summary["summary/lda/label_energy_hidden_mean"] == 0.0
    assert delta_rows(records)[0]["by_delta/infonce/hidden_probe_hidden"] == pytest.approx(0.9)
    headers = [column.header for column in summary_table(records, wide=True).columns]
    assert "label_energy_hidden" in headers and "hidden_probe_hidden" in headers


def test_a_trunk_heads_hidden_layer_counts_in_the_grids_step_memory():
    from ssl_pipeline.heads.grid import step_bytes

    for method in ("infonce", "vicreg"):
        linear, trunk = head(method, 1.0, 0, hidden=None), head(method, 1.0, 0, hidden=64)
        assert step_bytes(trunk, world_size=2) - step_bytes(linear, world_size=2) == 32 * 128 * 64 * 2
