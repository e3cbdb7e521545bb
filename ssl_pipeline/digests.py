"""Content digests used as identities: of JSON-able settings (cache keys, feature keys) and of files (weights,
cache files). One place, so every key in the project is computed the same way."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

_CHUNK = 8 << 20


def json_digest(payload: object, length: int = 16) -> str:
    """The first ``length`` hex characters of sha256 over ``payload`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:length]


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, streamed through one reused 8 MiB buffer."""
    digest, buffer = hashlib.sha256(), memoryview(bytearray(_CHUNK))
    with open(path, "rb", buffering=0) as f:
        while size := f.readinto(buffer):
            digest.update(buffer[:size])
    return digest.hexdigest()
