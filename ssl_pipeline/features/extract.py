"""Extraction: an image split through a frozen backbone into the feature cache, streamed shard by shard.

Memory stays at one shard whatever the dataset size. Shards cover whole batches (``shard_size`` is rounded up
to a multiple of ``batch_size``), so a resumed run sees exactly the batches an uninterrupted run would and
yields bit-identical features. A complete cache entry is reused without building the backbone at all.

On several devices (``data.extract.devices``, ``num_nodes``, torchrun or SLURM; ``features.ranks``) the shards are
the unit of work: rank 0 finds the pending shards and gives rank r the r-th of ``world`` contiguous blocks of them
(``shard_blocks``); each rank encodes and writes its own whole shards, which are the same batches one process
would encode, so the merged entry is bit-identical to a one-process extraction and no item is repeated or
missed. Rank 0 consolidates once every rank has written its shards, checking each against its checksum. A rank
killed mid-run leaves its finished shards; the rerun, with any number of ranks, encodes only the rest.

``data.extract.dtype: float16`` stores features cast after the forward pass (half the cache); a value that is not
finite after the cast is refused, with its shard and count, before that shard is written.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import numpy as np
import torch
from rich.console import Console
from torch.utils.data import DataLoader, Subset

from ssl_pipeline.backbones import Backbone, BackboneInfo
from ssl_pipeline.config import ExtractConfig
from ssl_pipeline.data.images import ImageSplit
from ssl_pipeline.errors import DataError
from ssl_pipeline.features.cache import CacheEntry, FeatureCache, cache_key
from ssl_pipeline.features.ranks import Ranks, current_ranks, extraction_ranks
from ssl_pipeline.features.shards import ShardWriter, join_writer, open_writer
from ssl_pipeline.records.progress import rate_progress


QUIET = Console(quiet=True)


def split_identity(info: BackboneInfo, split: ImageSplit, dtype: str = "float32") -> dict:
    """Everything that determines a split's features: backbone (weights), preprocessing, dataset split, and the
    stored dtype when it is not float32 (so float32 entries keep the keys they had before ``dtype`` existed)."""
    identity = {"kind": "images", "backbone": info.identity, "preprocess": info.preprocess.as_dict(),
                "dataset": split.identity}
    if dtype != "float32":
        identity["dtype"] = dtype
    return identity


def shard_blocks(pending: list[int], world: int) -> list[list[int]]:
    """The pending shards split into ``world`` contiguous blocks in order, as even as whole shards allow: rank r
    writes block r. Blocks of the pending list, not of all shards, so a rerun after a kill shares the remaining
    work evenly whatever the rank counts of the two runs."""
    return [pending[r * len(pending) // world:(r + 1) * len(pending) // world] for r in range(world)]


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
    relaunch: bool = False,
) -> CacheEntry:
    """The cache entry of ``split`` encoded by the backbone ``info`` describes; extracted (or resumed) if missing.

    ``get_backbone`` builds the model on first call only, so a cache hit never loads weights. ``relaunch``: the
    command may be re-run whole by Lightning's launcher to start more ranks (``features.ranks.extraction_ranks``).
    """

    identity = split_identity(info, split, cfg.dtype)
    key = cache_key(identity)
    shard_size = math.ceil(cfg.shard_size / cfg.batch_size) * cfg.batch_size
    ranks = current_ranks()
    if ranks is None:
        entry = None if cfg.force else cache.get(key)
        if entry is not None:
            return entry
        ranks = extraction_ranks(cfg, info.device, console, key, relaunch)
    else:  # rank 0's view decides, so that every rank takes the same path
        entry = ranks.all_ok(lambda: None if cfg.force or ranks.rank else cache.get(key))[0]
        if entry is not None:
            return entry
    if ranks is not None:
        return _extract_as_ranks(split, info, get_backbone, cache, cfg, console, skip_corrupt, ranks, identity,
                                 shard_size)
    with open_writer(cache, key, identity, len(split), shard_size, force=cfg.force, dtype=cfg.dtype) as writer:
        pending = writer.pending()
        skipped: list[str] = []
        start = time.perf_counter()
        done, device = 0, None
        if pending:  # every shard may be done already (a kill between the last shard and the manifest)
            backbone = get_backbone()
            device = str(backbone.device)
            done = _encode_shards(split, info, backbone, writer, pending, cfg, console, skip_corrupt, skipped)
        return writer.finalize(_manifest(split, info, cfg, skipped, done, time.perf_counter() - start, device))


def _manifest(split: ImageSplit, info: BackboneInfo, cfg: ExtractConfig, skipped: list[str], done: int,
              seconds: float, device: Optional[str], processes: int = 1) -> dict:
    timing = {"seconds": round(seconds, 3), "images": done,
              "images_per_second": round(done / seconds, 2) if done and seconds > 0 else None,
              "device": device, "batch_size": cfg.batch_size}
    if processes > 1:
        timing["processes"] = processes
    return {"dataset": split.name, "split": split.split, "backbone": info.identity,
            "preprocess": info.preprocess.as_dict(), "class_names": split.class_names,
            "num_source_items": len(split), "skipped_this_run": skipped, "timing": timing}


def _extract_as_ranks(
    split: ImageSplit, info: BackboneInfo, get_backbone: Callable[[], Backbone], cache: FeatureCache,
    cfg: ExtractConfig, console: Console, skip_corrupt: bool, ranks: Ranks, identity: dict, shard_size: int,
) -> CacheEntry:
    """``extract_split`` as one rank of ``ranks``. Every step ends in a collective that every rank reaches, and a
    failure on any rank makes every rank raise one line (``Ranks.all_ok``):

    1. rank 0 locks the whole entry (as one process would), finds the pending shards, keeps the lock on the entry
       and on its own block and releases the others' blocks (``ShardWriter.hand_over``);
    2. each other rank checks that rank 0's lock refuses it (locks that work across its nodes), locks its block;
    3. each rank encodes and writes its block, then releases it;
    4. rank 0 locks the whole entry again and consolidates every shard, checked against its checksum, into the
       entry; the others read the manifest rank 0 hands them.
    """
    key, leader = cache_key(identity), ranks.rank == 0
    holder = f"rank {ranks.rank} of {ranks.world}"
    writer: Optional[ShardWriter] = None
    start = time.perf_counter()

    def plan() -> list[list[int]]:
        nonlocal writer
        writer = open_writer(cache, key, identity, len(split), shard_size, force=cfg.force, dtype=cfg.dtype,
                             holder=holder)
        blocks = shard_blocks(writer.pending(), ranks.world)
        writer.hand_over(blocks[0])
        return blocks

    def join() -> None:
        nonlocal writer
        writer = join_writer(cache, key, identity, len(split), shard_size, mine, cfg.dtype, holder, ranks.hosts[0])

    def encode() -> tuple[int, list[str], Optional[str]]:
        skipped: list[str] = []
        try:
            if not mine:
                return 0, skipped, None
            backbone = get_backbone()
            done = _encode_shards(split, info, backbone, writer, mine, cfg, console if leader else QUIET,
                                  skip_corrupt, skipped)
            return done, skipped, str(backbone.device)
        finally:
            if not leader:
                writer.close()

    def consolidate() -> CacheEntry:
        writer.reclaim()
        done = sum(images for images, _, _ in encoded)
        skipped = [name for _, names, _ in encoded for name in names]
        device = next((device for _, _, device in encoded if device is not None), None)
        manifest = _manifest(split, info, cfg, skipped, done, time.perf_counter() - start, device, ranks.world)
        return writer.finalize(manifest)

    try:
        mine = ranks.all_ok(plan if leader else lambda: None)[0][ranks.rank]
        ranks.all_ok(lambda: None if leader else join())
        encoded = ranks.all_ok(encode)
        return ranks.all_ok(consolidate if leader else lambda: None)[0]
    finally:
        if writer is not None:
            writer.close()


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
            writing = background.submit(writer.write_shard, shard, _stored(x, cfg.dtype, shard, writer), y, i)
        if writing is not None:
            writing.result()
    return done


def _stored(features: np.ndarray, dtype: str, shard: int, writer: ShardWriter) -> np.ndarray:
    """``features`` [n, D] as stored: float32, or cast to float16, where a value that is not finite after the cast
    (beyond ±65504, or not finite already) is refused before the shard is written."""
    if dtype == "float32":
        return features.astype(np.float32, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):  # counted below instead
        stored = features.astype(np.float16)
    finite = np.isfinite(stored)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        overflow = int(np.count_nonzero(~finite & np.isfinite(features)))
        raise DataError(
            f"shard {shard} of cache entry {writer.key} ({writer.path}) has {bad} feature values that are not finite "
            f"in float16 ({overflow} of them overflow its range ±65504); that shard was not written, the finished "
            "ones are kept: extract with data.extract.dtype float32"
        )
    return stored


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
    ranks = current_ranks()
    if ranks is not None:  # rank 0 encodes the prompts (one shard), the others take its entry
        return ranks.all_ok(lambda: None if ranks.rank else _extract_text(info, get_backbone, class_names, prompts,
                                                                           cache, force))[0]
    return _extract_text(info, get_backbone, class_names, prompts, cache, force)


def _extract_text(info: BackboneInfo, get_backbone: Callable[[], Backbone], class_names: list[str],
                  prompts: list[str], cache: FeatureCache, force: bool) -> CacheEntry:
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
