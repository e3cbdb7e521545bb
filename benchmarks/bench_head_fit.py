"""Head fit time per epoch: our Lightning path (``fit_head``) vs a bare PyTorch loop.

Goal: Lightning's time per epoch ≤ 1.25 × the bare loop's, on the same in-memory tensors, with large batches
and throttled logging. Both sides use the same module class, ``DeltaPairSampler`` + ``PairFeatures`` and the
module's own optimizer (``configure_optimizers``: Adam), so only the training-loop machinery differs.

The Lightning side runs the real ``fit_head``; a ``Trainer`` subclass patched in for the call adds a callback
that stamps the end of every epoch, so an epoch's time is the gap between consecutive stamps (everything that
happens per epoch, no Trainer start-up). Epoch 1 is warm-up. The sides run interleaved ``--repeats`` times;
the headline per-epoch time of a side is its fastest post-warm-up epoch (other processes on a shared machine
only ever add time), with the median epoch reported beside it. ``fit_seconds`` (Trainer start-up included)
is recorded too.

    .venv/bin/python benchmarks/bench_head_fit.py            # 50k × 512, K=100, r=99, batch 4096
    .venv/bin/python benchmarks/bench_head_fit.py --quick    # seconds, for a smoke check
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Iterator

import pytorch_lightning as pl
import torch

from ssl_pipeline.config import GMMConfig, HeadMethod, HeadSettings, HeadsConfig, TrainerConfig, resolve_head_settings
from ssl_pipeline.data.labelled import LabelledFeatures
from ssl_pipeline.data.pairs import DeltaPairSampler, PairFeatures
from ssl_pipeline.data.synthetic import make_synthetic
from ssl_pipeline.experiment import quiet_lightning
from ssl_pipeline.heads.fit import fit_head
from ssl_pipeline.heads.modules import HEAD_CLASSES

GOAL = 1.25


class EpochStamps(pl.Callback):
    """perf_counter at fit start and at the end of every training epoch."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.stamps.append(time.perf_counter())

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.stamps.append(time.perf_counter())


@contextlib.contextmanager
def stamped_trainer(stamps: EpochStamps) -> Iterator[None]:
    """Make ``pl.Trainer`` (as ``fit_head`` looks it up) add ``stamps`` to its callbacks."""
    original = pl.Trainer

    class Stamped(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, callbacks=[stamps], **kwargs)

    pl.Trainer = Stamped
    try:
        yield
    finally:
        pl.Trainer = original


def epoch_times(stamps: list[float]) -> list[float]:
    return [b - a for a, b in zip(stamps, stamps[1:])]


def lightning_run(features: LabelledFeatures, settings: HeadSettings, trainer_cfg: TrainerConfig) -> dict:
    stamps = EpochStamps()
    with stamped_trainer(stamps):
        head = fit_head(features, settings, trainer_cfg)
    return {"epoch_seconds": epoch_times(stamps.stamps), "fit_seconds": head.fit_seconds}


def bare_run(features: LabelledFeatures, settings: HeadSettings) -> dict:
    """The same work as ``fit_head`` without Lightning: sampler → batch → loss → Adam step."""
    x = torch.from_numpy(features.x_train)
    y = torch.from_numpy(features.y_train)
    start = time.perf_counter()
    module = HEAD_CLASSES[settings.method].from_settings(settings, features.dim, x.mean(0), torch.ones(features.dim))
    module.train()
    optimizer = module.configure_optimizers()
    sampler = DeltaPairSampler(y, settings.delta, settings.batch_size, settings.seed)
    dataset = PairFeatures(x)
    stamps = [time.perf_counter()]
    for epoch in range(settings.epochs):
        sampler.set_epoch(epoch)
        for idx in sampler:
            loss = module.head_losses(*dataset[idx]).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        stamps.append(time.perf_counter())
    return {"epoch_seconds": epoch_times(stamps), "fit_seconds": stamps[-1] - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k × 128, K=20, r=19: a smoke check")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="default benchmarks/results/head_fit[_quick].json")
    args = parser.parse_args()
    args.out = args.out or Path(f"benchmarks/results/head_fit{'_quick' if args.quick else ''}.json")
    quiet_lightning()

    gmm = GMMConfig(preset="random", d=128, k=20, n_train=10000) if args.quick else GMMConfig(
        preset="random", d=512, k=100, n_train=50000, n_val=1000, n_test=1000
    )
    features = make_synthetic(gmm)
    r = gmm.k - 1
    heads = HeadsConfig(r=r, epochs=args.epochs, batch_size=args.batch_size)
    trainer_cfg = TrainerConfig(log_every_n_steps=50)
    steps = len(features.x_train) // args.batch_size
    print(f"data {len(features.x_train)}×{gmm.d}, K={gmm.k}, r={r}, batch {args.batch_size} ({steps} steps/epoch), "
          f"{args.epochs} epochs, {args.repeats} interleaved repeats, torch threads {torch.get_num_threads()}")

    results: dict[str, dict] = {}
    method: HeadMethod
    for method in ("infonce", "simsiam"):
        settings = resolve_head_settings(heads, method, 1.0, 0)
        runs: dict[str, list[dict]] = {"lightning": [], "bare": []}
        for _ in range(args.repeats):  # interleaved, so drifts in machine load hit both sides
            runs["lightning"].append(lightning_run(features, settings, trainer_cfg))
            runs["bare"].append(bare_run(features, settings))
        epochs = {side: [t for run in rs for t in run["epoch_seconds"][1:]] for side, rs in runs.items()}
        best = {side: min(ts) for side, ts in epochs.items()}
        median = {side: statistics.median(ts) for side, ts in epochs.items()}
        results[method] = {
            "lightning_per_epoch_s": best["lightning"],
            "bare_per_epoch_s": best["bare"],
            "ratio": best["lightning"] / best["bare"],
            "lightning_median_epoch_s": median["lightning"],
            "bare_median_epoch_s": median["bare"],
            "median_ratio": median["lightning"] / median["bare"],
            "lightning_fit_seconds": min(run["fit_seconds"] for run in runs["lightning"]),
            "bare_fit_seconds": min(run["fit_seconds"] for run in runs["bare"]),
            "runs": runs,
        }

    print(f"\n{'method':<9} {'lightning s/epoch':>18} {'bare s/epoch':>13} {'ratio':>7} {'goal':>6}"
          f" {'median ratio':>13} {'lightning fit s':>16} {'bare fit s':>11}")
    for method, res in results.items():
        print(f"{method:<9} {res['lightning_per_epoch_s']:>18.3f} {res['bare_per_epoch_s']:>13.3f} "
              f"{res['ratio']:>7.3f} {'met' if res['ratio'] <= GOAL else 'MISSED':>6} {res['median_ratio']:>13.3f} "
              f"{res['lightning_fit_seconds']:>16.2f} {res['bare_fit_seconds']:>11.2f}")
    print("s/epoch: fastest post-warm-up epoch over all repeats; median ratio: of the median epochs; "
          "fit s: fastest whole fit (Lightning's includes Trainer start-up)")

    payload = {
        "benchmark": "head_fit", "goal": f"lightning/bare time per epoch <= {GOAL}", "quick": args.quick,
        "data": {"n_train": len(features.x_train), "d": gmm.d, "k": gmm.k}, "r": r, "epochs": args.epochs,
        "batch_size": args.batch_size, "repeats": args.repeats, "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(), "goal_met": all(res["ratio"] <= GOAL for res in results.values()),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
