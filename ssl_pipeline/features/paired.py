"""Paired features of two modalities from a config (``PairedFeatures``: what the ``clip`` heads train on), with
their identity in ``features_key``.

Four sources (``config.paired_source``):

A run's features (``load_run_features``) are these pairs' modality 1 when it is paired (``paired_run``), else
the config's labelled features (``features.source.load_features``).

``synthetic``: the ``clip`` preset (``data.multimodal.make_clip_gmm``), two independent labelled draws.

``text`` (an open_clip backbone): modality 1 = the images' cached features, train/val/test exactly as
``load_features`` gives them, shared label = the class. Modality 2 = the text tower's embeddings of the K × T
prompts (``data.backbone.prompts`` × class names, the ones the zero-shot baseline uses and the cache already
holds), row t·K + k = template t filled with class k, shared label k. The text side has no held-out split: the
same K × T items are modality 2's train, val and test (``ModalityFeatures.held_out`` False), so retrieval on test
queries test images against the K × T prompts. A head pairs each training image with a prompt of its class with
probability δ — uniform over that class's T prompts, i.e. one template drawn per pair — else with a uniformly
random one of the K × T prompts, which is a uniform class and a uniform template since every class has T prompts.

``pixels`` (digits, a two-view stand-in, not CLIP): modality 1 = the backbone's features of the digits images
(``load_features``), modality 2 = the raw 8 × 8 pixels (64-d float32, the 0..16 intensities scaled by 1/16 to
[0, 1]) of the same split's images, item i of both being the same image (``PairedFeatures.aligned``). A head's
partner of an image is then the pixels of an image of its class with probability δ (possibly itself, with
probability 1/n_class) and of a uniformly random image otherwise; the class plays k_s.

``npz``: arrays ``x1_train, x2_train, y_train, x1_test, x2_test, y_test`` (optionally ``x1_val, x2_val, y_val``,
else a stratified ``val_fraction`` of train is carved with ``split_seed``, the same rows from both modalities):
row i of x1 and of x2 are paired and share the label y[i].

Features keys: ``<modality 1's key>+<modality 2's>``: ``img-…+text-<text cache key>`` (backbone, class names and
templates), ``img-…+pixels``, ``npz-<sha256[:16]>+x2`` (the file holds both), ``gmm-…`` for the preset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from rich.console import Console

from ssl_pipeline.config import (
    DIGITS_PIXELS,
    NPZ_PAIRED_ARRAYS,
    DataConfig,
    ExperimentConfig,
    HeadsConfig,
    paired_source,
    require_r_within,
)
from ssl_pipeline.data.labelled import LabelledFeatures, choose_labels, stratified_split, train_subsample
from ssl_pipeline.data.multimodal import ModalityFeatures, PairedFeatures
from ssl_pipeline.errors import ConfigError, DataError
from ssl_pipeline.features.source import load_features, npz_features_key, synthetic_features_key

SPLITS = ("train", "val", "test")


def paired_features(cfg: DataConfig, console: Optional[Console] = None,
                    second_modality: Optional[str] = None) -> PairedFeatures:
    """The paired features of ``cfg`` (the module's description), validated (``PairedFeatures.validate``), with
    ``features_key`` set.
    ``second_modality`` (``text`` or ``pixels``, images sources) overrides ``cfg.second_modality``; by default the
    source is ``config.paired_source(cfg)``. ConfigError (one line) when the source has no second modality."""
    if second_modality is not None and cfg.source != "images":
        raise ConfigError(f"second modality {second_modality} applies to data.source: images, not {cfg.source}")
    source = second_modality or paired_source(cfg)
    if source is None:
        raise ConfigError(
            f"data.source: {cfg.source} has no second modality for clip heads; use data.synthetic.preset: clip, an npz "
            "with x1_/x2_ arrays, an open_clip backbone (text) or data.second_modality: pixels (digits stand-in)"
            if cfg.source != "images" else
            f"data.backbone.kind is {cfg.backbone.kind}, which has no text tower; set data.second_modality: pixels "
            "(digits stand-in) or use an open_clip backbone or an npz with x1_/x2_ arrays")
    if source == "synthetic":
        paired = _synthetic_pairs(cfg, console)
    elif source == "npz":
        paired = load_npz_pairs(cfg.path, cfg.name, cfg.val_fraction, cfg.split_seed)
    elif source == "text":
        paired = image_text_pairs(cfg, console)
    elif source == "pixels":
        paired = digits_pixel_pairs(cfg, console)
    else:
        raise ValueError(f"unknown second modality {source!r}; expected text or pixels")
    return paired


def paired_run(cfg: ExperimentConfig) -> bool:
    """Whether the run trains on two paired modalities: CLIP heads, or the ``clip`` preset's data."""
    return "clip" in cfg.heads.methods or (cfg.data.source == "synthetic" and cfg.data.synthetic.preset == "clip")


def load_run_features(cfg: ExperimentConfig, console: Console) -> LabelledFeatures:
    """The features a run fits and scores. Paired runs (``paired_run``) build both modalities and return modality 1
    labelled by the shared label, the pairs attached (``LabelledFeatures.paired``: CLIP heads train on them, tower
    2 is scored on modality 2); the unimodal heads and the baselines of such a run use modality 1. Otherwise the
    config's labelled feature source (``load_features``)."""
    if not paired_run(cfg):
        features = load_features(cfg.data, console, views=cfg.heads.pairs == "views")
        features = choose_labels(features, cfg.heads.pair_label, cfg.score.label)
        return train_subsample(features, cfg.data.train_per_class, cfg.data.split_seed)
    if cfg.data.source == "synthetic" and cfg.data.synthetic.preset != "clip":
        raise ConfigError(f"heads.methods contains clip but data.synthetic.preset is {cfg.data.synthetic.preset}; "
                          "CLIP heads need two modalities: use data.synthetic.preset: clip")
    paired = paired_features(cfg.data, console)
    require_r_within_paired(cfg.heads, paired)
    if cfg.heads.target == "combined" and "clip" in cfg.heads.methods:
        raise ConfigError("heads.target=combined labels modality 1 by (k_s, k_1) for unimodal heads, but CLIP heads "
                          "pair by k_s; run the clip heads and the combined-label heads in two runs")
    return paired.view(1, cfg.heads.target)


def require_r_within_paired(heads: HeadsConfig, paired: PairedFeatures) -> None:
    """Every value of ``heads.r`` fits both modalities' dimensions (ConfigError naming the first that does not and
    the modality): the check ``config.validate_paired`` cannot make before an open_clip tower's width is known."""
    for m in (1, 2):
        modality = paired.modality(m)
        require_r_within(heads, modality.dim, f"modality {m}'s dimension d_{m}", modality.name or "")


def _synthetic_pairs(cfg: DataConfig, console: Optional[Console] = None) -> PairedFeatures:
    """The ``clip`` preset's two modalities (``data.multimodal.make_clip_gmm``); with a console, their population
    geometry printed first."""
    from ssl_pipeline.data.multimodal import clip_parameters, make_clip_gmm  # scipy
    from ssl_pipeline.theory.clip_gmm import clip_subspace_report

    params = clip_parameters(cfg.synthetic)
    if console is not None:
        for m, modality in enumerate(params, start=1):
            report = clip_subspace_report(modality)
            console.print(f"modality {m}: cos² shared Fisher–means {report['shared_fisher_vs_means']:.2f}, "
                          f"shared Fisher–PCA {report['shared_fisher_vs_pca']:.2f}, "
                          f"PCA energy in the noise block {report['pca_noise_energy']:.2f}")
    paired = make_clip_gmm(cfg.synthetic, params)
    paired.features_key = synthetic_features_key(cfg.synthetic)
    paired.validate()
    return paired


def _from_labelled(features: LabelledFeatures, name: str) -> ModalityFeatures:
    """Unimodal labelled features as a modality whose shared label is the class (no private label, no ground truth)."""
    return ModalityFeatures(
        features.x_train, features.y_train, features.x_val, features.y_val, features.x_test, features.y_test,
        name=name, class_names=list(features.class_names) or None,
        shared_fisher_basis=features.fisher_basis, shared_means_basis=features.means_basis,
    )


def image_text_pairs(cfg: DataConfig, console: Optional[Console] = None) -> PairedFeatures:
    """Modality 1: the images' features (``load_features``); modality 2: the K × T prompt embeddings of the text
    tower (row t·K + k: template t, class k; label k), the same items as train, val and test."""
    from ssl_pipeline import backbones
    from ssl_pipeline.features.cache import cache_key
    from ssl_pipeline.features.extract import text_identity  # torch

    if cfg.source != "images" or cfg.backbone.kind != "open_clip":
        raise ConfigError(f"data.second_modality=text needs data.source: images with an open_clip backbone, got "
                          f"data.source: {cfg.source}, data.backbone.kind: {cfg.backbone.kind}")
    images = load_features(cfg, console)
    if images.text_features is None:
        raise DataError(f"backbone {images.backbone} gave no text features; it needs a text tower (open_clip)")
    k, templates = len(images.class_names), len(cfg.backbone.prompts)
    text = np.asarray(images.text_features, dtype=np.float32)
    if text.shape[0] != k * templates:
        raise DataError(f"the cached text features have {text.shape[0]} rows, not {templates} templates × {k} "
                        "classes; rebuild them with data.extract.force: true")
    labels = np.tile(np.arange(k, dtype=np.int64), templates)
    modality2 = ModalityFeatures(text, labels, text, labels, text, labels, held_out=False, name="text",
                                 class_names=list(images.class_names))
    info = backbones.describe_backbone(cfg.backbone)
    text_key = cache_key(text_identity(info, images.class_names, cfg.backbone.prompts))
    paired = PairedFeatures(_from_labelled(images, "image"), modality2, dataset=images.dataset, data_kind="real",
                            backbone=images.backbone, text_features=images.text_features,
                            split_seed=cfg.split_seed, features_key=f"{images.features_key}+text-{text_key}")
    paired.validate()
    return paired


def digits_pixels(cfg: DataConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (raw pixels [N, 64] float32 in [0, 1], labels [N] int64)} of the digits images of ``cfg``'s train,
    val and test splits in the order ``load_features`` gives their features: the test carve of ``data.images``
    (``dataset.test_fraction``, ``split_seed``), then the val carve of train (``val_fraction``, ``split_seed``)."""
    from sklearn.datasets import load_digits

    from ssl_pipeline.data.images import load_split  # torch, torchvision, PIL

    digits = load_digits()
    pixels = (digits.data / 16.0).astype(np.float32)
    train, test = (load_split(cfg.dataset, split, cfg.split_seed) for split in ("train", "test"))
    keep, carved = stratified_split(train.labels, cfg.val_fraction, cfg.split_seed)
    rows = {"train": train.indices[keep], "val": train.indices[carved], "test": test.indices}
    return {split: (pixels[rows[split]], digits.target[rows[split]].astype(np.int64)) for split in SPLITS}


def digits_pixel_pairs(cfg: DataConfig, console: Optional[Console] = None) -> PairedFeatures:
    """Modality 1: the backbone's features of the digits images (``load_features``); modality 2: the same images'
    raw 8 × 8 pixels (``digits_pixels``), item i of both the same image."""
    if cfg.source != "images" or cfg.dataset.name != "digits":
        raise ConfigError(f"data.second_modality=pixels is the digits stand-in; it needs data.source: images and "
                          f"data.dataset.name: digits, got {cfg.source} and {cfg.dataset.name}")
    images = load_features(cfg, console)
    pixels = digits_pixels(cfg)
    for split in SPLITS:
        if not np.array_equal(pixels[split][1], getattr(images, f"y_{split}")):
            raise DataError(f"the cached digits features of the {split} split do not follow the digits images of that "
                            "split (their labels differ); rebuild them with data.extract.force: true")
    modality2 = ModalityFeatures(*(array for split in SPLITS for array in pixels[split]), name="pixels",
                                 class_names=list(images.class_names))
    assert modality2.dim == DIGITS_PIXELS
    paired = PairedFeatures(_from_labelled(images, "image"), modality2, dataset=images.dataset, data_kind="real",
                            backbone=images.backbone, text_features=images.text_features,
                            split_seed=cfg.split_seed, features_key=f"{images.features_key}+pixels", aligned=True)
    paired.validate()
    return paired


def load_npz_pairs(path: Optional[str], name: Optional[str], val_fraction: float, split_seed: int) -> PairedFeatures:
    """Paired features from an ``.npz`` with ``x1_train, x2_train, y_train, x1_test, x2_test, y_test`` (optionally
    ``x1_val, x2_val, y_val``; else a stratified ``val_fraction`` of train, the same rows of both modalities,
    carved with ``split_seed``). Row i of x1 and x2 share the label y[i]. DataError with one line for a missing
    file or array, a modality or label count that differs between the two sides, or a bad shape."""
    file = Path(str(path))
    if path is None or not file.is_file():
        raise DataError(f"feature file {file} does not exist; give an .npz with {', '.join(NPZ_PAIRED_ARRAYS)}")
    try:
        arrays = np.load(file, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise DataError(f"cannot read {file} as an .npz without pickle ({error}); re-save it with numpy.savez") from error
    with arrays:
        names = set(arrays.files)
        missing = [k for k in NPZ_PAIRED_ARRAYS if k not in names]
        if missing:
            raise DataError(f"{file} lacks arrays {missing} (it has {sorted(names)}); a paired npz source needs "
                            f"{', '.join(NPZ_PAIRED_ARRAYS)} (optionally x1_val, x2_val, y_val)")
        val_names = ("x1_val", "x2_val", "y_val")
        given = [k for k in val_names if k in names]
        if given and len(given) < 3:
            raise DataError(f"{file} has {given} but lacks {[k for k in val_names if k not in names]}; give all of "
                            "x1_val, x2_val, y_val or none (val is then carved from train)")
        splits = SPLITS if given else ("train", "test")
        data = {split: {kind: arrays[f"{kind}_{split}"] for kind in ("x1", "x2", "y")} for split in splits}
    for split in splits:
        _check_npz_split(file, split, data[split], data["train"])
    if not given:
        train = data["train"]
        try:
            keep, carved = stratified_split(train["y"], val_fraction, split_seed)
        except ValueError as error:
            raise DataError(f"cannot carve a stratified val_fraction={val_fraction} from {file}'s train rows "
                            f"({error}); add rows or give x1_val, x2_val, y_val") from error
        data["val"] = {kind: array[carved] for kind, array in train.items()}
        data["train"] = {kind: array[keep] for kind, array in train.items()}
    modalities = [
        ModalityFeatures(*(a for split in SPLITS for a in (data[split][f"x{m}"].astype(np.float32, copy=False),
                                                          data[split]["y"].astype(np.int64, copy=False))),
                         name=f"x{m}")
        for m in (1, 2)
    ]
    paired = PairedFeatures(*modalities, dataset=name or file.stem, data_kind="real", split_seed=split_seed,
                            features_key=f"{npz_features_key(file)}+x2", aligned=True)
    paired.validate()
    return paired


def _check_npz_split(file: Path, split: str, arrays: dict[str, np.ndarray], train: dict[str, np.ndarray]) -> None:
    """One split of a paired npz: x1 and x2 are [N, d_m] with the same N (and train's d_m), y is [N] integers."""
    for m in (1, 2):
        x = arrays[f"x{m}"]
        if x.ndim != 2:
            raise DataError(f"{file}: x{m}_{split} must be 2-D [N, d_{m}], got shape {x.shape}")
        if x.shape[1] != train[f"x{m}"].shape[1]:
            raise DataError(f"{file}: x{m}_{split} has dimension {x.shape[1]} but x{m}_train has "
                            f"{train[f'x{m}'].shape[1]}")
    n1, n2, y = len(arrays["x1"]), len(arrays["x2"]), arrays["y"]
    if n1 != n2:
        raise DataError(f"{file}: x1_{split} has {n1} rows but x2_{split} has {n2}; the two modalities of an npz "
                        "source are paired row by row")
    if y.ndim != 1 or len(y) != n1:
        raise DataError(f"{file}: y_{split} has shape {y.shape} but x1_{split} and x2_{split} have {n1} rows; give "
                        "one integer label per row pair")
    if len(y) and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0):
        raise DataError(f"{file}: y_{split} must hold class labels 0..K−1 (non-negative integers), got {y.dtype} "
                        f"from {y.min()}")
