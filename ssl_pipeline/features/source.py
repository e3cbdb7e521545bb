"""The labelled feature sources of a config (``data.source``: ``images``, ``synthetic``, ``npz``) and their
identity keys (``LabelledFeatures.features_key``: saved heads record it, and ``score`` refuses heads fitted on
other features).

The ``images`` source, in an order of work that makes mistakes cost nothing: validate the dataset's presence and
the backbone's name, tag and weights' reachability (one clear line each), check the headers of the image files of
every split still to be extracted (``unreadable_images``), then reuse complete cache entries — building the
backbone only if some split still has to be extracted — and finally carve val from train (seeded, stratified).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
from rich.console import Console

from ssl_pipeline import backbones
from ssl_pipeline.config import DataConfig, GMMConfig
from ssl_pipeline.data.labelled import LabelledFeatures, load_npz_features, split_rows, stratified_split
from ssl_pipeline.digests import file_sha256, json_digest
from ssl_pipeline.errors import ConfigError, DataError
from ssl_pipeline.features.cache import CacheEntry, FeatureCache, cache_key
from ssl_pipeline.features.tables import extraction_table

if TYPE_CHECKING:
    from ssl_pipeline.data.images import ImageSplit


def load_features(cfg: DataConfig, console: Optional[Console] = None, views: bool = False) -> LabelledFeatures:
    """The labelled feature source of a config, validated, with its identity in ``features_key``; ``views``: with
    the augmented views of the train images (images only, ``load_image_features``)."""
    if cfg.source == "synthetic" and cfg.synthetic.preset == "clip":
        raise ConfigError("data.synthetic.preset=clip generates two paired modalities; this command reads one "
                          "labelled source (fit and score them with `ssl-pipeline synthetic`), use another preset")
    if cfg.source == "synthetic":
        from ssl_pipeline.data.synthetic import gmm_parameters, make_synthetic  # scipy
        from ssl_pipeline.theory.gmm import subspace_report

        params = gmm_parameters(cfg.synthetic)
        if console is not None:
            report = subspace_report(params)
            eigenvalues = "/".join(f"{v:.2g}" for v in report["fisher_eigenvalues"])
            console.print(f"mixture {cfg.synthetic.preset}: cos² Fisher–means {report['fisher_vs_means']:.2f}, "
                          f"Fisher–PCA {report['fisher_vs_pca']:.2f}, Fisher–minor {report['fisher_vs_minor']:.2f}, "
                          f"means–PCA {report['means_vs_pca']:.2f}, means–minor {report['means_vs_minor']:.2f}, "
                          f"PCA–minor {report['pca_vs_minor']:.2f} (top / bottom {len(params.weights) - 1} "
                          f"eigenvectors of Σ_T); Fisher eigenvalues {eigenvalues}")
        features = make_synthetic(cfg.synthetic, params)
        features.features_key = synthetic_features_key(cfg.synthetic)
        features.validate()
        return features
    if cfg.source == "images":
        return load_image_features(cfg, console, views)
    features = load_npz_features(cfg.path, cfg.name, cfg.val_fraction, cfg.split_seed)
    features.features_key = npz_features_key(cfg.path)
    return features


def synthetic_features_key(cfg: GMMConfig) -> str:
    """``gmm-`` and a digest of the mixture's settings (the data are generated from them, seed included); the
    ``clip`` section enters only for the ``clip`` preset, so the other presets keep the keys they had before it."""
    settings = asdict(cfg)
    if cfg.preset != "clip":
        settings.pop("clip")
    for name, default in (("alpha", 1.0), ("quiet_dims", 0), ("quiet_std", 0.5)):  # absent at their defaults: the
        if settings[name] == default and (name != "alpha" or cfg.preset != "spectrum"):  # keys from before them
            settings.pop(name)
    return "gmm-" + json_digest(settings)


def npz_features_key(path: str | Path) -> str:
    """``npz-`` and the file's sha256 (its first 16 hex characters)."""
    return "npz-" + file_sha256(path)[:16]


def image_features_key(train: CacheEntry, test: CacheEntry, val_fraction: float, split_seed: int) -> str:
    """``img-`` and a digest of the train and test cache keys (backbone, weights, preprocessing, dataset split)
    and of the carve of val from train."""
    return "img-" + json_digest({"train": train.key, "test": test.key, "val_fraction": val_fraction,
                                 "split_seed": split_seed})


def extract_all(cfg: DataConfig, console: Console, relaunch: bool = False,
                views: bool = False) -> dict[str, CacheEntry]:
    """Cache entries of the train and test splits (and of the class-name prompts for a text tower); with ``views``
    (``heads.pairs: views``), also ``views:<recipe>`` of every recipe of ``cfg.views``: the augmented views of the
    train images (``data.views.ViewSplit``: N·V rows, image-major). ``relaunch``: this command may be re-run whole
    by Lightning's launcher to start more extraction ranks (only ``ssl-pipeline extract`` says so;
    ``features.ranks.extraction_ranks``)."""
    from ssl_pipeline.data.images import check_available, load_split  # torch, torchvision, PIL
    from ssl_pipeline.features.extract import extract_split, extract_text  # torch

    check_available(cfg.dataset)
    info = backbones.describe_backbone(cfg.backbone)
    cache = FeatureCache(cfg.extract.cache_root)
    splits = {name: load_split(cfg.dataset, name, cfg.split_seed) for name in ("train", "test")}
    if cfg.dataset.groups:  # every class in a group, checked before any image is decoded
        from ssl_pipeline.config import read_groups
        from ssl_pipeline.data.images import require_grouped

        require_grouped(read_groups(cfg.dataset.groups), splits["train"].class_names, cfg.dataset.groups)
    if not cfg.dataset.skip_corrupt:
        for split in splits.values():
            _refuse_unreadable_images(split, info, cache, cfg, console)
    built = []

    def get_backbone():
        if not built:
            console.print(f"loading backbone {info.identity}")
            built.append(backbones.load_backbone(cfg.backbone, info))
        return built[0]

    entries = {}
    for split_name, split in splits.items():
        entries[split_name] = extract_split(split, info, get_backbone, cache, cfg.extract, console,
                                            cfg.dataset.skip_corrupt, relaunch)
    if views:
        from ssl_pipeline.data.views import ViewSplit  # torch, torchvision

        for recipe in cfg.views.recipes:
            view_split = ViewSplit(splits["train"], recipe, cfg.views.num_views, cfg.views.seed,
                                   info.preprocess.resize, info.preprocess.interpolation)
            entries[f"views:{recipe.name}"] = extract_split(view_split, info, get_backbone, cache, cfg.extract,
                                                            console, cfg.dataset.skip_corrupt, relaunch)
    if info.has_text:
        class_names = entries["train"].manifest["class_names"]
        entries["text"] = extract_text(info, get_backbone, class_names, cfg.backbone.prompts, cache, cfg.extract.force)
    console.print(extraction_table(entries, info.identity, extracted=bool(built)))
    return entries


def _refuse_unreadable_images(
    split: ImageSplit, info: backbones.BackboneInfo, cache: FeatureCache, cfg: DataConfig, console: Console
) -> None:
    """DataError naming the first unreadable image file of ``split`` (and how many there are) when the split is
    still to be extracted; a complete cache entry is used without opening its images again."""
    from ssl_pipeline.data.images import unreadable_images  # torch, torchvision, PIL
    from ssl_pipeline.features.extract import split_identity  # torch

    if split.paths is None or (
        not cfg.extract.force and cache.get(cache_key(split_identity(info, split, cfg.extract.dtype)))
    ):
        return
    console.print(f"checking the headers of {len(split)} {split.split} images")
    bad = unreadable_images(split)
    if bad:
        (path, reason), more = bad[0], f" and {len(bad) - 1} more unreadable images" if len(bad) > 1 else ""
        raise DataError(f"cannot read image {path} ({reason}){more}; fix or remove it, or set "
                        "data.dataset.skip_corrupt=true to skip unreadable images")


def _further_labels(cfg: DataConfig, y_train: np.ndarray, y_test: np.ndarray, train_indices: np.ndarray,
                    test_indices: np.ndarray, keep: np.ndarray, carved: np.ndarray,
                    class_names: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The labels an image dataset carries besides its classes, as (train, val, test): CIFAR-100's ``coarse``
    (from its files, by the cached dataset indices) and a groups file's ``group`` (``data.dataset.groups``)."""
    from ssl_pipeline.data.images import cifar100_coarse_labels, group_labels

    labels = {}
    if cfg.dataset.name == "cifar100":
        train = cifar100_coarse_labels(cfg.dataset, "train", train_indices)
        labels["coarse"] = (train[keep], train[carved], cifar100_coarse_labels(cfg.dataset, "test", test_indices))
    if cfg.dataset.groups:
        from ssl_pipeline.config import read_groups

        groups = read_groups(cfg.dataset.groups)
        train = group_labels(groups, class_names, y_train, cfg.dataset.groups)
        labels["group"] = (train[keep], train[carved], group_labels(groups, class_names, y_test, cfg.dataset.groups))
    return labels


def load_image_features(cfg: DataConfig, console: Optional[Console] = None, views: bool = False) -> LabelledFeatures:
    """Train/val/test features of ``cfg.dataset`` under ``cfg.backbone`` (extracted on first use); val is a
    stratified ``val_fraction`` of train carved with ``split_seed``. The splits are ``FeatureRows`` views of the
    cache's memory maps (``data.labelled.split_rows``): nothing is copied into memory. ``views``: the augmented
    views of every recipe too (``LabelledFeatures.views``: ``data.views.ViewTable`` by recipe name)."""
    console = console or Console()
    entries = extract_all(cfg, console, views=views)
    verify = cfg.extract.verify
    x_train, y_train, train_indices = entries["train"].load(verify=verify)
    x_test, y_test, test_indices = entries["test"].load(verify=verify)
    keep, carved = stratified_split(y_train, cfg.val_fraction, cfg.split_seed)
    manifest = entries["train"].manifest
    y_train = np.asarray(y_train)
    features = LabelledFeatures(
        split_rows(x_train, keep), y_train[keep], split_rows(x_train, carved), y_train[carved],
        split_rows(x_test, None), np.asarray(y_test),
        dataset=cfg.dataset.name, data_kind="real", split_seed=cfg.split_seed,
        class_names=list(manifest["class_names"]), backbone=manifest["backbone"],
        features_key=image_features_key(entries["train"], entries["test"], cfg.val_fraction, cfg.split_seed),
    )
    if "text" in entries:
        features.text_features = np.asarray(entries["text"].load(verify=verify)[0])
    features.other_labels = _further_labels(cfg, y_train, np.asarray(y_test), train_indices, test_indices, keep, carved,
                                            list(manifest["class_names"]))
    if views:
        from ssl_pipeline.data.views import ViewTable

        features.views = {}
        for recipe in cfg.views.recipes:
            table = entries[f"views:{recipe.name}"].load(verify=verify)[0]
            features.views[recipe.name] = ViewTable(recipe, table, cfg.views.num_views, keep, carved)
    features.validate()
    return features
