"""The theory's claims on the synthetic pancakes (DESIGN.md; arXiv 2411.03517), checked on the median over
3 seeds of the shipped config ``configs/synthetic/pancakes.yaml`` run end to end."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
from rich.console import Console

from ssl_pipeline import experiment
from ssl_pipeline.cli import parse_config
from ssl_pipeline.reporting.results import METRIC_FIELDS, SETTING_FIELDS, load_results

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "synthetic" / "pancakes.yaml"


@pytest.fixture(scope="module")
def pancakes(tmp_path_factory) -> tuple[list[dict], object, Path]:
    run_dir = tmp_path_factory.mktemp("pancakes")
    _, cfg = parse_config(["synthetic", "--config", str(CONFIG), "--deltas", "1,0.5,0", "--run_dir", str(run_dir)])
    records, _ = experiment.run("synthetic", cfg, Console(quiet=True))
    return records, cfg, run_dir


def median(records: list[dict], metric: str, method: str, delta: float | None = None) -> float:
    values = [r[metric] for r in records if r["method"] == method and (delta is None or r["delta"] == delta)]
    assert len(values) >= 3, f"need ≥ 3 seeds for {method} δ={delta}"
    return statistics.median(values)


def test_pca_picks_the_wrong_subspace(pancakes):
    records, _, _ = pancakes
    assert median(records, "fisher_cos2", "pca") <= 0.2


@pytest.mark.parametrize("method", ["infonce", "simsiam"])
def test_heads_recover_the_fisher_subspace_at_delta_one(pancakes, method):
    records, _, _ = pancakes
    assert median(records, "fisher_cos2", method, 1.0) >= 0.95
    assert median(records, "effective_rank", method, 1.0) >= 3.5  # not collapsed


def test_infonce_recovers_the_fisher_subspace_at_delta_half(pancakes):
    records, _, _ = pancakes
    assert median(records, "fisher_cos2", "infonce", 0.5) >= 0.9
    print(f"SimSiam δ=0.5 fisher_cos2 median: {median(records, 'fisher_cos2', 'simsiam', 0.5):.3f}")


def test_infonce_clusters_as_well_as_lda(pancakes):
    records, _, _ = pancakes
    assert median(records, "nmi", "infonce", 1.0) >= median(records, "nmi", "lda") - 0.02


def test_infonce_learns_nothing_at_delta_zero(pancakes):
    records, cfg, _ = pancakes
    gmm = cfg.data.synthetic
    random_level = max(cfg.heads.r, gmm.k - 1) / gmm.d
    assert median(records, "fisher_cos2", "infonce", 0.0) <= random_level + 0.05
    assert median(records, "nmi", "infonce", 0.0) < 0.05


def test_results_follow_the_contract(pancakes):
    records, cfg, run_dir = pancakes
    assert load_results(run_dir / "results.json") == records
    assert all(set(r) == {"schema", *SETTING_FIELDS, *METRIC_FIELDS} for r in records)
    heads = len(cfg.heads.methods) * 3 * len(cfg.seeds)
    assert len(records) == heads + len(cfg.score.baselines) * len(cfg.seeds)
    settings = {tuple(r[k] for k in SETTING_FIELDS) for r in records}
    assert len(settings) == len(records)  # one record per (method, setting, seed)
    assert len(list((run_dir / "heads").glob("*.safetensors"))) == heads
    import yaml

    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["deltas"] == [1.0, 0.5, 0.0]
    assert set(saved["provenance"]["packages"]) >= {"torch", "pytorch-lightning", "faiss-cpu", "scikit-learn", "open-clip-torch"}
    assert saved["provenance"]["git_commit"]
