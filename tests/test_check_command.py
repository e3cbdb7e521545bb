"""``ssl-pipeline check`` end to end on a small tied GMM: checks.json, surrogate records, figures, gaps ≈ 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssl_pipeline.cli import main

pytestmark = pytest.mark.slow  # the check command end to end, with surrogates: `pytest -m "not slow"` skips it

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def check_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("check") / "run"
    argv = [
        "check", "--config", str(ROOT / "configs" / "synthetic" / "pancakes.yaml"), "--run_dir", str(run_dir),
        "--data.synthetic.d", "20", "--data.synthetic.k", "3", "--data.synthetic.n_train", "3000",
        "--data.synthetic.n_val", "600", "--data.synthetic.n_test", "1500", "--heads.r", "2", "--heads.epochs", "8",
        "--heads.batch_size", "256", "--heads.per_delta", "[]", "--seeds", "0,1", "--deltas", "1",
        "--check.pca_dim", "8", "--check.surrogates", "2", "--wandb.mode", "disabled",
    ]
    assert main(argv) == 0
    return run_dir, json.loads((run_dir / "checks.json").read_text()), json.loads((run_dir / "results.json").read_text())


def test_check_writes_calibrated_statistics_and_figures(check_run):
    run_dir, checks, _ = check_run
    names = {r["statistic"] for r in checks}
    assert {"bic_full_minus_tied", "heterogeneity", "gaussianity_ks", "em_nmi", "lda_split_half_cos2"} <= names
    assert all(set(r) >= {"real", "surrogate_mean", "surrogate_std", "gap"} for r in checks)
    assert sorted(p.name for p in (run_dir / "checks").glob("*.png")) == ["gaussianity_qq.png", "heterogeneity.png", "loglik.png"]


def test_a_true_tied_gmm_looks_like_its_surrogate(check_run):
    _, checks, _ = check_run
    summary = {r["statistic"]: r for r in checks if r["class"] is None and r.get("method") is None}
    assert summary["gaussianity_rejected"]["real"] == 0
    assert summary["bic_full_minus_tied"]["real"] > 0, "BIC prefers the tied model on tied data"
    for name in ("heterogeneity_mean", "heldout_loglik_full_minus_tied"):
        r = summary[name]
        assert abs(r["gap"]) <= 4 * r["surrogate_std"] + 0.02, (name, r)


def test_heads_and_baselines_are_rerun_on_every_surrogate_with_their_gap(check_run):
    _, checks, results = check_run
    kinds = {}
    for record in results:
        kinds.setdefault(record["data"], set()).add(record["features"])
    assert set(kinds) == {"synthetic", "surrogate"} and len(kinds["surrogate"]) == 2
    lda = next(r for r in checks if r.get("method") == "lda" and r["statistic"] == "nmi")
    assert abs(lda["gap"]) < 0.05, lda
    assert any(r.get("method") == "infonce" and r["statistic"] == "fisher_cos2_vs_lda_halves" for r in checks)


def test_check_refuses_heads_fitted_with_other_settings_and_leaves_them_untouched(tmp_path, capsys):
    run_dir = tmp_path / "run"
    small = [
        "--config", str(ROOT / "configs" / "synthetic" / "pancakes.yaml"), "--run_dir", str(run_dir),
        "--data.synthetic.d", "8", "--data.synthetic.k", "3", "--data.synthetic.n_train", "300",
        "--data.synthetic.n_val", "60", "--data.synthetic.n_test", "60", "--heads.r", "2", "--heads.epochs", "1",
        "--heads.methods", "[infonce]", "--heads.per_delta", "[]", "--seeds", "0", "--deltas", "1",
        "--check.pca_dim", "4", "--wandb.mode", "disabled",
    ]
    assert main(["fit", *small]) == 0
    saved = {path: path.read_bytes() for path in [*(run_dir / "heads").iterdir(), run_dir / "config.yaml"]}
    listing = sorted(run_dir.iterdir())
    capsys.readouterr()
    for change, message in ((["--heads.epochs", "2"], "was fitted with other settings than this config's"),
                            (["--data.synthetic.seed", "1"], "was fitted on features gmm-")):
        assert main(["check", *small, *change]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("ssl-pipeline: error: ") and message in err, err
        assert {path: path.read_bytes() for path in saved} == saved  # heads and config.yaml as fit left them
        assert sorted(run_dir.iterdir()) == listing  # no checks.json, no surrogates/
