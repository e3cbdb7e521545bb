"""The theory's claims on the synthetic lab (docs/theory.md; arXiv 2411.03517), checked on the median over 3 seeds
of the shipped configs run end to end: ``configs/synthetic/pancakes.yaml`` (Fisher and class-mean subspaces
coincide, PCA picks nuisance), ``configs/synthetic/fisher_vs_means.yaml`` (Fisher, class-mean and PCA subspaces
pairwise far apart, unequal Fisher eigenvalues), both with quiet directions below their spectrum so that their
Fisher subspace is not their minor one, and ``configs/synthetic/spectrum.yaml`` (a real-feature-like power-law
spectrum over 512 directions, the Fisher subspace spread over it), with the spectral heads and their closed forms.
Every trained method is also checked at δ = 0 against its own untrained initialisation (``init_fisher_cos2``).

Each claim is a function of the runs (``LabRuns``: each run fitted on first use) that returns its ``Check``s (value,
threshold, direction); ``@claim`` registers it in ``CLAIMS`` and turns it into the test that asserts every check.
``scripts/claims_robustness.py`` reruns every registered claim under perturbed numerics (CPU kernels, BLAS,
threads, data seeds), so a claim added here joins it without edits there.
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
from ssl_pipeline.cli import parse_command
from ssl_pipeline.records.results import METRIC_FIELDS, SETTING_FIELDS, load_results

pytestmark = pytest.mark.slow  # minutes of runs: `pytest -m "not slow"` (the fast subset) skips this module

LAB = Path(__file__).resolve().parents[1] / "configs" / "synthetic"
CONFIG = LAB / "pancakes.yaml"
DELTAS = "1,0.5,0"
SPECTRAL_HEADS = "[spectral_contrastive,vicreg,barlowtwins]"
EXACT_WEIGHTS = ["--heads.vicreg.cov_coeff", "5", "--heads.barlowtwins.lambda_off", "10"]
"""Loss weights at which the closed form is the optimum of VICReg and BarlowTwins on ``fisher_vs_means`` at δ = 1
(heads/spectral.py): VICReg with the variance hinge binding needs λ_r − λ̄ < 2ν/λ (0.074 there; ν = 5 gives 0.4,
the default ν = 1 only 0.08), BarlowTwins the decorrelating limit of large λ_off."""


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
    """One lab config fitted and scored: its records, config and run directory."""

    records: list[dict]
    cfg: object
    run_dir: Path


def run_lab(config: Path, run_dir: Path, overrides: Sequence[str] = ()) -> PancakesRun:
    """A shipped lab config with ``overrides``, fitted and scored into ``run_dir``."""
    argv = ["synthetic", "--config", str(config), "--run_dir", str(run_dir), *overrides]
    _, cfg, _ = parse_command(argv)
    records, _ = experiment.run("synthetic", cfg, Console(quiet=True))
    return PancakesRun(records, cfg, run_dir)


def run_pancakes(run_dir: Path, overrides: Sequence[str] = ()) -> PancakesRun:
    """The shipped pancakes config at δ ∈ {1, 0.5, 0}, fitted and scored into ``run_dir``."""
    return run_lab(CONFIG, run_dir, ["--deltas", DELTAS, *overrides])


class LabRuns:
    """The runs the claims read, each fitted on first use under ``root`` with ``overrides`` (e.g. a data seed)
    added to its own: ``pancakes`` (δ ∈ {1, 0.5, 0}); ``fisher_vs_means`` (InfoNCE, SimSiam and the spectral
    heads at δ ∈ {1, 0.5, 0}); ``spectrum`` (every head method at δ ∈ {1, 0.5, 0}); ``exact_weights`` (VICReg and BarlowTwins on fisher_vs_means at δ = 1 with the
    ``EXACT_WEIGHTS``)."""

    def __init__(self, root: Path, overrides: Sequence[str] = ()) -> None:
        self.root = Path(root)
        self.overrides = list(overrides)

    @functools.cached_property
    def pancakes(self) -> PancakesRun:
        return run_pancakes(self.root / "pancakes", self.overrides)

    @functools.cached_property
    def fisher_vs_means(self) -> PancakesRun:
        methods = f"[infonce,simsiam,{SPECTRAL_HEADS[1:-1]}]"
        return run_lab(LAB / "fisher_vs_means.yaml", self.root / "fisher_vs_means",
                       ["--heads.methods", methods, *self.overrides])

    @functools.cached_property
    def spectrum(self) -> PancakesRun:
        """The shipped spectrum lab (every head method at δ ∈ {1, 0.5, 0}); of the baselines only those the claims
        read."""
        return run_lab(LAB / "spectrum.yaml", self.root / "spectrum",
                       ["--score.baselines", "[spectral,random]", *self.overrides])

    @functools.cached_property
    def exact_weights(self) -> PancakesRun:
        return run_lab(LAB / "fisher_vs_means.yaml", self.root / "exact_weights",
                       ["--heads.methods", "[vicreg,barlowtwins]", "--deltas", "[1]", "--score.baselines", "[]",
                        *EXACT_WEIGHTS, *self.overrides])


    @functools.cached_property
    def clip(self) -> PancakesRun:
        return run_lab(LAB / "clip_gmm.yaml", self.root / "clip", self.overrides)

    @functools.cached_property
    def clip_combined(self) -> PancakesRun:
        """Unimodal InfoNCE on modality 1 of the clip preset, positives sharing the combined label (k_s, k₁), with
        r = q_s + q₁ (the control of claim C4)."""
        gmm = _lab_config("clip_gmm.yaml").data.synthetic.clip
        r = (gmm.k_s - 1) + (gmm.k_1 - 1)
        return run_lab(LAB / "clip_gmm.yaml", self.root / "clip_combined",
                       ["--heads.methods", "[infonce]", "--heads.target", "combined", "--heads.r", str(r),
                        "--heads.infonce.tau", "0.5", "--deltas", "[1]", "--score.baselines", "[]", *self.overrides])


    @functools.cached_property
    def label_hidden(self) -> PancakesRun:
        """The shipped ``label_hidden`` lab: one-hidden-layer InfoNCE on pairs sharing (y, h) and the supervised
        trunk on y, at δ = 1 (docs/theory.md, "One-hidden-layer heads")."""
        return run_lab(LAB / "label_hidden.yaml", self.root / "label_hidden",
                       ["--deltas", "[1]", "--score.baselines", "[]", *self.overrides])

    @functools.cached_property
    def label_hidden_linear(self) -> PancakesRun:
        """Its linear control: the same pairs, linear InfoNCE."""
        return run_lab(LAB / "label_hidden.yaml", self.root / "label_hidden_linear",
                       ["--deltas", "[1]", "--score.baselines", "[]", "--heads.methods", "[infonce]",
                        "--heads.trunk", "null", *self.overrides])


def _lab_config(name: str):
    return parse_command(["synthetic", "--config", str(LAB / name)])[1]


CLAIMS: dict[str, Callable[[LabRuns], list[Check]]] = {}
"""Every registered claim by name: runs → its checks."""


def claim(checks: Callable[[LabRuns], list[Check]]):
    """Register ``checks`` under its name (without ``test_``) and return the test asserting all of them."""
    CLAIMS[checks.__name__.removeprefix("test_")] = checks

    @functools.wraps(checks)
    def test(lab: LabRuns) -> None:
        failed = [str(check) for check in checks(lab) if check.margin < 0]
        assert not failed, "; ".join(failed)

    return test


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> LabRuns:
    return LabRuns(tmp_path_factory.mktemp("lab"))


@pytest.fixture(scope="module")
def pancakes(lab: LabRuns) -> PancakesRun:
    return lab.pancakes


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
def test_pca_picks_the_wrong_subspace(lab: LabRuns) -> list[Check]:
    return [at_most(lab.pancakes, "fisher_cos2", "pca", None, 0.2)]


@claim
def test_heads_recover_the_fisher_subspace_at_delta_one(lab: LabRuns) -> list[Check]:
    pancakes = lab.pancakes
    checks = []
    for method in ("infonce", "simsiam"):
        checks.append(at_least(pancakes, "fisher_cos2", method, 1.0, 0.95))
        checks.append(at_least(pancakes, "effective_rank", method, 1.0, 3.5))  # not collapsed
    return checks


@claim
def test_infonce_recovers_the_fisher_subspace_at_delta_half(lab: LabRuns) -> list[Check]:
    return [at_least(lab.pancakes, "fisher_cos2", "infonce", 0.5, 0.9)]


@claim
def test_infonce_clusters_as_well_as_lda(lab: LabRuns) -> list[Check]:
    pancakes = lab.pancakes
    return [at_least(pancakes, "nmi", "infonce", 1.0, median(pancakes.records, "nmi", "lda") - 0.02)]


@claim
def test_every_head_learns_nothing_at_delta_zero(lab: LabRuns) -> list[Check]:
    """Controls (docs/theory.md, "Four subspaces, and labs that keep them apart"): at δ = 0 the pairs carry no class, so on every lab each trained
    method keeps ``fisher_cos2`` within 0.05 of its own untrained initialisation's (same parametrization, basis and
    seed: what learning nothing scores) and clusters at NMI ≤ 0.05; the closed form of the sampled pairs stays
    within 0.05 of a random projection inside the span. A head biased toward low variance would pass this only on
    a lab whose Fisher subspace is its minor one, which the shipped labs no longer are."""
    checks = []
    for name in ("pancakes", "fisher_vs_means", "spectrum"):
        run = getattr(lab, name)
        for method in run.cfg.heads.methods:
            initial = median(run.records, "init_fisher_cos2", method, 0.0)
            checks.append(_named(at_most(run, "fisher_cos2", method, 0.0, initial + 0.05), name))
            checks.append(_named(at_most(run, "nmi", method, 0.0, 0.05), name))
        chance = median(run.records, "fisher_cos2", "random")
        checks.append(_named(at_most(run, "fisher_cos2", "spectral", 0.0, chance + 0.05), name))
        checks.append(_named(at_most(run, "nmi", "spectral", 0.0, 0.05), name))
    return checks


def _named(check: Check, lab_name: str) -> Check:
    """``check`` with the lab's name in front of its own."""
    return Check(f"{lab_name} {check.name}", check.metric, check.value, check.threshold, check.at_least)


@claim
def test_heads_learn_the_fisher_subspace_not_the_class_means(lab: LabRuns) -> list[Check]:
    """Where the two disagree (fisher_vs_means, population cos² 0.15), InfoNCE and SimSiam (covariance guard)
    learn S_F, not span{μ_k − μ̄}."""
    run = lab.fisher_vs_means
    checks = []
    for method in ("infonce", "simsiam"):
        checks.append(at_least(run, "fisher_cos2", method, 1.0, 0.9))
        checks.append(at_most(run, "means_cos2", method, 1.0, 0.5))
    return checks


@claim
def test_the_class_mean_subspace_costs_clustering(lab: LabRuns) -> list[Check]:
    """Learning the wrong subspace costs something measurable: the ``means`` baseline's NMI ≤ 0.8 × LDA's."""
    run = lab.fisher_vs_means
    return [at_most(run, "nmi", "means", None, 0.8 * median(run.records, "nmi", "lda"))]


@claim
def test_spectral_closed_form_is_the_fisher_subspace(lab: LabRuns) -> list[Check]:
    """The r smallest generalised eigenvectors of the sampled (Σ_Δ, Σ_T) span S_F at δ = 1 and 0.5."""
    return [at_least(run, "fisher_cos2", "spectral", delta, 0.98)
            for run in (lab.pancakes, lab.fisher_vs_means) for delta in (1.0, 0.5)]


@claim
def test_spectral_heads_reach_their_closed_form(lab: LabRuns) -> list[Check]:
    """Trained heads reach the closed form where it is their optimum (heads/spectral.py): spectral contrastive at
    any setting, VICReg and BarlowTwins at ``EXACT_WEIGHTS``; BarlowTwins at its default λ_off = 1 keeps full rank
    (duplicating columns is a local minimum only for λ_off ≤ 0.001 there)."""
    run, exact, spectrum = lab.fisher_vs_means, lab.exact_weights, lab.spectrum
    q = run.cfg.data.synthetic.k - 1
    return [
        at_least(run, "optimum_cos2", "spectral_contrastive", 1.0, 0.95),
        at_least(exact, "optimum_cos2", "vicreg", 1.0, 0.95),
        at_least(exact, "optimum_cos2", "barlowtwins", 1.0, 0.95),
        at_least(run, "effective_rank", "barlowtwins", 1.0, 0.9 * min(run.cfg.heads.r, q)),
        _named(at_least(spectrum, "optimum_cos2", "spectral_contrastive", 1.0, 0.9), "spectrum"),
        _named(at_least(spectrum, "optimum_cos2", "spectral_contrastive", 0.5, 0.9), "spectrum"),
    ]


@claim
def test_simsiam_clusters_like_the_closed_form_on_a_real_feature_like_spectrum(lab: LabRuns) -> list[Check]:
    """On ``spectrum`` (512 directions over three decades of variance, where heads optimised in whitened
    coordinates ended near their minor subspace), SimSiam with the covariance guard clusters at ≥ 0.95 × the
    spectral closed form's NMI at δ = 1 and ≥ 0.9 × at δ = 0.5."""
    run = lab.spectrum
    return [_named(at_least(run, "nmi", "simsiam", delta, share * median(run.records, "nmi", "spectral", delta)),
                   "spectrum")
            for delta, share in ((1.0, 0.95), (0.5, 0.9))]


@claim
def test_every_head_clusters_above_a_random_projection_at_delta_half(lab: LabRuns) -> list[Check]:
    """On ``spectrum`` at δ = 0.5 every trained head's NMI exceeds the random projection's by ≥ 0.1 (whitened
    SimSiam, spectral contrastive and VICReg heads had fallen below it on real features at δ = 0.2)."""
    run = lab.spectrum
    chance = median(run.records, "nmi", "random")
    return [_named(at_least(run, "nmi", method, 0.5, chance + 0.1), "spectrum") for method in run.cfg.heads.methods]


def median_where(run: PancakesRun, metric, **where) -> float:
    """The median over seeds of ``metric`` (a field, or a function of a record) over the records matching
    ``where``."""
    value = metric if callable(metric) else (lambda record: record[metric])
    values = [value(r) for r in run.records if all(r[k] == v for k, v in where.items())]
    assert len(values) >= 3, f"need ≥ 3 seeds for {where}"
    return statistics.median(values)


def _off_shared(record: dict) -> float:
    return record["energy_private"] + record["energy_noise"]


@claim
def test_clip_towers_learn_the_shared_subspace_and_filter_the_rest(lab: LabRuns) -> list[Check]:
    """C4 (docs/theory.md, "CLIP-GMM"): at δ = 1 with r = q_s, each CLIP tower puts ≥ 0.9 of its energy in its
    modality's shared block and ≤ 0.1 in the private subspace and the noise block together, and its column
    space is the shared Fisher subspace."""
    run = lab.clip
    checks = []
    for tower in (1, 2):
        where = dict(method="clip", delta=1.0, tower=tower)
        checks.append(Check(f"clip tower {tower} δ=1 energy_shared", "energy_shared",
                            median_where(run, "energy_shared", **where), 0.9))
        checks.append(Check(f"clip tower {tower} δ=1 energy_private + energy_noise", "energy_private",
                            median_where(run, _off_shared, **where), 0.1, at_least=False))
        checks.append(Check(f"clip tower {tower} δ=1 fisher_cos2", "fisher_cos2",
                            median_where(run, "fisher_cos2", **where), 0.9))
    return checks


@claim
def test_a_unimodal_head_on_the_combined_label_keeps_the_private_subspace(lab: LabRuns) -> list[Check]:
    """C4's control: InfoNCE on modality 1 whose positives share (k_s, k₁), r = q_s + q₁, keeps the private
    directions CLIP drops: ≥ 0.5 · q₁/(q_s + q₁) of its energy in the private subspace."""
    run = lab.clip_combined
    gmm = run.cfg.data.synthetic.clip
    q_s, q_1 = gmm.k_s - 1, gmm.k_1 - 1
    return [Check("infonce (k_s, k_1) δ=1 energy_private", "energy_private",
                  median_where(run, "energy_private", method="infonce", delta=1.0), 0.5 * q_1 / (q_s + q_1))]


@claim
def test_pca_puts_its_energy_in_the_noise_block(lab: LabRuns) -> list[Check]:
    return [Check("pca energy_noise", "energy_noise", median_where(lab.clip, "energy_noise", method="pca"), 0.5)]


@claim
def test_clip_learns_nothing_shared_at_delta_zero(lab: LabRuns) -> list[Check]:
    """Without shared pairs (δ = 0) neither tower keeps more of the shared block than a random subspace would (its
    share of the dimensions, 2q_s/d, plus a margin), and class-level retrieval is at chance (mean average precision
    ≈ 1/k_s for k_s equally frequent shared classes, plus a margin)."""
    run = lab.clip
    gmm = run.cfg.data.synthetic.clip
    checks = []
    for tower, dim in ((1, gmm.d_1), (2, gmm.d_2)):
        where = dict(method="clip", delta=0.0, tower=tower)
        checks.append(Check(f"clip tower {tower} δ=0 energy_shared", "energy_shared",
                            median_where(run, "energy_shared", **where), 2 * (gmm.k_s - 1) / dim + 0.1,
                            at_least=False))
        checks.append(Check(f"clip tower {tower} δ=0 retrieval_map", "retrieval_map",
                            median_where(run, "retrieval_map", **where), 1 / gmm.k_s + 0.05, at_least=False))
    return checks


@claim
def test_an_ssl_trunk_learns_the_hidden_feature_a_supervised_one_does_not(lab: LabRuns) -> list[Check]:
    """The nonlinear claim on ``label_hidden`` (d directions, chance energy of one direction 1/d): the SSL trunk on
    pairs sharing (y, h) puts ≥ 3/d of its first layer in e₂ (the hidden feature's direction), the supervised trunk
    on y at most 2/d there (and ≥ 2/d in e₁: it learned the label), and a probe of the SSL trunk's hidden layer
    reads h at least 0.03 better than the supervised trunk's; the linear InfoNCE control on the same pairs puts
    ≥ 3/d in e₂ too."""
    run, linear = lab.label_hidden, lab.label_hidden_linear
    d = run.cfg.data.synthetic.d
    gap = (median(run.records, "hidden_probe_hidden", "infonce", 1.0)
           - median(run.records, "hidden_probe_hidden", "supervised"))
    return [
        at_least(run, "label_energy_hidden", "infonce", 1.0, 3 / d),
        at_most(run, "label_energy_hidden", "supervised", None, 2 / d),
        at_least(run, "label_energy_label", "supervised", None, 2 / d),
        Check("hidden_probe_hidden infonce − supervised", "hidden_probe_hidden", gap, 0.03),
        _named(at_least(linear, "label_energy_hidden", "infonce", 1.0, 3 / d), "linear"),
    ]


def test_a_failing_check_fails_its_claim() -> None:
    """The wrapper ``@claim`` builds asserts: a check below its threshold (or above an upper one) fails it."""

    def test_impossible(lab: LabRuns) -> list[Check]:
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
    per_seed = sum(len(cfg.deltas) if b == "spectral" else 1 for b in cfg.score.baselines)
    assert len(records) == heads + per_seed * len(cfg.seeds)
    settings = {tuple(r[k] for k in SETTING_FIELDS) for r in records}
    assert len(settings) == len(records)  # one record per (method, setting, seed)
    assert len(list((run_dir / "heads").glob("*.safetensors"))) == heads
    trained = [r for r in records if r["method"] in cfg.heads.methods]
    assert all(r["init_fisher_cos2"] is not None and r["init_minor_cos2"] is not None for r in trained)
    assert {r["parametrization"] for r in trained} == {"orthonormal", "scaled"}  # InfoNCE, SimSiam (auto)
    minor = [r for r in records if r["method"] == "minor"]
    assert minor and all(r["minor_cos2"] > 0.999 and r["fisher_cos2"] < 0.05 for r in minor)
    import yaml

    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["deltas"] == [1.0, 0.5, 0.0]
    assert set(saved["provenance"]["packages"]) >= {"torch", "pytorch-lightning", "faiss-cpu", "scikit-learn", "open-clip-torch"}
    assert saved["provenance"]["git_commit"]
    cpu = saved["provenance"]["cpu"]
    assert cpu["model"] and cpu["torch_capability"] and cpu["torch_threads"] >= 1
    assert any(lib["internal_api"] in ("openblas", "mkl") for lib in saved["provenance"]["blas"])
