"""FAISS vs scikit-learn k-means on a 50k × 512 Gaussian mixture with K = 100.

Goal: FAISS ≥ 5 × faster than scikit-learn's Lloyd at the same work (same initial centroids, 20 iterations,
every point used, no subsampling), with its inertia within 1 % of scikit-learn's. Both inertias are computed
here the same way: the sum over every point of the squared distance to its nearest final centroid (float64).
Each side is warmed up once on a small problem, then timed ``--repeats`` times (best and median reported).

The faiss-cpu wheel bundles OpenBLAS 0.3.15, which does not recognise recent Xeons and falls back to its
"Prescott" (SSE3) kernels; the architecture it picked is printed and recorded. ``--openblas-coretype
SkylakeX`` (or Haswell on AVX2-only CPUs) sets ``OPENBLAS_CORETYPE`` before faiss is imported. One extra,
informational row times scikit-learn with its default k-means++ init (what a plain ``KMeans`` call pays).

    .venv/bin/python benchmarks/bench_kmeans.py            # 50k × 512, K=100, 20 iterations
    .venv/bin/python benchmarks/bench_kmeans.py --openblas-coretype SkylakeX \
        --out benchmarks/results/kmeans_skylakex.json
    .venv/bin/python benchmarks/bench_kmeans.py --quick    # 10k × 128, K=20
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
from sklearn.cluster import KMeans

from _machine import LoadMeter, write_results  # benchmarks/_machine.py (this script's folder is on sys.path)
from ssl_pipeline.config import GMMConfig
from ssl_pipeline.data.synthetic import make_synthetic

SPEEDUP_GOAL = 5.0
INERTIA_TOLERANCE = 0.01


def faiss_centroids(x: np.ndarray, init: np.ndarray, niter: int) -> tuple[np.ndarray, int]:
    import faiss

    k = len(init)
    kmeans = faiss.Kmeans(
        x.shape[1], k, niter=niter, nredo=1, seed=0, max_points_per_centroid=math.ceil(len(x) / k) + 1,
        min_points_per_centroid=1, verbose=False,
    )
    kmeans.train(x, init_centroids=init)
    return kmeans.centroids, niter


def sklearn_centroids(x: np.ndarray, init: np.ndarray, niter: int) -> tuple[np.ndarray, int]:
    kmeans = KMeans(len(init), init=init, n_init=1, max_iter=niter, algorithm="lloyd", tol=0.0).fit(x)
    return kmeans.cluster_centers_, int(kmeans.n_iter_)


def sklearn_kmeanspp(x: np.ndarray, k: int, niter: int) -> tuple[np.ndarray, int]:
    kmeans = KMeans(k, init="k-means++", n_init=1, max_iter=niter, algorithm="lloyd", tol=0.0, random_state=0).fit(x)
    return kmeans.cluster_centers_, int(kmeans.n_iter_)


def faiss_blas_architecture() -> str:
    from threadpoolctl import threadpool_info

    infos = [i for i in threadpool_info() if "faiss" in i["filepath"] and i.get("internal_api") == "openblas"]
    return f"OpenBLAS {infos[0]['version']} {infos[0]['architecture']}" if infos else "unknown"


def inertia(x: np.ndarray, centroids: np.ndarray, chunk: int = 8192) -> float:
    """Σ_i min_k ‖x_i − c_k‖², in float64 over chunks."""
    c = np.asarray(centroids, dtype=np.float64)
    c_sq = (c**2).sum(1)
    total = 0.0
    for start in range(0, len(x), chunk):
        xb = x[start : start + chunk].astype(np.float64)
        d2 = (xb**2).sum(1)[:, None] - 2 * xb @ c.T + c_sq[None]
        total += float(np.maximum(d2.min(1), 0).sum())
    return total


def timed(fn: Callable[[], tuple[np.ndarray, int]], repeats: int) -> tuple[list[float], np.ndarray, int]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    assert out is not None
    return times, out[0], out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k × 128, K=20")
    parser.add_argument("--niter", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--openblas-coretype", help="OPENBLAS_CORETYPE for faiss's BLAS (e.g. Prescott, the generic "
                        "kernels of the plain wheel); default: what the pipeline picks (scoring.kmeans.import_faiss)")
    parser.add_argument("--no-kmeanspp", action="store_true", help="skip the informational k-means++ row")
    parser.add_argument("--out", type=Path, help="default benchmarks/results/kmeans[_quick].json")
    args = parser.parse_args()
    args.out = args.out or Path(f"benchmarks/results/kmeans{'_quick' if args.quick else ''}.json")
    if args.openblas_coretype:
        os.environ["OPENBLAS_CORETYPE"] = args.openblas_coretype
    from ssl_pipeline.scoring.kmeans import import_faiss

    faiss = import_faiss()  # after OPENBLAS_CORETYPE: OpenBLAS reads it when the library loads

    gmm = GMMConfig(preset="random", d=128, k=20, n_train=10000, n_val=100, n_test=100) if args.quick else GMMConfig(
        preset="random", d=512, k=100, n_train=50000, n_val=200, n_test=200
    )
    x = np.ascontiguousarray(make_synthetic(gmm).x_train, dtype=np.float32)
    init = np.ascontiguousarray(x[np.random.default_rng(0).choice(len(x), gmm.k, replace=False)])
    print(f"data {x.shape[0]}×{x.shape[1]} float32, K={gmm.k}, {args.niter} iterations, best of {args.repeats}, "
          f"faiss {faiss.__version__} ({faiss.omp_get_max_threads()} threads)")
    blas = faiss_blas_architecture()
    print(f"faiss's BLAS: {blas}" + ("  ← generic SSE3 kernels; try --openblas-coretype" if "Prescott" in blas else ""))

    small = x[:2000]  # warm-up: thread pools, lazy imports, first-call allocations
    faiss_centroids(small, small[:10].copy(), 2)
    sklearn_centroids(small, small[:10].copy(), 2)

    load = LoadMeter().start()
    sides = {
        "faiss": timed(lambda: faiss_centroids(x, init.copy(), args.niter), args.repeats),
        "sklearn": timed(lambda: sklearn_centroids(x, init.copy(), args.niter), args.repeats),
    }
    results = {
        name: {"best_s": min(t), "median_s": statistics.median(t), "times_s": t, "iterations": it,
               "inertia": inertia(x, c)}
        for name, (t, c, it) in sides.items()
    }
    if not args.no_kmeanspp:
        times, centroids, iterations = timed(lambda: sklearn_kmeanspp(x, gmm.k, args.niter), 1)
        results["sklearn k-means++ (info)"] = {
            "best_s": times[0], "median_s": times[0], "times_s": times, "iterations": iterations,
            "inertia": inertia(x, centroids),
        }
    load.stop()
    speedup = results["sklearn"]["best_s"] / results["faiss"]["best_s"]
    gap = results["faiss"]["inertia"] / results["sklearn"]["inertia"] - 1
    met = speedup >= SPEEDUP_GOAL and abs(gap) <= INERTIA_TOLERANCE

    print(f"\n{'side':<26} {'best s':>8} {'median s':>9} {'iters':>6} {'inertia':>16}")
    for name, res in results.items():
        print(f"{name:<26} {res['best_s']:>8.2f} {res['median_s']:>9.2f} {res['iterations']:>6} {res['inertia']:>16.6g}")
    print(f"speedup sklearn/faiss {speedup:.1f}× (goal ≥ {SPEEDUP_GOAL:g}×), inertia faiss/sklearn − 1 = {gap:+.3%} "
          f"(goal within ±{INERTIA_TOLERANCE:.0%}): {'met' if met else 'MISSED'}")

    print(load.line())

    payload = {
        "benchmark": "kmeans", "goal": f"speedup >= {SPEEDUP_GOAL}, |inertia gap| <= {INERTIA_TOLERANCE}",
        "quick": args.quick, "data": {"n": x.shape[0], "d": x.shape[1], "k": gmm.k}, "niter": args.niter,
        "repeats": args.repeats, "faiss_threads": faiss.omp_get_max_threads(), "faiss_blas": blas,
        "openblas_coretype": args.openblas_coretype or "pipeline default", "machine": platform.platform(),
        "load": load.summary(), "speedup": speedup, "inertia_relative_gap": gap, "goal_met": met, "results": results,
    }
    write_results(args.out, payload)


if __name__ == "__main__":
    main()
