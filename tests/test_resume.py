"""Resumable sweeps (issue 12, item 5): a fit killed mid-grid continues from its last finished epoch and ends with
weights bit-identical to an uninterrupted fit; finished heads are not fitted again; a run dir holding an
interrupted fit of another config is refused with one line."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_pipeline.cli import main
from ssl_pipeline.config import GMMConfig, HeadsConfig, TrainerConfig
from ssl_pipeline.data.synthetic import make_synthetic
from ssl_pipeline.heads import fit as fit_module
from ssl_pipeline.heads.fit import fit_grid, quiet_lightning
from ssl_pipeline.heads.fitted import FittedHead
from ssl_pipeline.heads.grid import GridCheckpoint
from ssl_pipeline.heads.settings import resolve_head_settings

CONFIG = (
    "name: resume\nseeds: [0, 1]\ndeltas: [1.0, 0.5]\n"
    "data: {source: synthetic, synthetic: {d: 8, k: 3, n_train: 600, n_val: 60, n_test: 60}}\n"
    "heads: {methods: [infonce, simsiam], r: 2, epochs: %d, batch_size: 64}\n"
)


def head_weights(run_dir: Path) -> dict[str, np.ndarray]:
    return {p.stem: FittedHead.load(p).weight for p in sorted((run_dir / "heads").glob("*.safetensors"))}


@pytest.mark.slow
def test_a_killed_fit_resumes_from_its_checkpoint_bit_identical_to_an_uninterrupted_fit(tmp_path):
    epochs = 150
    config = tmp_path / "resume.yaml"
    config.write_text(CONFIG % epochs)
    run_dir = tmp_path / "killed"
    checkpoint = run_dir / "checkpoints" / "grid0.ckpt"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "ssl-pipeline"), "fit", "--config", str(config), "--run_dir", str(run_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        deadline = time.monotonic() + 180
        while not checkpoint.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.01)
        time.sleep(0.3)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
    assert checkpoint.exists() and not list((run_dir / "heads").glob("*.safetensors")), "killed after it finished"
    done = torch.load(checkpoint, weights_only=True)["epoch"] + 1
    assert 1 <= done < epochs

    # resume the way the Ctrl-C message says: the run's own config.yaml
    assert main(["fit", "--config", str(run_dir / "config.yaml")]) == 0
    assert not checkpoint.exists()
    assert main(["fit", "--config", str(config), "--run_dir", str(tmp_path / "whole")]) == 0
    resumed, whole = head_weights(run_dir), head_weights(tmp_path / "whole")
    assert sorted(resumed) == sorted(whole) and len(whole) == 8
    for tag in whole:
        assert np.array_equal(resumed[tag], whole[tag]), tag


@pytest.fixture(scope="module")
def features():
    quiet_lightning()
    return make_synthetic(GMMConfig(d=12, k=3, n_train=600, n_val=120, n_test=60))


def test_a_resumed_grid_restores_early_stopping_and_best_weights(features, tmp_path, monkeypatch):
    heads = HeadsConfig(r=2, epochs=6, batch_size=128, early_stopping_patience=1)
    jobs = [
        resolve_head_settings(heads, "infonce", 1.0, 0),
        dataclasses.replace(resolve_head_settings(heads, "infonce", 0.0, 1), epochs=3),
        resolve_head_settings(heads, "simsiam", 0.5, 0),
        dataclasses.replace(resolve_head_settings(heads, "infonce", 0.5, 1), early_stopping_patience=None),
    ]
    trainer = TrainerConfig(precision="64-true", progress_bar=False)
    whole = fit_grid(features, jobs, trainer)
    path = tmp_path / "grid0.ckpt"
    original = GridCheckpoint.on_train_epoch_end

    def killed_after_epoch_3(self, trainer, module):
        original(self, trainer, module)
        if trainer.current_epoch == 2:
            raise RuntimeError("killed")

    monkeypatch.setattr(GridCheckpoint, "on_train_epoch_end", killed_after_epoch_3)
    monkeypatch.setattr(GridCheckpoint, "every_seconds", 0.0)  # a save after every epoch: the third is the last
    with pytest.raises(RuntimeError, match="killed"):
        fit_grid(features, jobs, trainer, checkpoint=path)
    monkeypatch.undo()
    state = torch.load(path, weights_only=True)["grid"]
    assert state["frozen"][1] and any(s is not None for s in state["best_state"])  # stopping state was saved
    resumed = fit_grid(features, jobs, trainer, checkpoint=path)
    assert not path.exists()
    for a, b in zip(whole, resumed):
        assert np.array_equal(a.weight, b.weight), a.settings.tag
        assert a.epochs_trained == b.epochs_trained


def test_finished_heads_are_not_fitted_again(tmp_path, monkeypatch):
    config = tmp_path / "resume.yaml"
    config.write_text(CONFIG % 2)
    run_dir = tmp_path / "run"
    assert main(["fit", "--config", str(config), "--run_dir", str(run_dir)]) == 0
    before = {p.name: p.stat().st_mtime_ns for p in (run_dir / "heads").iterdir()}
    monkeypatch.setattr(fit_module, "fit_grid", lambda *a, **k: pytest.fail("a finished head was fitted again"))
    assert main(["fit", "--config", str(config), "--run_dir", str(run_dir)]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "heads").iterdir()} == before


def test_resuming_with_another_config_is_refused_with_one_line(tmp_path, capsys):
    config = tmp_path / "resume.yaml"
    config.write_text(CONFIG % 2)
    run_dir = tmp_path / "run"
    assert main(["fit", "--config", str(config), "--run_dir", str(run_dir)]) == 0
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "grid0.ckpt").write_bytes(b"an interrupted grid")
    capsys.readouterr()
    assert main(["fit", "--config", str(config), "--run_dir", str(run_dir), "--heads.epochs", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"ssl-pipeline: error: run_dir {run_dir} holds an interrupted fit made with heads.epochs=2, this config gives 5; "
        f"resume with --config {run_dir / 'config.yaml'}, or delete {run_dir / 'checkpoints'} to start over"
    )
    assert "epochs: 2" in (run_dir / "config.yaml").read_text()  # the run's config is left as it was
