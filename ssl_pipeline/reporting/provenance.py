"""Provenance recorded in every run's ``config.yaml``: git commit, package versions, device, and the numerics in
use (CPU model, the ISA level of torch's kernels, the BLAS libraries with their kernel sets and thread counts):
the same code can give different numbers on another CPU or BLAS (scripts/claims_robustness.py)."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from threadpoolctl import threadpool_info

from ssl_pipeline.allocator import malloc_settings
from ssl_pipeline.scoring.kmeans import faiss_openblas_coretype, import_faiss

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


NUMERICS_ENVIRONMENT = (
    "ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS",
    "OPENBLAS_THREAD_TIMEOUT", "OMP_NUM_THREADS", "OMP_WAIT_POLICY",
)
"""Environment variables that change which kernels run (or on how many threads), recorded when set."""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_description() -> dict:
    """The CPU and what torch runs on it: model, cores, torch's kernel ISA level (``ATEN_CPU_CAPABILITY``), its
    threads and BLAS (MKL is linked into torch statically, so threadpoolctl does not list it), and the allocator
    settings ``ssl_pipeline.allocator`` applied."""
    import torch

    config = torch.__config__.show()
    mkl = next((line.split("Version")[1].split("-")[0].strip() for line in config.splitlines() if "Math Kernel" in line), None)
    return {
        "model": cpu_model(),
        "cores": os.cpu_count(),
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "torch_blas": f"mkl {mkl}" if mkl else ("mkl" if torch.backends.mkl.is_available() else "other"),
        "environment": {name: os.environ[name] for name in NUMERICS_ENVIRONMENT if name in os.environ},
        "allocator": malloc_settings(),  # glibc malloc tuning applied at CLI start-up (ssl_pipeline/allocator.py)
    }


def blas_libraries() -> list[dict]:
    """The BLAS/OpenMP libraries loaded by numpy, scipy and faiss (threadpoolctl): library, version, the kernel
    set it chose (``architecture``) and its thread count."""
    import scipy.linalg  # noqa: F401  (load its BLAS so it is listed)

    import_faiss()
    keys = ("internal_api", "version", "architecture", "num_threads", "threading_layer", "filepath")
    return [
        {k: (Path(info[k]).name if k == "filepath" else info.get(k)) for k in keys if k in info}
        for info in threadpool_info()
    ]


def provenance(accelerator: str) -> dict:
    return {
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "device": device_description(accelerator),
        "cpu": cpu_description(),
        "blas": blas_libraries(),
        "faiss_openblas_coretype": faiss_openblas_coretype(),
    }
