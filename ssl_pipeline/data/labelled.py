"""Labelled feature splits: what every head, baseline and score consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np

from ssl_pipeline.errors import DataError


@dataclass
class LabelledFeatures:
    """Train/val/test features [N, d] (float32) with integer labels [N] in 0..K−1.

    ``fisher_basis`` is the true Fisher subspace [d, q] when it is known (synthetic data); otherwise scores use
    the one estimated on train (``theory.subspaces.fisher_estimate``). ``text_features`` (CLIP backbones) give the zero-shot classifier.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    dataset: str
    data_kind: Literal["synthetic", "real", "surrogate"]
    split_seed: int
    class_names: list[str] = field(default_factory=list)
    backbone: Optional[str] = None
    features_key: Optional[str] = None
    fisher_basis: Optional[np.ndarray] = None
    means_basis: Optional[np.ndarray] = None
    """The true class-mean subspace span{μ_k − μ̄} [d, q] when known (synthetic data); else estimated on train."""
    text_features: Optional[np.ndarray] = None
    """Text-tower embeddings of the class-name prompts [T·K, D] (template-major), for CLIP backbones."""
    paired: Optional[Any] = None
    """The two modalities (``data.multimodal.PairedFeatures``) when these are modality 1 of paired features labelled
    by the shared label (CLIP heads: ``heads.clip.modality_view``); None otherwise."""

    @property
    def dim(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_val.max(), self.y_test.max())) + 1

    def validate(self) -> None:
        """Raise DataError with one clear line if the features cannot be used."""
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
                raise DataError(f"{split} split: features must be [N, d] and labels [N]; got {x.shape} and {y.shape}")
            if x.shape[1] != self.dim:
                raise DataError(f"{split} split has dimension {x.shape[1]} but train has {self.dim}")
            if not np.all(np.isfinite(x)):
                bad = int(np.sum(~np.all(np.isfinite(x), axis=1)))
                raise DataError(f"{split} split has {bad} feature rows with NaN or inf; clean or re-extract the features")
            if len(y) and (y.min() < 0 or not np.issubdtype(y.dtype, np.integer)):
                raise DataError(f"{split} split: labels must be non-negative integers 0..K-1")
        classes, counts = np.unique(self.y_train, return_counts=True)
        if len(classes) < 2:
            raise DataError(f"train split has {len(classes)} class(es); δ-pairs and clustering need at least 2 classes")
        if counts.min() < 2:
            raise DataError(
                f"class {int(classes[counts.argmin()])} has {int(counts.min())} training sample; "
                "same-class positives need at least 2 per class"
            )


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of indices 0..N−1 into (keep, carved); ``fraction`` of each class is carved."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(y))
    keep, carved = train_test_split(indices, test_size=fraction, random_state=seed, stratify=y)
    return np.sort(keep), np.sort(carved)


def load_npz_features(path: str, name: Optional[str], val_fraction: float, split_seed: int) -> LabelledFeatures:
    """Labelled features from an ``.npz`` (arrays x_train, y_train, x_test, y_test, optional x_val, y_val)."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"feature file {file} does not exist; give an .npz with x_train, y_train, x_test, y_test")
    try:
        arrays = np.load(file, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise DataError(f"cannot read {file} as an .npz without pickle ({error}); re-save it with numpy.savez") from error
    with arrays:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays.files]
        if missing:
            raise DataError(f"{file} lacks arrays {missing}; it has {sorted(arrays.files)}")
        x_train, y_train = arrays["x_train"].astype(np.float32), arrays["y_train"]
        if "x_val" in arrays.files:
            x_val, y_val = arrays["x_val"].astype(np.float32), arrays["y_val"]
        else:
            keep, carved = stratified_split(y_train, val_fraction, split_seed)
            x_val, y_val = x_train[carved], y_train[carved]
            x_train, y_train = x_train[keep], y_train[keep]
        features = LabelledFeatures(
            x_train, y_train, x_val, y_val, arrays["x_test"].astype(np.float32), arrays["y_test"],
            dataset=name or file.stem, data_kind="real", split_seed=split_seed,
        )
    features.validate()
    return features
