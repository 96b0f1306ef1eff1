"""The IDX file format (MNIST's): reading one file, raw or gzip-compressed, into a numpy array."""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

IDX_DTYPES: dict[int, tuple[str, np.dtype]] = {
    0x08: ("unsigned byte", np.dtype(">u1")),
    0x09: ("signed byte", np.dtype(">i1")),
    0x0B: ("int16", np.dtype(">i2")),
    0x0C: ("int32", np.dtype(">i4")),
    0x0D: ("float32", np.dtype(">f4")),
    0x0E: ("float64", np.dtype(">f8")),
}


def read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it starts with the gzip magic bytes."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ValueError(
            f"{path}: broken gzip stream ({exc}); the file is truncated or corrupt, re-download it"
        ) from None


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (raw or gzip-compressed) into a native-endian numpy array.

    Format (big-endian): two zero bytes, a dtype code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions d, then d uint32 sizes, then the values row-major.

    Args:
        path: the file.

    Returns:
        Array of shape ``(size_1, ..., size_d)``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: bad magic number, truncated header or data, or bytes after the data.
    """
    path = Path(path)
    return parse_idx(read_bytes(path), path)


def parse_idx(data: bytes, path: Path) -> np.ndarray:
    """The array held by ``data``, the decompressed content of the IDX file ``path`` (named in errors); see
    :func:`read_idx`."""
    if len(data) < 4:
        raise ValueError(
            f"{path}: truncated: {len(data)} bytes, an IDX header needs at least 4; re-download it"
        )
    zero, code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or code not in IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"{path}: not an IDX file: magic number 0x{data[:4].hex()}, expected two zero bytes, "
            "a type code (08, 09, 0b, 0c, 0d or 0e) and a dimension count, "
            "e.g. 0x00000803 for images, 0x00000801 for labels"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"{path}: truncated: header of {ndim} dimensions needs {header} bytes, "
            f"found {len(data)}; re-download it"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    type_name, dtype = IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    found = len(data) - header
    shape = "×".join(map(str, dims))
    if found != expected:
        problem = "truncated: " if found < expected else ""
        extra = " (extra bytes)" if found > expected else ""
        raise ValueError(
            f"{path}: {problem}header promises {shape} {type_name} values = {expected} bytes, "
            f"found {found}{extra}; re-download it"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def check_kind(array: np.ndarray, path: Path, kind: str) -> np.ndarray:
    """``array`` (read from ``path``) if it is an MNIST-family images (idx3) or labels (idx1) array of uint8."""
    ndim = 3 if kind == "images" else 1
    if array.ndim != ndim or array.dtype != np.uint8:
        raise ValueError(
            f"{path}: expected an idx{ndim} unsigned-byte {kind} file (magic 0x0000080{ndim}), "
            f"found {array.ndim} dimensions of {array.dtype}"
        )
    return array
