"""Row chunks of a feature matrix: how every statistic reads an [N, d] matrix without copying it whole, and
``FeatureRows``, a lazily indexed view of some rows of a matrix (a split of a memory-mapped file, a half of train).

``x`` may be an ndarray, a memory map, or any row-sliceable array-like (``data.rows.FeatureRows``: lazily indexed
rows of a file): ``x[a:b]`` must give an array of those rows. Results computed chunk by chunk equal the whole
computation up to float64 rounding, whatever ``CHUNK_BYTES`` is (tests/test_chunked.py runs them at a few rows
per chunk).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Optional, Union

import numpy as np

CHUNK_BYTES = 4 * 2**20
"""Bytes of one float64 chunk of rows (``chunk_rows``): 1,024 rows of 512 dimensions. Smaller chunks cost no time
(one class-statistics pass over 270k × 512 float32 took 8.4 s at 32 MiB, 8.1 s at 2 MiB) and keep the
temporaries, and what the allocator keeps of them, small (peak RssAnon of that pass +138 MB at 32 MiB, +42 MB at
8 MiB, +15 MB at 2 MiB)."""


def chunk_rows(width: int, itemsize: int = 8) -> int:
    """Rows per chunk of a [N, width] matrix: ``CHUNK_BYTES`` of ``itemsize``-byte values, at least one row."""
    return max(1, CHUNK_BYTES // max(1, width * itemsize))


def row_chunks(x: Any, dtype: Any = np.float64, size: Optional[int] = None) -> Iterator[tuple[int, np.ndarray]]:
    """(start, block) over consecutive row blocks of x [N, d], each block an ndarray of ``dtype`` (None: x's own)
    with at most ``size`` rows (default ``chunk_rows(d)``). Blocks are read-only to the consumer: a block may share
    memory with an in-memory x."""
    step = size or chunk_rows(int(x.shape[1]))
    for start in range(0, len(x), step):
        yield start, np.asarray(x[start : start + step], dtype=dtype)


class FeatureRows:
    """Rows ``index`` of a 2-D array ``source`` [N, d] (an ``np.memmap`` or any ndarray), read only when asked.

    ``index``: sorted int64 row numbers (a split of the file), or None for every row in order. ``shape`` is
    (len(index), d); ``dtype`` is the source's unless given (rows are then converted as they are read: the
    features of a float64 file are read as float32, as they always were). See the module docstring for the
    array protocol.
    """

    def __init__(self, source: np.ndarray, index: Optional[np.ndarray] = None, dtype: Any = None) -> None:
        if source.ndim != 2:
            raise ValueError(f"FeatureRows needs a 2-D source, got shape {source.shape}")
        self.source = source
        self.index = None if index is None else np.asarray(index, dtype=np.int64)
        self._dtype = np.dtype(dtype or source.dtype)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), int(self.source.shape[1]))

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def ndim(self) -> int:
        return 2

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return int(self.source.shape[0]) if self.index is None else len(self.index)

    def __repr__(self) -> str:
        where = "all rows" if self.index is None else f"{len(self.index)} indexed rows"
        return f"FeatureRows({self.shape[0]}×{self.shape[1]} {self.dtype} of {type(self.source).__name__}, {where})"

    def _gather(self, rows: Any) -> np.ndarray:
        picked = self.source[rows] if self.index is None else self.source[self.index[rows]]
        return np.asarray(picked).astype(self._dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        """Rows as an ndarray (a copy, or a memmap slice of contiguous rows): ``rows[i]``, ``rows[a:b]``,
        ``rows[index_array]``, ``rows[mask]``, ``rows[rows_key, cols_key]``."""
        if isinstance(key, tuple):
            rows, *rest = key
            return self[rows][(slice(None), *rest)] if not np.isscalar(rows) else self[rows][tuple(rest)]
        if isinstance(key, FeatureRows):
            raise TypeError("index FeatureRows with integer arrays, slices or masks")
        return self._gather(key)

    def rows(self, index: np.ndarray) -> FeatureRows:
        """The view of rows ``index`` (positions within this view), without reading them."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return FeatureRows(self.source, index if self.index is None else self.index[index], self._dtype)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = self._gather(slice(None))
        return np.array(array, dtype=dtype or array.dtype, copy=True)

    def astype(self, dtype: Any, copy: bool = True) -> np.ndarray:
        """The whole split as an ndarray of ``dtype`` (materialised)."""
        return np.asarray(self, dtype=dtype)

    def chunks(self, size: Optional[int] = None, dtype: Any = np.float32) -> Iterator[np.ndarray]:
        """Consecutive blocks of at most ``size`` rows (default ``chunk_rows``) as ``dtype`` ndarrays."""
        for _, block in row_chunks(self, dtype, size):
            yield block

    def mean(self, axis: int = 0, dtype: Any = None) -> np.ndarray:
        """Column means [d] (axis 0 only), accumulated in float64 chunks, returned as ``dtype`` (float64 by default)."""
        if axis != 0:
            raise ValueError("FeatureRows.mean supports axis=0 only")
        total = np.zeros(self.shape[1])
        for _, block in row_chunks(self, np.float64):
            total += block.sum(axis=0)
        return (total / max(len(self), 1)).astype(dtype or np.float64)


ArrayLike = Union[np.ndarray, FeatureRows]


def take_rows(x: ArrayLike, index: np.ndarray) -> FeatureRows:
    """A lazily indexed view of rows ``index`` of x (no copy for either kind of x)."""
    if isinstance(x, FeatureRows):
        return x.rows(index)
    return FeatureRows(x, np.asarray(index) if np.asarray(index).dtype != bool else np.flatnonzero(index))
