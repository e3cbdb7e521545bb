"""Pair labels and score labels (issue 24): data with several labels (the ``hierarchy`` preset, an npz's
``y_<name>_*``), the δ-pairs sharing one label while every score refers to another, and the records keeping them
apart."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from ssl_pipeline.cli import main, parse_command
from ssl_pipeline.config import GMMConfig
from ssl_pipeline.data.labelled import choose_labels, load_npz_features
from ssl_pipeline.data.synthetic import gmm_parameters, make_synthetic
from ssl_pipeline.errors import ConfigError, DataError
from ssl_pipeline.theory.subspaces import class_statistics, fisher_cos2, fisher_estimate_from_statistics

HIERARCHY = GMMConfig(preset="hierarchy", d=40, k=6, k_coarse=3, n_train=6000, n_val=600, n_test=600,
                      separation=4.0, seed=3)


def test_nested_labels_are_consistent_and_their_true_fisher_subspaces_match_the_estimates():
    features = make_synthetic(HIERARCHY)
    assert features.label == "fine" and features.label_names == ["fine", "coarse"]
    coarse_train = features.other_labels["coarse"][0]
    assert np.array_equal(coarse_train, features.y_train * 3 // 6)  # nested: the coarse class of each fine class
    fine_fisher, _ = features.label_references["fine"]
    coarse_fisher, _ = features.label_references["coarse"]
    assert fine_fisher.shape[1] == 5 and coarse_fisher.shape[1] == 2
    assert fisher_cos2(coarse_fisher, fine_fisher) > 1 - 1e-9  # nested: the coarse directions are fine ones too
    for label, truth in ((features.y_train, fine_fisher), (coarse_train, coarse_fisher)):
        estimate = fisher_estimate_from_statistics(class_statistics(features.x_train, label, int(label.max()) + 1),
                                                   None).basis
        assert fisher_cos2(estimate, truth) > 0.97


def test_crossed_labels_are_independent_with_fisher_subspaces_apart():
    cfg = GMMConfig(**{**HIERARCHY.__dict__, "nesting": "crossed", "k": 4, "clip": HIERARCHY.clip})
    params = gmm_parameters(cfg)
    assert len(params.weights) == 3 * 4
    features = make_synthetic(cfg, params)
    fine, coarse = features.y_train, features.other_labels["coarse"][0]
    joint = np.bincount(coarse * 4 + fine, minlength=12) / len(fine)
    assert np.abs(joint - 1 / 12).max() < 0.02  # every (coarse, fine) equally likely
    fine_fisher, coarse_fisher = (features.label_references[name][0] for name in ("fine", "coarse"))
    assert fisher_cos2(coarse_fisher, fine_fisher) < 0.05


def test_choosing_labels_swaps_the_scores_and_the_pairs_and_names_a_missing_label():
    features = make_synthetic(HIERARCHY)
    assert choose_labels(features, None, "fine") is features  # nothing changes: the same object (its memo kept)
    scored = choose_labels(features, "fine", "coarse")
    assert scored.label == "coarse" and np.array_equal(scored.y_test, features.other_labels["coarse"][2])
    assert scored.fisher_basis is features.label_references["coarse"][0]
    assert np.array_equal(scored.pair_labels("train"), features.y_train)  # pairs still share the fine class
    assert np.array_equal(scored.other_labels["fine"][1], features.y_val)
    paired = choose_labels(features, "coarse", None)
    assert paired.label == "fine" and np.array_equal(paired.pair_labels("val"), features.other_labels["coarse"][1])
    with pytest.raises(DataError, match=r"heads.pair_label='species' is not a label of these data \(they carry fine, coarse\)"):
        choose_labels(features, "species", None)


def test_the_grid_draws_its_pairs_by_the_pair_label(monkeypatch):
    from ssl_pipeline.config import HeadsConfig, TrainerConfig
    from ssl_pipeline.data import pairs
    from ssl_pipeline.heads.fit import fit_grid, quiet_lightning
    from ssl_pipeline.heads.settings import resolve_head_settings

    quiet_lightning()
    features = choose_labels(make_synthetic(HIERARCHY), "coarse", None)
    seen = {}
    original = pairs.CandidateDataModule.__init__

    def record(self, features_, labels, *args, **kwargs):
        seen["labels"] = labels.clone()
        original(self, features_, labels, *args, **kwargs)

    monkeypatch.setattr(pairs.CandidateDataModule, "__init__", record)
    fit_grid(features, [resolve_head_settings(HeadsConfig(r=2, epochs=1, batch_size=512), "infonce", 1.0, 0)],
             TrainerConfig(progress_bar=False))
    assert torch.equal(seen["labels"], torch.from_numpy(features.other_labels["coarse"][0]))


def test_an_npz_brings_its_further_labels_and_refuses_a_partial_one(tmp_path, rng):
    x = rng.standard_normal((200, 6)).astype(np.float32)
    fine = np.arange(200) % 4
    arrays = dict(x_train=x[:150], y_train=fine[:150], x_test=x[150:], y_test=fine[150:],
                  y_coarse_train=fine[:150] // 2, y_coarse_test=fine[150:] // 2)
    np.savez(tmp_path / "two.npz", **arrays)
    features = load_npz_features(str(tmp_path / "two.npz"), None, 0.2, 0)
    assert features.label_names == ["label", "coarse"]
    coarse = choose_labels(features, None, "coarse")
    assert np.array_equal(coarse.y_train, features.y_train // 2) and np.array_equal(coarse.y_val, features.y_val // 2)
    cfg = parse_command(["fit", "--data.source", "npz", "--data.path", str(tmp_path / "two.npz"),
                         "--heads.pair_label", "coarse"])[1]
    assert cfg.heads.pair_label == "coarse"
    with pytest.raises(ConfigError, match=r"^score.label='fine' is not a label of the data \(data.source npz carries label, coarse\)"):
        parse_command(["fit", "--data.source", "npz", "--data.path", str(tmp_path / "two.npz"), "--score.label", "fine"])
    del arrays["y_coarse_test"]
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(DataError, match="has y_coarse_train but lacks y_coarse_test"):
        load_npz_features(str(tmp_path / "partial.npz"), None, 0.2, 0)


@pytest.mark.parametrize(("argv", "message"), [
    (["--heads.pair_label", "coarse"], "heads.pair_label='coarse' is not a label of the data (data.source synthetic carries label)"),
    (["--data.synthetic.preset", "hierarchy", "--data.synthetic.k", "5", "--data.synthetic.k_coarse", "2"],
     "data.synthetic.k=5 must be a multiple of data.synthetic.k_coarse=2 above it"),
    (["--data.synthetic.preset", "hierarchy", "--data.synthetic.k_coarse", "1"], "data.synthetic.k_coarse=1 must be at least 2"),
    (["--data.synthetic.preset", "hierarchy", "--data.synthetic.d", "3", "--data.synthetic.k", "4", "--data.synthetic.k_coarse", "2"],
     "data.synthetic.d=3 must be at least (k − 1) + (k_coarse − 1) = 4"),
])
def test_bad_labels_and_hierarchies_are_refused_in_one_line(argv, message):
    with pytest.raises(ConfigError) as error:
        parse_command(["synthetic", "--config", "configs/synthetic/pancakes.yaml", *argv])
    assert message in str(error.value)


def test_records_keep_the_pair_label_and_the_score_label_apart(tmp_path):
    argv = ["synthetic", "--data.synthetic.preset", "hierarchy", "--data.synthetic.d", "24", "--data.synthetic.k", "4",
            "--data.synthetic.k_coarse", "2", "--data.synthetic.n_train", "2000", "--data.synthetic.n_val", "400",
            "--data.synthetic.n_test", "400", "--heads.methods", "[infonce]", "--heads.r", "3", "--heads.epochs", "2",
            "--heads.batch_size", "256", "--heads.pair_label", "coarse", "--deltas", "[1]", "--seeds", "[0]",
            "--score.baselines", "[lda,spectral]", "--wandb.mode", "disabled", "--run_dir", str(tmp_path / "run")]
    assert main(argv) == 0
    records = {r["method"]: r for r in json.loads((tmp_path / "run" / "results.json").read_text())}
    assert (records["infonce"]["pair_label"], records["infonce"]["score_label"]) == ("coarse", "fine")
    assert (records["spectral"]["pair_label"], records["spectral"]["score_label"]) == ("coarse", "fine")
    assert (records["lda"]["pair_label"], records["lda"]["score_label"]) == (None, "fine")
    # the closed form of coarse pairs recovers the coarse directions only: 1 of the fine label's 3
    assert records["spectral"]["fisher_cos2"] < 0.75 < records["lda"]["fisher_cos2"]


def test_a_train_subsample_keeps_per_class_points_of_the_score_label_and_nothing_else_changes(tmp_path):
    from ssl_pipeline.data.labelled import split_rows, train_subsample
    from ssl_pipeline.theory.chunks import FeatureRows

    features = choose_labels(make_synthetic(HIERARCHY), "fine", "coarse")
    small = train_subsample(features, 5, seed=0)
    assert np.bincount(small.y_train).tolist() == [5, 5, 5]  # per class of the score label (coarse)
    assert small.x_test is features.x_test and small.y_val is features.y_val
    assert len(small.pair_labels("train")) == 15 and small.features_key != features.features_key
    again = train_subsample(features, 5, seed=0)
    assert np.array_equal(again.x_train, small.x_train) and not np.array_equal(
        train_subsample(features, 5, seed=1).x_train, small.x_train)
    rows = np.flatnonzero(np.isin(features.x_train[:, 0], small.x_train[:, 0]))
    assert np.array_equal(features.pair_labels("train")[rows], small.pair_labels("train"))  # pairs cut alike
    # a memory-mapped split stays a lazy view of the file
    np.save(tmp_path / "x.npy", np.asarray(features.x_train))
    mapped = dataclasses.replace(features, x_train=split_rows(np.load(tmp_path / "x.npy", mmap_mode="r"),
                                                              np.arange(len(features.y_train))))
    lazy = train_subsample(mapped, 5, seed=0)
    assert isinstance(lazy.x_train, FeatureRows) and np.array_equal(np.asarray(lazy.x_train), small.x_train)
    with pytest.raises(DataError, match=r"data.train_per_class=100000 exceeds the smallest class of train"):
        train_subsample(features, 100000, seed=0)


def test_a_small_data_run_records_its_train_per_class(tmp_path):
    argv = ["synthetic", "--data.synthetic.preset", "hierarchy", "--data.synthetic.d", "24", "--data.synthetic.k", "4",
            "--data.synthetic.k_coarse", "2", "--data.synthetic.n_train", "2000", "--data.synthetic.n_val", "400",
            "--data.synthetic.n_test", "400", "--data.train_per_class", "20", "--heads.methods", "[vicreg]",
            "--heads.vicreg.sim_coeff", "[1,25]", "--heads.r", "3", "--heads.epochs", "2", "--heads.batch_size", "16",
            "--deltas", "[1]", "--seeds", "[0]", "--score.baselines", "[lda]", "--wandb.mode", "disabled",
            "--run_dir", str(tmp_path / "run")]
    assert main(argv) == 0
    records = json.loads((tmp_path / "run" / "results.json").read_text())
    assert {r["train_per_class"] for r in records} == {20}
    assert sorted(r["loss_weights"] for r in records if r["method"] == "vicreg") == ["1/25/1", "25/25/1"]
    with pytest.raises(ConfigError, match=r"data.train_per_class=1 must be at least 2"):
        parse_command(argv[:-2] + ["--data.train_per_class", "1"])


def test_train_per_class_as_an_axis_fits_and_scores_once_per_size_into_one_results_file(tmp_path):
    argv = ["synthetic", "--data.synthetic.preset", "hierarchy", "--data.synthetic.d", "24", "--data.synthetic.k", "4",
            "--data.synthetic.k_coarse", "2", "--data.synthetic.n_train", "2000", "--data.synthetic.n_val", "400",
            "--data.synthetic.n_test", "400", "--data.train_per_class", "[5,40]", "--heads.methods", "[infonce]",
            "--heads.r", "3", "--heads.epochs", "2", "--heads.batch_size", "16", "--deltas", "[1]", "--seeds", "[0]",
            "--score.baselines", "[lda]", "--wandb.mode", "disabled", "--run_dir", str(tmp_path / "run")]
    assert main(argv) == 0
    records = json.loads((tmp_path / "run" / "results.json").read_text())
    assert sorted((r["method"], r["train_per_class"]) for r in records) == [
        ("infonce", 5), ("infonce", 40), ("lda", 5), ("lda", 40)]
    for n in (5, 40):  # each size is a run of its own, with its heads and results
        part = json.loads((tmp_path / "run" / f"train_per_class{n}" / "results.json").read_text())
        assert part == [r for r in records if r["train_per_class"] == n]
        assert len(list((tmp_path / "run" / f"train_per_class{n}" / "heads").glob("*.safetensors"))) == 1
    lda = {r["train_per_class"]: r["probe_acc"] for r in records if r["method"] == "lda"}
    assert lda[5] < lda[40]  # LDA fitted on 20 points against 160
    for value, message in (("[5,5]", r"data.train_per_class\[1\]=5 repeats data.train_per_class\[0\]"),
                           ("[5,1]", r"data.train_per_class\[1\]=1 must be at least 2")):
        with pytest.raises(ConfigError, match=message):
            parse_command(argv[:-2] + ["--data.train_per_class", value])


TINY_RESNET = dict(kind="torchvision", name="resnet18", pretrained=None, image_size=32)


def _image_data(tmp_path, dataset):
    from ssl_pipeline.config import BackboneConfig, DataConfig, ExtractConfig

    return DataConfig(source="images", dataset=dataset, backbone=BackboneConfig(**TINY_RESNET),
                      extract=ExtractConfig(cache_root=str(tmp_path / "features"), batch_size=32, num_workers=0))


@pytest.mark.slow
def test_cifar100_carries_its_coarse_labels_from_its_own_files(tmp_path, monkeypatch):
    from fake_datasets import register_cifar100_md5, write_cifar100

    from ssl_pipeline.config import DatasetConfig, data_labels
    from ssl_pipeline.features.source import load_image_features

    register_cifar100_md5(monkeypatch, write_cifar100(tmp_path / "cifar", 1200, 200, seed=2))  # val: 120 ≥ 100 classes
    data = _image_data(tmp_path, DatasetConfig(name="cifar100", root=str(tmp_path / "cifar")))
    assert data_labels(data) == ["label", "coarse"]
    features = load_image_features(data)
    coarse = features.other_labels["coarse"]
    for split, values in zip(("train", "val", "test"), coarse):
        assert np.array_equal(values, getattr(features, f"y_{split}") // 5)  # the fake files' coarse = fine // 5
    assert choose_labels(features, None, "coarse").num_classes == 20


def test_a_groups_file_gives_every_class_its_group_and_is_refused_when_incomplete(tmp_path):
    from fake_datasets import write_image_folder

    from ssl_pipeline.config import DatasetConfig, read_groups
    from ssl_pipeline.features.source import load_image_features

    write_image_folder(tmp_path / "images", ["cat", "dog", "eel"], 10, 40, seed=0)
    groups = tmp_path / "groups.yaml"
    groups.write_text("pets: [cat, dog]\nfish: [eel]\n")
    dataset = DatasetConfig(name="imagefolder", root=str(tmp_path / "images"), groups=str(groups))
    features = load_image_features(_image_data(tmp_path, dataset))
    assert np.array_equal(features.other_labels["group"][0], (features.y_train == 2).astype(np.int64))
    assert np.array_equal(features.other_labels["group"][2], (features.y_test == 2).astype(np.int64))
    groups.write_text("pets: [cat]\nfish: [eel]\n")
    with pytest.raises(DataError, match=r"groups=.* does not list class 'dog'; put every class in a group"):
        load_image_features(_image_data(tmp_path / "again", dataset))
    groups.write_text("pets: [cat, dog]\nfish: [eel, dog]\n")
    with pytest.raises(ConfigError, match=r"puts class 'dog' in two groups \('pets' and 'fish'\)"):
        read_groups(str(groups))
    with pytest.raises(ConfigError, match=r"data.dataset.groups='.*missing.yaml' does not exist"):
        parse_command(["extract", "--data.source", "images", "--data.dataset.groups", str(tmp_path / "missing.yaml")])


def test_a_label_of_a_missing_npz_is_left_to_the_file_check(tmp_path):
    from ssl_pipeline.errors import PipelineError

    try:  # the labels of an npz that is not there cannot be known: no label error, the file is named later
        parse_command(["fit", "--data.source", "npz", "--data.path", str(tmp_path / "none.npz"),
                       "--heads.pair_label", "coarse"])
    except PipelineError as error:
        assert "pair_label" not in str(error)
