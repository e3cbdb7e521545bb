"""The one reader of ``.npy`` headers: shape, memory order and dtype of an array without reading its data.

Config validation uses it to check an ``.npz`` file's array shapes before any work (``npz_array_shapes``), and
``data.rows.open_npz`` to memory-map an uncompressed member in place. Both go through numpy's own header parser
(``numpy.lib.format``), so no pickle is ever involved and the two cannot disagree.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Optional, Union

if TYPE_CHECKING:
    import numpy as np


def npy_header(file: IO[bytes]) -> Optional[tuple[tuple[int, ...], bool, "np.dtype"]]:
    """(shape, Fortran order, dtype) of the ``.npy`` stream at ``file``'s position, the stream left at the first
    byte of the data; None for a header version numpy parses only privately (3.0: utf-8 field names of structured
    dtypes, never our feature arrays). ValueError when the stream is not an ``.npy``."""
    import numpy as np

    version = np.lib.format.read_magic(file)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(file)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(file)
    return None


def npz_array_shapes(path: Optional[Union[str, Path]]) -> Optional[dict[str, tuple[int, ...]]]:
    """{array name: shape} of an ``.npz`` read from its members' headers (``npy_header``; no array data is read);
    None when the file is missing or not a readable npz."""
    if path is None or not Path(path).is_file():
        return None
    shapes = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                with archive.open(member) as file:
                    header = npy_header(file)
                if header is None:
                    return None
                shapes[member[: -len(".npy")]] = tuple(header[0])
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return None
    return shapes
