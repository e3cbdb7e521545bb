"""What the linear closed forms predict for VICReg's invariance weight λ at finite n (docs/theory.md, "Pair labels
and score labels": the finite-sample reading of claim (i)).

On the training sample the heads see, δ = 1 pairs sharing the label have Σ̂_Δ = the pooled within-class scatter
(each class's pairs of distinct points: n_c/(n_c − 1)·S_c) and Σ̂_T the sample covariance, both inside the span the
sample occupies (the heads are optimised there). The generalised eigenvalues λ_1 ≤ … of (Σ̂_Δ, Σ̂_T) and their
eigenvectors V̂_r are the closed form at this n. VICReg's optimum with the variance hinge binding spans V̂_r for
every λ with λ̄ ≤ μ/(4λ) (binding) and λ_r − λ̄ < 2ν/λ (no direction starves): the span, hence the probe, does not
depend on λ there; outside, no closed form (slack hinge) or rank < r (starving). Prints, per n (points per class)
and seed: the eigenvalues' mean and spread, cos² of V̂_r with the population Fisher subspace, and for each λ which
regime it is in.

    python scripts/vicreg_finite_n.py --config configs/synthetic/hierarchy_aligned.yaml --per-class 5 20 450
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def finite_n_closed_form(x: np.ndarray, y: np.ndarray, r: int):
    """(λ_1..λ_r ascending, V̂_r [d, r]) of (Σ̂_Δ, Σ̂_T) inside the sample's span above the eigenvalue floor."""
    from ssl_pipeline.theory.subspaces import feature_span

    x = x - x.mean(axis=0)
    total = x.T @ x / len(x)
    within = np.zeros_like(total)
    for c in np.unique(y):
        block = x[y == c] - x[y == c].mean(axis=0)
        n_c = len(block)
        if n_c > 1:  # anchors weighted by class size; ½·mean over distinct pairs = n_c/(n_c − 1)·S_c
            within += n_c * (block.T @ block) / (n_c - 1)
    within /= len(x)
    span = feature_span(total)
    u, v = span.basis, span.eigenvalues
    whiten = u / np.sqrt(v)
    n_hat = whiten.T @ within @ whiten
    values, vectors = np.linalg.eigh((n_hat + n_hat.T) / 2)
    return values[:r], whiten @ vectors[:, :r]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/synthetic/hierarchy_aligned.yaml")
    parser.add_argument("--per-class", type=int, nargs="+", default=[5, 20, 450])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lambdas", type=float, nargs="+", default=[1, 5, 25, 100])
    args = parser.parse_args(argv)

    from ssl_pipeline.cli import parse_command
    from ssl_pipeline.data.labelled import train_subsample
    from ssl_pipeline.data.synthetic import make_synthetic
    from ssl_pipeline.theory.subspaces import fisher_cos2

    _, cfg, _ = parse_command(["synthetic", "--config", args.config])
    features = make_synthetic(cfg.data.synthetic)
    r = max(cfg.heads.axis("r"))
    mu, nu = cfg.heads.vicreg.std_coeff, cfg.heads.vicreg.cov_coeff
    print(f"{args.config}: r = {r}, μ = {mu:g}, ν = {nu:g}; regimes per λ: span = V̂_r (binding, none starving), "
          "slack (hinge slack: no closed form), starve (rank < r)")
    for per_class in args.per_class:
        for seed in args.seeds:
            sample = train_subsample(features, per_class, seed)
            values, basis = finite_n_closed_form(np.asarray(sample.x_train, dtype=np.float64), sample.y_train, r)
            mean, top = float(values.mean()), float(values[-1])
            regimes = []
            for lam in args.lambdas:
                regime = "slack" if mean > mu / (4 * lam) else "starve" if top - mean >= 2 * nu / lam else "span"
                regimes.append(f"λ={lam:g}: {regime}")
            print(f"n = {per_class}/class seed {seed}: λ̄ = {mean:.3f}, λ_r − λ̄ = {top - mean:.3f}, "
                  f"cos²(V̂_r, S_F) = {fisher_cos2(basis, features.fisher_basis):.3f} · " + ", ".join(regimes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
