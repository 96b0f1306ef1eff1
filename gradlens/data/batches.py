"""Deterministic mini-batches over a pair of tensors, seeded per epoch, never touching the global RNG."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor


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
