"""Append rows to the tables of a version 3 file: whole chunks compressed once, the unfinished chunk in a tail.

A table is a group with a ``step`` column, further columns (``[N, *shape]`` each) and the ``n_rows`` counter.
Each column keeps the rows of its unfinished chunk in memory (``R`` rows, its chunk length: nothing grows
with the run) and writes a chunk into the column itself (``main``) once it is complete: one shuffled,
deflated, checksummed chunk per layer group, written with ``H5Dwrite_chunk`` (:mod:`gradlens.recorder.chunks`).

Tables whose rows must be readable at every flush (probes, scalars, events) also have a ``tail`` group with one
dataset per column: ``R`` rows, no compression, a Fletcher-32 checksum per small chunk, rewritten in place at
every flush (a chunk rewritten at its size keeps its place in the file: SWMR writers never reuse freed space,
so a chunk that grew would lose its old copy). While ``/run/status`` is ``running``, ``main`` holds
``R * floor(n_rows / R)`` rows and the rest are the first rows of the tail; once :meth:`Table.pack` ran at close,
``main[:n_rows]`` is every row. A commit never crosses a chunk boundary of a tail column
(:meth:`Table.next_boundary`): the rows ending a chunk are committed before the next chunk's rows overwrite the
tail, so a reader that re-reads ``n_rows`` after reading the tail knows whether what it read was replaced.

Block tables (the summary) have no tail: their ``n_rows`` counts the rows in ``main`` only (whole chunks while
the file is written); a reader computes the blocks after them from finer blocks and records.
"""

from __future__ import annotations

from collections.abc import Mapping

import h5py
import numpy as np
from h5py import h5s, h5z

from gradlens.recorder.chunks import DEFLATE_LEVEL, encode
from gradlens.schema import COMPACT_DEFLATE, N_ROWS, STEP, TAIL, chunk_shape, tail_chunk_rows

ColumnSpec = tuple[tuple[int, ...], tuple[str, ...], np.dtype]  # record shape, axes, dtype


def write_rows(dataset: h5py.Dataset, start: int, values: np.ndarray) -> None:
    """``dataset[start : start + len(values)] = values`` through the low-level calls (a fraction of the cost)."""
    values = np.ascontiguousarray(values)
    space = dataset.id.get_space()
    space.select_hyperslab((start,) + (0,) * (values.ndim - 1), values.shape)
    dataset.id.write(h5s.create_simple(values.shape), space, values)


def write_scalar(dataset: h5py.Dataset, value: np.generic) -> None:
    """Overwrite a scalar dataset (a counter, the status, the flush time)."""
    dataset.id.write(h5s.ALL, h5s.ALL, np.asarray(value))


def create_table(
    group: h5py.Group,
    columns: Mapping[str, ColumnSpec],
    *,
    tail: bool = True,
    rows: int | None = None,
    compact: bool = False,
) -> None:
    """Create the datasets of an empty table in ``group``: ``step``, every column, ``n_rows`` (and ``tail/``).

    ``rows`` fixes the chunk length of every column (default: :func:`gradlens.schema.chunk_shape`). A
    ``compact`` table (a closed file rewritten, :mod:`gradlens.recorder.compact`) has no tail, one layer per
    chunk and deflate level ``COMPACT_DEFLATE``.
    """
    tails = group.create_group(TAIL) if tail and not compact else None
    group.create_dataset(N_ROWS, data=np.int64(0))
    for name, (shape, axes, dtype) in {STEP: ((), (), np.dtype(np.int64)), **columns}.items():
        chunks = chunk_shape(shape, axes, dtype, compact)
        if rows is not None:
            chunks = (int(rows), *shape)
        group.create_dataset(
            name,
            shape=(0, *shape),
            maxshape=(None, *shape),
            dtype=dtype,
            chunks=chunks,
            shuffle=True,
            compression="gzip",
            compression_opts=COMPACT_DEFLATE if compact else DEFLATE_LEVEL,
            fletcher32=True,
        )
        if tails is not None:
            tails.create_dataset(
                name,
                shape=(chunks[0], *shape),
                dtype=dtype,
                chunks=(tail_chunk_rows(shape, dtype, chunks[0]), *shape),
                fletcher32=True,
            )


def deflate_level(dataset: h5py.Dataset) -> int:
    """The deflate level of ``dataset``'s filter pipeline (chunks written directly must be encoded the same)."""
    return int(dataset.id.get_create_plist().get_filter_by_id(h5z.FILTER_DEFLATE)[1][0])


class Column:
    """One column of a table being written: its unfinished chunk in memory (and the tail), whole chunks in main."""

    def __init__(self, main: h5py.Dataset, tail: h5py.Dataset | None) -> None:
        self.main = main
        self.tail = tail
        self.rows = main.chunks[0]
        self.group = main.chunks[1] if main.ndim > 1 else None  # records per chunk along the first record axis
        self.buffer = np.zeros((self.rows, *main.shape[1:]), dtype=main.dtype)
        self.level = deflate_level(main)
        self.filled = 0  # rows of the unfinished chunk
        self.packed = 0  # rows in main

    def append(self, values: np.ndarray) -> None:
        """Add rows after the last (a tail column never takes rows past the end of its unfinished chunk)."""
        start = 0
        while start < len(values):
            take = min(self.rows - self.filled, len(values) - start)
            if self.tail is not None and take < len(values) - start:
                raise ValueError(f"{self.main.name}: a commit may not cross a chunk boundary of a tail column")
            self.buffer[self.filled : self.filled + take] = values[start : start + take]
            if self.tail is not None:
                write_rows(self.tail, self.filled, values[start : start + take])
            self.filled += take
            start += take
            if self.filled == self.rows:
                self._write_chunk(self.rows)
                self.filled = 0

    def pack(self) -> None:
        """Write the unfinished chunk into main (at close: main then holds every row)."""
        if self.filled:
            self.buffer[self.filled :] = 0  # HDF5's fill value past the last row
            self._write_chunk(self.filled)
            self.filled = 0

    def _write_chunk(self, count: int) -> None:
        """Encode the buffered chunk (``count`` rows valid) and write it at row ``packed`` of main."""
        self.main.id.set_extent((self.packed + count, *self.main.shape[1:]))
        if self.group is None:
            self.main.id.write_direct_chunk((self.packed,), encode(self.buffer, self.level))
        else:
            width = self.buffer.shape[1]
            zeros = (0,) * (self.buffer.ndim - 2)
            for first in range(0, width, self.group):
                block = self.buffer[:, first : first + self.group]
                if block.shape[1] < self.group:  # the last group of layers: padded with the fill value
                    padding = [(0, 0), (0, self.group - block.shape[1])] + [(0, 0)] * (self.buffer.ndim - 2)
                    block = np.pad(block, padding)
                self.main.id.write_direct_chunk((self.packed, first, *zeros), encode(block, self.level))
        self.packed += count


class Table:
    """The columns of one table group and its row counter: rows are appended, then committed."""

    def __init__(self, group: h5py.Group) -> None:
        self.group = group
        self.counter = group[N_ROWS]
        tails = group.get(TAIL)
        names = [name for name, item in group.items() if isinstance(item, h5py.Dataset) and name != N_ROWS]
        self.columns = {name: Column(group[name], None if tails is None else tails[name]) for name in names}
        self.has_tail = tails is not None
        self.rows = 0  # rows appended (visible to readers once :meth:`commit` ran after the file's flush)
        self.committed = 0

    def next_boundary(self) -> int | None:
        """Rows that may be appended before the next commit: up to the nearest chunk end of any tail column."""
        if not self.has_tail:
            return None
        return min(column.rows - column.filled for column in self.columns.values())

    def append(self, values: Mapping[str, np.ndarray]) -> None:
        """Append rows: ``values`` holds ``step`` and every column in their stored dtypes."""
        if set(values) != set(self.columns):
            raise ValueError(f"{self.group.name}: got columns {sorted(values)}, expected {sorted(self.columns)}")
        for name, column in self.columns.items():
            column.append(values[name])
        self.rows += len(values[STEP])

    def commit(self) -> bool:
        """Advance ``n_rows`` to what readers may now read (call after the rows reached the file).

        A table with a tail shows every appended row; a block table only the rows in main.
        """
        visible = self.rows if self.has_tail else min(column.packed for column in self.columns.values())
        if visible == self.committed:
            return False
        write_scalar(self.counter, np.int64(visible))
        self.committed = visible
        return True

    def pack(self) -> None:
        """At close: every column's unfinished chunk into main, so that ``main[:rows]`` is every row."""
        for column in self.columns.values():
            column.pack()
