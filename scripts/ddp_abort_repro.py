"""Reproducer for the DDP teardown abort (issue 9, item 2): run the two-rank ``ddp_spawn`` fit of
``tests/test_ddp.py`` (gloo, CPU, tiny data, 2 epochs) N times, each in a fresh interpreter, while busy loops load
every core, and count the runs that fail: a spawned rank killed by SIGABRT ("terminate called without an active
exception") or any other non-zero exit.

    HF_HUB_OFFLINE=1 WANDB_MODE=offline .venv/bin/python scripts/ddp_abort_repro.py --runs 100

``--load 0`` runs without the busy loops; ``--once`` runs one fit in this process (what each run executes);
``--strategy ddp`` fits with ranks that re-launch the script instead (the group is then destroyed at exit).

``--minimal`` replaces the Lightning fit by two ``torch.multiprocessing.spawn`` ranks (gloo) that leave
all-reduces in flight and return, ending the group with the library's ``end_process_group`` (what the
``EndProcessGroup`` callback runs in spawned ranks) unless ``--no-teardown``: the same abort, in seconds and
often, which shows the cause and that the teardown removes it.

Exit status: 0 when no run failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fit_once(strategy: str = "ddp_spawn") -> None:
    """The DDP half of tests/test_ddp.py, smaller: two ranks, per-rank batch 64, 2 epochs on 512 samples."""
    from ssl_pipeline.config import GMMConfig, HeadsConfig, TrainerConfig
    from ssl_pipeline.data.synthetic import make_synthetic
    from ssl_pipeline.heads.fit import quiet_lightning
    from ssl_pipeline.heads.fit import fit_head
    from ssl_pipeline.heads.settings import resolve_head_settings

    quiet_lightning()
    features = make_synthetic(GMMConfig(d=12, k=3, n_train=512, n_val=16, n_test=16))
    settings = resolve_head_settings(HeadsConfig(r=2, epochs=2, batch_size=64), "infonce", 1.0, 0)
    fit_head(features, settings, TrainerConfig(devices=2, strategy=strategy))


def _minimal_rank(rank: int, port: int, teardown: bool) -> None:
    import torch
    import torch.distributed as dist

    from ssl_pipeline.heads.teardown import end_process_group

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    pending = [dist.all_reduce(torch.randn(100_000), async_op=True) for _ in range(8)]  # not waited for
    del pending
    if teardown:
        end_process_group()


def minimal_once(teardown: bool) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_minimal_rank, args=(port, teardown), nprocs=2, join=True)


def _busy() -> None:
    while True:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--load", type=int, default=os.cpu_count() or 1, help="busy loops (default: one a core)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before a run counts as hung")
    parser.add_argument("--strategy", default="ddp_spawn", help="the fit's Lightning strategy (ddp: ranks re-launch)")
    parser.add_argument("--minimal", action="store_true", help="two mp.spawn ranks with work in flight, no Lightning")
    parser.add_argument("--no-teardown", action="store_true", help="with --minimal: ranks exit with the group alive")
    parser.add_argument("--once", action="store_true", help="run one fit in this process and exit")
    args = parser.parse_args()
    if args.once:
        if args.minimal:
            minimal_once(teardown=not args.no_teardown)
        else:
            fit_once(args.strategy)
        return 0

    def stop(signum: int, _frame: object) -> None:  # so `finally` stops the busy loops and prints the counts
        print(f"stopped by signal {signum} at {time.strftime('%H:%M:%S')}", flush=True)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline", PYTHONPATH=str(ROOT))
    busy = [multiprocessing.Process(target=_busy, daemon=True) for _ in range(args.load)]
    for process in busy:
        process.start()
    once = [sys.executable, __file__, "--once", "--strategy", args.strategy]
    once += ["--minimal"] * args.minimal + ["--no-teardown"] * args.no_teardown
    failures, aborts, hangs, completed = 0, 0, 0, 0
    start = time.perf_counter()
    try:
        for run in range(1, args.runs + 1):
            try:
                done = subprocess.run(once, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                failures, hangs, completed = failures + 1, hangs + 1, run
                print(f"run {run}: HUNG (> {args.timeout:.0f} s)", flush=True)
                continue
            completed = run
            output = done.stdout + done.stderr
            aborted = "SIGABRT" in output or "terminate called" in output
            if done.returncode != 0 or aborted:
                failures += 1
                aborts += aborted
                lines = [line for line in output.splitlines() if line.strip()]
                cause = [line for line in lines if "SIGABRT" in line or "terminate" in line] or lines[-1:] or [""]
                tag = "(abort) " if aborted else ""
                print(f"run {run}: FAILED rc={done.returncode} {tag}{cause[-1].strip()[:200]}", flush=True)
            else:
                print(f"run {run}: ok ({failures} failed so far, {time.perf_counter() - start:.0f} s)", flush=True)
    finally:
        for process in busy:
            process.terminate()
        what = "minimal" + (" --no-teardown" if args.no_teardown else "") if args.minimal else args.strategy
        stopped = "" if completed == args.runs else f" (stopped early, of {args.runs})"
        print(f"{failures}/{completed} runs failed{stopped} ({aborts} aborted, {hangs} hung): {what}, "
              f"load={args.load} busy loops, {time.perf_counter() - start:.0f} s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
