"""The live doctor inside a session: the doctor's rules run while training, findings reach the file at once, a
trigger switches heavier probes on and empties the flight recorder, and ``stop_on="severe"`` ends training.

Every ``live`` steps (after the optimizer step), the records the session made since the last check (probe
records, logged scalars, clipping norms, events) are fed to a :class:`gradlens.doctor.LiveDoctor` (tensors are
converted then, in one pass, so recording causes no host synchronisation) and its new findings are handled:

- written into the run file as an event of kind ``finding`` (source: the rule id, message: the finding's
  compact JSON) and flushed at once, so a run that crashes right after keeps them;
- warned once each as a :class:`FindingWarning` (the engine returns a finding again only when its severity
  rises);
- passed to ``on_finding(finding)``; a callback that raises is recorded (event ``callback_error``) and warned
  once (:class:`CallbackFailureWarning`), never raised into training;
- a **trigger** when the finding is severe or a spike or non-finite values (rules ``spike``, ``nonfinite``):
  see below;
- with ``stop_on="severe"`` a severe finding ends training (below).

A logged scalar that is NaN or infinite is a trigger at once, without waiting for the next check.

**Triggered detail.** For the ``detail_steps`` steps after a trigger the *detail* probes fire at every step
whatever their schedule (by default those that need ``ACTIVATIONS`` and the gradient-only probes that record
per-parameter statistics, e.g. ``GradStats`` with histograms; probe-batch probes only when named in
``detail=``). An event of kind ``detail`` says which steps and why.

**Flight recorder.** With ``flight_steps=K``, the gradient-only probes (``GradStats``, ...) are computed at
every step, also where their schedule records nothing, and the last K such values are kept (as tensors,
in memory). They are written into the probe's own table when a trigger fires and when the run fails or closes:
only steps after the probe's last recorded step (the table stays ordered by step and no step is written twice;
the ring restarts at every scheduled record). An event of kind ``flight_recorder`` says which steps were
written and why. Its cost is one probe computation per step (see docs/api.md).

**Stopping.** With ``stop_on="severe"``, the first severe finding sets :attr:`LiveDoctoring.stop_reason` and
then, by default, raises :class:`TrainingStopped` from ``optimizer.step()`` (after the step is complete); the
``with attach(...)`` block swallows it after closing the file with status ``stopped``. A framework integration
calls :meth:`LiveDoctoring.stop_via` instead, to stop the framework's own way (Lightning's
``trainer.should_stop``, the Trainer's ``control.should_training_stop``); the file then closes as ``stopped``
when the framework ends the fit. Under ``torch.distributed`` ``stop_on`` is refused (every rank must stop
together), and the live doctor runs on the writer rank only.

A failure of the engine itself (a bug in a rule) is recorded (event ``doctor_error``), warned once, and switches
the live doctor off after three in a row; training goes on.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from gradlens.probes.base import ACTIVATIONS, GRADS, Probe

#: Rules whose findings are triggers whatever their severity (a severe finding always is).
TRIGGER_RULES = frozenset({"spike", "nonfinite"})
#: How a session may stop training when asked to.
STOP_ON = (None, "severe")
MAX_ENGINE_FAILURES = 3


class FindingWarning(UserWarning):
    """The live doctor found something while the run trains (the finding is also an event in the run file)."""


class CallbackFailureWarning(RuntimeWarning):
    """An ``on_finding`` callback raised; the error is in the run's events and training goes on."""


class TrainingStopped(Exception):
    """The live doctor stopped training (``stop_on="severe"``): a ``with attach(...)`` block swallows it after
    closing the run file with status ``stopped``.

    Attributes:
        finding: the finding that stopped the run.
    """

    def __init__(self, finding: object) -> None:
        super().__init__(
            f"gradlens stopped training at a severe finding ({getattr(finding, 'rule', '?')}): "
            f"{getattr(finding, 'title', finding)}"
        )
        self.finding = finding


class Engine(Protocol):
    """What the session needs of a live doctor (:class:`gradlens.doctor.LiveDoctor` is one)."""

    def observe(
        self, step: int, probe: str, values: Mapping[str, object], labels: Sequence[str], cls: str | None = None
    ) -> None: ...

    def observe_scalars(self, step: int, mapping: Mapping[str, float]) -> None: ...

    def observe_event(self, step: int, kind: str, source: str, message: str = "") -> None: ...

    def check(self, step: int | None = None) -> list: ...


def default_engine(meta: Mapping, layers: Sequence[Mapping]) -> Engine:
    """The doctor's :class:`~gradlens.doctor.LiveDoctor` for this run's metadata and layer table."""
    from gradlens.doctor import LiveDoctor

    return LiveDoctor(meta, layers)


def flight_probes(probes: Sequence[Probe]) -> list[Probe]:
    """Probes the flight recorder can compute at any step: they read gradients only, not the update."""
    return [p for p in probes if p.needs <= {GRADS} and not p.measures_update]


def default_detail(probes: Sequence[Probe]) -> list[str]:
    """Probes that fire at every step in a triggered window unless ``detail=`` names others: those that need
    ``ACTIVATIONS`` and the gradient-only ones (per-parameter statistics, histograms)."""
    return [p.name for p in probes if ACTIVATIONS in p.needs or p in flight_probes(probes)]


@dataclass(frozen=True)
class LiveSettings:
    """The live doctor's settings, as :func:`gradlens.attach` takes them (see its arguments)."""

    every: int | None = None
    engine: Engine | Callable[[Mapping, Sequence[Mapping]], Engine] | None = None
    on_finding: Callable[[object], None] | None = None
    stop_on: str | None = None
    detail: Sequence[str] | None = None
    detail_steps: int = 20
    flight_steps: int = 0

    def check(self, probes: Sequence[Probe], topology: object) -> None:
        """Raise ``ValueError`` naming a bad setting and the fix (at attach, before any file exists)."""
        if self.every is not None and (isinstance(self.every, bool) or int(self.every) < 1):
            raise ValueError(f"live must be a number of steps >= 1 (a check every N steps) or None, got {self.every!r}")
        if self.stop_on not in STOP_ON:
            raise ValueError(f"stop_on must be one of {STOP_ON}, got {self.stop_on!r}")
        if self.stop_on is not None and self.every is None:
            raise ValueError("stop_on needs the live doctor: pass live=N (a check every N steps) as well")
        if self.stop_on is not None and topology.distributed:
            raise ValueError(
                f"stop_on={self.stop_on!r} under torch.distributed ({topology.describe()}) would stop the writer "
                "rank alone and leave the others waiting; leave stop_on=None (findings are still written and warned)"
            )
        if self.on_finding is not None and not callable(self.on_finding):
            raise ValueError(f"on_finding must be callable (finding -> None), got {self.on_finding!r}")
        for name, value in (("detail_steps", self.detail_steps), ("flight_steps", self.flight_steps)):
            if isinstance(value, bool) or int(value) < 0:
                raise ValueError(f"{name} must be a number of steps >= 0, got {value!r}")
        names = {p.name for p in probes}
        unknown = sorted(set(self.detail or ()) - names)
        if unknown:
            raise ValueError(f"detail names probes {unknown} that are not attached; attached: {sorted(names)}")


def _host(values: Mapping[str, object]) -> dict[str, object]:
    """Per-layer values as host arrays for the engine (one device-to-host copy per quantity)."""
    out = {}
    for name, value in values.items():
        if isinstance(value, torch.Tensor):
            value = value.detach()
            if value.device.type != "cpu":
                value = value.cpu()
            value = value.numpy() if value.dtype != torch.bfloat16 else value.float().numpy()
        out[name] = value
    return out


def finding_text(finding: object) -> str:
    """One line for a warning: severity, title, where, and the first fix."""
    where = []
    step = getattr(finding, "step", None)
    layers = list(getattr(finding, "layers", ()) or ())
    if step is not None:
        where.append(f"from step {step}")
    if layers:
        where.append("in " + ", ".join(layers[:3]) + (f" and {len(layers) - 3} more" if len(layers) > 3 else ""))
    fixes = getattr(finding, "fixes", ()) or ()
    fix = f"; fix: {fixes[0].action}" if fixes else ""
    located = f" ({' '.join(where)})" if where else ""
    return (
        f"gradlens doctor: {getattr(finding, 'severity', '?')} {getattr(finding, 'rule', '?')}: "
        f"{getattr(finding, 'title', '')}{located}{fix}"
    )


class LiveDoctoring:
    """The live half of :class:`gradlens.session.Session` (a mixin): feeding, checking, triggers, flight
    recorder and stopping (see the module docstring).

    Reads the session's ``probes``, ``step``, ``recording``, ``recorder``, ``topology`` and the recorder guard
    and failure methods of :class:`~gradlens.session.firing.ProbeFiring`.
    """

    probes: list[Probe]
    step: int
    recording: bool
    stop_reason: object | None

    def _setup_live(self, settings: LiveSettings) -> None:
        """Check the live settings (at attach, before any file exists) and keep them."""
        settings.check(self.probes, self.topology)
        self._live_every = settings.every
        self._engine_factory = settings.engine
        self._engine: Engine | None = None
        self._on_finding = settings.on_finding
        self._stop_on = settings.stop_on
        self._stop_handler: Callable[[object], None] | None = None
        self.stop_reason = None
        self._detail = set(default_detail(self.probes) if settings.detail is None else settings.detail)
        self._detail_steps = int(settings.detail_steps)
        self._detail_until = 0  # detail probes fire at every step below this one
        flight = int(settings.flight_steps)
        self._flight = {p.name: deque(maxlen=flight) for p in flight_probes(self.probes)} if flight else {}
        self._feed: list[tuple] = []  # records since the last check, for the engine
        self._engine_failures = 0
        self._callback_warned = False
        self._stop_raised = False

    @property
    def live(self) -> bool:
        """Whether the live doctor is on (this rank runs it, and the run is still recording)."""
        return self._live_every is not None and self.topology.is_writer and self.recording

    # --- what the session tells the live doctor ---------------------------------------------------------

    def _fed_record(self, probe: Probe, step: int, values: Mapping[str, object]) -> None:
        if self.live:
            labels = self._declared.get(probe.name, {})
            self._feed.append(("probe", step, probe, values, labels))

    def _fed_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        if self.live:
            self._feed.append(("scalars", step, dict(scalars)))
        bad = [name for name, value in scalars.items() if not math.isfinite(value)]
        if bad:
            self._trigger(f"non-finite scalar {bad[0]!r} = {scalars[bad[0]]} at step {step}")

    def _event(self, step: int, kind: str, source: str, message: str) -> bool:
        """Record an event in the file and tell the live doctor."""
        if self.live:
            self._feed.append(("event", step, kind, source, message))
        return self._guard_recorder(self.recorder.log_event, step, kind, source, message)

    # --- the check ----------------------------------------------------------------------------------------

    def _live_after_step(self) -> None:
        """Called after each optimizer step: a check every ``live`` steps; a stop when one was asked for."""
        if self.live and self.recording and self.step % self._live_every == 0 and self._ctx is not None:
            self._live_check()
        if self.stop_reason is not None and self._stop_handler is None and not self._stop_raised:
            self._stop_raised = True
            raise TrainingStopped(self.stop_reason)

    def _live_check(self) -> list:
        """Feed what was recorded since the last check, check, and handle each new finding."""
        self._log_clips(force=True)
        try:
            engine = self._live_engine()
            feed, self._feed = self._feed, []
            for item in feed:
                self._feed_engine(engine, item)
            findings = engine.check(self.step - 1)
        except Exception as error:  # the doctor's failure, never training's
            self._feed = []
            self._engine_failed(error)
            return []
        self._engine_failures = 0
        for finding in findings:
            self._handle_finding(finding)
        return findings

    def _live_engine(self) -> Engine:
        if self._engine is None:
            factory = self._engine_factory
            if factory is None or not hasattr(factory, "check"):
                layers = [info.row() for info in self.context.layers]
                self._engine = (factory or default_engine)(self._meta_written, layers)
            else:
                self._engine = factory
        return self._engine

    def _feed_engine(self, engine: Engine, item: tuple) -> None:
        kind, step = item[0], item[1]
        if kind == "probe":
            _, _, probe, values, declared = item
            per_layer = {q: v for q, v in values.items() if q in declared and declared[q].axes == ("layer",)}
            if per_layer:
                labels = next(iter(declared[q].labels.get("layer", []) for q in per_layer))
                engine.observe(step, probe.name, _host(per_layer), labels, type(probe).__name__)
        elif kind == "scalars":
            engine.observe_scalars(step, item[2])
        else:
            engine.observe_event(step, *item[2:])

    def _engine_failed(self, error: Exception) -> None:
        self._engine_failures += 1
        first_line = (str(error).strip().splitlines() or [""])[0]
        message = f"{type(error).__name__}: {first_line}"
        self._guard_recorder(self.recorder.log_event, self.step, "doctor_error", "live", message)
        if self._engine_failures == 1:
            warnings.warn(
                f"gradlens live doctor failed at step {self.step} ({message}); training goes on, the "
                "error is in run.events()",
                CallbackFailureWarning,
                stacklevel=4,
            )
        if self._engine_failures >= MAX_ENGINE_FAILURES:
            self._live_every = None
            self._guard_recorder(
                self.recorder.log_event,
                self.step,
                "doctor_error",
                "live",
                f"switched off after {MAX_ENGINE_FAILURES} failures in a row",
            )

    def _handle_finding(self, finding: object) -> None:
        # the event's step is the step the live doctor found it at (the onset is in the message): events stay in order
        found = max(self.step - 1, 0)
        if self._guard_recorder(self.recorder.log_event, found, "finding", finding.rule, finding.event_message()):
            self._guard_recorder(self.recorder.flush)  # a crash right after keeps it
        warnings.warn(finding_text(finding), FindingWarning, stacklevel=5)
        if self._on_finding is not None:
            try:
                self._on_finding(finding)
            except Exception as error:
                first_line = (str(error).strip().splitlines() or [""])[0]
                message = f"{type(error).__name__}: {first_line}"
                self._guard_recorder(self.recorder.log_event, self.step - 1, "callback_error", "on_finding", message)
                if not self._callback_warned:
                    self._callback_warned = True
                    warnings.warn(
                        f"gradlens on_finding raised ({message}); training goes on, the error is in run.events()",
                        CallbackFailureWarning,
                        stacklevel=5,
                    )
        severe = getattr(finding, "severity", None) == "severe"
        if severe or getattr(finding, "rule", None) in TRIGGER_RULES:
            self._trigger(f"{finding.severity} finding {finding.rule}: {finding.title}")
        if severe and self._stop_on == "severe" and self.stop_reason is None:
            self.stop_reason = finding
            self._guard_recorder(
                self.recorder.log_event, self.step - 1, "stopped", finding.rule, f"stop_on='severe': {finding.title}"
            )
            if self._stop_handler is not None:
                self._stop_handler(finding)

    def stop_via(self, handler: Callable[[object], None]) -> None:
        """Stop training with ``handler(finding)`` instead of raising :class:`TrainingStopped` (for a framework
        that has its own way, e.g. ``lambda f: setattr(trainer, "should_stop", True)``); the file closes with
        status ``stopped`` when the framework closes the session."""
        self._stop_handler = handler

    # --- triggers: detail and flight recorder ------------------------------------------------------------

    def trigger(self, reason: str = "requested") -> None:
        """Switch the detail probes on for the next ``detail_steps`` steps and write the flight recorder now (what
        a spike, non-finite values or a severe finding do)."""
        self._trigger(reason)

    def _trigger(self, reason: str) -> None:
        if not self.recording:
            return
        if self._detail_steps and self._detail and self.step >= self._detail_until:
            self._detail_until = self.step + self._detail_steps
            names = ", ".join(sorted(self._detail))
            self._guard_recorder(
                self.recorder.log_event,
                self.step,
                "detail",
                "session",
                f"{names} at every step {self.step}..{self._detail_until - 1}: {reason}",
            )
            if not self._forward_since_step and not self._in_step:  # this step's forward has not run yet
                self._arm_activations()
        self._write_flight(reason)

    def _in_detail(self, probe: Probe) -> bool:
        return self.step < self._detail_until and probe.name in self._detail

    def _flight_keep(self, probe: Probe, values: Mapping[str, object]) -> None:
        self._flight[probe.name].append((self.step, values))

    def _write_flight(self, reason: str) -> None:
        """Write every kept flight record (steps after the probe's last record) into its probe's table."""
        for name, ring in self._flight.items():
            if not ring:
                continue
            kept = list(ring)
            ring.clear()
            probe = next(p for p in self.probes if p.name == name)
            for step, values in kept:
                if not self._guard_recorder(self.recorder.record, name, step, values, probe.fresh_values):
                    return
                self._fed_record(probe, step, values)
            self._guard_recorder(
                self.recorder.log_event,
                self.step,
                "flight_recorder",
                name,
                f"steps {kept[0][0]}..{kept[-1][0]} written: {reason}",
            )
