"""Head fit time per epoch: our Lightning path (``fit_head``) vs a bare PyTorch loop.

Goal: Lightning's time per epoch ≤ 1.25 × the bare loop's, on the same in-memory tensors, with large batches
and throttled logging. Both sides use the same module class, ``DeltaPairSampler`` + ``PairFeatures`` and the
module's own optimizer (``configure_optimizers``: Adam), so only the training-loop machinery differs.

The Lightning side runs the real ``fit_head``; a ``Trainer`` subclass patched in for the call adds a callback
that, at the end of every Lightning epoch, runs one epoch of the bare loop (its own module and optimizer).
The two sides thus alternate epoch by epoch, and load from other processes on a shared machine hits both
alike. Lightning's epoch i is the time from the end of bare epoch i−1 to the end of Lightning epoch i
(everything Lightning does per epoch, no Trainer start-up); epoch 0 of each side is warm-up. Reported: the
median of the per-epoch ratios (paired), and each side's median and fastest epoch.

    .venv/bin/python benchmarks/bench_head_fit.py            # 50k × 512, K=100, r=99, batch 4096
    .venv/bin/python benchmarks/bench_head_fit.py --quick    # seconds, for a smoke check
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
from pathlib import Path
from typing import Iterator

import pytorch_lightning as pl
import torch

from _machine import LoadMeter, write_results  # benchmarks/_machine.py (this script's folder is on sys.path)
from ssl_pipeline.allocator import configure_malloc
from ssl_pipeline.config import GMMConfig, HeadMethod, HeadsConfig, TrainerConfig
from ssl_pipeline.data.labelled import LabelledFeatures
from ssl_pipeline.data.pairs import DeltaPairSampler, PairFeatures
from ssl_pipeline.data.synthetic import make_synthetic
from ssl_pipeline.heads.fit import fit_head, quiet_lightning
from ssl_pipeline.heads.inputs import head_module
from ssl_pipeline.heads.settings import HeadSettings, resolve_head_settings

GOAL = 1.25


class BareLoop:
    """The same work as ``fit_head`` without Lightning: sampler → batch → loss → optimizer step."""

    def __init__(self, features: LabelledFeatures, settings: HeadSettings) -> None:
        x = torch.from_numpy(features.x_train)
        self.module = head_module(features, settings)
        self.module.train()
        self.optimizer = self.module.configure_optimizers()
        self.sampler = DeltaPairSampler(torch.from_numpy(features.y_train), settings.delta, settings.batch_size, settings.seed)
        self.dataset = PairFeatures(x)

    def epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        with torch.enable_grad():
            for idx in self.sampler:
                loss = self.module.head_losses(*self.dataset[idx]).sum()
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()


class Interleave(pl.Callback):
    """Stamps the end of each Lightning epoch, runs one bare epoch, stamps again."""

    def __init__(self, bare: BareLoop) -> None:
        self.bare = bare
        self.ends: list[float] = []
        self.resumes: list[float] = []

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.resumes.append(time.perf_counter())

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.ends.append(time.perf_counter())
        self.bare.epoch(trainer.current_epoch)
        self.resumes.append(time.perf_counter())

    def epoch_seconds(self) -> tuple[list[float], list[float]]:
        lightning = [end - resume for end, resume in zip(self.ends, self.resumes)]
        bare = [resume - end for end, resume in zip(self.ends, self.resumes[1:])]
        return lightning, bare


@contextlib.contextmanager
def with_callback(callback: pl.Callback) -> Iterator[None]:
    """Make ``pl.Trainer`` (as ``fit_head`` looks it up) add ``callback`` to its callbacks."""
    original = pl.Trainer

    class Patched(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs) -> None:
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), callback]
            super().__init__(*args, **kwargs)

    pl.Trainer = Patched
    try:
        yield
    finally:
        pl.Trainer = original


def measure(features: LabelledFeatures, settings: HeadSettings, trainer_cfg: TrainerConfig) -> dict:
    interleave = Interleave(BareLoop(features, settings))
    with with_callback(interleave):
        head = fit_head(features, settings, trainer_cfg)
    lightning, bare = interleave.epoch_seconds()
    return {"lightning_epochs_s": lightning, "bare_epochs_s": bare, "lightning_fit_s": head.fit_seconds - sum(bare)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k × 128, K=20, r=19: a smoke check")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=2, help="fits per method (each gives epochs − 1 pairs)")
    parser.add_argument("--out", type=Path, help="default benchmarks/results/head_fit[_quick].json")
    args = parser.parse_args()
    args.out = args.out or Path(f"benchmarks/results/head_fit{'_quick' if args.quick else ''}.json")
    # The allocator setting ssl-pipeline makes at start-up (ssl_pipeline/allocator.py; torch is imported but has
    # allocated nothing large yet). Lightning and bare epochs alternate in this one process, so both sides share it.
    allocator = configure_malloc()
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
          f"{args.epochs} epochs × {args.repeats} fits, torch threads {torch.get_num_threads()}")

    results: dict[str, dict] = {}
    method: HeadMethod
    load = LoadMeter().start()
    for method in ("infonce", "simsiam"):
        settings = resolve_head_settings(heads, method, 1.0, 0)
        runs = [measure(features, settings, trainer_cfg) for _ in range(args.repeats)]
        pairs = [(lt, bt) for run in runs for lt, bt in zip(run["lightning_epochs_s"][1:], run["bare_epochs_s"][1:])]
        lightning, bare = [p[0] for p in pairs], [p[1] for p in pairs]
        results[method] = {
            "ratio": statistics.median(lt / bt for lt, bt in pairs),
            "lightning_median_epoch_s": statistics.median(lightning),
            "bare_median_epoch_s": statistics.median(bare),
            "lightning_min_epoch_s": min(lightning),
            "bare_min_epoch_s": min(bare),
            "min_ratio": min(lightning) / min(bare),
            "lightning_fit_s": min(run["lightning_fit_s"] for run in runs),
            "runs": runs,
        }
    load.stop()

    print(f"\n{'method':<9} {'ratio':>6} {'goal':>6} {'lightning s/ep':>15} {'bare s/ep':>10} "
          f"{'min ratio':>10} {'lightning min':>14} {'bare min':>9} {'lightning fit s':>16}")
    for method, res in results.items():
        print(f"{method:<9} {res['ratio']:>6.3f} {'met' if res['ratio'] <= GOAL else 'MISSED':>6} "
              f"{res['lightning_median_epoch_s']:>15.3f} {res['bare_median_epoch_s']:>10.3f} {res['min_ratio']:>10.3f} "
              f"{res['lightning_min_epoch_s']:>14.3f} {res['bare_min_epoch_s']:>9.3f} {res['lightning_fit_s']:>16.2f}")
    print("ratio: median over epochs of lightning/bare (paired, warm-up epoch dropped); s/ep: median epoch; "
          "min: fastest epoch; fit s: whole fit_head incl. Trainer start-up, bare epochs subtracted")
    print(load.line())
    print(f"allocator: {allocator['status']} {allocator.get('applied', '')}")

    payload = {
        "benchmark": "head_fit", "goal": f"lightning/bare time per epoch <= {GOAL}", "quick": args.quick,
        "data": {"n_train": len(features.x_train), "d": gmm.d, "k": gmm.k}, "r": r, "epochs": args.epochs,
        "batch_size": args.batch_size, "repeats": args.repeats, "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(), "load": load.summary(), "allocator": allocator,
        "goal_met": all(res["ratio"] <= GOAL for res in results.values()),
        "results": results,
    }
    write_results(args.out, payload)


if __name__ == "__main__":
    main()
