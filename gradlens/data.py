"""Datasets that work offline: embedded 8×8 digits, MNIST-family IDX files and CIFAR python pickles.

``load_dataset(name, data_dir=None)`` returns a :class:`Dataset` of float image tensors ``[N, C, H, W]``
scaled to [0, 1] (or ``[N, C·H·W]`` with ``flatten=True``) and int64 labels ``[N]`` in ``0..K-1``.

Known names (``list_datasets()``):

- ``digits``: scikit-learn's bundled 8×8 handwritten digits (1797 images, 17 grey levels 0..16, divided by
  16). Embedded in scikit-learn, so it needs no files and no network; ``data_dir`` is ignored. Fixed split:
  a permutation drawn from a local ``torch.Generator`` seeded with :data:`DIGITS_SPLIT_SEED`; its first 1437
  indices are the training set, the last 360 the test set (about 80/20, not stratified).
- ``mnist``, ``fashion_mnist``: the four IDX files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each raw or ``.gz``). Pixels divided by 255.
- ``emnist_<split>`` for split in balanced, byclass, bymerge, digits, letters, mnist: the files
  ``emnist-<split>-{train,test}-{images-idx3,labels-idx1}-ubyte`` of NIST's ``gzip.zip``. EMNIST stores each
  image transposed (column-major); the loader transposes it back so that images look like MNIST's.
  ``emnist_letters`` labels are 1..26 in the files (a..z, case merged) and are shifted to 0..25.
- ``cifar10``: ``cifar-10-batches-py/data_batch_1`` .. ``data_batch_5`` and ``test_batch``;
  ``cifar100``: ``cifar-100-python/train`` and ``test`` with the 100 *fine* labels. Images ``[N, 3, 32, 32]``
  divided by 255. The pickles are read with an unpickler that only admits numpy arrays, so a foreign pickle
  cannot run code.

Where files are looked for: the root is ``data_dir`` if given, else ``$GRADLENS_DATA``, else
:func:`default_data_dir`; ``download=True`` puts missing files in ``<root>/<name>``. The directories tried
in order are the root itself, ``<root>/<name>`` and the dataset's usual folder names (e.g.
``<root>/MNIST/raw`` as torchvision lays it out, ``<root>/mnist-10k``, ``<root>/cifar-10-batches-py``); the
first directory that holds every file wins. A raw file is preferred to its ``.gz`` twin; compression is
detected from the content, not the name.

Every file is validated: a missing directory or file, a truncated file or a file in the wrong format raises
a one-line error that names the file and what was expected.

Identity (MNIST and Fashion-MNIST use the same four file names, so a name alone proves nothing): a set of
files serves as ``mnist`` or ``fashion_mnist`` only if either

1. every file is one of the dataset's official files: its SHA-256 (and MD5) is the one listed in
   :data:`OFFICIAL_CHECKSUMS` (the ``.gz`` files as distributed; for MNIST also the uncompressed files); or
2. the folder names the dataset (the folder holding the files or its parent: a name containing ``fashion``
   for Fashion-MNIST; containing ``mnist`` and none of ``fashion``, ``emnist``, ``kmnist``, ``qmnist`` for
   MNIST; e.g. ``fashion_mnist``, ``FashionMNIST/raw``, ``mnist-10k``, ``MNIST/raw``) **and** the content
   agrees (:func:`idx_content_kind`): MNIST digits were size-normalised into a 20×20 box (LeCun et al.), so
   their non-zero pixels fit a 20×20 box (all 10 000 of the shared subset do); Fashion-MNIST products were
   resized so that their longest edge is 28 pixels (Xiao et al. 2017), so almost none do. A split (train or
   test) is read as digits when at least half its images fit the box, as clothing otherwise; images that are
   not 28×28 are neither.

A file whose checksum is the official one of the *other* dataset is refused outright. When no candidate
directory passes, :class:`DatasetIdentityError` (a ``ValueError``) names each folder, why it was refused
and the fix. ``Dataset.identity`` says how the files were identified. CIFAR batches are compared with the
official MD5s too (their file names already differ between CIFAR-10 and CIFAR-100); ``identity`` says
whether they matched.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import pickle
import tarfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DIGITS_SPLIT_SEED",
    "OFFICIAL_CHECKSUMS",
    "BatchLoader",
    "Dataset",
    "DatasetIdentityError",
    "default_data_dir",
    "idx_content_kind",
    "list_datasets",
    "num_classes",
    "load_dataset",
    "make_loader",
    "read_cifar_batch",
    "read_idx",
]

DIGITS_SPLIT_SEED = 0
"""Seed of the local generator that draws the fixed 1437/360 train/test split of ``digits``."""

_DIGITS_N_TRAIN = 1437

_IDX_DTYPES: dict[int, tuple[str, np.dtype]] = {
    0x08: ("unsigned byte", np.dtype(">u1")),
    0x09: ("signed byte", np.dtype(">i1")),
    0x0B: ("int16", np.dtype(">i2")),
    0x0C: ("int32", np.dtype(">i4")),
    0x0D: ("float32", np.dtype(">f4")),
    0x0E: ("float64", np.dtype(">f8")),
}


@dataclass(frozen=True)
class _Remote:
    """One downloadable file: where it comes from and its SHA-256."""

    url: str
    sha256: str


@dataclass(frozen=True)
class _IdxSpec:
    """An MNIST-family dataset: four IDX files (train/test images idx3, labels idx1)."""

    title: str
    files: tuple[str, str, str, str]  # train images, train labels, test images, test labels
    num_classes: int
    subdirs: tuple[str, ...]
    label_offset: int = 0  # subtracted from the stored labels
    transposed: bool = False  # images stored column-major (EMNIST)
    remote: tuple[_Remote, ...] = ()  # one per file in ``files``, empty when there is no download


@dataclass(frozen=True)
class _CifarSpec:
    """A CIFAR python-pickle dataset: train batches, test batches and the label key."""

    title: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: str
    num_classes: int
    archive: _Remote


def _mnist_files(prefix: str = "", test: str = "t10k") -> tuple[str, str, str, str]:
    return (
        f"{prefix}train-images-idx3-ubyte",
        f"{prefix}train-labels-idx1-ubyte",
        f"{prefix}{test}-images-idx3-ubyte",
        f"{prefix}{test}-labels-idx1-ubyte",
    )


def _remotes(base: str, files: Sequence[str], sha256: Sequence[str]) -> tuple[_Remote, ...]:
    return tuple(_Remote(f"{base}/{f}.gz", h) for f, h in zip(files, sha256, strict=True))


_MNIST_FILES = _mnist_files()
_EMNIST_CLASSES = {"balanced": 47, "byclass": 62, "bymerge": 47, "digits": 10, "letters": 26, "mnist": 10}

_IDX_SPECS: dict[str, _IdxSpec] = {
    "mnist": _IdxSpec(
        "MNIST",
        _MNIST_FILES,
        10,
        ("mnist", "MNIST/raw", "mnist-10k"),
        remote=_remotes(
            "https://ossci-datasets.s3.amazonaws.com/mnist",
            _MNIST_FILES,
            (
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            ),
        ),
    ),
    "fashion_mnist": _IdxSpec(
        "Fashion-MNIST",
        _MNIST_FILES,
        10,
        ("fashion_mnist", "fashion-mnist", "FashionMNIST/raw"),
        remote=_remotes(
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion",
            _MNIST_FILES,
            (
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            ),
        ),
    ),
} | {
    f"emnist_{split}": _IdxSpec(
        f"EMNIST {split}",
        _mnist_files(f"emnist-{split}-", test="test"),
        k,
        (f"emnist_{split}", "emnist", "gzip", "emnist/gzip", "EMNIST/raw"),
        label_offset=1 if split == "letters" else 0,
        transposed=True,
    )
    for split, k in _EMNIST_CLASSES.items()
}

_CIFAR_SPECS: dict[str, _CifarSpec] = {
    "cifar10": _CifarSpec(
        "CIFAR-10",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "labels",
        10,
        _Remote(
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        ),
    ),
    "cifar100": _CifarSpec(
        "CIFAR-100",
        "cifar-100-python",
        ("train",),
        ("test",),
        "fine_labels",
        100,
        _Remote(
            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
        ),
    ),
}


OFFICIAL_CHECKSUMS: dict[str, dict[str, tuple[str | None, str | None]]] = {
    "mnist": {
        # .gz as distributed: MD5 from torchvision.datasets.MNIST.resources, SHA-256 as listed by several
        # independent downloaders (TensorFlow's mirror lists, guild.ai, ...).
        "train-images-idx3-ubyte.gz": (
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        ),
        "train-labels-idx1-ubyte.gz": (
            "d53e105ee54ea40749a09fcbcd1e9432",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        ),
        "t10k-images-idx3-ubyte.gz": (
            "9fb629c4189551a2d022fa330f9573f3",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "ec29112dd5afa0611ce80d1b7f02629c",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        ),
        # the same files uncompressed (SHA-256 only; no MD5 is published for them)
        "train-images-idx3-ubyte": (None, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        "train-labels-idx1-ubyte": (None, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        "t10k-images-idx3-ubyte": (None, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        "t10k-labels-idx1-ubyte": (None, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    },
    "fashion_mnist": {
        # .gz as distributed: MD5 from the Fashion-MNIST README / torchvision.datasets.FashionMNIST, SHA-256
        # as listed by independent downloaders. No checksum of the uncompressed files is recorded.
        "train-images-idx3-ubyte.gz": (
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        ),
        "train-labels-idx1-ubyte.gz": (
            "25c81989df183df01b3e8a0aad5dffbe",
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        ),
        "t10k-images-idx3-ubyte.gz": (
            "bef4ecab320f06d8554ea6380940ec79",
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "bb300cfdad3c16e7a12a480ee83cd310",
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        ),
    },
    "cifar10": {
        # extracted batches and the archive: MD5 from torchvision.datasets.CIFAR10
        "data_batch_1": ("c99cafc152244af753f735de768cd75f", None),
        "data_batch_2": ("d4bba439e000b95fd0a9bffe97cbabec", None),
        "data_batch_3": ("54ebc095f3ab1f0389bbae665268c751", None),
        "data_batch_4": ("634d18415352ddfa80567beed471001a", None),
        "data_batch_5": ("482c414d41f54cd18b22e5b47cb7c3cb", None),
        "test_batch": ("40351d587109b95175f43aff81a1287e", None),
        "cifar-10-python.tar.gz": (
            "c58f30108f718f92721af3b95e74349a",
            "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        ),
    },
    "cifar100": {
        # MD5 from torchvision.datasets.CIFAR100
        "train": ("16019d7e3df5f24257cddd939b257f8d", None),
        "test": ("f0ef6b0ae62326f3e7ffdfab6717acfc", None),
        "cifar-100-python.tar.gz": (
            "eb9058c3a382ffc7106e4002c42a8d85",
            "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
        ),
    },
}
"""Official checksums ``{dataset: {file name: (MD5 or None, SHA-256 or None)}}`` of the distributed files.
Only values found in public sources are listed; ``None`` where none is recorded."""

_DIGIT_BOX = 20  # MNIST digits were size-normalised into a 20×20 box inside the 28×28 image


class DatasetIdentityError(ValueError):
    """Files found under a dataset's names are not (shown to be) that dataset; the message names the fix."""


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`, sorted."""
    return sorted(["digits", *_IDX_SPECS, *_CIFAR_SPECS])


def num_classes(name: str) -> int:
    """K, the number of classes of dataset ``name`` (one of :func:`list_datasets`), without reading files."""
    if name == "digits":
        return 10
    spec = _IDX_SPECS.get(name) or _CIFAR_SPECS.get(name)
    if spec is None:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")
    return spec.num_classes


def default_data_dir() -> Path:
    """``$GRADLENS_DATA`` if set, else ``$XDG_CACHE_HOME/gradlens/data`` (``~/.cache/gradlens/data``)."""
    env = os.environ.get("GRADLENS_DATA")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "gradlens" / "data"


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image dataset split into train and test tensors.

    Attributes:
        name: the name given to :func:`load_dataset`.
        x_train: ``[N_train, C, H, W]`` (or ``[N_train, C·H·W]`` when flattened), floating point.
        y_train: ``[N_train]`` int64 labels in ``0..num_classes-1``.
        x_test: ``[N_test, ...]`` like ``x_train``.
        y_test: ``[N_test]`` int64.
        num_classes: K.
        input_shape: shape of one sample, e.g. ``(1, 28, 28)`` or ``(784,)``.
        source: where the data came from (file paths, or ``"scikit-learn digits (embedded)..."``); reports
            print it.
        preprocessing: what was done to the stored values (scaling, normalisation, flattening, subsetting).
        mean: per-channel mean subtracted by normalisation, ``None`` when not normalised.
        std: per-channel standard deviation divided by normalisation, ``None`` when not normalised.
        identity: how the files were identified as this dataset (official checksums, or folder name and
            content; see the module docstring); empty for ``digits``.
    """

    name: str
    x_train: Tensor = field(repr=False)
    y_train: Tensor = field(repr=False)
    x_test: Tensor = field(repr=False)
    y_test: Tensor = field(repr=False)
    num_classes: int
    input_shape: tuple[int, ...]
    source: str
    preprocessing: str = ""
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    identity: str = ""

    @property
    def n_train(self) -> int:
        """Number of training samples."""
        return int(self.y_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test samples."""
        return int(self.y_test.shape[0])

    def subset(self, n_train: int, n_test: int | None = None, seed: int = 0) -> Dataset:
        """A uniform random subset (without replacement, not stratified) drawn with a local generator.

        Args:
            n_train: training samples to keep, ``1..n_train``.
            n_test: test samples to keep; ``None`` keeps the whole test set.
            seed: seed of the local ``torch.Generator``; the global RNG is not touched.

        Returns:
            A new :class:`Dataset` whose ``preprocessing`` records the subset. Normalisation statistics, if
            any, stay those of the full training set.
        """
        n_test = self.n_test if n_test is None else n_test
        for what, n, available in (("n_train", n_train, self.n_train), ("n_test", n_test, self.n_test)):
            if not 1 <= n <= available:
                raise ValueError(
                    f"{what}={n} is out of range: {self.name} has {available}, pass 1..{available}"
                )
        generator = torch.Generator().manual_seed(seed)
        train = torch.randperm(self.n_train, generator=generator)[:n_train]
        test = torch.randperm(self.n_test, generator=generator)[:n_test]
        note = f"random subset {n_train}/{n_test} of {self.n_train}/{self.n_test} (seed {seed})"
        return replace(
            self,
            x_train=self.x_train[train],
            y_train=self.y_train[train],
            x_test=self.x_test[test],
            y_test=self.y_test[test],
            preprocessing=f"{self.preprocessing}; {note}",
        )

    def downsample(self, factor: int) -> Dataset:
        """Images average-pooled over non-overlapping ``factor × factor`` windows (28×28 → 14×14 for 2).

        Quick-scale presets use it to buy optimizer steps: a convolutional net costs about ``factor²`` times
        less per sample. Trailing rows/columns that do not fill a window are dropped.

        Raises:
            ValueError: ``factor`` is not a positive integer no larger than the image, or the data is flattened.
        """
        if len(self.input_shape) != 3:
            raise ValueError(f"downsample needs [C, H, W] images, {self.name} has input shape {self.input_shape}; "
                             "load it without flatten")
        size = min(self.input_shape[1:])
        if not isinstance(factor, int) or not 1 <= factor <= size:
            raise ValueError(f"downsample factor={factor!r} is invalid; pass an integer 1..{size}")
        if factor == 1:
            return self
        x_train, x_test = (torch.nn.functional.avg_pool2d(x, factor) for x in (self.x_train, self.x_test))
        height, width = x_train.shape[-2:]
        return replace(
            self,
            x_train=x_train,
            x_test=x_test,
            input_shape=tuple(x_train.shape[1:]),
            preprocessing=f"{self.preprocessing}; {factor}×{factor} average-pooled to {height}×{width}",
        )


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    flatten: bool = False,
    normalize: bool | tuple[Sequence[float], Sequence[float]] = False,
    dtype: torch.dtype = torch.float32,
    download: bool = False,
) -> Dataset:
    """Load a dataset by name (see the module docstring for names and the file lookup).

    Args:
        name: one of :func:`list_datasets`.
        data_dir: root directory of the data files (the CLI's ``--data-dir``); ``None`` uses
            ``$GRADLENS_DATA`` or :func:`default_data_dir`. Ignored by ``digits``.
        flatten: return ``[N, C·H·W]`` instead of ``[N, C, H, W]``.
        normalize: ``False`` keeps pixels in [0, 1]. ``True`` subtracts the per-channel mean and divides by
            the per-channel (population) standard deviation, both computed on the training set over
            ``N, H, W`` and applied to train and test. A pair ``(mean, std)`` of per-channel sequences
            applies given statistics instead.
        dtype: floating dtype of the images (``torch.float32`` or ``torch.float64``).
        download: fetch missing files (MNIST, Fashion-MNIST, CIFAR) into ``<root>/<name>`` and check their
            SHA-256 first. Fails with a one-line ``ConnectionError`` when there is no network.

    Returns:
        The :class:`Dataset`.

    Raises:
        ValueError: unknown name, bad option, or a file that is truncated or in the wrong format.
        DatasetIdentityError: files under the dataset's names were found but are not shown to be that dataset
            (e.g. MNIST files asked for as ``fashion_mnist``); a ``ValueError``.
        FileNotFoundError: no directory under the root holds the dataset's files.
    """
    if not dtype.is_floating_point:
        raise ValueError(f"dtype={dtype} is not a floating dtype; pass torch.float32 or torch.float64")
    if name == "digits":
        x_train, y_train, x_test, y_test, source = _load_digits()
        identity = ""
        num_classes, scale = 10, "grey levels 0..16 divided by 16"
    elif name in _IDX_SPECS:
        x_train, y_train, x_test, y_test, source, identity = _load_idx_dataset(name, _root(data_dir), download)
        num_classes, scale = _IDX_SPECS[name].num_classes, "pixels divided by 255"
    elif name in _CIFAR_SPECS:
        x_train, y_train, x_test, y_test, source, identity = _load_cifar_dataset(name, _root(data_dir), download)
        num_classes, scale = _CIFAR_SPECS[name].num_classes, "pixels divided by 255"
    else:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")

    images = [torch.from_numpy(x).to(dtype) for x in (x_train, x_test)]
    denominator = 16.0 if name == "digits" else 255.0
    x_train_t, x_test_t = (x.div_(denominator) for x in images)
    steps = [scale]
    mean = std = None
    if normalize is not False:
        mean, std = _normalisation_stats(normalize, x_train_t, name)
        shape = (1, len(mean), 1, 1)
        m = torch.tensor(mean, dtype=dtype).reshape(shape)
        s = torch.tensor(std, dtype=dtype).reshape(shape)
        x_train_t, x_test_t = (x_train_t - m) / s, (x_test_t - m) / s
        origin = "training-set" if normalize is True else "given"
        steps.append(f"normalised with {origin} per-channel mean {_fmt(mean)} and std {_fmt(std)}")
    if flatten:
        x_train_t, x_test_t = x_train_t.flatten(1), x_test_t.flatten(1)
        steps.append("flattened")
    return Dataset(
        name=name,
        x_train=x_train_t,
        y_train=torch.from_numpy(y_train.astype(np.int64)),
        x_test=x_test_t,
        y_test=torch.from_numpy(y_test.astype(np.int64)),
        num_classes=num_classes,
        input_shape=tuple(x_train_t.shape[1:]),
        source=f"{source} [identified by {identity}]" if identity else source,
        preprocessing="; ".join(steps),
        mean=mean,
        std=std,
        identity=identity,
    )


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _normalisation_stats(
    normalize: bool | tuple[Sequence[float], Sequence[float]], x_train: Tensor, name: str
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    channels = x_train.shape[1]
    if normalize is True:
        x = x_train.double().transpose(0, 1).reshape(channels, -1)
        mean = tuple(x.mean(dim=1).tolist())
        std = tuple(x.std(dim=1, correction=0).tolist())
    elif isinstance(normalize, tuple) and len(normalize) == 2:
        mean, std = tuple(float(v) for v in normalize[0]), tuple(float(v) for v in normalize[1])
        if len(mean) != channels or len(std) != channels:
            raise ValueError(
                f"normalize=(mean, std) needs {channels} values each for {name}, "
                f"got {len(mean)} and {len(std)}"
            )
    else:
        raise ValueError(f"normalize={normalize!r} is not understood; pass False, True or (mean, std)")
    if any(not s > 0 for s in std):
        raise ValueError(f"normalisation std {_fmt(std)} of {name} has a non-positive value; cannot divide")
    return mean, std


# ---------------------------------------------------------------------------------------------------------
# digits (embedded)


def _load_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)[:, None]  # [1797, 1, 8, 8], integer grey levels 0..16
    labels = bunch.target
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED)).numpy()
    train, test = order[:_DIGITS_N_TRAIN], order[_DIGITS_N_TRAIN:]
    source = (
        f"scikit-learn digits (embedded): sklearn.datasets.load_digits, {len(labels)} 8x8 images, "
        f"split {len(train)}/{len(test)} by a permutation with seed {DIGITS_SPLIT_SEED}"
    )
    return images[train], labels[train], images[test], labels[test], source


# ---------------------------------------------------------------------------------------------------------
# file lookup and download


def _root(data_dir: str | os.PathLike[str] | None) -> Path:
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def _candidates(root: Path, name: str, subdirs: Sequence[str]) -> list[Path]:
    dirs: list[Path] = []
    for sub in ("", name, *subdirs):
        d = root / sub if sub else root
        if d not in dirs:
            dirs.append(d)
    return dirs


def _existing(directory: Path, filename: str, allow_gz: bool) -> Path | None:
    for candidate in (filename, f"{filename}.gz") if allow_gz else (filename,):
        if (directory / candidate).is_file():
            return directory / candidate
    return None


def _find_files(
    name: str, root: Path, dirs: Sequence[Path], files: Sequence[str], allow_gz: bool, can_download: bool
) -> list[Path]:
    """The files' paths in the first directory of ``dirs`` that holds all of them."""
    partial = []
    for d in dirs:
        found = [_existing(d, f, allow_gz) for f in files]
        if all(p is not None for p in found):
            return [p for p in found if p is not None]
        if any(p is not None for p in found):
            missing = [f for f, p in zip(files, found, strict=True) if p is None]
            partial.append(f"{d} lacks {', '.join(missing)}")
    suffix = " (each raw or .gz)" if allow_gz else ""
    where = f"; {'; '.join(partial)}" if partial else ""
    hint = "; or pass download=True where there is a network" if can_download else ""
    raise FileNotFoundError(
        f"{name}: no directory holds {', '.join(files)}{suffix}; "
        f"looked in {', '.join(map(str, dirs))}{where}; "
        f"put the files in {root} or pass data_dir= (CLI: --data-dir) or set $GRADLENS_DATA{hint}"
    )


def _all_complete(
    name: str, root: Path, dirs: Sequence[Path], files: Sequence[str], allow_gz: bool, can_download: bool
) -> Iterator[list[Path]]:
    """The files' paths in each directory of ``dirs`` that holds all of them, in order; raises like
    :func:`_find_files` when none does."""
    first = _find_files(name, root, dirs, files, allow_gz, can_download)
    yield first
    after = list(dirs)[list(dirs).index(first[0].parent) + 1 :]
    for d in after:
        found = [_existing(d, f, allow_gz) for f in files]
        if all(p is not None for p in found):
            yield [p for p in found if p is not None]


def _download(remote: _Remote, dest: Path, timeout: float = 30.0) -> Path:
    """Fetch ``remote.url`` to ``dest`` and check its SHA-256; nothing is left at ``dest`` on failure."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(remote.url, timeout=timeout) as response, part.open("wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise ConnectionError(
            f"could not download {remote.url} ({reason}); no network? Copy {dest.name} "
            f"(SHA-256 {remote.sha256}) into {dest.parent} by hand or pass data_dir= (CLI: --data-dir)"
        ) from exc
    if digest.hexdigest() != remote.sha256:
        part.unlink(missing_ok=True)
        raise ValueError(
            f"{remote.url}: SHA-256 mismatch: expected {remote.sha256}, got {digest.hexdigest()}; "
            "the download was discarded, try again or fetch the file by hand"
        )
    part.replace(dest)
    return dest


# ---------------------------------------------------------------------------------------------------------
# IDX


def _read_bytes(path: Path) -> bytes:
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
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(
            f"{path}: truncated: {len(data)} bytes, an IDX header needs at least 4; re-download it"
        )
    zero, code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
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
    type_name, dtype = _IDX_DTYPES[code]
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


def _read_idx_as(path: Path, kind: str) -> np.ndarray:
    """``read_idx`` plus the checks of an MNIST-family images (idx3) or labels (idx1) file."""
    array = read_idx(path)
    ndim = 3 if kind == "images" else 1
    if array.ndim != ndim or array.dtype != np.uint8:
        raise ValueError(
            f"{path}: expected an idx{ndim} unsigned-byte {kind} file (magic 0x0000080{ndim}), "
            f"found {array.ndim} dimensions of {array.dtype}"
        )
    return array


def _file_digests(path: Path) -> tuple[str, str]:
    """(MD5, SHA-256) of the file's bytes as stored."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def _official_owner(path: Path, digests: tuple[str, str]) -> str | None:
    """The dataset whose official file of this name has these digests, or None."""
    for dataset, files in OFFICIAL_CHECKSUMS.items():
        md5, sha = files.get(path.name, (None, None))
        if (sha is not None and sha == digests[1]) or (sha is None and md5 is not None and md5 == digests[0]):
            return dataset
    return None


def _folder_names(directory: Path, name: str) -> bool:
    """Whether the folder holding the files, or its parent, names ``name`` (``mnist`` or ``fashion_mnist``)."""
    parts = ["".join(c for c in part.lower() if c.isalnum()) for part in directory.absolute().parts[-2:]]
    if name == "fashion_mnist":
        return any("fashion" in part for part in parts)
    others = ("fashion", "emnist", "kmnist", "qmnist")
    return any("mnist" in part for part in parts) and not any(o in part for part in parts for o in others)


def idx_content_kind(images: np.ndarray) -> tuple[str, float]:
    """Tell MNIST digits from Fashion-MNIST clothing by the extent of each image's non-zero pixels.

    MNIST digits were size-normalised to fit a 20×20 box, then centred by their centre of mass in the 28×28
    image; Fashion-MNIST products were trimmed and resized so that their longest edge is 28 pixels. So with
    ``h_i``, ``w_i`` the height and width of the bounding box of image i's non-zero pixels,

        f = (1/N) · #{i : max(h_i, w_i) ≤ 20}

    is 1 for MNIST (10 000 of the 10 000 images of the shared MNIST subset) and near 0 for Fashion-MNIST.

    Args:
        images: uint8 ``[N, H, W]``.

    Returns:
        ``(kind, f)``: kind ``"digits"`` when ``f ≥ 0.5``, ``"clothing"`` when ``f < 0.5``, ``"neither"``
        (with ``f`` NaN) for images that are not 28×28 or an empty split.
    """
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.shape[0] == 0:
        return "neither", float("nan")
    ink = images > 0
    extents = []
    for axis in (2, 1):  # rows that hold ink (height), columns that hold ink (width)
        lines = ink.any(axis=axis)
        first = lines.argmax(axis=1)
        last = lines.shape[1] - 1 - lines[:, ::-1].argmax(axis=1)
        extents.append(np.where(lines.any(axis=1), last - first + 1, 0))
    fraction = float(np.mean(np.maximum(*extents) <= _DIGIT_BOX))
    return ("digits" if fraction >= 0.5 else "clothing"), fraction


_KIND = {"mnist": "digits", "fashion_mnist": "clothing"}


def _idx_identity(name: str, paths: Sequence[Path], arrays: Sequence[np.ndarray]) -> tuple[str | None, str]:
    """``(identity, "")`` when the files are ``name``; ``(None, why not)`` otherwise (see the module docstring)."""
    title = _IDX_SPECS[name].title
    owners = [_official_owner(p, _file_digests(p)) for p in paths]
    for path, owner in zip(paths, owners, strict=True):
        if owner is not None and owner != name:
            return None, f"{path.name} is the official {_IDX_SPECS[owner].title} file (checksum), not {title}"
    if all(owner == name for owner in owners):
        return f"official {title} files (SHA-256 of all four files checked)", ""
    directory = paths[0].parent
    kinds = [idx_content_kind(arrays[i]) for i in (0, 2)]
    content = ", ".join(
        f"{split}: {kind}, {f:.1%} of images fit a 20×20 box"
        for split, (kind, f) in zip(("train", "test"), kinds, strict=True)
    )
    if any(kind != _KIND[name] for kind, _ in kinds):
        looks = {
            "digits": "they look like MNIST digits",
            "clothing": "they look like Fashion-MNIST clothing",
            "neither": "they are not 28×28 images as both datasets' are",
        }
        seen = " and ".join(sorted({looks[k] for k, _ in kinds if k != _KIND[name]}))
        return None, f"its images are not {title}'s ({content}; {seen})"
    if not _folder_names(directory, name):
        word = "fashion" if name == "fashion_mnist" else "mnist"
        return None, f"the files are not the official ones and the folder name does not say {word!r}"
    return f"folder name {directory.name!r} and content ({content}); not the official files", ""


def _load_idx_dataset(
    name: str, root: Path, download: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str, str]:
    spec = _IDX_SPECS[name]
    dirs = _candidates(root, name, spec.subdirs)
    if download and not any(all(_existing(d, f, True) for f in spec.files) for d in dirs):
        if not spec.remote:
            raise ValueError(
                f"download=True: {name} has no download source; "
                "extract NIST's EMNIST gzip.zip and pass data_dir="
            )
        for filename, remote in zip(spec.files, spec.remote, strict=True):
            if _existing(root / name, filename, True) is None:
                _download(remote, root / name / f"{filename}.gz")
    refused = []
    for paths in _all_complete(name, root, dirs, spec.files, allow_gz=True, can_download=bool(spec.remote)):
        arrays = _read_idx_files(name, spec, paths)
        identity = "file names (EMNIST's names are its own)"
        if name in _KIND:
            identity, why = _idx_identity(name, paths, arrays)
            if identity is None:
                refused.append(f"{paths[0].parent}: {why}")
                continue
        return (*_finish_idx(spec, paths, arrays), identity)
    fix = (
        f"put {spec.title} files in {root / name} (a folder whose name says "
        f"{'fashion' if name == 'fashion_mnist' else 'mnist'}) or pass data_dir= (CLI: --data-dir) naming such a folder"
    )
    raise DatasetIdentityError(f"{name}: refused {'; '.join(refused)}; {fix}")


def _read_idx_files(name: str, spec: _IdxSpec, paths: Sequence[Path]) -> list[np.ndarray]:
    arrays = []
    for i, path in enumerate(paths):
        arrays.append(_read_idx_as(path, "images" if i % 2 == 0 else "labels"))
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
    return arrays


def _finish_idx(
    spec: _IdxSpec, paths: Sequence[Path], arrays: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
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
    return x_train[:, None], y_train, x_test[:, None], y_test, source


# ---------------------------------------------------------------------------------------------------------
# CIFAR


def _numpy_globals() -> dict[tuple[str, str], object]:
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
    parts = PurePosixPath(name).parts
    return parts[:1] == (folder,) and ".." not in parts


def _extract_cifar(archive: Path, folder: str, into: Path) -> None:
    """Extract the regular files under ``folder/`` of a CIFAR tar.gz; no member may leave ``into``."""
    with tarfile.open(archive, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and _inside(m.name, folder)]
        # The "data" filter (Python >= 3.11.4) also refuses absolute names and special permissions.
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(into, members=members, **safe)


def _load_cifar_dataset(
    name: str, root: Path, download: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str, str]:
    spec = _CIFAR_SPECS[name]
    dirs = [d for base in _candidates(root, name, ()) for d in (base, base / spec.folder)]
    files = spec.train + spec.test
    if download and not any(all(_existing(d, f, False) for f in files) for d in dirs):
        archive = root / name / spec.archive.url.rsplit("/", 1)[1]
        if not archive.is_file():
            _download(spec.archive, archive)
        _extract_cifar(archive, spec.folder, root / name)
    paths = _find_files(name, root, dirs, files, allow_gz=False, can_download=True)
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
    differ = [p.name for p in paths if _official_owner(p, _file_digests(p)) != name]
    identity = (
        f"official {spec.title} batches (MD5 of all {len(paths)} files checked)"
        if not differ
        else f"file names; not the official {spec.title} batches (MD5 differs for {', '.join(differ)})"
    )
    return x_train, y_train, x_test, y_test, source, identity


# ---------------------------------------------------------------------------------------------------------
# mini-batches


class BatchLoader:
    """Deterministic mini-batches ``(x[idx], y[idx])`` over a pair of tensors.

    Each ``iter()`` is one epoch. With ``shuffle=True`` epoch e visits the samples in a permutation drawn
    from a local ``torch.Generator`` whose seed is derived from ``(seed, e)`` alone, so the order of any
    epoch is reproducible (``set_epoch`` jumps to an epoch, e.g. on resume) and the global RNG is never
    used. Every sample appears exactly once per epoch: the last batch holds the ``N mod batch_size``
    leftover samples and is smaller, unless ``drop_last=True`` asks to drop it.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                f"x has {x.shape[0]} samples but y has {y.shape[0]}; pass tensors of equal length"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be a positive integer")
        if drop_last and batch_size > x.shape[0]:
            raise ValueError(
                f"drop_last=True with batch_size={batch_size} > {x.shape[0]} samples gives no batch"
            )
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.epoch = 0

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` produce epoch ``epoch``."""
        self.epoch = epoch

    def order(self, epoch: int) -> Tensor:
        """The sample order of ``epoch``: int64 ``[N]``."""
        n = self.x.shape[0]
        if not self.shuffle:
            return torch.arange(n, device=self.x.device)
        state = np.random.SeedSequence([self.seed, epoch]).generate_state(1, dtype=np.uint64)[0]
        generator = torch.Generator().manual_seed(int(state))
        return torch.randperm(n, generator=generator).to(self.x.device)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = self.order(self.epoch)
        self.epoch += 1
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.x[idx], self.y[idx]


def make_loader(
    x: Tensor, y: Tensor, batch_size: int, shuffle: bool = True, seed: int = 0, *, drop_last: bool = False
) -> BatchLoader:
    """Deterministic mini-batch iterator over ``x`` ``[N, ...]`` and ``y`` ``[N]``; see :class:`BatchLoader`.

    Args:
        x: inputs, first dimension N.
        y: targets ``[N]``.
        batch_size: samples per batch; the last batch of an epoch holds the remainder (``N mod batch_size``).
        shuffle: visit samples in a fresh seeded permutation each epoch; ``False`` keeps the stored order.
        seed: seed of the local generator (the global RNG is not touched).
        drop_last: drop the smaller last batch instead of yielding it.

    Returns:
        A re-iterable :class:`BatchLoader`; each ``iter()`` is one epoch.
    """
    return BatchLoader(x, y, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
