"""The live engine: new findings only (per rule and layer, again when the severity rises), bounded buffers, loss
trends judged only after LIVE_LOSS_MIN_STEPS and a finished warm-up, and a replay of a file finding what the
doctor finds after the fact."""

from __future__ import annotations

import numpy as np
from doctor_runs import LAYERS, healthy_grads, load, write

from gradlens.doctor import LiveDoctor, diagnose, replay
from gradlens.doctor.live import LIVE_LOSS_MIN_STEPS

META = {"probes": [{"name": "g", "class": "GradStats"}], "num_classes": 10}


def grads_at(step, scale=1.0, nan=False):
    mean_abs = 1e-2 * np.linspace(1, 2, len(LAYERS)) * scale
    row = {"mean_abs": mean_abs, "norm": 30 * mean_abs, "max_abs": 5 * mean_abs, "nonfinite": np.zeros(len(LAYERS))}
    if nan:
        row = {k: np.full(len(LAYERS), np.nan) if k != "nonfinite" else np.full(len(LAYERS), 4.0) for k in row}
    return row


def test_findings_are_returned_once_and_again_when_more_severe():
    live = LiveDoctor(META)
    returned = []
    for step in range(60):
        live.observe(step, "g", grads_at(step, nan=step >= 30), LAYERS)
        live.observe_scalars(step, {"loss": 2.3 * np.exp(-step / 10) + 0.1})
        returned += [(step, f) for f in live.check(step)]
    nonfinite = [(s, f) for s, f in returned if f.rule == "nonfinite"]
    assert len(nonfinite) == 1 and nonfinite[0][0] == 30 and nonfinite[0][1].step == 30
    assert live.check(60) == []  # nothing new observed


def test_buffers_stay_bounded_and_keep_the_first_record():
    live = LiveDoctor(META, capacity=32)
    for step in range(5000):
        live.observe(step, "g", grads_at(step), LAYERS)
    ev = live.evidence()
    series = ev.grads["mean_abs"]
    assert len(series) <= 32 and series.steps[0] == 0 and series.steps[-1] == 4999
    assert np.all(np.diff(series.steps) > 0) and series.values.shape == (len(series), len(LAYERS))


def test_a_loss_at_chance_waits_for_enough_steps_and_the_end_of_warm_up():
    live = LiveDoctor(META)
    found = {}
    for step in range(LIVE_LOSS_MIN_STEPS + 50):
        live.observe(step, "g", grads_at(step), LAYERS)
        warm = min(1.0, (step + 1) / (LIVE_LOSS_MIN_STEPS + 20))  # the warm-up ends after the minimum
        live.observe_scalars(step, {"loss": 2.30 + 0.01 * np.sin(step), "lr": 0.1 * warm})
        for f in live.check(step):
            found.setdefault(f.rule, step)
    assert found["chance_plateau"] == LIVE_LOSS_MIN_STEPS + 20  # the first check after the rate stopped rising


def test_replay_finds_what_the_doctor_finds(tmp_path):
    grads = healthy_grads()
    for q in ("mean", "mean_abs", "norm", "max_abs"):
        grads[q][20:, 3] = 0.0
    run = load(write(tmp_path, grads=grads))
    after = {f.rule for f in diagnose(run) if f.severity != "info"}
    detections = replay(run)
    assert {d.finding.rule for d in detections} == after == {"dead_layer"}
    (dead,) = detections
    assert dead.finding.step == 20 and dead.checked_at == 24  # five records of zeros: DEAD_MIN_RECORDS


def test_a_failing_rule_is_said_once_and_never_raised(monkeypatch):
    from gradlens.doctor.clipping import ClippingDominates

    def broken(self, ev):
        raise RuntimeError("boom")

    monkeypatch.setattr(ClippingDominates, "check", broken)
    live = LiveDoctor(META)
    said = []
    for step in range(5):
        live.observe(step, "g", grads_at(step), LAYERS)
        said += live.check(step)
    (error,) = said
    assert error.rule == "doctor_error" and "clipping_dominates" in error.title and "RuntimeError: boom" in error.title
    assert any("activation" in f.title for f in live.not_checked())
