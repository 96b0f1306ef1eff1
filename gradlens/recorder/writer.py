"""The ``Recorder``: buffers probe records, scalars and events, flushes them by policy, and owns the run's file.

One writer per file: the recorder takes the run's lock (:mod:`gradlens.lock`) when it is constructed (at
``attach``), so a second writer on the same path is refused before it touches anything, and frees it at
:meth:`Recorder.close`.

A new run is written beside its destination, in ``<path>.new-tmp``, created at :meth:`Recorder.start` (the
first optimizer step), switched to SWMR mode and then moved onto ``path`` with an atomic ``os.replace`` once its
first flush is committed. A run that never reaches a step therefore leaves an existing file (``overwrite``)
byte-identical, and a reader never sees a half-made file. A resumed run is copied into ``<path>.resume-tmp``
(:mod:`gradlens.recorder.copy`), which replaces ``path`` the same way.

Status: attributes cannot change under SWMR, so the run status lives in the scalar dataset ``/run/status``
("running" while open, "finished" or "failed" after :meth:`Recorder.close`). A writer that was killed leaves
"running"; ``/run/last_flush`` and the lock tell a stale run from a live one, and
:func:`gradlens.recorder.repair` closes such a file so that any HDF5 tool opens it.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from gradlens.lock import RunLock
from gradlens.recorder.buffers import Value, narrow, stack, to_host
from gradlens.recorder.compact import compact
from gradlens.recorder.layout import NAME_DTYPE, check_name, layer_table, normalise_quantity
from gradlens.recorder.resume import Stored, check_resumed, copy_for_resume, now, versions
from gradlens.recorder.runfile import RunFile, event_rows
from gradlens.schema import CLOSE_STATUSES, NAME_BYTES, Quantity, clip_utf8, event_dtypes

MODES = ("new", "overwrite", "resume")
STATUSES = CLOSE_STATUSES
RESERVED_META = ("versions", "created", "resumed")


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
        self._probe_buffers: dict[str, tuple[list[int], dict[str, list[Value]]]] = {}
        self._scalar_buffer: tuple[list[int], list[bytes], list[float]] = ([], [], [])
        self._event_buffer: list[tuple[int, bytes, bytes, bytes]] = []
        self._warned: set[tuple[str, str]] = set()  # quantities whose values did not fit their dtype (said once)
        self._pending = 0
        self._last_flush = time.monotonic()
        self._started = False
        self._stored: Stored | None = None
        self._replaces: Path | None = None  # the file being written replaces this one at its first flush

        self._mode = mode
        self._meta = {**meta_json, "versions": versions(), "created": now(), "resumed": []}
        self._file: RunFile | None = None
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
                limit = None if resume_step is None else int(resume_step)
                self._file, self._stored = copy_for_resume(self.path, self._temporary("resume"), meta_json, limit)
                self._replaces = self.path
            except BaseException:
                self._closed = True
                self._lock.release()
                raise

    def _temporary(self, kind: str) -> Path:
        """``<path>.<kind>-tmp`` in the same folder (so ``os.replace`` onto ``path`` is atomic)."""
        return self.path.with_name(f"{self.path.name}.{kind}-tmp")

    def _create(self) -> RunFile:
        """Create the file of a new run beside its destination, as ``<path>.new-tmp``.

        Called at ``start`` (or ``close``), so that a run killed before its first optimizer step leaves no
        half-made file behind; the file takes its place at ``path`` once its first flush is committed.
        """
        if self._mode == "new" and self.path.exists():
            raise FileExistsError(
                f"{self.path} appeared after this run was attached; pass overwrite=True to replace it"
            )
        file = RunFile.create(str(self._temporary("new")), self._meta)  # we hold the lock: a leftover may go
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
        table = layer_table(list(layers))
        declared = {
            check_name("probe", probe): {name: normalise_quantity(probe, name, q) for name, q in qs.items()}
            for probe, qs in quantities.items()
        }
        if self._file is None:
            self._file = self._create()
        if self._stored is not None:
            try:
                check_resumed(self.path, table, declared, self._stored)
            except ValueError:
                self._discard()
                raise
        else:
            self._file.start(table, declared)
        self._quantities = declared
        self._probe_buffers = {probe: ([], {name: [] for name in qs}) for probe, qs in declared.items()}
        self._started = True
        self.flush(force=True)
        self._file.file.swmr_mode = True
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
            self._file.file.close()
        if copy is not None and self._replaces is not None:
            copy.unlink(missing_ok=True)
        self._file = None
        self._closed = True
        self._lock.release()

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

    def _stored_column(self, probe: str, name: str, values: np.ndarray, step: int) -> np.ndarray:
        """``values`` in the quantity's stored dtype; a value that does not fit is said once, as a warning event."""
        column, problem = narrow(values, self._file.quantities[probe][name].dtype)
        if problem is not None and (probe, name) not in self._warned:
            self._warned.add((probe, name))
            widths = event_dtypes()
            message = clip_utf8(f"{probe}/{name}: {problem} (said once per quantity)", widths["message"].itemsize)
            self._event_buffer.append((step, b"warning", b"recorder", message))
        return column

    def flush(self, force: bool = False) -> None:
        """Write every buffered record and commit it: after this returns, a SIGKILL loses nothing.

        Before :meth:`start` the file of a new run does not exist yet: scalars and events stay buffered
        until then. ``force`` commits (and stamps ``/run/last_flush``) even when nothing was buffered.
        """
        if self._closed or self._file is None or not self._started:
            return
        buffered = self._probe_buffers.items()
        host = to_host({(probe, name): values for probe, (_, rows) in buffered for name, values in rows.items()})
        for probe, (steps, rows) in self._probe_buffers.items():
            if not steps:
                continue
            columns = {
                name: self._stored_column(
                    probe, name, host[probe, name] if (probe, name) in host else stack(values), steps[0]
                )
                for name, values in rows.items()
            }
            self._file.add_probe(probe, np.asarray(steps, dtype=np.int64), columns)
            self._probe_buffers[probe] = ([], {name: [] for name in rows})
        steps, names, values = self._scalar_buffer
        if steps:
            self._file.add_scalars(
                np.asarray(steps, dtype=np.int64),
                np.asarray(names, dtype=NAME_DTYPE),
                np.asarray(values, dtype=np.float64),
            )
            self._scalar_buffer = ([], [], [])
        if self._event_buffer:
            self._file.add_events(event_rows(self._event_buffer))
            self._event_buffer = []
        self._pending = 0
        self._last_flush = time.monotonic()
        self._file.write(commit=True, force=force)

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
                written = self._file.filename
                self._file.close(status)
                if self._replaces is not None:
                    os.replace(written, self._replaces)
                    self._replaces = None
            self._compact()
        finally:
            self._closed = True
            self._lock.release()

    def _compact(self) -> None:
        """Rewrite the closed file without its dead space when that is a large share (small runs); a failure
        leaves the closed file as it is and says so as a warning: nothing recorded is lost."""
        try:
            compact(self.path)
        except (OSError, RuntimeError) as error:
            warnings.warn(f"{self.path} is complete but was not compacted ({error})", RuntimeWarning, stacklevel=3)

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

