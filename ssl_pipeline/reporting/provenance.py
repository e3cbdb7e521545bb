"""Provenance recorded in every run's ``config.yaml``: git commit, package versions, device."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

from ssl_pipeline.scoring.kmeans import faiss_openblas_coretype

PACKAGES = ("ssl-pipeline", "torch", "torchvision", "pytorch-lightning", "open-clip-torch", "faiss-cpu", "scikit-learn", "numpy")


def git_commit() -> str:
    """The project's commit (with ``+dirty`` if the tree has changes), or ``unknown`` outside a checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def device_description(accelerator: str) -> str:
    import torch

    cpu = f"{platform.machine()} {platform.processor() or 'cpu'}, {torch.get_num_threads()} threads"
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)} × {torch.cuda.device_count()}; {cpu}"
    return cpu


def provenance(accelerator: str) -> dict:
    return {
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "device": device_description(accelerator),
        "faiss_openblas_coretype": faiss_openblas_coretype(),
    }
