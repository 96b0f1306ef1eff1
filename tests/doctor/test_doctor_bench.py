"""The labelled benchmark in the suite: its subset (healthy and faulty scenarios of ``ci=True``) must find every
fault with the right rule, layer and onset and raise no false alarm; and, for every faulty scenario a knob can
fix, the first suggested fix applied to the same scenario removes the finding and lowers the loss (verified
fixes; marked slow: two tiny runs per faulty scenario). ``make doctor-bench`` runs all 63 scenarios and prints the
table (docs/doctor.md)."""

from __future__ import annotations

import re
import warnings

import pytest

import gradlens
from benchmarks.doctor.harness import Knobs, Outcome, record
from benchmarks.doctor.scenarios import SCENARIOS, SYMPTOMS, apply_fix, by_name, tolerance
from benchmarks.doctor.score import live_detections, matches, score
from gradlens.doctor import diagnose

RECORDED: dict[Knobs, tuple[Outcome, list]] = {}  # knobs -> (outcome, findings): runs shared by the tests


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("doctor-bench")


def run(knobs: Knobs, folder) -> tuple[Outcome, list]:
    """The scenario's run and its findings (a fixed scenario that equals another one is run once)."""
    if knobs not in RECORDED:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outcome = record(knobs, str(folder / f"run{len(RECORDED)}.h5"))
        RECORDED[knobs] = (outcome, diagnose(gradlens.load(outcome.path)))
    return RECORDED[knobs]


def test_the_subset_finds_every_fault_and_raises_no_false_alarm(folder):
    chosen = [s for s in SCENARIOS if s.ci]
    assert sum(s.healthy for s in chosen) >= 4 and sum(not s.healthy for s in chosen) >= 6
    faults = found = 0
    for scenario in chosen:
        outcome, findings = run(scenario.knobs, folder)
        result = score(scenario, outcome, findings, live_detections(gradlens.load(outcome.path)))
        assert result.false_alarms == [], (scenario.name, [f.title for f in result.false_alarms])
        assert result.live_false_alarms == [], (scenario.name, [f.title for f in result.live_false_alarms])
        faults += len(result.truths)
        found += sum(t.found is not None for t in result.truths)
        for truth in result.truths:  # the live doctor found it too while the run trained, from its onset on
            assert truth.delay is not None and truth.delay >= 0, (scenario.name, truth.truth)
    assert faults >= 6 and found / faults >= 0.95


FIXABLE = [s.name for s in SCENARIOS if not s.healthy and s.judge is not None]


@pytest.mark.slow
@pytest.mark.parametrize("name", FIXABLE)
def test_the_first_fix_removes_the_finding_and_lowers_the_loss(name, folder):
    scenario = next(s for s in SCENARIOS if s.name == name)
    outcome, findings = run(scenario.knobs, folder)
    truth = scenario.truths(outcome)[0]
    finding = next(f for f in findings if matches(f, truth, tolerance(outcome)))
    after_outcome, after = run(apply_fix(scenario.knobs, dict(finding.fixes[0].change)), folder)
    still = [f.title for f in after if f.severity != "info" and f.rule in SYMPTOMS[truth.symptom]]
    assert still == [], (finding.fixes[0].action, still)
    before, now = outcome.final_loss(), after_outcome.final_loss()
    if scenario.judge == "same":  # a fault that does not change training: the loss is not higher
        assert now <= before + 1e-6, (before, now)
    else:
        assert now < before, (finding.fixes[0].action, before, now)


def test_after_a_nan_the_activation_probe_and_histograms_record_every_step_of_the_detail_window(folder):
    """``nan_detail``: ActivationStats and GradStats(bins=16) every 10 steps, the live doctor on; the loss is NaN
    from step 60. The session's trigger opens a window of 20 steps (``detail`` events) in which both record at
    every step; outside the windows they keep their schedule."""
    scenario = by_name("nan_detail")
    outcome, findings = run(scenario.knobs, folder)
    saved = gradlens.load(outcome.path)
    events = saved.events()
    windows = [tuple(map(int, re.search(r"every step (\d+)\.\.(\d+)", m).groups()))
               for m in events["message"][events["kind"] == "detail"]]
    assert windows[0] == (61, 80)  # the NaN loss of step 60 was logged after its optimizer step
    inside = {s for a, b in windows for s in range(a, b + 1) if s < scenario.knobs.steps}
    expected = sorted(inside | set(range(0, scenario.knobs.steps, 10)))
    for probe in ("activation_stats", "histograms"):
        assert saved.steps(probe).tolist() == expected, probe
    nonfinite = [f for f in findings if f.rule == "nonfinite"]
    assert nonfinite and nonfinite[0].step == 60
