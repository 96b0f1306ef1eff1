"""What the doctor says: a :class:`Finding` (one diagnosis, located in steps and layers, with its evidence and
ranked :class:`Fix` es), severities, and the :func:`verdict` a report or ``watch`` shows first.

A finding is also a file event: :meth:`Finding.event_message` is the compact JSON the live engine writes as an
event of kind ``finding`` (source = the rule id, at most 1024 bytes), and :func:`finding_from_event` reads it
back, so a run that crashed keeps what was found while it trained.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

SEVERITIES = ("severe", "warning", "info")
EVENT_KIND = "finding"  # events of this kind hold findings written while training
EVENT_BYTES = 1024  # the events table's message column


def fmt(value: float) -> str:
    """A number in three significant digits (``4.5e+06``, ``0.25``, ``2.3``)."""
    return f"{value:.3g}"


@dataclass(frozen=True)
class Fix:
    """One ranked remedy for a finding.

    Attributes:
        action: what to do, concretely (``"lower the learning rate 10× (0.5 → 0.05)"``).
        because: the evidence that chose this fix before the others.
        change: the same change for a machine: ``{"kind": "lr", "factor": 0.1}``; kinds are listed in
            docs/doctor.md (``lr``, ``init``, ``residual``, ``activation``, ``clip``, ``unfreeze``,
            ``optimizer_params``, ``early_stop``, ``labels``, ``data``, ``repair``, ``probe``, ``scaler``).
    """

    action: str
    because: str
    change: Mapping[str, object] = field(default_factory=dict)

    def as_dict(self, rank: int) -> dict:
        """The JSON form (``rank`` 1 is the fix to try first)."""
        return {"rank": rank, "action": self.action, "because": self.because, "change": dict(self.change)}


@dataclass(frozen=True)
class Finding:
    """One diagnosis.

    Attributes:
        rule: the rule's id (``vanishing``, ``dead_units``, ...; docs/doctor.md lists them).
        severity: ``severe`` (exit status 1), ``warning`` or ``info``.
        title: what is wrong, in words.
        evidence: the steps, layers and values that show it.
        threshold: the rule that fired, with its numbers.
        step: the first step where the symptom appears (None for facts about the whole run).
        layers: the layers (parameters, activation modules) where it appears, most affected first.
        fixes: ranked remedies, the first to try first.
        values: the evidence's key numbers by name, for machines (``{"decades": -11.8}``).
    """

    rule: str
    severity: str
    title: str
    evidence: str
    threshold: str
    step: int | None = None
    layers: tuple[str, ...] = ()
    fixes: tuple[Fix, ...] = ()
    values: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"finding severity must be one of {SEVERITIES}, got {self.severity!r}")

    @property
    def key(self) -> tuple[str, tuple[str, ...]]:
        """What tells one finding from another when they are found again: the rule and the layers."""
        return self.rule, self.layers

    def lines(self) -> list[str]:
        """The finding as indented text lines: title, where, evidence, rule and fixes."""
        out = [f"  {self.severity.upper():<7} {self.title}"]
        where = []
        if self.step is not None:
            where.append(f"from step {self.step}")
        if self.layers:
            shown = ", ".join(self.layers[:6]) + (f" and {len(self.layers) - 6} more" if len(self.layers) > 6 else "")
            where.append(f"in {shown}")
        if where:
            out.append(f"          where: {' '.join(where)}")
        out += [f"          evidence: {self.evidence}", f"          rule: {self.threshold}"]
        for rank, fix in enumerate(self.fixes, 1):
            out.append(f"          fix {rank}: {fix.action} ({fix.because})")
        return out

    def as_dict(self) -> dict:
        """The stable JSON form (``gradlens doctor --json``; docs/doctor.md, "Machine-readable output")."""
        return {
            "rule": self.rule,
            "severity": self.severity,
            "title": self.title,
            "step": self.step,
            "layers": list(self.layers),
            "evidence": {"text": self.evidence, "values": {k: _json_number(v) for k, v in self.values.items()}},
            "threshold": self.threshold,
            "fixes": [fix.as_dict(rank) for rank, fix in enumerate(self.fixes, 1)],
        }

    def event_message(self) -> str:
        """Compact JSON ``{"severity", "step", "layers", "summary"}`` of at most 1024 bytes (an event message).

        Layers are dropped from the end, then the summary is cut, until it fits.
        """
        layers = list(self.layers)
        summary = self.title
        while True:
            text = json.dumps(
                {"severity": self.severity, "step": self.step, "layers": layers, "summary": summary},
                ensure_ascii=False,
                separators=(",", ":"),
            )
            if len(text.encode()) <= EVENT_BYTES:
                return text
            if layers:
                layers.pop()
            else:
                summary = summary[: max(0, len(summary) - 64)]


def _json_number(value: object) -> object:
    if isinstance(value, float) and value != value:  # NaN: JSON has none
        return None
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    return value


def finding_from_event(source: str, message: str, step: int) -> Finding | None:
    """The finding an event of kind ``finding`` holds (None when its message is not the doctor's JSON)."""
    try:
        data = json.loads(message)
        severity = str(data["severity"])
        if severity not in SEVERITIES:
            return None
        at = data.get("step")
        return Finding(
            rule=str(source),
            severity=severity,
            title=str(data.get("summary", "")),
            evidence=f"found while training (event at step {step}); the records since may say more",
            threshold="written by the live doctor when it found it",
            step=step if at is None else int(at),
            layers=tuple(str(layer) for layer in data.get("layers", [])),
        )
    except (ValueError, KeyError, TypeError):
        return None


def by_severity(findings: Sequence[Finding]) -> list[Finding]:
    """Most severe first; then by first step (findings without a step last), keeping rule order otherwise."""
    return sorted(
        findings,
        key=lambda f: (SEVERITIES.index(f.severity), f.step is None, f.step if f.step is not None else 0),
    )


@dataclass(frozen=True)
class Verdict:
    """The one line a report, ``watch`` or CI shows first.

    Attributes:
        level: ``severe``, ``warning``, ``running`` (still being written, nothing wrong so far) or ``healthy``.
        text: the line itself, naming the worst finding and what was not checked.
        exit_status: what ``gradlens doctor`` exits with: 1 for ``severe``, else 0.
    """

    level: str
    text: str
    exit_status: int


def verdict(findings: Sequence[Finding]) -> Verdict:
    """The verdict on one run's findings: the worst finding first, counts, and the rules not checked.

    ``healthy`` only when no finding is a warning or severe and the run is neither still running nor stopped;
    a run whose status finding is a warning or severe (crashed, killed, interrupted, stale) is never healthy.
    """
    severe = [f for f in findings if f.severity == "severe"]
    warnings = [f for f in findings if f.severity == "warning"]
    unchecked = [f for f in findings if f.rule == "not_checked"]
    running = any(f.rule == "status" and f.severity == "info" for f in findings)
    skipped = f"; not checked: {'; '.join(f.title for f in unchecked)}" if unchecked else ""
    if severe or warnings:
        level = "severe" if severe else "warning"
        worst = (severe or warnings)[0]
        where = f" (from step {worst.step}" + (f", {worst.layers[0]}" if worst.layers else "") + ")"
        counts = ", ".join(f"{len(g)} {name}" for name, g in (("severe", severe), ("warning", warnings)) if g)
        text = f"{level.upper()}: {worst.title}{where if worst.step is not None else ''} [{counts}]{skipped}"
        return Verdict(level, text, int(bool(severe)))
    if running:
        return Verdict("running", f"still running, nothing wrong so far{skipped}", 0)
    return Verdict("healthy", f"healthy: no warning or severe finding{skipped}", 0)
