"""On-disk cache of frozen-backbone image features: entries found by key, loaded memory-mapped and verified.

One directory per key under the root (default ``data/features/``): ``.lock`` (record locks of the writers,
``features.locks``, with their holder records ``.lock-<host>-<pid>.json``), ``progress.json`` (the layout) +
``shards/shard-00003.npz`` and its record ``shard-00003.json`` while partial (``features.shards`` writes them),
then ``features.npy`` [N, D] float32 (or float16: ``data.extract.dtype``), ``labels.npy`` [N] int64,
``indices.npy`` [N] int64, and ``manifest.json`` written last (its presence means complete). Every file
goes to ``<name>.tmp`` beside it, is fsynced, then ``os.replace``d: a kill leaves old or new, never half.
"""

from __future__ import annotations

import datetime
import json
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssl_pipeline.atomic import atomic_write
from ssl_pipeline.digests import file_sha256, json_digest
from ssl_pipeline.errors import DataError
from ssl_pipeline.features.locks import lock_entry, unlock_entry

EXTRACTOR_VERSION: int = 1

_KEY_PATTERN = re.compile(r"[0-9a-f]{20}")
ARRAYS = ("features", "labels", "indices")
"""The arrays of every complete entry, each stored as ``<name>.npy``."""


def cache_key(identity: dict) -> str:
    """First 20 hex chars of sha256 over the identity (backbone + weights, dataset, split, preprocessing)."""
    return json_digest({**identity, "extractor_version": EXTRACTOR_VERSION}, 20)


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` atomically as indented JSON with sorted keys (manifests, progress records)."""
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=2, sort_keys=True).encode()))


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def utc_now() -> str:
    """The current UTC time in ISO 8601, to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _corrupt(path: Path, key: str, reason: str) -> DataError:
    """``path`` is ``<root>/<key>/<file>``. The clean command names the root always: without ``--root`` it would
    act on the default root, not on the one this entry lives in."""
    root = shlex.quote(str(path.parent.parent))
    return DataError(
        f"cache file {path} is corrupt or truncated ({reason}); rebuild it with `ssl-pipeline extract --config "
        f"<your config> --data.extract.force true` or remove it with `ssl-pipeline cache clean {key} --root {root}`"
    )


def _file_bytes(path: Path) -> int:
    """Size of a file, 0 for directories and for files a running writer has just replaced or removed."""
    try:
        return path.stat().st_size if path.is_file() else 0
    except FileNotFoundError:
        return 0


def _name(value: object) -> object:
    return value.get("name", json.dumps(value, sort_keys=True)) if isinstance(value, dict) else value


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
        """Features [N, D] (float32, or float16 when the manifest's ``dtype`` says so), labels int64 [N], dataset
        indices int64 [N], all memory-mapped read-only."""
        features, labels, indices = (self._open(f"{name}.npy", verify) for name in ARRAYS)
        return features, labels, indices

    def verify(self) -> None:
        """Recompute every file's sha256 and check its size, header and shape against the manifest; DataError
        naming the first file that fails."""
        for name in self.manifest["files"]:
            self._open(name, verify=True)


class FeatureCache:
    """All cache entries under ``root``, one directory per ``cache_key(identity)``; ``features.shards.open_writer``
    writes one."""

    def __init__(self, root: str | Path = "data/features") -> None:
        self.root = Path(root)

    def entry_dir(self, key: str) -> Path:
        """The directory of ``key`` (which may not exist yet); DataError if ``key`` is not a cache key."""
        if not _KEY_PATTERN.fullmatch(key):
            raise DataError(f"{key!r} is not a cache key (20 hex characters); list keys with `ssl-pipeline cache list`")
        return self.root / key

    def get(self, key: str) -> CacheEntry | None:
        """The complete entry for ``key``, or None when there is none or it is only partly written."""
        path = self.entry_dir(key)
        if not (path / "manifest.json").is_file():
            return None
        manifest = read_json(path / "manifest.json")
        if manifest is None or "files" not in manifest:
            raise _corrupt(path / "manifest.json", key, "unreadable manifest")
        return CacheEntry(key, path, manifest)

    def _keys(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _KEY_PATTERN.fullmatch(p.name))

    def entries(self) -> list[dict]:
        """One summary dict per entry directory, complete or partial."""
        rows = []
        for key in self._keys():
            path = self.root / key
            manifest = read_json(path / "manifest.json")
            record = manifest or read_json(path / "progress.json") or {}
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
                done = len(list(path.glob("shards/shard-*.json"))) or len(record.get("shards", {}))
                row |= {"shards_done": done, "num_shards": record.get("num_shards")}
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
                entry.verify()
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
            path = self.entry_dir(key)
            if not path.is_dir():
                raise DataError(f"no cache entry {key} under {self.root}; list entries with `ssl-pipeline cache list`")
            if partial_only and (path / "manifest.json").is_file():
                continue
            lock = lock_entry(path)
            if lock is None:
                continue
            shutil.rmtree(path)
            unlock_entry(lock)
            removed.append(key)
        return removed
