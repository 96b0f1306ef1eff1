"""``attach`` and the ``Session`` class: a recording session around a model and its optimizer.

``attach`` checks everything that can be checked (probes, names, layers, distributed mode) before the recorder
(and so any file) exists, then creates the recorder and installs the hooks. The session resolves the
:class:`~gradlens.probes.context.ProbeContext` at the first optimizer step (or at attach when layers are
declared), and closes the file on exit: ``finished``, ``failed`` when an exception leaves the ``with`` block, or
``stopped`` when the live doctor ended training (``stop_on``). At attach it also says which trainable parameters
are in none of the optimizer's param groups (``meta["parameters"][i]["in_optimizer"]``, a warning).
"""

from __future__ import annotations

import datetime
import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from gradlens.distributed import DEFAULT_TIMEOUT, NullRecorder, Topology, topology
from gradlens.layers import ParameterInfo, check_names, describe_parameters, resolve_layers
from gradlens.naming import uncompiled
from gradlens.probes.base import PROBE_BATCH, Probe, Schedule, as_schedule
from gradlens.probes.context import LossFn, ProbeContext
from gradlens.recorder import Recorder
from gradlens.schema import STATUS_STOPPED
from gradlens.session.clipping import ClipRecord
from gradlens.session.discovery import LayerDiscovery
from gradlens.session.firing import ProbeFiring
from gradlens.session.hooks import StepHooks
from gradlens.session.live import Engine, LiveDoctoring, LiveSettings, TrainingStopped
from gradlens.session.ranks import distributed_checks, distributed_mode, failure_note
from gradlens.session.scalars import ScalarLog
from gradlens.spec import ModelSpec


class ParameterGroupWarning(UserWarning):
    """A trainable parameter (``requires_grad=True``) is in none of the optimizer's param groups."""


class Session(StepHooks, ProbeFiring, LayerDiscovery, ScalarLog, LiveDoctoring):
    """A recording session; create it with :func:`attach`.

    Probes fire inside ``optimizer.step()``, so a training loop needs no extra calls except optional
    :meth:`log` for scalars. Use as a context manager, or call :meth:`close`.

    When probes fire: in the optimizer's step pre-hook (gradients complete, weights not yet updated). For a
    closure optimizer (``optimizer.step(closure)``, e.g. LBFGS) the session wraps the closure and the probes
    fire right after its *first* evaluation in that step: the gradient at the step's starting weights, the one
    the update starts from. LBFGS's further evaluations (inner iterations, line search) are not recorded.

    Failures: a probe that raises is recorded in the file's events (``run.events()``: ``probe_error`` with the
    step and ``"ExcType: message"``), warned once, and switched off after ``MAX_FAILURES`` consecutive failures
    (``probe_disabled``); training and the other probes go on. A recorder that fails (disk full, file removed,
    ...) is warned once and recording stops (the file is marked ``failed`` where it can still be written);
    training goes on. Configuration mistakes are raised by :func:`attach` before any file is touched.

    Several processes (``torch.distributed``; see :mod:`gradlens.distributed`): every rank attaches with the same
    arguments; the writer rank writes the file, the others get a :class:`~gradlens.distributed.NullRecorder`.
    With whole gradients on every rank (DDP) the probes run on the writer only; with sharded gradients (FSDP2)
    they run on every rank and combine their sums through ``ctx.reducer``. A :class:`RankFailure` (a collective
    that failed or timed out) is never taken for a probe failure: it ends the step with that error.

    Mixed precision: with ``scaler=`` a step the GradScaler skips (Inf/NaN gradients) still fires the gradient
    probes (on the unscaled gradients) and records a ``step_skipped`` event; skipped steps are counted by
    ``step`` like any other.

    Clipping: ``clip_grad_norm_`` calls on the session's parameters are recorded as ``clip/preclip_norm`` and
    ``clip/max_norm`` (:mod:`~gradlens.session.clipping`). Activation probes get forward hooks on the steps where
    they are due (:mod:`~gradlens.session.activations`). With ``live=N`` the doctor's rules run every N steps;
    findings become events and warnings, and may stop training (``stop_on``), switch heavier probes on and write
    the flight recorder (:mod:`~gradlens.session.live`).

    Its parts live beside this module: hooks (:mod:`~gradlens.session.hooks`), firing and failures
    (:mod:`~gradlens.session.firing`), the layer table (:mod:`~gradlens.session.discovery`), the logging rule
    (:mod:`~gradlens.session.scalars`) and the live doctor (:mod:`~gradlens.session.live`).

    Attributes:
        step: the 0-based index of the next optimizer step (during ``optimizer.step()``: the step being taken).
        topology: this process's rank, the world size, the backend and the writer rank.
        recording: False once the recorder failed or the session was closed.
        stop_reason: the severe finding that stopped training (``stop_on``), else None.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        path: str | os.PathLike,
        probes: Sequence[Probe],
        every: int | Iterable[int] | Schedule,
        probe_batch: tuple[torch.Tensor, torch.Tensor] | None,
        loss_fn: LossFn | None,
        spec: ModelSpec | None,
        layers: Sequence[str] | None,
        meta: Mapping[str, object] | None,
        overwrite: bool,
        resume_step: int | None,
        flush_every: int,
        flush_seconds: float,
        scaler: object | None = None,
        writer_rank: int = 0,
        collective_timeout: datetime.timedelta | float = DEFAULT_TIMEOUT,
        live: LiveSettings | None = None,
        updated_elsewhere: Sequence[str] = (),
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.path = os.fspath(path)
        self.probes = list(probes)
        self.step = 0 if resume_step is None else int(resume_step) + 1
        self.recording = True
        self._closed = False
        self._handles: list = []
        self._tracer = None  # the layer discovery's forward-order tracer (LayerDiscovery)
        self._activations = None  # the activation hooks of ACTIVATIONS probes (StepHooks)
        self._ctx: ProbeContext | None = None
        self._loss_fn = loss_fn or nn.functional.cross_entropy
        self._probe_batch = probe_batch
        self._failures: dict[str, int] = {}  # consecutive failures per probe
        self._warned: set[str] = set()
        self._disabled: set[str] = set()
        self._forward_since_step = False
        self._in_step = False
        self._closure_fired = False
        self._pending_after: list[Probe] = []  # probes measuring the update, prepared in this step
        self._declared: dict[str, dict] = {}  # probe name -> its quantities, for probes the recorder accepted

        # Everything that can be checked is checked before the recorder (and so any file) exists.
        self._check_probes()
        self.topology: Topology = topology(writer_rank)
        self._reducer = distributed_checks(self.model, self.probes, self.topology, collective_timeout)
        # DDP (whole gradients everywhere): probes run on the writer; FSDP2: on every rank, through the reducer
        self._runs_probes = self.topology.is_writer or self._reducer is not None
        self._scaler_watch = None  # the wrapper on scaler.step (StepHooks._watch_scaler)
        default = as_schedule(every)
        self.schedules = {p.name: p.schedule or default for p in self.probes}
        self._parameters = describe_parameters(model)
        self._clips = ClipRecord((info.parameter for info in self._parameters), lambda: self.step)
        self._spec = self._declared_spec(spec, layers)
        if self._spec is not None:
            check_names(model, self._spec)
            resolve_layers(model, self._spec)  # every declared layer has a .weight
        for probe in self.probes:
            probe.validate(model, self._spec)
        self._elsewhere = checked_elsewhere(self._parameters, updated_elsewhere)
        self._in_optimizer = optimized_parameters(self._parameters, optimizer, self._elsewhere)
        self._setup_live(live or LiveSettings())
        if self._spec is None:
            self._trace_forward_order()

        mode = "resume" if resume_step is not None else ("overwrite" if overwrite else "new")
        try:
            if scaler is not None:
                self._watch_scaler(scaler)
            self._meta_written = self._meta(meta)
            if not self.topology.is_writer:  # the other ranks never create, open or lock the file
                self.recorder = NullRecorder(self.path, self.topology.rank)
            else:
                self.recorder = Recorder(
                    path,
                    meta=self._meta_written,
                    mode=mode,
                    resume_step=resume_step,
                    flush_every=flush_every,
                    flush_seconds=flush_seconds,
                )
        except BaseException:
            self._remove_hooks()
            raise
        self._install_hooks()

    def _check_probes(self) -> None:
        for probe in self.probes:
            if not isinstance(probe, Probe):
                raise TypeError(f"probes must be Probe instances, got {probe!r}; e.g. probes=[GradStats()]")
        names = [p.name for p in self.probes]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"probe names must be unique, {duplicated} appear twice; give one a name= of its own")
        needs_batch = [p.name for p in self.probes if PROBE_BATCH in p.needs]
        if needs_batch and self._probe_batch is None:
            raise ValueError(f"probes {needs_batch} need a probe batch; pass attach(..., probe_batch=(x, y))")

    @property
    def distributed_mode(self) -> str:
        """``"single"`` (one process), ``"ddp"`` (several, whole gradients on every rank) or ``"fsdp2"``."""
        return distributed_mode(self.topology, self._reducer)

    def _meta(self, meta: Mapping[str, object] | None) -> dict:
        return {
            "config": dict(meta or {}),
            "model": {
                "class": type(uncompiled(self.model)).__name__,
                "parameters": sum(p.numel() for p in self.model.parameters()),
                "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
            },
            "optimizer": {
                "class": type(self.optimizer).__name__,
                "defaults": _jsonable(self.optimizer.defaults),
            },
            "probes": [
                {
                    **p.meta(),
                    "name": p.name,
                    "class": type(p).__name__,
                    "schedule": self.schedules[p.name].description,
                }
                for p in self.probes
            ],
            "probe_batch_size": None if self._probe_batch is None else int(self._probe_batch[0].shape[0]),
            "parameters": [
                {**info.row(), "in_optimizer": info.name in self._in_optimizer,
                 **({"updated_elsewhere": True} if info.name in self._elsewhere else {})}
                for info in self._parameters
            ],
            "distributed": {**self.topology.meta(), "mode": self.distributed_mode},
        }

    @property
    def context(self) -> ProbeContext:
        """The probe context; resolved at the first optimizer step (or at attach when layers are declared)."""
        if self._ctx is None:
            self._start()
        return self._ctx

    def _start(self) -> None:
        if self._spec is None:
            self._spec = self._discovered_spec()
        layers = resolve_layers(self.model, self._spec)
        ctx = ProbeContext(
            self.model, self._spec, layers, self._probe_batch, self._loss_fn, parameters=self._parameters
        )
        ctx.reducer = self._reducer
        declared, failed = {}, []
        for probe in self.probes:
            try:
                quantities = probe.quantities(ctx)
                for name, quantity in quantities.items():
                    if any(int(d) < 1 for d in quantity.shape):
                        raise ValueError(
                            f"quantity {name!r} has shape {tuple(quantity.shape)}, an empty axis: nothing to "
                            "measure (no layers or parameters found?)"
                        )
                declared[probe.name] = quantities
            except Exception as error:  # a probe that cannot even declare its records is switched off
                failed.append((probe, error))
        self._ctx = ctx
        self._declared = declared
        if not self._guard_recorder(self.recorder.start, [info.row() for info in layers], declared):
            return
        for probe, error in failed:
            self._probe_failed(probe, error, fatal=True)

    # --- user calls ----------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Commit every buffered record now (e.g. before writing a training checkpoint).

        A recorder failure stops recording (warned once), never training.
        """
        self._log_clips(force=True)
        self._guard_recorder(self.recorder.flush)

    def close(self, status: str = "finished") -> None:
        """Remove every hook, write the flight recorder, flush and close the file. Idempotent; a failing file is
        warned, not raised. A run the live doctor stopped (``stop_on``) closes as ``stopped`` instead of
        ``finished``."""
        if self._closed:
            return
        self._closed = True
        self._remove_hooks()
        self._log_clips(force=True)
        self._write_flight("the run failed" if status == "failed" else "the run closed")
        if status == "finished" and self.stop_reason is not None:
            status = STATUS_STOPPED
        if self.recording:
            self.recording = False
            try:
                self.recorder.close(status=status)
            except Exception as error:
                self.recording = True  # let _recorder_failed report it once
                self._recorder_failed(error)
                self.recording = False

    def __enter__(self) -> Session:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, TrainingStopped):  # the live doctor ended training: a clean end, not a crash
            self.close(status=STATUS_STOPPED)
            return True
        if exc is not None:
            self.fail(exc)
        else:
            self.close(status="finished")
        return False

    def fail(self, error: BaseException | None = None) -> None:
        """Close the file with status ``failed``; in a run of several processes, add a note to ``error`` saying
        which rank stopped where and what became of the file (the error may come from a collective that a dead
        rank left waiting)."""
        if error is not None and self.topology.distributed and hasattr(error, "add_note"):
            error.add_note(failure_note(self.topology, self.step, self.path, error))
        self.close(status="failed")


def checked_elsewhere(parameters: Sequence[ParameterInfo], names: Sequence[str]) -> set[str]:
    """``attach(updated_elsewhere=...)``: the qualified names of parameters the user's own code updates (e.g. the
    α of a VAN skip by its own rule), checked against the model's parameters."""
    if isinstance(names, str):
        names = [names]
    known = {info.name for info in parameters}
    for name in names:
        if name not in known:
            raise ValueError(f"updated_elsewhere names {name!r}, which is not a parameter of the model; give qualified "
                             "names as model.named_parameters() spells them")
    return set(names)


def optimized_parameters(
    parameters: Sequence[ParameterInfo], optimizer: torch.optim.Optimizer, elsewhere: set[str] = frozenset()
) -> set[str]:
    """Names of the parameters that are in one of ``optimizer``'s param groups.

    A trainable parameter (``requires_grad=True``) in no group gets gradients that no step ever applies: said
    once here as a :class:`ParameterGroupWarning` naming it (frozen parameters are left out on purpose and are
    not warned about, nor are those named in ``elsewhere``: updated by the user's own code).
    ``meta["parameters"]`` keeps ``in_optimizer`` per parameter (and ``updated_elsewhere``).
    """
    grouped = {id(p) for group in optimizer.param_groups for p in group["params"]}
    inside = {info.name for info in parameters if id(info.parameter) in grouped}
    forgotten = [info.name for info in parameters
                 if info.trainable and info.name not in inside and info.name not in elsewhere]
    if forgotten:
        warnings.warn(
            f"gradlens: {len(forgotten)} trainable parameter(s) are in no param group of "
            f"{type(optimizer).__name__}, so their gradients are never applied: {forgotten}; add them to the "
            "optimizer, set requires_grad=False when they are meant to stay fixed, or name them in "
            "attach(updated_elsewhere=[...]) when your own code updates them",
            ParameterGroupWarning,
            stacklevel=4,
        )
    return inside


def _jsonable(values: Mapping[str, object]) -> dict:
    out = {}
    for key, value in values.items():
        try:
            json.dumps(value)
            out[key] = value
        except TypeError:
            out[key] = repr(value)
    return out


def attach(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    path: str | os.PathLike,
    probes: Sequence[Probe] = (),
    every: int | Iterable[int] | Schedule = 1,
    probe_batch: tuple[torch.Tensor, torch.Tensor] | None = None,
    loss_fn: LossFn | None = None,
    *,
    spec: ModelSpec | None = None,
    layers: Sequence[str] | None = None,
    meta: Mapping[str, object] | None = None,
    overwrite: bool = False,
    resume_step: int | None = None,
    flush_every: int = 64,
    flush_seconds: float = 5.0,
    scaler: object | None = None,
    writer_rank: int = 0,
    collective_timeout: datetime.timedelta | float = DEFAULT_TIMEOUT,
    live: int | None = None,
    on_finding: Callable[[object], None] | None = None,
    stop_on: str | None = None,
    detail: Sequence[str] | None = None,
    detail_steps: int = 20,
    flight_steps: int = 0,
    engine: Engine | None = None,
    updated_elsewhere: Sequence[str] = (),
) -> Session:
    """Attach probes to a training run and record them into the HDF5 file at ``path``.

    Args:
        model: the network being trained.
        optimizer: its optimizer; probes fire at each ``optimizer.step()``.
        path: the HDF5 file to write. An existing file is refused unless ``overwrite`` or ``resume_step``.
        probes: probe instances, e.g. ``[GradStats()]``.
        every: default schedule for probes created without one (an int N = every N steps, a list of steps,
            or a :class:`~gradlens.probes.base.Schedule`).
        probe_batch: a fixed ``(x, y)`` batch for probes that evaluate the model (cushions, σ, ...).
        loss_fn: ``loss_fn(output, y)``; cross-entropy by default.
        spec: what to measure; by default ``model.gradlens_spec()`` when the model defines it, else layers
            are discovered in forward order on the first forward pass.
        layers: an explicit list of layer module names (instead of ``spec``).
        meta: run configuration stored in the file (JSON-serialisable).
        overwrite: replace an existing file at ``path``.
        resume_step: continue an existing run after this step; records after it are dropped.
        flush_every: flush after this many buffered records.
        flush_seconds: flush when this many seconds passed since the last flush.
        scaler: the run's ``torch.amp.GradScaler``: steps it skips (Inf/NaN gradients) are recorded as
            ``step_skipped`` events, with the gradient probes fired on their unscaled gradients.
        writer_rank: under ``torch.distributed``, the rank that writes the file (the others write nothing).
            Call ``attach`` on every rank with the same arguments.
        collective_timeout: how long gradlens's own all-reduce (FSDP2) waits for the other ranks before it
            raises :class:`gradlens.distributed.RankFailure` (a ``timedelta`` or seconds).
        live: run the doctor's rules every ``live`` steps while training (:mod:`gradlens.session.live`):
            findings become ``finding`` events in the file at once and :class:`FindingWarning` s; None: off.
        on_finding: called with each new finding of the live doctor (its errors are recorded, never raised).
        stop_on: ``"severe"``: a severe finding ends training (:class:`TrainingStopped`, status ``stopped``).
        detail: the probes that fire at every step for ``detail_steps`` steps after a trigger (a spike,
            non-finite values, a severe finding); default: activation and gradient-only probes.
        detail_steps: how long a triggered window lasts (0: no triggered detail).
        flight_steps: keep the gradient-only probes' values of the last ``flight_steps`` steps even where their
            schedule records nothing, and write them when a trigger fires or the run fails or closes (0: off;
            costs one probe computation per step).
        engine: the live doctor to use instead of :class:`gradlens.doctor.LiveDoctor` (an object with
            ``observe``, ``observe_scalars``, ``observe_event`` and ``check``, or a factory
            ``(meta, layers) -> engine``).
        updated_elsewhere: qualified names of trainable parameters that your own code updates outside the
            optimizer (e.g. VAN's α by its own rule): not warned about as missing from the optimizer, and stored
            as ``updated_elsewhere`` in ``meta["parameters"]`` so the doctor does not report them.

    Returns:
        A :class:`Session`; use it as a context manager.
    """
    return Session(
        model,
        optimizer,
        path,
        probes,
        every,
        probe_batch,
        loss_fn,
        spec,
        layers,
        meta,
        overwrite,
        resume_step,
        flush_every,
        flush_seconds,
        scaler,
        writer_rank,
        collective_timeout,
        LiveSettings(live, engine, on_finding, stop_on, detail, detail_steps, flight_steps),
        updated_elsewhere,
    )
