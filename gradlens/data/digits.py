"""The embedded digits: scikit-learn's 8×8 handwritten digits with a fixed 1437/360 train/test split."""

from __future__ import annotations

import numpy as np
import torch

from gradlens.data.dataset import Stored

DIGITS_SPLIT_SEED = 0
"""Seed of the local generator that draws the fixed 1437/360 train/test split of ``digits``."""

_DIGITS_N_TRAIN = 1437


def load_digits() -> Stored:
    """The digits as uint8 images ``[N, 1, 8, 8]`` with grey levels 0..16, split by :data:`DIGITS_SPLIT_SEED`."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = bunch.images.astype(np.uint8)[:, None]  # [1797, 1, 8, 8], integer grey levels 0..16
    labels = bunch.target
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED)).numpy()
    train, test = order[:_DIGITS_N_TRAIN], order[_DIGITS_N_TRAIN:]
    source = (
        f"scikit-learn digits (embedded): sklearn.datasets.load_digits, {len(labels)} 8x8 images, "
        f"split {len(train)}/{len(test)} by a permutation with seed {DIGITS_SPLIT_SEED}"
    )
    return Stored(images[train], labels[train], images[test], labels[test], source)

