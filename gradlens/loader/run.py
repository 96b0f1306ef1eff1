"""``load(path) -> Run``: a recorded run's records, by range, stride, layer or summary, and as tidy frames.

Each call opens the file afresh (so a ``Run`` of a live file sees the records committed since ``load``) and
reads only what it returns: a step range is found by bisection of the ``step`` column, a stride or a set of
layers is read by HDF5 selection, a summary from the stored blocks (:mod:`gradlens.loader.summary`). Only
committed rows (``n_rows``) are ever returned.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import h5py
import numpy as np
import pandas as pd

from gradlens.loader.files import (
    RunFileError,
    damaged,
    open_run_file,
    read_layers,
    retried_while_written,
    stored_quantities,
)
from gradlens.loader.rows import TableReader
from gradlens.loader.scalars import ScalarRecords
from gradlens.loader.select import check_points, check_stride, rows_at
from gradlens.loader.summary import BlockReader, Pieces, Summary, summarise, summary_block
from gradlens.schema import (
    EVENT_COLUMNS,
    EVENTS,
    LAST_STEP,
    N_ROWS,
    NAMES,
    RUN_LAST_FLUSH,
    RUN_STATUS,
    STATUS_RUNNING,
    STEP,
    SUMMARY,
    SUMMARY_BLOCKS,
    Quantity,
    summarised,
)

Layers = Sequence[str | int] | None


class NotRecorded(KeyError):
    """Asked for a probe, quantity, layer or scalar the file does not hold (one line naming what it holds)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Run:
    """One recorded run. Create it with :func:`load`.

    Attributes:
        path: the HDF5 file.
        meta: run metadata: what the writer passed (config, model summary, ...) plus ``versions``
            (gradlens, torch, numpy, h5py, hdf5, python), ``created`` (ISO 8601, UTC) and ``resumed``
            (one entry per resume: step, time, versions, the meta passed then).
        schema_version: version of the file layout.
        layers: the layer table, one row per layer in forward order: name, kind, shape (tuple), params, and
            any extra columns the writer stored.
        probes: names of the recorded probes, in declaration order.
    """

    @retried_while_written
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        with self._open() as file:
            self.meta: dict = json.loads(file.attrs["meta"])
            self.schema_version = int(file.attrs["schema_version"])
            rows = read_layers(file)
            self._quantities = stored_quantities(file)
        columns = list(dict.fromkeys(key for row in rows for key in row)) or ["name", "kind", "shape", "params"]
        self.layers = pd.DataFrame(rows, columns=columns)
        self.probes: list[str] = list(self._quantities)

    @contextmanager
    def _open(self) -> Iterator[h5py.File]:
        try:
            with open_run_file(self.path) as file:
                yield file
        except (FileNotFoundError, RunFileError, NotRecorded):
            raise  # raised on purpose, one line naming the file (or what it holds)
        except Exception as error:  # HDF5 reports a damaged file in many ways
            raise damaged(self.path, error) from None

    def _table(self, group: h5py.Group) -> TableReader:
        """A reader of the committed rows of a table group (tails in use while a version 3 file is written)."""
        live = self.schema_version >= 3 and group.file[RUN_STATUS][()].decode() == STATUS_RUNNING
        return TableReader(self.path, group, live)

    def _probe(self, probe: str) -> dict[str, Quantity]:
        if probe not in self._quantities:
            raise NotRecorded(f"{self.path} has no probe {probe!r}; recorded probes: {self.probes}")
        return self._quantities[probe]

    def _quantity(self, probe: str, quantity: str) -> Quantity:
        declared = self._probe(probe)
        if quantity not in declared:
            raise NotRecorded(f"probe {probe!r} of {self.path} has no quantity {quantity!r}; it has {list(declared)}")
        return declared[quantity]

    def _labels(self, quantity: Quantity) -> dict[str, list[str]]:
        """Stored labels; a ``layer`` axis without labels gets the layer names when the lengths agree."""
        labels = dict(quantity.labels)
        if "layer" in quantity.axes and "layer" not in labels:
            length = quantity.shape[quantity.axes.index("layer")]
            names = list(self.layers["name"])
            labels["layer"] = names if len(names) == length else [str(i) for i in range(length)]
        return labels

    def _layer_index(self, quantity: Quantity, labels: dict[str, list[str]], layers: Layers) -> np.ndarray:
        """Positions along the ``layer`` axis of ``layers`` (names or indices), in the order given."""
        if "layer" not in quantity.axes:
            raise ValueError(f"layers={layers!r} selects along a 'layer' axis; this quantity has axes {quantity.axes}")
        names = labels["layer"]
        position = {name: i for i, name in enumerate(names)}
        index = []
        for layer in layers:
            if isinstance(layer, str):
                if layer not in position:
                    raise NotRecorded(f"{self.path} has no layer {layer!r}; layers are {names[:5]}... ({len(names)})")
                index.append(position[layer])
            elif isinstance(layer, int | np.integer) and -len(names) <= int(layer) < len(names):
                index.append(int(layer) % len(names))
            else:
                raise NotRecorded(f"layer {layer!r} is neither a layer name nor an index below {len(names)}")
        return np.asarray(index, dtype=np.intp)

    @property
    @retried_while_written
    def status(self) -> str:
        """``running`` while written (or after its writer was killed); ``finished``/``failed`` once closed."""
        with self._open() as file:
            return file[RUN_STATUS][()].decode()

    @property
    @retried_while_written
    def last_flush(self) -> float | None:
        """Unix time of the last committed flush (None before the first); tells a live run from a dead one."""
        with self._open() as file:
            value = float(file[RUN_LAST_FLUSH][()])
        return None if np.isnan(value) else value

    def quantities(self, probe: str) -> dict[str, Quantity]:
        """What ``probe`` records: quantity name -> Quantity (shape, axes, labels, dtype of one record)."""
        return dict(self._probe(probe))

    @retried_while_written
    def n_records(self, probe: str) -> int:
        """The committed records of ``probe`` (one per firing): one counter read."""
        self._probe(probe)
        with self._open() as file:
            return int(file["probes"][probe][N_ROWS][()])

    @retried_while_written
    def span(self, probe: str) -> tuple[int, int] | None:
        """The steps of the first and the last committed record of ``probe``; None before the first record."""
        self._probe(probe)
        with self._open() as file:
            table = self._table(file["probes"][probe])
            if not table.n_rows:
                return None
            return table.step_at(0), table.step_at(table.n_rows - 1)

    @retried_while_written
    def steps(
        self, probe: str, start: int | None = None, stop: int | None = None, stride: int | None = None
    ) -> np.ndarray:
        """The steps ``[n]`` (int64) of the records of ``probe`` with ``start <= step < stop``, every ``stride``-th.

        ``start``/``stop`` are optimizer steps (None: from the first / to the last record); ``stride`` counts
        records of that range (its first record always included).
        """
        self._probe(probe)
        stride = check_stride(stride)
        with self._open() as file:
            table = self._table(file["probes"][probe])
            i0, i1 = table.bisect(start, 0), table.bisect(stop, table.n_rows)
            return table.read(STEP, i0, max(i0, i1), stride)

    @retried_while_written
    def array(
        self,
        probe: str,
        quantity: str,
        start: int | None = None,
        stop: int | None = None,
        stride: int | None = None,
        layers: Layers = None,
    ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], dict[str, list[str]]]:
        """The records of one quantity, whatever its axes: all of them, or a step range, a stride, some layers.

        Args:
            probe, quantity: what to read.
            start, stop: optimizer steps; records with ``start <= step < stop`` (None: no bound).
            stride: every ``stride``-th record of that range, starting with its first (None: every record).
            layers: layer names or indices along the quantity's ``layer`` axis, in the order wanted (None: all).

        Returns:
            ``(steps, values, axes, labels)``: steps ``[N]`` int64; values ``[N, *shape]`` in the stored
            dtype; axes names every dimension of ``values``, starting with ``"step"``; labels maps
            axis -> labels (the ``layer`` labels of the selected layers).

        Cost: the chunks that hold the selected rows and layers (a layer group of 8 layers per chunk in
        version 3 files), plus log2(records) chunk reads of ``step`` to find ``start`` and ``stop``.
        """
        declared = self._quantity(probe, quantity)
        stride = check_stride(stride)
        labels = self._labels(declared)
        index = None if layers is None else self._layer_index(declared, labels, layers)
        with self._open() as file:
            table = self._table(file["probes"][probe])
            i0, i1 = table.bisect(start, 0), table.bisect(stop, table.n_rows)
            i1 = max(i0, i1)
            steps = table.read(STEP, i0, i1, stride)
            values = self._values(table, quantity, declared, i0, i1, stride, index)
        if index is not None:
            labels["layer"] = [labels["layer"][i] for i in index]
        return steps, values, ("step", *declared.axes), labels

    @staticmethod
    def _values(
        table: TableReader,
        name: str,
        declared: Quantity,
        i0: int,
        i1: int,
        stride: int,
        index: np.ndarray | None,
    ) -> np.ndarray:
        """Rows of a quantity, the layers ``index`` (in that order) read by selection when ``layer`` comes first."""
        if index is None:
            return table.read(name, i0, i1, stride)
        axis = declared.axes.index("layer")
        if axis != 0 or not len(index):
            return np.take(table.read(name, i0, i1, stride), index, axis=1 + axis)
        chosen, order = np.unique(index, return_inverse=True)
        return np.take(table.read(name, i0, i1, stride, select=chosen), order, axis=1)

    def frame(
        self,
        probe: str,
        start: int | None = None,
        stop: int | None = None,
        stride: int | None = None,
        layers: Layers = None,
    ) -> pd.DataFrame:
        """Tidy records of ``probe``: columns step, layer, quantity, value.

        Covers every quantity whose axes are ``("layer",)`` (one row per layer) or ``()`` (layer ``""``).
        Rows are ordered by quantity (declaration order), step, then layer in forward order; ``value`` is
        float64. Other quantities (histograms, per-sample arrays) are read with :meth:`array`. ``start``,
        ``stop``, ``stride`` and ``layers`` select as in :meth:`array` (``layers`` does not filter ``()``).
        """
        quantities = {n: q for n, q in self._probe(probe).items() if q.axes in (("layer",), ())}
        parts = []
        for name, quantity in quantities.items():
            steps, values, _, labels = self.array(
                probe, name, start, stop, stride, layers=layers if quantity.axes else None
            )
            names = np.asarray(labels.get("layer", [""]), dtype=object)
            parts.append(
                pd.DataFrame(
                    {
                        "step": np.repeat(steps, len(names)),
                        "layer": np.tile(names, len(steps)),
                        "quantity": name,
                        "value": values.reshape(len(steps), len(names)).ravel().astype(np.float64),
                    }
                )
            )
        if not parts or not sum(len(part) for part in parts):
            return pd.DataFrame(
                {
                    "step": np.zeros(0, np.int64),
                    "layer": np.zeros(0, object),
                    "quantity": np.zeros(0, object),
                    "value": np.zeros(0),
                }
            )
        return pd.concat(parts, ignore_index=True)

    @retried_while_written
    def summary(
        self,
        probe: str,
        quantity: str,
        points: int = 2000,
        start: int | None = None,
        stop: int | None = None,
        layers: Layers = None,
    ) -> Summary:
        """min / max / mean / last of ``quantity`` per block of records: what a screen of ``points`` pixels needs.

        The block is the coarsest of 1 and ``schema.SUMMARY_BLOCKS`` (32, 128, 512, ... records) that still
        gives at least ``points`` blocks over the records with ``start <= step < stop``: between ``points``
        and 4 × ``points`` blocks (every record when there are fewer than 32 × ``points``). Files of schema
        version 3 keep these blocks for every ``("layer",)`` and ``()`` quantity, so the cost does not grow
        with the run: stored blocks are read, and the partial blocks at either end of the range (and blocks
        the writer has not stored yet) are made from finer blocks and at most 62 records. Other quantities
        and older files are summarised from their records (the same values).

        Returns:
            a :class:`Summary` with arrays ``[B, *shape]`` (``layers`` selects as in :meth:`array`).
        """
        declared = self._quantity(probe, quantity)
        labels = self._labels(declared)
        index = None if layers is None else self._layer_index(declared, labels, layers)
        points = check_points(points)
        with self._open() as file:
            group = file["probes"][probe]
            table = self._table(group)
            i0, i1 = table.bisect(start, 0), table.bisect(stop, table.n_rows)
            i1 = max(i0, i1)
            block = summary_block((i0, i1), points)
            if block == 1 or SUMMARY not in group or not summarised(declared):
                values = self._values(table, quantity, declared, i0, i1, 1, index)
                return summarise(table.read(STEP, i0, i1), values, i0, block)
            shape = declared.shape if index is None else (len(index),)
            reader = self._blocks(group, table, quantity, declared, index, int(np.prod(shape)))
            return reader.summary(i0, i1, block).summary(block, shape, np.dtype(declared.dtype))

    def _blocks(
        self,
        group: h5py.Group,
        table: TableReader,
        quantity: str,
        declared: Quantity,
        index: np.ndarray | None,
        width: int,
    ) -> BlockReader:
        """A :class:`BlockReader` over a probe's block tables for ``quantity`` (layers ``index``)."""
        levels = self._levels(group)
        chosen, order = (None, None) if index is None else np.unique(index, return_inverse=True)

        def records(i0: int, i1: int) -> tuple[np.ndarray, np.ndarray]:
            return table.read(STEP, i0, i1), self._values(table, quantity, declared, i0, i1, 1, index)

        def stored(j: int, k0: int, k1: int) -> Pieces:
            level = levels[SUMMARY_BLOCKS[j]]
            stats = level.read(quantity, k0, k1, select=chosen)
            if order is not None:
                stats = stats[:, order]
            first, last = level.read(STEP, k0, k1), level.read(LAST_STEP, k0, k1)
            return Pieces.blocks(first, last, SUMMARY_BLOCKS[j], stats.reshape(len(first), width, -1))

        def n_stored(j: int) -> int:
            level = levels.get(SUMMARY_BLOCKS[j])
            return 0 if level is None else min(level.n_rows, table.n_rows // SUMMARY_BLOCKS[j])

        return BlockReader(width, records, stored, n_stored)

    def _levels(self, table: h5py.Group) -> dict[int, TableReader]:
        """Readers of the summary levels a table stores (attribute ``blocks``: 32 .. in version 3, 128 .. in 4)."""
        summary = table[SUMMARY]
        return {int(block): self._table(summary[str(int(block))]) for block in summary.attrs["blocks"]}

    @retried_while_written
    def scalars(self) -> pd.DataFrame:
        """Tidy scalars (loss, accuracy, lr, ...): columns step, name, value, in logging order."""
        with self._open() as file:
            table = self._table(file["scalars"])
            steps, names, values = (table.read(column) for column in (STEP, "name", "value"))
        names = np.array([name.decode() for name in names], dtype=object)
        return pd.DataFrame({"step": steps, "name": names, "value": values.astype(np.float64)})

    @retried_while_written
    def scalar_names(self) -> list[str]:
        """The names of the logged scalars, in the order they were first logged."""
        with self._open() as file:
            if NAMES in file:
                names = self._table(file[NAMES]).read("name")
            else:
                names = self._table(file["scalars"]).read("name")
        return [name.decode() for name in dict.fromkeys(names.tolist())]

    def _scalar_records(self, file: h5py.File, name: str) -> ScalarRecords:
        """The records of ``name`` (:class:`ScalarRecords`), or :class:`NotRecorded` naming the logged ones."""
        records = ScalarRecords.find(file, self._table, name)
        if records is None:
            raise NotRecorded(f"{self.path} has no scalar {name!r}; logged scalars: {self.scalar_names()}")
        return records

    @retried_while_written
    def n_scalar_records(self, name: str) -> int:
        """Committed records of the logged scalar ``name`` (a version 5 file: one counter read)."""
        with self._open() as file:
            return self._scalar_records(file, name).n

    @retried_while_written
    def scalar(
        self, name: str, start: int | None = None, stop: int | None = None, stride: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One logged scalar: ``(steps [n] int64, values [n] float64)`` in logging order.

        ``start``/``stop``/``stride`` select as in :meth:`array`: the records of ``name`` from the first with
        ``step >= start`` to the last with ``step < stop`` (steps of one name are expected to grow), every
        ``stride``-th. A version 5 file reads only those records (the name's own table, bisected by step).
        """
        stride = check_stride(stride)
        with self._open() as file:
            records = self._scalar_records(file, name)
            i0, i1 = records.span(start, stop)
            return records.steps(i0, i1, stride), records.values(i0, i1, stride)

    @retried_while_written
    def scalar_summary(
        self, name: str, points: int = 2000, start: int | None = None, stop: int | None = None
    ) -> Summary:
        """:meth:`summary` of one logged scalar (blocks of its records; arrays ``[B]``)."""
        points = check_points(points)
        with self._open() as file:
            records = self._scalar_records(file, name)
            i0, i1 = records.span(start, stop)
            block = summary_block((i0, i1), points)

            def read(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
                return records.steps(a, b), records.values(a, b)

            if block == 1 or SUMMARY not in file["scalars"]:
                return summarise(*read(i0, i1), i0, block)
            levels = self._levels(file["scalars"])
            mine: dict[int, np.ndarray] = {}  # per level read: the rows of this name's blocks

            def chosen(block: int) -> np.ndarray:
                if block not in mine:
                    mine[block] = np.flatnonzero(levels[block].read("name") == name.encode())
                return mine[block]

            def stored(j: int, k0: int, k1: int) -> Pieces:
                block = SUMMARY_BLOCKS[j]
                rows, level = chosen(block)[k0:k1], levels[block]
                first, last = rows_at(level, STEP, rows), rows_at(level, LAST_STEP, rows)
                stats = rows_at(level, "value", rows)
                return Pieces.blocks(first, last, block, stats.reshape(len(rows), 1, -1))

            def n_stored(j: int) -> int:
                block = SUMMARY_BLOCKS[j]
                return min(len(chosen(block)), records.n // block) if block in levels else 0

            reader = BlockReader(1, read, stored, n_stored)
            return reader.summary(i0, i1, block).summary(block, (), np.dtype(np.float64))

    @retried_while_written
    def events(self) -> pd.DataFrame:
        """What happened during the run besides records: columns step, kind, source, message, in order.

        Kinds: ``probe_error`` (source: the probe; message: ``"ExcType: first line"``), ``probe_disabled``,
        ``step_skipped`` (source ``GradScaler``), ``warning``. Files of schema version 1 have none (empty frame).
        """
        columns = list(EVENT_COLUMNS)
        with self._open() as file:
            if EVENTS not in file:
                steps, arrays = np.zeros(0, np.int64), {name: np.zeros(0, "S1") for name in columns}
            else:
                table = self._table(file[EVENTS])
                steps, arrays = table.read(STEP), {name: table.read(name) for name in columns}
        frame = {"step": steps.astype(np.int64)}
        for name in columns:
            frame[name] = np.array([value.decode(errors="replace") for value in arrays[name]], dtype=object)
        return pd.DataFrame(frame)

    def __repr__(self) -> str:
        return f"Run({self.path!r}, probes={self.probes}, layers={len(self.layers)})"


def load(path: str | os.PathLike) -> Run:
    """Open a gradlens run (finished, still being written, or left by a killed writer).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not HDF5, not a gradlens run, from a newer gradlens, truncated or damaged
            (a one-line ``RunFileError``, within a fraction of a second even for a damaged file).
    """
    return Run(path)
