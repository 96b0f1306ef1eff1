"""The live engine: the doctor's rules run incrementally while a run trains.

``LiveDoctor`` is fed the records as the session makes them (:meth:`~LiveDoctor.observe`,
:meth:`~LiveDoctor.observe_scalars`, :meth:`~LiveDoctor.observe_event`) and :meth:`~LiveDoctor.check` returns
only findings not returned before (per rule and layer; again when the severity rises). The same rule objects
as ``gradlens doctor`` read an :class:`~gradlens.doctor.evidence.Evidence` built from bounded buffers, so a
check costs the same at step 100 and at step 10⁶: each probe quantity and scalar keeps at most ``capacity``
records, the first one always, older records thinned to every second one whenever the buffer fills (recent
records at full resolution, the start at coarser).

Live differences (the run is not over): the run-status rule is not applied, info findings are not returned (what
could not be checked: :meth:`~LiveDoctor.not_checked`), a rule that raises becomes a ``doctor_error`` warning,
and the loss-trend rules (not decreasing, chance level) wait for ``LIVE_LOSS_MIN_STEPS`` steps of loss and,
when a scalar named ``lr`` is logged, for the warm-up to end (the rate stopped rising): a loss may sit at
chance level while the learning rate is still ramping up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gradlens.doctor.engine import RULES, apply, explain, not_checked
from gradlens.doctor.evidence import (
    GRADIENT_CLASSES,
    NO_GRADIENT,
    RATIO_CLASSES,
    Event,
    Evidence,
    LayerSeries,
    Scalar,
    from_run,
    probe_classes,
)
from gradlens.doctor.finding import SEVERITIES, Finding
from gradlens.doctor.loss import ChancePlateau, LossNotDecreasing
from gradlens.doctor.loss_series import training_losses

LIVE_LOSS_MIN_STEPS = 200  # loss-trend rules judge a live run only after this many steps of loss ...
LOSS_TREND_RULES = {ChancePlateau.id, LossNotDecreasing.id}
CAPACITY = 256  # records kept per probe and per scalar
EVENT_CAPACITY = 4096


class _Reservoir:
    """At most ``capacity`` records ``{quantity: [width]}`` in preallocated arrays: the first record always kept,
    the older half thinned to every second record whenever the arrays fill (recent records at full resolution).
    The first record fixes the quantities; one missing later is NaN, one not seen first is ignored."""

    def __init__(self, capacity: int, labels: Sequence[str] = ()) -> None:
        self.capacity = max(4, int(capacity))
        self.labels = list(labels)
        self.steps = np.zeros(self.capacity, dtype=np.int64)
        self.values: dict[str, np.ndarray] = {}
        self.count = 0

    def add(self, step: int, row: Mapping[str, np.ndarray]) -> None:
        if not self.values:
            self.values = {q: np.full((self.capacity, len(v)), np.nan) for q, v in row.items()}
        if self.count == self.capacity:
            half = self.count // 2
            keep = np.concatenate([np.arange(0, half, 2), np.arange(half, self.count)])
            self.steps[: len(keep)] = self.steps[keep]
            for array in self.values.values():
                array[: len(keep)] = array[keep]
            self.count = len(keep)
        self.steps[self.count] = step
        for q, array in self.values.items():
            array[self.count] = row.get(q, np.nan)
        self.count += 1

    def series(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Copies of the kept steps ``[n]`` and values ``{quantity: [n, width]}``."""
        return self.steps[: self.count].copy(), {q: a[: self.count].copy() for q, a in self.values.items()}


class LiveDoctor:
    """The doctor during training: feed records, ``check(step)`` for new findings.

    Args:
        meta: the run metadata as the session writes it (``probes`` with each probe's class, ``parameters``,
            ``num_classes``, ``clipping``, ...); probe classes can also be given to :meth:`observe`.
        layers: the layer table rows (name, kind, shape, ...), forward order.
        loss: the scalar to take as the training loss (default: scalars named like a loss).
        num_classes: K of a classifier (chance level ln K).
        capacity: records kept per probe and per scalar (bounds the cost of a check).

    Example::

        live = LiveDoctor(meta, layers)
        live.observe(step, "grad_stats", {"norm": norms, "mean_abs": means}, labels)
        live.observe_scalars(step, {"loss": 2.3})
        for finding in live.check(step):
            warnings.warn(finding.title)
    """

    def __init__(
        self,
        meta: Mapping | None = None,
        layers: Sequence[Mapping] | None = None,
        *,
        loss: str | None = None,
        num_classes: int | None = None,
        capacity: int = CAPACITY,
    ) -> None:
        self.meta = dict(meta or {})
        self.layers = [dict(row) for row in layers or ()]
        self.loss = loss
        self.num_classes = num_classes
        self.capacity = int(capacity)
        self._classes = probe_classes(self.meta)
        self._probes: dict[str, tuple[str, _Reservoir]] = {}  # name -> (class, records)
        self._scalars: dict[str, _Reservoir] = {}
        self._events: list[Event] = []
        self._reported: dict[tuple[str, str], int] = {}  # (rule, layer or "") -> severity index reported
        self._changed = False
        self._memo: dict = {}  # per-step values rules keep between checks
        self._rules = [rule for rule in RULES if rule.live]
        self._unchecked: dict[tuple[str, str], list[str]] = {}

    def observe(
        self, step: int, probe: str, values: Mapping[str, object], labels: Sequence[str], cls: str | None = None
    ) -> None:
        """One probe record: per-layer quantities (``[L]`` arrays, host memory) labelled by ``labels``.

        Quantities of another shape (histograms, per-sample values) are ignored. ``cls`` names the probe's
        class when ``meta["probes"]`` does not (``GradStats``, ``UpdateRatio``, ``ActivationStats``).
        """
        labels = [str(label) for label in labels]
        row = {}
        for name, value in values.items():
            array = np.asarray(value, dtype=np.float64).reshape(-1)
            if array.shape == (len(labels),):
                row[name] = array
        if not row:
            return
        entry = self._probes.get(probe)
        if entry is None or entry[1].labels != labels:
            if entry is not None:
                self._memo.clear()  # new labels: values kept per step no longer apply
            entry = (cls or self._classes.get(probe, "?"), _Reservoir(self.capacity, labels))
            self._probes[probe] = entry
        entry[1].add(step, row)
        self._changed = True

    def observe_scalars(self, step: int, mapping: Mapping[str, float]) -> None:
        """Scalars logged at ``step`` (loss, lr, clip/preclip_norm, ...)."""
        for name, value in mapping.items():
            self._scalars.setdefault(str(name), _Reservoir(self.capacity * 4)).add(step, {"value": [float(value)]})
        self._changed = True

    def observe_event(self, step: int, kind: str, source: str, message: str = "") -> None:
        """A run event (``step_skipped``, ``probe_error``, ...)."""
        if len(self._events) < EVENT_CAPACITY:
            self._events.append(Event(int(step), str(kind), str(source), str(message)))
            self._changed = True

    def evidence(self) -> Evidence:
        """What the rules read now (bounded: at most ``capacity`` records per probe quantity)."""
        ev = Evidence(meta=self.meta, layers=self.layers, loss=self.loss, num_classes=self.num_classes, live=True,
                      events=list(self._events), memo=self._memo)
        for name, (cls, records) in self._probes.items():
            ev.probes[name] = cls
            steps, series = records.series()
            quantities = set(series)
            if cls in GRADIENT_CLASSES and ev.grad_probe is None and {"mean_abs", "norm"} & quantities:
                missing = series["nonfinite"] == NO_GRADIENT if "nonfinite" in series else None
                ev.grad_probe, target = name, ev.grads
            elif cls in RATIO_CLASSES and ev.ratio_probe is None and "ratio" in quantities:
                missing = series["weight_norm"] == 0 if "weight_norm" in series else None
                ev.ratio_probe, target = name, ev.ratios
            elif ev.activation_probe is None and "dead_fraction" in quantities:
                missing, target = None, ev.activations
                ev.activation_probe = name
            else:
                continue
            for q, values in series.items():
                target[q] = LayerSeries(steps, records.labels, values, missing)
        for name, records in self._scalars.items():
            steps, series = records.series()
            ev.scalars[name] = Scalar(steps, series["value"][:, 0])
        return ev

    def not_checked(self) -> list[Finding]:
        """What the last :meth:`check` could not check (info findings ``not_checked``, as ``gradlens doctor``)."""
        return not_checked(self._unchecked)

    def _loss_rules_ready(self, ev: Evidence) -> bool:
        try:
            steps = [s.steps for _, s in training_losses(ev)[0] if len(s.steps)]
        except ValueError:  # the loss the user named is not logged yet
            return False
        if not steps or max(int(s[-1]) - int(s[0]) for s in steps) < LIVE_LOSS_MIN_STEPS:
            return False
        lr = ev.scalars.get("lr")
        if lr is not None and len(lr.values) >= 2:
            return bool(lr.values[-1] <= np.max(lr.values[:-1]))  # the rate stopped rising: warm-up over
        return True

    def check(self, step: int | None = None) -> list[Finding]:
        """Apply the rules to what was observed; return the warnings and severe findings not returned before.

        A finding is new when its rule has not been returned for one of its layers (for the run as a whole,
        when layer-less), or when its severity is higher than what was returned. ``step`` is for the caller's
        bookkeeping (the findings carry their own first step).
        """
        if not self._changed:
            return []
        self._changed = False
        ev = self.evidence()
        rules = self._rules if self._loss_rules_ready(ev) else [r for r in self._rules if r.id not in LOSS_TREND_RULES]
        findings, self._unchecked = apply(ev, rules, guard=True)
        findings = explain(findings)
        new = []
        for finding in findings:
            if finding.severity == "info":
                continue
            rank = SEVERITIES.index(finding.severity)
            keys = [(finding.rule, layer) for layer in finding.layers] or [(finding.rule, "")]
            if any(self._reported.get(key, len(SEVERITIES)) > rank for key in keys):
                new.append(finding)
                for key in keys:
                    self._reported[key] = min(rank, self._reported.get(key, len(SEVERITIES)))
        return new


@dataclass(frozen=True)
class Detection:
    """A finding of a replay and the step of the check that returned it (its ``finding.step`` is the onset)."""

    checked_at: int
    finding: Finding


def replay(run, *, every: int = 1, loss: str | None = None, num_classes: int | None = None,
           capacity: int = CAPACITY) -> list[Detection]:
    """Feed a recorded run to a :class:`LiveDoctor` step by step (a check every ``every`` steps and at the end).

    What the live engine would have said while the run trained, and when: the benchmark's detection delay.
    """
    ev = from_run(run, loss=loss, num_classes=num_classes)
    live = LiveDoctor(ev.meta, ev.layers, loss=loss, num_classes=num_classes, capacity=capacity)
    timeline: dict[int, list] = {}
    for probe, group in ((ev.grad_probe, ev.grads), (ev.ratio_probe, ev.ratios), (ev.activation_probe, ev.activations)):
        if probe is None or not group:
            continue
        first = next(iter(group.values()))
        for n, step in enumerate(first.steps.tolist()):
            row = {q: s.values[n] for q, s in group.items()}
            timeline.setdefault(step, []).append(("probe", probe, row, first.layers, ev.probes.get(probe)))
    for name, scalar in ev.scalars.items():
        for step, value in zip(scalar.steps.tolist(), scalar.values.tolist(), strict=True):
            timeline.setdefault(step, []).append(("scalar", name, value))
    for event in ev.events or ():
        timeline.setdefault(event.step, []).append(("event", event))
    detections = []
    steps = sorted(timeline)
    for k, step in enumerate(steps):
        for item in timeline[step]:
            if item[0] == "probe":
                live.observe(step, item[1], item[2], item[3], cls=item[4])
            elif item[0] == "scalar":
                live.observe_scalars(step, {item[1]: item[2]})
            else:
                live.observe_event(step, *item[1][1:])
        if step % every == 0 or k == len(steps) - 1:
            detections += [Detection(step, f) for f in live.check(step)]
    return detections
