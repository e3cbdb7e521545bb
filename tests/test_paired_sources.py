"""Paired features from real sources (``features.paired``, issue 13 items 5 and 6): the digits two-view stand-in
(backbone features + raw pixels of the same images), an open_clip backbone's images + K × T prompt embeddings
(a tiny randomly initialised model), a paired npz; and every bad input refused in one line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from ssl_pipeline.config import (
    BackboneConfig,
    DataConfig,
    DatasetConfig,
    ExperimentConfig,
    ExtractConfig,
    GMMConfig,
    HeadsConfig,
    validate_experiment,
)
from ssl_pipeline.data.multimodal import ModalityFeatures, PairedFeatures
from ssl_pipeline.data.pairs import sample_cross_modal_partners
from ssl_pipeline.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
QUIET = Console(quiet=True)
STANDIN = ROOT / "configs" / "digits_clip_standin.yaml"
TINY_RESNET = dict(kind="torchvision", name="resnet18", pretrained=None, image_size=32)
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 1},
}


def _one_line(error_type, call, match: str) -> str:
    with pytest.raises(error_type, match=match) as error:
        call()
    message = str(error.value)
    assert "\n" not in message
    return message


def _standin() -> ExperimentConfig:
    from ssl_pipeline.cli import parse_command

    return parse_command(["run", "--config", str(STANDIN)])[1]


def _cached(data: DataConfig) -> bool:
    """Whether both digits splits of ``data`` are complete entries of its cache (nothing would be extracted)."""
    from ssl_pipeline.backbones import describe_backbone
    from ssl_pipeline.data.images import load_split
    from ssl_pipeline.features.cache import FeatureCache, cache_key
    from ssl_pipeline.features.extract import split_identity

    info, cache = describe_backbone(data.backbone), FeatureCache(data.extract.cache_root)
    return all(cache.get(cache_key(split_identity(info, load_split(data.dataset, split, data.split_seed))))
               for split in ("train", "test"))


@pytest.fixture(scope="module")
def standin_data(tmp_path_factory) -> DataConfig:
    """The shipped stand-in's data section on the repository's digits cache when it is complete (the default
    EfficientNet-Lite0 features), else the same split encoded by a tiny random ResNet into a temporary cache (the
    alignment does not depend on the backbone; extracting 1,797 images with EfficientNet-Lite0 would take minutes
    on a small CPU)."""
    data = _standin().data
    data.extract.cache_root = str(ROOT / data.extract.cache_root)
    if _cached(data):
        return data
    return dataclasses.replace(
        data, backbone=BackboneConfig(**TINY_RESNET),
        extract=ExtractConfig(cache_root=str(tmp_path_factory.mktemp("features")), batch_size=256, num_workers=0))


def test_the_shipped_standin_pairs_the_backbone_features_of_digits_with_their_own_pixels(standin_data):
    from sklearn.datasets import load_digits

    from ssl_pipeline.data.images import load_split
    from ssl_pipeline.data.labelled import stratified_split
    from ssl_pipeline.features.paired import paired_features
    from ssl_pipeline.features.source import load_features

    paired = paired_features(standin_data, QUIET)
    images, pixels = paired.modality1, paired.modality2
    unimodal = load_features(standin_data, QUIET)
    digits = load_digits()
    train, test = (load_split(standin_data.dataset, split, 0) for split in ("train", "test"))
    keep, carved = stratified_split(train.labels, 0.1, 0)
    rows = {"train": train.indices[keep], "val": train.indices[carved], "test": test.indices}
    for split in ("train", "val", "test"):
        y = getattr(unimodal, f"y_{split}")
        np.testing.assert_array_equal(getattr(images, f"x_{split}"), getattr(unimodal, f"x_{split}"))
        np.testing.assert_array_equal(getattr(images, f"shared_{split}"), y)
        np.testing.assert_array_equal(getattr(pixels, f"shared_{split}"), y)
        np.testing.assert_array_equal(getattr(pixels, f"x_{split}"), digits.data[rows[split]] / 16.0)
        np.testing.assert_array_equal(digits.target[rows[split]], y)
    assert [len(pixels.shared_train), len(pixels.shared_val), len(pixels.shared_test)] == [1131, 126, 540]
    assert pixels.dim == 64 and pixels.x_train.dtype == np.float32 and 0 <= pixels.x_train.min() <= 1
    assert pixels.x_train.max() == 1.0 and pixels.held_out and paired.aligned and pixels.private_train is None
    assert paired.features_key == unimodal.features_key + "+pixels" and paired.data_kind == "real"
    assert paired.dataset == "digits" and images.class_names == [str(k) for k in range(10)]
    # the heads' view: a partner with δ = 1 is a same-class image's pixels
    import torch

    partners = sample_cross_modal_partners(images.shared_train, pixels.shared_train, 1.0, torch.Generator())
    np.testing.assert_array_equal(pixels.shared_train[partners.numpy()], images.shared_train)
    # the unimodal view by the shared label works without ground truth (scores then estimate the subspaces)
    view = pixels.labelled("shared", paired.dataset, paired.split_seed)
    view.validate()
    assert view.fisher_basis is None and view.class_names == images.class_names and view.data_kind == "real"
    with pytest.raises(ValueError, match="no private labels"):
        pixels.labelled("private", paired.dataset, 0)


def test_digits_features_out_of_step_with_the_images_are_refused(standin_data, monkeypatch):
    from ssl_pipeline.features import paired as module

    real = module.load_features

    def shuffled(cfg, console=None):
        features = real(cfg, console)
        features.y_val = features.y_val[::-1].copy()
        return features

    monkeypatch.setattr(module, "load_features", shuffled)
    _one_line(DataError, lambda: module.paired_features(standin_data, QUIET),
              "^the cached digits features of the val split do not follow the digits images")


def test_a_tiny_open_clip_backbone_pairs_images_with_its_k_times_t_class_prompts(tmp_path):
    import open_clip
    from fake_datasets import write_image_folder

    from ssl_pipeline.backbones import describe_backbone, load_backbone
    from ssl_pipeline.features.cache import cache_key
    from ssl_pipeline.features.extract import text_identity
    from ssl_pipeline.features.paired import paired_features, require_r_within_paired
    from ssl_pipeline.features.source import load_features

    (tmp_path / "ssl-test-tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(tmp_path / "ssl-test-tiny-clip.json")
    write_image_folder(tmp_path / "images", ["cat", "dog", "eel"], 8, 40, seed=0)
    prompts = ["a photo of a {}.", "a {}."]
    data = DataConfig(
        source="images", dataset=DatasetConfig(name="imagefolder", root=str(tmp_path / "images")),
        backbone=BackboneConfig(kind="open_clip", name="ssl-test-tiny-clip", prompts=prompts),
        extract=ExtractConfig(cache_root=str(tmp_path / "features"), batch_size=32, num_workers=0),
    )
    validate_experiment(ExperimentConfig(data=data, heads=HeadsConfig(methods=["clip"], r=2)))  # text by default
    paired = paired_features(data, QUIET)
    images, text = paired.modality1, paired.modality2
    unimodal = load_features(data, QUIET)
    assert images.dim == text.dim == 32 and text.x_train.shape == (6, 32) and not text.held_out
    np.testing.assert_array_equal(text.shared_train, [0, 1, 2, 0, 1, 2])  # row t·K + k: template t, class k
    for split in ("train", "val", "test"):
        assert getattr(text, f"x_{split}") is text.x_train and getattr(text, f"shared_{split}") is text.shared_train
        np.testing.assert_array_equal(getattr(images, f"x_{split}"), getattr(unimodal, f"x_{split}"))
        np.testing.assert_array_equal(getattr(images, f"shared_{split}"), getattr(unimodal, f"y_{split}"))
    direct = load_backbone(data.backbone).encode_text(["a photo of a dog.", "a eel."]).numpy()
    np.testing.assert_allclose(text.x_train[[1, 5]], direct, rtol=1e-5, atol=1e-5)
    text_key = cache_key(text_identity(describe_backbone(data.backbone), ["cat", "dog", "eel"], prompts))
    assert paired.features_key == f"{unimodal.features_key}+text-{text_key}" and not paired.aligned
    assert text.class_names == ["cat", "dog", "eel"] and paired.dataset == "imagefolder"
    _one_line(ConfigError, lambda: require_r_within_paired(HeadsConfig(methods=["clip"], r=[4, 33]), paired),
              r"^heads.r\[1\]=33 exceeds modality 1's dimension d_1=32 \(image\); choose r ≤ 32$")

    one = dataclasses.replace(data, backbone=dataclasses.replace(data.backbone, prompts=["a {}."]))
    single = paired_features(one, QUIET)  # one prompt per class is enough to be every image's partner
    assert single.modality2.x_train.shape == (3, 32) and single.features_key != paired.features_key


def _write_pairs(path: Path, n_train=60, n_test=30, d1=5, d2=3, **changes) -> Path:
    """Paired rows whose first coordinate in both modalities is the row's id (the pairing survives any carve)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        ids = np.arange(n) + (0 if split == "train" else 1000)
        arrays[f"x1_{split}"] = np.column_stack([ids, rng.normal(size=(n, d1 - 1))])
        arrays[f"x2_{split}"] = np.column_stack([ids, rng.normal(size=(n, d2 - 1))])
        arrays[f"y_{split}"] = np.arange(n) % 3
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_a_paired_npz_keeps_its_rows_paired_through_the_val_carve(tmp_path):
    from ssl_pipeline.features.paired import load_npz_pairs, paired_features
    from ssl_pipeline.features.source import npz_features_key

    path = _write_pairs(tmp_path / "pairs.npz")
    data = DataConfig(source="npz", path=str(path), val_fraction=0.2, split_seed=3)
    validate_experiment(ExperimentConfig(data=data, heads=HeadsConfig(methods=["clip"], r=3)))
    paired = paired_features(data)
    x1, x2 = paired.modality1, paired.modality2
    assert (x1.dim, x2.dim) == (5, 3) and paired.aligned and paired.dataset == "pairs"
    assert (len(x1.shared_train), len(x1.shared_val), len(x1.shared_test)) == (48, 12, 30)
    for split in ("train", "val", "test"):
        ids = getattr(x1, f"x_{split}")[:, 0]
        np.testing.assert_array_equal(getattr(x2, f"x_{split}")[:, 0], ids)
        np.testing.assert_array_equal(getattr(x1, f"shared_{split}"), ids.astype(int) % 1000 % 3)
        np.testing.assert_array_equal(getattr(x2, f"shared_{split}"), getattr(x1, f"shared_{split}"))
        assert getattr(x1, f"x_{split}").dtype == np.float32 and getattr(x1, f"shared_{split}").dtype == np.int64
    assert np.bincount(x1.shared_val).tolist() == [4, 4, 4]
    assert paired.features_key == npz_features_key(path) + "+x2"

    given = _write_pairs(tmp_path / "given.npz", x1_val=np.ones((6, 5)), x2_val=np.zeros((6, 3)),
                         y_val=np.arange(6) % 3)
    explicit = load_npz_pairs(str(given), "mine", 0.2, 0)
    assert len(explicit.modality2.x_val) == 6 and len(explicit.modality1.x_train) == 60
    assert explicit.dataset == "mine" and explicit.features_key != paired.features_key


@pytest.mark.parametrize("changes,message", [
    ({"x2_train": np.zeros((59, 3))},
     r"x1_train has 60 rows but x2_train has 59; the two modalities of an npz source are paired row by row$"),
    ({"x2_test": None}, r"lacks arrays \['x2_test'\] \(it has .*\); a paired npz source needs x1_train, x2_train"),
    ({"y_test": np.arange(29) % 3}, r"y_test has shape \(29,\) but x1_test and x2_test have 30 rows"),
    ({"x1_test": np.zeros((30, 4))}, r"x1_test has dimension 4 but x1_train has 5$"),
    ({"x2_train": np.zeros(60)}, r"x2_train must be 2-D \[N, d_2\], got shape \(60,\)$"),
    ({"y_train": np.arange(60) % 3 - 1.0}, r"y_train must hold class labels 0..K−1"),
    ({"x1_val": np.zeros((6, 5))}, r"has \['x1_val'\] but lacks \['x2_val', 'y_val'\]; give all of"),
    ({"x1_train": np.full((60, 5), np.nan)}, r"^modality 1 train split has NaN or inf features$"),
    ({"y_train": np.r_[np.arange(59) % 3, 3]}, r"^cannot carve a stratified val_fraction=0.1"),
])
def test_bad_npz_pairs_are_refused_in_one_line(tmp_path, changes, message):
    from ssl_pipeline.features.paired import load_npz_pairs

    path = _write_pairs(tmp_path / "bad.npz", **changes)
    _one_line(DataError, lambda: load_npz_pairs(str(path), None, 0.1, 0), message)


def test_a_missing_npz_file_is_named(tmp_path):
    from ssl_pipeline.features.paired import load_npz_pairs

    _one_line(DataError, lambda: load_npz_pairs(str(tmp_path / "none.npz"), None, 0.1, 0),
              "none.npz does not exist; give an .npz with x1_train, x2_train, y_train")


def _experiment(data: DataConfig, r=4, methods=("clip",)) -> ExperimentConfig:
    return ExperimentConfig(data=data, heads=HeadsConfig(methods=list(methods), r=r))


DIGITS_PACKAGED = DataConfig(source="images")  # digits + the packaged EfficientNet-Lite0: no text tower
CLIP_BACKBONE = BackboneConfig(kind="open_clip", name="ViT-B-32", pretrained="openai")


@pytest.mark.parametrize("data,r,message", [
    (DIGITS_PACKAGED, 4,
     "^heads.methods contains clip but data.backbone.kind is packaged, which has no text tower; set "
     "data.second_modality: pixels \\(digits stand-in\\) or use an open_clip backbone or an npz with x1_/x2_ arrays$"),
    (DataConfig(), 4, "^heads.methods contains clip, which trains two towers across two modalities; it needs paired"),
    (dataclasses.replace(DIGITS_PACKAGED, second_modality="text"), 4,
     "^data.second_modality=text needs a text tower but data.backbone.kind is packaged; use an open_clip backbone"),
    (dataclasses.replace(DIGITS_PACKAGED, second_modality="pixels", dataset=DatasetConfig(name="cifar10")), 4,
     "^data.second_modality=pixels is the digits stand-in .* but data.dataset.name is cifar10"),
    (DataConfig(source="npz", path="x.npz", second_modality="text"), 4,
     "^data.second_modality=text applies to data.source: images; data.source: npz brings its own second modality "
     r"\(its x2_\* arrays\); remove data.second_modality$"),
    (DataConfig(synthetic=GMMConfig(preset="clip", nuisance_std=15.0), second_modality="pixels"), 4,
     "^data.second_modality=pixels applies to data.source: images; data.source: synthetic brings its own"),
    (dataclasses.replace(DIGITS_PACKAGED, second_modality="pixels"), [8, 65],
     r"^heads.r\[1\]=65 exceeds modality 2's dimension d_2=64 \(the digits' 8×8 pixels\); choose r ≤ 64$"),
])
def test_clip_heads_without_a_usable_second_modality_are_refused_in_one_line(data, r, message):
    _one_line(ConfigError, lambda: validate_experiment(_experiment(data, r)), message)


def test_paired_configs_that_validate(tmp_path):
    validate_experiment(_experiment(dataclasses.replace(DIGITS_PACKAGED, second_modality="pixels"), r=64))
    validate_experiment(_experiment(DataConfig(source="images", backbone=CLIP_BACKBONE)))  # text by default
    validate_experiment(_experiment(DataConfig(source="images", backbone=CLIP_BACKBONE, second_modality="text")))
    # a second modality without clip heads is allowed (unused); a source without one is fine without clip heads
    validate_experiment(_experiment(dataclasses.replace(DIGITS_PACKAGED, second_modality="pixels"),
                                    methods=["infonce"]))
    validate_experiment(_experiment(DIGITS_PACKAGED, methods=["infonce"]))
    validate_experiment(_experiment(DataConfig(source="npz", path=str(tmp_path / "later.npz"))))  # read when loaded
    cfg = _standin()
    assert cfg.data.second_modality == "pixels" and cfg.heads.methods == ["clip"] and cfg.heads.r == 9
    assert cfg.deltas == [1.0, 0.5, 0.0] and cfg.seeds == [0, 1, 2]


def test_an_npz_without_paired_arrays_or_too_narrow_for_r_is_refused_before_loading(tmp_path):
    single = tmp_path / "single.npz"
    np.savez(single, x_train=np.zeros((4, 2)), y_train=np.zeros(4), x_test=np.zeros((4, 2)), y_test=np.zeros(4))
    data = DataConfig(source="npz", path=str(single))
    _one_line(ConfigError, lambda: validate_experiment(_experiment(data)),
              r"^heads.methods contains clip but data.path=.*single.npz lacks the paired arrays \['x1_train', "
              r"'x2_train', .*\] \(it has \['x_test', 'x_train', 'y_test', 'y_train'\]\); give an npz with x1_train")
    validate_experiment(_experiment(data, methods=["infonce"], r=2))  # the unimodal npz source is unchanged
    pairs = DataConfig(source="npz", path=str(_write_pairs(tmp_path / "pairs.npz", d1=5, d2=3)))
    _one_line(ConfigError, lambda: validate_experiment(_experiment(pairs, r=4)),
              r"^heads.r=4 exceeds modality 2's dimension d_2=3 \(x2_train in .*pairs.npz\); choose r ≤ 3$")


def test_paired_features_refuses_a_source_without_a_second_modality():
    from ssl_pipeline.features.paired import paired_features

    _one_line(ConfigError, lambda: paired_features(DIGITS_PACKAGED), "^data.backbone.kind is packaged, which has no "
              "text tower; set data.second_modality: pixels")
    _one_line(ConfigError, lambda: paired_features(DataConfig()), "^data.source: synthetic has no second modality")
    _one_line(ConfigError, lambda: paired_features(DataConfig(source="npz", path="x.npz"), second_modality="text"),
              "^second modality text applies to data.source: images, not npz$")


def test_the_clip_preset_through_paired_features_carries_its_key():
    from ssl_pipeline.features.paired import paired_features
    from ssl_pipeline.features.source import synthetic_features_key

    synthetic = GMMConfig(preset="clip", nuisance_std=15.0, n_train=200, n_val=50, n_test=50)
    paired = paired_features(DataConfig(synthetic=synthetic))
    assert paired.features_key == synthetic_features_key(synthetic) and paired.modality1.has_private
    assert not paired.aligned and paired.modality2.held_out
    assert paired.modality1.labelled("shared", paired.dataset, 0).data_kind == "synthetic"


def test_real_modalities_need_only_features_and_shared_labels():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3)).astype(np.float32), np.arange(8) % 2
    prompts, classes = rng.normal(size=(2, 3)).astype(np.float32), np.arange(2)
    paired = PairedFeatures(ModalityFeatures(x, y, x, y, x, y),
                            ModalityFeatures(prompts, classes, prompts, classes, prompts, classes, held_out=False),
                            dataset="toy", data_kind="real", split_seed=0)
    paired.validate()  # one prompt per class suffices for a modality that is not held out
    held = dataclasses.replace(paired, modality2=dataclasses.replace(paired.modality2, held_out=True))
    _one_line(DataError, held.validate, "^shared class 0 has 1 training sample\\(s\\) in modality 2; cross-modal")
    missing = dataclasses.replace(paired, modality2=ModalityFeatures(prompts[:1], classes[:1], prompts[:1],
                                                                      classes[:1], prompts[:1], classes[:1],
                                                                      held_out=False))
    _one_line(DataError, missing.validate, "^shared class 1 has 0 training sample\\(s\\) in modality 2; every class")
    aligned = dataclasses.replace(paired, modality2=ModalityFeatures(x, y[::-1].copy(), x, y, x, y), aligned=True)
    _one_line(DataError, aligned.validate, "^train split: the two modalities are aligned item by item but their")
