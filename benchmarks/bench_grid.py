"""Grid fitting vs the same heads fitted one by one (issue 12, item 8; first part).

The grid side is ``heads.fit.fit_grid`` (one Trainer.fit for all heads of a sweep); the solo side is ``fit_head``
per head, today's reference path. Both fit the same heads on the same generated features, and a head's result does
not depend on the side (tests/test_grid.py); only wall time is compared. Sides alternate within one run (grid
first on even repeats, solo first on odd ones), so load from other processes hits both alike; ``LoadMeter``
records how busy the rest of the machine was.

Sweeps (goals from the issue, on 2 CPU cores):
- ``infonce18``: 18 InfoNCE heads, δ ∈ {1, .8, .6, .4, .2, 0} × 3 seeds — goal ≥ 3× less wall time;
- ``mix18``: InfoNCE + SimSiam × δ ∈ {1, 0.5, 0.2} × 3 seeds — goal ≥ 2.5×;
- ``cifar100_24`` (``--cifar100``): 24 InfoNCE heads, δ ∈ {1, .8, .6, .4, .2, 0} × 4 seeds, 50k × 512, K = 100,
  r = 99 — goal ≥ 2× (long: not in the default run).

    .venv/bin/python benchmarks/bench_grid.py                 # 45k × 1280, K = 10, r = 9, batch 1024, 10 epochs
    .venv/bin/python benchmarks/bench_grid.py --epochs 3      # shorter
    .venv/bin/python benchmarks/bench_grid.py --quick         # seconds, smoke check
    .venv/bin/python benchmarks/bench_grid.py --only-cifar100 --precision bf16-mixed   # r = 99 sweep, bf16 GEMMs

Each grid's achieved GFLOP/s (``step_flops``: its GEMMs, forward and backward) and GB/s of gathered features are
printed beside a plain GEMM of the projection's shape and a plain gather timed in the same run. Each side's process
CPU time (all threads) is recorded too: on a shared machine its ratio is the fairer comparison, since other
processes' load stretches wall time but not the work done.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _machine import LoadMeter, write_results  # benchmarks/_machine.py (this script's folder is on sys.path)
from ssl_pipeline.allocator import configure_malloc
from ssl_pipeline.config import GMMConfig, HeadsConfig, TrainerConfig
from ssl_pipeline.data.synthetic import make_synthetic
from ssl_pipeline.heads.fit import quiet_lightning
from ssl_pipeline.heads.settings import resolve_head_settings

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"infonce18": 3.0, "mix18": 2.5, "cifar100_24": 2.0}
SWEEPS = {
    "infonce18": (["infonce"], [1.0, 0.8, 0.6, 0.4, 0.2, 0.0], [0, 1, 2]),
    "mix18": (["infonce", "simsiam"], [1.0, 0.5, 0.2], [0, 1, 2]),
    "cifar100_24": (["infonce"], [1.0, 0.8, 0.6, 0.4, 0.2, 0.0], [0, 1, 2, 3]),
}


def jobs(name: str, r: int, epochs: int, batch: int):
    methods, deltas, seeds = SWEEPS[name]
    heads = HeadsConfig(r=r, epochs=epochs, batch_size=batch)
    return [resolve_head_settings(heads, m, d, s) for m in methods for d in deltas for s in seeds]


def step_flops(settings, dim: int, basis_dim: int) -> float:
    """Floating-point operations of one grid step (forward and backward), counted from its GEMMs: each head's
    projections (forward and weight gradient) of its seed's gathered blocks — three B × d blocks when the grid
    chooses positives on the outputs, two (anchors and its positives) when on the inputs (``grid.select_inputs``)
    —, its A = U·B (d × m × r, forward and gradient) and, for InfoNCE, its B × B similarities (forward and two
    gradients)."""
    from ssl_pipeline.heads.grid import select_inputs

    total = 0.0
    for seed in {s.seed for s in settings}:
        heads = [s for s in settings if s.seed == seed]
        by_delta: dict[float, list] = {}
        for s in heads:
            by_delta.setdefault(float(s.delta), []).append(s)
        blocks = 2 if select_inputs(sum(s.r for s in heads), by_delta) else 3
        for s in heads:
            b, r = s.batch_size, s.r
            total += 2 * blocks * b * dim * r * 2 + 2 * dim * basis_dim * r * 2
            if s.method == "infonce":
                total += 2 * b * b * r * 3
    return total


def step_gather_bytes(settings, dim: int) -> float:
    """Bytes of features gathered per grid step: three [B, d] float32 blocks per seed."""
    seeds = {s.seed for s in settings}
    return len(seeds) * 3 * settings[0].batch_size * dim * 4


def machine_rates(features, settings) -> dict:
    """A plain GEMM of the grid's projection shape ([3B, d] @ [d, G·r / S]) and a plain gather of 3B random rows,
    timed here: the machine's reachable GFLOP/s and GB/s for this work."""
    import torch

    x = torch.from_numpy(features.x_train.astype("float32"))
    b, dim = settings[0].batch_size, x.shape[1]
    width = sum(s.r for s in settings) // len({s.seed for s in settings})
    a, w = torch.randn(3 * b, dim), torch.randn(dim, width)
    index = torch.randint(0, len(x), (3 * b,))

    def rate(f, work):
        for _ in range(3):
            f()
        start, n = time.perf_counter(), 30
        for _ in range(n):
            f()
        return work * n / (time.perf_counter() - start) / 1e9

    return {"gemm_gflops": rate(lambda: a @ w, 2 * 3 * b * dim * width), "gather_gbs": rate(lambda: x[index], 3 * b * dim * 4)}


def time_sides(features, settings, repeats: int, precision: str = "32-true") -> dict:
    from ssl_pipeline.heads.fit import fit_head
    from ssl_pipeline.heads.fit import fit_grid

    from ssl_pipeline.heads.inputs import head_module

    trainer = TrainerConfig(precision=precision)  # both sides alike
    for method in {s.method for s in settings}:  # the span's eigendecomposition is shared by both sides: not timed
        head_module(features, next(s for s in settings if s.method == method))
    times: dict[str, list[float]] = {"grid": [], "solo": []}
    cpu: dict[str, list[float]] = {"grid": [], "solo": []}
    for repeat in range(repeats):
        order = ("grid", "solo") if repeat % 2 == 0 else ("solo", "grid")
        for side in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            if side == "grid":
                fit_grid(features, settings, trainer)
            else:
                for s in settings:
                    fit_head(features, s, trainer)
            times[side].append(time.perf_counter() - start)
            cpu[side].append(time.process_time() - start_cpu)
    grid, solo = statistics.median(times["grid"]), statistics.median(times["solo"])
    from ssl_pipeline.heads.inputs import input_span, input_statistics

    dim = features.dim
    basis_dim = input_span(features, input_statistics(features, False)[1].numpy()).rank
    steps = settings[0].epochs * (len(features.y_train) // settings[0].batch_size)
    return {"heads": len(settings), "grid_seconds": times["grid"], "solo_seconds": times["solo"],
            "speedup": solo / grid, "grid_cpu_seconds": cpu["grid"], "solo_cpu_seconds": cpu["solo"],
            "cpu_speedup": statistics.median(cpu["solo"]) / statistics.median(cpu["grid"]), "ms_per_head_step": 1000 * grid / steps / len(settings),
            "grid_gflops": step_flops(settings, dim, basis_dim) * steps / grid / 1e9,
            "grid_gather_gbs": step_gather_bytes(settings, dim) * steps / grid / 1e9,
            **machine_rates(features, settings)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="4k × 128 features, 2 epochs")
    parser.add_argument("--cifar100", action="store_true", help="also the CIFAR-100-scale sweep (long)")
    parser.add_argument("--only-cifar100", action="store_true", help="the CIFAR-100-scale sweep alone")
    parser.add_argument("--precision", default="32-true",
                        help="Lightning precision of both sides (e.g. bf16-mixed: CPUs with AVX512-BF16/AMX)")
    args = parser.parse_args(argv)
    configure_malloc()  # the CLI's allocator setting, on both sides alike
    quiet_lightning()
    n, d, k, r, batch, epochs = (4000, 128, 10, 9, 1024, 2) if args.quick else (45000, 1280, 10, 9, 1024, args.epochs)
    features = None if args.only_cifar100 else make_synthetic(
        GMMConfig(preset="random", d=d, k=k, n_train=n, n_val=100, n_test=100, seed=0))
    results = {}
    meter = LoadMeter().start()
    for name in () if args.only_cifar100 else ("infonce18", "mix18"):
        results[name] = time_sides(features, jobs(name, r, epochs, batch), args.repeats, args.precision)
    if args.cifar100 or args.only_cifar100:
        big = make_synthetic(GMMConfig(preset="random", d=512, k=100, n_train=50000, n_val=100, n_test=100, seed=0))
        results["cifar100_24"] = time_sides(big, jobs("cifar100_24", 99, epochs, batch), args.repeats, args.precision)
    meter.stop()
    shape = "50000 × 512 features, K=100, r=99" if args.only_cifar100 else f"{n} × {d} features, K={k}, r={r}"
    print(f"{shape}, batch {batch}, {epochs} epochs; {args.repeats} repeat(s), sides alternating; "
          f"precision {args.precision} on both sides")
    for name, result in results.items():
        verdict = "meets" if result["speedup"] >= GOALS[name] else "misses"
        print(f"  {name:12s} {result['heads']} heads: grid {statistics.median(result['grid_seconds']):7.1f} s, "
              f"solo {statistics.median(result['solo_seconds']):7.1f} s → {result['speedup']:.2f}× "
              f"({verdict} the {GOALS[name]:g}× goal); CPU time {result['cpu_speedup']:.2f}× less; "
              f"{result['ms_per_head_step']:.2f} ms per head-step; "
              f"grid {result['grid_gflops']:.0f} GFLOP/s (plain GEMM {result['gemm_gflops']:.0f}), gathers "
              f"{result['grid_gather_gbs']:.2f} GB/s (plain gather {result['gather_gbs']:.1f})")
    print(meter.line())
    name = "grid_quick" if args.quick else "grid" if not args.only_cifar100 else "grid_cifar100"
    out = ROOT / "benchmarks" / "results" / f"{name}{'' if args.precision == '32-true' else '_' + args.precision}.json"
    write_results(out, {"args": vars(args), "results": results, "load": meter.summary()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
