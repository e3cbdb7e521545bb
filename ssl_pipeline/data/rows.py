"""Feature matrices that stay on disk: lazily indexed rows of a memory map, read in bounded chunks.

A labelled split of a file-backed source (``npz`` features, the image feature cache) is a ``FeatureRows``: the
memory map of the file's array and the sorted row indices of the split (None: every row, in order). Nothing is
read until a consumer asks for rows, and every statistic, projection and score of the pipeline reads them in
chunks of at most ``theory.chunks.CHUNK_BYTES`` of float64 (``row_chunks``), so scoring and the GMM checks hold
no copy of the feature matrix: the pages of the map belong to the page cache (RssFile), which the kernel reclaims, not to the
process's anonymous memory. The file's dtype is kept (float16, float32 or float64); chunks are converted.

``FeatureRows`` (``theory.chunks``, re-exported here) is array-like for code that needs a whole array: ``np.asarray(rows, dtype)`` materialises the
split (the one full copy, at the caller's request), ``rows[i]``, ``rows[a:b]`` and ``rows[index_array]`` gather
rows as ndarrays, ``shape``/``dtype``/``ndim``/``len`` describe it, ``rows.rows(index)`` is a view of a subset
and ``rows.chunks()`` yields float32 (or any dtype) blocks. In-memory splits (synthetic data, surrogates) stay
plain ndarrays; ``row_chunks`` and ``take_rows`` accept both.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ssl_pipeline.npz import npy_header
from ssl_pipeline.theory.chunks import (  # noqa: F401  (re-exported: one chunk size, one row view)
    ArrayLike,
    FeatureRows,
    chunk_rows,
    row_chunks,
    take_rows,
)


def all_finite(x: ArrayLike) -> np.ndarray:
    """[N] bool: rows of x whose every value is finite (read in chunks)."""
    finite = np.empty(len(x), dtype=bool)
    for start, block in row_chunks(x, None if isinstance(x, np.ndarray) else x.dtype):
        finite[start : start + len(block)] = np.all(np.isfinite(block), axis=1)
    return finite


def open_npz(path: Union[str, Path]) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` by name: read-only memory maps for members stored without compression
    (``numpy.savez``), in-memory arrays for compressed ones (``numpy.savez_compressed``: a deflated member cannot
    be mapped) and for 1-D members. Refuses object arrays (pickles) with ValueError, like ``np.load`` without
    ``allow_pickle``; raises ValueError/OSError for a file that is not an npz."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            name = info.filename[: -len(".npy")]
            if info.compress_type == zipfile.ZIP_STORED:
                mapped = _map_member(path, raw, info)
                if mapped is not None:
                    arrays[name] = mapped
                    continue
            with archive.open(info) as member:
                arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
    return arrays


def _map_member(path: Path, raw, info: zipfile.ZipInfo) -> Optional[np.ndarray]:
    """The memory map of a stored (uncompressed) member, or None when it is better read (1-D, Fortran order,
    empty)."""
    raw.seek(info.header_offset)
    header = raw.read(30)
    if header[:4] != b"PK\x03\x04":
        raise ValueError(f"{path}: bad local header of {info.filename}")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    raw.seek(info.header_offset + 30 + name_length + extra_length)
    header = npy_header(raw)
    if header is None:  # version 3.0 (utf-8 field names): rare enough to read
        return None
    shape, fortran, dtype = header
    if dtype.hasobject:
        raise ValueError(f"{info.filename} holds Python objects; cannot load it without pickle")
    if len(shape) != 2 or fortran or 0 in shape:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=raw.tell(), shape=shape, order="C")
