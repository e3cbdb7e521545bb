"""Labelled feature splits: what every head, baseline and score consumes.

File-backed sources (``npz``, the image feature cache) give ``FeatureRows`` splits (``data.rows``): the memory
map of the file and each split's row indices, read in chunks by every consumer; in-memory sources (synthetic
data, surrogates) give ndarrays. ``LabelledFeatures.statistics`` keeps each split's class statistics (one chunked
float64 pass), so the references, baselines and checks of a run share them."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, TypeVar

import numpy as np

from ssl_pipeline.data.rows import ArrayLike, FeatureRows, all_finite, open_npz
from ssl_pipeline.errors import DataError

T = TypeVar("T")


@dataclass
class LabelledFeatures:
    """Train/val/test features [N, d] with integer labels [N] in 0..K−1.

    Each ``x_*`` is an ndarray (float32; synthetic data, surrogates) or a ``data.rows.FeatureRows`` view of a
    memory-mapped file (its dtype: float16, float32 or float64), the same object for the life of the features (so
    ``id(features.x_train)`` keys caches). Code that needs a whole split calls ``np.asarray(x, np.float32)`` (one
    copy, at its request); scoring and the checks read ``data.rows.row_chunks`` instead.

    ``fisher_basis`` is the true Fisher subspace [d, q] when it is known (synthetic data); otherwise scores use
    the one estimated on train (``theory.subspaces.fisher_estimate``). ``text_features`` (CLIP backbones) give the zero-shot classifier.
    """

    x_train: ArrayLike
    y_train: np.ndarray
    x_val: ArrayLike
    y_val: np.ndarray
    x_test: ArrayLike
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
    by the shared label (CLIP heads: ``PairedFeatures.view``); None otherwise."""
    views: Optional[dict[str, Any]] = None
    """The augmented views of the train images by recipe name (``data.views.ViewTable``; ``heads.pairs: views``),
    None when not extracted."""
    label: str = "label"
    """The name of the label y_* hold (what clustering, the probe, LDA and the Fisher subspace refer to)."""
    other_labels: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    """Further labels of the same points by name, each (train, val, test) [N] (``hierarchy``: ``coarse``; an npz's
    ``y_<name>_*`` arrays); ``choose_labels`` makes one of them the score label or the pair label."""
    label_references: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """The true (Fisher basis, class-mean basis) of each label where known (synthetic data with several labels)."""
    pair_label: Optional[str] = None
    """The label the δ-pairs share when it is not ``label`` (``heads.pair_label``), its (train, val) values in
    ``pair_y``; None: the pairs share ``label``."""
    pair_y: Optional[tuple[np.ndarray, np.ndarray]] = None
    sampled_from: Optional[dict[str, int]] = None
    """The split sizes these features were subsampled from (the GMM checks' bounded sample,
    ``checking.statistics.check_sample``); None when they are whole."""
    memo: dict[tuple, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    """Values derived from these features, computed once and kept for their life (``remember``): each split's class
    statistics, the heads' input statistics, spans and bases. A copy (``dataclasses.replace``) starts empty."""

    @property
    def dim(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_val.max(), self.y_test.max())) + 1

    def statistics(self, split: str = "train"):
        """``theory.subspaces.class_statistics`` of a split (counts, means, within-class covariance; float64, one
        chunked pass), computed once per features object and split and kept on it."""
        from ssl_pipeline.theory.subspaces import class_statistics

        x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
        kept = self.memo.get(("class_statistics", split))
        if kept is None or kept[0] is not x or kept[1] is not y:  # a split replaced since: computed again
            kept = self.memo["class_statistics", split] = (x, y, class_statistics(x, y, self.num_classes))
        return kept[2]

    @property
    def label_names(self) -> list[str]:
        """Every label these points carry, ``label`` first."""
        return [self.label, *self.other_labels]

    def pair_labels(self, split: str = "train") -> np.ndarray:
        """The labels the δ-pairs of ``split`` (train or val) share: ``pair_y``'s, else the split's own."""
        if self.pair_y is None:
            return getattr(self, f"y_{split}")
        return self.pair_y[("train", "val").index(split)]

    def remember(self, key: tuple, compute: Callable[[], T]) -> T:
        """``compute()`` the first time ``key`` is asked for, the kept value after (``memo``). Keys start with what
        is kept (``("input_span", …)``) and include ``id`` of the split it derives from."""
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]

    def validate(self) -> None:
        """Raise DataError with one clear line if the features cannot be used."""
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
                raise DataError(f"{split} split: features must be [N, d] and labels [N]; got {x.shape} and {y.shape}")
            if x.shape[1] != self.dim:
                raise DataError(f"{split} split has dimension {x.shape[1]} but train has {self.dim}")
            finite = all_finite(x)
            if not np.all(finite):
                bad = int(np.sum(~finite))
                raise DataError(f"{split} split has {bad} feature rows with NaN or inf; clean or re-extract the features")
            if len(y) and (y.min() < 0 or not np.issubdtype(y.dtype, np.integer)):
                raise DataError(f"{split} split: labels must be non-negative integers 0..K-1")
            for name, values in self.other_labels.items():
                other = values[("train", "val", "test").index(split)]
                if other.shape != y.shape or (len(other) and (other.min() < 0 or not np.issubdtype(other.dtype, np.integer))):
                    raise DataError(f"{split} split: label {name!r} must be non-negative integers, one per point "
                                    f"({len(y)}); got shape {other.shape}")
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


def stratified_subsample(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted row indices [≤ K·per_class]: a seeded random ``per_class`` rows of each class of y (every row of a
    smaller class)."""
    rng = np.random.default_rng([seed, 0x5AB5])
    order = np.argsort(y, kind="stable")
    counts = np.bincount(y)
    chosen = [rng.choice(rows, per_class, replace=False) if len(rows) > per_class else rows
              for rows in np.split(order, np.cumsum(counts)[:-1])]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def choose_labels(features: LabelledFeatures, pair_label: Optional[str], score_label: Optional[str]) -> LabelledFeatures:
    """``features`` with ``score_label`` in y_* (what clustering, the probe, LDA and the Fisher subspace refer to; its
    true subspaces where known) and ``pair_label``'s values as the labels the δ-pairs share (``pair_y``); None keeps
    the primary label. DataError naming the labels there are when one is missing. The same object when nothing
    changes (so its memo of statistics is kept)."""
    import dataclasses

    names = features.label_names
    for field_path, name in (("heads.pair_label", pair_label), ("score.label", score_label)):
        if name is not None and name not in names:
            raise DataError(f"{field_path}={name!r} is not a label of these data (they carry {', '.join(names)}); "
                            f"choose one of them or remove {field_path}")
    score = score_label or features.label
    pair = pair_label or features.label
    if score == features.label and pair == features.label:
        return features
    values = {features.label: (features.y_train, features.y_val, features.y_test), **features.other_labels}
    changes: dict[str, Any] = {}
    if score != features.label:
        fisher, means = features.label_references.get(score, (None, None))
        train, val, test = values[score]
        changes = dict(y_train=train, y_val=val, y_test=test, label=score, fisher_basis=fisher, means_basis=means,
                       other_labels={name: v for name, v in values.items() if name != score},
                       class_names=[f"{score}_{k}" for k in range(int(max(train.max(), val.max(), test.max())) + 1)])
    pairs = dict(pair_label=pair, pair_y=values[pair][:2]) if pair != score else {}
    return dataclasses.replace(features, **changes, **pairs)


def train_subsample(features: LabelledFeatures, per_class: Optional[int], seed: int) -> LabelledFeatures:
    """``features`` with a seeded, stratified ``per_class`` training points of each class of the score label
    (``data.train_per_class``; ``stratified_subsample``); val and test untouched, the pair labels, other labels and
    view rows cut alike, the features key extended so heads fitted on the subsample are not taken for others.
    DataError when a class has fewer training points; ``features`` itself for None."""
    import dataclasses

    if per_class is None:
        return features
    counts = np.bincount(features.y_train, minlength=features.num_classes)
    present = counts[counts > 0]
    if per_class > present.min():
        raise DataError(f"data.train_per_class={per_class} exceeds the smallest class of train ({int(present.min())} "
                        f"points of class {int(np.flatnonzero(counts == present.min())[0])}); choose at most "
                        f"{int(present.min())}")
    rows = stratified_subsample(features.y_train, per_class, seed)
    x = features.x_train
    x_train = FeatureRows(x.source, rows if x.index is None else x.index[rows], x.dtype) if isinstance(x, FeatureRows) \
        else np.asarray(x)[rows]
    changes: dict[str, Any] = dict(
        x_train=x_train, y_train=features.y_train[rows],
        other_labels={name: (v[0][rows], v[1], v[2]) for name, v in features.other_labels.items()},
        features_key=f"{features.features_key}:train_per_class={per_class}:seed={seed}",
    )
    if features.pair_y is not None:
        changes["pair_y"] = (features.pair_y[0][rows], features.pair_y[1])
    if features.views is not None:
        changes["views"] = {name: dataclasses.replace(view, train_images=view.train_images[rows])
                            for name, view in features.views.items()}
    return dataclasses.replace(features, **changes)


def split_rows(x: ArrayLike, index: Optional[np.ndarray]) -> ArrayLike:
    """Rows ``index`` of a file's array as a lazy ``FeatureRows`` view (``index`` None: all rows); an in-memory
    array (a compressed npz member) is indexed in memory as before."""
    if isinstance(x, np.memmap):  # rows read as float32 from a float64 file, as the features always were
        return FeatureRows(x, index, np.float32 if x.dtype.itemsize > 4 else None)
    x = np.asarray(x)
    return x if index is None else x[index]


def load_npz_features(path: str, name: Optional[str], val_fraction: float, split_seed: int) -> LabelledFeatures:
    """Labelled features from an ``.npz`` (arrays x_train, y_train, x_test, y_test, optional x_val, y_val; further
    labels as ``y_<name>_train``, ``y_<name>_test`` (and ``y_<name>_val`` with x_val): ``other_labels``).

    Members saved without compression (``numpy.savez``) are memory-mapped and every split is a ``FeatureRows``
    view of its array (val carved from train by index): nothing of the features is read into memory here but the
    finiteness check's chunks. Compressed members (``numpy.savez_compressed``) are read into memory (in their own
    dtype). Labels are read into memory."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"feature file {file} does not exist; give an .npz with x_train, y_train, x_test, y_test")
    try:
        arrays = open_npz(file)
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise DataError(f"cannot read {file} as an .npz without pickle ({error}); re-save it with numpy.savez") from error
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DataError(f"{file} lacks arrays {missing}; it has {sorted(arrays)}")
    y_train = np.asarray(arrays["y_train"])
    others = [key[2:-6] for key in arrays if key.startswith("y_") and key.endswith("_train") and key != "y_train"]
    for other in others:
        needed = [f"y_{other}_test"] + ([f"y_{other}_val"] if "x_val" in arrays else [])
        if any(key not in arrays for key in needed):
            raise DataError(f"{file} has y_{other}_train but lacks {', '.join(k for k in needed if k not in arrays)}; "
                            f"a label needs its values on every split")
    if "x_val" in arrays:
        x_train, x_val, y_val = split_rows(arrays["x_train"], None), split_rows(arrays["x_val"], None), arrays["y_val"]
        other_labels = {other: tuple(np.asarray(arrays[f"y_{other}_{s}"]) for s in ("train", "val", "test"))
                        for other in others}
    else:
        keep, carved = stratified_split(y_train, val_fraction, split_seed)
        x_train, x_val = split_rows(arrays["x_train"], keep), split_rows(arrays["x_train"], carved)
        y_train, y_val = y_train[keep], y_train[carved]
        other_labels = {other: (np.asarray(arrays[f"y_{other}_train"])[keep], np.asarray(arrays[f"y_{other}_train"])[carved],
                                np.asarray(arrays[f"y_{other}_test"])) for other in others}
    features = LabelledFeatures(
        x_train, y_train, x_val, np.asarray(y_val), split_rows(arrays["x_test"], None), np.asarray(arrays["y_test"]),
        dataset=name or file.stem, data_kind="real", split_seed=split_seed, other_labels=other_labels,
    )
    features.validate()
    return features
