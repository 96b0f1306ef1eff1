"""Summaries of records: min / max / mean / last per block, from stored blocks where the file has them.

A :class:`Summary` describes the records of a range in blocks of ``block`` consecutive records, aligned to
the record index (block k = records ``k*block .. (k+1)*block - 1``; the first and last block of a range may be
partial). Definitions (the recorder stores the same, :mod:`gradlens.recorder.summary`):

- min = fmin over the block, max = fmax (NaN ignored: NaN only when every record is NaN; ±Inf counts),
- mean = (1/count) Σ records in float64, then rounded to ``schema.summary_dtype`` (float32 for float32
  values): NaN or ±Inf as soon as one record is non-finite,
- last = the block's last record;

blocks of more than one float32 record are given at display precision (``schema.display_precision``: 8
significant bits, relative error <= 2**-8), whether stored or made here, so a summary does not depend on what
the writer had stored when it was read. A block made from stored blocks has the mean of their rounded means
(within 2**-8 of the mean of the records' absolute values).

:class:`Pieces` is the arithmetic both sides share: consecutive pieces (single records or blocks) carrying
count, min, max, sum and last, merged by groups. :class:`BlockReader` answers "the blocks ``k0 .. k1 - 1`` of
size ``SUMMARY_BLOCKS[j]``" from a file's block tables, completing the ones not stored yet (the writer stores
whole chunks of 32 blocks) from finer blocks and, at the finest level, from records; :meth:`BlockReader.cover`
covers any record range with the coarsest blocks that fit in it, so a partial block at either end of a range
costs at most a few blocks per level and fewer than 64 records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from gradlens.schema import SUMMARY_BLOCKS, display_precision, summary_dtype


class Summary(NamedTuple):
    """Per block of consecutive records: what a screen draws of a long run (see :meth:`gradlens.loader.Run.summary`).

    Attributes:
        block: records per (full) block: 1 or one of ``schema.SUMMARY_BLOCKS`` (32, 128, 512, ...).
        first_step, last_step: ``[B]`` int64, the steps of the first and last record of each block.
        count: ``[B]`` int64, the records in each block (``block``, except maybe the first and the last).
        min, max: ``[B, *shape]`` in the quantity's dtype; NaN ignored (NaN only where every record of the block
            is NaN); ±Inf counts.
        mean: ``[B, *shape]`` float64 (float32 precision for float32 quantities): NaN or ±Inf as soon as one
            record of the block is non-finite, so a non-finite record is never hidden by a block.
        last: ``[B, *shape]`` in the quantity's dtype, the block's last record.
    """

    block: int
    first_step: np.ndarray
    last_step: np.ndarray
    count: np.ndarray
    min: np.ndarray
    max: np.ndarray
    mean: np.ndarray
    last: np.ndarray


@dataclass
class Pieces:
    """Consecutive pieces of one stream (single records or blocks): ``[m]`` steps and counts, ``[m, C]`` values."""

    first: np.ndarray  # step of the first record of each piece
    last_step: np.ndarray  # step of its last record
    count: np.ndarray  # records in each piece
    min: np.ndarray
    max: np.ndarray
    sum: np.ndarray
    last: np.ndarray

    @classmethod
    def records(cls, steps: np.ndarray, values: np.ndarray) -> Pieces:
        """Each record a piece of one: ``steps [m]``, ``values [m, C]`` (any numeric dtype, used as float64)."""
        values = np.asarray(values, dtype=np.float64)
        steps = np.asarray(steps, dtype=np.int64)
        return cls(steps, steps, np.ones(len(steps), np.int64), values, values, values, values)

    @classmethod
    def blocks(cls, first: np.ndarray, last_step: np.ndarray, count: int, stats: np.ndarray) -> Pieces:
        """Stored blocks of ``count`` records: ``stats [m, C, 4]`` (min, max, mean, last)."""
        stats = np.asarray(stats, dtype=np.float64)
        counts = np.full(len(first), count, dtype=np.int64)
        return cls(first, last_step, counts, stats[..., 0], stats[..., 1], stats[..., 2] * count, stats[..., 3])

    @classmethod
    def concat(cls, parts: list[Pieces], width: int) -> Pieces:
        parts = [part for part in parts if len(part)]
        if not parts:
            empty = np.zeros((0, width))
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), empty, empty, empty, empty)
        return cls(*(np.concatenate([getattr(p, n) for p in parts]) for n in cls.__dataclass_fields__))

    def __len__(self) -> int:
        return len(self.count)

    def reduce(self, starts: np.ndarray) -> Pieces:
        """Pieces merged into groups starting at the indices ``starts`` (the last group runs to the end)."""
        starts = np.asarray(starts, dtype=np.intp)
        ends = np.r_[starts[1:], len(self)] - 1
        return Pieces(
            self.first[starts],
            self.last_step[ends],
            np.add.reduceat(self.count, starts),
            np.fmin.reduceat(self.min, starts, axis=0),
            np.fmax.reduceat(self.max, starts, axis=0),
            np.add.reduceat(self.sum, starts, axis=0),
            self.last[ends],
        )

    def combine(self, later: Pieces) -> Pieces:
        """One piece (self) followed by one piece (``later``), merged."""
        return Pieces(
            self.first,
            later.last_step,
            self.count + later.count,
            np.fmin(self.min, later.min),
            np.fmax(self.max, later.max),
            self.sum + later.sum,
            later.last,
        )

    def select(self, index) -> Pieces:
        return Pieces(*(getattr(self, name)[index] for name in self.__dataclass_fields__))

    def summary(self, block: int, shape: tuple[int, ...], dtype: np.dtype) -> Summary:
        """These pieces as a :class:`Summary` of records of ``shape`` and ``dtype``."""
        m = len(self)

        def values(array: np.ndarray) -> np.ndarray:
            return array.reshape(m, *shape).astype(dtype)

        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (self.sum / self.count.reshape(-1, 1)).astype(summary_dtype(dtype))
        stats = [values(self.min), values(self.max), mean.reshape(m, *shape), values(self.last)]
        if block > 1 and summary_dtype(dtype) == np.float32:  # blocks of float32 values: display precision
            stats = [display_precision(stat).astype(stat.dtype) for stat in stats]
        low, high, mean, last = stats
        return Summary(
            block,
            self.first.astype(np.int64),
            self.last_step.astype(np.int64),
            self.count.astype(np.int64),
            low,
            high,
            mean.astype(np.float64),
            last,
        )


def aligned_starts(first_record: int, n: int, block: int) -> np.ndarray:
    """Where blocks of ``block`` records (aligned to the record index) start in ``n`` records from ``first_record``."""
    starts = np.r_[0, np.arange((-first_record) % block, n, block)]
    return np.unique(starts[starts < n]).astype(np.intp)


def summarise(steps: np.ndarray, values: np.ndarray, first_record: int, block: int) -> Summary:
    """The :class:`Summary` of consecutive records in memory: ``steps [n]``, ``values [n, *shape]``, the first of
    which has record index ``first_record``; blocks of ``block`` records aligned to the record index."""
    values = np.asarray(values)
    n, shape = len(steps), values.shape[1:]
    pieces = Pieces.records(steps, values.reshape(n, int(np.prod(shape))))  # -1 cannot be inferred when n = 0
    if n and block > 1:  # blocks of one record are the records
        pieces = pieces.reduce(aligned_starts(first_record, n, block))
    return pieces.summary(block, shape, values.dtype)


def summary_block(records: tuple[int, int], points: int) -> int:
    """The coarsest block (1 or one of ``SUMMARY_BLOCKS``) that still gives >= ``points`` blocks over ``records``.

    ``records`` = ``(i0, i1)``, the half-open range of record indices; blocks are aligned to multiples of the
    block size, so a range cut mid-block counts its partial first and last blocks.
    """
    if int(points) < 1:
        raise ValueError(f"points must be >= 1, got {points!r}")
    i0, i1 = records
    chosen = 1
    for block in SUMMARY_BLOCKS:
        if i1 > i0 and (i1 - 1) // block - i0 // block + 1 >= points:
            chosen = block
    return chosen


class BlockReader:
    """Blocks of one stream from stored block tables, completed from finer blocks and records.

    Args:
        width: values per record (C, the flattened record).
        records: ``(i0, i1) -> (steps [k], values [k, C])``, the stream's records ``i0 .. i1 - 1``.
        stored: ``(j, k0, k1) -> Pieces``, stored blocks ``k0 .. k1 - 1`` of size ``SUMMARY_BLOCKS[j]``.
        n_stored: ``j -> int``, how many blocks of size ``SUMMARY_BLOCKS[j]`` are stored (and backed by records).
    """

    def __init__(
        self,
        width: int,
        records: Callable[[int, int], tuple[np.ndarray, np.ndarray]],
        stored: Callable[[int, int, int], Pieces],
        n_stored: Callable[[int], int],
    ) -> None:
        self.width = width
        self._records = records
        self._stored = stored
        self._n_stored = n_stored

    def records(self, i0: int, i1: int) -> Pieces:
        steps, values = self._records(i0, i1)
        return Pieces.records(steps, np.asarray(values).reshape(len(steps), self.width))

    def blocks(self, j: int, k0: int, k1: int) -> Pieces:
        """Blocks ``k0 .. k1 - 1`` of size ``SUMMARY_BLOCKS[j]`` (all inside the committed records)."""
        if k1 <= k0:
            return Pieces.concat([], self.width)
        stored = min(self._n_stored(j), k1)
        parts = [self._stored(j, k0, stored)] if k0 < stored else []
        low = max(k0, stored)
        if low < k1:
            if j == 0:
                finer, factor = self.records(low * SUMMARY_BLOCKS[0], k1 * SUMMARY_BLOCKS[0]), SUMMARY_BLOCKS[0]
            else:
                factor = SUMMARY_BLOCKS[j] // SUMMARY_BLOCKS[j - 1]
                finer = self.blocks(j - 1, low * factor, k1 * factor)
            parts.append(finer.reduce(np.arange(0, len(finer), factor)))
        return Pieces.concat(parts, self.width)

    def cover(self, i0: int, i1: int, j: int) -> Pieces:
        """Pieces that cover records ``i0 .. i1 - 1`` exactly: blocks of size <= ``SUMMARY_BLOCKS[j]`` where they
        fit whole, records at the ends (``j = -1``: records only)."""
        if i1 <= i0:
            return Pieces.concat([], self.width)
        if j < 0:
            return self.records(i0, i1)
        block = SUMMARY_BLOCKS[j]
        k0, k1 = -(-i0 // block), i1 // block
        if k1 <= k0:
            return self.cover(i0, i1, j - 1)
        inner = self.blocks(j, k0, k1)
        return Pieces.concat([self.cover(i0, k0 * block, j - 1), inner, self.cover(k1 * block, i1, j - 1)], self.width)

    def summary(self, i0: int, i1: int, block: int) -> Pieces:
        """Records ``i0 .. i1 - 1`` in blocks of ``block`` (one of ``SUMMARY_BLOCKS``), partial at the ends."""
        j = SUMMARY_BLOCKS.index(block)
        k0, k1 = -(-i0 // block), i1 // block
        if k1 <= k0:
            return _merged(self.cover(i0, i1, j - 1))
        head = _merged(self.cover(i0, k0 * block, j - 1))
        tail = _merged(self.cover(k1 * block, i1, j - 1))
        return Pieces.concat([head, self.blocks(j, k0, k1), tail], self.width)


def _merged(pieces: Pieces) -> Pieces:
    """All pieces as one (nothing when there are none)."""
    return pieces.reduce(np.zeros(1, np.intp)) if len(pieces) else pieces
