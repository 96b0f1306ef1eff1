"""Probes scheduled and fired: which probe runs at a step, how its values are checked and recorded, and how
a probe's or the recorder's failure is contained so that training never ends because of either.

A probe fires when its schedule says so at the step about to be taken and it is neither switched off nor left
undeclared (its ``quantities`` failed). Gradient-only probes run under ``torch.no_grad()``. A probe that raises
is recorded (``probe_error``), warned once (:class:`ProbeFailureWarning`) and switched off after
``MAX_FAILURES`` failures in a row (``probe_disabled``); a :class:`~gradlens.distributed.RankFailure` is never
taken for a probe failure. A recorder that raises stops recording, warned once (:class:`RecorderFailureWarning`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Mapping

import torch

from gradlens.distributed import RankFailure
from gradlens.probes.base import ACTIVATIONS, GRADS, Probe, Schedule
from gradlens.probes.context import ProbeContext


class ProbeFailureWarning(RuntimeWarning):
    """A probe raised; the error is recorded in the run's events and training goes on."""


class RecorderFailureWarning(RuntimeWarning):
    """The recorder failed; recording stopped and training goes on."""


class ProbeFiring:
    """The firing half of :class:`gradlens.session.Session` (a mixin): schedules probes and contains failures.

    Reads the session's ``probes``, ``schedules``, ``step``, ``recording``, ``recorder``, ``path`` and
    ``context``, and keeps the per-probe failure counts, the switched-off probes and the update probes prepared
    in the current step.
    """

    MAX_FAILURES = 3

    probes: list[Probe]
    schedules: dict[str, Schedule]
    step: int
    recording: bool
    path: str
    _runs_probes: bool
    _declared: dict[str, dict]
    _failures: dict[str, int]
    _warned: set[str]
    _disabled: set[str]
    _pending_after: list[Probe]
    _activations: object  # ActivationCapture | None (gradlens.session.activations)
    _flight: dict  # probe name -> its flight-recorder ring (gradlens.session.live)

    def _due(self, probe: Probe) -> bool:
        """Whether ``probe`` fires at this step: its schedule, or a triggered detail window
        (:mod:`gradlens.session.live`); never once switched off."""
        return probe.name not in self._disabled and (self.schedules[probe.name](self.step) or self._in_detail(probe))

    def _fire(self) -> None:
        """Run every probe scheduled at this step (those measuring the update only prepare here)."""
        if not self.recording:
            return
        ctx = self.context
        if not self.recording or not self._runs_probes:  # the recorder failed to start; not this rank's work
            return
        ctx.step = self.step
        hook_errors = self._activations.errors if self._activations is not None else {}
        for probe in self.probes:
            if probe.measures_update or probe.name not in self._declared:
                continue
            if self._due(probe):
                if ACTIVATIONS in probe.needs:
                    if probe.name in hook_errors:
                        self._probe_failed(probe, hook_errors.pop(probe.name))  # raised inside its forward hook
                        continue
                    if not self._activations.measures(probe):
                        continue  # due since the forward ran (a trigger): its window starts at the next step
                self._run_probe(probe, ctx, probe.compute)
            elif probe.name in self._flight and probe.name not in self._disabled:
                self._run_probe(probe, ctx, probe.compute, keep=self._flight_keep)  # the flight recorder

    def _prepare_update_probes(self) -> None:
        """Probes that measure the update (``measures_update``) copy what they need before the step."""
        due = [p for p in self.probes if p.measures_update and self._due(p)]
        if not due or not self.recording or not self._runs_probes:
            return
        ctx = self.context
        if not self.recording:
            return
        ctx.step = self.step
        for probe in due:
            if probe.name in self._declared and self._attempt(probe, probe.before_step, ctx):
                self._pending_after.append(probe)

    def _attempt(self, probe: Probe, action: Callable[[ProbeContext], object], ctx: ProbeContext) -> bool:
        try:
            reads_grads_only = probe.needs <= {GRADS}
            with torch.no_grad() if reads_grads_only else contextlib.nullcontext():
                action(ctx)
        except RankFailure:
            raise  # another rank is gone: the run cannot go on, and no probe is to blame
        except Exception as error:
            self._probe_failed(probe, error)
            return False
        return True

    def _run_probe(
        self,
        probe: Probe,
        ctx: ProbeContext,
        compute: Callable[[ProbeContext], dict],
        keep: Callable[[Probe, dict], None] | None = None,
    ) -> None:
        """Compute and record one probe (or hand its values to ``keep``: the flight recorder); a failure is the
        probe's, never the training run's."""
        try:
            # Gradient-only probes need no graph; probe-batch probes choose via ctx.capture(grad=...).
            reads_grads_only = probe.needs <= {GRADS}
            with torch.no_grad() if reads_grads_only else contextlib.nullcontext():
                values = compute(ctx)
            self._check_values(probe, values)
        except RankFailure:
            raise  # another rank is gone: the run cannot go on, and no probe is to blame
        except Exception as error:
            self._probe_failed(probe, error)
            return
        self._failures[probe.name] = 0
        if keep is not None:
            keep(probe, values)
            return
        if probe.name in self._flight:
            self._flight[probe.name].clear()  # kept steps before a record can no longer be written in order
        if self._guard_recorder(self.recorder.record, probe.name, self.step, values, probe.fresh_values):
            self._fed_record(probe, self.step, values)

    def _check_values(self, probe: Probe, values: Mapping[str, object]) -> None:
        declared = self._declared[probe.name]
        if not isinstance(values, Mapping) or set(values) != set(declared):
            got = sorted(values) if isinstance(values, Mapping) else type(values).__name__
            raise ValueError(f"returned quantities {got}, declared {sorted(declared)}")
        for name, quantity in declared.items():
            shape = tuple(getattr(values[name], "shape", ()))
            if shape != tuple(quantity.shape):
                raise ValueError(f"quantity {name!r} has shape {shape}, declared {tuple(quantity.shape)}")

    def _probe_failed(self, probe: Probe, error: Exception, fatal: bool = False) -> None:
        """Record the failure as an event, warn once per probe, switch the probe off after repeated failures."""
        first_line = (str(error).strip().splitlines() or [""])[0]
        message = f"{type(error).__name__}: {first_line}"
        count = self._failures.get(probe.name, 0) + 1
        self._failures[probe.name] = count
        self._event(self.step, "probe_error", probe.name, message)
        if probe.name not in self._warned:
            self._warned.add(probe.name)
            warnings.warn(
                f"gradlens probe {probe.name!r} failed at step {self.step} ({message}); training goes on, the "
                f"error is in run.events(); the probe is switched off after {self.MAX_FAILURES} failures in a row",
                ProbeFailureWarning,
                stacklevel=2,
            )
        if fatal or count >= self.MAX_FAILURES:
            self._disabled.add(probe.name)
            reason = "its quantities could not be declared" if fatal else f"{count} failures in a row"
            self._event(self.step, "probe_disabled", probe.name, f"switched off: {reason}")
            warnings.warn(
                f"gradlens probe {probe.name!r} is switched off at step {self.step} ({reason}; last: {message})",
                ProbeFailureWarning,
                stacklevel=2,
            )

    def _guard_recorder(self, action: Callable[..., object], *args: object) -> bool:
        """Call the recorder; a failure stops recording (warned once) instead of ending training."""
        if not self.recording:
            return False
        try:
            action(*args)
        except Exception as error:
            self._recorder_failed(error)
            return False
        return True

    def _recorder_failed(self, error: Exception) -> None:
        self.recording = False
        first_line = (str(error).strip().splitlines() or [""])[0]
        warnings.warn(
            f"gradlens stopped recording to {self.path} at step {self.step} ({type(error).__name__}: "
            f"{first_line}); training goes on, the file keeps what was flushed before",
            RecorderFailureWarning,
            stacklevel=3,
        )
        with contextlib.suppress(Exception):
            self.recorder.close(status="failed")
