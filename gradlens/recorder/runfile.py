"""An open version 3 run file being written: rows go to its tables and summaries, then commit in two phases.

A commit writes the rows, flushes the file, and only then advances each table's ``n_rows`` and
``/run/last_flush`` and flushes again: a writer killed at any moment leaves every committed row exact. Rows
are appended in rounds that stop at a chunk boundary of a tail column (:meth:`~gradlens.recorder.tables.Table.
next_boundary`), one commit per round, so a tail is overwritten only after the rows ending its chunk were
committed. The summary (:mod:`gradlens.recorder.summary`) is fed with the same rows in the same flush; a reader
never uses more blocks of size b than ``floor(n_rows / b)``, so a block is never seen before its records.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import h5py
import numpy as np

from gradlens.recorder import layout
from gradlens.recorder.layout import NAME_DTYPE, create_probe, create_slot, init_file
from gradlens.recorder.summary import Summary
from gradlens.recorder.tables import Table, write_scalar
from gradlens.schema import (
    BY_NAME,
    EVENTS,
    LIBVER,
    NAMES,
    STEP,
    SUMMARY,
    Quantity,
    event_dtypes,
    summarised,
)

SCALAR = {"value": Quantity((), (), dtype="float64")}  # how one scalar's stream is summarised


class RunFile:
    """The tables of an open run file, the unfinished chunks and summary blocks in memory, and the commit."""

    def __init__(self, file: h5py.File, compact: bool = False) -> None:
        self.file = file
        self.compact = compact  # a closed run rewritten (gradlens.recorder.compact): no tails, no SWMR
        self.quantities: dict[str, dict[str, Quantity]] = {}
        self._tables: dict[str, Table] = {}
        self._summaries: dict[str, Summary] = {}  # per probe
        self._scalar_summaries: dict[bytes, Summary] = {}  # per scalar name
        self._names: dict[bytes, str | None] = {}  # scalar names already in /scalars/names -> their own table
        self._pending: dict[str, list[dict[str, np.ndarray]]] = {}  # table -> batches of rows to write

    @classmethod
    def create(cls, path: str, meta: dict, compact: bool = False, scalar_records: int | None = None) -> RunFile:
        """A new file at ``path`` (replacing one there) with the root attributes and the empty tables.

        ``compact``: the rewrite of a closed run (:mod:`gradlens.recorder.compact`) of at most
        ``scalar_records`` records per scalar.
        """
        file = h5py.File(path, "w", libver=LIBVER)
        init_file(file, meta, compact, scalar_records)
        return cls(file, compact)

    @property
    def filename(self) -> str:
        return self.file.filename

    def table(self, name: str) -> Table:
        """The writer of a table group (opened once: looking datasets up at every flush costs more than writing)."""
        if name not in self._tables:
            self._tables[name] = Table(self.file[name])
        return self._tables[name]

    def start(
        self, layers: np.ndarray, quantities: dict[str, dict[str, Quantity]], records: dict[str, int] | None = None
    ) -> None:
        """Write the layer table and create every probe's table and summary (``records``: the number of records
        of each probe, when known, so that a compact file holds no summary level longer than its run)."""
        self.file.create_dataset("layers", data=layers)
        for probe, declared in quantities.items():
            create_probe(self.file, probe, declared, self.compact, None if records is None else records[probe])
        self.declare(quantities)

    def declare(self, quantities: dict[str, dict[str, Quantity]]) -> None:
        """The probes whose tables exist in the file (their stored quantities) and their summaries."""
        self.quantities = quantities
        for probe, declared in quantities.items():
            kept = {name: q for name, q in declared.items() if summarised(q)}
            if kept:
                self._summaries[probe] = Summary(kept, self._stored(f"probes/{probe}"))

    def _stored(self, table: str) -> tuple[int, ...]:
        """The block sizes of the summary levels stored for ``table`` (version 3 files being resumed: all)."""
        return tuple(int(block) for block in self.file[f"{table}/{SUMMARY}"].attrs["blocks"])

    def _queue(self, table: str, rows: Mapping[str, np.ndarray]) -> None:
        self._pending.setdefault(table, []).append(dict(rows))

    def add_probe(self, probe: str, steps: np.ndarray, columns: Mapping[str, np.ndarray]) -> None:
        """Rows of a probe (``columns`` in their stored dtypes) and the summary blocks they complete."""
        if not len(steps):
            return
        self._queue(f"probes/{probe}", {STEP: np.asarray(steps, np.int64), **columns})
        summary = self._summaries.get(probe)
        if summary is not None:
            for block, rows in summary.add(steps, {name: columns[name] for name in summary.quantities}).items():
                self._queue(f"probes/{probe}/{SUMMARY}/{block}", rows)

    def add_scalars(self, steps: np.ndarray, names: np.ndarray, values: np.ndarray) -> None:
        """Scalar rows (long format), new names for ``/scalars/names``, each name's rows in its own table while
        there are slots (``/scalars/by_name/<k>``, version 5) and each name's summary blocks."""
        if not len(steps):
            return
        self._queue("scalars", {STEP: steps, "name": names, "value": values})
        for name in dict.fromkeys(names.tolist()):
            mine = names == name
            if name not in self._names:
                self._names[name] = self._slot(len(self._names))
                self._queue(NAMES, {STEP: steps[mine][:1], "name": np.asarray([name], dtype=NAME_DTYPE)})
            slot = self._names[name]
            if slot is not None:
                self._queue(slot, {STEP: steps[mine], "value": values[mine]})
            summary = self._scalar_summaries.get(name)
            if summary is None:
                summary = self._scalar_summaries[name] = Summary(SCALAR, self._stored("scalars"))
            for block, rows in summary.add(steps[mine], {"value": values[mine]}).items():
                count = len(rows[STEP])
                rows = {**rows, "name": np.full(count, name, dtype=NAME_DTYPE)}
                self._queue(f"scalars/{SUMMARY}/{block}", rows)

    def _slot(self, position: int) -> str | None:
        """The table of the ``position``-th logged name, if it has one (a compact file creates it now)."""
        table = f"{BY_NAME}/{position}"
        if self.compact and position < layout.SCALAR_SLOTS and table not in self.file:
            create_slot(self.file, position, compact=True)
        return table if table in self.file else None

    def add_events(self, columns: Mapping[str, np.ndarray]) -> None:
        self._queue(EVENTS, columns)

    def write(self, *, commit: bool, force: bool = False) -> bool:
        """Write every queued row, in rounds that end at a tail's chunk boundary; commit each round when asked.

        ``force`` commits (and stamps ``/run/last_flush``) even when nothing was queued. Returns whether
        anything was written.
        """
        batches = {
            name: {key: np.concatenate([batch[key] for batch in batches]) for key in batches[0]}
            for name, batches in self._pending.items()
        }
        self._pending = {}
        wrote = bool(batches)
        while batches:
            for name in list(batches):
                table, rows = self.table(name), batches[name]
                count = len(rows[STEP])
                limit = table.next_boundary()
                take = count if limit is None else min(count, limit)
                table.append({key: value[:take] for key, value in rows.items()})
                if take == count:
                    del batches[name]
                else:
                    batches[name] = {key: value[take:] for key, value in rows.items()}
            if commit:
                self.commit(force=True)
        if commit and force and not wrote:
            self.commit(force=True)
        return wrote

    def commit(self, force: bool = False) -> None:
        """The second phase: flush the rows, then advance the counters and the flush time, and flush again."""
        self.file.flush()
        changed = [table.commit() for table in self._tables.values()]
        if any(changed) or force:
            write_scalar(self.file["run/last_flush"], np.float64(time.time()))
        self.file.flush()

    def close(self, status: str) -> None:
        """Write what is queued, move every unfinished chunk into its column, commit, store ``status``, close."""
        self.write(commit=True)
        for table in self._tables.values():
            table.pack()
        self.commit()
        write_scalar(self.file["run/status"], np.bytes_(status.encode()))
        self.file.close()


def event_rows(events: list[tuple[int, bytes, bytes, bytes]]) -> dict[str, np.ndarray]:
    """Buffered events ``(step, kind, source, message)`` as the columns of ``/events``."""
    dtypes = event_dtypes()
    steps, kinds, sources, messages = zip(*events, strict=True)
    return {
        STEP: np.asarray(steps, dtype=np.int64),
        "kind": np.asarray(kinds, dtype=dtypes["kind"]),
        "source": np.asarray(sources, dtype=dtypes["source"]),
        "message": np.asarray(messages, dtype=dtypes["message"]),
    }

