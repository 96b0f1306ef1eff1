"""Score one scenario: which of its true faults the doctor found with the right symptom, layer and onset
(after the fact), when the live doctor found them while the run trained (detection delay), and which findings
were false alarms.

A fault counts as found when a warning or severe finding of one of its symptom's rules names one of its layers
(any, for a fault of the whole run) and its step lies within the scenario's tolerance of the true onset. A
finding is a false alarm when its symptom is neither a fault of the run, nor accepted as a consequence, nor
measured by the run itself (see ``scenarios.measured_extras``); on a healthy run every warning or severe
finding is one.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field

import gradlens
from benchmarks.doctor.harness import Outcome, record, record_killed
from benchmarks.doctor.scenarios import RULE_SYMPTOM, SYMPTOMS, Scenario, Truth, by_name, measured_extras, tolerance
from gradlens.doctor import Finding, diagnose
from gradlens.doctor.finding import EVENT_KIND, finding_from_event
from gradlens.doctor.live import Detection


@dataclass
class TruthScore:
    truth: Truth
    found: Finding | None = None  # the matching post-hoc finding
    live_step: int | None = None  # the step of the live doctor's first matching ``finding`` event in the file

    @property
    def delay(self) -> int | None:
        return None if self.live_step is None else self.live_step - self.truth.onset


@dataclass
class RunScore:
    scenario: Scenario
    outcome: Outcome
    findings: list[Finding]
    truths: list[TruthScore] = field(default_factory=list)
    false_alarms: list[Finding] = field(default_factory=list)
    live_false_alarms: list[Finding] = field(default_factory=list)
    seconds_diagnose: float = 0.0
    live_checks: int = 0
    live_seconds: float = 0.0


def live_detections(run) -> list[Detection]:
    """What the live doctor found while the run trained: the run file's ``finding`` events, each with the step
    it was found at (``checked_at``) and the finding it wrote (its ``step`` is the onset it reported)."""
    events = run.events()
    out = []
    for step, kind, source, message in zip(events["step"], events["kind"], events["source"], events["message"],
                                            strict=True):
        finding = finding_from_event(str(source), str(message), int(step)) if kind == EVENT_KIND else None
        if finding is not None:
            out.append(Detection(int(step), finding))
    return out


def matches(finding: Finding, truth: Truth, tol: int, check_onset: bool = True) -> bool:
    """Whether ``finding`` reports ``truth``: its symptom, one of its layers, its onset within ``tol`` steps."""
    if finding.severity == "info" or finding.rule not in SYMPTOMS[truth.symptom]:
        return False
    if truth.layers is not None and not set(truth.layers) & set(finding.layers):
        return False
    return not check_onset or (finding.step is not None and abs(finding.step - truth.onset) <= tol)


def score(scenario: Scenario, outcome: Outcome, findings: list[Finding], detections: list[Detection]) -> RunScore:
    """The scenario's truths matched against the doctor's findings and the live engine's detections."""
    result = RunScore(scenario, outcome, findings)
    tol = tolerance(outcome)
    truths = [] if scenario.healthy else scenario.truths(outcome)
    for truth in truths:
        entry = TruthScore(truth, next((f for f in findings if matches(f, truth, tol)), None))
        live = [d for d in detections if matches(d.finding, truth, tol, check_onset=False)]
        entry.live_step = live[0].checked_at if live else None
        result.truths.append(entry)
    allowed = {t.symptom for t in truths} | set(scenario.accept) | measured_extras(outcome)
    if scenario.healthy:
        allowed = set()

    def false(finding: Finding) -> bool:
        return finding.severity != "info" and RULE_SYMPTOM.get(finding.rule, finding.rule) not in allowed

    result.false_alarms = [f for f in findings if false(f)]
    result.live_false_alarms = [d.finding for d in detections if false(d.finding)]
    return result


def recorded(name: str, folder: str) -> tuple:
    """Record (the live doctor on), then diagnose the scenario called ``name``: what scoring it needs (picklable,
    for ``--jobs``)."""
    warnings.simplefilter("ignore")
    scenario = by_name(name)
    path = os.path.join(folder, f"{scenario.name}.h5")
    if scenario.kind == "train":
        outcome = record(scenario.knobs, path)
    else:
        outcome = record_killed(path, scenario.knobs.steps, repaired=scenario.kind == "interrupted")
    started = time.perf_counter()
    findings = diagnose(gradlens.load(path))
    seconds = time.perf_counter() - started
    return outcome, findings, live_detections(gradlens.load(path)), seconds
