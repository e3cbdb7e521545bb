"""FAISS k-means with a fixed seed, restarts, no silent subsampling (a deliberate seeded training sample where\n``max_points_per_centroid`` caps it) and a chunked assignment of every point (docs/theory.md, "Clustering score")."""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ssl_pipeline.config import KMeansConfig


@dataclass
class KMeansResult:
    assignments: np.ndarray
    """[N] cluster index of every point."""
    inertia: float
    """Sum of squared distances to the assigned centroids (the best restart's objective)."""


def kmeans_plusplus(z: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, with scikit-learn's 2 + ⌊ln k⌋ local trials per
    centre): k rows of z [N, m] → [k, m]. Written with torch matrix products, it took 0.2–0.3 s at 10k × 512,
    k = 100, where ``sklearn.cluster.kmeans_plusplus`` took 0.4–1.9 s on the same 2 cores."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))
    generator = torch.Generator().manual_seed(seed)
    trials = 2 + int(math.log(k))
    squared_norms = (x * x).sum(dim=1)
    chosen = [int(torch.randint(len(x), (1,), generator=generator))]
    closest = (squared_norms - 2 * x @ x[chosen[0]] + squared_norms[chosen[0]]).clamp_min(0)
    for _ in range(1, k):
        weights = closest if closest.sum() > 0 else torch.ones_like(closest)
        candidates = torch.multinomial(weights, trials, replacement=True, generator=generator)
        distances = (squared_norms[candidates, None] - 2 * x[candidates] @ x.T + squared_norms[None]).clamp_min(0)
        distances = torch.minimum(closest[None], distances)
        best = int(distances.sum(dim=1).argmin())
        closest = distances[best]
        chosen.append(int(candidates[best]))
    return np.ascontiguousarray(z[chosen], dtype=np.float32)


def faiss_openblas_coretype() -> Optional[str]:
    """The OpenBLAS kernel set for faiss's bundled BLAS on this CPU (None: leave OpenBLAS to decide).

    faiss-cpu 1.15's wheel bundles OpenBLAS 0.3.15, which does not recognise recent virtualised Xeons and
    falls back to generic SSE3 kernels: FAISS k-means ran 3–4× slower than with the AVX-512 kernels, with
    identical inertia (benchmarks/README.md). A value already in the environment is respected.
    """
    if "OPENBLAS_CORETYPE" in os.environ:
        return os.environ["OPENBLAS_CORETYPE"]
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return None
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "SkylakeX"
    return "Haswell" if {"avx2", "fma"} <= flags else None


def import_faiss():
    """Import faiss with ``faiss_openblas_coretype()`` in effect while its BLAS loads, and only then: the
    variable is removed again so no other library or subprocess inherits it."""
    loading = "faiss" not in sys.modules and "OPENBLAS_CORETYPE" not in os.environ
    coretype = faiss_openblas_coretype() if loading else None
    if coretype:
        os.environ["OPENBLAS_CORETYPE"] = coretype
    try:
        import faiss
    finally:
        if coretype:
            os.environ.pop("OPENBLAS_CORETYPE")
    return faiss


ASSIGN_CHUNK = 65536
"""Points per FAISS search call of the assignment (a multiple of FAISS's 4096-query block)."""
_SAMPLE_STREAM = 0x4B4D


def training_sample(n: int, k: int, cfg: KMeansConfig, seed: int) -> Optional[np.ndarray]:
    """The rows k-means is trained on: None (every point) unless ``cfg.max_points_per_centroid`` is set and
    n > max_points_per_centroid·k; then a seeded uniform sample of max_points_per_centroid·k rows, sorted (stream
    (seed, 0x4B4D) of numpy's generator), the same for every restart."""
    cap = cfg.max_points_per_centroid
    if cap is None or n <= cap * k:
        return None
    return np.sort(np.random.default_rng([seed, _SAMPLE_STREAM]).choice(n, cap * k, replace=False))


def faiss_kmeans(z: np.ndarray, k: int, cfg: KMeansConfig, seed: int) -> KMeansResult:
    """Cluster z [N, m] into k clusters; the best of ``cfg.nredo`` restarts by inertia over every point (with
    ``init="random"`` FAISS runs the restarts itself and keeps the best by its objective on the training points).

    ``init="kmeans++"`` seeds each restart with ``kmeans_plusplus`` (FAISS itself samples k random points,
    which on 5 well-separated blobs stayed in a 0.72-accuracy local minimum in all 3 restarts).
    Training uses every point unless ``cfg.max_points_per_centroid`` caps it: then the seeding and Lloyd's
    iterations run on a deliberate seeded sample of max_points_per_centroid·k points (``training_sample``; FAISS
    never subsamples on its own), and every point is assigned to the trained centroids in chunks
    (``assign``, ``ASSIGN_CHUNK`` points per search: the assignments do not depend on the chunk).
    """
    faiss = import_faiss()

    z = np.ascontiguousarray(z, dtype=np.float32)
    sample = training_sample(len(z), k, cfg, seed)
    train = z if sample is None else np.ascontiguousarray(z[sample])
    cap = math.ceil(len(train) / k) + 1  # FAISS keeps every training point
    options = dict(niter=cfg.niter, max_points_per_centroid=cap, min_points_per_centroid=1, verbose=False)
    if cfg.init == "random":
        kmeans = faiss.Kmeans(z.shape[1], k, nredo=cfg.nredo, seed=seed, **options)
        kmeans.train(train)
        return assign(kmeans.index, z)
    best: KMeansResult | None = None
    for restart in range(cfg.nredo):
        kmeans = faiss.Kmeans(z.shape[1], k, seed=seed * 1000 + restart, **options)
        kmeans.train(train, init_centroids=kmeans_plusplus(train, k, seed * 1000 + restart))
        result = assign(kmeans.index, z)
        if best is None or result.inertia < best.inertia:
            best = result
    assert best is not None
    return best


def assign(index, z: np.ndarray, chunk: int = ASSIGN_CHUNK) -> KMeansResult:
    """Nearest centroid of every row of z [N, m] (FAISS ``index`` holding the centroids), ``chunk`` rows per
    search, and the inertia (float64 sum of the squared distances)."""
    assignments = np.empty(len(z), dtype=np.int64)
    inertia = 0.0
    for start in range(0, len(z), chunk):
        distances, nearest = index.search(np.ascontiguousarray(z[start : start + chunk]), 1)
        assignments[start : start + len(nearest)] = nearest[:, 0]
        inertia += float(distances.sum(dtype=np.float64))
    return KMeansResult(assignments, inertia)
