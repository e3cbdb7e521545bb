"""ImageNet scale (issue 14): ``fit``, ``score`` and ``check`` of the real CLI on a generated 1.28M × 512 float16
feature file with K = 1000, each stage a separate process: its wall time and its peak memory.

Goal: each stage's **peak anonymous memory** (the high-water mark of ``RssAnon`` over the stage's process and its
children, sampled every ``--interval`` s from ``/proc/<pid>/status``) at most **1 × the feature file**. Pages of the
memory-mapped file are file-backed (``RssFile``) and do not count; the peak total RSS (``VmRSS``, sampled) and the
kernel's own peak RSS of the process (``ru_maxrss`` from ``wait4``) are reported beside it, and so is a ``start-up``
row: a process that only imports what the stages import (the floor under each). With ``--cifar100``
(50k × 512, K = 100) the goal is the whole ``score`` stage ≤ 60 s (start-up included).

Data: one ``.npz`` written member by member without compression (``numpy.savez``'s layout), which the ``npz``
source memory-maps end to end (``data.labelled.load_npz_features``: every split a ``FeatureRows`` view of the map):
``x_train`` [N, d] float16, ``y_train`` [N], ``x_test`` [T, d] float16, ``y_test`` [T]; val is carved from train by
the loader (``data.val_fraction`` 0.1, stratified), as the ``images`` source carves it from a cache entry. Each
array is written in chunks of ``CHUNK_ROWS`` rows, never held whole; each ``.npy`` member's data starts on a
4 KiB boundary (a padding extra field in its zip header), and the file is written to ``<name>.tmp``, fsynced and
renamed (``ssl_pipeline.atomic``). The mixture: a covariance Σ = R diag(λ) Rᵀ with λ log-uniform in [1, 25] (the
``random`` preset's range), whitened class means at a mean pairwise Mahalanobis distance ``--separation``, class
weights uniform in [0.55, 1] (ImageNet's classes hold 732–1,300 images), a constant offset; test balanced.
Generation runs as its own measured process too (``generate``), reused when a kept file with the same
parameters exists.

Stage settings: one InfoNCE head (δ = 1, seed 0, r = 64, 1 epoch, batch 1024); ``score``: that head and the lda /
pca / random baselines, k-means k = K with niter 20, nredo 1, max_points_per_centroid 256 (k-means++ seeding), the
probe as ``scoring.probe.probe_rows`` says (printed); ``check``: pca_dim 32, 2 surrogates (the fewest allowed),
repeats 1, no surrogate heads, the checks on ``checking.statistics.check_sample``'s subsample, EM on
``theory.gmm_checks.em_points``; the CLI's ``check`` also scores the saved head and the baselines on the real
features (the head is copied into its run dir, not fitted again). W&B disabled.

    .venv/bin/python benchmarks/bench_imagenet_scale.py                 # 1.28M × 512, K = 1000 (~1.4 GB file, ~5 min)
    .venv/bin/python benchmarks/bench_imagenet_scale.py --quick         # 50k × 128, K = 100: a smoke check
    .venv/bin/python benchmarks/bench_imagenet_scale.py --cifar100      # 50k × 512, K = 100: score ≤ 60 s
    .venv/bin/python benchmarks/bench_imagenet_scale.py --keep          # keep the data and the run dirs
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA_DIR = ROOT / "data" / "bench_imagenet_scale"
PRESETS = {
    "imagenet": dict(n=1_281_167, dim=512, k=1000, n_test=50_000),
    "cifar100": dict(n=50_000, dim=512, k=100, n_test=10_000),
    "quick": dict(n=50_000, dim=128, k=100, n_test=10_000),
}
STAGES = ("fit", "score", "check")
SCORE_GOAL_SECONDS = 60.0
MEMORY_GOAL = 1.0
"""Peak RssAnon of a stage ≤ this × the feature file's bytes: judged at ImageNet size (and custom sizes), not for
``--cifar100`` / ``--quick``, whose files are smaller than the imports' own memory (the ratio is printed there)."""
NO_MEMORY_GOAL = ("cifar100", "quick")
CHUNK_ROWS = 32768
GENERATOR_VERSION = 1
_STREAM = 0x1A6E
PAGE = 4096
_PAD_EXTRA_ID = 0xD935  # a private zip extra-field id (the one Android's zipalign uses for padding)


# ----------------------------------------------------------------------------------------------- data generation


def npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    """The .npy header (format 1.0) of a C-ordered array, padded as numpy pads it."""
    import numpy as np

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                  "shape": tuple(shape)})
    return buffer.getvalue()


def open_member(archive: zipfile.ZipFile, name: str, header: bytes):
    """A stored (uncompressed) zip member ``name`` open for writing, its header written, padded so that the array
    data after the .npy header starts on a page boundary of the file (memory maps and float16 gathers aligned)."""
    info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    # local header: 30 bytes + name + extra (ours, then the zip64 field of 20 bytes that force_zip64 adds)
    start = archive.start_dir + 30 + len(name.encode()) + 20 + len(header)
    pad = -start % PAGE
    if 0 < pad < 4:
        pad += PAGE
    info.extra = struct.pack("<HH", _PAD_EXTRA_ID, pad - 4) + bytes(pad - 4) if pad else b""
    member = archive.open(info, "w", force_zip64=True)
    member.write(header)
    return member


def generate(path: Path, n: int, dim: int, k: int, n_test: int, seed: int, separation: float) -> dict:
    """Write the feature file ``path`` (module docstring) chunk by chunk, atomically; returns its description."""
    import numpy as np

    from ssl_pipeline.atomic import atomic_write

    rng = np.random.default_rng([seed, _STREAM])
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    variances = np.exp(rng.uniform(0.0, math.log(25.0), dim))
    root = ((rotation * np.sqrt(variances)) @ rotation.T).astype(np.float32)  # Σ^(1/2), symmetric
    # whitened means: E‖w_i − w_j‖² = separation², i.e. that mean pairwise Mahalanobis distance
    whitened_means = (rng.standard_normal((k, dim)) * separation / math.sqrt(2 * dim)).astype(np.float32)
    offset = rng.uniform(0.0, 2.0, dim).astype(np.float32)
    weights = rng.uniform(0.55, 1.0, k)
    y_train = rng.choice(k, n, p=weights / weights.sum()).astype(np.int64)
    y_test = rng.permutation(np.arange(n_test) % k).astype(np.int64)

    def write_features(archive: zipfile.ZipFile, name: str, labels: np.ndarray) -> None:
        with open_member(archive, f"{name}.npy", npy_header((len(labels), dim), "<f2")) as member:
            for start in range(0, len(labels), CHUNK_ROWS):
                rows = labels[start : start + CHUNK_ROWS]
                block = rng.standard_normal((len(rows), dim), dtype=np.float32)
                block += whitened_means[rows]
                block = block @ root
                block += offset
                member.write(memoryview(np.ascontiguousarray(block.astype(np.float16))).cast("B"))

    def write_labels(archive: zipfile.ZipFile, name: str, labels: np.ndarray) -> None:
        with open_member(archive, f"{name}.npy", npy_header(labels.shape, "<i8")) as member:
            member.write(memoryview(np.ascontiguousarray(labels)).cast("B"))

    def write(handle) -> None:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            write_features(archive, "x_train", y_train)
            write_labels(archive, "y_train", y_train)
            write_features(archive, "x_test", y_test)
            write_labels(archive, "y_test", y_test)

    atomic_write(path, write)
    counts = np.bincount(y_train, minlength=k)
    return {"path": str(path), "bytes": path.stat().st_size, "n_train_file": n, "n_test": n_test, "dim": dim, "k": k,
            "seed": seed, "separation": separation, "dtype": "float16", "generator_version": GENERATOR_VERSION,
            "class_sizes_train": [int(counts.min()), int(counts.max())]}


def check_mapped(path: Path) -> dict:
    """Open the file as the pipeline does (``data.rows.open_npz``): every 2-D member must be a memory map, its data
    page-aligned."""
    import numpy as np

    from ssl_pipeline.data.rows import open_npz

    arrays = open_npz(path)
    layout = {}
    for name, array in arrays.items():
        if array.ndim == 2:
            if not isinstance(array, np.memmap):
                raise SystemExit(f"{path}: {name} is not memory-mapped by data.rows.open_npz")
            layout[name] = {"shape": list(array.shape), "dtype": str(array.dtype), "offset": int(array.offset),
                            "page_aligned": array.offset % PAGE == 0}
    return layout


def startup_main() -> None:
    """The ``start-up`` row's process: the CLI's allocator setting and every library a stage imports, nothing else
    (the floor under every stage's peak)."""
    from ssl_pipeline.allocator import configure_malloc

    configure_malloc()
    import numpy  # noqa: F401
    import pytorch_lightning  # noqa: F401
    import scipy.linalg  # noqa: F401
    import sklearn.mixture  # noqa: F401
    import torch  # noqa: F401

    import ssl_pipeline.checks  # noqa: F401
    import ssl_pipeline.experiment  # noqa: F401
    import ssl_pipeline.heads.grid  # noqa: F401
    from ssl_pipeline.scoring.kmeans import import_faiss

    import_faiss()
    torch.zeros(1).sum()


def generate_main(args: argparse.Namespace) -> None:
    """The ``generate`` stage's process: write the file and its description beside it (``<name>.json``)."""
    path = Path(args.generate_into)
    meta = generate(path, args.n, args.dim, args.k, args.n_test, args.seed, args.separation)
    meta["layout"] = check_mapped(path)
    from ssl_pipeline.atomic import atomic_write_bytes

    atomic_write_bytes(path.with_suffix(".json"), (json.dumps(meta, indent=1) + "\n").encode())


# ------------------------------------------------------------------------------------------------ memory sampling


def _status_kb(pid: int) -> Optional[dict[str, int]]:
    """VmRSS, RssAnon, RssFile (kB) of ``pid``; None when it has gone."""
    values = {}
    try:
        with open(f"/proc/{pid}/status") as file:
            for line in file:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return values


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from the parent ids of ``/proc/*/stat``)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                stat = file.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


class MemorySampler(threading.Thread):
    """Every ``interval`` s, the sum over a process tree of VmRSS, RssAnon and RssFile; keeps the peaks (the tree is
    re-read every ``tree_every`` samples)."""

    def __init__(self, pid: int, interval: float, start: float, tree_every: int = 5) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.tree_every, self.start_time = pid, interval, tree_every, start
        self.stop_event = threading.Event()
        self.peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
        self.peak_anon_at = 0.0
        self.peak_anon_rss = 0
        self.samples = 0
        self.most_processes = 1
        self.timeline: list[list[float]] = []
        """[second, largest RssAnon MiB, largest VmRSS MiB] per whole second of the stage."""

    def run(self) -> None:
        tree = [self.pid]
        while not self.stop_event.is_set():
            if self.samples % self.tree_every == 0:
                tree = descendants(self.pid)
                self.most_processes = max(self.most_processes, len(tree))
            total = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
            for pid in tree:
                status = _status_kb(pid)
                if status:
                    for key in total:
                        total[key] += status.get(key, 0)
            if total["VmRSS"]:
                self.samples += 1
                now = time.perf_counter() - self.start_time
                if total["RssAnon"] > self.peak["RssAnon"]:
                    self.peak_anon_at = now
                    self.peak_anon_rss = total["VmRSS"]
                anon, rss = round(total["RssAnon"] / 1024), round(total["VmRSS"] / 1024)
                if self.timeline and self.timeline[-1][0] == int(now):
                    self.timeline[-1][1:] = [max(self.timeline[-1][1], anon), max(self.timeline[-1][2], rss)]
                else:
                    self.timeline.append([int(now), anon, rss])
                for key in total:
                    self.peak[key] = max(self.peak[key], total[key])
            self.stop_event.wait(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.join()


def run_stage(name: str, command: list[str], log_path: Path, env: dict, interval: float) -> dict:
    """Run ``command`` as its own process (output to ``log_path``, each line stamped with the seconds since start),
    sampling its memory; its wall time, peaks and the kernel's resource usage of it."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                   text=True, bufsize=1)
        sampler = MemorySampler(process.pid, interval, start)
        sampler.start()
        tail: list[str] = []
        lines: list[tuple[float, str]] = []  # (seconds, line) of the lines that say something

        def read() -> None:
            for line in process.stdout:
                now = time.perf_counter() - start
                log.write(f"[{now:8.1f} s] {line}")
                log.flush()
                tail.append(line.rstrip("\n"))
                del tail[:-40]
                if line.strip() and "Warning" not in line and not line.startswith(" "):
                    lines.append((now, line.strip()[:160]))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop()
        reader.join()
    kb = 1024
    return {
        "stage": name, "command": command, "log": str(log_path), "returncode": process.returncode,
        "wall_s": wall, "user_cpu_s": usage.ru_utime, "system_cpu_s": usage.ru_stime,
        "peak_rss_anon_bytes": sampler.peak["RssAnon"] * kb, "peak_rss_bytes": sampler.peak["VmRSS"] * kb,
        "peak_rss_file_bytes": sampler.peak["RssFile"] * kb, "rss_at_peak_anon_bytes": sampler.peak_anon_rss * kb,
        "peak_anon_at_s": sampler.peak_anon_at, "kernel_max_rss_bytes": usage.ru_maxrss * kb,
        "peak_anon_after_line": next((line for at, line in reversed(lines) if at <= sampler.peak_anon_at), None),
        "samples": sampler.samples, "sample_interval_s": interval, "most_processes": sampler.most_processes,
        "timeline_mib": sampler.timeline, "tail": tail,
    }


# --------------------------------------------------------------------------------------------------- the pipeline


def experiment_config(data_path: Path, run_dir: Path, name: str) -> dict:
    """The experiment config of every stage (written as YAML; ``check`` gets its own ``--run_dir``)."""
    return {
        "name": name,
        "seeds": [0],
        "deltas": [1.0],
        "run_dir": str(run_dir),
        "data": {"source": "npz", "path": str(data_path), "name": name, "val_fraction": 0.1, "split_seed": 0},
        "heads": {"methods": ["infonce"], "r": 64, "epochs": 1, "batch_size": 1024,
                  "optimizer": {"name": "adam", "lr": 0.01}, "infonce": {"tau": 0.1},
                  "trainer": {"accelerator": "cpu", "devices": 1}},
        "score": {"baselines": ["lda", "pca", "random"],
                  "kmeans": {"niter": 20, "nredo": 1, "init": "kmeans++", "max_points_per_centroid": 256},
                  "probe": {"device": "cpu"}},
        "check": {"pca_dim": 32, "surrogates": 2, "repeats": 1, "surrogate_heads": False, "seed": 0},
        "wandb": {"mode": "disabled"},
    }


def sampling_rules(n_file: int, k: int, n_test: int, cfg: dict) -> dict:
    """What the library subsamples at this size (its own rules, computed here to be printed and recorded)."""
    import numpy as np

    from ssl_pipeline.checking.statistics import MAX_CHECK_ROWS
    from ssl_pipeline.config import CheckConfig
    from ssl_pipeline.scoring.probe import PROBE_MAX_CELLS
    from ssl_pipeline.theory.gmm_checks import em_points

    n_val = int(np.ceil(n_file * cfg["data"]["val_fraction"]))  # sklearn's train_test_split rounds the test part up
    n_train = n_file - n_val
    if n_train * k > PROBE_MAX_CELLS:
        per_class = max(1, PROBE_MAX_CELLS // k**2)
        probe = (f"trained on {per_class} rows per class (≈ {per_class * k:,} of {n_train:,}; N·K = {n_train * k:.3g} > "
                 f"{PROBE_MAX_CELLS:.0e}, scoring.probe.probe_rows), L2 chosen on all {n_val:,} val rows, "
                 f"tested on all {n_test:,}")
    else:
        probe = f"trained on all {n_train:,} train rows (N·K = {n_train * k:.3g} ≤ {PROBE_MAX_CELLS:.0e})"
    cap = cfg["score"]["kmeans"]["max_points_per_centroid"]
    kmeans = (f"on the {n_test:,} test points, k = {k}, niter 20, nredo 1, k-means++; "
              + (f"trained on a sample of {cap * k:,}" if n_test > cap * k else f"every point (≤ {cap}·K = {cap * k:,})"))
    checked = {split: min(rows, MAX_CHECK_ROWS) for split, rows in (("train", n_train), ("val", n_val), ("test", n_test))}
    em = em_points(CheckConfig().em_max_points, k)
    check = (f"on {', '.join(f'{s} {checked[s]:,}' for s in checked)} rows (check_sample, cap {MAX_CHECK_ROWS:,} per "
             f"split); EM on {min(em, checked['train']):,} points, 1 repeat; 2 surrogates of that subsample")
    return {"n_train": n_train, "n_val": n_val, "probe": probe, "kmeans": kmeans, "check": check}


def summarise_results(run_dir: Path) -> list[dict]:
    """The score records of a run dir, a few metrics each."""
    path = run_dir / "results.json"
    if not path.is_file():
        return []
    keep = ("method", "r", "nmi", "acc", "probe_acc", "fisher_top_cos2", "fisher_energy", "effective_rank")
    return [{key: record.get(key) for key in keep}
            for record in json.loads(path.read_text()) if record.get("data") != "surrogate"]


def summarise_checks(run_dir: Path) -> dict:
    """A few one-number GMM checks of a run dir (real value, surrogate mean)."""
    path = run_dir / "checks.json"
    if not path.is_file():
        return {}
    wanted = ("em_nmi", "heldout_loglik_tied", "heldout_loglik_full_minus_tied", "heterogeneity_mean",
              "lda_split_half_cos2")
    return {record["statistic"]: {"real": record.get("real"), "surrogate_mean": record.get("surrogate_mean")}
            for record in json.loads(path.read_text())
            if record.get("statistic") in wanted and record.get("class") is None and record.get("method") is None}


def mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def stage_line(result: dict, file_bytes: int, floor: int = 0, judged: bool = True) -> str:
    """The plain line printed as a stage finishes (``judged``: the memory goal applies to this size)."""
    ratio = result["peak_rss_anon_bytes"] / file_bytes
    verdict = f"FAILED (exit {result['returncode']})" if result["returncode"] else (
        ("met" if ratio <= MEMORY_GOAL else "MISSED") if result["stage"] in STAGES and judged else "")
    above = f", {mib(result['peak_rss_anon_bytes'] - floor)} above start-up" if floor and result["stage"] in STAGES else ""
    return (f"{result['stage']:<8} {result['wall_s']:7.1f} s   peak RssAnon {mib(result['peak_rss_anon_bytes']):>10} "
            f"({ratio:.2f} × file{above})   peak RSS {mib(result['peak_rss_bytes']):>10} "
            f"(kernel {mib(result['kernel_max_rss_bytes'])})   {verdict}")


def table(results: list[dict], file_bytes: int, preset: str, floor: int) -> str:
    """The final Markdown table (benchmarks/README.md's form)."""
    header = ("| stage | wall s | CPU s | peak RssAnon | RssAnon / file | above start-up | peak RSS (sampled) "
              "| peak RSS (kernel) | peak RssFile | goal |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ratio = r["peak_rss_anon_bytes"] / file_bytes
        goals = []
        if r["stage"] in STAGES and preset not in NO_MEMORY_GOAL:
            goals.append(f"≤ {MEMORY_GOAL:g}× {'met' if ratio <= MEMORY_GOAL else 'MISSED'}")
        if preset == "cifar100" and r["stage"] == "score":
            goals.append(f"≤ {SCORE_GOAL_SECONDS:g} s {'met' if r['wall_s'] <= SCORE_GOAL_SECONDS else 'MISSED'}")
        if r["returncode"]:
            goals = [f"FAILED (exit {r['returncode']})"]
        above = mib(r["peak_rss_anon_bytes"] - floor) if r["stage"] in STAGES else "–"
        lines.append(f"| {r['stage']} | {r['wall_s']:.1f} | {r['user_cpu_s'] + r['system_cpu_s']:.0f} "
                     f"| {mib(r['peak_rss_anon_bytes'])} | {ratio:.2f} | {above} | {mib(r['peak_rss_bytes'])} "
                     f"| {mib(r['kernel_max_rss_bytes'])} | {mib(r['peak_rss_file_bytes'])} | {'; '.join(goals) or '–'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true", help="50k × 128, K = 100 (a smoke check, ~2 min)")
    preset.add_argument("--cifar100", action="store_true", help="50k × 512, K = 100: the score stage ≤ 60 s")
    parser.add_argument("--n", type=int, help="rows of x_train in the file (val is carved from them)")
    parser.add_argument("--dim", type=int, help="feature dimension d")
    parser.add_argument("--k", type=int, help="classes K")
    parser.add_argument("--n-test", type=int, help="test rows (balanced over the classes)")
    parser.add_argument("--separation", type=float, default=8.0, help="mean pairwise Mahalanobis distance of the means")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of fit,score,check")
    parser.add_argument("--extra", default="", help="dotted CLI overrides added to every stage, e.g. "
                        "'--score.probe.max_iter 10' (recorded; the goal's numbers are taken without)")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between memory samples")
    parser.add_argument("--keep", action="store_true", help="keep the generated file and the run dirs")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="where the file and run dirs go (git-ignored)")
    parser.add_argument("--out", type=Path,
                        help="results JSON (default benchmarks/results/imagenet_scale[_quick|_cifar100|_custom].json)")
    parser.add_argument("--generate-into", help=argparse.SUPPRESS)  # internal: the generate stage's own process
    parser.add_argument("--startup-only", action="store_true", help=argparse.SUPPRESS)  # internal: the start-up row
    args = parser.parse_args()
    name = "quick" if args.quick else "cifar100" if args.cifar100 else "imagenet"
    for key, value in PRESETS[name].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.generate_into:
        generate_main(args)
        return
    if args.startup_only:
        startup_main()
        return
    stages = [s for s in args.stages.split(",") if s]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or ("score" in stages or "check" in stages) and "fit" not in stages:
        parser.error(f"--stages: a subset of {','.join(STAGES)} that includes fit (got {args.stages})")
    if args.extra or any(getattr(args, key) != value for key, value in PRESETS[name].items()):
        name = f"{name}-custom"  # not the preset's sizes or settings: neither its goal nor its results file
    suffix = {"imagenet": "", "quick": "_quick", "cifar100": "_cifar100"}.get(name, "_custom")
    out = args.out or HERE / "results" / f"imagenet_scale{suffix}.json"

    sys.path.insert(0, str(HERE))
    from _machine import LoadMeter, write_results

    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    data_dir = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    stem = f"gmm_n{args.n}_d{args.dim}_k{args.k}_t{args.n_test}_sep{args.separation:g}_s{args.seed}"
    data_path = data_dir / f"{stem}.npz"
    meta_path = data_path.with_suffix(".json")
    run_root = Path(tempfile.mkdtemp(prefix=f"run-{name}-", dir=data_dir))
    print(f"preset {name}: file {args.n:,} × {args.dim} float16 (val carved: 10 %), K = {args.k}, test {args.n_test:,}; "
          f"run dirs and logs under {run_root}")

    load = LoadMeter().start()
    results: list[dict] = []
    created = False
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() and data_path.is_file() else None
    wanted = {"n_train_file": args.n, "dim": args.dim, "k": args.k, "n_test": args.n_test, "seed": args.seed,
              "separation": args.separation, "generator_version": GENERATOR_VERSION}
    if meta is not None and all(meta.get(key) == value for key, value in wanted.items()):
        print(f"reusing {data_path} ({mib(meta['bytes'])})")
    else:
        command = [sys.executable, str(Path(__file__).resolve()), "--generate-into", str(data_path), "--n", str(args.n),
                   "--dim", str(args.dim), "--k", str(args.k), "--n-test", str(args.n_test), "--seed", str(args.seed),
                   "--separation", str(args.separation)]
        created = True
        result = run_stage("generate", command, run_root / "generate.log", env, args.interval)
        results.append(result)
        if result["returncode"]:
            print("\n".join(result["tail"][-20:]))
            data_path.with_name(data_path.name + ".tmp").unlink(missing_ok=True)
            raise SystemExit(f"generation failed; log {result['log']}")
        meta = json.loads(meta_path.read_text())
    file_bytes = int(meta["bytes"])
    if results:
        print(stage_line(results[-1], file_bytes))

    startup = run_stage("start-up", [sys.executable, str(Path(__file__).resolve()), "--startup-only"],
                        run_root / "start-up.log", env, args.interval)
    results.append(startup)
    print(stage_line(startup, file_bytes))
    if startup["returncode"]:
        print("\n".join(startup["tail"][-20:]))

    cfg = experiment_config(data_path, run_root / "run", f"imagenet_scale_{name}")
    config_path = run_root / "config.yaml"
    import yaml

    config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    rules = sampling_rules(args.n, args.k, args.n_test, cfg)
    print(f"probe: {rules['probe']}\nk-means: {rules['kmeans']}\ncheck: {rules['check']}")
    cli = [sys.executable, "-m", "ssl_pipeline.cli"]
    check_dir = run_root / "check"
    failed = False
    for stage in stages:
        command = [*cli, stage, "--config", str(config_path), *shlex.split(args.extra)]
        if stage == "check":  # its own run dir, holding the head fit saved (so check scores it, not refits it)
            shutil.copytree(run_root / "run" / "heads", check_dir / "heads")
            command += ["--run_dir", str(check_dir)]
        result = run_stage(stage, command, run_root / f"{stage}.log", env, args.interval)
        results.append(result)
        print(stage_line(result, file_bytes, startup["peak_rss_anon_bytes"], name not in NO_MEMORY_GOAL), flush=True)
        if result["peak_anon_after_line"]:
            print(f"{'':9}peak RssAnon at {result['peak_anon_at_s']:.0f} s of {result['wall_s']:.0f} s, after the line "
                  f"“{result['peak_anon_after_line']}”")
        if result["returncode"]:
            print("\n".join(result["tail"][-20:]))
            failed = True
            break
    load.stop()

    metrics = summarise_results(run_root / "run")
    for record in metrics:
        print("  " + "  ".join(f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}"
                               for key, value in record.items() if value is not None))
    checks = summarise_checks(check_dir)
    if checks:
        print("  checks: " + ", ".join(f"{key} {v['real']:.3g} (surrogates {v['surrogate_mean']:.3g})"
                                       for key, v in checks.items() if v["real"] is not None))
    print()
    print(table(results, file_bytes, name, startup["peak_rss_anon_bytes"]))
    print(f"feature file {data_path.name}: {file_bytes:,} bytes ({mib(file_bytes)}); memory goal: peak RssAnon ≤ "
          f"{MEMORY_GOAL:g} × that per stage (fit, score, check; start-up = the imports alone, the floor of each)")
    if file_bytes < 4 * startup["peak_rss_anon_bytes"]:
        print(f"(the file is small beside the {mib(startup['peak_rss_anon_bytes'])} of RssAnon the imports take: at this "
              "size the ratio says little; see the 'above start-up' column)")
    print(load.line())
    stage_results = [{k: v for k, v in r.items() if k != "tail"}
                     | {"rss_anon_over_file": r["peak_rss_anon_bytes"] / file_bytes} for r in results]
    goal_met = not failed and (name in NO_MEMORY_GOAL or all(
        r["rss_anon_over_file"] <= MEMORY_GOAL for r in stage_results if r["stage"] in STAGES))
    if name == "cifar100":
        goal_met = goal_met and any(r["stage"] == "score" and r["wall_s"] <= SCORE_GOAL_SECONDS for r in stage_results)
    payload = {
        "benchmark": "imagenet_scale", "preset": name,
        "goal": (f"score stage ≤ {SCORE_GOAL_SECONDS:g} s" if name == "cifar100" else "none (a smoke check)")
                if name in NO_MEMORY_GOAL else f"peak RssAnon per stage ≤ {MEMORY_GOAL:g} × the feature file",
        "goal_met": goal_met, "startup_rss_anon_bytes": startup["peak_rss_anon_bytes"], "data": meta,
        "feature_file_bytes": file_bytes, "reused_file": not created, "config": cfg, "extra_cli_args": args.extra,
        "sampling": rules, "stages": stage_results, "metrics": metrics, "checks": checks,
        "machine": platform.platform(), "python": sys.version.split()[0], "load": load.summary(),
    }
    write_results(out, payload)

    if not args.keep and created:  # a file this run reused is left as it was
        data_path.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
    if args.keep or failed:
        print(f"kept {run_root}" + (f" and {data_path}" if data_path.exists() else "")
              + (" (a stage failed: its log is there)" if failed and not args.keep else ""))
    else:
        shutil.rmtree(run_root, ignore_errors=True)
    if not args.keep and not failed and data_dir == DATA_DIR and data_dir.is_dir() and not any(data_dir.iterdir()):
        data_dir.rmdir()
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
