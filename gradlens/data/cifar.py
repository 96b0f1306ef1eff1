"""CIFAR-10 and CIFAR-100 as python pickles: their files, a safe unpickler, archive extraction and loading."""

from __future__ import annotations

import os
import pickle
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np

from gradlens.data.dataset import Stored
from gradlens.data.download import Remote, fetch
from gradlens.data.identity import file_digests, official_owner
from gradlens.data.locate import candidates, complete_sets, existing


@dataclass(frozen=True)
class CifarSpec:
    """A CIFAR python-pickle dataset: train batches, test batches and the label key."""

    title: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: str
    num_classes: int
    archive: Remote


CIFAR_SPECS: dict[str, CifarSpec] = {
    "cifar10": CifarSpec(
        "CIFAR-10",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "labels",
        10,
        Remote(
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        ),
    ),
    "cifar100": CifarSpec(
        "CIFAR-100",
        "cifar-100-python",
        ("train",),
        ("test",),
        "fine_labels",
        100,
        Remote(
            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
        ),
    ),
}


def _numpy_globals() -> dict[tuple[str, str], object]:
    """The only globals a CIFAR pickle may name: numpy's array reconstruction and ``codecs.encode``."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    # Python 3 pickles bytes for protocol 2 as _codecs.encode(str, "latin1").
    allowed[("_codecs", "encode")] = __import__("codecs").encode
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that admits only numpy arrays, dtypes and bytes: a CIFAR batch cannot run code."""

    def __init__(self, file: BinaryIO, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path
        self._allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise ValueError(
                f"{self._path}: refusing to unpickle {module}.{name}; "
                "a CIFAR batch holds only a dict of numpy arrays and lists"
            ) from None


def read_cifar_batch(
    path: str | os.PathLike[str], label_key: str = "labels"
) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR python pickle batch.

    The file holds a dict with ``data``: uint8 ``[N, 3072]`` (per row: 1024 red, 1024 green, 1024 blue
    values, each a 32×32 image row-major) and ``label_key`` (``labels`` for CIFAR-10, ``fine_labels`` or
    ``coarse_labels`` for CIFAR-100): N integers. Keys may be bytes (the original Python 2 pickles) or str.

    Args:
        path: the batch file.
        label_key: which label list to return.

    Returns:
        ``(images, labels)``: uint8 ``[N, 3, 32, 32]`` and int64 ``[N]``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not a pickle, a truncated pickle, a pickle of anything but arrays, or a dict without the
            expected entries.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            batch = _ArrayUnpickler(f, path).load()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (pickle.UnpicklingError, EOFError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(
            f"{path}: not a CIFAR python pickle batch ({type(exc).__name__}: {exc}); "
            "the file is truncated or in the wrong format, re-download cifar-*-python.tar.gz"
        ) from None
    if not isinstance(batch, dict):
        raise ValueError(
            f"{path}: expected a pickled dict with data and {label_key}, found {type(batch).__name__}"
        )
    entries = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = entries.get("data"), entries.get(label_key)
    if data is None or labels is None:
        raise ValueError(f"{path}: expected keys 'data' and {label_key!r}, found {sorted(map(str, entries))}")
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: expected 'data' uint8 [N, 3072], found {data.dtype} {list(data.shape)}")
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: expected {data.shape[0]} integer {label_key!r}, "
            f"found {labels.dtype} {list(labels.shape)}"
        )
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _inside(name: str, folder: str) -> bool:
    """Whether archive member ``name`` lies under ``folder/`` without climbing out of it."""
    parts = PurePosixPath(name).parts
    return parts[:1] == (folder,) and ".." not in parts


def _extract_cifar(archive: Path, folder: str, into: Path) -> None:
    """Extract the regular files under ``folder/`` of a CIFAR tar.gz; no member may leave ``into``."""
    with tarfile.open(archive, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and _inside(m.name, folder)]
        # The "data" filter (Python >= 3.11.4) also refuses absolute names and special permissions.
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(into, members=members, **safe)


def load_cifar_dataset(name: str, roots: Sequence[Path], download: bool) -> Stored:
    """CIFAR dataset ``name`` from the first candidate folder under ``roots`` that holds all its batches."""
    spec = CIFAR_SPECS[name]
    root = roots[0]
    dirs = [d for base in candidates(roots, name, ()) for d in (base, base / spec.folder)]
    files = spec.train + spec.test
    if download and not any(all(existing(d, f, False) for f in files) for d in dirs):
        archive = root / name / spec.archive.url.rsplit("/", 1)[1]
        if not archive.is_file():
            fetch(spec.archive, archive)
        _extract_cifar(archive, spec.folder, root / name)
    paths = next(complete_sets(name, root, dirs, files, allow_gz=False, can_download=True))
    parts = [read_cifar_batch(p, spec.label_key) for p in paths]
    for path, (_, labels) in zip(paths, parts, strict=True):
        if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
            raise ValueError(
                f"{path}: {spec.label_key} span {labels.min()}..{labels.max()}, "
                f"expected 0..{spec.num_classes - 1}"
            )
    n_train = len(spec.train)
    x_train = np.concatenate([x for x, _ in parts[:n_train]])
    y_train = np.concatenate([y for _, y in parts[:n_train]])
    x_test = np.concatenate([x for x, _ in parts[n_train:]])
    y_test = np.concatenate([y for _, y in parts[n_train:]])
    source = f"{spec.title}: python pickle batches in {paths[0].parent}: {', '.join(p.name for p in paths)}"
    if name == "cifar100":
        source += " (fine labels)"
    differ = [p.name for p in paths if official_owner(p.name, file_digests(p)) != name]
    identity = (
        f"official {spec.title} batches (MD5 of all {len(paths)} files checked)"
        if not differ
        else f"file names; not the official {spec.title} batches (MD5 differs for {', '.join(differ)})"
    )
    return Stored(x_train, y_train, x_test, y_test, source, identity)

