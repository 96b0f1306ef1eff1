"""The MNIST family of IDX datasets (MNIST, Fashion-MNIST, EMNIST): their files, sources and loading."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gradlens.data.dataset import Stored
from gradlens.data.download import Remote, fetch
from gradlens.data.identity import KIND, DatasetIdentityError, idx_identity
from gradlens.data.idx import check_kind, parse_idx, read_bytes
from gradlens.data.locate import candidates, complete_sets, existing, install_hint


@dataclass(frozen=True)
class IdxSpec:
    """An MNIST-family dataset: four IDX files (train/test images idx3, labels idx1)."""

    title: str
    files: tuple[str, str, str, str]  # train images, train labels, test images, test labels
    num_classes: int
    subdirs: tuple[str, ...]
    label_offset: int = 0  # subtracted from the stored labels
    transposed: bool = False  # images stored column-major (EMNIST)
    remote: tuple[Remote, ...] = ()  # one per file in ``files``, empty when there is no download
    package: str = ""  # the Debian package that installs the files under /usr/share/datasets, if any


def mnist_files(prefix: str = "", test: str = "t10k") -> tuple[str, str, str, str]:
    """The four file names of an MNIST-layout dataset: train images, train labels, test images, test labels."""
    return (
        f"{prefix}train-images-idx3-ubyte",
        f"{prefix}train-labels-idx1-ubyte",
        f"{prefix}{test}-images-idx3-ubyte",
        f"{prefix}{test}-labels-idx1-ubyte",
    )


def remotes(base: str, files: Sequence[str], sha256: Sequence[str]) -> tuple[Remote, ...]:
    """One :class:`Remote` per file: ``<base>/<file>.gz`` with its SHA-256."""
    return tuple(Remote(f"{base}/{f}.gz", h) for f, h in zip(files, sha256, strict=True))


MNIST_FILES = mnist_files()
EMNIST_CLASSES = {"balanced": 47, "byclass": 62, "bymerge": 47, "digits": 10, "letters": 26, "mnist": 10}

IDX_SPECS: dict[str, IdxSpec] = {
    "mnist": IdxSpec(
        "MNIST",
        MNIST_FILES,
        10,
        ("mnist", "MNIST/raw", "mnist-10k"),
        remote=remotes(
            "https://ossci-datasets.s3.amazonaws.com/mnist",
            MNIST_FILES,
            (
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            ),
        ),
    ),
    "fashion_mnist": IdxSpec(
        "Fashion-MNIST",
        MNIST_FILES,
        10,
        ("fashion_mnist", "fashion-mnist", "FashionMNIST/raw"),
        package="dataset-fashion-mnist",
        remote=remotes(
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion",
            MNIST_FILES,
            (
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            ),
        ),
    ),
} | {
    f"emnist_{split}": IdxSpec(
        f"EMNIST {split}",
        mnist_files(f"emnist-{split}-", test="test"),
        k,
        (f"emnist_{split}", "emnist", "gzip", "emnist/gzip", "EMNIST/raw"),
        label_offset=1 if split == "letters" else 0,
        transposed=True,
    )
    for split, k in EMNIST_CLASSES.items()
}


def load_idx_dataset(name: str, roots: Sequence[Path], download: bool) -> Stored:
    """IDX dataset ``name``, read from the first candidate folder under ``roots`` that holds its four files and
    (for MNIST and Fashion-MNIST) passes the identity checks.

    A folder whose files are not shown to be the dataset (:func:`gradlens.data.identity.idx_identity`) is
    passed over and recorded in :attr:`Stored.passed_over`; :class:`DatasetIdentityError` lists every refused
    folder when none passes. A file that cannot be read (truncated, wrong format) raises at once.
    """
    spec = IDX_SPECS[name]
    dirs = candidates(roots, name, spec.subdirs)
    first = roots[0]
    if download and not any(all(existing(d, f, True) for f in spec.files) for d in dirs):
        if not spec.remote:
            raise ValueError(
                f"download=True: {name} has no download source; "
                "extract NIST's EMNIST gzip.zip and pass data_dir="
            )
        for filename, remote in zip(spec.files, spec.remote, strict=True):
            if existing(first / name, filename, True) is None:
                fetch(remote, first / name / f"{filename}.gz")
    refused = []
    complete = complete_sets(name, first, dirs, spec.files, True, bool(spec.remote), spec.package)
    for paths in complete:
        arrays, payloads = read_idx_files(name, spec, paths, digests=name in KIND)
        identity = "file names (EMNIST's names are its own)"
        if name in KIND:
            titles = {n: s.title for n, s in IDX_SPECS.items()}
            identity, why = idx_identity(name, titles, paths, arrays, payloads)
            if identity is None:
                refused.append(f"{paths[0].parent}: {why}")
                continue
        return finish_idx(spec, paths, arrays, identity, tuple(refused))
    word = "fashion" if name == "fashion_mnist" else "mnist"
    install = f", or {install_hint(spec.package)}" if spec.package else ""
    fix = (
        f"put {spec.title} files in {first / name} (a folder whose name says {word}) or pass data_dir= "
        f"(CLI: --data-dir) naming such a folder{install}"
    )
    raise DatasetIdentityError(f"{name}: refused {'; '.join(refused)}; {fix}")


def read_idx_files(
    name: str, spec: IdxSpec, paths: Sequence[Path], digests: bool
) -> tuple[list[np.ndarray], list[str]]:
    """The four arrays, checked (images idx3 and labels idx1 of uint8, equal counts, labels in range), and the
    SHA-256 of each file's decompressed payload when ``digests`` (else an empty list)."""
    arrays, payloads = [], []
    for i, path in enumerate(paths):
        payload = read_bytes(path)
        arrays.append(check_kind(parse_idx(payload, path), path, "images" if i % 2 == 0 else "labels"))
        if digests:
            payloads.append(hashlib.sha256(payload).hexdigest())
    for split, (images, labels), (ipath, lpath) in (
        ("train", arrays[0:2], paths[0:2]),
        ("test", arrays[2:4], paths[2:4]),
    ):
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{lpath}: {labels.shape[0]} labels but {ipath.name} holds {images.shape[0]} images; "
                "the two files must come from the same download"
            )
        low, high = spec.label_offset, spec.num_classes - 1 + spec.label_offset
        if labels.size and (labels.min() < low or labels.max() > high):
            raise ValueError(
                f"{lpath}: {split} labels span {labels.min()}..{labels.max()}, "
                f"expected {low}..{high} for {name}"
            )
    return arrays, payloads


def finish_idx(
    spec: IdxSpec, paths: Sequence[Path], arrays: Sequence[np.ndarray], identity: str, passed_over: tuple[str, ...]
) -> Stored:
    """Images ``[N, 1, H, W]`` (EMNIST transposed back), int64 labels from 0, and the source line."""
    x_train, y_train, x_test, y_test = arrays
    if spec.transposed:
        x_train, x_test = (np.ascontiguousarray(x.transpose(0, 2, 1)) for x in (x_train, x_test))
    y_train, y_test = (y.astype(np.int64) - spec.label_offset for y in (y_train, y_test))
    directory = paths[0].parent
    source = f"{spec.title}: IDX files in {directory}: {', '.join(p.name for p in paths)}"
    if spec.transposed:
        source += " (images transposed back from EMNIST's column-major storage)"
    if spec.label_offset:
        source += f" (labels shifted by -{spec.label_offset})"
    return Stored(x_train[:, None], y_train, x_test[:, None], y_test, source, identity, passed_over)

