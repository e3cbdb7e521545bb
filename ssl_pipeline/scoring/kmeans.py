"""FAISS k-means with a fixed seed, restarts and no silent subsampling (DESIGN.md, "Clustering score")."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ssl_pipeline.config import KMeansConfig


@dataclass
class KMeansResult:
    assignments: np.ndarray
    """[N] cluster index of every point."""
    inertia: float
    """Sum of squared distances to the assigned centroids (the best restart's objective)."""


def faiss_kmeans(z: np.ndarray, k: int, cfg: KMeansConfig, seed: int) -> KMeansResult:
    """Cluster z [N, m] into k clusters; the best of ``cfg.nredo`` restarts by inertia.

    ``init="kmeans++"`` seeds each restart with scikit-learn's ``kmeans_plusplus`` (FAISS itself samples k
    random points, which on 5 well-separated blobs stayed in a 0.72-accuracy local minimum in all 3 restarts).
    FAISS trains on at most ``max_points_per_centroid × k`` points; unless the config sets that cap it is
    raised so every point is used.
    """
    import faiss

    z = np.ascontiguousarray(z, dtype=np.float32)
    cap = cfg.max_points_per_centroid or math.ceil(len(z) / k) + 1
    options = dict(niter=cfg.niter, max_points_per_centroid=cap, min_points_per_centroid=1, verbose=False)
    if cfg.init == "random":
        kmeans = faiss.Kmeans(z.shape[1], k, nredo=cfg.nredo, seed=seed, **options)
        kmeans.train(z)
        return _assign(kmeans.index, z)
    from sklearn.cluster import kmeans_plusplus

    best: KMeansResult | None = None
    for restart in range(cfg.nredo):
        centroids, _ = kmeans_plusplus(z, k, random_state=seed * 1000 + restart)
        kmeans = faiss.Kmeans(z.shape[1], k, seed=seed * 1000 + restart, **options)
        kmeans.train(z, init_centroids=np.ascontiguousarray(centroids, dtype=np.float32))
        result = _assign(kmeans.index, z)
        if best is None or result.inertia < best.inertia:
            best = result
    assert best is not None
    return best


def _assign(index, z: np.ndarray) -> KMeansResult:
    distances, assignments = index.search(z, 1)
    return KMeansResult(assignments[:, 0].astype(np.int64), float(distances.sum()))
