"""The multi-resolution summary, kept as the run records: min / max / mean / last per block of records.

For every block size b in ``schema.SUMMARY_BLOCKS`` (32, 128, 512, ... records; the file stores those of
``schema.STORED_BLOCKS``) and every summarised quantity (``[layer]`` and ``[]`` ones), a block of the b
consecutive records ``k b .. k b + b - 1`` holds

- min = fmin over the block's records, max = fmax (NaN ignored: NaN only when every record is NaN),
- mean = (1/b) Σ records, summed in float64 (NaN or ±Inf as soon as one record is non-finite),
- last = the block's last record,

stored as ``[..., 4]`` (``schema.SUMMARY_STATS``) in ``schema.summary_dtype`` of the quantity (float32 ones at
``schema.display_precision``: relative error <= 2**-8, the sums behind the means are kept exact), with the steps of
its first and last record. A block of size 4b is made from four blocks of size b (min of mins, max of maxes,
sum of sums, last of lasts), so each record is touched once and the state in memory is one unfinished block
per level: nothing grows with the run. Only complete blocks are written; a reader computes the rest from
finer blocks and records (:mod:`gradlens.loader.summary`, which also defines the arithmetic,
:class:`~gradlens.loader.summary.Pieces`).
"""

from __future__ import annotations

import numpy as np

from gradlens.loader.summary import Pieces
from gradlens.schema import LAST_STEP, STEP, SUMMARY_BLOCKS, Quantity, display_precision, summary_dtype


class Level:
    """Blocks of ``factor`` consecutive pieces of the level below (or of records): the unfinished one in memory."""

    def __init__(self, factor: int) -> None:
        self.factor = factor
        self.partial: Pieces | None = None  # the unfinished block, as a piece of one
        self.held = 0  # pieces in it

    def add(self, pieces: Pieces) -> Pieces | None:
        """Take pieces in order; return the blocks they complete (None if none)."""
        m = len(pieces)
        if m == 0:
            return None
        starts = np.r_[0, np.arange(self.factor - self.held, m, self.factor)]
        starts = np.unique(starts[starts < m])
        groups = pieces.reduce(starts)
        sizes = np.diff(np.r_[starts, m])
        if self.held:
            merged = self.partial.combine(groups.select(slice(0, 1)))
            groups = Pieces.concat([merged, groups.select(slice(1, None))], merged.min.shape[1])
            sizes[0] += self.held
        complete = sizes == self.factor
        if complete[-1]:
            self.partial, self.held = None, 0
        else:
            self.partial, self.held = groups.select(slice(len(sizes) - 1, None)), int(sizes[-1])
        return groups.select(complete) if complete.any() else None


class Summary:
    """The summary of one stream of records: one level per block size, fed record by record (in batches).

    Args:
        quantities: the summarised quantities (name -> Quantity), flattened side by side into ``C`` columns.
        stored: the block sizes whose complete blocks :meth:`add` returns (the file's stored levels).
    """

    def __init__(self, quantities: dict[str, Quantity], stored: tuple[int, ...]) -> None:
        self.quantities = quantities
        self.stored = stored
        self.levels = [Level(SUMMARY_BLOCKS[0])] + [
            Level(block // finer) for finer, block in zip(SUMMARY_BLOCKS, SUMMARY_BLOCKS[1:], strict=False)
        ]

    def add(self, steps: np.ndarray, values: dict[str, np.ndarray]) -> dict[int, dict[str, np.ndarray]]:
        """Feed records (``steps [k]``, each quantity ``[k, *shape]``); returns the completed blocks per block
        size as table rows: ``step`` (first), ``last_step`` and each quantity ``[blocks, *shape, 4]``."""
        k = len(steps)
        flat = np.concatenate([np.asarray(values[q]).reshape(k, -1) for q in self.quantities], axis=1)
        pieces: Pieces | None = Pieces.records(steps, flat)
        out = {}
        for block, level in zip(SUMMARY_BLOCKS, self.levels, strict=True):
            pieces = level.add(pieces)
            if pieces is None:
                break
            if block in self.stored:
                out[block] = self.rows(pieces)
        return out

    def rows(self, blocks: Pieces) -> dict[str, np.ndarray]:
        """Table rows of complete blocks: min, max, mean, last stacked on a last axis, per quantity."""
        rows = {STEP: blocks.first, LAST_STEP: blocks.last_step}
        column = 0
        count = blocks.count[:, None].astype(np.float64)
        for name, quantity in self.quantities.items():
            width = int(np.prod(quantity.shape))
            part = slice(column, column + width)
            column += width
            stats = [blocks.min[:, part], blocks.max[:, part], blocks.sum[:, part] / count, blocks.last[:, part]]
            stacked = np.stack(stats, axis=-1).reshape(len(blocks), *quantity.shape, len(stats))
            dtype = summary_dtype(quantity.dtype)
            rows[name] = display_precision(stacked) if dtype == np.float32 else stacked.astype(dtype)
        return rows
