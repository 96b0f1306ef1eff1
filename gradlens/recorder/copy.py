"""Copy the committed records of a run file (any schema version) into a new one: what resume and repair do.

Rows are read through :class:`gradlens.loader.TableReader` (so a killed writer's tails are read too) in slabs
of about ``SLAB_BYTES`` and appended through :class:`~gradlens.recorder.runfile.RunFile`, which rebuilds the
summary: memory stays bounded whatever the file's length. Probes keep their stored dtypes (a run recorded with
float64 statistics stays float64).
"""

from __future__ import annotations

import math

import h5py
import numpy as np

from gradlens.loader import TableReader, stored_quantities
from gradlens.recorder.runfile import RunFile
from gradlens.schema import EVENT_COLUMNS, EVENTS, N_ROWS, RUN_STATUS, STATUS_RUNNING, STEP

SLAB_BYTES = 16 * 1024 * 1024


def _slabs(reader: TableReader, row_bytes: int, limit: int | None):
    """``(steps, keep, a, b)`` per slab of rows: ``keep`` marks the rows with ``step <= limit``."""
    rows = max(1, SLAB_BYTES // max(1, row_bytes))
    for a in range(0, reader.n_rows, rows):
        b = min(reader.n_rows, a + rows)
        steps = reader.read(STEP, a, b)
        keep = np.ones(len(steps), dtype=bool) if limit is None else steps <= limit
        yield steps[keep], keep, a, b


def committed_rows(file: h5py.File) -> dict[str, int]:
    """The committed rows of every table of a run file: ``scalars``, ``events``, ``probes/<name>``."""
    tables = ["scalars", *([EVENTS] if EVENTS in file else []), *(f"probes/{p}" for p in file["probes"])]
    return {table: int(file[table][N_ROWS][()]) for table in tables}


def copy_records(old: h5py.File, path: str, new: RunFile, limit: int | None) -> None:
    """Append the committed records of ``old`` (at ``path``) with ``step <= limit`` (None: all) to ``new``: the
    layer table and probe tables (created in ``new`` with the stored quantities), scalars and events."""
    live = int(old.attrs["schema_version"]) >= 3 and old[RUN_STATUS][()].decode() == STATUS_RUNNING
    if "layers" in old:
        quantities = stored_quantities(old)
        records = {probe: int(old["probes"][probe][N_ROWS][()]) for probe in quantities}
        new.start(old["layers"][()], quantities, records)
        for probe, declared in quantities.items():
            reader = TableReader(path, old["probes"][probe], live)
            row_bytes = sum(math.prod(q.shape) * np.dtype(q.dtype).itemsize for q in declared.values())
            for steps, keep, a, b in _slabs(reader, row_bytes, limit):
                columns = {name: reader.read(name, a, b)[keep] for name in declared}
                new.add_probe(probe, steps, columns)
                new.write(commit=False)
    reader = TableReader(path, old["scalars"], live)
    for steps, keep, a, b in _slabs(reader, 80, limit):
        new.add_scalars(steps, reader.read("name", a, b)[keep], reader.read("value", a, b)[keep])
        new.write(commit=False)
    if EVENTS in old:
        reader = TableReader(path, old[EVENTS], live)
        for steps, keep, a, b in _slabs(reader, 1400, limit):
            if len(steps):
                new.add_events({STEP: steps, **{name: reader.read(name, a, b)[keep] for name in EVENT_COLUMNS}})
                new.write(commit=False)
