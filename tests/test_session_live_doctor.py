"""The session with the doctor's real ``LiveDoctor`` (issue 21.5): faults found while training, written into the
file at once, read back by the post-hoc doctor; ``stop_on="severe"`` ends a run that went NaN.

Each run is a tiny classifier on a fixed synthetic task (well under a second of training); the fault is made in
the scenario itself (NaN inputs from step 60, biases that kill ReLUs, a clip threshold far below the natural
gradient norm) and the test checks the finding's rule, onset and layer against it.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import gradlens
from gradlens import doctor
from gradlens.probes import ActivationStats, GradStats
from gradlens.session import FindingWarning


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(step)
    x = torch.randn(32, 10, generator=generator)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()  # three classes a small MLP learns


def _run(path, *, steps=150, nan_from=None, dead=False, clip=None, **attach_kw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))
    if dead:
        with torch.no_grad():
            model[2].bias[:28] = -100.0  # 28 of the 32 units of the second ReLU can never fire
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    found = []
    probes = [GradStats(), ActivationStats(every=10)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with gradlens.attach(model, optimizer, path, probes=probes, on_finding=found.append, **attach_kw) as session:
            for step in range(steps):
                x, y = _batch(step)
                if nan_from is not None and step >= nan_from:
                    x = x * float("nan")
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                optimizer.step()
                session.log(loss=loss.item())
    warned = [w for w in caught if w.category is FindingWarning]
    return session, found, warned, gradlens.load(path)


def _events(run, kind: str):
    events = run.events()
    return events[events.kind == kind]


def test_a_healthy_run_finds_nothing(tmp_path):
    session, found, warned, run = _run(tmp_path / "run.h5", live=10)
    assert found == [] and warned == []
    assert _events(run, "finding").empty and run.status == "finished"


def test_nan_from_step_60_is_found_within_one_check_and_stops_the_run(tmp_path):
    session, found, warned, run = _run(tmp_path / "run.h5", nan_from=60, live=10, stop_on="severe")
    (finding,) = [f for f in found if f.rule == "nonfinite"]
    assert finding.severity == "severe" and finding.step == 60  # onset, as made in the scenario
    assert session.step == 70  # found at the first check after step 60 (after step 69), then stopped
    assert run.status == "stopped"
    assert len(warned) == len(found)
    events = _events(run, "finding")
    assert list(events[events.source == "nonfinite"].step) == [69]  # the step it was found at
    back = doctor.finding_from_event("nonfinite", events.message.iloc[-1], 69)
    assert (back.severity, back.step, back.layers) == ("severe", 60, finding.layers)
    # the logged NaN loss triggered the detail window at once, before the check
    assert _events(run, "detail").step.iloc[0] == 61
    assert any(f.rule == "nonfinite" for f in doctor.diagnose(run))  # the post-hoc doctor agrees


def test_dead_relu_units_are_found_in_the_relu_module(tmp_path):
    session, found, warned, run = _run(tmp_path / "run.h5", dead=True, live=10)
    (finding,) = [f for f in found if f.rule == "dead_units"]
    assert finding.layers[0] == "3"  # the second ReLU, by its module name
    assert finding.values["fraction"] == pytest.approx(28 / 32)  # what the scenario killed, no more
    assert list(_events(run, "finding").source) == ["dead_units"]
    kinds = next(p for p in run.meta["probes"] if p["name"] == "activation_stats")["kinds"]
    assert kinds == {"1": "relu", "3": "relu"}


def test_clipping_far_below_the_natural_norm_is_named(tmp_path):
    session, found, warned, run = _run(tmp_path / "run.h5", clip=1e-3, live=10)
    (finding,) = [f for f in found if f.rule == "clipping_dominates"]
    assert finding.severity == "severe" and finding.step == 0
    preclip = run.scalars().query("name == 'clip/preclip_norm'").value
    assert len(preclip) == 150 and (preclip > 1e-3).all()
