"""W&B logging (offline: tests/conftest.py sets WANDB_MODE=offline), the W&B Report and the sweep configs.

One offline run is shared by most tests: it logs made-up contract records, a figure and one short head fit, and
the tests read what wandb wrote under ``<run_dir>/wandb/offline-run-*`` (the Table's JSON file and the records of
the ``.wandb`` file, a LevelDB-style log of protobuf records).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import yaml

from ssl_pipeline.cli import parse_command
from ssl_pipeline.config import ExperimentConfig, GMMConfig, HeadsConfig, TrainerConfig
from ssl_pipeline.errors import ConfigError
from ssl_pipeline.heads.settings import resolve_head_settings
from ssl_pipeline.records.results import METRIC_FIELDS, SETTING_FIELDS, aggregate, make_record
from ssl_pipeline.reporting.wandb_logging import (
    delta_name,
    delta_rows,
    resolve_mode,
    scrub_secrets,
    series_names,
    start_run,
    summary_metrics,
    wandb_run,
)

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "configs" / "wandb_sweeps").glob("*.yaml"))
FAKE_KEY = "local-0123456789abcdef0123456789abcdef01234567"
HEAD_TAG = "infonce_delta1_seed0"


def contract_records() -> list[dict]:
    """InfoNCE at δ ∈ {1, 0.5} and LDA, two seeds each, with distinct metric values."""
    common = dict(data="synthetic", dataset="gmm-pancakes", backbone=None, features="gmm-abc", split="test",
                  split_seed=0, r=2, epochs=3, batch_size=128)
    records = []
    for seed in (0, 1):
        for delta in (1.0, 0.5):
            records.append(make_record(**common, method="infonce", delta=delta, tau=0.1, similarity="cosine",
                                       symmetric=False, normalized=True, seed=seed, nmi=0.5 * delta + 0.1 * seed,
                                       fisher_cos2=0.9 * delta, probe_acc=0.8, fit_seconds=1.5))
        records.append(make_record(**common, method="lda", seed=seed, nmi=0.95, fisher_cos2=1.0, probe_acc=0.97))
    return records


def wandb_records(path: Path) -> Iterator:
    """The protobuf records of a ``.wandb`` file: a 7-byte header, then 32 KiB blocks of chunks, each with a
    7-byte header (CRC32C, little-endian length, type 1 full / 2 first / 3 middle / 4 last)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, block, pos, pending = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if kind == 0 or pos + 7 + length > len(data):  # zero padding, or a chunk still being written
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def offline_run_dir(run_dir: Path) -> Path:
    (found,) = (run_dir / "wandb").glob("offline-run-*")
    return found


def finished_run_records(directory: Path, patience_s: float = 60.0) -> list:
    """The records of a finished offline run. ``finish()`` can return before wandb's service process has flushed
    the file, so wait (up to ``patience_s``) for its last record, the exit record."""
    (path,) = directory.glob("run-*.wandb")
    deadline = time.monotonic() + patience_s
    while True:
        records = list(wandb_records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def of_type(records: list, kind: str) -> list:
    """The payloads of the records of one type (``run``, ``history``, ``summary``, ``config``, ``exit``, …)."""
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def item_key(item) -> str:
    return item.key or "/".join(item.nested_key)


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> dict:
    """One offline run (with a fake API key in the environment) holding records, a figure and a head fit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ssl_pipeline.data.synthetic import make_synthetic
    from ssl_pipeline.heads.fit import quiet_lightning
    from ssl_pipeline.heads.fit import fit_head

    run_dir, cwd = tmp_path_factory.mktemp("run"), tmp_path_factory.mktemp("cwd")
    figure = run_dir / "delta_sweep.png"
    plt.figure(figsize=(1, 1))
    plt.plot([0, 1], [0, 1])
    plt.savefig(figure)
    plt.close()
    records = contract_records()
    cfg = ExperimentConfig(name="wandb_test", heads=HeadsConfig(methods=["infonce"]))
    quiet_lightning()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_API_KEY", FAKE_KEY)
        patch.chdir(cwd)
        run = start_run(cfg, "run", run_dir)
        assert run is not None
        features = make_synthetic(GMMConfig(d=12, k=3, n_train=600, n_val=60, n_test=60))
        settings = resolve_head_settings(HeadsConfig(r=2, epochs=3, batch_size=128), "infonce", 1.0, 0)
        fit_head(features, settings, TrainerConfig(log_every_n_steps=1), logger=run.fit_logger(settings.tag))
        run.log_records(records)
        run.log_figures({"delta_sweep": figure})
        run.finish()
    directory = offline_run_dir(run_dir)
    parsed = finished_run_records(directory)
    (run_record,) = of_type(parsed, "run")
    return dict(
        records=records, run_dir=run_dir, cwd=cwd, directory=directory, run=run_record,
        history=[{item_key(i): json.loads(i.value_json) for i in h.item} for h in of_type(parsed, "history")],
        summary={item_key(u): json.loads(u.value_json) for s in of_type(parsed, "summary") for u in s.update},
        config={u.key: json.loads(u.value_json) for c in [run_record.config, *of_type(parsed, "config")]
                for u in c.update},
    )


def test_offline_run_directory_holds_the_results_table(logged):
    (table_file,) = (logged["directory"] / "files" / "media" / "table").glob("results_*.table.json")
    table = json.loads(table_file.read_text())
    columns = list(SETTING_FIELDS + METRIC_FIELDS)
    assert table["columns"] == columns
    assert table["data"] == [[record[c] for c in columns] for record in logged["records"]]
    assert len(list((logged["directory"] / "files" / "media" / "images").rglob("delta_sweep_*.png"))) == 1
    assert list(logged["cwd"].iterdir()) == []  # nothing written outside the run directory


def test_run_is_grouped_named_and_tagged_from_the_config(logged):
    run = logged["run"]
    assert (run.run_group, run.job_type, run.display_name, run.project) == ("wandb_test", "run", "wandb_test-run",
                                                                           "ssl_pipeline")
    assert set(run.tags) == {"gmm-pancakes", "synthetic", "infonce"}


def test_summary_holds_means_over_seeds_and_the_sweep_metrics(logged):
    summary = logged["summary"]
    assert summary["summary/infonce/delta0_5/nmi_mean"] == pytest.approx(np.mean([0.25, 0.35]))
    assert summary["summary/infonce/delta0_5/nmi_std"] == pytest.approx(np.std([0.25, 0.35], ddof=1))
    assert summary["summary/infonce/nmi_mean"] == pytest.approx(np.mean([0.5, 0.6]))  # the largest δ, 1
    assert summary["summary/infonce/delta"] == 1.0
    assert summary["summary/lda/fisher_cos2_mean"] == 1.0
    assert "delta_r_tau.yaml" in [sweep.name for sweep in SWEEPS]
    for sweep in SWEEPS:
        assert yaml.safe_load(sweep.read_text())["metric"]["name"] in summary


def test_history_has_metric_against_delta_rows_with_baselines(logged):
    rows = [row for row in logged["history"] if "by_delta/delta" in row]
    assert [row["by_delta/delta"] for row in rows] == [0.5, 1.0]
    assert [row["by_delta/infonce/fisher_cos2"] for row in rows] == pytest.approx([0.45, 0.9])
    assert all(row["by_delta/lda/nmi"] == pytest.approx(0.95) for row in rows)


def test_head_fit_logs_its_loss_curve_under_its_tag(logged):
    losses = [row[f"{HEAD_TAG}/train/loss_epoch"] for row in logged["history"] if f"{HEAD_TAG}/train/loss_epoch" in row]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert any(f"{HEAD_TAG}/train/loss_step" in row and "trainer/global_step" in row for row in logged["history"])


def test_logged_config_is_the_resolved_config_and_no_file_holds_the_api_key(logged):
    config = logged["config"]
    assert config["heads"]["methods"] == ["infonce"] and "git_commit" in config["provenance"]
    assert "settings" not in config  # per-head hyperparameters stay out of the run's config
    for path in logged["run_dir"].rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path


def test_scrub_secrets_redacts_secret_keys_at_any_depth(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    scrubbed = scrub_secrets({"api_key": "k1", "nested": [{"Auth_Token": "k2", "lr": 0.1}], "db": {"PASSWORD": "k3"},
                              "client_secret": {"x": 1}, "note": f"key={FAKE_KEY}", "keep": "visible"})
    assert scrubbed == {"api_key": "[redacted]", "nested": [{"Auth_Token": "[redacted]", "lr": 0.1}],
                        "db": {"PASSWORD": "[redacted]"}, "client_secret": "[redacted]", "note": "[redacted]",
                        "keep": "visible"}


@pytest.mark.parametrize("variable", ["RANK", "LOCAL_RANK", "SLURM_PROCID"])
def test_only_global_rank_zero_starts_a_run(monkeypatch, tmp_path, variable):
    monkeypatch.setenv(variable, "1")
    assert start_run(ExperimentConfig(), "fit", tmp_path) is None
    assert not (tmp_path / "wandb").exists()


def test_disabled_mode_starts_no_run_and_the_environment_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert start_run(ExperimentConfig(), "run", tmp_path) is None
    monkeypatch.delenv("WANDB_MODE")
    cfg = ExperimentConfig()
    cfg.wandb.mode = "disabled"
    assert start_run(cfg, "run", tmp_path) is None
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg.wandb.mode = "online"
    assert resolve_mode(cfg) == "offline"
    monkeypatch.setenv("WANDB_MODE", "offlne")
    with pytest.raises(ConfigError, match="WANDB_MODE='offlne' is not one of online, offline, disabled"):
        start_run(cfg, "run", tmp_path)


def test_online_failure_is_one_line_without_the_key(monkeypatch, tmp_path):
    import wandb

    def refuse(**kwargs):
        raise wandb.errors.UsageError(f"api_key {FAKE_KEY} not valid\nsecond line")

    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setattr(wandb, "init", refuse)
    with pytest.raises(ConfigError) as error:
        start_run(ExperimentConfig(), "run", tmp_path)
    message = str(error.value)
    assert "\n" not in message and FAKE_KEY not in message and "WANDB_MODE=offline" in message


def test_context_finishes_the_run_with_exit_code_1_on_error(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with wandb_run(ExperimentConfig(name="failing"), "fit", tmp_path) as run:
            assert run is not None
            raise RuntimeError("boom")
    (exit_record,) = of_type(finished_run_records(offline_run_dir(tmp_path)), "exit")
    assert exit_record.exit_code == 1


def test_delta_names_hold_no_dots():
    assert [delta_name(d) for d in (1.0, 0.5, 0.0, 0.25)] == ["delta1", "delta0_5", "delta0", "delta0_25"]
    assert all("." not in key for key in summary_metrics(contract_records()))


def clip_records(taus: tuple[float, ...] = (0.2,)) -> list[dict]:
    """A CLIP head's two towers at δ ∈ {1, 0.5, 0}, two seeds (zero-shot for tower 1 only), and LDA."""
    common = dict(data="synthetic", dataset="gmm-clip-shared", features="gmm-clip", split="test", r=4, target="shared")
    records = [
        make_record(**common, method="clip", delta=delta, tau=tau, tower=tower, seed=seed,
                    nmi=0.5 * delta + 0.1 * tower + 0.01 * seed + tau, energy_shared=0.9 * delta + 0.02 * tower,
                    retrieval_map=0.2 + 0.6 * delta + 0.03 * tower, zeroshot_acc=0.3 + delta if tower == 1 else None)
        for tau in taus for delta in (1.0, 0.5, 0.0) for tower in (1, 2) for seed in (0, 1)
    ]
    return records + [make_record(**common, method="lda", seed=seed, nmi=0.99, energy_shared=0.999) for seed in (0, 1)]


def test_clip_towers_get_summary_and_by_delta_keys_of_their_own():
    summary = summary_metrics(clip_records())
    assert not [key for key in summary if key.startswith("summary/clip/")]
    for tower in (1, 2):
        expected = [0.5 + 0.1 * tower + 0.2, 0.5 + 0.1 * tower + 0.01 + 0.2]
        assert summary[f"summary/clip_tower{tower}/delta1/nmi_mean"] == pytest.approx(np.mean(expected))
        assert summary[f"summary/clip_tower{tower}/delta1/nmi_std"] == pytest.approx(np.std(expected, ddof=1))
        assert summary[f"summary/clip_tower{tower}/nmi_mean"] == pytest.approx(np.mean(expected))  # the largest δ
        assert summary[f"summary/clip_tower{tower}/delta"] == 1.0
        assert summary[f"summary/clip_tower{tower}/delta0/retrieval_map_mean"] == pytest.approx(0.2 + 0.03 * tower)
    assert summary["summary/clip_tower1/zeroshot_acc_mean"] == pytest.approx(1.3)
    assert "summary/clip_tower2/zeroshot_acc_mean" not in summary
    assert summary["summary/lda/energy_shared_mean"] == pytest.approx(0.999)
    rows = delta_rows(clip_records())
    assert [row["by_delta/delta"] for row in rows] == [0.0, 0.5, 1.0]
    assert [row["by_delta/clip_tower2/energy_shared"] for row in rows] == pytest.approx([0.04, 0.49, 0.94])
    assert [row["by_delta/clip_tower1/energy_shared"] for row in rows] == pytest.approx([0.02, 0.47, 0.92])
    assert all(row["by_delta/lda/nmi"] == pytest.approx(0.99) for row in rows)
    # a swept τ is appended after the tower
    names = set(series_names(aggregate(clip_records(taus=(0.1, 0.2)))))
    assert names == {"clip_tower1_tau0_1", "clip_tower2_tau0_1", "clip_tower1_tau0_2", "clip_tower2_tau0_2", "lda"}


def test_unimodal_summary_keys_are_unchanged():
    metrics = ("nmi", "fisher_cos2", "probe_acc", "fit_seconds")
    expected = {f"summary/infonce/{d}/{m}_{s}" for d in ("delta1", "delta0_5") for m in metrics for s in ("mean", "std")}
    expected |= {f"summary/infonce/{m}_mean" for m in metrics} | {"summary/infonce/delta"}
    expected |= {f"summary/lda/{m}_mean" for m in metrics[:3]}
    assert set(summary_metrics(contract_records())) == expected
    assert set(delta_rows(contract_records())[0]) == {"by_delta/delta", *(f"by_delta/infonce/{m}" for m in metrics),
                                                      *(f"by_delta/lda/{m}" for m in metrics[:3])}


def test_report_builds_offline_with_panels_for_every_metric_and_no_network_call(monkeypatch):
    import requests
    import wandb
    import wandb_workspaces.reports.v2 as wr

    from ssl_pipeline.reporting.wandb_report import build_wandb_report

    def no_network(*args, **kwargs):
        raise AssertionError("the offline report made a network call")

    monkeypatch.setattr(wandb, "Api", no_network)
    monkeypatch.setattr(requests.Session, "request", no_network)
    metrics = ("nmi", "probe_acc", "fisher_cos2")
    report = build_wandb_report("ssl_pipeline", None, ["digits_efficientnet_lite0", "pancakes"], metrics)
    assert isinstance(report, wr.Report) and isinstance(report.blocks[0], wr.H1)
    assert "digits_efficientnet_lite0" in report.blocks[1].text
    grids = [block for block in report.blocks if isinstance(block, wr.PanelGrid)]
    for metric in metrics:
        grid = next(g for g in grids if any(getattr(p, "title_y", None) == metric for p in g.panels))
        line = next(p for p in grid.panels if isinstance(p, wr.LinePlot))
        assert line.x == "by_delta/delta" and {f"by_delta/infonce/{metric}", f"by_delta/lda/{metric}"} <= set(line.y)
        assert {f"by_delta/clip_tower1/{metric}", f"by_delta/clip_tower2/{metric}"} <= set(line.y)
        bars = next(p for p in grid.panels if isinstance(p, wr.BarPlot))
        assert {f"summary/lda/{metric}_mean", f"summary/clip_tower2/{metric}_mean"} <= set(bars.metrics)
    assert any(isinstance(p, wr.WeavePanelSummaryTable) and p.table_name == "results" for g in grids for p in g.panels)
    for grid in grids:
        (runset,) = grid.runsets
        assert runset.project == "ssl_pipeline"
        assert "digits_efficientnet_lite0" in runset.filters and "pancakes" in runset.filters
    spec = json.loads(report._to_model().spec.model_dump_json(by_alias=True, exclude_none=True))  # what save() sends
    assert len(spec["blocks"]) >= len(report.blocks)


def test_report_save_failure_is_a_config_error(monkeypatch):
    import wandb

    from ssl_pipeline.reporting.wandb_report import build_wandb_report

    def refuse():
        raise wandb.errors.UsageError("api_key not configured (no-tty)")

    monkeypatch.setattr(wandb, "Api", refuse)
    with pytest.raises(ConfigError, match="wandb login"):
        build_wandb_report("ssl_pipeline", None, ["g"], save=True)


@pytest.mark.parametrize("sweep", SWEEPS, ids=lambda path: path.stem)
def test_sweep_parameters_are_config_keys_the_cli_parses(sweep, monkeypatch):
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    monkeypatch.chdir(ROOT)  # the command's --config paths are relative to the repository root
    spec = yaml.safe_load(sweep.read_text())
    assert spec["method"] == "grid" and spec["metric"]["goal"] == "maximize"
    command = spec["command"]
    assert command[:4] == ["${env}", "${interpreter}", "-m", "ssl_pipeline.cli"] and command[-1] == "${args}"
    for pick in (0, -1):
        values = {name: parameter["values"][pick] for name, parameter in spec["parameters"].items()}
        args = create_sweep_command_args({"args": {name: {"value": v} for name, v in values.items()}})["args"]
        assert all(arg.startswith("--") and "=" in arg for arg in args)  # how the agent renders ${args}
        _, cfg, _ = parse_command(command[4:-1] + args)
        for name, value in values.items():
            parsed = cfg
            for part in name.split("."):
                parsed = getattr(parsed, part)
            assert parsed == ([value] if name in ("deltas", "seeds") else value), name
        assert cfg.wandb.mode == "online"

