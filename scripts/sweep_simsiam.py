"""Choose SimSiam's guard weight ξ and predictor learning rate on the **val** split (issue: SimSiam that recovers
the Fisher subspace on real features).

For each dataset, every (ξ, predictor_lr_scale) of the grid trains SimSiam heads (covariance guard, δ = 1) on
train for each seed and scores them on val: k-means NMI of the L2-normalised val projection, its effective rank,
and `fisher_cos2` against the Fisher subspace (estimated on train for real data). Test is never read. Datasets:

- ``digits``: the main job's features (configs/default.yaml: digits encoded by the packaged EfficientNet-Lite0,
  extracted into the cache on first use), its r, epochs and batch;
- ``cifar_scale``: a synthetic ``fisher_vs_means`` mixture at CIFAR-10's size (45k train, 5k val, d = 512,
  K = 10), r = 9.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/sweep_simsiam.py --out benchmarks/results/simsiam_sweep

writes ``sweep.json`` (one row per dataset, ξ, predictor scale and seed) and ``sweep.png`` (val NMI and effective
rank against ξ, one line per predictor scale, median over seeds), and prints the best setting per dataset.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def load(name: str):
    """(features, heads config, score config) of a sweep dataset."""
    from ssl_pipeline.cli import parse_command
    from ssl_pipeline.features.source import load_features

    if name == "digits":
        _, cfg, _ = parse_command(["run", "--config", str(ROOT / "configs" / "default.yaml")])
    else:
        _, cfg, _ = parse_command([
            "synthetic", "--config", str(ROOT / "configs" / "synthetic" / "fisher_vs_means.yaml"),
            "--data.synthetic.d", "512", "--data.synthetic.k", "10", "--data.synthetic.n_train", "45000",
            "--data.synthetic.n_val", "5000", "--data.synthetic.n_test", "100", "--heads.r", "9",
            "--heads.epochs", "20",
        ])
    return load_features(cfg.data), cfg


def val_as_test(features):
    """The features with val in the place of test, so every score below reads val only."""
    return dataclasses.replace(features, x_test=features.x_val, y_test=features.y_val)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "simsiam_sweep")
    parser.add_argument("--datasets", nargs="+", default=["digits", "cifar_scale"])
    parser.add_argument("--xi", nargs="+", type=float, default=[0.01, 0.03, 0.1, 0.3, 1.0])
    parser.add_argument("--predictor", nargs="+", type=float, default=[0.1, 1.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--lr", nargs="+", type=float, default=[None], help="head learning rates (default: the config's)")
    parser.add_argument("--epochs", nargs="+", type=int, default=[None], help="epochs (default: the config's)")
    args = parser.parse_args(argv)

    from ssl_pipeline.config import TrainerConfig
    from ssl_pipeline.heads.fit import quiet_lightning
    from ssl_pipeline.heads.fit import fit_head
    from ssl_pipeline.heads.settings import resolve_head_settings
    from ssl_pipeline.scoring.projections import head_projection
    from ssl_pipeline.scoring.score import reference_subspaces, score_projection

    quiet_lightning()
    rows = []
    for name in args.datasets:
        features, cfg = load(name)
        val = val_as_test(features)
        references = reference_subspaces(features, cfg.heads.r, cfg.score.lda_shrinkage)
        base_lr, base_epochs = cfg.heads.optimizer.lr, cfg.heads.epochs
        for xi, scale, lr, epochs in itertools.product(args.xi, args.predictor, args.lr, args.epochs):
            cfg.heads.optimizer.lr = base_lr if lr is None else lr
            cfg.heads.epochs = base_epochs if epochs is None else epochs
            if True:
                for seed in args.seeds:
                    cfg.heads.simsiam.xi, cfg.heads.simsiam.predictor_lr_scale = xi, scale
                    cfg.heads.simsiam.regularizer = "covariance"
                    settings = resolve_head_settings(cfg.heads, "simsiam", 1.0, seed)
                    start = time.perf_counter()
                    head = fit_head(features, settings, TrainerConfig())
                    scores = score_projection(head_projection(head), val, references, cfg.score, seed)
                    rows.append(dict(dataset=name, xi=xi, predictor_lr_scale=scale, seed=seed, r=settings.r,
                                     lr=settings.lr, epochs=settings.epochs, val_nmi=scores["nmi"],
                                     val_effective_rank=scores["effective_rank"],
                                     fisher_cos2=scores["fisher_cos2"], seconds=time.perf_counter() - start))
                    print(f"{name} ξ={xi:g} predictor×{scale:g} lr {settings.lr:g} epochs {settings.epochs} seed {seed}: "
                          f"val NMI {scores['nmi']:.3f}, "
                          f"effective rank {scores['effective_rank']:.2f}, fisher_cos2 {scores['fisher_cos2']:.3f}",
                          flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep.json").write_text(json.dumps(rows, indent=1) + "\n")
    plot(rows, args.out / "sweep.png")
    for name in args.datasets:
        best = max(groups(rows, name).items(), key=lambda item: item[1][0])
        (xi, scale), (nmi, rank) = best
        print(f"{name}: best on val ξ={xi:g}, predictor×{scale:g} (median NMI {nmi:.3f}, effective rank {rank:.2f})")
    return 0


def groups(rows: list[dict], dataset: str) -> dict[tuple[float, float], tuple[float, float]]:
    """(ξ, predictor scale) → median over seeds of (val NMI, effective rank)."""
    keyed: dict[tuple[float, float], list[dict]] = {}
    for row in rows:
        if row["dataset"] == dataset:
            keyed.setdefault((row["xi"], row["predictor_lr_scale"]), []).append(row)
    return {key: (statistics.median(r["val_nmi"] for r in members),
                  statistics.median(r["val_effective_rank"] for r in members)) for key, members in keyed.items()}


def plot(rows: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    datasets = list(dict.fromkeys(row["dataset"] for row in rows))
    figure = Figure(figsize=(8.4, 3.4 * len(datasets)), layout="constrained")
    axes = figure.subplots(len(datasets), 2, squeeze=False)
    for (nmi_axis, rank_axis), name in zip(axes, datasets):
        medians = groups(rows, name)
        for scale in sorted({key[1] for key in medians}):
            xis = sorted(key[0] for key in medians if key[1] == scale)
            nmi_axis.plot(xis, [medians[xi, scale][0] for xi in xis], marker="o", label=f"predictor lr ×{scale:g}")
            rank_axis.plot(xis, [medians[xi, scale][1] for xi in xis], marker="o", label=f"predictor lr ×{scale:g}")
        for axis, label in ((nmi_axis, "val NMI"), (rank_axis, "val effective rank")):
            axis.set_xscale("log")
            axis.set_xlabel("ξ (covariance guard weight)")
            axis.set_ylabel(label)
            axis.set_title(f"{name}: SimSiam δ = 1, median over seeds", fontsize=9)
            axis.grid(alpha=0.3)
        nmi_axis.legend(fontsize=8)
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
