"""Extraction: an image split through a frozen backbone into the feature cache, streamed shard by shard.

Memory stays at one shard whatever the dataset size. Shards cover whole batches (``shard_size`` is rounded up
to a multiple of ``batch_size``), so a resumed run sees exactly the batches an uninterrupted run would and
yields bit-identical features. A complete cache entry is reused without building the backbone at all.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
import torch
from rich.console import Console
from torch.utils.data import DataLoader, Subset

from ssl_pipeline.backbones import Backbone, BackboneInfo
from ssl_pipeline.config import ExtractConfig
from ssl_pipeline.data.images import ImageSplit
from ssl_pipeline.errors import DataError
from ssl_pipeline.features.cache import CacheEntry, FeatureCache, cache_key
from ssl_pipeline.features.shards import open_writer
from ssl_pipeline.reporting.progress import rate_progress


def split_identity(info: BackboneInfo, split: ImageSplit) -> dict:
    """Everything that determines a split's features: backbone (weights), preprocessing, dataset split."""
    return {"kind": "images", "backbone": info.identity, "preprocess": info.preprocess.as_dict(),
            "dataset": split.identity}


def text_identity(info: BackboneInfo, class_names: list[str], prompts: list[str]) -> dict:
    return {"kind": "text", "backbone": info.identity, "class_names": list(class_names), "prompts": list(prompts)}


def resolve_workers(num_workers: int) -> int:
    return num_workers if num_workers >= 0 else min(4, max(0, (os.cpu_count() or 1) - 1))


def _collate(batch):
    """Stack uint8 images; unreadable ones (label −1, a placeholder) become zeros of the batch's shape. The third
    field is the item's position in the split (``ImageSplit.indices`` maps it to the dataset's own index)."""
    shape = next((image.shape for image, label, _ in batch if label >= 0), batch[0][0].shape)
    images = torch.stack([image if label >= 0 else torch.zeros(shape, dtype=torch.uint8) for image, label, _ in batch])
    labels = torch.tensor([label for _, label, _ in batch], dtype=torch.int64)
    indices = torch.tensor([index for _, _, index in batch], dtype=torch.int64)
    return images, labels, indices


def _array_batches(split: ImageSplit, positions: np.ndarray, batch_size: int, geometry: Callable, device):
    """Batches of an in-memory dataset (CIFAR, digits: equal-sized images): one gather per batch and the resize
    applied to the whole batch on the model's device — no per-image work, no worker processes."""
    for start in range(0, len(positions), batch_size):
        items = positions[start:start + batch_size]
        pixels = torch.from_numpy(split.pixels[split.indices[items]]).to(device, non_blocking=True)
        images = geometry(pixels.permute(0, 3, 1, 2))
        yield images, torch.from_numpy(split.labels[items]), torch.from_numpy(items)


def extract_split(
    split: ImageSplit,
    info: BackboneInfo,
    get_backbone: Callable[[], Backbone],
    cache: FeatureCache,
    cfg: ExtractConfig,
    console: Console,
    skip_corrupt: bool = False,
) -> CacheEntry:
    """The cache entry of ``split`` encoded by the backbone ``info`` describes; extracted (or resumed) if missing.

    ``get_backbone`` builds the model on first call only, so a cache hit never loads weights.
    """

    identity = split_identity(info, split)
    key = cache_key(identity)
    entry = None if cfg.force else cache.get(key)
    if entry is not None:
        return entry
    shard_size = math.ceil(cfg.shard_size / cfg.batch_size) * cfg.batch_size
    with open_writer(cache, key, identity, len(split), shard_size, force=cfg.force) as writer:
        pending = writer.pending()
        skipped: list[str] = []
        start = time.perf_counter()
        done, device = 0, None
        if pending:  # every shard may be done already (a kill between the last shard and the manifest)
            backbone = get_backbone()
            device = str(backbone.device)
            done = _encode_shards(split, info, backbone, writer, pending, cfg, console, skip_corrupt, skipped)
        seconds = time.perf_counter() - start
        return writer.finalize({
            "dataset": split.name, "split": split.split, "backbone": info.identity,
            "preprocess": info.preprocess.as_dict(), "class_names": split.class_names,
            "num_source_items": len(split), "skipped_this_run": skipped,
            "timing": {"seconds": round(seconds, 3), "images": done,
                       "images_per_second": round(done / seconds, 2) if done and seconds > 0 else None,
                       "device": device, "batch_size": cfg.batch_size},
        })


def _encode_shards(
    split: ImageSplit, info: BackboneInfo, backbone: Backbone, writer, pending: list[int], cfg: ExtractConfig,
    console: Console, skip_corrupt: bool, skipped: list[str],
) -> int:
    """Encode the ``pending`` shards' images in order and hand each finished shard to a background writer;
    unreadable images are refused or (``skip_corrupt``) appended to ``skipped``. Returns the images read."""
    ranges = [writer.shard_range(i) for i in pending]
    positions = np.concatenate([np.arange(a, b) for a, b in ranges])
    geometry = info.preprocess.geometry()
    if split.pixels is not None:
        batches = _array_batches(split, positions, cfg.batch_size, geometry, backbone.device)
    else:
        split.transform = geometry
        batches = iter(DataLoader(
            Subset(split, positions.tolist()), batch_size=cfg.batch_size, shuffle=False,
            num_workers=resolve_workers(cfg.num_workers), collate_fn=_collate,
            pin_memory=backbone.device.type == "cuda", persistent_workers=False,
        ))
    done, writing, start = 0, None, time.perf_counter()
    with rate_progress(console) as progress, ThreadPoolExecutor(max_workers=1) as background:
        task = progress.add_task(f"extracting {split.name}/{split.split}", total=len(positions), rate="")
        for shard, (a, b) in zip(pending, ranges):
            parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
            need = b - a  # shards cover whole batches, so this reaches exactly 0
            while need > 0:
                images, labels, items = next(batches)
                need -= len(labels)
                features = backbone.encode_images(
                    info.preprocess.normalize(images.to(backbone.device, non_blocking=True))
                ).cpu().numpy()
                parts.append(_readable_rows(split, features, labels.numpy(), items.numpy(), skip_corrupt, skipped))
                done += len(labels)
                progress.update(task, completed=done, rate=f"{done / max(time.perf_counter() - start, 1e-9):.0f} img/s")
            if writing is not None:
                writing.result()
            # Written and checksummed in the background while the next shard is encoded.
            x, y, i = (np.concatenate(column) for column in zip(*parts))
            writing = background.submit(writer.write_shard, shard, x.astype(np.float32, copy=False), y, i)
        if writing is not None:
            writing.result()
    return done


def _readable_rows(split: ImageSplit, features: np.ndarray, labels: np.ndarray, items: np.ndarray,
                   skip_corrupt: bool, skipped: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, labels, dataset indices) of a batch without its unreadable images (label −1), which are
    refused with the file's name or, with ``skip_corrupt``, warned about and recorded in ``skipped``."""
    keep = labels >= 0
    if keep.all():  # the usual case: no copies
        return features, labels.astype(np.int64), split.indices[items]
    bad = [split.describe(int(i)) for i in items[~keep]]
    if not skip_corrupt:
        raise DataError(f"cannot read image {bad[0]}; fix or remove it, or set "
                        "data.dataset.skip_corrupt=true to skip unreadable images")
    for name in bad:
        warnings.warn(f"skipped unreadable image {name}", stacklevel=1)
    skipped.extend(bad)
    return features[keep], labels[keep].astype(np.int64), split.indices[items[keep]]


def extract_text(
    info: BackboneInfo, get_backbone: Callable[[], Backbone], class_names: list[str], prompts: list[str],
    cache: FeatureCache, force: bool = False,
) -> CacheEntry:
    """Text-tower embeddings of every (template, class) prompt: row t·K + k is template t filled with class k
    (label k). Cached like image features, keyed by backbone, class names and templates."""
    identity = text_identity(info, class_names, prompts)
    key = cache_key(identity)
    entry = None if force else cache.get(key)
    if entry is not None:
        return entry
    texts = [template.format(name) for template in prompts for name in class_names]
    with open_writer(cache, key, identity, len(texts), len(texts), force=force) as writer:
        backbone = get_backbone()
        start = time.perf_counter()
        features = backbone.encode_text(texts).cpu().numpy().astype(np.float32)
        k = len(class_names)
        writer.write_shard(0, features, np.tile(np.arange(k), len(prompts)), np.arange(len(texts)))
        return writer.finalize({"backbone": info.identity, "class_names": list(class_names), "prompts": list(prompts),
                                "timing": {"seconds": round(time.perf_counter() - start, 3)}})
