"""The :class:`Dataset` container: train/test tensors with their provenance, subsets and downsampling; and
:class:`Stored`, what a dataset family's loader hands to :func:`gradlens.data.load_dataset`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True, eq=False)
class Stored:
    """A dataset as its files hold it, before any tensor preparation.

    Attributes:
        x_train: integer images ``[N_train, C, H, W]`` as stored (uint8 grey levels or pixels).
        y_train: ``[N_train]`` integer labels in ``0..K-1``.
        x_test: ``[N_test, C, H, W]``.
        y_test: ``[N_test]``.
        source: where the data came from (the files read).
        identity: how the files were identified as the dataset ("" for embedded data).
        passed_over: ``"<folder>: why"`` for each folder that held the files but was refused as this dataset
            before the one used.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    identity: str = ""
    passed_over: tuple[str, ...] = ()


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
        identity: how the files were identified as this dataset (official checksums or payload digests, or
            folder name and content; see :mod:`gradlens.data.identity`); empty for ``digits``.
        passed_over: ``"<folder>: why"`` for each folder searched before the one used that held the files but
            was refused as this dataset (e.g. an MNIST folder named first when Fashion-MNIST was asked for).
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
    passed_over: tuple[str, ...] = ()

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
