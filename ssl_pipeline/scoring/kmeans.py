"""FAISS k-means with a fixed seed, restarts and no silent subsampling (docs/theory.md, "Clustering score")."""

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


def faiss_kmeans(z: np.ndarray, k: int, cfg: KMeansConfig, seed: int) -> KMeansResult:
    """Cluster z [N, m] into k clusters; the best of ``cfg.nredo`` restarts by inertia.

    ``init="kmeans++"`` seeds each restart with ``kmeans_plusplus`` (FAISS itself samples k random points,
    which on 5 well-separated blobs stayed in a 0.72-accuracy local minimum in all 3 restarts).
    FAISS trains on at most ``max_points_per_centroid × k`` points; unless the config sets that cap it is
    raised so every point is used.
    """
    faiss = import_faiss()

    z = np.ascontiguousarray(z, dtype=np.float32)
    cap = cfg.max_points_per_centroid or math.ceil(len(z) / k) + 1
    options = dict(niter=cfg.niter, max_points_per_centroid=cap, min_points_per_centroid=1, verbose=False)
    if cfg.init == "random":
        kmeans = faiss.Kmeans(z.shape[1], k, nredo=cfg.nredo, seed=seed, **options)
        kmeans.train(z)
        return _assign(kmeans.index, z)
    best: KMeansResult | None = None
    for restart in range(cfg.nredo):
        kmeans = faiss.Kmeans(z.shape[1], k, seed=seed * 1000 + restart, **options)
        kmeans.train(z, init_centroids=kmeans_plusplus(z, k, seed * 1000 + restart))
        result = _assign(kmeans.index, z)
        if best is None or result.inertia < best.inertia:
            best = result
    assert best is not None
    return best


def _assign(index, z: np.ndarray) -> KMeansResult:
    distances, assignments = index.search(z, 1)
    return KMeansResult(assignments[:, 0].astype(np.int64), float(distances.sum()))
