"""The 24-head CIFAR-100-scale grid against one head, on one GPU with the features resident (issue 12, item 8).

24 InfoNCE heads (δ ∈ {1, .8, .6, .4, .2, 0} × 4 seeds) on generated 50k × 512 features, K = 100, r = 99, batch
1024, trained as one grid (``fit_grid``), against one of those heads fitted alone on the same device; goal: the
grid takes ≤ 2× the wall time of the one head. Prints the device, whether the features were resident on it
(``features_fit_on``), the peak device memory, both wall times and their ratio; writes
``benchmarks/results/gpu_grid.json`` (or ``$OUT/gpu_grid.json`` when ``$OUT`` is set).

    python benchmarks/bench_gpu_grid.py                      # CUDA (or MPS) if present, else refuses
    python benchmarks/bench_gpu_grid.py --device cpu --quick # dry run of the same code path on CPU, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cuda | mps | cpu")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="5k × 64 features, K = 10, r = 9, 2 epochs (dry run)")
    args = parser.parse_args(argv)

    import torch

    from ssl_pipeline.allocator import configure_malloc
    from ssl_pipeline.config import GMMConfig, HeadsConfig, TrainerConfig
    from ssl_pipeline.data.pairs import features_fit_on
    from ssl_pipeline.data.synthetic import make_synthetic
    from ssl_pipeline.heads.fit import quiet_lightning
    from ssl_pipeline.heads.fit import fit_head
    from ssl_pipeline.heads.fit import fit_grid
    from ssl_pipeline.heads.inputs import head_module
    from ssl_pipeline.heads.settings import resolve_head_settings

    configure_malloc()
    quiet_lightning()
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "none"
    if device == "none":
        print("bench_gpu_grid: no CUDA or MPS device visible; pass --device cpu for a dry run")
        return 2
    accelerator = {"cuda": "gpu", "mps": "mps", "cpu": "cpu"}[device]
    n, d, k, r, epochs = (5000, 64, 10, 9, 2) if args.quick else (50000, 512, 100, 99, args.epochs)
    features = make_synthetic(GMMConfig(preset="random", d=d, k=k, n_train=n, n_val=100, n_test=100, seed=0))
    heads = HeadsConfig(r=r, epochs=epochs, batch_size=1024)
    jobs = [resolve_head_settings(heads, "infonce", delta, seed)
            for delta in (1.0, 0.8, 0.6, 0.4, 0.2, 0.0) for seed in (0, 1, 2, 3)]
    trainer = TrainerConfig(accelerator=accelerator, devices=1)
    head_module(features, jobs[0])  # the span's eigendecomposition, shared by both sides: not timed
    name = torch.cuda.get_device_name(0) if device == "cuda" else device
    resident = features_fit_on(torch.device(device), features.x_train.astype("float32").nbytes, trainer.feature_memory_share)

    def timed(f):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        f()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    fit_head(features, jobs[0], trainer)  # warm-up: CUDA context, kernels
    one = timed(lambda: fit_head(features, jobs[0], trainer))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    grid = timed(lambda: fit_grid(features, jobs, trainer))
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    ratio = grid / one
    result = {"device": name, "features": f"{n} × {d}", "k": k, "r": r, "epochs": epochs, "heads": len(jobs),
              "features_resident": resident, "one_head_seconds": one, "grid_seconds": grid, "ratio": ratio,
              "goal": 2.0, "peak_device_memory_gib": peak, "torch": torch.__version__}
    print(f"{name}: {len(jobs)}-head grid {grid:.1f} s vs one head {one:.1f} s → {ratio:.2f}× "
          f"({'meets' if ratio <= 2 else 'misses'} the ≤ 2× goal); features resident: {resident}; "
          + (f"peak device memory {peak:.2f} GiB" if peak is not None else "no device memory counter"))
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / ("gpu_grid_quick.json" if args.quick else "gpu_grid.json")).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
