"""The HDF5 recorder: buffered, crash-safe, SWMR-readable storage of probe records, scalars and events.

This is the one place where tensors become numpy. The file layout is defined in :mod:`gradlens.schema` and
documented in ``docs/schema.md``.

One writer per file: the recorder takes the run's lock (:mod:`gradlens.lock`) when it is constructed (at
``attach``), so a second writer on the same path is refused before it touches anything, and frees it at
:meth:`Recorder.close`.

A new run is written beside its destination, in ``<path>.new-tmp``, created at :meth:`Recorder.start` (the
first optimizer step), switched to SWMR mode and then moved onto ``path`` with an atomic ``os.replace`` once its
first flush is committed. A run that never reaches a step therefore leaves an existing file (``overwrite``)
byte-identical, and a reader never sees a half-made file.

Crash safety: every flush writes the buffered rows, flushes the file, and only then advances each group's
``n_rows`` counter and flushes again. Readers use ``n_rows``, never the dataset length, so a writer killed at
any moment (even in the middle of a flush) leaves a file whose committed rows are complete and exact.

Status: attributes cannot change under SWMR, so the run status lives in the scalar dataset ``/run/status``
("running" while open, "finished" or "failed" after :meth:`Recorder.close`). A writer that was killed leaves
"running"; ``/run/last_flush`` (unix time of the last committed flush) and the lock tell a stale run from a
live one, and :func:`repair` closes such a file so that any HDF5 tool opens it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np
import torch
from h5py import h5s

from gradlens.loader import (
    check_committed,
    layer_rows,
    open_run_file,
    read_layers,
    stored_quantities,
    superblock,
)
from gradlens.lock import RunLock
from gradlens.schema import (
    CHUNK_BYTES,
    CLOSE_STATUSES,
    EVENTS,
    FORMAT,
    LAYER_FIELDS,
    LIBVER,
    N_ROWS,
    NAME_BYTES,
    RESERVED_DATASETS,
    SCHEMA_VERSION,
    STATUS_DTYPE,
    STATUS_INTERRUPTED,
    STATUS_RUNNING,
    Quantity,
    clip_utf8,
    event_dtypes,
)

MODES = ("new", "overwrite", "resume")
STATUSES = CLOSE_STATUSES
RESERVED_META = ("versions", "created", "resumed")

Value = torch.Tensor | np.ndarray | float | int


def _versions() -> dict[str, str]:
    from gradlens import __version__

    return {
        "gradlens": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "h5py": h5py.version.version,
        "hdf5": h5py.version.hdf5_version,
        "python": platform.python_version(),
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _check_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise ValueError(
            f"{kind} name {name!r} cannot name an HDF5 object; use a non-empty string without '/'"
        )
    return name


def _normalise_quantity(probe: str, name: str, quantity: Quantity) -> Quantity:
    _check_name(f"probe {probe!r} quantity", name)
    if name in RESERVED_DATASETS:
        raise ValueError(
            f"probe {probe!r} declares a quantity named {name!r}, which the file layout reserves "
            f"({sorted(RESERVED_DATASETS)}); rename it"
        )
    if not isinstance(quantity, Quantity):
        raise ValueError(
            f"probe {probe!r} quantity {name!r} is a {type(quantity).__name__}, expected a Quantity"
        )
    shape = tuple(int(d) for d in quantity.shape)
    if any(d < 1 for d in shape):
        raise ValueError(
            f"probe {probe!r} quantity {name!r} has shape {shape} with an empty axis; "
            "a quantity must hold at least one value per record"
        )
    try:
        dtype = np.dtype(quantity.dtype)
    except TypeError as error:
        raise ValueError(f"probe {probe!r} quantity {name!r} has dtype {quantity.dtype!r}: {error}") from None
    if dtype.kind not in "biuf":
        raise ValueError(
            f"probe {probe!r} quantity {name!r} has dtype {dtype.name}; use a numeric dtype such as 'float64'"
        )
    labels = {str(axis): [str(label) for label in values] for axis, values in quantity.labels.items()}
    for axis, values in labels.items():
        if axis not in quantity.axes:
            raise ValueError(
                f"probe {probe!r} quantity {name!r} labels axis {axis!r}, not one of {quantity.axes}"
            )
        length = shape[quantity.axes.index(axis)]
        if len(values) != length:
            raise ValueError(
                f"probe {probe!r} quantity {name!r} has {len(values)} labels for axis {axis!r} "
                f"of length {length}"
            )
    return Quantity(shape=shape, axes=tuple(str(a) for a in quantity.axes), labels=labels, dtype=dtype.name)


def _layer_table(layers: list[dict]) -> np.ndarray:
    """The layer rows as a structured array; fields beyond name/kind/shape/params are kept, JSON-encoded."""
    extra: list[str] = []
    for i, row in enumerate(layers):
        missing = [key for key in LAYER_FIELDS if key not in row]
        if missing:
            raise ValueError(f"layer row {i} ({row!r}) lacks {missing}; every row needs {list(LAYER_FIELDS)}")
        extra += [key for key in row if key not in LAYER_FIELDS and key not in extra]
    names = [str(row["name"]) for row in layers]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"layer names must be unique, got duplicates {duplicates}")
    columns: dict[str, np.ndarray] = {
        "name": np.array([name.encode() for name in names]),
        "kind": np.array([str(row["kind"]).encode() for row in layers]),
        "shape": np.array([json.dumps([int(d) for d in row["shape"]]).encode() for row in layers]),
        "params": np.array([int(row["params"]) for row in layers], dtype=np.int64),
    }
    for key in extra:
        columns[key] = np.array([json.dumps(row.get(key)).encode() for row in layers])
    table = np.empty(
        len(layers), dtype=[(key, column.dtype if len(column) else "S1") for key, column in columns.items()]
    )
    for key, column in columns.items():
        table[key] = column
    return table


def _chunk_rows(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Rows per chunk so that one chunk holds about 64 KiB (at least 1, at most 4096 rows)."""
    row_bytes = max(1, math.prod(shape) * dtype.itemsize)
    return int(min(4096, max(1, CHUNK_BYTES // row_bytes)))


def _create_table(group: h5py.Group, columns: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
    """An extendable table: ``step`` (N,), one (N, *shape) dataset per column, and the ``n_rows`` counter.

    Every row dataset carries a Fletcher-32 checksum per chunk: a damaged chunk is a read error, never a
    silently wrong value.
    """
    group.create_dataset("step", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(4096,), fletcher32=True)
    group.create_dataset(N_ROWS, data=np.int64(0))
    for name, (shape, dtype) in columns.items():
        group.create_dataset(
            name,
            shape=(0, *shape),
            maxshape=(None, *shape),
            dtype=dtype,
            chunks=(_chunk_rows(shape, dtype), *shape),
            fletcher32=True,
        )


def _append(table: Mapping[str, h5py.Dataset], start: int, columns: Mapping[str, np.ndarray]) -> int:
    """Write rows ``start ..`` of a table (not yet committed); returns the new row count.

    ``columns`` holds ``step`` and every column, already in the stored dtypes. The low-level calls cost a
    fraction of ``dataset[a:b] = values``, which matters at one flush every ``flush_every`` training steps.
    """
    stop = start + len(columns["step"])
    if stop == start:
        return stop
    for name, values in columns.items():
        dataset = table[name]
        values = np.ascontiguousarray(values)
        dataset.id.set_extent((stop, *values.shape[1:]))
        space = dataset.id.get_space()
        space.select_hyperslab((start,) + (0,) * (values.ndim - 1), values.shape)
        dataset.id.write(h5s.create_simple(values.shape), space, values)
    return stop


def _write_scalar(dataset: h5py.Dataset, value: np.generic) -> None:
    dataset.id.write(h5s.ALL, h5s.ALL, np.asarray(value))


def _tensor_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16
        tensor = tensor.to(torch.float32)
    return tensor.numpy()


def _stack(rows: list[Value], dtype: str) -> np.ndarray:
    """Buffered records of one quantity -> one ``[N, *shape]`` array."""
    if all(isinstance(row, torch.Tensor) for row in rows) and len({(r.device, r.dtype) for r in rows}) == 1:
        return _tensor_to_numpy(torch.stack(rows)).astype(dtype, copy=False)
    return np.stack([_tensor_to_numpy(r) if isinstance(r, torch.Tensor) else r for r in rows]).astype(dtype)


def _on_accelerator(tensor: Value) -> bool:
    """Whether a buffered value still lives on an accelerator (it must cross to the host at the flush)."""
    return isinstance(tensor, torch.Tensor) and tensor.device.type != "cpu"


def _to_host(groups: Mapping[tuple[str, str], list[Value]]) -> dict[tuple[str, str], np.ndarray]:
    """The buffered rows of every quantity still on an accelerator, brought to the host in ONE transfer per device.

    Probes leave their statistics on the gradient's device, so a training step never waits for the host. Here,
    once per flush, every such quantity is stacked on its device, widened to float64 (exact for float32, bf16,
    fp16 and for counts below 2**53), concatenated into one flat tensor and copied with one non-blocking copy
    into pinned host memory, followed by one synchronisation; the flat copy is then split back. Quantities
    already on the CPU are not in the result (``_stack`` reads them directly).
    """
    by_device: dict[torch.device, list[tuple[str, str]]] = {}
    for key, rows in groups.items():
        if rows and all(_on_accelerator(row) for row in rows) and len({row.device for row in rows}) == 1:
            by_device.setdefault(rows[0].device, []).append(key)
    host: dict[tuple[str, str], np.ndarray] = {}
    for keys in by_device.values():
        stacked = [torch.stack([row.detach() for row in groups[key]]).to(torch.float64) for key in keys]
        flat = torch.cat([block.reshape(-1) for block in stacked])
        pinned = flat.device.type == "cuda"
        buffer = torch.empty(flat.shape, dtype=torch.float64, pin_memory=pinned)
        buffer.copy_(flat, non_blocking=pinned)
        if pinned:
            torch.cuda.current_stream(flat.device).synchronize()
        values = buffer.numpy()
        start = 0
        for key, block in zip(keys, stacked, strict=True):
            host[key] = values[start : start + block.numel()].reshape(tuple(block.shape))
            start += block.numel()
    return host


class Recorder:
    """Writes one run to an HDF5 file: metadata, the layer table, per-probe records, scalars and events.

    Records are buffered and written every ``flush_every`` records or ``flush_seconds`` seconds (checked
    when a record, scalar or event arrives), whichever comes first. After :meth:`start` the file is in SWMR
    mode: another process can read it with :func:`gradlens.load` while it is written.

    Args:
        path: the HDF5 file; a new run creates it at :meth:`start` (parent folders at once).
        meta: JSON-serialisable run metadata (config, model summary, ...). The recorder adds ``versions``,
            ``created`` and ``resumed``; these keys are reserved.
        mode: ``"new"`` refuses an existing file, ``"overwrite"`` replaces it at the first step (a run that
            never reaches a step leaves it untouched), ``"resume"`` continues it.
        resume_step: with ``mode="resume"``, records (probes, scalars, events) with ``step > resume_step`` are
            dropped; ``None`` keeps every committed record.
        flush_every: flush after this many buffered records (probe records plus ``log_scalars`` and
            ``log_event`` calls).
        flush_seconds: flush when a record arrives this many seconds after the last flush.

    Raises:
        FileExistsError: ``mode="new"`` and ``path`` exists.
        FileNotFoundError: ``mode="resume"`` and ``path`` does not exist.
        gradlens.lock.LockedError: another writer (this process or another) holds ``path``.
        ValueError: a bad mode, meta, flush policy, or a file to resume that is not a gradlens run.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        meta: dict,
        mode: str = "new",
        resume_step: int | None = None,
        flush_every: int = 64,
        flush_seconds: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self._closed = True  # until the lock is held: close() and __del__ then have nothing to do
        self._lock: RunLock | None = None
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if int(flush_every) < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every!r}")
        if not float(flush_seconds) > 0:
            raise ValueError(f"flush_seconds must be > 0, got {flush_seconds!r}")
        if resume_step is not None and mode != "resume":
            raise ValueError(f"resume_step={resume_step} needs mode='resume', got mode={mode!r}")
        self.flush_every = int(flush_every)
        self.flush_seconds = float(flush_seconds)
        meta_json = self._check_meta(meta)

        self._quantities: dict[str, dict[str, Quantity]] = {}
        self._rows: dict[str, int] = {}  # committed rows per table ("probes/<name>", "scalars", "events")
        self._probe_buffers: dict[str, tuple[list[int], dict[str, list[Value]]]] = {}
        self._scalar_buffer: tuple[list[int], list[bytes], list[float]] = ([], [], [])
        self._event_buffer: list[tuple[int, bytes, bytes, bytes]] = []
        self._pending = 0
        self._last_flush = time.monotonic()
        self._started = False
        self._stored: tuple[list[dict], dict[str, dict[str, Quantity]]] | None = None
        self._tables: dict[str, dict[str, h5py.Dataset]] = {}
        self._replaces: Path | None = None  # the file being written replaces this one at its first flush

        self._mode = mode
        self._meta = {**meta_json, "versions": _versions(), "created": _now(), "resumed": []}
        self._file: h5py.File | None = None
        if self.path.is_dir():
            raise ValueError(f"{self.path} is a directory; pass the path of an .h5 file")
        if mode == "resume" and not self.path.exists():
            raise FileNotFoundError(f"{self.path} does not exist; nothing to resume (use mode='new')")
        if mode == "new" and self.path.exists():
            raise FileExistsError(
                f"{self.path} already exists; pass overwrite=True (mode='overwrite') to replace it "
                "or resume_step=... (mode='resume') to continue it"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = RunLock(self.path)
        self._closed = False
        if mode == "resume":
            try:
                self._file = self._resume(meta_json, resume_step)
            except BaseException:
                self._closed = True
                self._lock.release()
                raise

    def _temporary(self, kind: str) -> Path:
        """``<path>.<kind>-tmp`` in the same folder (so ``os.replace`` onto ``path`` is atomic)."""
        return self.path.with_name(f"{self.path.name}.{kind}-tmp")

    def _create(self) -> h5py.File:
        """Create the file of a new run beside its destination, as ``<path>.new-tmp``.

        Called at ``start`` (or ``close``), so that a run killed before its first optimizer step leaves no
        half-made file behind; the file takes its place at ``path`` once its first flush is committed.
        """
        if self._mode == "new" and self.path.exists():
            raise FileExistsError(
                f"{self.path} appeared after this run was attached; pass overwrite=True to replace it"
            )
        tmp = self._temporary("new")  # we hold the lock: a leftover of a killed writer may be replaced
        file = h5py.File(tmp, "w", libver=LIBVER)
        self._init_file(file, self._meta)
        self._rows["scalars"] = 0
        self._rows[EVENTS] = 0
        self._replaces = self.path
        return file

    @staticmethod
    def _check_meta(meta: dict) -> dict:
        if not isinstance(meta, Mapping):
            raise ValueError(f"meta must be a dict, got {type(meta).__name__}")
        reserved = [key for key in RESERVED_META if key in meta]
        if reserved:
            raise ValueError(f"meta keys {reserved} are reserved (the recorder writes them); rename them")
        try:
            return json.loads(json.dumps(dict(meta)))
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"meta must be JSON-serialisable ({error}); convert values to str/int/float/list/dict first"
            ) from None

    @staticmethod
    def _init_file(file: h5py.File, meta: dict) -> None:
        file.attrs["format"] = FORMAT
        file.attrs["schema_version"] = SCHEMA_VERSION
        file.attrs["meta"] = json.dumps(meta)
        run = file.create_group("run")
        run.create_dataset("status", data=np.bytes_(STATUS_RUNNING.encode()), dtype=STATUS_DTYPE)
        run.create_dataset("last_flush", data=np.float64(np.nan))
        file.create_group("probes", track_order=True)
        _create_table(
            file.create_group("scalars"),
            {"name": ((), np.dtype(f"S{NAME_BYTES}")), "value": ((), np.dtype(np.float64))},
        )
        _create_table(file.create_group(EVENTS), {name: ((), dtype) for name, dtype in event_dtypes().items()})

    def _resume(self, meta: dict, resume_step: int | None) -> h5py.File:
        """Copy the committed records with step <= resume_step into ``<path>.resume-tmp``, opened for writing.

        Copying (instead of truncating in place) also reopens runs whose writer was killed: HDF5 refuses to
        open those for writing, but reads them in SWMR mode. The copy replaces the original once ``start``
        accepts the layers and quantities and commits its first flush; when ``start`` rejects them, or the
        run is closed before any step, the copy is deleted and the original is left untouched.
        """
        limit = None if resume_step is None else int(resume_step)
        tmp = self._temporary("resume")
        with open_run_file(self.path) as old, h5py.File(tmp, "w", libver=LIBVER) as new:
            stored_meta = json.loads(old.attrs["meta"])
            stored_meta["resumed"].append(
                {"step": limit, "time": _now(), "versions": _versions(), "meta": meta}
            )
            self._init_file(new, stored_meta)
            if "layers" in old:
                new.create_dataset("layers", data=old["layers"][()])
                self._stored = (read_layers(old), stored_quantities(old))
                for probe, quantities in self._stored[1].items():
                    self._create_probe(new, probe, quantities)
            tables = ["scalars", *([EVENTS] if EVENTS in old else []), *(f"probes/{p}" for p in old["probes"])]
            self._rows[EVENTS] = 0
            for table in tables:
                count = int(old[table][N_ROWS][()])
                steps = old[table]["step"][:count]
                keep = np.ones(count, dtype=bool) if limit is None else steps <= limit
                names = [name for name in new[table] if name != N_ROWS]
                columns = {name: old[table][name][:count][keep] for name in names}
                self._rows[table] = _append(new[table], 0, columns)
                new[table][N_ROWS][()] = self._rows[table]
        self._replaces = self.path
        return h5py.File(tmp, "r+", libver=LIBVER)

    @staticmethod
    def _create_probe(file: h5py.File, probe: str, quantities: dict[str, Quantity]) -> None:
        group = file["probes"].create_group(probe)
        group.attrs["quantities"] = list(quantities)
        _create_table(group, {name: (q.shape, np.dtype(q.dtype)) for name, q in quantities.items()})
        for name, q in quantities.items():
            group[name].attrs["axes"] = ["step", *q.axes]
            for axis, labels in q.labels.items():
                group[name].attrs[f"labels_{axis}"] = labels

    def start(self, layers: list[dict], quantities: dict[str, dict[str, Quantity]]) -> None:
        """Create the layer table and every probe dataset, switch the file to SWMR mode and put it in place.

        Args:
            layers: one dict per layer in forward order with ``name``, ``kind``, ``shape`` (weight shape) and
                ``params``; further JSON-serialisable keys are stored too.
            quantities: probe name -> {quantity name -> Quantity}.

        Raises:
            ValueError: bad names or declarations, or (resume) layers/quantities that differ from the file's.
        """
        self._check_open()
        if self._started:
            raise RuntimeError(f"Recorder.start was already called for {self.path}")
        table = _layer_table(list(layers))
        declared = {
            _check_name("probe", probe): {name: _normalise_quantity(probe, name, q) for name, q in qs.items()}
            for probe, qs in quantities.items()
        }
        if self._file is None:
            self._file = self._create()
        if self._stored is not None:
            try:
                self._check_resumed(table, declared)
            except ValueError:
                self._discard()
                raise
        else:
            self._file.create_dataset("layers", data=table)
            for probe, qs in declared.items():
                self._create_probe(self._file, probe, qs)
                self._rows[f"probes/{probe}"] = 0
        self._quantities = declared
        self._probe_buffers = {probe: ([], {name: [] for name in qs}) for probe, qs in declared.items()}
        self._started = True
        self.flush(force=True)
        self._file.swmr_mode = True
        self._commit()

    def _commit(self) -> None:
        """The file being written (``<path>.new-tmp`` / ``.resume-tmp``) atomically takes the place of ``path``."""
        if self._replaces is not None:
            os.replace(self._file.filename, self._replaces)
            self._replaces = None

    def _discard(self) -> None:
        """Close and delete the file being written (never the original), free the lock: nothing was kept."""
        copy = Path(self._file.filename) if self._file is not None else None
        if self._file is not None:
            self._file.close()
        if copy is not None and self._replaces is not None:
            copy.unlink(missing_ok=True)
        self._file = None
        self._closed = True
        self._lock.release()

    def _check_resumed(self, table: np.ndarray, declared: dict[str, dict[str, Quantity]]) -> None:
        stored_layers, stored_quantities_ = self._stored
        given = [[row[key] for key in LAYER_FIELDS] for row in layer_rows(table)]
        kept = [[row[key] for key in LAYER_FIELDS] for row in stored_layers]
        if given != kept:
            diff = next(
                (i for i, (a, b) in enumerate(zip(given, kept, strict=False)) if a != b),
                min(len(given), len(kept)),
            )
            raise ValueError(
                f"cannot resume {self.path}: the layer table differs from the stored one at row {diff} "
                f"(given {given[diff] if diff < len(given) else 'nothing'}, "
                f"stored {kept[diff] if diff < len(kept) else 'nothing'}); resume with the same model"
            )
        if declared != stored_quantities_:
            differ = sorted(
                p for p in {*declared, *stored_quantities_} if declared.get(p) != stored_quantities_.get(p)
            )
            raise ValueError(
                f"cannot resume {self.path}: probes {differ} declare other quantities than the stored run "
                f"(given {[declared.get(p) for p in differ]}, "
                f"stored {[stored_quantities_.get(p) for p in differ]}); "
                "resume with the same probes"
            )

    def record(self, probe: str, step: int, values: Mapping[str, Value], fresh: bool = False) -> None:
        """Buffer one record of ``probe`` at ``step``; flushes when the policy says so.

        Tensors are detached and copied here (the copy is turned into numpy at the next flush, so GPU values
        cause no synchronisation per step); with ``fresh=True`` (tensors nobody else holds or changes, see
        ``Probe.fresh_values``) they are kept without the copy. Non-finite values are stored as they are.

        Raises:
            KeyError: ``probe`` was not declared in :meth:`start`.
            ValueError: missing/unknown quantities, or a value whose shape differs from its declaration.
        """
        self._check_open()
        if not self._started:
            raise RuntimeError(
                f"Recorder.record({probe!r}) before start(); call start(layers, quantities) first"
            )
        if probe not in self._quantities:
            raise KeyError(
                f"probe {probe!r} was not declared in start(); declared probes: {sorted(self._quantities)}"
            )
        declared = self._quantities[probe]
        if set(values) != set(declared):
            raise ValueError(
                f"probe {probe!r} at step {step} returned quantities {sorted(values)}, "
                f"declared {sorted(declared)}; return exactly the declared ones"
            )
        steps, columns = self._probe_buffers[probe]
        for name, q in declared.items():
            value = values[name]
            shape = tuple(value.shape) if isinstance(value, torch.Tensor | np.ndarray) else np.shape(value)
            if shape != q.shape:
                raise ValueError(
                    f"probe {probe!r} quantity {name!r} at step {step} has shape {shape}, declared {q.shape}"
                )
        for name in declared:
            value = values[name]
            if isinstance(value, torch.Tensor):
                value = value.detach() if fresh else value.detach().clone()
            else:
                value = np.array(value)
            columns[name].append(value)
        steps.append(int(step))
        self._pending += 1
        self._maybe_flush()

    def log_scalars(self, step: int, **scalars: float) -> None:
        """Buffer named scalars (loss, accuracy, lr, ...) at ``step``; names need not be known in advance.

        Raises:
            ValueError: a name longer than 64 UTF-8 bytes or a value that is not a real number.
        """
        self._check_open()
        steps, names, values = self._scalar_buffer
        rows = []
        for name, value in scalars.items():
            encoded = name.encode()
            if len(encoded) > NAME_BYTES:
                raise ValueError(
                    f"scalar name {name!r} is longer than {NAME_BYTES} bytes; use a shorter name"
                )
            try:
                rows.append((encoded, float(value)))
            except (TypeError, ValueError):
                raise ValueError(f"scalar {name!r} = {value!r} is not a real number") from None
        for encoded, value in rows:
            steps.append(int(step))
            names.append(encoded)
            values.append(value)
        self._pending += 1
        self._maybe_flush()

    def log_event(self, step: int, kind: str, source: str, message: str) -> None:
        """Buffer one event (a probe error, a probe switched off, a skipped step, a warning) at ``step``.

        Stored in ``/events`` (``step``, ``kind``, ``source``, ``message``) and read with
        :meth:`gradlens.loader.Run.events`. ``source`` and ``message`` longer than their columns (256 and
        1024 UTF-8 bytes) are cut at a character boundary.

        Args:
            step: the optimizer step the event belongs to.
            kind: a short identifier: ``probe_error``, ``probe_disabled``, ``step_skipped``, ``warning``, ...
            source: what raised it (a probe name, ``GradScaler``, ...).
            message: one line, e.g. ``"NotImplementedError: no forward AD for ..."``.

        Raises:
            ValueError: ``kind`` is not a non-empty identifier of at most 32 bytes, or ``step`` is no integer.
        """
        self._check_open()
        width = event_dtypes()["kind"].itemsize
        if not isinstance(kind, str) or not kind.isidentifier() or len(kind.encode()) > width:
            raise ValueError(
                f"event kind {kind!r} must be an identifier of at most {width} bytes, e.g. 'probe_error'"
            )
        try:
            at = int(step)
        except (TypeError, ValueError):
            raise ValueError(f"event step {step!r} is not an integer") from None
        widths = event_dtypes()
        self._event_buffer.append(
            (
                at,
                kind.encode(),
                clip_utf8(str(source), widths["source"].itemsize),
                clip_utf8(str(message), widths["message"].itemsize),
            )
        )
        self._pending += 1
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if self._pending >= self.flush_every or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self, force: bool = False) -> None:
        """Write every buffered record and commit it: after this returns, a SIGKILL loses nothing.

        Before :meth:`start` the file of a new run does not exist yet: scalars and events stay buffered
        until then. ``force`` commits (and stamps ``/run/last_flush``) even when nothing was buffered.
        """
        if self._closed or self._file is None or not self._started:
            return
        written: dict[str, int] = {}
        steps, names, values = self._scalar_buffer
        if steps:
            columns = {
                "step": np.asarray(steps, dtype=np.int64),
                "name": np.asarray(names, dtype=f"S{NAME_BYTES}"),
                "value": np.asarray(values, dtype=np.float64),
            }
            written["scalars"] = _append(self._table("scalars"), self._rows["scalars"], columns)
            self._scalar_buffer = ([], [], [])
        if self._event_buffer:
            dtypes = event_dtypes()
            step_, kind, source, message = zip(*self._event_buffer, strict=True)
            columns = {
                "step": np.asarray(step_, dtype=np.int64),
                "kind": np.asarray(kind, dtype=dtypes["kind"]),
                "source": np.asarray(source, dtype=dtypes["source"]),
                "message": np.asarray(message, dtype=dtypes["message"]),
            }
            written[EVENTS] = _append(self._table(EVENTS), self._rows[EVENTS], columns)
            self._event_buffer = []
        buffered = self._probe_buffers.items()
        host = _to_host({(probe, name): values for probe, (_, rows) in buffered for name, values in rows.items()})
        for probe, (steps, rows) in self._probe_buffers.items():
            if not steps:
                continue
            quantities = self._quantities[probe]
            columns = {
                name: host[probe, name].astype(quantities[name].dtype, copy=False)
                if (probe, name) in host
                else _stack(values, quantities[name].dtype)
                for name, values in rows.items()
            }
            columns["step"] = np.asarray(steps, dtype=np.int64)
            table = f"probes/{probe}"
            written[table] = _append(self._table(table), self._rows[table], columns)
            self._probe_buffers[probe] = ([], {name: [] for name in rows})
        self._pending = 0
        self._last_flush = time.monotonic()
        if not written and not force:
            return
        # Commit in two phases: the rows reach the file before the counters that make them visible.
        self._file.flush()
        for table, count in written.items():
            _write_scalar(self._table(table)[N_ROWS], np.int64(count))
            self._rows[table] = count
        _write_scalar(self._table("run")["last_flush"], np.float64(time.time()))
        self._file.flush()

    def _table(self, name: str) -> dict[str, h5py.Dataset]:
        """The datasets of a group, opened once (looking them up at every flush costs more than writing)."""
        if name not in self._tables:
            self._tables[name] = {key: self._file[name][key] for key in self._file[name]}
        return self._tables[name]

    def close(self, status: str = "finished") -> None:
        """Flush, store the final ``status`` ("finished" or "failed"), close the file and free the lock.

        A run closed before its first step (:meth:`start`) with ``overwrite`` or ``resume`` over an existing
        file keeps that file byte-identical (buffered scalars and events are dropped); a new run's file is
        created then, holding them. Idempotent.
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if self._closed:
            return
        if not self._started and self._mode in ("overwrite", "resume") and self.path.exists():
            self._discard()
            return
        try:
            if self._file is None:
                self._file = self._create()
            self._started = True  # a run closed before start: commit the buffered scalars and events
            try:
                self.flush()
            finally:
                self._file["run/status"][()] = np.bytes_(status.encode())
                written = self._file.filename
                self._file.close()
                if self._replaces is not None:
                    os.replace(written, self._replaces)
                    self._replaces = None
        finally:
            self._closed = True
            self._lock.release()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the recorder of {self.path} is closed")

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        self.close("finished" if exc_type is None else "failed")

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("recording" if self._started else "open")
        return f"Recorder({str(self.path)!r}, {state}, probes={sorted(self._quantities)})"


def _tracks_order(group: h5py.Group) -> bool:
    return bool(group.id.get_create_plist().get_link_creation_order())


def _copy_committed(old: h5py.Group, new: h5py.Group, size: int) -> None:
    """Copy ``old`` into ``new`` recursively, every table cut at its ``n_rows`` (its committed rows)."""
    for key, value in old.attrs.items():
        new.attrs[key] = value
    count = int(old[N_ROWS][()]) if N_ROWS in old else None
    for name, item in old.items():
        if isinstance(item, h5py.Group):
            _copy_committed(item, new.create_group(name, track_order=_tracks_order(item)), size)
            continue
        if count is not None and name != N_ROWS and item.maxshape and item.maxshape[0] is None:
            check_committed(old.file.filename, item, count, size)
            copy = new.create_dataset(
                name,
                data=item[:count],
                maxshape=item.maxshape,
                chunks=item.chunks,
                fletcher32=item.fletcher32,
            )
        else:
            copy = new.create_dataset(name, data=item[()], dtype=item.dtype)
        for key, value in item.attrs.items():
            copy.attrs[key] = value


class Repaired(NamedTuple):
    """What :func:`repair` did."""

    repaired: bool  # False: the file was closed cleanly, nothing to do
    status: str  # /run/status of the file now
    rows: dict[str, int]  # committed rows kept per table ("scalars", "events", "probes/<name>")
    backup: Path | None  # the original, kept as <path>.bak


def _committed_rows(file: h5py.File) -> dict[str, int]:
    tables = ["scalars", *([EVENTS] if EVENTS in file else []), *(f"probes/{p}" for p in file["probes"])]
    return {table: int(file[table][N_ROWS][()]) for table in tables}


def repair(path: str | os.PathLike, *, backup: bool = True) -> Repaired:
    """Close a run whose writer was killed, so that every HDF5 tool opens it (what ``gradlens repair`` runs).

    A writer killed in SWMR mode leaves the file's superblock marked "open for write": ``gradlens.load``
    reads it, but plain ``h5py.File(path)``, HDFView or h5dump refuse it ("file is already open for write").
    This writes a clean copy holding exactly the committed rows (every table cut at ``n_rows``), with
    ``/run/status`` = ``"interrupted"`` (a killed writer's file says ``"running"``), checks that the copy opens
    without SWMR and holds the same row counts, and puts it in place with an atomic ``os.replace``. The
    original is kept as ``<path>.bak`` unless ``backup=False``.

    Raises:
        gradlens.lock.LockedError: a live writer holds the file.
        FileExistsError: the backup ``<path>.bak`` exists already.
        FileNotFoundError, ValueError: ``path`` is missing, not a gradlens run, truncated or damaged.
    """
    path = Path(path)
    with open_run_file(path):  # a one-line error for a missing, foreign or damaged file
        pass
    lock = RunLock(path)  # refuses while a writer is alive, and keeps one from starting meanwhile
    tmp = path.with_name(path.name + ".repair-tmp")
    try:
        with open_run_file(path) as old:
            status = old["run/status"][()].decode()
            rows = _committed_rows(old)
        if superblock(path).flags == 0 and status != STATUS_RUNNING:
            return Repaired(False, status, rows, None)
        saved = path.with_name(path.name + ".bak")
        if backup and saved.exists():
            raise FileExistsError(f"{saved} exists; move it away or repair with --no-backup")
        size = os.path.getsize(path)
        if status == STATUS_RUNNING:
            status = STATUS_INTERRUPTED
        with open_run_file(path) as old, h5py.File(tmp, "w", libver=LIBVER) as new:
            _copy_committed(old, new, size)
            new["run/status"][()] = np.bytes_(status.encode())
        with h5py.File(tmp, "r") as copy:  # plain HDF5, no SWMR: what every tool does
            if _committed_rows(copy) != rows:
                raise RuntimeError(f"the repaired copy of {path} lost rows ({_committed_rows(copy)} != {rows})")
        if backup:
            try:
                os.link(path, saved)
            except OSError:  # no hard links here: a copy
                shutil.copy2(path, saved)
        os.replace(tmp, path)
        return Repaired(True, status, rows, saved if backup else None)
    finally:
        tmp.unlink(missing_ok=True)
        lock.release()
