"""Where backbone weights come from: local checkpoints (checksummed into the cache key) and hub downloads that
fail in seconds, with advice, when the host cannot be reached (instead of a minute of retries)."""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from ssl_pipeline import digests
from ssl_pipeline.errors import ConfigError


@lru_cache(maxsize=None)
def file_sha256(path: str) -> str:
    """sha256 of a weights file, once per process; part of a backbone's identity so a changed file re-extracts."""
    return digests.file_sha256(path)


def checkpoint_identity(path: str) -> str:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"data.backbone.checkpoint={path} does not exist; give the path of a local weights file")
    return f"file-sha256={file_sha256(str(file.resolve()))[:16]}"


@lru_cache(maxsize=None)
def host_reachable(host: str, timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False") and "huggingface" in host:
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def require_download(url_or_host: str, what: str) -> None:
    """Raise a one-line ConfigError if ``what`` must be downloaded and its host cannot be reached."""
    host = urlparse(url_or_host).hostname or url_or_host
    if not host_reachable(host):
        raise ConfigError(
            f"cannot download {what}: {host} is unreachable (offline?) and the weights are not in the local cache; "
            "connect, or give a local weights file with data.backbone.checkpoint=PATH"
        )


def hf_file_cached(repo_id: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename)
    return isinstance(found, str) and Path(found).is_file()


def torch_hub_cached(url: str) -> bool:
    import torch

    return (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)).is_file()
