"""A 2-D sample of test projections (``projections.npz`` in a run directory) for the report's scatter plots.

The file holds plain arrays only (no pickle): ``schema`` [1], ``methods`` [M] and ``class_names`` [K] (unicode),
``labels`` [n] (int64), ``normalized`` [M] (bool), ``dims`` [M] (how many of the 2 coordinates are real: a
projection with one output dimension gets a zero second coordinate) and ``z`` [M, n, 2] (float32): the first two
coordinates of each projection of the same n test points.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import numpy as np

from ssl_pipeline.atomic import atomic_write
from ssl_pipeline.errors import DataError

if TYPE_CHECKING:
    from ssl_pipeline.scoring.projections import Projection

SCHEMA = 1
KEYS = ("schema", "methods", "class_names", "labels", "normalized", "dims", "z")


class ProjectionSample(TypedDict):
    """What ``load_projection_sample`` returns: per method, z [n, 1 or 2] of the same test points."""

    labels: np.ndarray
    class_names: list[str]
    projections: dict[str, np.ndarray]
    normalized: dict[str, bool]


def stratified_subsample(labels: np.ndarray, max_points: int, seed: int) -> np.ndarray:
    """Sorted indices of at most about ``max_points`` points, each class keeping its share (at least one point),
    drawn at random with ``seed``; every index when there are no more than ``max_points`` points."""
    if len(labels) <= max_points:
        return np.arange(len(labels))
    order = np.random.default_rng(seed).permutation(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    quotas = np.maximum(1, counts * max_points // len(labels))
    chosen = [order[labels[order] == c][:quota] for c, quota in zip(classes, quotas)]
    return np.sort(np.concatenate(chosen))


def save_projection_sample(
    path: Path,
    x_test: np.ndarray,
    y_test: np.ndarray,
    projections: dict[str, Projection],
    class_names: list[str],
    max_points: int = 1500,
    seed: int = 0,
) -> Path:
    """Write the first two coordinates of z = ``projection.transform(x)`` for a seeded stratified subsample of
    the test points x [N, d] (the uncentred features a ``LabelledFeatures`` holds; every transform centres them
    with its training mean), L2-normalised first for cosine projections as they are clustered. Atomic (temp file
    + rename); returns ``path``."""
    from ssl_pipeline.scoring.score import l2_normalize

    if not projections:
        raise ValueError("save_projection_sample needs at least one projection")
    chosen = stratified_subsample(np.asarray(y_test), max_points, seed)
    x = x_test[chosen]
    z = np.zeros((len(projections), len(chosen), 2), dtype=np.float32)
    dims = np.zeros(len(projections), dtype=np.int64)
    for index, projection in enumerate(projections.values()):
        coordinates = np.asarray(projection.transform(x), dtype=np.float64)
        if projection.normalized:
            coordinates = l2_normalize(coordinates)
        dims[index] = min(2, coordinates.shape[1])
        z[index, :, : dims[index]] = coordinates[:, : dims[index]]
    arrays = {
        "schema": np.array([SCHEMA], dtype=np.int64),
        "methods": np.array(list(projections), dtype=np.str_),
        "class_names": np.array(class_names, dtype=np.str_),
        "labels": np.asarray(y_test)[chosen].astype(np.int64),
        "normalized": np.array([p.normalized for p in projections.values()], dtype=bool),
        "dims": dims,
        "z": z,
    }
    return atomic_write(path, lambda handle: np.savez_compressed(handle, **arrays))


def load_projection_sample(path: Path) -> ProjectionSample:
    """Read a file written by ``save_projection_sample`` (no pickle); DataError if it is not one."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in KEYS if key not in archive.files]
            if missing:
                raise DataError(f"{path} lacks {', '.join(missing)}; re-run `ssl-pipeline score` to rewrite it")
            arrays = {key: archive[key] for key in KEYS}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(f"{path} is not a readable projection sample ({error}); re-run `ssl-pipeline score`") from error
    if int(arrays["schema"][0]) != SCHEMA:
        raise DataError(f"{path} has schema {int(arrays['schema'][0])}, expected {SCHEMA}; re-run `ssl-pipeline score`")
    methods = [str(m) for m in arrays["methods"]]
    return ProjectionSample(
        labels=arrays["labels"],
        class_names=[str(name) for name in arrays["class_names"]],
        projections={m: arrays["z"][i, :, : int(arrays["dims"][i])] for i, m in enumerate(methods)},
        normalized={m: bool(arrays["normalized"][i]) for i, m in enumerate(methods)},
    )
