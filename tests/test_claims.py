"""The theory's claims on the synthetic pancakes (docs/theory.md; arXiv 2411.03517), checked on the median over
3 seeds of the shipped config ``configs/synthetic/pancakes.yaml`` run end to end.

Each claim is a function of the run that returns its ``Check``s (value, threshold, direction); ``@claim`` registers
it in ``CLAIMS`` and turns it into the test that asserts every check. ``scripts/claims_robustness.py`` reruns every
registered claim under perturbed numerics (CPU kernels, BLAS, threads, data seeds), so a claim added here joins it
without edits there.
"""

from __future__ import annotations

import functools
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pytest
from rich.console import Console

from ssl_pipeline import experiment
from ssl_pipeline.cli import parse_config
from ssl_pipeline.reporting.results import METRIC_FIELDS, SETTING_FIELDS, load_results

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "synthetic" / "pancakes.yaml"
DELTAS = "1,0.5,0"


@dataclass(frozen=True)
class Check:
    """One number a claim compares with its threshold: ``value ≥ threshold`` (``at_least``) or ``≤``."""

    name: str
    metric: str
    value: float
    threshold: float
    at_least: bool = True

    @property
    def margin(self) -> float:
        """How far the value clears the threshold (negative: the claim fails)."""
        return self.value - self.threshold if self.at_least else self.threshold - self.value

    def __str__(self) -> str:
        return f"{self.name}: {self.value:.4f} {'≥' if self.at_least else '≤'} {self.threshold:.4f} (margin {self.margin:+.4f})"


@dataclass
class PancakesRun:
    records: list[dict]
    cfg: object
    run_dir: Path


def run_pancakes(run_dir: Path, overrides: Sequence[str] = ()) -> PancakesRun:
    """The shipped pancakes config at δ ∈ {1, 0.5, 0}, fitted and scored into ``run_dir``."""
    argv = ["synthetic", "--config", str(CONFIG), "--deltas", DELTAS, "--run_dir", str(run_dir), *overrides]
    _, cfg = parse_config(argv)
    records, _ = experiment.run("synthetic", cfg, Console(quiet=True))
    return PancakesRun(records, cfg, run_dir)


CLAIMS: dict[str, Callable[[PancakesRun], list[Check]]] = {}
"""Every registered claim by name: run → its checks."""


def claim(checks: Callable[[PancakesRun], list[Check]]):
    """Register ``checks`` under its name (without ``test_``) and return the test asserting all of them."""
    CLAIMS[checks.__name__.removeprefix("test_")] = checks

    @functools.wraps(checks)
    def test(pancakes: PancakesRun) -> None:
        failed = [str(check) for check in checks(pancakes) if check.margin < 0]
        assert not failed, "; ".join(failed)

    return test


@pytest.fixture(scope="module")
def pancakes(tmp_path_factory) -> PancakesRun:
    return run_pancakes(tmp_path_factory.mktemp("pancakes"))


def median(records: list[dict], metric: str, method: str, delta: float | None = None) -> float:
    values = [r[metric] for r in records if r["method"] == method and (delta is None or r["delta"] == delta)]
    assert len(values) >= 3, f"need ≥ 3 seeds for {method} δ={delta}"
    return statistics.median(values)


def at_least(run: PancakesRun, metric: str, method: str, delta: float | None, threshold: float) -> Check:
    value = median(run.records, metric, method, delta)
    return Check(f"{method} δ={delta} {metric}" if delta is not None else f"{method} {metric}", metric, value, threshold)


def at_most(run: PancakesRun, metric: str, method: str, delta: float | None, threshold: float) -> Check:
    check = at_least(run, metric, method, delta, threshold)
    return Check(check.name, metric, check.value, threshold, at_least=False)


@claim
def test_pca_picks_the_wrong_subspace(pancakes: PancakesRun) -> list[Check]:
    return [at_most(pancakes, "fisher_cos2", "pca", None, 0.2)]


@claim
def test_heads_recover_the_fisher_subspace_at_delta_one(pancakes: PancakesRun) -> list[Check]:
    checks = []
    for method in ("infonce", "simsiam"):
        checks.append(at_least(pancakes, "fisher_cos2", method, 1.0, 0.95))
        checks.append(at_least(pancakes, "effective_rank", method, 1.0, 3.5))  # not collapsed
    return checks


@claim
def test_infonce_recovers_the_fisher_subspace_at_delta_half(pancakes: PancakesRun) -> list[Check]:
    return [at_least(pancakes, "fisher_cos2", "infonce", 0.5, 0.9)]


@claim
def test_infonce_clusters_as_well_as_lda(pancakes: PancakesRun) -> list[Check]:
    return [at_least(pancakes, "nmi", "infonce", 1.0, median(pancakes.records, "nmi", "lda") - 0.02)]


@claim
def test_infonce_learns_nothing_at_delta_zero(pancakes: PancakesRun) -> list[Check]:
    gmm = pancakes.cfg.data.synthetic
    random_level = max(pancakes.cfg.heads.r, gmm.k - 1) / gmm.d
    return [
        at_most(pancakes, "fisher_cos2", "infonce", 0.0, random_level + 0.05),
        at_most(pancakes, "nmi", "infonce", 0.0, 0.05),
    ]


def test_a_failing_check_fails_its_claim() -> None:
    """The wrapper ``@claim`` builds asserts: a check below its threshold (or above an upper one) fails it."""

    def test_impossible(pancakes: PancakesRun) -> list[Check]:
        return [Check("x", "nmi", 0.5, 0.6), Check("y", "nmi", 0.5, 0.4, at_least=False)]

    wrapped = claim(test_impossible)
    CLAIMS.pop("impossible")
    with pytest.raises(AssertionError, match=r"x: 0\.5000 ≥ 0\.6000 \(margin -0\.1000\); y: 0\.5000 ≤ 0\.4000"):
        wrapped(None)


def test_results_follow_the_contract(pancakes):
    records, cfg, run_dir = pancakes.records, pancakes.cfg, pancakes.run_dir
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
    cpu = saved["provenance"]["cpu"]
    assert cpu["model"] and cpu["torch_capability"] and cpu["torch_threads"] >= 1
    assert any(lib["internal_api"] in ("openblas", "mkl") for lib in saved["provenance"]["blas"])
