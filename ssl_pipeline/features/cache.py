"""On-disk cache of frozen-backbone image features, written in resumable shards and loaded memory-mapped.

One directory per key under the root (default ``data/features/``): ``.lock`` (record lock of the one writer),
``progress.json`` + ``shards/shard-00003.npz`` while partial, then ``features.npy`` [N, D] float32, ``labels.npy``
[N] int64, ``indices.npy`` [N] int64, extras, and ``manifest.json`` written last (its presence means complete).
Every file goes to ``<name>.tmp`` beside it, is fsynced, then ``os.replace``d: a kill leaves old or new, never half.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from rich.table import Table

from ssl_pipeline.atomic import atomic_write
from ssl_pipeline.digests import file_sha256, json_digest
from ssl_pipeline.errors import DataError

EXTRACTOR_VERSION: int = 1

_KEY_PATTERN = re.compile(r"[0-9a-f]{20}")
_ARRAYS = ("features", "labels", "indices")


def cache_key(identity: dict) -> str:
    """First 20 hex chars of sha256 over the identity (backbone + weights, dataset, split, preprocessing)."""
    return json_digest({**identity, "extractor_version": EXTRACTOR_VERSION}, 20)


def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=2, sort_keys=True).encode()))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _corrupt(path: Path, key: str, reason: str) -> DataError:
    """``path`` is ``<root>/<key>/<file>``. The clean command names the root always: without ``--root`` it would
    act on the default root, not on the one this entry lives in."""
    root = shlex.quote(str(path.parent.parent))
    return DataError(
        f"cache file {path} is corrupt or truncated ({reason}); rebuild it with `ssl-pipeline extract --config "
        f"<your config> --data.extract.force true` or remove it with `ssl-pipeline cache clean {key} --root {root}`"
    )


def _clear(directory: Path) -> None:
    """Remove an entry's contents except its lock; the manifest goes first so the entry stops being complete."""
    (directory / "manifest.json").unlink(missing_ok=True)
    for child in directory.iterdir():
        if child.name != ".lock":
            shutil.rmtree(child) if child.is_dir() else child.unlink()


def _file_bytes(path: Path) -> int:
    """Size of a file, 0 for directories and for files a running writer has just replaced or removed."""
    try:
        return path.stat().st_size if path.is_file() else 0
    except FileNotFoundError:
        return 0


def _name(value: object) -> object:
    return value.get("name", json.dumps(value, sort_keys=True)) if isinstance(value, dict) else value


# One writer per entry. The lock is a POSIX record lock (fcntl.lockf), not a flock: a flock belongs to the open
# file description, which fork shares, so the DataLoader workers an extraction forks held a SIGKILLed writer's
# lock until they noticed their parent was gone (seconds: the rerun of a preempted job was refused). A record
# lock belongs to the process that took it: forked children never hold it, and the kernel drops it the moment
# that process dies, however it dies (it also works on NFS, through its lock manager). Its trap: closing *any*
# descriptor of the file drops the process's lock. So each lock file is opened at most once per process while
# locked (_HELD), which also refuses a second writer within the process, as the flock did.
_HELD: dict[str, IO[bytes]] = {}
_HELD_GUARD = threading.Lock()


def _try_lock(directory: Path) -> IO[bytes] | None:
    """Open ``<directory>/.lock`` and take an exclusive non-blocking record lock; None if a process (this one
    included) holds it. Release with ``_unlock``."""
    path = str((directory / ".lock").resolve())
    with _HELD_GUARD:
        if path in _HELD:
            return None
        handle = open(path, "ab")  # noqa: SIM115 -- held open for as long as the lock is
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.close()
            if error.errno in (errno.EACCES, errno.EAGAIN):
                return None
            raise
        _HELD[path] = handle
        return handle


def _unlock(handle: IO[bytes]) -> None:
    """Release a lock taken by ``_try_lock`` (closing its one descriptor); a second call does nothing."""
    with _HELD_GUARD:
        if _HELD.get(handle.name) is handle:
            del _HELD[handle.name]
        handle.close()


@dataclass
class CacheEntry:
    """A complete cache entry: its manifest lists every file with sha256, byte count and shape."""

    key: str
    path: Path
    manifest: dict

    def _open(self, name: str, verify: bool) -> np.ndarray:
        info = self.manifest["files"].get(name)
        if info is None:
            raise DataError(
                f"cache entry {self.key} has no {name} (it holds {', '.join(sorted(self.manifest['files']))}); "
                "re-extract with --data.extract.force true to add it"
            )
        path = self.path / name
        if not path.is_file():
            raise _corrupt(path, self.key, "file missing")
        if path.stat().st_size != info["bytes"]:
            raise _corrupt(path, self.key, "size mismatch")
        if verify and file_sha256(path) != info["sha256"]:
            raise _corrupt(path, self.key, "checksum mismatch")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError:
            raise _corrupt(path, self.key, "unreadable header") from None
        if list(array.shape) != info["shape"]:
            raise _corrupt(path, self.key, "shape mismatch")
        return array

    def load(self, verify: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features float32 [N, D], labels int64 [N], dataset indices int64 [N], all memory-mapped read-only."""
        features, labels, indices = (self._open(f"{name}.npy", verify) for name in _ARRAYS)
        return features, labels, indices

    def load_extra(self, name: str, verify: bool = True) -> np.ndarray:
        """An array stored with ``ShardWriter.add_extra`` (e.g. ``text_features`` [K, D]), memory-mapped."""
        return self._open(f"{name}.npy", verify)


class ShardWriter:
    """Writes one entry shard by shard; resumable after a kill. Use as a context manager (it holds the lock)."""

    def __init__(self, key: str, path: Path, identity: dict, num_items: int, shard_size: int, lock: IO[bytes]):
        self.num_items, self.shard_size, self.num_shards = num_items, shard_size, -(-num_items // shard_size)
        # a JSON round trip, so tuples in the identity compare equal to the lists read back from progress.json
        layout = json.loads(json.dumps({"identity": identity, "num_items": num_items, "shard_size": shard_size}))
        layout["num_shards"] = self.num_shards
        self.key, self.path, self.identity, self._lock = key, path, layout["identity"], lock
        self._shards, self._extras = path / "shards", dict[str, np.ndarray]()
        self._progress = _read_json(path / "progress.json") or {}
        if any(self._progress.get(name) != value for name, value in layout.items()):
            _clear(path)
            self._progress = {**layout, "dim": None, "shards": {}, "created": _now()}
            _write_json(path / "progress.json", self._progress)
        self._shards.mkdir(exist_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock; unfinished shards stay on disk for the next writer to resume from."""
        _unlock(self._lock)

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
        _write_json(self.path / "progress.json", self._progress)
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
        _write_json(self.path / "progress.json", self._progress)

    def add_extra(self, name: str, array: np.ndarray) -> None:
        """Keep a small extra array (e.g. ``text_features`` [K, D]) to store as ``<name>.npy`` at finalize."""
        if not re.fullmatch(r"[A-Za-z0-9_]+", name) or name in _ARRAYS:
            raise ValueError(f"extra array name {name!r} must be letters, digits, _ and not one of {_ARRAYS}")
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
            for name in _ARRAYS
        }
        row = 0
        for i in range(self.num_shards):
            path = self._shard_path(i)
            raw = path.read_bytes() if path.is_file() else b""
            if hashlib.sha256(raw).hexdigest() != done[str(i)]["sha256"]:
                path.unlink(missing_ok=True)
                del done[str(i)]
                _write_json(self.path / "progress.json", self._progress)
                raise DataError(f"cache shard {path} changed on disk during extraction; run the same command again "
                                "to redo that shard")
            with np.load(io.BytesIO(raw), allow_pickle=False) as shard:
                block = {name: shard[name] for name in _ARRAYS}
            n = len(block["labels"])
            for name in _ARRAYS:
                outputs[name][row : row + n] = block[name]
            row += n
        for name in _ARRAYS:
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
        manifest |= {"extractor_version": EXTRACTOR_VERSION, "dtype": "float32", "files": files, "created": _now()}
        _write_json(self.path / "manifest.json", manifest)
        shutil.rmtree(self._shards)
        (self.path / "progress.json").unlink()
        return CacheEntry(self.key, self.path, manifest)


class FeatureCache:
    """All cache entries under ``root``, one directory per ``cache_key(identity)``."""

    def __init__(self, root: str | Path = "data/features") -> None:
        self.root = Path(root)

    def _dir(self, key: str) -> Path:
        if not _KEY_PATTERN.fullmatch(key):
            raise DataError(f"{key!r} is not a cache key (20 hex characters); list keys with `ssl-pipeline cache list`")
        return self.root / key

    def get(self, key: str) -> CacheEntry | None:
        """The complete entry for ``key``, or None when there is none or it is only partly written."""
        path = self._dir(key)
        if not (path / "manifest.json").is_file():
            return None
        manifest = _read_json(path / "manifest.json")
        if manifest is None or "files" not in manifest:
            raise _corrupt(path / "manifest.json", key, "unreadable manifest")
        return CacheEntry(key, path, manifest)

    def writer(self, key: str, identity: dict, num_items: int, shard_size: int, force: bool = False) -> ShardWriter:
        """Lock the entry and return a writer that resumes any partial entry with the same identity and layout."""
        if num_items < 1 or shard_size < 1:
            raise ValueError(f"num_items and shard_size must be positive; got {num_items} and {shard_size}")
        path = self._dir(key)
        path.mkdir(parents=True, exist_ok=True)
        lock = _try_lock(path)
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
            _unlock(lock)
            raise

    def _keys(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _KEY_PATTERN.fullmatch(p.name))

    def entries(self) -> list[dict]:
        """One summary dict per entry directory, complete or partial."""
        rows = []
        for key in self._keys():
            path = self.root / key
            manifest = _read_json(path / "manifest.json")
            record = manifest or _read_json(path / "progress.json") or {}
            # partial entries have only the identity, where dataset/backbone may be dicts with a "name"
            identity = record.get("identity", {})
            dataset = identity.get("dataset") if isinstance(identity.get("dataset"), dict) else {}
            row = {
                "key": key,
                "complete": manifest is not None,
                "dataset": _name(record.get("dataset") or identity.get("dataset")),
                "split": record.get("split") or identity.get("split") or dataset.get("split"),
                "backbone": _name(record.get("backbone") or identity.get("backbone")),
                "n": record.get("num_items"),
                "dim": record.get("dim"),
                "bytes": sum(_file_bytes(p) for p in path.rglob("*")),
                "created": record.get("created"),
            }
            if manifest is None:
                row |= {"shards_done": len(record.get("shards", {})), "num_shards": record.get("num_shards")}
            rows.append(row)
        return rows

    def verify(self, keys: list[str] | None = None) -> list[tuple[str, bool, str]]:
        """(key, ok, message) per complete entry after recomputing every file's sha256."""
        results = []
        for key in self._keys() if keys is None else keys:
            try:
                entry = self.get(key)
                if entry is None:
                    if keys is not None:
                        results.append((key, False, "no complete cache entry with this key"))
                    continue
                for name in entry.manifest["files"]:
                    entry._open(name, verify=True)
                results.append((key, True, f"{len(entry.manifest['files'])} files ok"))
            except DataError as error:
                results.append((key, False, str(error)))
        return results

    def clean(self, keys: list[str] | None = None, partial_only: bool = False) -> list[str]:
        """Remove entries (all when ``keys`` is None; only partial ones with ``partial_only``); returns removed keys.

        Entries locked by a running extraction are skipped.
        """
        removed = []
        for key in self._keys() if keys is None else keys:
            path = self._dir(key)
            if not path.is_dir():
                raise DataError(f"no cache entry {key} under {self.root}; list entries with `ssl-pipeline cache list`")
            if partial_only and (path / "manifest.json").is_file():
                continue
            lock = _try_lock(path)
            if lock is None:
                continue
            shutil.rmtree(path)
            _unlock(lock)
            removed.append(key)
        return removed


def _human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def render_entries(entries: list[dict]) -> Table:
    """A rich table of ``FeatureCache.entries()`` for ``ssl-pipeline cache list``."""
    table = Table(title="feature cache")
    for column in ("key", "status", "dataset", "split", "backbone", "items", "dim", "size", "created"):
        table.add_column(column, justify="right" if column in ("items", "dim", "size") else "left")
    for row in entries:
        status = (
            "complete" if row["complete"] else f"partial {row.get('shards_done', 0)}/{row.get('num_shards') or '?'}"
        )
        cells = (row["key"], status, row["dataset"], row["split"], row["backbone"], row["n"], row["dim"])
        table.add_row(*("" if c is None else str(c) for c in cells), _human_bytes(row["bytes"]), row["created"] or "")
    return table
