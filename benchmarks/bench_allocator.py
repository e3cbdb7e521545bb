"""glibc allocator tuning (``ssl_pipeline/allocator.py``) on vs off: extraction and head fitting, fresh processes.

The setting is process-wide and must be made before torch allocates, so every measurement is a fresh child
process: ``on`` calls ``configure_malloc()`` first thing, as ``ssl-pipeline`` does; ``off`` runs the same with
``SSL_PIPELINE_MALLOC=off`` (glibc's defaults). ``MALLOC_*_`` variables and ``GLIBC_TUNABLES`` are removed from
both sides' environment, so a setting of the caller's cannot leak into either. The two settings alternate, the
order flipping every repeat, so drifting machine load hits both alike.

Tasks (each timed inside its child, with ``resource.getrusage`` of the child itself and of its DataLoader workers
over the timed part only):

* ``extract``: ``features.extract.extract_split`` of a generated ImageFolder of JPEGs (256 × 256, 10 classes)
  through the packaged EfficientNet-Lite0 at 128 px, batch 128 and the default DataLoader workers, into a fresh
  cache root — what ``ssl-pipeline extract`` runs, after one warm-up forward pass. Reports images/s.
* ``infonce`` / ``simsiam``: ``heads.fit.fit_head`` on generated 45k × 1280 features (GMM preset ``random``,
  K = 10), r = 9, δ = 1, batch 1024. Reports ms per training step over the epochs after the first.

Reported per task and setting (median over repeats): the rate, user and system CPU seconds, the system-time share
sys / (user + sys), minor page faults, and peak RSS (the child's, and its largest worker's); the ratio on / off
of the rates. ``--quick`` is a smoke check (~10 s per child; per-step and start-up overheads dominate, so its
ratios mean nothing): 192 JPEGs at 64 × 64 (still encoded at 128 px), 4k × 128 features, 2 epochs, one repeat.

    .venv/bin/python benchmarks/bench_allocator.py            # 3,000 images, 45k × 1280, 3 repeats
    .venv/bin/python benchmarks/bench_allocator.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
SETTINGS = ("on", "off")
TASKS = ("extract", "infonce", "simsiam")


# ---------------------------------------------------------------------------------------------- child side
def usage() -> dict:
    """CPU seconds and faults of this process plus its reaped children (DataLoader workers), and peak RSS."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"user_s": own.ru_utime + kids.ru_utime, "sys_s": own.ru_stime + kids.ru_stime,
            "minflt": own.ru_minflt + kids.ru_minflt, "majflt": own.ru_majflt + kids.ru_majflt,
            "maxrss_mib": own.ru_maxrss / 1024, "workers_maxrss_mib": kids.ru_maxrss / 1024}


def delta(start: dict, end: dict, wall: float) -> dict:
    out = {k: end[k] - start[k] for k in ("user_s", "sys_s", "minflt", "majflt")}
    cpu = out["user_s"] + out["sys_s"]
    return {**out, "wall_s": wall, "sys_share": out["sys_s"] / cpu if cpu > 0 else None,
            "maxrss_mib": end["maxrss_mib"], "workers_maxrss_mib": end["workers_maxrss_mib"]}


def child(task: str, spec: dict) -> dict:
    from ssl_pipeline.allocator import configure_malloc

    record = configure_malloc()  # first, before torch is imported; 'off' comes from SSL_PIPELINE_MALLOC=off
    measure = child_extract if task == "extract" else child_head_fit
    return {"allocator": record, **measure(task, spec)}


def child_extract(task: str, spec: dict) -> dict:
    import torch
    from rich.console import Console

    from ssl_pipeline.backbones import describe_backbone, load_backbone
    from ssl_pipeline.config import BackboneConfig, DatasetConfig, ExtractConfig
    from ssl_pipeline.data.images import load_split
    from ssl_pipeline.features.cache import FeatureCache
    from ssl_pipeline.features.extract import extract_split

    backbone_cfg = BackboneConfig(image_size=spec["image_size"])
    info = describe_backbone(backbone_cfg)
    backbone = load_backbone(backbone_cfg, info)
    split = load_split(DatasetConfig(name="imagefolder", root=spec["images"]), "train", 0)
    with torch.no_grad():  # warm-up: oneDNN kernels, first allocations (both settings alike)
        warm = torch.rand(spec["batch_size"], 3, spec["image_size"], spec["image_size"], device=backbone.device)
        backbone.encode_images(info.preprocess.normalize(warm))
        del warm
    cache_root = Path(tempfile.mkdtemp(prefix="bench_allocator_cache_", dir=spec["work"]))
    cfg = ExtractConfig(cache_root=str(cache_root), batch_size=spec["batch_size"])
    start, begin = usage(), time.perf_counter()
    entry = extract_split(split, info, lambda: backbone, FeatureCache(cache_root), cfg, Console(quiet=True))
    wall = time.perf_counter() - begin
    result = delta(start, usage(), wall)
    images = entry.manifest["num_items"]
    shutil.rmtree(cache_root)
    return {**result, "items": images, "rate": images / wall, "unit": "img/s", "threads": torch.get_num_threads()}


def child_head_fit(task: str, spec: dict) -> dict:
    import pytorch_lightning as pl
    import torch

    from ssl_pipeline.config import GMMConfig, HeadsConfig, TrainerConfig
    from ssl_pipeline.data.synthetic import make_synthetic
    from ssl_pipeline.heads.fit import quiet_lightning
    from ssl_pipeline.heads.fit import fit_head
    from ssl_pipeline.heads.settings import resolve_head_settings

    quiet_lightning()
    features = make_synthetic(GMMConfig(preset="random", d=spec["d"], k=spec["k"], n_train=spec["n_train"],
                                        n_val=1000, n_test=1000))
    heads = HeadsConfig(r=spec["k"] - 1, epochs=spec["epochs"], batch_size=spec["head_batch_size"])
    settings = resolve_head_settings(heads, task, 1.0, 0)

    class Stamps(pl.Callback):
        """Time, usage and steps at the end of every training epoch."""

        def __init__(self) -> None:
            self.steps, self.marks = 0, []

        def on_train_batch_end(self, *args) -> None:
            self.steps += 1

        def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            self.marks.append((time.perf_counter(), usage(), self.steps))

    stamps, original = Stamps(), pl.Trainer

    class Patched(original):  # type: ignore[misc, valid-type]  (fit_head looks pl.Trainer up at call time)
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **{**kwargs, "callbacks": [*(kwargs.get("callbacks") or []), stamps]})

    pl.Trainer = Patched
    try:
        fit_head(features, settings, TrainerConfig(log_every_n_steps=50))
    finally:
        pl.Trainer = original
    (t0, u0, s0), (t1, u1, s1) = stamps.marks[0], stamps.marks[-1]  # epoch 0 is warm-up
    result = delta(u0, u1, t1 - t0)
    steps = s1 - s0
    return {**result, "steps": steps, "rate": 1000 * (t1 - t0) / steps, "unit": "ms/step",
            "threads": torch.get_num_threads()}


# --------------------------------------------------------------------------------------------- parent side
def write_jpegs(root: Path, n: int, size: int, classes: int = 10) -> None:
    """root/train/<class>/<i>.jpg (n images) and root/val/<class>/0.jpg: class colour plus smooth noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("val", classes)):
        for i in range(count):
            k = i % classes
            folder = root / split / f"c{k}"
            folder.mkdir(parents=True, exist_ok=True)
            base = np.array([(37 * k) % 256, (91 * k + 60) % 256, (151 * k + 120) % 256], dtype=np.float32)
            coarse = rng.normal(0, 40, (size // 16, size // 16, 3)).astype(np.float32)
            noise = np.kron(coarse, np.ones((16, 16, 1), np.float32)) + rng.normal(0, 12, (size, size, 3))
            pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)


def child_environment(setting: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env.pop("SSL_PIPELINE_MALLOC", None)
    if setting == "off":
        env["SSL_PIPELINE_MALLOC"] = "off"
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_child(task: str, setting: str, spec: dict) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", task, "--spec", json.dumps(spec)]
    result = subprocess.run(command, capture_output=True, text=True, env=child_environment(setting), cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"{task}/{setting} child failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict]) -> dict:
    keys = ("rate", "wall_s", "user_s", "sys_s", "sys_share", "minflt", "maxrss_mib", "workers_maxrss_mib")
    return {k: statistics.median(run[k] for run in runs) for k in keys if all(run.get(k) is not None for run in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke-size: 192 images at 64 px, 4k × 128 features")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=6, help="head fits: epochs (the first is warm-up)")
    parser.add_argument("--out", type=Path, help="default benchmarks/results/allocator[_quick].json")
    parser.add_argument("--child", choices=TASKS, help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, json.loads(args.spec))))
        return

    from _machine import LoadMeter, write_results

    args.out = args.out or HERE / "results" / f"allocator{'_quick' if args.quick else ''}.json"
    work = Path(tempfile.mkdtemp(prefix="bench_allocator_"))
    spec = {"work": str(work), "images": str(work / "jpegs"), "n_images": 192 if args.quick else args.images,
            "jpeg_size": 64 if args.quick else 256, "image_size": 128, "batch_size": 64 if args.quick else 128,
            "d": 128 if args.quick else 1280, "k": 10, "n_train": 4000 if args.quick else 45000,
            "head_batch_size": 1024, "epochs": 2 if args.quick else args.epochs}
    if args.quick:
        args.repeats = min(args.repeats, 1)
    stripped = sorted(k for k in os.environ if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES")
    if stripped:
        print(f"removed from the children's environment: {', '.join(stripped)}")
    if "extract" in args.tasks:
        write_jpegs(Path(spec["images"]), spec["n_images"], spec["jpeg_size"])
    print(f"extract: {spec['n_images']} JPEGs {spec['jpeg_size']} px → EfficientNet-Lite0 at {spec['image_size']} px, "
          f"batch {spec['batch_size']}; heads: {spec['n_train']} × {spec['d']}, K={spec['k']}, r={spec['k'] - 1}, "
          f"batch {spec['head_batch_size']}, {spec['epochs']} epochs; {args.repeats} repeat(s), settings alternating")

    runs: dict[str, dict[str, list[dict]]] = {task: {s: [] for s in SETTINGS} for task in args.tasks}
    load = LoadMeter().start()
    try:
        for repeat in range(args.repeats):
            order = SETTINGS if repeat % 2 == 0 else SETTINGS[::-1]
            for task in args.tasks:
                for setting in order:
                    result = run_child(task, setting, spec)
                    runs[task][setting].append(result)
                    print(f"  {task:<8} {setting:<3} {result['rate']:9.1f} {result['unit']:<8} sys share "
                          f"{result['sys_share']:.0%}  faults {result['minflt']:>9,}  peak {result['maxrss_mib']:.0f} MiB")
    finally:
        load.stop()
        shutil.rmtree(work, ignore_errors=True)

    results = {}
    for task, sides in runs.items():
        on, off = summarise(sides["on"]), summarise(sides["off"])
        unit = sides["on"][0]["unit"]
        speedup = on["rate"] / off["rate"] if unit == "img/s" else off["rate"] / on["rate"]
        results[task] = {"unit": unit, "on": on, "off": off, "speedup": speedup, "runs": sides,
                         "allocator_on": sides["on"][0]["allocator"], "allocator_off": sides["off"][0]["allocator"]}

    print(f"\n{'task':<8} {'unit':<8} {'off':>9} {'on':>9} {'speed-up':>9} {'sys share off→on':>17} "
          f"{'faults off→on':>22} {'peak MiB off→on':>16}")
    for task, res in results.items():
        off, on = res["off"], res["on"]
        print(f"{task:<8} {res['unit']:<8} {off['rate']:>9.1f} {on['rate']:>9.1f} {res['speedup']:>8.2f}× "
              f"{off['sys_share']:>8.0%} → {on['sys_share']:<6.0%} {off['minflt']:>10,.0f} → {on['minflt']:<9,.0f} "
              f"{off['maxrss_mib']:>7.0f} → {on['maxrss_mib']:<6.0f}")
    print("medians over repeats; sys share = system / (user + system) CPU time of the timed part (workers included); "
          "peak = the child's max RSS")
    print(load.line())
    payload = {
        "benchmark": "allocator", "quick": args.quick, "spec": {k: v for k, v in spec.items() if k not in ("work", "images")},
        "repeats": args.repeats, "machine": platform.platform(), "cores": os.cpu_count(), "load": load.summary(),
        "environment_removed": stripped, "results": results,
    }
    write_results(args.out, payload)


if __name__ == "__main__":
    main()
