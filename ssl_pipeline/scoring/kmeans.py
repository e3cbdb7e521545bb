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

    FAISS samples at most ``max_points_per_centroid × k`` points for training; unless the config sets it,
    that cap is raised to N so every point is used.
    """
    import faiss

    z = np.ascontiguousarray(z, dtype=np.float32)
    cap = cfg.max_points_per_centroid or math.ceil(len(z) / k) + 1
    kmeans = faiss.Kmeans(
        z.shape[1], k, niter=cfg.niter, nredo=cfg.nredo, seed=seed,
        max_points_per_centroid=cap, min_points_per_centroid=1, verbose=False,
    )
    kmeans.train(z)
    distances, assignments = kmeans.index.search(z, 1)
    return KMeansResult(assignments[:, 0].astype(np.int64), float(distances.sum()))
