"""GMM checks at CIFAR-100 scale: seconds per part of ``checking.statistics.run_checks`` on one dataset.

Goal: the closed-form parts (PCA from one class-statistics pass, tied/full/diag likelihoods and BIC,
heterogeneity, Gaussianity distances) well under 60 s on 2 cores; EM (bounded by ``check.em_max_iter`` and
``check.em_max_points``), the LDA split-half fits and drawing one surrogate are timed separately.

Data: a GMM (preset ``random``, d = 512, K = 100) with 50k train, 5k val, 10k test, like CIFAR-100 features.

    .venv/bin/python benchmarks/bench_checks.py                 # pca_dim 32
    .venv/bin/python benchmarks/bench_checks.py --pca-dim 64 --out benchmarks/results/checks_p64.json
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLOSED_FORM = ("pca", "likelihoods", "heterogeneity", "gaussianity")
GOAL_SECONDS = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pca-dim", type=int, default=32)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "checks.json")
    args = parser.parse_args()

    import sys

    sys.path.insert(0, str(HERE))
    from _machine import LoadMeter, write_results

    from ssl_pipeline.config import CheckConfig, GMMConfig
    from ssl_pipeline.data.synthetic import make_synthetic
    from ssl_pipeline.checking.statistics import run_checks
    from ssl_pipeline.checking.surrogate import sample_surrogate

    features = make_synthetic(GMMConfig(preset="random", d=512, k=100, n_train=50000, n_val=5000, n_test=10000))
    cfg = CheckConfig(pca_dim=args.pca_dim)
    load = LoadMeter().start()
    start = time.perf_counter()
    result = run_checks(features, cfg)
    total = time.perf_counter() - start
    start = time.perf_counter()
    sample_surrogate(features, None, seed=1)
    surrogate_seconds = time.perf_counter() - start
    load.stop()
    closed_form = sum(result.seconds[part] for part in CLOSED_FORM)
    met = closed_form < GOAL_SECONDS
    for part, seconds in result.seconds.items():
        print(f"{part:<16} {seconds:7.2f} s{'  (closed form)' if part in CLOSED_FORM else ''}")
    print(f"{'draw surrogate':<16} {surrogate_seconds:7.2f} s")
    print(f"closed-form parts {closed_form:.1f} s (goal < {GOAL_SECONDS:g} s): {'met' if met else 'MISSED'}; "
          f"run_checks total {total:.1f} s; EM {result.em_iterations} iterations, converged {result.em_converged}")
    print(load.line())
    payload = {
        "benchmark": "checks", "goal": f"closed-form parts < {GOAL_SECONDS} s", "pca_dim": args.pca_dim,
        "data": {"n_train": 50000, "n_val": 5000, "n_test": 10000, "d": 512, "k": 100},
        "seconds": result.seconds, "closed_form_seconds": closed_form, "run_checks_seconds": total,
        "surrogate_seconds": surrogate_seconds, "em_iterations": result.em_iterations,
        "em_converged": result.em_converged, "em_max_points": cfg.em_max_points, "goal_met": met,
        "machine": platform.platform(), "load": load.summary(),
    }
    write_results(args.out, payload)


if __name__ == "__main__":
    main()
