"""Labelled image datasets for feature extraction: scikit-learn digits, CIFAR-10/100 and ImageFolder.

Each split is an ``ImageSplit`` whose item i is (uint8 image [3, H, W] after ``transform``, label, i). A dataset
without a test split (digits; an ImageFolder without a test folder) gets a seeded, stratified ``test_fraction``
carved from its images: train is the remainder. ``ImageSplit.identity`` is what a feature cache is keyed by.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import struct
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Optional
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from torchvision.datasets.utils import check_integrity
from torchvision.transforms.functional import pil_to_tensor

from ssl_pipeline.config import DatasetConfig
from ssl_pipeline.data.labelled import stratified_split
from ssl_pipeline.errors import ConfigError, DataError

Split = Literal["train", "test"]
ImageTransform = Callable[[torch.Tensor], torch.Tensor]

_CIFAR: dict[str, tuple[str, type[CIFAR10]]] = {"cifar10": ("CIFAR-10", CIFAR10), "cifar100": ("CIFAR-100", CIFAR100)}
# How PIL reports an unreadable file: OSError (UnidentifiedImageError, truncation), SyntaxError (broken PNG
# chunks), ValueError or struct.error (bad headers), DecompressionBombError (absurd declared size).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, struct.error, Image.DecompressionBombError)


@dataclass(eq=False)
class ImageSplit(Dataset):
    """One split of an image dataset: item i → (image uint8 [3, H, W] after ``transform``, label, i).

    Images come from ``pixels`` (array datasets) or ``paths`` (ImageFolder), both in the dataset's own source
    order and read at ``indices[i]``. An unreadable file yields (zeros uint8 [3, 1, 1] after ``transform``, −1, i)
    instead of raising inside a DataLoader worker; ``describe(i)`` names the file.
    """

    name: str
    split: str
    labels: np.ndarray
    """int64 [N], in item order."""
    indices: np.ndarray
    """int64 [N]: each item's position in the source order (CIFAR array row, load_digits() row, sorted file list)."""
    class_names: list[str]
    identity: dict
    """JSON-able key of this split's content (name, split, size, carve, file checksums); no absolute paths."""
    transform: Optional[ImageTransform] = None
    source: str = ""
    """What ``indices`` index, for ``describe``: e.g. ``cifar100 train`` or ``load_digits()``."""
    pixels: Optional[np.ndarray] = field(default=None, repr=False)
    """Array datasets: all source images [M, H, W, 3] uint8."""
    paths: Optional[list[str]] = field(default=None, repr=False)
    """ImageFolder: all source image files, sorted by class then name."""

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        position = int(self.indices[i])
        label = int(self.labels[i])
        if self.pixels is not None:
            image = torch.from_numpy(np.array(self.pixels[position].transpose(2, 0, 1)))
        else:
            try:
                with Image.open(self.paths[position]) as file:
                    image = pil_to_tensor(file.convert("RGB"))
            except _DECODE_ERRORS:
                image, label = torch.zeros(3, 1, 1, dtype=torch.uint8), -1
        if self.transform is not None:
            # The sentinel goes through the transform too, so a batch holding it still collates.
            image = self.transform(image)
        return image, label, i

    def describe(self, i: int) -> str:
        """Where item i comes from: its file for ImageFolder, else e.g. ``cifar100 train row 123``."""
        position = int(self.indices[i])
        return self.paths[position] if self.paths is not None else f"{self.source} row {position}"


def unreadable_images(split: ImageSplit, threads: int = 8) -> list[tuple[str, str]]:
    """(file, reason) of every image file of ``split`` whose header PIL cannot read, in item order; [] for array
    datasets (CIFAR, digits), which have no files.

    Cheap, no pixel is decoded: ``Image.open`` identifies the format and parses the header (size, mode),
    ``verify`` walks a PNG's chunks checking their CRCs (about 30 µs a JPEG, 100 µs a 256² PNG on a local disk:
    1–3 % of decoding them). What passes can still fail to decode — a JPEG whose compressed data is cut short —
    and is then found during extraction. Threads overlap the per-file latency of network file systems.
    """
    if split.paths is None:
        return []
    files = [split.paths[int(position)] for position in split.indices]

    def check(chunk: list[str]) -> list[tuple[str, str]]:
        bad = []
        for path in chunk:
            try:
                with Image.open(path) as file:
                    file.verify()
            except _DECODE_ERRORS as error:
                reason = "not an image PIL can identify" if isinstance(error, UnidentifiedImageError) else error
                bad.append((path, _one_line(reason)))
        return bad

    chunks = [files[start:start + 512] for start in range(0, len(files), 512)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return [item for bad in pool.map(check, chunks) for item in bad]


def check_available(cfg: DatasetConfig) -> None:
    """Raise DataError with one line if the dataset cannot be read; download CIFAR first when ``cfg.download``.

    Cheap: no image is decoded (CIFAR files are checked against torchvision's md5 sums).
    """
    if cfg.name == "digits":
        return
    if cfg.name in _CIFAR:
        if cfg.download:
            _download_cifar(cfg)
        _check_cifar_files(cfg)
    elif cfg.name == "imagefolder":
        _folder_classes(cfg)
    else:
        raise _unknown_dataset(cfg)


def load_split(
    cfg: DatasetConfig, split: Split, split_seed: int, transform: Optional[ImageTransform] = None
) -> ImageSplit:
    """The ``split`` of ``cfg``'s dataset; ``split_seed`` seeds the carve of a missing test split."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}: expected 'train' or 'test'")
    if cfg.name == "digits":
        return _digits(cfg, split, split_seed, transform)
    if cfg.name in _CIFAR:
        return _cifar(cfg, split, transform)
    if cfg.name == "imagefolder":
        return _image_folder(cfg, split, split_seed, transform)
    raise _unknown_dataset(cfg)


def _unknown_dataset(cfg: DatasetConfig) -> ConfigError:
    return ConfigError(f"data.dataset.name={cfg.name!r} is not one of digits, cifar10, cifar100, imagefolder")


def _digits(cfg: DatasetConfig, split: Split, split_seed: int, transform: Optional[ImageTransform]) -> ImageSplit:
    """scikit-learn's 8×8 digits (values 0..16) as uint8 RGB, with the test split carved."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    train, test = stratified_split(labels, cfg.test_fraction, split_seed)
    chosen = train if split == "train" else test
    return ImageSplit(
        name="digits", split=split, labels=labels[chosen], indices=chosen.astype(np.int64),
        class_names=[str(k) for k in range(10)],
        identity=_identity("digits", split, len(chosen), carve=("load_digits", cfg.test_fraction, split_seed)),
        transform=transform, source="load_digits()", pixels=np.repeat(grey[..., None], 3, axis=-1),
    )


def _cifar(cfg: DatasetConfig, split: Split, transform: Optional[ImageTransform]) -> ImageSplit:
    """torchvision's CIFAR loader (md5 checks on); images straight from its [N, 32, 32, 3] array."""
    _, dataset_class = _CIFAR[cfg.name]
    # check_available has already downloaded it when cfg.download is set.
    try:  # torchvision checks the md5 sums itself; check_available turns a failure into the precise line
        dataset = dataset_class(root=cfg.root, train=split == "train", download=False)
    except RuntimeError:
        check_available(cfg)
        raise
    files = dataset_class.train_list if split == "train" else dataset_class.test_list
    identity = _identity(cfg.name, split, len(dataset.data))
    identity["files_md5"] = {filename: md5 for filename, md5 in files}
    return ImageSplit(
        name=cfg.name, split=split, labels=np.asarray(dataset.targets, dtype=np.int64),
        indices=np.arange(len(dataset.data), dtype=np.int64), class_names=list(dataset.classes), identity=identity,
        transform=transform, source=f"{cfg.name} {split}", pixels=dataset.data,
    )


def _image_folder(cfg: DatasetConfig, split: Split, split_seed: int, transform: Optional[ImageTransform]) -> ImageSplit:
    """root/<train_dir>/<class>/<image> and root/<test_dir>/<class>/<image>, or test carved from train, or
    ImageNet's flat test_dir labelled by the devkit (``imagenet_devkit``)."""
    classes, test_folder = _folder_classes(cfg)
    class_to_index = {name: k for k, name in enumerate(classes)}
    if split == "test" and test_folder is not None and _is_flat(test_folder):
        return _imagenet_flat_val(cfg, test_folder, classes, transform)
    folder = test_folder if split == "test" and test_folder is not None else Path(cfg.root) / cfg.train_dir
    try:
        samples = make_dataset(str(folder), class_to_index, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as error:
        raise DataError(f"imagefolder {folder}: {error}; every class folder needs at least one image") from error
    paths = [path for path, _ in samples]
    labels = np.array([label for _, label in samples], dtype=np.int64)
    chosen, carve = np.arange(len(paths), dtype=np.int64), None
    if test_folder is None:
        carve = (cfg.train_dir, cfg.test_fraction, split_seed)
        try:
            train, test = stratified_split(labels, cfg.test_fraction, split_seed)
        except ValueError as error:
            raise DataError(
                f"cannot carve a stratified test_fraction={cfg.test_fraction} from {folder} ({error}); "
                "add images or a test folder (data.dataset.test_dir)"
            ) from error
        chosen = (train if split == "train" else test).astype(np.int64)
    identity = _identity("imagefolder", split, len(chosen), carve)
    identity["files_sha256"] = _files_sha256([paths[k] for k in chosen], Path(cfg.root))
    return ImageSplit(
        name="imagefolder", split=split, labels=labels[chosen], indices=chosen, class_names=classes,
        identity=identity, transform=transform, source=str(folder), paths=paths,
    )


def _identity(name: str, split: str, size: int, carve: Optional[tuple[str, float, int]] = None) -> dict:
    identity: dict = {"name": name, "split": split, "num_items": size}
    if carve is not None:
        identity.update(zip(("carved_from", "test_fraction", "split_seed"), carve, strict=True))
    return identity


def _files_sha256(paths: list[str], root: Path) -> str:
    """sha256 over the sorted (path relative to ``root``, size in bytes) list: a moved dataset keeps its key."""
    entries = sorted((Path(os.path.relpath(path, root)).as_posix(), os.path.getsize(path)) for path in paths)
    digest = hashlib.sha256()
    for relative, size in entries:
        digest.update(f"{relative}\t{size}\n".encode())
    return digest.hexdigest()


def _folder_classes(cfg: DatasetConfig) -> tuple[list[str], Optional[Path]]:
    """The class folders of train_dir (equal to test_dir's) and the test folder, None when it is to be carved."""
    root, train_folder = Path(cfg.root), Path(cfg.root) / cfg.train_dir
    layout = f"expected {root}/{cfg.train_dir}/<class>/<image>"
    if not train_folder.is_dir():
        missing = root if not root.is_dir() else train_folder
        raise DataError(
            f"imagefolder: {missing} not found ({layout}); "
            "set data.dataset.root or data.dataset.train_dir to your images"
        )
    classes = _class_folders(train_folder, layout)
    test_folder = root / cfg.test_dir if cfg.test_dir is not None else None
    if test_folder is None or not test_folder.is_dir():
        return classes, None
    if _is_flat(test_folder):
        if cfg.imagenet_devkit is None:
            raise DataError(
                f"imagefolder: {test_folder} holds images but no class folders (ImageNet's official val layout?); set "
                "data.dataset.imagenet_devkit to the ILSVRC2012 devkit to label them from its ground truth, or move "
                "them into one folder per class (README, 'GPUs and clusters')"
            )
        _devkit_val_wnids(Path(cfg.imagenet_devkit))
        return classes, test_folder
    test_classes = _class_folders(test_folder, f"expected {test_folder}/<class>/<image>")
    if test_classes != classes:
        only_train, only_test = sorted(set(classes) - set(test_classes)), sorted(set(test_classes) - set(classes))
        raise DataError(
            f"imagefolder: class folders differ between {train_folder} and {test_folder} "
            f"(only in {cfg.train_dir}: {only_train}; only in {cfg.test_dir}: {only_test}); give both the same classes"
        )
    return classes, test_folder


def _is_flat(folder: Path) -> bool:
    """A folder of image files without class subfolders (ImageNet's official validation images)."""
    entries = list(os.scandir(folder))
    return not any(entry.is_dir() for entry in entries) and any(
        entry.name.lower().endswith(IMG_EXTENSIONS) for entry in entries
    )


_DEVKIT_FILES = ("data/ILSVRC2012_validation_ground_truth.txt", "data/meta.mat")
_VAL_IMAGE = re.compile(r"ILSVRC2012_val_(\d{8})\.[A-Za-z]+")


@functools.cache
def _devkit_val_wnids(devkit: Path) -> tuple[tuple[str, ...], str]:
    """(WordNet id of official validation image n at n − 1, sha256 of the ground truth file) from the ILSVRC2012
    devkit, a folder or its ``.tar.gz``: ``data/ILSVRC2012_validation_ground_truth.txt`` holds one ILSVRC2012_ID
    per image, ``data/meta.mat``'s leaf synsets map those ids to WordNet ids (as torchvision's ImageNet does)."""
    from scipy.io import loadmat

    contents = {}
    try:
        if devkit.is_file():
            with tarfile.open(devkit) as archive:
                names = {name.split("/", 1)[-1]: name for name in archive.getnames()}
                for wanted in _DEVKIT_FILES:
                    member = archive.extractfile(names[wanted]) if wanted in names else None
                    contents[wanted] = member.read() if member is not None else None
        else:
            for wanted in _DEVKIT_FILES:
                contents[wanted] = (devkit / wanted).read_bytes() if (devkit / wanted).is_file() else None
    except (OSError, tarfile.TarError) as error:
        raise DataError(f"data.dataset.imagenet_devkit={devkit}: cannot read it ({_one_line(error)}); give the "
                        "ILSVRC2012_devkit_t12 folder or ILSVRC2012_devkit_t12.tar.gz") from None
    missing = [name for name, data in contents.items() if data is None]
    if missing:
        raise DataError(f"data.dataset.imagenet_devkit={devkit} has no {missing[0]}; give the ILSVRC2012_devkit_t12 "
                        "folder or ILSVRC2012_devkit_t12.tar.gz")
    truth = contents[_DEVKIT_FILES[0]]
    synsets = loadmat(io.BytesIO(contents[_DEVKIT_FILES[1]]), squeeze_me=True)["synsets"]
    leaves = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}
    ids = [int(line) for line in truth.split()]
    unknown = sorted(set(ids) - set(leaves))
    if unknown:
        raise DataError(f"data.dataset.imagenet_devkit={devkit}: the ground truth names ILSVRC2012_ID {unknown[0]}, "
                        "which meta.mat does not list as a class; is it the ILSVRC2012 devkit?")
    return tuple(leaves[i] for i in ids), hashlib.sha256(truth).hexdigest()


def _imagenet_flat_val(cfg: DatasetConfig, folder: Path, classes: list[str],
                       transform: Optional[ImageTransform]) -> ImageSplit:
    """The official validation images (``ILSVRC2012_val_00000001.JPEG`` …, one flat folder) labelled by the
    devkit's ground truth; the class index of WordNet id ``n01440764`` is that of the train folder of that name."""
    wnids, truth_sha256 = _devkit_val_wnids(Path(cfg.imagenet_devkit))
    class_to_index = {name: k for k, name in enumerate(classes)}
    paths = sorted(str(path) for path in folder.iterdir() if path.name.lower().endswith(IMG_EXTENSIONS))
    labels = []
    for path in paths:
        match = _VAL_IMAGE.fullmatch(Path(path).name)
        number = int(match.group(1)) if match else 0
        if not 1 <= number <= len(wnids):
            raise DataError(f"imagefolder: {path} is not one of the devkit's {len(wnids)} validation images "
                            "(ILSVRC2012_val_00000001.JPEG …); keep only the official validation images in "
                            f"{folder}")
        if wnids[number - 1] not in class_to_index:
            raise DataError(f"imagefolder: {path} is of class {wnids[number - 1]} (devkit ground truth), which has no "
                            f"folder in {Path(cfg.root) / cfg.train_dir}; give the train folders their WordNet ids")
        labels.append(class_to_index[wnids[number - 1]])
    identity = _identity("imagefolder", "test", len(paths))
    identity["files_sha256"] = _files_sha256(paths, Path(cfg.root))
    identity["labels_from"] = {"imagenet_devkit_ground_truth_sha256": truth_sha256}
    return ImageSplit(
        name="imagefolder", split="test", labels=np.asarray(labels, dtype=np.int64),
        indices=np.arange(len(paths), dtype=np.int64), class_names=classes, identity=identity,
        transform=transform, source=str(folder), paths=paths,
    )


def _class_folders(folder: Path, layout: str) -> list[str]:
    try:
        classes, _ = find_classes(folder)
    except FileNotFoundError as error:
        raise DataError(f"imagefolder: no class folders in {folder} ({layout})") from error
    return classes


def _cifar_files(dataset_class: type[CIFAR10]) -> list[tuple[str, str]]:
    """(file name, md5) of every file torchvision's loader checks, as currently registered on the class."""
    meta = dataset_class.meta
    return [(filename, md5) for filename, md5 in dataset_class.train_list + dataset_class.test_list] + [
        (meta["filename"], meta["md5"])
    ]


def _check_cifar_files(cfg: DatasetConfig) -> None:
    label, dataset_class = _CIFAR[cfg.name]
    folder = Path(cfg.root) / dataset_class.base_folder
    fix = "set data.dataset.download=true to download it (needs internet) or data.dataset.root to where it is"
    if not folder.is_dir():
        raise DataError(f"{label} not found under {cfg.root} (expected {folder}); {fix}")
    for filename, md5 in _cifar_files(dataset_class):
        path = folder / filename
        if not path.is_file():
            raise DataError(f"{label} under {cfg.root} is incomplete: {path} is missing; {fix}")
        if not check_integrity(str(path), md5):
            raise DataError(
                f"{label} file {path} fails its md5 check (corrupt or partial download); "
                f"delete {folder} and set data.dataset.download=true to download it again (needs internet)"
            )


def _download_cifar(cfg: DatasetConfig) -> None:
    """torchvision's own download (a no-op when the files are already there and intact)."""
    label, dataset_class = _CIFAR[cfg.name]
    try:
        dataset_class(root=cfg.root, train=False, download=True)
    except OSError as error:  # urllib's URLError and socket failures are OSErrors
        host = urlparse(dataset_class.url).hostname
        raise DataError(
            f"downloading {label} from {dataset_class.url} failed ({_one_line(error)}); it needs internet access "
            f"to {host}, or download and extract {dataset_class.filename} under {cfg.root} yourself"
        ) from error
    except RuntimeError as error:
        raise DataError(
            f"{label} downloaded to {cfg.root} fails torchvision's md5 check ({_one_line(error)}); "
            f"delete {Path(cfg.root) / dataset_class.base_folder} and {dataset_class.filename} there and retry"
        ) from error


def _one_line(error: BaseException | str) -> str:
    return " ".join(str(error).split())


def cifar100_coarse_labels(cfg: DatasetConfig, split: Split, indices: np.ndarray) -> np.ndarray:
    """CIFAR-100's 20 coarse labels of the listed rows of ``split``, read from the dataset's own files (torchvision
    exposes only the fine ones; its files are Python pickles, read the way torchvision reads them)."""
    import pickle

    _, dataset_class = _CIFAR["cifar100"]
    name = (dataset_class.train_list if split == "train" else dataset_class.test_list)[0][0]
    path = Path(cfg.root) / dataset_class.base_folder / name
    try:
        with open(path, "rb") as file:
            coarse = np.asarray(pickle.load(file, encoding="latin1")["coarse_labels"], dtype=np.int64)
    except (OSError, KeyError, pickle.UnpicklingError) as error:
        raise DataError(f"cannot read CIFAR-100's coarse labels from {path} ({error}); re-download the dataset") from None
    return coarse[np.asarray(indices)]


def require_grouped(groups: dict[str, int], class_names: list[str], path: str) -> None:
    """DataError naming the first class the groups file (``config.read_groups``) does not list."""
    missing = [name for name in class_names if name not in groups]
    if missing:
        raise DataError(f"data.dataset.groups={path!r} does not list class {missing[0]!r}"
                        f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; put every class in a group")


def group_labels(groups: dict[str, int], class_names: list[str], labels: np.ndarray, path: str) -> np.ndarray:
    """The group index of every label (``config.read_groups``; every class listed: ``require_grouped``)."""
    require_grouped(groups, class_names, path)
    return np.array([groups[name] for name in class_names], dtype=np.int64)[np.asarray(labels)]

