"""Read the committed rows of one table of a run file, by range, stride and layers, at a cost linear in the result.

A table (``/probes/<probe>``, ``/scalars``, ``/events``, a summary block table) has a ``step`` column, further
columns and ``n_rows``: readers use rows ``[:n_rows]`` only. In a version 3 file being written (``/run/status``
``running``) the rows after the last whole chunk of a column (``R * floor(n_rows / R)``, ``R`` its chunk length)
are the first rows of ``tail/<column>``; see :mod:`gradlens.recorder.tables`.

A read of a file open for write (SWMR) checks that the chunks holding the rows it returns exist and lie inside
the file (a stale or truncated chunk index would otherwise give HDF5's fill values). A live reader retries a
chunk whose checksum fails (the writer was rewriting it), and re-reads ``n_rows`` after reading a tail: when
the writer moved on to another chunk meanwhile, what it read may have been replaced, and it reads again.
"""

from __future__ import annotations

import os
import time

import h5py
import numpy as np

from gradlens.loader.files import RunFileError, _first_line
from gradlens.schema import N_ROWS, STEP, TAIL

READ_RETRIES = 3  # a live reader may catch a chunk while the writer rewrites it: its checksum then fails
TAIL_RETRIES = 20  # times a live reader re-reads a tail the writer moved past while it read
LOOKUPS = 8  # chunks looked up one by one; more are found in one pass over the chunk index


def check_chunks(path: str, dataset: h5py.Dataset, rows: np.ndarray, first_axis: np.ndarray | None, size: int) -> None:
    """The chunks that hold ``rows`` (and, for records with a first axis, its positions ``first_axis``) of
    ``dataset`` exist and end inside the file's ``size`` bytes.

    HDF5 finds a chunk by its coordinates by walking the whole chunk index (0.2 us a chunk: 0.84 ms at 4370
    chunks), so a few chunks are looked up one by one and more in one pass over the index (``chunk_iter``).

    Raises:
        RunFileError: a chunk is missing or lies past the end (a truncated or damaged file).
    """
    if dataset.chunks is None or not len(rows):
        return
    chunk_rows = dataset.chunks[0]
    starts = np.unique(rows // chunk_rows) * chunk_rows
    if dataset.ndim > 1:
        width = dataset.chunks[1]
        positions = np.arange(dataset.shape[1]) if first_axis is None else first_axis
        groups = (np.unique(positions // width) * width).tolist()
    else:
        groups = [None]
    rest = (0,) * max(0, dataset.ndim - 2)
    wanted = [
        (start,) if group is None else (start, int(group), *rest) for start in starts.tolist() for group in groups
    ]
    if len(wanted) <= LOOKUPS:
        found = {coord: dataset.id.get_chunk_info_by_coord(coord) for coord in wanted}
    else:
        found = {}
        dataset.id.chunk_iter(lambda info: found.__setitem__(tuple(info.chunk_offset), info))
    for coord in wanted:
        info = found.get(coord)
        if info is None or info.byte_offset is None or info.byte_offset + info.size > size:
            raise RunFileError(
                f"{path} is truncated or damaged: {dataset.name} lacks the data of rows {coord[0]} onwards"
            )


class TableReader:
    """The committed rows of one table group of an open file (any schema version).

    Args:
        path: the file's path (for messages and its size).
        group: the table's group in the open file.
        live: the file is version 3 and still ``running``: rows past a column's last whole chunk are in its tail.
    """

    def __init__(self, path: str, group: h5py.Group, live: bool) -> None:
        self.path = path
        self.group = group
        self.n_rows = int(group[N_ROWS][()])
        self.size = os.path.getsize(path)  # after reading n_rows: committed chunks were written before it
        self.tails = group.get(TAIL) if live else None
        self.retries = READ_RETRIES if group.file.swmr_mode else 1
        self._steps: dict[int, np.ndarray] = {}

    def read(
        self, name: str, start: int = 0, stop: int | None = None, stride: int = 1, select: np.ndarray | None = None
    ) -> np.ndarray:
        """Rows ``start, start + stride, ... < stop`` (at most ``n_rows``) of a column; ``select``: increasing
        positions along the record's first axis (its layers), or None for all."""
        stop = self.n_rows if stop is None else min(int(stop), self.n_rows)
        start = min(int(start), stop)
        count = self.n_rows
        for _ in range(TAIL_RETRIES):
            values, packed = self._read_once(name, start, stop, stride, select, count)
            if packed is None:
                return values
            count = self._current_rows()  # the writer may have moved the tail's rows into the column meanwhile
            if self._packed(self.group[name], count) == packed:
                return values
            self.tails[name].refresh()  # its cached chunks hold what the writer has since overwritten
        raise RunFileError(f"{self.path}: {self.group[name].name} kept changing while read; try again")

    def _current_rows(self) -> int:
        counter = self.group[N_ROWS]
        counter.refresh()
        return int(counter[()])

    def _packed(self, dataset: h5py.Dataset, count: int) -> int:
        """Rows of the column held in the column itself (the rest are in its tail) for ``count`` committed rows."""
        if self.tails is None:
            return count
        rows = dataset.chunks[0]
        return rows * (count // rows)

    def _read_once(
        self, name: str, start: int, stop: int, stride: int, select: np.ndarray | None, count: int
    ) -> tuple[np.ndarray, int | None]:
        """The rows (``count`` committed), and the rows held in the column itself when part of the result came
        from the tail (else None)."""
        dataset = self.group[name]
        packed = self._packed(dataset, count)
        if dataset.shape[0] < packed:
            dataset.refresh()
        if dataset.shape[0] < packed:
            raise RunFileError(
                f"{self.path} is damaged: {dataset.name} holds {dataset.shape[0]} rows, {packed} committed"
            )
        rows = np.arange(start, stop, stride)
        in_main = rows[rows < packed]
        in_tail = rows[rows >= packed] - packed
        parts = []
        if len(in_main) or not len(in_tail):
            parts.append(self._rows(dataset, in_main, select))
        if len(in_tail):
            parts.append(self._rows(self.tails[name], in_tail, select))
        values = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return values, packed if len(in_tail) else None

    def _rows(self, dataset: h5py.Dataset, rows: np.ndarray, select: np.ndarray | None) -> np.ndarray:
        """Rows ``rows`` (an arithmetic progression) of one dataset, checksum failures retried; in a file open
        for write (SWMR) the chunks are checked first: its reader's view of the chunk index may predate the
        ``n_rows`` it read (then it looks again, afresh), and a missing chunk would read as fill values. A closed
        file needs no such check: its size was checked against its superblock and its index is checksummed."""
        if self.group.file.swmr_mode:
            try:
                check_chunks(self.path, dataset, rows, select, self.size)
            except RunFileError:
                dataset.refresh()
                self.size = os.path.getsize(self.path)
                check_chunks(self.path, dataset, rows, select, self.size)
        if not len(rows):
            index: tuple = (slice(0, 0),)
        else:
            step = int(rows[1] - rows[0]) if len(rows) > 1 else 1
            index = (slice(int(rows[0]), int(rows[-1]) + 1, step),)
        if select is not None:
            index += (select,)
        for attempt in range(self.retries):
            try:
                return dataset[index]
            except OSError as error:
                if attempt + 1 == self.retries:
                    raise RunFileError(
                        f"{self.path} is damaged: {dataset.name} fails its checksum ({_first_line(error)})"
                    ) from None
                time.sleep(0.05)
                dataset.refresh()
        raise AssertionError("unreachable")

    def step_at(self, row: int) -> int:
        """The step of one row, reading (and keeping) the step column's chunk that holds it."""
        rows = self.group[STEP].chunks[0]
        chunk = row // rows
        if chunk not in self._steps:
            self._steps[chunk] = self.read(STEP, chunk * rows, (chunk + 1) * rows)
        return int(self._steps[chunk][row - chunk * rows])

    def bisect(self, step: int | None, default: int) -> int:
        """The first row whose step is >= ``step`` (steps non-decreasing): log2(n_rows) chunk reads at most."""
        if step is None:
            return default
        low, high = 0, self.n_rows
        while low < high:
            middle = (low + high) // 2
            if self.step_at(middle) < step:
                low = middle + 1
            else:
                high = middle
        return low
