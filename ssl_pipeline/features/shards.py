"""The shard protocol: how one cache entry is written, resumably, in shards.

While an entry is partial its directory holds ``progress.json`` (identity, layout, the sha256 and row count of
every finished shard) and ``shards/shard-00003.npz``; each shard is written atomically and recorded only once it
is on disk, so a killed writer loses at most the shard it was writing. A writer with the same identity and layout
resumes from the shards recorded (re-checking their checksums); ``finalize`` streams the shards into the entry's
arrays and writes ``manifest.json`` last, which makes the entry complete (``features.cache.CacheEntry``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
from pathlib import Path
from typing import IO

import numpy as np

from ssl_pipeline.atomic import atomic_write
from ssl_pipeline.digests import file_sha256
from ssl_pipeline.errors import DataError
from ssl_pipeline.features.cache import (
    ARRAYS,
    EXTRACTOR_VERSION,
    CacheEntry,
    FeatureCache,
    lock_entry,
    read_json,
    unlock_entry,
    utc_now,
    write_json,
)


def open_writer(
    cache: FeatureCache, key: str, identity: dict, num_items: int, shard_size: int, force: bool = False
) -> ShardWriter:
    """Lock the entry ``key`` of ``cache`` and return a writer that resumes any partial entry with the same identity
    and layout (``force``: starts it afresh, even over a complete entry)."""
    if num_items < 1 or shard_size < 1:
        raise ValueError(f"num_items and shard_size must be positive; got {num_items} and {shard_size}")
    path = cache.entry_dir(key)
    path.mkdir(parents=True, exist_ok=True)
    lock = lock_entry(path)
    if lock is None:
        raise DataError(
            f"cache entry {key} is being written by another process (lock {path / '.lock'}); "
            "wait for it to finish or stop that process, then run again"
        )
    try:
        if force:
            _clear(path)
        elif (path / "manifest.json").is_file():
            raise DataError(
                f"cache entry {key} is already complete; use it, or rebuild it with --data.extract.force true"
            )
        return ShardWriter(key, path, identity, num_items, shard_size, lock)
    except BaseException:
        unlock_entry(lock)
        raise


def _clear(directory: Path) -> None:
    """Remove an entry's contents except its lock; the manifest goes first so the entry stops being complete."""
    (directory / "manifest.json").unlink(missing_ok=True)
    for child in directory.iterdir():
        if child.name != ".lock":
            shutil.rmtree(child) if child.is_dir() else child.unlink()


class ShardWriter:
    """Writes one entry shard by shard; resumable after a kill. Use as a context manager (it holds the lock)."""

    def __init__(self, key: str, path: Path, identity: dict, num_items: int, shard_size: int, lock: IO[bytes]):
        self.num_items, self.shard_size, self.num_shards = num_items, shard_size, -(-num_items // shard_size)
        # a JSON round trip, so tuples in the identity compare equal to the lists read back from progress.json
        layout = json.loads(json.dumps({"identity": identity, "num_items": num_items, "shard_size": shard_size}))
        layout["num_shards"] = self.num_shards
        self.key, self.path, self.identity, self._lock = key, path, layout["identity"], lock
        self._shards, self._extras = path / "shards", dict[str, np.ndarray]()
        self._progress = read_json(path / "progress.json") or {}
        if any(self._progress.get(name) != value for name, value in layout.items()):
            _clear(path)
            self._progress = {**layout, "dim": None, "shards": {}, "created": utc_now()}
            write_json(path / "progress.json", self._progress)
        self._shards.mkdir(exist_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock; unfinished shards stay on disk for the next writer to resume from."""
        unlock_entry(self._lock)

    def _shard_path(self, i: int) -> Path:
        return self._shards / f"shard-{i:05d}.npz"

    def shard_range(self, i: int) -> tuple[int, int]:
        """[start, stop) item positions covered by shard i."""
        if not 0 <= i < self.num_shards:
            raise ValueError(f"shard {i} out of range: this entry has shards 0..{self.num_shards - 1}")
        return i * self.shard_size, min((i + 1) * self.shard_size, self.num_items)

    def pending(self) -> list[int]:
        """Shard ids still to write; recorded shards whose file is missing or fails its checksum count as pending."""
        for stray in [*self.path.glob("*.tmp"), *self._shards.glob("*.tmp")]:
            stray.unlink()
        done = self._progress["shards"]
        for i in list(done):
            path = self._shard_path(int(i))
            if not path.is_file() or file_sha256(path) != done[i]["sha256"]:
                path.unlink(missing_ok=True)
                del done[i]
        write_json(self.path / "progress.json", self._progress)
        return [i for i in range(self.num_shards) if str(i) not in done]

    def write_shard(self, i: int, features: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> None:
        """Store shard i: features float32 [n, D], labels and dataset indices integer [n], n ≤ the shard's range."""
        start, stop = self.shard_range(i)
        if features.dtype != np.float32 or features.ndim != 2:
            raise ValueError(f"shard {i}: features must be float32 [n, D]; got {features.dtype} {features.shape}")
        n, dim = features.shape
        for name, array in (("labels", labels), ("indices", indices)):
            if not np.issubdtype(array.dtype, np.integer) or array.shape != (n,):
                raise ValueError(f"shard {i}: {name} must be integer [{n}]; got {array.dtype} {array.shape}")
        if n > stop - start:
            raise ValueError(f"shard {i} covers {stop - start} items but got {n} rows")
        if self._progress["dim"] not in (None, dim):
            raise ValueError(f"shard {i} has feature dimension {dim} but earlier shards have {self._progress['dim']}")
        path = self._shard_path(i)
        arrays = {
            "features": features,
            "labels": labels.astype(np.int64, copy=False),
            "indices": indices.astype(np.int64, copy=False),
        }
        atomic_write(path, lambda f: np.savez(f, **arrays))
        self._progress["dim"] = dim
        self._progress["shards"][str(i)] = {"sha256": file_sha256(path), "rows": n}
        write_json(self.path / "progress.json", self._progress)

    def add_extra(self, name: str, array: np.ndarray) -> None:
        """Keep a small extra array (e.g. ``text_features`` [K, D]) to store as ``<name>.npy`` at finalize."""
        if not re.fullmatch(r"[A-Za-z0-9_]+", name) or name in ARRAYS:
            raise ValueError(f"extra array name {name!r} must be letters, digits, _ and not one of {ARRAYS}")
        if array.dtype.hasobject:
            raise ValueError(f"extra array {name} has dtype object; only plain numeric arrays can be cached")
        self._extras[name] = np.ascontiguousarray(array)

    def finalize(self, manifest_extra: dict) -> CacheEntry:
        """Stream the shards in order into features/labels/indices.npy, then write manifest.json last.

        One pass: each shard file is read once, checked against its recorded checksum and copied into the
        memory-mapped outputs, so memory stays at one shard.
        """
        done = self._progress["shards"]
        missing = [i for i in range(self.num_shards) if str(i) not in done]
        if missing:
            raise ValueError(f"cannot finalize cache entry {self.key}: shards {missing} are not written yet")
        total, dim = sum(shard["rows"] for shard in done.values()), self._progress["dim"]
        shapes = {"features": (total, dim), "labels": (total,), "indices": (total,)}
        outputs = {
            name: np.lib.format.open_memmap(
                self.path / f"{name}.npy.tmp", mode="w+", dtype=np.float32 if name == "features" else np.int64,
                shape=shapes[name],
            )
            for name in ARRAYS
        }
        row = 0
        for i in range(self.num_shards):
            path = self._shard_path(i)
            raw = path.read_bytes() if path.is_file() else b""
            if hashlib.sha256(raw).hexdigest() != done[str(i)]["sha256"]:
                path.unlink(missing_ok=True)
                del done[str(i)]
                write_json(self.path / "progress.json", self._progress)
                raise DataError(f"cache shard {path} changed on disk during extraction; run the same command again "
                                "to redo that shard")
            with np.load(io.BytesIO(raw), allow_pickle=False) as shard:
                block = {name: shard[name] for name in ARRAYS}
            n = len(block["labels"])
            for name in ARRAYS:
                outputs[name][row : row + n] = block[name]
            row += n
        for name in ARRAYS:
            outputs[name].flush()
            del outputs[name]
            tmp = self.path / f"{name}.npy.tmp"
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.path / f"{name}.npy")
        for name, array in self._extras.items():
            atomic_write(self.path / f"{name}.npy", lambda f, array=array: np.save(f, array, allow_pickle=False))
            shapes[name] = array.shape
        files = {
            f"{name}.npy": {"sha256": file_sha256(path), "bytes": path.stat().st_size, "shape": list(shape)}
            for name, shape in shapes.items()
            for path in [self.path / f"{name}.npy"]
        }
        manifest = {**manifest_extra, "key": self.key, "identity": self.identity, "num_items": total, "dim": dim}
        manifest |= {"extractor_version": EXTRACTOR_VERSION, "dtype": "float32", "files": files, "created": utc_now()}
        write_json(self.path / "manifest.json", manifest)
        shutil.rmtree(self._shards)
        (self.path / "progress.json").unlink()
        return CacheEntry(self.key, self.path, manifest)
