"""One-GPU check of the GPU paths (issues 12 and 14): run by ``scripts/gpu_check.sh``; ≤ 4 minutes, no network
(packaged EfficientNet-Lite0 weights, generated features, the digits images shipped with scikit-learn).

1. **Extraction** with AMP and channels_last on the GPU against the CPU's float32 features of the same digits
   images: the cosine of every row ≥ 0.999; images/s on both.
2. **Head grid**, features resident: the 24-head CIFAR-100-scale grid against one head (``bench_gpu_grid.py``;
   goal ≤ 2× one head's wall time).
3. **Linear probe** on CUDA against the CPU probe on the same projection: equal test accuracy within 0.005; time.
4. **One-GPU DDP** run through Lightning (``strategy: ddp``, devices 1) of the pancakes lab: it finishes and writes
   its results.

Prints one line per check (PASS/FAIL with the numbers) and writes ``gpu_check.json`` to ``$OUT`` (or
``benchmarks/results/``). ``--device cpu`` is a dry run of the same code on CPU with small sizes (checks 1 and 3
compare CPU with CPU; 4 runs on CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def extraction_check(device: str, work: Path) -> dict:
    """Digits through the packaged EfficientNet-Lite0: CPU float32 vs ``device`` with AMP and channels_last."""
    from ssl_pipeline.cli import parse_command
    from ssl_pipeline.features.source import load_features

    features = {}
    rates = {}
    for side, options in (("cpu", ["--data.backbone.device", "cpu", "--data.backbone.amp", "false"]),
                          (device, ["--data.backbone.device", device, "--data.backbone.amp", "true",
                                    "--data.backbone.channels_last", "true"])):
        argv = ["extract", "--config", str(ROOT / "configs" / "default.yaml"),
                "--data.extract.cache_root", str(work / f"cache_{side}"), *options]
        _, cfg, _ = parse_command(argv)
        start = time.perf_counter()
        features[side] = load_features(cfg.data)  # extracts into the fresh cache, then loads
        elapsed = time.perf_counter() - start
        n = len(features[side].y_train) + len(features[side].y_val) + len(features[side].y_test)
        rates[side] = n / elapsed
    import numpy as np

    a = np.concatenate([features["cpu"].x_train, features["cpu"].x_test])
    b = np.concatenate([features[device].x_train, features[device].x_test])
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return {"check": "extraction", "passed": bool(cos.min() >= 0.999), "min_row_cos": float(cos.min()),
            "images_per_s_cpu_fp32": rates["cpu"], f"images_per_s_{device}_amp": rates[device]}


def probe_check(device: str) -> dict:
    """The probe on ``device`` and on CPU, same 20k × 64 projection of 100 classes."""
    import dataclasses

    import numpy as np

    from ssl_pipeline.config import ProbeConfig
    from ssl_pipeline.scoring.probe import linear_probe

    rng = np.random.default_rng(0)
    k, d = 100, 64
    centres = rng.normal(size=(k, d)) * 0.6
    split = {}
    for name, n in (("train", 20000), ("val", 2000), ("test", 5000)):
        y = rng.integers(0, k, n)
        split[name] = ((centres[y] + rng.normal(size=(n, d))).astype(np.float32), y)
    accuracy, seconds = {}, {}
    for side in ("cpu", device):
        cfg = dataclasses.replace(ProbeConfig(), device=side)
        start = time.perf_counter()
        result = linear_probe(*split["train"], *split["val"], *split["test"], k, cfg)
        seconds[side] = time.perf_counter() - start
        accuracy[side] = result.test_accuracy
    return {"check": "probe", "passed": abs(accuracy["cpu"] - accuracy[device]) <= 0.005,
            "accuracy_cpu": accuracy["cpu"], f"accuracy_{device}": accuracy[device],
            "seconds_cpu": seconds["cpu"], f"seconds_{device}": seconds[device]}


def ddp_check(accelerator: str, work: Path) -> dict:
    """The pancakes lab (1 seed, 2 epochs) through Lightning's ``ddp`` strategy on one device, in a subprocess."""
    run_dir = work / "ddp_run"
    command = [sys.executable, "-m", "ssl_pipeline.cli", "synthetic", "--config",
               str(ROOT / "configs" / "synthetic" / "pancakes.yaml"), "--seeds", "[0]", "--deltas", "[1]",
               "--heads.epochs", "2", "--heads.per_delta", "[]", "--heads.methods", "[infonce]",
               "--heads.trainer.accelerator", accelerator, "--heads.trainer.devices", "1",
               "--heads.trainer.strategy", "ddp", "--score.baselines", "[lda]", "--score.kmeans.nredo", "1",
               "--wandb.mode", "disabled", "--run_dir", str(run_dir)]
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_PORT", "MASTER_ADDR", "LOCAL_RANK", "RANK",
                                                             "WORLD_SIZE", "NODE_RANK")}
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    seconds = time.perf_counter() - start
    passed = result.returncode == 0 and (run_dir / "results.json").is_file()
    tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
    return {"check": "ddp_1gpu", "passed": passed, "returncode": result.returncode, "seconds": seconds, "tail": tail}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cuda | cpu (dry run)")
    parser.add_argument("--skip", nargs="*", default=[], help="checks to skip: extraction grid probe ddp")
    args = parser.parse_args(argv)

    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "none"
    if device == "none":
        print("gpu_check: no CUDA device visible; pass --device cpu for a dry run")
        return 2
    accelerator = "gpu" if device == "cuda" else "cpu"
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu (dry run)"
    print(f"gpu_check on {name}; torch {torch.__version__}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checks = [
            ("extraction", lambda: extraction_check(device, work)),
            ("grid", lambda: _grid_check(device)),
            ("probe", lambda: probe_check(device)),
            ("ddp", lambda: ddp_check(accelerator, work)),
        ]
        for label, check in checks:
            if label in args.skip:
                continue
            start = time.perf_counter()
            try:
                result = check()
            except Exception as error:  # one failing check must not hide the others' numbers
                result = {"check": label, "passed": False, "error": f"{type(error).__name__}: {error}"}
            result["wall_s"] = time.perf_counter() - start
            results.append(result)
            numbers = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                for k, v in result.items() if k not in ("check", "passed", "tail"))
            print(f"{'PASS' if result['passed'] else 'FAIL'} {label}: {numbers}", flush=True)
    (out / "gpu_check.json").write_text(json.dumps({"device": name, "torch": torch.__version__,
                                                    "checks": results}, indent=2) + "\n")
    return 0 if all(r["passed"] for r in results) else 1


def _grid_check(device: str) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_gpu_grid import main as grid_main

    quick = device == "cpu"
    code = grid_main(["--device", device] + (["--quick"] if quick else []))
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "benchmarks" / "results"
    result = json.loads((out / ("gpu_grid_quick.json" if quick else "gpu_grid.json")).read_text())
    passed = code == 0 and (quick or (result["ratio"] <= 2.0 and result["features_resident"]))
    return {"check": "grid", "passed": passed, **{k: result[k] for k in ("ratio", "grid_seconds", "one_head_seconds",
                                                                          "features_resident")}}


if __name__ == "__main__":
    raise SystemExit(main())
