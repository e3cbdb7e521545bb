"""The command line: fit → score through artifacts, and one clear line for every bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ssl_pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]
PANCAKES = str(ROOT / "configs" / "synthetic" / "pancakes.yaml")
FAST = ["--seeds", "0", "--heads.epochs", "2", "--score.kmeans.nredo", "1"]


def write_features(path: Path, rng: np.random.Generator, classes: int = 3, d: int = 6, n: int = 300) -> Path:
    centres = rng.standard_normal((classes, d)) * 4
    arrays = {}
    for split, size in (("train", n), ("test", n // 2)):
        y = np.arange(size) % classes
        arrays[f"x_{split}"] = (centres[y] + rng.standard_normal((size, d))).astype(np.float32)
        arrays[f"y_{split}"] = y
    np.savez(path, **arrays)
    return path


def error_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, f"expected one line, got:\n{err}"
    assert err.startswith("ssl-pipeline: error: ") and "Traceback" not in err
    return err


def test_help_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "ssl_pipeline.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert all(command in result.stdout for command in ("run", "extract", "fit", "score", "synthetic", "cache"))


HELP_PROBE = """
import sys
from ssl_pipeline.cli import main
try:
    main([sys.argv[1], "--help"])
except SystemExit:
    pass
heavy = ("torch", "numpy", "pytorch_lightning", "sklearn", "faiss", "wandb", "matplotlib")
print("heavy imports:", [name for name in heavy if name in sys.modules])
"""


def test_run_help_describes_every_field_from_the_config_docstrings_and_hides_internal_ones():
    result = subprocess.run([sys.executable, "-c", HELP_PROBE, "run"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # help lines are wrapped
    for option, description in [
        ("--heads.r R, --heads.r+ R", "Projection dimension r (columns of A)"),  # a scalar or a list
        ("--deltas [ITEM,...], --deltas+ [ITEM,...]", "δ values in [0, 1]: the probability that a positive shares"),
        ("--data.synthetic.separation SEPARATION", "Distance between class means"),
        ("--score.kmeans.nredo NREDO", "Restarts; the one with the lowest inertia is kept"),
        ("--wandb.mode {offline,online,disabled}", "``offline`` (written under ``<run_dir>/wandb``)"),
    ]:
        assert f"{option} {description}" in text, option
    assert "--wide" in text and "--provenance" not in text and "provenance" not in text
    assert "OptimizerConfig(" not in text  # every section is titled by its docstring, not its signature
    assert text.endswith("heavy imports: []"), "--help must not import the heavy libraries"
    fit_help = subprocess.run([sys.executable, "-c", HELP_PROBE, "fit"], capture_output=True, text=True).stdout
    assert "--heads.r R" in fit_help and "--wide" not in fit_help


def test_delta_outside_unit_interval(capsys):
    assert "delta=1.5 is outside [0, 1]" in error_line(capsys, ["synthetic", "--config", PANCAKES, "--deltas", "1,1.5"])


def test_dot_similarity_needs_a_bound_on_the_head(capsys):
    err = error_line(capsys, ["synthetic", "--config", PANCAKES, "--heads.infonce.similarity", "dot"])
    assert "set heads.optimizer.weight_decay > 0" in err


def test_r_larger_than_d(capsys, tmp_path):
    err = error_line(capsys, ["synthetic", "--config", PANCAKES, "--heads.r", "109", "--run_dir", str(tmp_path)])
    assert "heads.r=109 exceeds the feature dimension d=108" in err  # 100 + 8 quiet directions
    features = write_features(tmp_path / "f.npz", np.random.default_rng(0), d=3)
    err = error_line(capsys, ["fit", "--data.source", "npz", "--data.path", str(features), "--heads.r", "4"])
    assert "heads.r=4 exceeds the feature dimension d=3" in err


def test_fewer_than_two_classes(capsys, tmp_path):
    features = write_features(tmp_path / "one.npz", np.random.default_rng(0), classes=1)
    err = error_line(capsys, ["fit", "--data.source", "npz", "--data.path", str(features), "--heads.r", "2"])
    assert "1 class(es)" in err and "at least 2 classes" in err


def test_nan_features(capsys, tmp_path):
    path = write_features(tmp_path / "nan.npz", np.random.default_rng(0))
    arrays = dict(np.load(path))
    arrays["x_test"][5, 2] = np.nan
    arrays["x_test"][7, 0] = np.inf
    np.savez(path, **arrays)
    err = error_line(capsys, ["fit", "--data.source", "npz", "--data.path", str(path), "--heads.r", "2"])
    assert "test split has 2 feature rows with NaN or inf" in err


def test_unknown_config_key_lists_the_valid_keys(capsys, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("heads:\n  r: 3\n  temperature: 0.1\n")
    err = error_line(capsys, ["synthetic", "--config", str(config)])
    assert "unknown config key 'heads.temperature'" in err
    assert "methods, r, epochs, batch_size" in err
    config.write_text("data:\n  synthetic:\n    dims: 3\n")
    assert "valid keys in section 'data.synthetic': preset, d, k" in error_line(capsys, ["synthetic", "--config", str(config)])
    config.write_text("sedes: [0]\n")
    assert "'sedes'; valid keys in the top level: name, seeds" in error_line(capsys, ["synthetic", "--config", str(config)])


def test_unknown_choice_lists_the_valid_ones(capsys):
    err = error_line(capsys, ["synthetic", "--config", PANCAKES, "--heads.methods", "[infonce,byol]"])
    assert "heads.methods: 'byol' is not one of infonce, simsiam" in err


def test_missing_config_file(capsys, tmp_path):
    err = error_line(capsys, ["synthetic", "--config", str(tmp_path / "nope.yaml")])
    assert f"config file {tmp_path / 'nope.yaml'} does not exist" in err


def test_yaml_syntax_error_names_the_file_and_the_line(capsys, tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("name: broken\nheads:\n  r: [3\n  epochs: 2\n")
    err = error_line(capsys, ["synthetic", "--config", str(config)])
    assert f"config file {config} is not valid YAML at line 4, column 9: expected ',' or ']'" in err
    section = tmp_path / "heads.yaml"
    section.write_text("r: 3\n\tepochs: 2\n")
    err = error_line(capsys, ["synthetic", "--config", PANCAKES, f"--heads={section}"])
    assert f"config file {section} is not valid YAML at line 2, column 1" in err
    config.write_bytes(b"\xffname: x\n")
    assert f"config file {config} is not UTF-8 text" in error_line(capsys, ["synthetic", "--config", str(config)])


def test_cuda_requested_on_a_machine_without_cuda(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    common = ["synthetic", "--config", PANCAKES, "--run_dir", str(tmp_path)]
    err = error_line(capsys, [*common, "--score.probe.device", "cuda"])
    assert "score.probe.device=cuda but no CUDA device is visible" in err
    err = error_line(capsys, [*common, "--heads.trainer.accelerator", "gpu"])
    assert "heads.trainer.accelerator=gpu but no CUDA device is visible" in err
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_run_dir_that_is_a_file_is_refused_in_one_line(capsys, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("not a run")
    err = error_line(capsys, ["synthetic", "--config", PANCAKES, "--run_dir", str(taken)])
    assert f"run_dir {taken} is a file, not a directory" in err
    err = error_line(capsys, ["score", "--config", PANCAKES, "--run_dir", str(taken / "run")])
    assert f"run_dir {taken / 'run'} cannot be created: {taken} is a file" in err
    assert taken.read_text() == "not a run"


def test_score_without_heads(capsys, tmp_path):
    err = error_line(capsys, ["score", "--config", PANCAKES, "--run_dir", str(tmp_path)])
    assert "missing fitted head(s) infonce_delta1_seed0, infonce_delta1_seed1" in err


@pytest.mark.slow
def test_fit_then_score_through_the_run_directory(capsys, tmp_path):
    features = write_features(tmp_path / "f.npz", np.random.default_rng(1))
    run_dir = tmp_path / "run"
    common = ["--data.source", "npz", "--data.path", str(features), "--heads.r", "2", "--deltas", "1,0", "--run_dir", str(run_dir), *FAST]
    assert main(["fit", *common]) == 0
    heads = sorted(p.name for p in (run_dir / "heads").glob("*.safetensors"))
    assert heads == [f"{m}_delta{d}_seed0.safetensors" for m in ("infonce", "simsiam") for d in ("0", "1")]
    assert not (run_dir / "results.json").exists()
    assert main(["score", *common]) == 0
    records = json.loads((run_dir / "results.json").read_text())
    assert {(r["method"], r["delta"]) for r in records} == {
        ("infonce", 1.0), ("infonce", 0.0), ("simsiam", 1.0), ("simsiam", 0.0),
        ("lda", None), ("pca", None), ("random", None), ("raw", None),
    }
    assert all(r["data"] == "real" and r["dataset"] == "f" and r["features"].startswith("npz-") for r in records)
    table = capsys.readouterr().out
    assert "infonce" in table and "fisher_cos2" in table and "fisher_energy" not in table
    import matplotlib.pyplot as plt

    figure = plt.imread(run_dir / "delta_sweep.png")  # three panels side by side: fisher_cos2, nmi, probe_acc
    assert figure.ndim == 3 and figure.shape[1] > 2.5 * figure.shape[0]
    assert not list(run_dir.glob("*.tmp*"))
    # the run's config.yaml (with its provenance) is a valid config: re-scoring from it gives the same numbers
    (run_dir / "results.json").unlink()
    assert main(["score", "--config", str(run_dir / "config.yaml")]) == 0
    rescored = json.loads((run_dir / "results.json").read_text())

    def untimed(rows: list[dict]) -> list[dict]:  # baselines are re-fitted, so only their timing differs
        return [{k: v for k, v in row.items() if k != "fit_seconds"} for row in rows]

    assert untimed(rescored) == untimed(records)
    # scoring a subset of the fitted heads reads just those; heads fitted with other settings are refused
    assert main(["score", *common, "--deltas", "1", "--wide"]) == 0
    assert {r["delta"] for r in json.loads((run_dir / "results.json").read_text())} == {1.0, None}
    wide_table = capsys.readouterr().out
    assert "fisher_energy" in wide_table and "fit_seconds" in wide_table
    config = (run_dir / "config.yaml").read_bytes()
    assert "fitted with other settings" in error_line(capsys, ["score", *common, "--heads.epochs", "3"])
    # heads fitted on other features are refused, not silently scored
    other = write_features(tmp_path / "other.npz", np.random.default_rng(2))
    common[common.index(str(features))] = str(other)
    err = error_line(capsys, ["score", *common])
    assert "was fitted on features npz-" in err and "re-run `ssl-pipeline fit`" in err
    # a refused score writes nothing: config.yaml still describes the heads and results.json
    assert (run_dir / "config.yaml").read_bytes() == config


def test_console_script_reports_errors_without_traceback(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ssl-pipeline"), "synthetic", "--config", PANCAKES, "--deltas", "-0.1"],
        capture_output=True, text=True, env=env,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["ssl-pipeline: error: delta=-0.1 is outside [0, 1]; δ is the probability that a positive shares the anchor's class"]


@pytest.mark.slow
def test_ctrl_c_while_fitting_keeps_the_finished_heads_and_exits_130(tmp_path):
    config = tmp_path / "interrupt.yaml"  # the first head takes one epoch, the second would take hours
    config.write_text(
        "name: interrupt\nseeds: [0]\ndeltas: [1.0, 0.5]\n"
        "data: {source: synthetic, synthetic: {d: 8, k: 3, n_train: 600, n_val: 60, n_test: 60}}\n"
        "heads: {methods: [infonce], r: 2, epochs: 1, batch_size: 64, per_delta: [{delta: 0.5, epochs: 1000000}]}\n"
    )
    run_dir = tmp_path / "run"
    first = run_dir / "heads" / "infonce_delta1_seed0.safetensors"
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "ssl-pipeline"), "fit", "--config", str(config), "--run_dir", str(run_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background shell may ignore SIGINT
    )
    try:
        deadline = time.monotonic() + 120
        while not first.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the first head was never saved"
            time.sleep(0.05)
        time.sleep(1.0)  # inside the second head's trainer.fit
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == (
        f"ssl-pipeline: interrupted; kept the 1 head finished before it in {run_dir / 'heads'} (infonce_delta1_seed0); "
        "infonce_delta0.5_seed0 was not saved; to resume from the last finished epoch, run it again with "
        f"--config {run_dir / 'config.yaml'}"
    )
    assert "Traceback" not in err
    assert [p.name for p in (run_dir / "heads").iterdir()] == [first.name]


def test_every_shipped_config_parses_and_validates():
    from ssl_pipeline.cli import parse_command

    from ssl_pipeline.config import read_groups

    configs = sorted(p for p in ROOT.glob("configs/**/*.yaml") if not {"wandb_sweeps", "groups"} & set(p.parts))
    assert len(configs) >= 7
    for config in configs:
        command, cfg, _ = parse_command(["run", "--config", str(config)])
        assert cfg.name and min(cfg.heads.axis("r")) >= 1
    for groups in sorted(ROOT.glob("configs/groups/*.yaml")):  # the groups files a config names (data.dataset.groups)
        assert len(set(read_groups(str(groups)).values())) >= 2


def test_missing_cifar_names_the_path_and_the_download_option_before_any_model(capsys, tmp_path, monkeypatch):
    from ssl_pipeline import backbones

    monkeypatch.setattr(backbones, "describe_backbone", lambda *a: pytest.fail("the dataset is checked first"))
    err = error_line(capsys, ["extract", "--config", str(ROOT / "configs" / "cifar100_clip_vitb32.yaml"),
                              "--data.dataset.download", "false", "--data.dataset.root", str(tmp_path)])
    assert str(tmp_path / "cifar-100-python") in err and "data.dataset.download=true" in err


def test_unreachable_clip_weights_fail_fast_suggesting_a_local_checkpoint(capsys, tmp_path, monkeypatch):
    from fake_datasets import register_cifar100_md5, write_cifar100

    register_cifar100_md5(monkeypatch, write_cifar100(tmp_path, 100, 100, seed=0))
    err = error_line(capsys, ["run", "--config", str(ROOT / "configs" / "cifar100_clip_vitb32.yaml"), "--data.dataset.download", "false",
                              "--data.dataset.root", str(tmp_path), "--data.extract.cache_root", str(tmp_path / "c")])
    assert "open_clip weights ViT-B-32:openai" in err and "data.backbone.checkpoint=PATH" in err
    assert not (tmp_path / "c").exists(), "nothing is written before the weights are known to be reachable"


def test_unknown_backbone_lists_the_valid_names(capsys):
    err = error_line(capsys, ["extract", "--config", str(ROOT / "configs" / "default.yaml"), "--data.backbone.kind", "torchvision",
                              "--data.backbone.name", "resnet5"])
    assert "unknown torchvision model 'resnet5'" in err and "resnet50" in err


def test_extract_refuses_a_source_without_images(capsys):
    err = error_line(capsys, ["extract", "--config", PANCAKES])
    assert "data.source: images" in err


def test_cache_commands_list_verify_and_clean(capsys, tmp_path):
    import numpy as np

    from ssl_pipeline.features.cache import FeatureCache
    from ssl_pipeline.features.shards import open_writer

    cache = FeatureCache(tmp_path)
    with open_writer(cache, "a" * 20, {"dataset": {"name": "digits", "split": "train"}}, 4, 4) as writer:
        writer.write_shard(0, np.ones((4, 3), np.float32), np.arange(4), np.arange(4))
        writer.finalize({"dataset": "digits", "split": "train", "backbone": "b"})
    with open_writer(cache, "b" * 20, {"dataset": {"name": "digits", "split": "test"}}, 8, 4) as writer:
        writer.write_shard(0, np.ones((4, 3), np.float32), np.arange(4), np.arange(4))
    assert main(["cache", "list", "--root", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert "aaaaaaaa" in listing and "bbbbbbbb" in listing and "digits" in listing
    assert main(["cache", "verify", "--root", str(tmp_path), "a" * 20]) == 0
    assert main(["cache", "clean", "--root", str(tmp_path), "--partial"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["a" * 20]
