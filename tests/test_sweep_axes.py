"""Sweep axes in the config (``heads.r``, ``heads.infonce.tau``, ``heads.simsiam.xi``, ``heads.optimizer.lr``: a
scalar or a list; the heads are their product): the grid of heads, their tags and files, the precedence of
``per_delta``, one-line refusals of bad axes, and one end-to-end run whose results, table, report and
``delta_sweep.png`` keep the swept heads apart."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from ssl_pipeline import cli
from ssl_pipeline.cli import parse_command
from ssl_pipeline.config import (
    DeltaSetting,
    ExperimentConfig,
    HeadsConfig,
    InfoNCEConfig,
    OptimizerConfig,
    validate_experiment,
)
from ssl_pipeline.errors import ConfigError
from ssl_pipeline.heads.fitted import FittedHead
from ssl_pipeline.heads.settings import resolve_head_settings
from ssl_pipeline.records.results import AXIS_FIELDS, aggregate, summary_table
from ssl_pipeline.rundir import head_jobs, head_path

ROOT = Path(__file__).resolve().parents[1]
PANCAKES = ["synthetic", "--config", str(ROOT / "configs" / "synthetic" / "pancakes.yaml")]
AXES = ["--heads.r", "[2,3]", "--heads.infonce.tau", "[0.1,0.5]", "--heads.optimizer.lr", "[0.01,0.003]",
        "--heads.per_delta", "[]"]


def config(*argv: str) -> ExperimentConfig:
    return parse_command([*PANCAKES, *argv])[1]


def test_the_heads_are_the_product_of_the_axes_that_apply_to_each_method():
    cfg = config(*AXES, "--deltas", "1,0.5", "--seeds", "0,1")
    jobs = head_jobs(cfg)
    # InfoNCE: δ × seed × r × τ × lr = 2·2·2·2·2; SimSiam: δ × seed × r × lr (τ does not multiply its heads)
    assert len(jobs) == 32 + 16
    tags = [job.tag for job in jobs]
    assert len(set(tags)) == len(tags)
    assert tags[:5] == [
        "infonce_delta1_seed0_r2_tau0.1_lr0.01", "infonce_delta1_seed0_r2_tau0.1_lr0.003",
        "infonce_delta1_seed0_r2_tau0.5_lr0.01", "infonce_delta1_seed0_r2_tau0.5_lr0.003",
        "infonce_delta1_seed0_r3_tau0.1_lr0.01",
    ]
    assert tags[32:34] == ["simsiam_delta1_seed0_r2_lr0.01", "simsiam_delta1_seed0_r2_lr0.003"]
    assert {(j.r, j.tau, j.lr) for j in jobs if j.method == "infonce"} == {
        (r, tau, lr) for r in (2, 3) for tau in (0.1, 0.5) for lr in (0.01, 0.003)}
    assert all(j.tau is None and j.xi == 0.1 for j in jobs if j.method == "simsiam")
    assert {j.axes for j in jobs} == {("r", "tau", "lr"), ("r", "lr")}


def test_xi_multiplies_only_the_simsiam_heads():
    jobs = head_jobs(config("--heads.simsiam.xi", "0,0.1", "--deltas", "1", "--seeds", "0"))
    assert [job.tag for job in jobs] == ["infonce_delta1_seed0", "simsiam_delta1_seed0_xi0", "simsiam_delta1_seed0_xi0.1"]
    assert [job.xi for job in jobs] == [None, 0.0, 0.1]


def test_sim_coeff_multiplies_only_the_vicreg_heads_and_keeps_them_apart_by_their_loss_weights():
    jobs = head_jobs(config("--heads.methods", "[infonce,vicreg]", "--heads.vicreg.sim_coeff", "[1,5,25,100]",
                            "--deltas", "1", "--seeds", "0"))
    assert [job.tag for job in jobs] == ["infonce_delta1_seed0", *(f"vicreg_delta1_seed0_sim_coeff{v}"
                                                                   for v in (1, 5, 25, 100))]
    assert [job.sim_coeff for job in jobs] == [None, 1.0, 5.0, 25.0, 100.0]
    assert [job.loss_weights for job in jobs[1:]] == ["1/25/1", "5/25/1", "25/25/1", "100/25/1"]
    assert jobs[1].axes == ("sim_coeff",) and jobs[0].axes == ()
    # a scalar keeps the old tag
    assert head_jobs(config("--heads.methods", "[vicreg]", "--deltas", "1", "--seeds", "0"))[0].tag == \
        "vicreg_delta1_seed0"


def test_a_config_of_scalars_keeps_the_old_tags_and_callers():
    cfg = config("--deltas", "1,0.5", "--seeds", "0")
    assert [job.tag for job in head_jobs(cfg)] == [
        "infonce_delta1_seed0", "infonce_delta0.5_seed0", "simsiam_delta1_seed0", "simsiam_delta0.5_seed0"]
    assert all(job.axes == () for job in head_jobs(cfg))
    # a list of one value is a scalar: same tags, and (heads, method, δ, seed) callers still resolve it
    one = config("--heads.r", "[4]", "--heads.infonce.tau", "[0.5]", "--deltas", "1,0.5", "--seeds", "0")
    assert head_jobs(one) == head_jobs(cfg)
    assert resolve_head_settings(one.heads, "infonce", 1.0, 0) == head_jobs(cfg)[0]
    with pytest.raises(ValueError, match=r"heads.r=\[2, 3\] is a sweep axis; pass the head's r="):
        resolve_head_settings(HeadsConfig(r=[2, 3]), "infonce", 1.0, 0)


@pytest.mark.parametrize(("argv", "field", "value"), [
    (["--heads.r", "4"], "r", 4),
    (["--heads.r", "[4,8]"], "r", [4, 8]),
    (["--heads.r", "4,8"], "r", [4, 8]),
    (["--heads.r=4,8"], "r", [4, 8]),
    (["--heads.r=9"], "r", 9),
    (["--heads.infonce.tau", "0.2"], "tau", 0.2),
    (["--heads.infonce.tau", "[0.1, 0.5]"], "tau", [0.1, 0.5]),
    (["--heads.simsiam.xi", "0,0.1"], "xi", [0.0, 0.1]),
    (["--heads.optimizer.lr", "[0.01,0.003]"], "lr", [0.01, 0.003]),
    (["--heads.optimizer.lr=0.003"], "lr", 0.003),
    (["--heads.vicreg.sim_coeff", "[1,5,25,100]"], "sim_coeff", [1.0, 5.0, 25.0, 100.0]),
    (["--heads.vicreg.sim_coeff", "5"], "sim_coeff", 5.0),
])
def test_the_command_line_takes_a_scalar_or_a_list(argv, field, value):
    heads = config(*argv, "--heads.per_delta", "[]").heads
    parsed = {"r": heads.r, "tau": heads.infonce.tau, "xi": heads.simsiam.xi, "lr": heads.optimizer.lr,
              "sim_coeff": heads.vicreg.sim_coeff}[field]
    assert parsed == value and type(parsed) is type(value)


def test_a_config_file_takes_lists(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("heads:\n  r: [2, 3]\n  infonce: {tau: [0.1, 0.5]}\n  optimizer: {lr: 0.01}\n  per_delta: []\n")
    heads = config("--config", str(path)).heads
    assert (heads.r, heads.infonce.tau, heads.optimizer.lr) == ([2, 3], [0.1, 0.5], 0.01)


def test_the_example_sweep_config_parses():
    cfg = parse_command(["synthetic", "--config", str(ROOT / "configs" / "synthetic" / "sweep_axes.yaml")])[1]
    assert len({job.tag for job in head_jobs(cfg)}) == len(head_jobs(cfg)) > len(cfg.seeds) * len(cfg.deltas) * 2


BAD_AXES = [
    (["--heads.r", "[]"], "heads.r is an empty list; give a value or a non-empty list, e.g. --heads.r [4,8]"),
    (["--heads.infonce.tau", "[]"],
     "heads.infonce.tau is an empty list; give a value or a non-empty list, e.g. --heads.infonce.tau [0.1,0.5]"),
    (["--heads.simsiam.xi", "[]"],
     "heads.simsiam.xi is an empty list; give a value or a non-empty list, e.g. --heads.simsiam.xi [0,0.1]"),
    (["--heads.optimizer.lr", "[]"],
     "heads.optimizer.lr is an empty list; give a value or a non-empty list, e.g. --heads.optimizer.lr [0.01,0.003]"),
    (["--heads.infonce.tau", "[0.1,0]"], "heads.infonce.tau[1]=0.0 must be > 0"),
    (["--heads.infonce.tau", "-0.1,0.5"], "heads.infonce.tau[0]=-0.1 must be > 0"),
    (["--heads.simsiam.xi", "[0.1,-0.1]"], "heads.simsiam.xi[1]=-0.1 must be at least 0 (0 turns the collapse guard off)"),
    (["--heads.optimizer.lr", "[0.01,0]"], "heads.optimizer.lr[1]=0.0 must be > 0"),
    (["--heads.optimizer.lr", "[0.01,-1]"], "heads.optimizer.lr[1]=-1.0 must be > 0"),
    (["--heads.vicreg.sim_coeff", "[1,-5]"], "heads.vicreg.sim_coeff[1]=-5.0 must be at least 0 (a loss weight)"),
    (["--heads.vicreg.sim_coeff", "[]"],
     "heads.vicreg.sim_coeff is an empty list; give a value or a non-empty list, e.g. --heads.vicreg.sim_coeff "
     "[1,5,25,100]"),
    (["--heads.r", "[2,0]"], "heads.r[1]=0 must be at least 1"),
    (["--heads.r", "[2,2]"], "heads.r[1]=2 repeats heads.r[0]; give each value of a sweep axis once"),
    (["--heads.r", "[2,109]"], "heads.r[1]=109 exceeds the feature dimension d=108; choose r ≤ 108"),
    (["--heads.r", "109"], "heads.r=109 exceeds the feature dimension d=108; choose r ≤ 108"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_AXES, ids=[case[1].split(" ")[0] for case in BAD_AXES])
def test_a_bad_axis_is_refused_in_one_line_naming_the_field_and_value(capsys, monkeypatch, argv, message):
    monkeypatch.setattr(cli, "run_command", lambda *args, **kwargs: pytest.fail("the command ran"))
    assert cli.main([*PANCAKES, "--heads.per_delta", "[]", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err == f"ssl-pipeline: error: {message}"


def test_axes_built_in_code_are_checked_too():
    with pytest.raises(ConfigError, match=r"^heads.r\[1\]=2.5 must be a whole number of columns$"):
        validate_experiment(ExperimentConfig(heads=HeadsConfig(r=[2, 2.5])))
    with pytest.raises(ConfigError, match=r"^heads.infonce.tau=\[\] is|^heads.infonce.tau is an empty list"):
        validate_experiment(ExperimentConfig(heads=HeadsConfig(infonce=InfoNCEConfig(tau=[]))))


def test_per_delta_replaces_an_axis_of_one_value_at_its_delta_only():
    heads = HeadsConfig(infonce=InfoNCEConfig(tau=0.1), optimizer=OptimizerConfig(lr=[0.01]),
                        per_delta=[DeltaSetting(delta=0.5, tau=1.0, lr=0.002)])
    cfg = ExperimentConfig(deltas=[1.0, 0.5], seeds=[0], heads=heads)
    validate_experiment(cfg)
    by_delta = {(job.method, job.delta): job for job in head_jobs(cfg)}
    assert (by_delta["infonce", 0.5].tau, by_delta["infonce", 0.5].lr) == (1.0, 0.002)
    assert (by_delta["infonce", 1.0].tau, by_delta["infonce", 1.0].lr) == (0.1, 0.01)
    assert by_delta["simsiam", 0.5].lr == 0.002


@pytest.mark.parametrize(("argv", "message"), [
    (["--heads.infonce.tau", "[0.1,0.5]", "--heads.per_delta", "[{delta: 0.5, tau: 1.0}]"],
     "heads.per_delta[0].tau=1.0 is ambiguous: heads.infonce.tau=[0.1, 0.5] is a sweep axis; give tau either per δ "
     "or as a list, not both"),
    (["--heads.optimizer.lr", "[0.01,0.003]", "--heads.per_delta", "[{delta: 1.0}, {delta: 0.5, lr: 0.1}]"],
     "heads.per_delta[1].lr=0.1 is ambiguous: heads.optimizer.lr=[0.01, 0.003] is a sweep axis; give lr either per δ "
     "or as a list, not both"),
])
def test_per_delta_beside_a_swept_axis_is_refused_as_ambiguous(capsys, monkeypatch, argv, message):
    monkeypatch.setattr(cli, "run_command", lambda *args, **kwargs: pytest.fail("the command ran"))
    assert cli.main([*PANCAKES, *argv]) == 2
    assert capsys.readouterr().err.strip() == f"ssl-pipeline: error: {message}"


def test_per_delta_epochs_apply_to_every_value_of_a_swept_axis():
    cfg = config("--heads.infonce.tau", "[0.1,0.5]", "--heads.per_delta", "[{delta: 0.5, epochs: 7}]",
                 "--heads.methods", "[infonce]", "--deltas", "1,0.5", "--seeds", "0")
    assert [(job.tau, job.epochs) for job in head_jobs(cfg) if job.delta == 0.5] == [(0.1, 7), (0.5, 7)]


def test_head_files_keep_the_swept_axes_and_old_files_still_load(tmp_path):
    jobs = head_jobs(config(*AXES, "--deltas", "1", "--seeds", "0"))
    arrays = dict(weight=np.zeros((1, 4, 2), np.float32), mean=np.zeros(4, np.float32), scale=np.ones(4, np.float32))
    for settings in jobs:
        FittedHead(settings, fit_seconds=0.1, **arrays).save(head_path(tmp_path, settings.tag))
    loaded = [FittedHead.load(head_path(tmp_path, settings.tag)).settings for settings in jobs]
    assert loaded == jobs and len(list((tmp_path / "heads").iterdir())) == len(jobs)
    # a head saved before sweep axes existed has no ``axes`` in its metadata: it loads with none, its old tag
    old = resolve_head_settings(HeadsConfig(r=2), "infonce", 1.0, 0)
    head = FittedHead(old, fit_seconds=0.1, **arrays)
    head.save(tmp_path / "old.safetensors")
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    with safe_open(str(tmp_path / "old.safetensors"), framework="numpy") as f:
        metadata = f.metadata()
    settings = json.loads(metadata["settings"])
    del settings["axes"]
    save_file(load_file(str(tmp_path / "old.safetensors")), str(tmp_path / "old.safetensors"),
              {**metadata, "settings": json.dumps(settings)})
    assert FittedHead.load(tmp_path / "old.safetensors").settings == old and old.tag == "infonce_delta1_seed0"


TINY = [
    "--name", "axes", "--seeds", "0", "--deltas", "1,0.5", "--heads.methods", "[infonce,simsiam]",
    "--data.synthetic.d", "6", "--data.synthetic.k", "3", "--data.synthetic.n_train", "240",
    "--data.synthetic.n_val", "60", "--data.synthetic.n_test", "90", "--heads.r", "2,3", "--heads.infonce.tau", "0.1,0.5",
    "--heads.optimizer.lr", "0.01,0.003", "--heads.simsiam.xi", "0.1", "--heads.per_delta", "[]", "--heads.epochs", "1",
    "--heads.batch_size", "64", "--score.kmeans.nredo", "1", "--score.kmeans.niter", "10",
    "--score.probe.l2_grid", "[0.001]", "--score.probe.max_iter", "20", "--score.baselines", "[lda,pca]",
    "--wandb.mode", "disabled",
]


@pytest.fixture(scope="module")
def swept_run(tmp_path_factory):
    """One `synthetic` run of the CLI with three list axes: 16 InfoNCE and 8 SimSiam heads, LDA and PCA at r = 2, 3."""
    run_dir = tmp_path_factory.mktemp("swept") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "disabled")
        assert cli.main(["synthetic", *TINY, "--run_dir", str(run_dir)]) == 0
    return run_dir


def test_a_swept_run_writes_every_head_apart_and_keeps_them_apart_in_the_results(swept_run):
    cfg = config(*TINY)
    tags = [job.tag for job in head_jobs(cfg)]
    assert len(tags) == 16 + 8
    assert sorted(path.stem for path in (swept_run / "heads").glob("*.safetensors")) == sorted(tags)
    records = json.loads((swept_run / "results.json").read_text())
    heads = [r for r in records if r["method"] in ("infonce", "simsiam")]
    settings = {(r["method"], r["delta"], r["r"], r["tau"], r["lr"]) for r in heads}
    assert len(settings) == len(heads) == 24
    assert {(r["tau"], r["lr"]) for r in heads if r["method"] == "infonce"} == {
        (tau, lr) for tau in (0.1, 0.5) for lr in (0.01, 0.003)}
    assert {(r["method"], r["r"]) for r in records if r["delta"] is None} == {
        (m, r) for m in ("lda", "pca") for r in (2, 3)}
    assert len(aggregate(records)) == len(records)  # one seed: every setting is its own row
    assert all(set(AXIS_FIELDS) <= set(r) for r in records)
    assert (swept_run / "delta_sweep.png").stat().st_size > 0
    console = Console(width=200, record=True)
    console.print(summary_table(records))
    table = console.export_text()
    assert "infonce r=3 τ=0.5 lr=0.003" in table and "simsiam r=2 lr=0.01" in table and "pca r=3" in table


def test_a_swept_run_reads_its_heads_back_and_reports_the_axes(swept_run, tmp_path):
    from ssl_pipeline.features.source import load_features
    from ssl_pipeline.reporting.html import build_report
    from ssl_pipeline.rundir import load_heads

    cfg = config("--config", str(swept_run / "config.yaml"))
    assert cfg.heads.r == [2, 3] and cfg.heads.infonce.tau == [0.1, 0.5]
    features = load_features(cfg.data, Console(quiet=True))
    heads = load_heads(cfg, swept_run, features)
    assert [head.settings for head in heads] == head_jobs(cfg)
    artifacts = build_report([swept_run], tmp_path / "report")
    (table,) = [rows for key, rows in artifacts.tables.items() if key.startswith("table-")]
    assert {"r", "tau", "lr"} <= set(table[0]) and "xi" not in table[0]
    assert len({(row["method"], row["delta"], row["r"], row["tau"], row["lr"]) for row in table}) == len(table)
    html = (tmp_path / "report" / "index.html").read_text()
    assert "<th>τ</th>" in html and "<th>lr</th>" in html


def test_figures_draw_one_curve_per_combination_of_swept_values(swept_run):
    from ssl_pipeline.records.results import load_results
    from ssl_pipeline.reporting.figures import _labelled_series

    rows = aggregate(load_results(swept_run / "results.json"))
    labels = list(_labelled_series([row for row in rows if row["delta"] is not None]))
    assert len(labels) == 8 + 4
    assert "infonce (r=2, τ=0.1, lr=0.01)" in labels and "simsiam (r=3, lr=0.003)" in labels


def test_a_tau_set_per_delta_is_not_a_swept_axis():
    from ssl_pipeline.records.results import make_record, swept_fields
    from ssl_pipeline.reporting.figures import _labelled_series

    records = [make_record(method="infonce", delta=d, r=4, tau=t, lr=0.01, seed=0, nmi=0.5)
               for d, t in ((1.0, 0.1), (0.5, 1.0))]
    rows = aggregate(records)
    assert swept_fields(rows) == {}
    assert list(_labelled_series(rows)) == ["infonce"]
    assert asdict(resolve_head_settings(HeadsConfig(), "infonce", 1.0, 0))["axes"] == ()
