"""Extraction as ranks of a Lightning process group, on CPU with gloo: two ranks write the same bytes as one
process, a killed rank's shards survive and another rank count completes the entry, the torchrun and SLURM
scripts run, and devices that are not there are refused before any work.

DDP runs in subprocesses with a clean environment (no PYTEST_*, MASTER_*, LOCAL_RANK leaking from pytest, where
Lightning's launcher would re-launch pytest itself) and one thread per process, so the ranks and the one-process
reference run the same kernels."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from fake_datasets import write_image_folder
from rich.console import Console

from ssl_pipeline.config import BackboneConfig, DataConfig, DatasetConfig, ExtractConfig
from ssl_pipeline.errors import ConfigError
from ssl_pipeline.features.source import extract_all

REPO = Path(__file__).resolve().parents[1]
QUIET = Console(quiet=True)
EXTRACT = dict(batch_size=8, shard_size=16, num_workers=0)  # 36 images per split: shards of 16, 16 and 4


def _images(tmp_path: Path) -> Path:
    write_image_folder(tmp_path / "images", ["cat", "dog", "eel"], 12, 40, seed=0)
    return tmp_path / "images"


def _data(images: Path, cache_root: Path, **extract) -> DataConfig:
    return DataConfig(
        source="images", dataset=DatasetConfig(name="imagefolder", root=str(images)),
        backbone=BackboneConfig(kind="torchvision", name="resnet18", pretrained=None, image_size=32, device="cpu"),
        extract=ExtractConfig(cache_root=str(cache_root), **EXTRACT, **extract),
    )


def _arguments(images: Path, cache_root: Path) -> list[str]:
    return [
        "extract", "--data.source", "images", "--data.dataset.name", "imagefolder", "--data.dataset.root", str(images),
        "--data.backbone.kind", "torchvision", "--data.backbone.name", "resnet18", "--data.backbone.image_size", "32",
        "--data.backbone.device", "cpu", "--data.extract.batch_size", "8", "--data.extract.shard_size", "16",
        "--data.extract.num_workers", "0", "--data.extract.cache_root", str(cache_root),
    ]


def _config_file(tmp_path: Path, images: Path, cache_root: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: tiny
        data:
          source: images
          dataset: {{name: imagefolder, root: {images}}}
          backbone: {{kind: torchvision, name: resnet18, image_size: 32, device: cpu}}
          extract: {{batch_size: 8, shard_size: 16, num_workers: 0, cache_root: {cache_root}}}
        """))
    return path


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh shell: nothing of pytest's, one thread per process, W&B off."""
    keep = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ}
    return {**keep, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            **extra}


def _run(command: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _digests(root: Path) -> dict[str, str]:
    return {p.parent.name + "/" + p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.glob("*/*.npy"))}


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _reference(images: Path, root: Path) -> dict[str, str]:
    """Digests of the one-process extraction (in this process, one thread)."""
    extract_all(_data(images, root), QUIET)
    return _digests(root)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_write_the_entry_of_one_process_bit_for_bit(tmp_path, one_thread):
    images = _images(tmp_path)
    result = _run([sys.executable, "-m", "ssl_pipeline.cli", *_arguments(images, tmp_path / "two"),
                   "--data.extract.devices", "2"], _clean_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert "extracting with 2 processes on 1 node(s) (LightningEnvironment, cpu)" in result.stdout
    reference = _reference(images, tmp_path / "one")
    assert len(reference) == 6 and _digests(tmp_path / "two") == reference
    manifests = [p.read_text() for p in (tmp_path / "two").glob("*/manifest.json")]
    assert all('"processes": 2' in m and '"images": 36' in m for m in manifests)
    leftovers = [p.name for p in (tmp_path / "two").glob("*/*") if p.name.startswith(".lock-") or p.is_dir()]
    assert leftovers == []  # no holder records, no shards left behind


KILL_RANK_1 = """
import os, signal, sys
from ssl_pipeline.features import shards
if os.environ.get("LOCAL_RANK") == "1":  # rank 1 dies once its first shard is on disk and recorded
    write = shards.ShardWriter.write_shard
    def write_then_die(self, *args):
        write(self, *args)
        os.kill(os.getpid(), signal.SIGKILL)
    shards.ShardWriter.write_shard = write_then_die
from ssl_pipeline.cli import main
sys.exit(main())
"""


@pytest.mark.slow
def test_a_killed_rank_leaves_its_shards_and_one_process_completes_the_entry(tmp_path, one_thread):
    """Rank 1 of 2 is SIGKILLed after its first train shard (shard 1); the job stops with nothing consolidated.
    A rerun as one process keeps the finished shards, encodes only the others, and writes the reference bytes."""
    images = _images(tmp_path)
    script = tmp_path / "extract_killing_rank1.py"
    script.write_text(KILL_RANK_1)
    killed = tmp_path / "killed"
    result = _run([sys.executable, str(script), *_arguments(images, killed), "--data.extract.devices", "2"],
                  _clean_env())
    assert result.returncode != 0
    [entry] = killed.iterdir()  # the train entry; test was never started
    assert not (entry / "manifest.json").exists()
    assert (entry / "shards" / "shard-00001.json").is_file()  # rank 1's finished shard survived its death
    rerun = extract_all(_data(images, killed), QUIET)
    timing = rerun["train"].manifest["timing"]
    assert timing["images"] < 36, f"the rerun must resume, not start over: {timing}"
    assert _digests(killed) == _reference(images, tmp_path / "one")


@pytest.mark.slow
def test_torchrun_script_extracts_on_two_cpu_processes(tmp_path, one_thread):
    images = _images(tmp_path)
    config = _config_file(tmp_path, images, tmp_path / "torchrun")
    result = _run(["bash", "scripts/extract_torchrun.sh", str(config)],
                  _clean_env(NPROC="2", PYTHON=sys.executable))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "extracting with 2 processes on 1 node(s) (TorchElasticEnvironment, cpu)" in result.stdout
    assert _digests(tmp_path / "torchrun") == _reference(images, tmp_path / "one")


@pytest.mark.slow
def test_slurm_template_parses_and_runs_one_task_under_an_emulated_slurm(tmp_path, one_thread):
    """``bash -n``, then the job script itself with SLURM's variables for one task on one node and an ``srun``
    that runs its command (its options dropped): Lightning must pick SLURMEnvironment."""
    assert _run(["bash", "-n", "scripts/extract_slurm.sbatch"], _clean_env()).returncode == 0
    images = _images(tmp_path)
    config = _config_file(tmp_path, images, tmp_path / "slurm")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/usr/bin/env bash\nwhile [[ "$1" == -* ]]; do shift; done\nexec "$@"\n')
    (bin_dir / "srun").chmod(0o755)
    slurm = dict(SLURM_JOB_ID="4242", SLURM_JOB_NAME="ssl-extract", SLURM_NTASKS="1", SLURM_NTASKS_PER_NODE="1",
                 SLURM_NNODES="1", SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0", SLURM_NODELIST="localhost",
                 SLURM_SUBMIT_DIR=str(REPO), MASTER_PORT=str(_free_port()))
    env = _clean_env(**slurm, CONFIG=str(config), SSL_PIPELINE=str(Path(sys.executable).parent / "ssl-pipeline"))
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    result = _run(["bash", "scripts/extract_slurm.sbatch"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "extracting with 1 process on 1 node(s) (SLURMEnvironment, cpu)" in result.stdout
    assert _digests(tmp_path / "slurm") == _reference(images, tmp_path / "one")


def test_devices_that_are_not_there_are_refused_in_one_line_before_any_work(tmp_path, monkeypatch):
    """More devices than GPUs, a single GPU named for several ranks, MPS: one ConfigError each, no backbone
    built, no cache entry started."""
    from ssl_pipeline import backbones

    images = _images(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(backbones, "load_backbone", lambda *a, **k: pytest.fail("the backbone was built"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    data = _data(images, tmp_path / "features", devices=2)
    expected = {
        "cuda": "data.extract.devices=2 but only 1 CUDA device is visible on this node (CUDA_VISIBLE_DEVICES=0); "
                "set data.extract.devices to at most 1",
        "cuda:0": "data.backbone.device=cuda:0 names one GPU",
        "mps": "data.backbone.device=mps has one device",
    }
    for device, message in expected.items():
        data.backbone.device = device
        with pytest.raises(ConfigError) as error:
            extract_all(data, QUIET)
        assert str(error.value).startswith(message) and "\n" not in str(error.value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    data.backbone.device = "cuda"
    with pytest.raises(ConfigError, match="data.backbone.device=cuda but no CUDA device is visible"):
        extract_all(data, QUIET)
    assert not (tmp_path / "features").exists()


def test_ranks_started_by_lightning_re_running_another_command_are_refused_in_one_line(tmp_path, monkeypatch):
    """Lightning's launcher re-runs ``sys.argv`` for the further ranks: for ``run`` (or pytest) that would fit heads
    (or run tests) in every copy, so only ``extract`` may start them; nothing is started or written."""
    monkeypatch.setattr(sys, "argv", ["/venv/bin/ssl-pipeline", "run", "--config", "configs/default.yaml"])
    data = _data(_images(tmp_path), tmp_path / "features", devices=2)
    with pytest.raises(ConfigError) as error:
        extract_all(data, QUIET)
    assert str(error.value).startswith(
        "data.extract.devices=2 makes Lightning start 1 more process(es) that re-run this whole command (ssl-pipeline "
        "run --config …), not only its extraction; extract first with `ssl-pipeline extract`")
    assert "LOCAL_RANK" not in os.environ and not (tmp_path / "features").exists()


@pytest.mark.parametrize("fields, message", [
    ({"devices": 0}, "data.extract.devices=0 must be at least 1"),
    ({"num_nodes": 0}, "data.extract.num_nodes=0 must be at least 1"),
    ({"strategy": "ddp_spawn"}, "data.extract.strategy='ddp_spawn' must be one of auto, ddp"),
    ({"dtype": "bfloat16"}, "data.extract.dtype='bfloat16' must be one of float32, float16"),
])
def test_extraction_settings_out_of_range_are_refused_in_one_line(fields, message):
    with pytest.raises(ConfigError) as error:
        ExtractConfig(**fields).validate()
    assert str(error.value) == message
