"""Small generated datasets in the real on-disk formats, for tests (``from fake_datasets import ...``).

CIFAR-10/100: pickles laid out as the originals, read by torchvision's own loader; ``register_cifar*_md5``
registers their md5 sums on the torchvision class so its integrity check passes (and still runs).
ImageFolder: PNG and JPEG files under ``root/<split>/<class>/``. In both, an image's colour is set by its
class plus pixel noise, so features of any backbone are class-informative.
"""

from __future__ import annotations

import colorsys
import hashlib
import pickle
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torchvision
from PIL import Image


def class_colour(k: int, num_classes: int) -> np.ndarray:
    """RGB uint8 [3] of class k: hues evenly spaced around the colour wheel."""
    return np.rint(np.array(colorsys.hsv_to_rgb(k / num_classes, 0.8, 0.9)) * 255).astype(np.uint8)


def class_images(labels: np.ndarray, num_classes: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Images [N, size, size, 3] uint8: each label's colour plus uniform noise in [−24, 24]."""
    colours = np.stack([class_colour(k, num_classes) for k in range(num_classes)]).astype(np.int16)
    noise = rng.integers(-24, 25, size=(len(labels), size, size, 3), dtype=np.int16)
    return np.clip(colours[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)


def cifar_arrays(
    n: int, num_classes: int, seed: int, split: Literal["train", "test"]
) -> tuple[np.ndarray, np.ndarray]:
    """The images [n, 32, 32, 3] uint8 and labels [n] int64 that ``write_cifar*`` writes for ``split``."""
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    return class_images(labels, num_classes, 32, rng), labels


def write_cifar100(root: Path, n_train: int, n_test: int, seed: int) -> dict[str, str]:
    """Write ``root/cifar-100-python/{train,test,meta}``; return {file name: md5}.

    Fine labels as in ``cifar_arrays(n, 100, seed, split)``; coarse label = fine // 5; names ``fine_k``/``coarse_k``.
    """
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = cifar_arrays(n, 100, seed, split)
        _dump(folder / split, {
            "filenames": [f"{split}_{i:05d}.png" for i in range(n)], "batch_label": f"{split} batch",
            "fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist(), "data": _cifar_rows(images),
        })
    _dump(folder / "meta", {
        "fine_label_names": [f"fine_{k}" for k in range(100)], "coarse_label_names": [f"coarse_{k}" for k in range(20)],
    })
    return _md5s(folder, ["train", "test", "meta"])


def write_cifar10(root: Path, n_train: int, n_test: int, seed: int) -> dict[str, str]:
    """Write ``root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``; return {file name: md5}.

    Labels as in ``cifar_arrays(n, 10, seed, split)``, train rows split in order over the five batches;
    class names ``class_k``.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = cifar_arrays(n_train, 10, seed, "train")
    batches = [f"data_batch_{b}" for b in range(1, 6)]
    for name, rows in zip(batches, np.array_split(np.arange(n_train), 5), strict=True):
        _dump(folder / name, {
            "batch_label": name, "labels": labels[rows].tolist(), "data": _cifar_rows(images[rows]),
            "filenames": [f"train_{i:05d}.png" for i in rows],
        })
    images, labels = cifar_arrays(n_test, 10, seed, "test")
    _dump(folder / "test_batch", {
        "batch_label": "test batch", "labels": labels.tolist(), "data": _cifar_rows(images),
        "filenames": [f"test_{i:05d}.png" for i in range(n_test)],
    })
    _dump(folder / "batches.meta", {"label_names": [f"class_{k}" for k in range(10)], "num_vis": 3072})
    return _md5s(folder, batches + ["test_batch", "batches.meta"])


def register_cifar100_md5(monkeypatch: pytest.MonkeyPatch, md5s: dict[str, str]) -> None:
    """Make torchvision's CIFAR100 expect these files' md5 sums (its integrity check itself stays)."""
    cls = torchvision.datasets.CIFAR100
    monkeypatch.setattr(cls, "train_list", [["train", md5s["train"]]])
    monkeypatch.setattr(cls, "test_list", [["test", md5s["test"]]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5s["meta"]})


def register_cifar10_md5(monkeypatch: pytest.MonkeyPatch, md5s: dict[str, str]) -> None:
    """Make torchvision's CIFAR10 expect these files' md5 sums (its integrity check itself stays)."""
    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[f"data_batch_{b}", md5s[f"data_batch_{b}"]] for b in range(1, 6)])
    monkeypatch.setattr(cls, "test_list", [["test_batch", md5s["test_batch"]]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5s["batches.meta"]})


def write_image_folder(
    root: Path, classes: list[str], per_class: int, size: int, seed: int, splits: tuple[str, ...] = ("train", "val")
) -> None:
    """Write ``root/<split>/<class>/<class>_<i>.{png,jpg}`` (even i PNG, odd i JPEG), images [size, size] RGB."""
    for s, split in enumerate(splits):
        rng = np.random.default_rng([seed, s])
        for k, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            images = class_images(np.full(per_class, k), len(classes), size, rng)
            for i, image in enumerate(images):
                Image.fromarray(image).save(folder / f"{name}_{i:03d}.{'png' if i % 2 == 0 else 'jpg'}")


def corrupt_file(path: Path, how: Literal["garbage", "truncate"] = "garbage") -> None:
    """Make an image unreadable: replace it with non-image bytes, or cut it to half its length."""
    data = path.read_bytes()
    path.write_bytes(b"this is not an image\n" * 4 if how == "garbage" else data[: len(data) // 2])


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    """[N, 32, 32, 3] → CIFAR's [N, 3072] rows: the red plane, then green, then blue, each row-major."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(len(images), 3072)


def _dump(path: Path, entry: dict) -> None:
    # str keys: torchvision unpickles with encoding="latin1", under which the originals' Python 2 str keys
    # (b"data" when read with encoding="bytes") come back as str.
    path.write_bytes(pickle.dumps(entry, protocol=2))


def _md5s(folder: Path, names: list[str]) -> dict[str, str]:
    return {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in names}
