"""Files for the data tests, written independently of the readers: IDX files, CIFAR pickles, a fake server."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

MNIST_10K = Path(__file__).resolve().parents[3] / "shared/data/mnist-10k"
FASHION_PACKAGE = Path("/usr/share/datasets/fashion-mnist")  # where Debian's dataset-fashion-mnist installs it
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_IDX_CODES = {"uint8": 0x08, "int8": 0x09, "int16": 0x0B, "int32": 0x0C, "float32": 0x0D, "float64": 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding written independently of the reader: magic, big-endian dims, big-endian values."""
    header = bytes([0, 0, _IDX_CODES[array.dtype.name], array.ndim])
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    payload = idx_bytes(array)
    path = path.with_name(path.name + ".gz") if gz else path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def fake_images(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    """``n`` uint8 images of one kind.

    ``digits``: 28×28, the ink inside a box of at most 20×20 placed anywhere in the frame (MNIST's
    construction). ``clothing``: 28×28, a silhouette whose longest side is 28 pixels, the other 10..28, centred
    (Fashion-MNIST's construction) — a synthetic stand-in for tests that must not depend on an installed copy.
    ``noise``: 4×6 random bytes (for EMNIST, whose content is not checked).
    """
    if kind == "noise":
        return rng.integers(0, 256, size=(n, 4, 6), dtype=np.uint8)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for image in images:
        if kind == "digits":
            h, w = int(rng.integers(8, 21)), int(rng.integers(4, 21))
            top, left = int(rng.integers(0, 29 - h)), int(rng.integers(0, 29 - w))
        else:
            h, w = (28, int(rng.integers(10, 29))) if rng.random() < 0.5 else (int(rng.integers(10, 29)), 28)
            top, left = (28 - h) // 2, (28 - w) // 2
        image[top : top + h, left : left + w] = rng.integers(1, 256, size=(h, w), dtype=np.uint8)
    return images


def fake_mnist(
    directory: Path,
    *,
    prefix: str = "",
    test: str = "t10k",
    transpose: bool = False,
    label_offset: int = 0,
    gz: tuple[bool, bool, bool, bool] = (True, False, False, True),
    num_classes: int = 10,
    kind: str = "digits",
) -> dict[str, np.ndarray]:
    """Write 7 train and 3 test images of ``kind`` (see :func:`fake_images`) with labels; returns them."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": fake_images(rng, 7, kind),
        "y_train": rng.integers(0, num_classes, size=7).astype(np.uint8),
        "x_test": fake_images(rng, 3, kind),
        "y_test": rng.integers(0, num_classes, size=3).astype(np.uint8),
    }
    names = (
        f"{prefix}train-images-idx3-ubyte",
        f"{prefix}train-labels-idx1-ubyte",
        f"{prefix}{test}-images-idx3-ubyte",
        f"{prefix}{test}-labels-idx1-ubyte",
    )
    for (key, array), name, compress in zip(arrays.items(), names, gz, strict=True):
        stored = array.transpose(0, 2, 1).copy() if transpose and key.startswith("x") else array
        stored = stored + label_offset if key.startswith("y") else stored
        write_idx(directory / name, stored.astype(np.uint8), compress)
    return arrays


def need_mnist_10k() -> None:
    """Skip the calling test when the shared MNIST subset is not on this machine."""
    if not (MNIST_10K / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the shared MNIST subset is not on this machine (looked for {MNIST_10K})")


def gunzip_idx(folder: Path, name: str, offset: int) -> np.ndarray:
    """The bytes after the ``offset``-byte header of ``folder/name.gz``, as uint8."""
    with gzip.open(folder / f"{name}.gz", "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def cifar_pickle(
    data_array: np.ndarray, labels: dict[str, list[int]], numpy_core_name: bool = False
) -> bytes:
    """A batch as the original files hold it: bytes keys, a uint8 array and int lists (protocol 2)."""
    batch = {b"batch_label": b"test", b"data": data_array, **{k.encode(): v for k, v in labels.items()}}
    raw = pickle.dumps(batch, protocol=2)
    if numpy_core_name:  # the original Python 2 files name numpy.core.multiarray
        raw = raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    return raw


def fake_cifar10(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(12, 3072), dtype=np.uint8)
    y = rng.integers(0, 10, size=12)
    directory.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        chunk = slice(2 * i, 2 * i + 2)
        (directory / name).write_bytes(
            cifar_pickle(x[chunk], {"labels": y[chunk].tolist()}, numpy_core_name=i % 2 == 0)
        )
    return x, y


class FakeResponse(io.BytesIO):
    """What ``urllib.request.urlopen`` returns, serving bytes held in memory."""

    def __enter__(self) -> FakeResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(files: dict[str, bytes]) -> Callable[..., FakeResponse]:
    """A stand-in for ``urlopen`` that serves ``files`` (URL -> bytes)."""

    def urlopen(url: str, timeout: float | None = None) -> FakeResponse:
        return FakeResponse(files[url])

    return urlopen


def sha256(payload: bytes) -> str:
    """Hex SHA-256 of ``payload``."""
    return hashlib.sha256(payload).hexdigest()
