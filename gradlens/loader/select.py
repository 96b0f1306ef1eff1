"""Which records a read returns: its arguments checked (``points``, ``stride``), one scalar's step range, and the
rows of a column at given indices (:class:`gradlens.loader.run.Run` calls these)."""

from __future__ import annotations

import numpy as np

from gradlens.loader.rows import TableReader


def check_points(points: int) -> int:
    if int(points) < 1:
        raise ValueError(f"points must be >= 1, got {points!r}")
    return int(points)


def check_stride(stride: int | None) -> int:
    if stride is None:
        return 1
    if int(stride) < 1:
        raise ValueError(f"stride must be >= 1 (every stride-th record), got {stride!r}")
    return int(stride)


def scalar_range(steps: np.ndarray, start: int | None, stop: int | None) -> tuple[int, int]:
    """Records of one scalar from the first with ``step >= start`` to the last with ``step < stop``."""
    inside = np.ones(len(steps), dtype=bool)
    if start is not None:
        inside &= steps >= int(start)
    if stop is not None:
        inside &= steps < int(stop)
    found = np.flatnonzero(inside)
    return (int(found[0]), int(found[-1]) + 1) if len(found) else (0, 0)


def rows_at(table: TableReader, name: str, rows: np.ndarray) -> np.ndarray:
    """The rows ``rows`` (increasing) of a column: the span that holds them is read, then indexed."""
    if not len(rows):
        return table.read(name, 0, 0)
    return table.read(name, int(rows[0]), int(rows[-1]) + 1)[rows - rows[0]]
