"""Loading a dataset by name: dispatch to its family, then the tensor preparation (scale, normalise, flatten)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from gradlens.data.cifar import CIFAR_SPECS, load_cifar_dataset
from gradlens.data.dataset import Dataset, Stored
from gradlens.data.digits import load_digits
from gradlens.data.locate import DataDir, data_dirs
from gradlens.data.mnist_family import IDX_SPECS, load_idx_dataset


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`, sorted."""
    return sorted(["digits", *IDX_SPECS, *CIFAR_SPECS])


def num_classes(name: str) -> int:
    """K, the number of classes of dataset ``name`` (one of :func:`list_datasets`), without reading files."""
    if name == "digits":
        return 10
    spec = IDX_SPECS.get(name) or CIFAR_SPECS.get(name)
    if spec is None:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")
    return spec.num_classes


def load_dataset(
    name: str,
    data_dir: DataDir = None,
    *,
    flatten: bool = False,
    normalize: bool | tuple[Sequence[float], Sequence[float]] = False,
    dtype: torch.dtype = torch.float32,
    download: bool = False,
) -> Dataset:
    """Load a dataset by name (see :mod:`gradlens.data` for names, :mod:`gradlens.data.locate` for the lookup).

    Args:
        name: one of :func:`list_datasets`.
        data_dir: the data folder (the CLI's ``--data-dir``), or several: a sequence of folders or one string
            of folders separated by ``os.pathsep``; each dataset is read from the first folder that holds it
            and passes the identity checks. ``None`` uses ``$GRADLENS_DATA`` (the same string form) or
            :func:`default_data_dir`. The operating system's dataset folders are searched last
            (:func:`data_dirs`). Ignored by ``digits``.
        flatten: return ``[N, C·H·W]`` instead of ``[N, C, H, W]``.
        normalize: ``False`` keeps pixels in [0, 1]. ``True`` subtracts the per-channel mean and divides by
            the per-channel (population) standard deviation, both computed on the training set over
            ``N, H, W`` and applied to train and test. A pair ``(mean, std)`` of per-channel sequences
            applies given statistics instead.
        dtype: floating dtype of the images (``torch.float32`` or ``torch.float64``).
        download: fetch missing files (MNIST, Fashion-MNIST, CIFAR) into ``<first folder>/<name>`` and check
            their SHA-256 first. Fails with a one-line ``ConnectionError`` when there is no network.

    Returns:
        The :class:`Dataset`.

    Raises:
        ValueError: unknown name, bad option, or a file that is truncated or in the wrong format.
        DatasetIdentityError: files under the dataset's names were found but are not shown to be that dataset
            (e.g. MNIST files asked for as ``fashion_mnist``); a ``ValueError``.
        FileNotFoundError: no folder under the data folders holds the dataset's files.
    """
    if not dtype.is_floating_point:
        raise ValueError(f"dtype={dtype} is not a floating dtype; pass torch.float32 or torch.float64")
    stored: Stored
    if name == "digits":
        stored = load_digits()
        num_classes, scale = 10, "grey levels 0..16 divided by 16"
    elif name in IDX_SPECS:
        stored = load_idx_dataset(name, data_dirs(data_dir), download)
        num_classes, scale = IDX_SPECS[name].num_classes, "pixels divided by 255"
    elif name in CIFAR_SPECS:
        stored = load_cifar_dataset(name, data_dirs(data_dir), download)
        num_classes, scale = CIFAR_SPECS[name].num_classes, "pixels divided by 255"
    else:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")

    images = [torch.from_numpy(x).to(dtype) for x in (stored.x_train, stored.x_test)]
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
        y_train=torch.from_numpy(stored.y_train.astype(np.int64)),
        x_test=x_test_t,
        y_test=torch.from_numpy(stored.y_test.astype(np.int64)),
        num_classes=num_classes,
        input_shape=tuple(x_train_t.shape[1:]),
        source=f"{stored.source} [identified by {stored.identity}]" if stored.identity else stored.source,
        preprocessing="; ".join(steps),
        mean=mean,
        std=std,
        identity=stored.identity,
        passed_over=stored.passed_over,
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

