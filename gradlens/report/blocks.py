"""What a screen reads of a run: its records in blocks of consecutive records, at a resolution that does not
grow with the run (issue 23.3). Used by the report's views, ``compare``, ``watch`` and its live page.

A *stream* is one recorded quantity of one probe (``[layer]`` or ``[]``), or one logged scalar. Its records
``0 .. n-1`` are cut into blocks of ``b`` consecutive records aligned to the record index (block k = records
``k·b .. k·b + b - 1``; the last block may be partial), each described by a
:class:`gradlens.loader.Summary` row: first and last step, count, min, max, mean, last.

The block size comes from the ladder ``LADDER`` = 1, 2, 4, 8, 16 and the file's stored summary blocks
(``schema.SUMMARY_BLOCKS``: 32, 128, 512, ...): :func:`block_for` takes the smallest that gives at most
``MAX_POINTS`` blocks. Blocks of 32 records or more are read from the file's stored summary
(:meth:`gradlens.loader.Run.summary`, O(blocks) values whatever the run's length); blocks of 1–16 records are
made in memory from at most ``16 · MAX_POINTS`` records. So a view never reads more than about
``16 · MAX_POINTS`` records per stream, at any run length.

:func:`resolution` says in words what one point of a view stands for ("each point: min / mean / max over
32 records (steps 0–31, 32–63, ...)"), as every view of a summary must.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradlens.loader import Run, Summary, summarise
from gradlens.schema import SUMMARY_BLOCKS

MAX_POINTS = 1024  # blocks per stream on a screen: a heat map's step columns, a curve's points
FINE_BLOCKS = (1, 2, 4, 8, 16)  # made in memory from records (at most 16 × MAX_POINTS of them)
LADDER = FINE_BLOCKS + tuple(SUMMARY_BLOCKS)  # every block size a view uses, finest first
READ_TRIES = 4  # a live file grows while it is read: a summary request is retried with the new record count
COUNTS_KEPT = 512  # scalar record counts remembered (``scalar_count``), oldest dropped first
_SCALAR_COUNTS: dict[tuple, int] = {}


def block_for(n_records: int, max_points: int = MAX_POINTS) -> int:
    """The smallest block of ``LADDER`` that cuts ``n_records`` records into at most ``max_points`` blocks.

    Args:
        n_records: records of the stream (0 for none: block 1).
        max_points: the most blocks wanted (>= 1).

    Raises:
        ValueError: ``max_points`` < 1.
    """
    if int(max_points) < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points!r}")
    for block in LADDER:
        if -(-int(n_records) // block) <= max_points:
            return block
    return LADDER[-1]


@dataclass(frozen=True)
class Stream:
    """One recorded stream of a run: ``probe``'s ``quantity`` (``[layer]`` or ``[]`` axes), or, with ``probe``
    None, the logged scalar named ``quantity``.

    Attributes:
        run: the run.
        probe: the probe, or None for a logged scalar.
        quantity: the quantity of the probe, or the scalar's name.
        layers: layer names (or indices) to read, None for all (probe quantities only).
    """

    run: Run
    probe: str | None
    quantity: str
    layers: tuple | None = None

    def count(self) -> int:
        """Committed records of the stream (a probe: one counter read; a scalar: its coarsest stored blocks,
        remembered per file state: :func:`scalar_count`)."""
        if self.probe is not None:
            return self.run.n_records(self.probe)
        return scalar_count(self.run, self.quantity)

    def blocks(self, block: int, start_record: int = 0, start_step: int | None = None) -> Summary:
        """The records from ``start_record`` on (the first at step ``start_step``; None: from the first record) in
        blocks of ``block`` records aligned to the record index.

        Args:
            block: one of ``LADDER``.
            start_record: a multiple of ``block``: the record index of ``start_step``'s record.
            start_step: the step of record ``start_record`` (None with ``start_record`` 0).

        Returns:
            a Summary with ``block`` = ``block`` (arrays ``[B, L]`` or ``[B]``).

        Raises:
            ValueError: ``block`` not in ``LADDER`` or ``start_record`` not a multiple of it.
        """
        if block not in LADDER:
            raise ValueError(f"block must be one of {LADDER}, got {block!r}")
        if start_record % block:
            raise ValueError(f"start_record {start_record} is not a multiple of the block {block}")
        if block in FINE_BLOCKS:
            steps, values = self._records(start_step)
            return summarise(steps, values, start_record, block)
        points = max(1, -(-(self.count() - start_record) // block))
        for _ in range(READ_TRIES):
            summary = self._summary(points, start_step)
            if _cut_into(summary, block):
                return summary._replace(block=block)
            points = max(1, -(-int(summary.count.sum()) // block))  # the run grew while it was read
        raise RuntimeError(f"{self.run.path}: the summary of {self.quantity!r} kept changing while read")

    def _records(self, start_step: int | None) -> tuple[np.ndarray, np.ndarray]:
        if self.probe is None:
            return self.run.scalar(self.quantity, start=start_step)
        steps, values, _, _ = self.run.array(self.probe, self.quantity, start=start_step, layers=self._layers())
        return steps, values

    def _summary(self, points: int, start_step: int | None) -> Summary:
        if self.probe is None:
            return self.run.scalar_summary(self.quantity, points=points, start=start_step)
        return self.run.summary(self.probe, self.quantity, points=points, start=start_step, layers=self._layers())

    def _layers(self) -> list | None:
        return None if self.layers is None else list(self.layers)


def scalar_count(run: Run, name: str) -> int:
    """Records of the logged scalar ``name`` (``Run.n_scalar_records``), remembered for the file's state (path,
    last flush, status): a page asks for it once per view, and in files older than version 5 each ask scans the
    scalars' name column."""
    key = (str(run.path), run.last_flush, run.status, name)
    if key not in _SCALAR_COUNTS:
        if len(_SCALAR_COUNTS) >= COUNTS_KEPT:
            _SCALAR_COUNTS.pop(next(iter(_SCALAR_COUNTS)))  # the oldest
        _SCALAR_COUNTS[key] = run.n_scalar_records(name)
    return _SCALAR_COUNTS[key]


def _cut_into(summary: Summary, block: int) -> bool:
    """Whether ``summary``'s pieces are blocks of ``block`` records from a block boundary: every piece but the
    last holds ``block`` records, the last at most that many. (The loader picks the coarsest stored block that
    still gives the points asked for; when that is coarser than ``block``, its one or two pieces may still be
    exactly the blocks asked for.)"""
    counts = summary.count
    if not len(counts):
        return True
    return bool((counts[:-1] == block).all() and counts[-1] <= block)


def span_words(first_steps: np.ndarray, last_steps: np.ndarray) -> str:
    """The steps one block covers, from the start of one block to the start of the next: "32 steps" when
    they are all equal, else their range ("32–64 steps")."""
    first_steps = np.asarray(first_steps)
    spans = np.diff(first_steps) if len(first_steps) > 1 else np.asarray(last_steps) - first_steps + 1
    low, high = int(spans.min()), int(spans.max())
    return f"{low} step{'s' if low != 1 else ''}" if low == high else f"{low}–{high} steps"


def resolution(
    block: int, first_steps: np.ndarray, last_steps: np.ndarray, what: str = "point", stats: str = "min / mean / max"
) -> str:
    """What one ``what`` (point, column, row) of a view of blocks stands for; "" for single records (``block``
    1). ``first_steps``/``last_steps``: each block's first and last step (a Summary's ``first_step``,
    ``last_step``).

    Example: "Resolution: each point is the min / mean / max over a block of 32 consecutive records (32 steps;
    313 blocks, the last may be partial)."
    """
    if block == 1 or not len(first_steps):
        return ""
    each = f"each {what} is the {stats} over a block" if stats else f"one {what} per block"
    return (
        f"Resolution: {each} of {block} consecutive records "
        f"({span_words(first_steps, last_steps)}; {len(first_steps)} blocks, the last may be partial)."
    )


def count_in_blocks(summary: Summary, value: float) -> tuple[np.ndarray, np.ndarray]:
    """How many records of each block equal ``value`` where the other records of the stream can only be
    ``>= 0`` or ``value`` (GradStats' ``nonfinite``: -1 no gradient, 0, or a count of NaN/Inf entries).

    Returns ``(counts [B, *shape], exact [B, *shape])``: exact where no record of the block exceeds 0 (then the
    block's records are ``value`` or 0 and ``count = mean · n / value``); elsewhere at least 1 when the block's
    minimum is ``value``.
    """
    hit = summary.min == value
    exact = summary.max <= 0
    n = summary.count.reshape((-1,) + (1,) * (summary.mean.ndim - 1))
    counts = np.where(exact, np.rint(summary.mean * n / value), 1.0)
    return np.where(hit, counts, 0).astype(np.int64), exact | ~hit
