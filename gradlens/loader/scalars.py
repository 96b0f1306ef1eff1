"""The records of one logged scalar, by index: from its own table or found in the long-format ``/scalars`` table.

Version 5 files keep the steps and values of the k-th logged name (of ``/scalars/names``) in
``/scalars/by_name/<k>`` for the first ``schema.SCALAR_SLOTS`` names: reading a scalar's step range there is a
bisection and a read of the rows returned. Older files, and names logged after the slots ran out, are found by
one pass over the ``name`` and ``step`` columns of ``/scalars`` (every name's rows).
"""

from __future__ import annotations

import h5py
import numpy as np

from gradlens.loader.rows import TableReader
from gradlens.loader.select import rows_at, scalar_range
from gradlens.schema import BY_NAME, NAMES, STEP


class ScalarRecords:
    """Records ``0 .. n - 1`` of one scalar: ``steps(a, b)``, ``values(a, b)`` and ``span(start, stop)``."""

    def __init__(self, table: TableReader, rows: np.ndarray | None = None, steps: np.ndarray | None = None) -> None:
        self.table = table  # its own table (rows None) or /scalars (rows: the name's rows there, steps theirs)
        self.rows = rows
        self._steps = steps
        self.n = table.n_rows if rows is None else len(rows)

    @classmethod
    def find(cls, file: h5py.File, reader, name: str) -> ScalarRecords | None:
        """The records of ``name`` in ``file`` (``reader(group)`` makes a :class:`TableReader`), or None if it was
        never logged."""
        encoded = name.encode()
        if NAMES in file:
            logged = reader(file[NAMES]).read("name").tolist()
            if encoded not in logged:
                return None
            slot = f"{BY_NAME}/{logged.index(encoded)}"
            if slot in file:
                return cls(reader(file[slot]))
        table = reader(file["scalars"])
        rows = np.flatnonzero(table.read("name") == encoded)
        return cls(table, rows, table.read(STEP)[rows]) if len(rows) else None

    def span(self, start: int | None, stop: int | None) -> tuple[int, int]:
        """Records from the first with ``step >= start`` to the last with ``step < stop`` (steps grow)."""
        if self.rows is not None:
            return scalar_range(self._steps, start, stop)
        i0 = self.table.bisect(start, 0)
        return i0, max(i0, self.table.bisect(stop, self.n))

    def steps(self, a: int, b: int, stride: int = 1) -> np.ndarray:
        if self.rows is not None:
            return self._steps[a:b:stride]
        return self.table.read(STEP, a, b, stride)

    def values(self, a: int, b: int, stride: int = 1) -> np.ndarray:
        """float64 values of records ``a, a + stride, ... < b``."""
        if self.rows is not None:
            return rows_at(self.table, "value", self.rows[a:b:stride]).astype(np.float64)
        return self.table.read("value", a, b, stride).astype(np.float64)
