"""The shard protocol: how one cache entry is written, resumably, in shards, by one process or by many ranks.

While an entry is partial its directory holds ``progress.json`` (identity and layout) and, per finished shard,
``shards/shard-00003.npz`` and its record ``shards/shard-00003.json`` (sha256, rows, dimension, dtype). A shard
is written atomically and recorded only once it is on disk, so a killed writer loses at most the shards it was
writing. A writer with the same identity and layout resumes from the shards recorded (re-checking their
checksums); ``finalize`` streams the shards into the entry's arrays and writes ``manifest.json`` last, which makes
the entry complete (``features.cache.CacheEntry``).

One process: ``open_writer`` locks the whole entry. Several ranks (``features.extract``): rank 0 opens it the same
way, finds the pending shards and hands each other rank a block of them (``hand_over`` keeps the entry's byte and
its own block of the lock, ``features.locks``); each rank ``join_writer``s with its block locked, writes its
shards and closes; rank 0 takes the whole entry back (``reclaim``) and finalizes once every shard is recorded.
The shards' records are one file each, so ranks never write a common file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import warnings
from pathlib import Path
from typing import IO, Optional

import numpy as np

from ssl_pipeline.atomic import atomic_write
from ssl_pipeline.digests import file_sha256
from ssl_pipeline.errors import DataError
from ssl_pipeline.features.cache import (
    ARRAYS,
    EXTRACTOR_VERSION,
    CacheEntry,
    FeatureCache,
    read_json,
    utc_now,
    write_json,
)
from ssl_pipeline.features.locks import (
    ENTRY,
    WHOLE,
    Range,
    extend_lock,
    holders,
    keep_only,
    lock_entry,
    locks_enforced,
    node_local_locks,
    shard_range,
    unlock_entry,
)

DTYPES = ("float32", "float16")


def open_writer(
    cache: FeatureCache, key: str, identity: dict, num_items: int, shard_size: int, force: bool = False,
    dtype: str = "float32", holder: str = "writer",
) -> ShardWriter:
    """Lock the entry ``key`` of ``cache`` and return a writer that resumes any partial entry with the same identity
    and layout (``force``: starts it afresh, even over a complete entry). ``holder`` names the writer in its lock's
    holder record (``rank 0 of 2``)."""
    if num_items < 1 or shard_size < 1:
        raise ValueError(f"num_items and shard_size must be positive; got {num_items} and {shard_size}")
    path = cache.entry_dir(key)
    path.mkdir(parents=True, exist_ok=True)
    lock = lock_entry(path, WHOLE, holder)
    if lock is None:
        raise DataError(
            f"cache entry {key} is being written by another process (lock {path / '.lock'} held by "
            f"{holders(path)}); wait for it to finish or stop that process, then run again"
        )
    try:
        _check_locks(lock)
        if force:
            _clear(path)
        elif (path / "manifest.json").is_file():
            raise DataError(
                f"cache entry {key} is already complete; use it, or rebuild it with --data.extract.force true"
            )
        return ShardWriter(key, path, identity, num_items, shard_size, lock, dtype, leader=True)
    except BaseException:
        unlock_entry(lock)
        raise


def join_writer(
    cache: FeatureCache, key: str, identity: dict, num_items: int, shard_size: int, shards: list[int],
    dtype: str, holder: str, leader_host: str,
) -> ShardWriter:
    """The writer of a rank other than 0, once rank 0 holds the entry (``open_writer`` + ``hand_over``): it checks
    that the lock rank 0 holds refuses it (on another node: that the file system's locks work across nodes), locks
    its ``shards`` and writes only those. ``leader_host`` is rank 0's host."""
    path = cache.entry_dir(key)
    probe = lock_entry(path, ENTRY, holder)
    if probe is not None:
        unlock_entry(probe)
        host = socket.gethostname()
        where = f"across nodes ({host} and {leader_host})" if host != leader_host else f"on {host}"
        raise DataError(
            f"locks on {path / '.lock'} are not enforced {where}: {holder} took the lock rank 0 holds, so another "
            "extraction could write this entry at the same time; set data.extract.cache_root to a file system whose "
            "POSIX locks work across nodes (NFS with its lock manager, Lustre mounted with -o flock)"
        )
    lock = None
    if shards:
        span = shard_range(shards[0], shards[-1])
        lock = lock_entry(path, span, holder)
        if lock is None:
            raise DataError(
                f"cache entry {key}: {holder} cannot lock its shards {shards[0]}–{shards[-1]}: lock {path / '.lock'} "
                f"is held by {holders(path, span)}; stop that process, then run again"
            )
    try:
        return ShardWriter(key, path, identity, num_items, shard_size, lock, dtype, leader=False)
    except BaseException:
        if lock is not None:
            unlock_entry(lock)
        raise


def _check_locks(lock: IO[bytes]) -> None:
    """Refuse a file system that accepts locks without enforcing them; warn where they hold within one node."""
    if not locks_enforced(lock):
        raise DataError(
            f"locks on {lock.name} are not enforced (another process took the lock this one holds); set "
            "data.extract.cache_root to a file system with working POSIX locks"
        )
    local = node_local_locks(Path(lock.name).parent)
    if local is not None:
        warnings.warn(f"the cache root is on a {local}: its locks hold within this node only, so do not extract the "
                      "same entry from two nodes at once", stacklevel=3)


def _clear(directory: Path) -> None:
    """Remove an entry's contents except its lock and holder records; the manifest goes first so the entry stops
    being complete."""
    (directory / "manifest.json").unlink(missing_ok=True)
    for child in directory.iterdir():
        if not child.name.startswith(".lock"):
            shutil.rmtree(child) if child.is_dir() else child.unlink()


class ShardWriter:
    """Writes one entry shard by shard; resumable after a kill. Use as a context manager (it holds the lock).

    The leader (one process, or rank 0) holds the whole entry: it checks the layout, resumes, finds the pending
    shards and finalizes. Other ranks (``join_writer``) only write the shards they were given."""

    def __init__(self, key: str, path: Path, identity: dict, num_items: int, shard_size: int,
                 lock: Optional[IO[bytes]], dtype: str = "float32", leader: bool = True):
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r} is not one of {DTYPES}")
        self.num_items, self.shard_size, self.num_shards = num_items, shard_size, -(-num_items // shard_size)
        # a JSON round trip, so tuples in the identity compare equal to the lists read back from progress.json
        layout = json.loads(json.dumps({"identity": identity, "num_items": num_items, "shard_size": shard_size}))
        layout["num_shards"] = self.num_shards
        self.key, self.path, self.identity, self.dtype, self._lock = key, path, layout["identity"], dtype, lock
        self._shards, self._dim = path / "shards", None
        progress = read_json(path / "progress.json") or {}
        if not leader:
            if any(progress.get(name) != value for name, value in layout.items()):
                raise DataError(f"cache entry {key}: {path / 'progress.json'} does not hold the layout rank 0 wrote; "
                                "another process changed it: stop it, then run again")
            return
        if any(progress.get(name) != value for name, value in layout.items()):
            _clear(path)
            progress = {**layout, "created": utc_now()}
        self._shards.mkdir(exist_ok=True)
        if "shards" in progress:  # written before shards had records of their own
            for i, shard in progress.pop("shards").items():
                self._write_record(int(i), {**shard, "dim": progress.get("dim"), "dtype": "float32"})
            progress.pop("dim", None)
        write_json(path / "progress.json", progress)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock; unfinished shards stay on disk for the next writer to resume from."""
        if self._lock is not None:
            unlock_entry(self._lock)

    def _shard_path(self, i: int) -> Path:
        return self._shards / f"shard-{i:05d}.npz"

    def _record_path(self, i: int) -> Path:
        return self._shards / f"shard-{i:05d}.json"

    def _write_record(self, i: int, record: dict) -> None:
        write_json(self._record_path(i), record)

    def shard_range(self, i: int) -> tuple[int, int]:
        """[start, stop) item positions covered by shard i."""
        if not 0 <= i < self.num_shards:
            raise ValueError(f"shard {i} out of range: this entry has shards 0..{self.num_shards - 1}")
        return i * self.shard_size, min((i + 1) * self.shard_size, self.num_items)

    def records(self) -> dict[int, dict]:
        """The records of the shards finished so far, by shard id (not re-checked)."""
        found = {}
        for i in range(self.num_shards):
            record = read_json(self._record_path(i))
            if record is not None:
                found[i] = record
        return found

    def pending(self) -> list[int]:
        """Shard ids still to write (leader only): a shard whose file is missing or fails its recorded checksum is
        pending again, and removed. Removes the temporary files of killed writers."""
        for stray in [*self.path.glob("*.tmp"), *self._shards.glob("*.tmp")]:
            stray.unlink()
        done = self.records()
        pending = []
        for i in range(self.num_shards):
            path = self._shard_path(i)
            if i in done and path.is_file() and file_sha256(path) == done[i].get("sha256"):
                self._dim = self._dim or done[i].get("dim")
                continue
            path.unlink(missing_ok=True)
            self._record_path(i).unlink(missing_ok=True)
            pending.append(i)
        return pending

    def hand_over(self, own: list[int]) -> None:
        """Rank 0: keep the lock on the entry and on its ``own`` shards, release the rest for the other ranks."""
        keep: list[Range] = [ENTRY] + ([shard_range(own[0], own[-1])] if own else [])
        keep_only(self._lock, keep)

    def reclaim(self) -> None:
        """Rank 0, after the other ranks closed: lock the whole entry again to finalize it."""
        if not extend_lock(self._lock, WHOLE):
            raise DataError(
                f"cache entry {self.key}: cannot take back lock {self.path / '.lock'} to consolidate the shards, it "
                f"is held by {holders(self.path)}; stop that process, then run the same command again"
            )

    def write_shard(self, i: int, features: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> None:
        """Store shard i: features [n, D] of the writer's dtype, labels and dataset indices integer [n], n ≤ the
        shard's range."""
        start, stop = self.shard_range(i)
        if features.dtype != np.dtype(self.dtype) or features.ndim != 2:
            raise ValueError(f"shard {i}: features must be {self.dtype} [n, D]; got {features.dtype} {features.shape}")
        n, dim = features.shape
        for name, array in (("labels", labels), ("indices", indices)):
            if not np.issubdtype(array.dtype, np.integer) or array.shape != (n,):
                raise ValueError(f"shard {i}: {name} must be integer [{n}]; got {array.dtype} {array.shape}")
        if n > stop - start:
            raise ValueError(f"shard {i} covers {stop - start} items but got {n} rows")
        if self._dim not in (None, dim):
            raise ValueError(f"shard {i} has feature dimension {dim} but earlier shards have {self._dim}")
        path = self._shard_path(i)
        arrays = {
            "features": features,
            "labels": labels.astype(np.int64, copy=False),
            "indices": indices.astype(np.int64, copy=False),
        }
        atomic_write(path, lambda f: np.savez(f, **arrays))
        self._dim = dim
        self._write_record(i, {"sha256": file_sha256(path), "rows": n, "dim": dim, "dtype": self.dtype})

    def finalize(self, manifest_extra: dict) -> CacheEntry:
        """Stream the shards in order into features/labels/indices.npy, then write manifest.json last.

        One pass: each shard file is read once, checked against its recorded checksum and copied into the
        memory-mapped outputs, so memory stays at one shard. Under several ranks, rank 0 calls it once every rank
        has written its shards: their records are read from disk, not from this process's memory.
        """
        done = self.records()
        missing = [i for i in range(self.num_shards) if i not in done]
        if missing:
            raise ValueError(f"cannot finalize cache entry {self.key}: shards {missing} are not written yet")
        dims = {record.get("dim") for record in done.values()} - {None}
        dtypes = {record.get("dtype", "float32") for record in done.values()}
        if len(dims) != 1 or dtypes != {self.dtype}:
            raise DataError(f"the shards of cache entry {self.key} disagree (dimensions {sorted(dims)}, dtypes "
                            f"{sorted(dtypes)}, expected {self.dtype}); rebuild it with --data.extract.force true")
        total, dim = sum(record["rows"] for record in done.values()), dims.pop()
        shapes = {"features": (total, dim), "labels": (total,), "indices": (total,)}
        outputs = {
            name: np.lib.format.open_memmap(
                self.path / f"{name}.npy.tmp", mode="w+", dtype=self.dtype if name == "features" else np.int64,
                shape=shapes[name],
            )
            for name in ARRAYS
        }
        row = 0
        for i in range(self.num_shards):
            path = self._shard_path(i)
            raw = path.read_bytes() if path.is_file() else b""
            if hashlib.sha256(raw).hexdigest() != done[i]["sha256"]:
                path.unlink(missing_ok=True)
                self._record_path(i).unlink(missing_ok=True)
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
        files = {
            f"{name}.npy": {"sha256": file_sha256(path), "bytes": path.stat().st_size, "shape": list(shape)}
            for name, shape in shapes.items()
            for path in [self.path / f"{name}.npy"]
        }
        manifest = {**manifest_extra, "key": self.key, "identity": self.identity, "num_items": total, "dim": dim}
        manifest |= {"extractor_version": EXTRACTOR_VERSION, "dtype": self.dtype, "files": files, "created": utc_now()}
        write_json(self.path / "manifest.json", manifest)
        shutil.rmtree(self._shards)
        (self.path / "progress.json").unlink()
        return CacheEntry(self.key, self.path, manifest)
