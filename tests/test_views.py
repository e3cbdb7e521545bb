"""Augmentation views (issue 23): seeded views in the cache, view pairs, their moments, the effective δ, and a run
on a generated ImageFolder end to end."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_datasets import write_image_folder
from rich.console import Console

from ssl_pipeline.cli import main, parse_command
from ssl_pipeline.config import BackboneConfig, DataConfig, DatasetConfig, ExtractConfig, ViewRecipe, ViewsConfig
from ssl_pipeline.data.images import load_split
from ssl_pipeline.data.pairs import ViewPairSampler
from ssl_pipeline.data.views import ViewSplit, apply_view, view_generator, view_parameters
from ssl_pipeline.errors import ConfigError, DataError
from ssl_pipeline.features.shards import ShardWriter
from ssl_pipeline.features.source import extract_all, load_image_features
from ssl_pipeline.scoring.views import effective_delta
from ssl_pipeline.theory.spectral import view_pair_moments

QUIET = Console(quiet=True)
TINY_RESNET = dict(kind="torchvision", name="resnet18", pretrained=None, image_size=32)
CROP = ViewRecipe(name="crop", flip=0.0, jitter_probability=0.0, grayscale=0.0, blur=0.0)


def _data(tmp_path: Path, recipes=(CROP, ViewRecipe()), num_views: int = 3, workers: int = 0,
          root: str = "features") -> DataConfig:
    if not (tmp_path / "images").is_dir():
        write_image_folder(tmp_path / "images", ["cat", "dog", "eel"], 10, 40, seed=0)
    return DataConfig(
        source="images", dataset=DatasetConfig(name="imagefolder", root=str(tmp_path / "images")),
        backbone=BackboneConfig(**TINY_RESNET),
        extract=ExtractConfig(cache_root=str(tmp_path / root), batch_size=8, shard_size=16, num_workers=workers),
        views=ViewsConfig(num_views=num_views, seed=5, recipes=list(recipes)),
    )


def _digests(root: Path) -> dict[str, str]:
    return {p.parent.name + "/" + p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob("*/*.npy"))}


def test_views_differ_within_an_image_and_repeat_exactly_for_the_same_seed(tmp_path):
    data = _data(tmp_path)
    base = load_split(data.dataset, "train", 0)
    recipe = ViewRecipe()  # SimCLR: crop, flip, jitter, grayscale, blur
    first, again = ViewSplit(base, recipe, 3, seed=5, size=32), ViewSplit(base, recipe, 3, seed=5, size=32)
    other_seed = ViewSplit(base, recipe, 3, seed=6, size=32)
    assert len(first) == 3 * len(base)
    views = [first[p][0] for p in range(6)]  # images 0 and 1, three views each
    assert all(v.shape == (3, 32, 32) and v.dtype == torch.uint8 for v in views)
    assert not torch.equal(views[0], views[1]) and not torch.equal(views[1], views[2])  # one image, other views
    for p in range(6):
        assert torch.equal(first[p][0], again[p][0])  # the same seed: bit-identical
        assert first[p][1] == base[p // 3][1]  # each view keeps its image's label
    assert any(not torch.equal(first[p][0], other_seed[p][0]) for p in range(6))
    # a view is a function of (seed, image, view) alone: drawn again here from its generator
    image = base[1][0]
    p = view_parameters(recipe, image.shape[1], image.shape[2], view_generator(5, int(base.indices[1]), 2))
    assert torch.equal(apply_view(image, p, 32), first[5][0])


def test_crop_parameters_stay_inside_the_image_and_the_scale_range():
    recipe = ViewRecipe(crop_scale=[0.3, 0.6])
    for view in range(200):
        p = view_parameters(recipe, 40, 60, view_generator(0, 7, view))
        assert 0 <= p.top and p.top + p.height <= 40 and 0 <= p.left and p.left + p.width <= 60
        assert 0.25 <= p.height * p.width / 2400 <= 0.65  # rounding of h and w around [0.3, 0.6]


@pytest.mark.slow
def test_an_interrupted_view_extraction_resumes_bit_identically_with_other_workers(tmp_path, monkeypatch):
    killed = _data(tmp_path, root="killed")
    written = []
    original = ShardWriter.write_shard

    def killed_after_two_shards(self, shard, *arrays):
        views = "views" in json.dumps(self.identity)
        if views and len(written) == 2:
            raise KeyboardInterrupt("killed")
        original(self, shard, *arrays)
        if views:
            written.append(shard)

    monkeypatch.setattr(ShardWriter, "write_shard", killed_after_two_shards)
    with pytest.raises(KeyboardInterrupt):
        extract_all(killed, QUIET, views=True)
    monkeypatch.undo()
    assert len(list((tmp_path / "killed").glob("*/manifest.json"))) == 2  # train and test; the views are partial
    resumed = extract_all(dataclasses.replace(killed, extract=dataclasses.replace(killed.extract, num_workers=2)),
                          QUIET, views=True)
    timing = resumed["views:crop"].manifest["timing"]
    assert timing["images"] < resumed["views:crop"].manifest["num_items"]  # resumed, not started over
    clean = extract_all(_data(tmp_path, root="clean"), QUIET, views=True)
    assert set(clean) == {"train", "test", "views:crop", "views:simclr"}
    assert _digests(tmp_path / "killed") == _digests(tmp_path / "clean") and len(_digests(tmp_path / "clean")) == 12
    x, y, indices = clean["views:crop"].load()
    train_x, train_y, train_indices = clean["train"].load()
    assert x.shape == (3 * len(train_y), train_x.shape[1])
    assert np.array_equal(y, np.repeat(train_y, 3)) and np.array_equal(indices, np.repeat(train_indices, 3))
    assert clean["views:crop"].key != clean["views:simclr"].key


def test_view_features_line_up_with_the_train_and_val_rows(tmp_path):
    data = _data(tmp_path, recipes=(CROP,), num_views=2)
    features = load_image_features(data, QUIET, views=True)
    views = features.views["crop"]
    assert views.table.shape == (2 * (len(features.y_train) + len(features.y_val)), features.dim)
    assert len(views.train_images) == len(features.y_train) and len(views.val_images) == len(features.y_val)
    assert views.views(views.train_images).shape == (len(features.y_train), 2, features.dim)
    # the clean features of an image are close to neither of its views, which differ from each other
    first = views.views(views.train_images[:1])[0]
    assert not np.array_equal(first[0], first[1])


def test_view_pair_moments_equal_the_mean_over_every_pair_of_different_views(rng):
    n, v, d = 7, 4, 5
    table = rng.standard_normal((n * v, d)) + 3.0
    images = np.array([0, 2, 3, 6])
    moments = view_pair_moments(table, v, images, block_bytes=8 * v * d * 3)  # blocks of 3 images
    views = table.reshape(n, v, d)[images]
    pairs = [(x[a] - x[b]) for x in views for a in range(v) for b in range(v) if a != b]
    expected = 0.5 * np.mean([np.outer(p, p) for p in pairs], axis=0)
    np.testing.assert_allclose(moments.delta_covariance, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(moments.total, np.cov(views.reshape(-1, d).T, bias=True), rtol=1e-12, atol=1e-12)
    assert moments.pairs == len(images) * v * (v - 1) // 2


def test_view_pairs_take_two_different_views_of_one_image_each_epoch_afresh():
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    rows = torch.tensor([3, 4, 5, 6, 8, 9, 10, 11])  # the split's images among the whole train split's
    sampler = ViewPairSampler(labels, rows, 3, seeds=[0, 1], batch_size=4)
    epochs = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        steps = list(sampler)
        indices = torch.cat([i for i, _ in steps], dim=-1)  # [S, 3, N]
        coins = torch.cat([c for _, c in steps], dim=-1)
        assert torch.equal(indices[:, 1], indices[:, 2]) and bool((coins == 0).all())
        anchor, positive = indices[:, 0], indices[:, 1]
        assert torch.equal(anchor // 3, positive // 3)  # one image
        assert bool((anchor != positive).all())  # two different views
        for s in range(2):
            assert sorted((anchor[s] // 3).tolist()) == sorted(rows.tolist())  # every image once per epoch
        epochs.append(indices)
    assert not torch.equal(epochs[0], epochs[1])
    again = ViewPairSampler(labels, rows, 3, seeds=[0, 1], batch_size=4)
    again.set_epoch(1)
    assert torch.equal(torch.cat([i for i, _ in again], dim=-1), epochs[1])


@pytest.mark.parametrize(("target", "expected"), [
    (0.35, (0.25, None)),  # inside the first segment: 0 + (0.35 − 0.1)/(0.6 − 0.1)·0.5
    (0.7, (0.75, None)),  # inside the second
    (0.6, (0.5, None)),  # on a grid point
    (0.05, (None, -1)),  # below δ = 0
    (0.95, (None, 1)),  # above δ = 1
])
def test_effective_delta_interpolates_the_curve_and_says_where_it_is_outside(target, expected):
    value, outside = effective_delta([1.0, 0.0, 0.5], [0.8, 0.1, 0.6], target)  # any order of the grid
    assert outside == expected[1]
    assert (value is None) == (expected[0] is None)
    if value is not None:
        assert value == pytest.approx(expected[0], abs=1e-12)


def test_effective_delta_takes_the_first_crossing_of_a_curve_that_is_not_monotone():
    assert effective_delta([0, 0.5, 1], [0.1, 0.9, 0.5], 0.7)[0] == pytest.approx(0.375)
    assert effective_delta([0, 0.5, 1], [0.2, 0.2, 0.8], 0.2) == (0.0, None)  # flat at the target: its lower δ
    assert effective_delta([1.0], [0.4], 0.5) == (None, 1)


@pytest.mark.parametrize(("argument", "message"), [
    (["--data.views.num_views", "1"], "data.views.num_views=1 must be at least 2"),
    (["--data.views.recipes", "[{name: c, crop_scale: [0.0, 1.0]}]"], "data.views.recipes[0].crop_scale"),
    (["--data.views.recipes", "[{name: c, crop_scale: [0.5, 1.2]}]"], "data.views.recipes[0].crop_scale[1]=1.2 must be in (0, 1]"),
    (["--data.views.recipes", "[{name: c, grayscale: -0.1}]"], "data.views.recipes[0].grayscale=-0.1 must be in [0, 1]"),
    (["--data.views.recipes", "[{name: c, blur: 2}]"], "data.views.recipes[0].blur=2"),
    (["--data.source", "synthetic"], "heads.pairs=views trains on augmented views of images, but data.source is synthetic"),
    (["--heads.methods", "[infonce,clip]"], "heads.pairs=views pairs two views of one image; clip heads pair two"),
])
def test_bad_view_settings_are_refused_in_one_line(argument, message):
    argv = ["run", "--config", "configs/views.yaml", *argument]
    with pytest.raises(ConfigError, match=None) as error:
        parse_command(argv)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_gmm_checks_refuse_view_pairs_in_one_line():
    with pytest.raises(ConfigError, match=r"^`check` fits its heads .* no augmented views; use heads.pairs: delta"):
        parse_command(["check", "--config", "configs/views.yaml"])


def test_view_heads_without_their_view_table_name_the_command_to_run(tmp_path):
    from ssl_pipeline.heads.fit import view_pair_data

    features = load_image_features(_data(tmp_path, recipes=(CROP,), num_views=2), QUIET)  # no views loaded
    with pytest.raises(DataError, match=r"no augmented views of recipe 'crop'.*ssl-pipeline extract"):
        view_pair_data(features, "crop", [0], 8, False, 0.5, None)


@pytest.mark.slow
def test_a_view_pair_run_on_a_generated_image_folder_places_each_recipe_on_the_delta_axis(tmp_path):
    write_image_folder(tmp_path / "images", ["cat", "dog", "eel"], 16, 40, seed=0)
    run_dir = tmp_path / "run"
    argv = [
        "run", "--config", "configs/views.yaml", "--data.dataset.name", "imagefolder",
        "--data.dataset.root", str(tmp_path / "images"), "--data.backbone.kind", "torchvision",
        "--data.backbone.name", "resnet18", "--data.backbone.pretrained", "null", "--data.backbone.image_size", "32",
        "--data.extract.cache_root", str(tmp_path / "features"), "--data.extract.num_workers", "0",
        "--data.views.recipes", "[{name: crop, flip: 0.0, jitter_probability: 0.0, grayscale: 0.0, blur: 0.0}, {name: simclr}]",
        "--heads.methods", "[infonce,spectral_contrastive]", "--heads.r", "2", "--heads.epochs", "170",
        # 170 epochs × 32 pairs: the δ closed forms need 10·d = 5,120 sampled pairs
        "--heads.batch_size", "16", "--deltas", "[1,0.5,0]", "--seeds", "[0,1]", "--wandb.mode", "disabled",
        "--run_dir", str(run_dir),
    ]
    assert main(argv) == 0
    records = json.loads((run_dir / "results.json").read_text())
    views = [r for r in records if r["pairs"] == "views"]
    heads = [r for r in views if r["method"] != "spectral"]
    assert sorted({(r["method"], r["views"], r["seed"]) for r in heads}) == sorted(
        (m, v, s) for m in ("infonce", "spectral_contrastive") for v in ("crop", "simclr") for s in (0, 1))
    assert all(r["delta"] is None for r in views)
    for record in views:  # placed on its method's curve: inside it, or below / above it
        assert (record["effective_delta"] is None) != (record["effective_delta_outside"] is None)
        if record["effective_delta"] is not None:
            assert 0.0 <= record["effective_delta"] <= 1.0
    closed = [r for r in views if r["method"] == "spectral"]
    assert len(closed) == 4  # two recipes × two seeds
    for record in closed:
        assert 0 <= record["view_fisher_share"] <= 1 and 0 <= record["within_fisher_share"] <= 1
        assert record["view_within_ratio"] > 0 and record["optimum_cos2"] == pytest.approx(1.0, abs=1e-6)
    spectral_heads = [r for r in heads if r["method"] == "spectral_contrastive"]
    assert all(r["optimum_cos2"] is not None for r in spectral_heads)  # against their recipe's closed form
    assert all(r["pairs"] == "delta" for r in records if r["method"] == "infonce" and r["delta"] is not None)
    assert (run_dir / "views.png").stat().st_size > 0
    # the HTML report: the recipes side by side (one row per recipe and method, closed form included) and a figure
    from ssl_pipeline.reporting.html import build_report

    artifacts = build_report([run_dir], tmp_path / "report")
    page = artifacts.html.read_text()
    assert "Augmentation recipes on the δ axis" in page
    (table,) = [rows for key, rows in artifacts.tables.items() if "views" in key]
    assert sorted((row["recipe"], row["method"]) for row in table) == sorted(
        (v, m) for v in ("crop", "simclr") for m in ("infonce", "spectral_contrastive", "spectral"))
    assert all(row["effective δ"] != "–" for row in table)  # each placed: a δ, or below / above the curve
    assert any("views" in key for key in artifacts.figures)
    assert {p.stem for p in (run_dir / "heads").glob("*views*")} == {
        f"{m}_views-{v}_seed{s}" for m in ("infonce", "spectral_contrastive") for v in ("crop", "simclr") for s in (0, 1)}
