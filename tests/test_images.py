"""Image datasets: torchvision's real CIFAR loader on generated pickles, digits carves, ImageFolder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torchvision
from fake_datasets import (
    cifar_arrays,
    class_colour,
    corrupt_file,
    register_cifar10_md5,
    register_cifar100_md5,
    write_cifar10,
    write_cifar100,
    write_image_folder,
)
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader
from torchvision.transforms.v2.functional import resize

from ssl_pipeline.config import DatasetConfig
from ssl_pipeline.data.images import check_available, load_split, unreadable_images
from ssl_pipeline.errors import DataError

CIFAR = {
    "cifar100": (write_cifar100, register_cifar100_md5, torchvision.datasets.CIFAR100, 100, "fine_{}"),
    "cifar10": (write_cifar10, register_cifar10_md5, torchvision.datasets.CIFAR10, 10, "class_{}"),
}


def _one_line_error(call, *args) -> str:
    with pytest.raises(DataError) as caught:
        call(*args)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name", ["cifar100", "cifar10"])
def test_generated_cifar_read_by_torchvision_matches_what_was_written(tmp_path, monkeypatch, name):
    write, register, _, num_classes, class_name = CIFAR[name]
    md5s = write(tmp_path, n_train=130, n_test=40, seed=3)
    register(monkeypatch, md5s)
    cfg = DatasetConfig(name=name, root=str(tmp_path))
    check_available(cfg)
    for split, n in (("train", 130), ("test", 40)):
        images, labels = cifar_arrays(n, num_classes, 3, split)
        data = load_split(cfg, split, split_seed=0)
        assert len(data) == n
        np.testing.assert_array_equal(data.labels, labels)
        np.testing.assert_array_equal(data.indices, np.arange(n))
        assert data.class_names == [class_name.format(k) for k in range(num_classes)]
        for i in (0, 1, n - 1):
            image, label, index = data[i]
            assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
            np.testing.assert_array_equal(image.numpy(), images[i].transpose(2, 0, 1))
            assert (label, index) == (labels[i], i)
        assert data.describe(7) == f"{name} {split} row 7"
        assert data.identity["name"] == name and data.identity["split"] == split and data.identity["num_items"] == n
        assert set(data.identity["files_md5"].values()) <= set(md5s.values())
        assert str(tmp_path) not in json.dumps(data.identity)


def test_transform_is_applied_to_each_image(tmp_path, monkeypatch):
    register_cifar100_md5(monkeypatch, write_cifar100(tmp_path, n_train=20, n_test=10, seed=0))
    data = load_split(DatasetConfig(name="cifar100", root=str(tmp_path)), "test", 0, transform=lambda x: x[:, 4:20, :8])
    assert data[3][0].shape == (3, 16, 8)


@pytest.mark.parametrize("wrong", ["train", "meta"])
def test_cifar_md5_check_is_real(tmp_path, monkeypatch, wrong):
    md5s = write_cifar100(tmp_path, n_train=20, n_test=10, seed=0)
    register_cifar100_md5(monkeypatch, {**md5s, wrong: "0" * 32})
    cfg = DatasetConfig(name="cifar100", root=str(tmp_path))
    for call, args in ((check_available, (cfg,)), (load_split, (cfg, "test", 0))):
        message = _one_line_error(call, *args)
        assert "md5" in message and str(tmp_path / "cifar-100-python" / wrong) in message
        assert "data.dataset.download=true" in message


@pytest.mark.parametrize("name,folder", [("cifar100", "cifar-100-python"), ("cifar10", "cifar-10-batches-py")])
def test_missing_cifar_names_the_expected_folder_and_the_download_option(tmp_path, name, folder):
    cfg = DatasetConfig(name=name, root=str(tmp_path))
    for call, args in ((check_available, (cfg,)), (load_split, (cfg, "train", 0))):
        message = _one_line_error(call, *args)
        assert str(tmp_path / folder) in message and "data.dataset.download=true" in message


def test_cifar_download_failure_is_one_line_naming_the_host(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets.CIFAR100, "url", "http://127.0.0.1:9/cifar-100-python.tar.gz")
    message = _one_line_error(check_available, DatasetConfig(name="cifar100", root=str(tmp_path), download=True))
    assert "127.0.0.1" in message and "internet" in message


def test_download_true_does_not_fetch_intact_files(tmp_path, monkeypatch):
    register_cifar100_md5(monkeypatch, write_cifar100(tmp_path, n_train=20, n_test=10, seed=0))
    monkeypatch.setattr(torchvision.datasets.CIFAR100, "url", "http://127.0.0.1:9/cifar-100-python.tar.gz")
    cfg = DatasetConfig(name="cifar100", root=str(tmp_path), download=True)
    check_available(cfg)
    assert len(load_split(cfg, "train", 0)) == 20


def test_digits_are_the_real_images_carved_stratified_and_disjoint():
    cfg = DatasetConfig(name="digits", test_fraction=0.3)
    train, test = load_split(cfg, "train", 0), load_split(cfg, "test", 0)
    assert len(train) + len(test) == 1797
    assert np.intersect1d(train.indices, test.indices).size == 0
    assert np.all(np.diff(train.indices) > 0) and np.all(np.diff(test.indices) > 0)
    digits = load_digits()
    np.testing.assert_array_equal(test.labels, digits.target[test.indices])
    counts = np.bincount(digits.target, minlength=10)
    assert np.all(np.abs(np.bincount(test.labels, minlength=10) - 0.3 * counts) <= 1)
    image, label, index = test[5]
    expected = np.rint(digits.images[test.indices[5]] * 255 / 16).astype(np.uint8)
    assert image.shape == (3, 8, 8) and image.dtype == torch.uint8 and (label, index) == (test.labels[5], 5)
    for channel in image.numpy():
        np.testing.assert_array_equal(channel, expected)
    assert int(image.max()) == 255 and train.class_names == [str(k) for k in range(10)]
    assert test.describe(5) == f"load_digits() row {test.indices[5]}"


def test_digits_carve_is_seeded_and_part_of_the_identity():
    cfg = DatasetConfig(name="digits")
    first, again, other = (load_split(cfg, "test", seed) for seed in (0, 0, 1))
    np.testing.assert_array_equal(first.indices, again.indices)
    assert first.identity == again.identity
    assert not np.array_equal(first.indices, other.indices) and first.identity != other.identity
    smaller = load_split(DatasetConfig(name="digits", test_fraction=0.2), "test", 0)
    assert smaller.identity != first.identity and smaller.identity["test_fraction"] == 0.2
    assert first.identity["carved_from"] == "load_digits" and json.loads(json.dumps(first.identity)) == first.identity
    assert load_split(cfg, "train", 0).identity != first.identity


def test_image_folder_labels_and_class_names_come_from_folders(tmp_path):
    classes = ["cat", "dog", "emu"]
    write_image_folder(tmp_path, classes, per_class=4, size=12, seed=0)
    cfg = DatasetConfig(name="imagefolder", root=str(tmp_path))
    check_available(cfg)
    train, test = load_split(cfg, "train", 0), load_split(cfg, "test", 0)
    assert train.class_names == classes and test.class_names == classes
    np.testing.assert_array_equal(train.labels, np.repeat([0, 1, 2], 4))
    assert "carved_from" not in test.identity and test.describe(5) == str(tmp_path / "val" / "dog" / "dog_001.jpg")
    for i in range(len(train)):
        image, label, index = train[i]
        assert image.shape == (3, 12, 12) and image.dtype == torch.uint8 and index == i
        mean = image.double().mean(dim=(1, 2)).numpy()
        assert np.abs(mean - class_colour(label, 3)).max() < 12
    assert str(tmp_path) not in json.dumps(train.identity)


@pytest.mark.parametrize("test_dir", ["val", None])
def test_image_folder_without_test_folder_carves_a_stratified_test_split(tmp_path, test_dir):
    write_image_folder(tmp_path, ["a", "b"], per_class=10, size=8, seed=0, splits=("train",))
    cfg = DatasetConfig(name="imagefolder", root=str(tmp_path), test_dir=test_dir, test_fraction=0.3)
    train, test = load_split(cfg, "train", 4), load_split(cfg, "test", 4)
    assert (len(train), len(test)) == (14, 6)
    np.testing.assert_array_equal(np.bincount(test.labels), [3, 3])
    assert np.union1d(train.indices, test.indices).tolist() == list(range(20))
    assert test.identity["carved_from"] == "train" and test.identity["split_seed"] == 4
    first = train.indices[0]
    assert train.describe(0) == str(tmp_path / "train" / "a" / f"a_{first:03d}.{'png' if first % 2 == 0 else 'jpg'}")
    assert load_split(cfg, "test", 5).identity != test.identity


def test_image_folder_identity_follows_the_files_not_the_location(tmp_path):
    write_image_folder(tmp_path / "a", ["x", "y"], per_class=3, size=8, seed=0)
    shutil.copytree(tmp_path / "a", tmp_path / "b")

    def identity() -> dict:
        return load_split(DatasetConfig(name="imagefolder", root=str(tmp_path / "b")), "train", 0).identity

    original = identity()
    assert load_split(DatasetConfig(name="imagefolder", root=str(tmp_path / "a")), "train", 0).identity == original
    with open(tmp_path / "b" / "train" / "x" / "x_000.png", "ab") as file:
        file.write(b"\0")
    grown = identity()
    assert grown != original
    shutil.copy(tmp_path / "b" / "train" / "y" / "y_000.png", tmp_path / "b" / "train" / "y" / "y_new.png")
    added = identity()
    assert added not in (original, grown) and added["num_items"] == 7


@pytest.mark.parametrize("file,how", [("b_000.png", "garbage"), ("b_000.png", "truncate"), ("b_001.jpg", "truncate")])
def test_corrupt_image_yields_the_sentinel_and_describe_names_it(tmp_path, file, how):
    write_image_folder(tmp_path, ["a", "b"], per_class=3, size=16, seed=0)
    path = tmp_path / "train" / "b" / file
    corrupt_file(path, how)
    data = load_split(DatasetConfig(name="imagefolder", root=str(tmp_path)), "train", 0)
    bad = [i for i in range(len(data)) if data[i][1] == -1]
    assert len(bad) == 1 and data.describe(bad[0]) == str(path)
    image, _, index = data[bad[0]]
    assert index == bad[0] and torch.equal(image, torch.zeros(3, 1, 1, dtype=torch.uint8))
    data.transform = lambda x: resize(x, [8, 8])
    images, labels, indices = next(iter(DataLoader(data, batch_size=len(data))))
    assert images.shape == (6, 3, 8, 8) and labels.tolist().count(-1) == 1 and indices.tolist() == list(range(6))


def test_header_check_finds_non_images_and_cut_pngs_but_not_a_jpeg_cut_after_its_header(tmp_path):
    """``unreadable_images`` decodes no pixel: a JPEG whose compressed data is cut short passes it and is only
    found when decoded (the sentinel label −1), as the README says."""
    write_image_folder(tmp_path, ["a", "b"], per_class=4, size=64, seed=0, splits=("train",))
    garbage, cut_png, cut_jpeg = (tmp_path / "train" / name for name in ("a/a_002.png", "b/b_000.png", "b/b_001.jpg"))
    corrupt_file(garbage, "garbage")
    corrupt_file(cut_png, "truncate")
    cut_jpeg.write_bytes(cut_jpeg.read_bytes()[:-300])
    data = load_split(DatasetConfig(name="imagefolder", root=str(tmp_path), test_dir=None), "train", 0)
    found = unreadable_images(data)
    assert [path for path, _ in found] == sorted([str(garbage), str(cut_png)], key=data.paths.index)
    reasons = dict(found)
    assert reasons[str(garbage)] == "not an image PIL can identify" and reasons[str(cut_png)]
    failing_decode = [data.describe(i) for i in range(len(data)) if data[i][1] == -1]
    assert sorted(failing_decode) == sorted([str(garbage), str(cut_png), str(cut_jpeg)])
    assert unreadable_images(load_split(DatasetConfig(name="digits"), "test", 0)) == []


def test_mismatched_class_folders_are_refused_naming_the_difference(tmp_path):
    write_image_folder(tmp_path, ["a", "b", "c"], per_class=1, size=8, seed=0, splits=("train",))
    write_image_folder(tmp_path, ["a", "b", "d"], per_class=1, size=8, seed=0, splits=("val",))
    cfg = DatasetConfig(name="imagefolder", root=str(tmp_path))
    for call, args in ((check_available, (cfg,)), (load_split, (cfg, "train", 0))):
        message = _one_line_error(call, *args)
        assert "only in train: ['c']" in message and "only in val: ['d']" in message


def test_missing_image_folder_names_the_folder_and_the_layout(tmp_path):
    cfg = DatasetConfig(name="imagefolder", root=str(tmp_path), train_dir="training")
    message = _one_line_error(check_available, cfg)
    assert str(tmp_path / "training") in message and "<class>/<image>" in message
    message = _one_line_error(load_split, DatasetConfig(name="imagefolder", root=str(tmp_path / "nowhere")), "test", 0)
    assert str(tmp_path / "nowhere") in message and "data.dataset.root" in message
