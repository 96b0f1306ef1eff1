"""A run as a whole: its status (crashed, killed with a dead writer, interrupted, stale, still running), events
(probe errors, AMP skips, findings written while training), non-finite values, the verdict, ``gradlens
doctor`` text and ``--json`` with exit statuses 0/1/2, and the thresholds and severities documented."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
from doctor_runs import LAYERS, by_rule, healthy_grads, healthy_scalars, load, loud, write

import gradlens
from gradlens.cli import main
from gradlens.doctor import RULES, diagnose, finding_from_event, verdict
from gradlens.doctor.status import STALE_SECONDS
from gradlens.recorder import Recorder, repair

DOCS = Path(__file__).resolve().parents[2] / "docs" / "doctor.md"


def test_healthy_run_exit_0_and_what_was_not_checked_is_said(tmp_path, capsys):
    path = write(tmp_path)
    findings = diagnose(load(path))
    assert loud(findings) == []
    said = verdict(findings)
    assert said.level == "healthy" and said.exit_status == 0 and "activation rules (dead units" in said.text
    assert said.text.startswith("healthy: no warning or severe finding; not checked: ")
    assert main(["doctor", path]) == 0
    assert "healthy" in capsys.readouterr().out


def test_first_nonfinite_value_and_the_scalar_that_went_first(tmp_path):
    grads = healthy_grads()
    for q in ("mean", "mean_abs", "norm", "max_abs"):
        grads[q][17:, 4] = np.nan
        grads[q][18:, :] = np.nan
    grads["nonfinite"][17, 4] = 12
    scalars = [(s, n, v if s < 15 else float("nan")) for s, n, v in healthy_scalars()]
    findings = diagnose(load(write(tmp_path, grads=grads, scalars=scalars)))
    (finding,) = by_rule(findings, "nonfinite")
    assert finding.severity == "severe" and finding.step == 15 and finding.layers == ("fc4.weight",)
    assert "step 17, layer fc4.weight, grads_every_step/" in finding.evidence
    assert "step 15: scalar loss = nan" in finding.evidence and "the scalar loss went first" in finding.evidence
    assert finding.fixes[0].change == {"kind": "data"}  # the norm did not grow before: an operation, not the rate
    assert findings[0] is finding and main(["doctor", str(tmp_path / "run.h5")]) == 1


def test_amp_skipped_steps_excuse_their_overflow_and_too_many_are_a_finding(tmp_path):
    grads = healthy_grads()
    skipped = [3, 24, 30]
    for q in ("norm", "max_abs", "mean_abs"):
        grads[q][skipped] = np.inf  # the scaler's overflows, recorded on the unscaled gradients
    events = [(s, "step_skipped", "GradScaler", "Inf/NaN gradients") for s in skipped]
    findings = diagnose(load(write(tmp_path, grads=grads, events=events)))
    assert by_rule(findings, "nonfinite") == [] and by_rule(findings, "spike") == []
    (skips,) = by_rule(findings, "amp_skipped_steps")  # 2 of the 20 steps after calibration: 10 % > 5 %
    assert skips.severity == "warning" and skips.step == 24 and "10.0%" in skips.title
    calibration = [(s, "step_skipped", "GradScaler", "Inf/NaN gradients") for s in (0, 1, 2)]
    (quiet,) = by_rule(diagnose(load(write(tmp_path, "calm", events=calibration))), "amp_skipped_steps")
    assert quiet.severity == "info"


EVENTS = [
    (4, "probe_error", "cushion", "RuntimeError: shapes differ"),
    (5, "probe_error", "cushion", "RuntimeError: shapes differ"),
    (6, "probe_error", "cushion", "RuntimeError: shapes differ"),
    (6, "probe_disabled", "cushion", "switched off after 3 consecutive failures"),
]


def test_probe_errors(tmp_path):
    findings = diagnose(load(write(tmp_path, events=EVENTS)))
    (errors,) = by_rule(findings, "probe_error")
    assert errors.title == "3 probe errors" and errors.step == 4 and errors.layers == ("cushion",)
    assert errors.evidence == "cushion: 3 at steps 4, 5, 6 — RuntimeError: shapes differ"
    (disabled,) = by_rule(findings, "probe_disabled")
    assert "cushion: 1 at steps 6" in disabled.evidence


def test_findings_written_while_training_are_read_back(tmp_path):
    from gradlens.doctor import Finding

    live = Finding("dead_units", "severe", "80% of the units in act1 are dead", "", "", step=7,
                   layers=tuple(f"act{i}" for i in range(200)))
    message = live.event_message()
    assert len(message.encode()) <= 1024  # layers dropped from the end until it fits
    back = finding_from_event("dead_units", message, 9)
    assert back.step == 7 and back.severity == "severe" and back.layers[0] == "act0"
    findings = diagnose(load(write(tmp_path, events=[(9, "finding", "dead_units", message)])))
    (found,) = by_rule(findings, "dead_units")  # no activation records now (a crash lost them): kept
    assert found.title == "80% of the units in act1 are dead" and verdict(findings).exit_status == 1


def _live_copy(tmp_path) -> Path:
    """A copy of a file whose writer is still open: what a killed writer leaves (status running)."""
    recorder = Recorder(tmp_path / "live.h5", meta={"probes": []}, flush_every=10_000, flush_seconds=3600)
    recorder.start([{"name": "fc0", "kind": "linear", "shape": [4, 4], "params": 16}], {})
    recorder.log_scalars(3, loss=1.0)
    recorder.flush()
    (tmp_path / "left.h5").write_bytes((tmp_path / "live.h5").read_bytes())
    recorder.close()
    return tmp_path / "left.h5"


def test_killed_interrupted_stale_running_and_crashed_runs_are_never_healthy(tmp_path):
    left = _live_copy(tmp_path)
    run = gradlens.load(left)
    assert run.status == "running"
    # no lock file: the age of the last flush decides
    (stale,) = by_rule(diagnose(run, now=run.last_flush + STALE_SECONDS + 100), "status")
    assert stale.severity == "warning" and f"stopped flushing {STALE_SECONDS + 100:.0f} s ago" in stale.title
    fresh = diagnose(run, now=run.last_flush + 1)
    assert by_rule(fresh, "status")[0].severity == "info" and verdict(fresh).level == "running"
    # a lock file that nobody holds: its writer was killed (SIGKILL leaves it behind)
    Path(f"{left}.lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname(), "time": 0}))
    (killed,) = by_rule(diagnose(run), "status")
    assert killed.severity == "severe" and "its writer (process 4206649" in killed.title and killed.step == 3
    assert killed.fixes[0].change == {"kind": "repair"}
    os.remove(f"{left}.lock")
    repair(left, backup=False)
    (interrupted,) = by_rule(diagnose(gradlens.load(left)), "status")
    assert interrupted.severity == "severe" and "interrupted" in interrupted.title
    failed = Recorder(tmp_path / "f.h5", meta={"probes": []})
    failed.start([{"name": "fc0", "kind": "linear", "shape": [4, 4], "params": 16}], {})
    failed.close("failed")
    findings = diagnose(gradlens.load(tmp_path / "f.h5"))
    assert by_rule(findings, "status")[0].severity == "severe" and verdict(findings).exit_status == 1


def test_a_run_whose_writer_lives_is_still_running(tmp_path):
    recorder = Recorder(tmp_path / "open.h5", meta={"probes": []}, flush_every=10_000, flush_seconds=3600)
    recorder.start([{"name": "fc0", "kind": "linear", "shape": [4, 4], "params": 16}], {})
    recorder.flush()
    try:
        (status,) = by_rule(diagnose(gradlens.load(tmp_path / "open.h5")), "status")
        assert status.severity == "info" and f"process {os.getpid()}" in status.evidence
    finally:
        recorder.close()


def test_json_output_is_stable_and_complete(tmp_path, capsys):
    grads = healthy_grads()
    grads["norm"][25] *= 50
    path = write(tmp_path, grads=grads)
    assert main(["doctor", "--json", path]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["schema"] == "gradlens.doctor/1" and document["exit_status"] == 0
    (run,) = document["runs"]
    assert run["path"] == path and run["status"] == "finished" and run["verdict"]["level"] == "warning"
    (spike,) = [f for f in run["findings"] if f["rule"] == "spike"]
    assert set(spike) == {"rule", "severity", "title", "step", "layers", "evidence", "threshold", "fixes"}
    assert spike["step"] == 25 and spike["layers"] == [LAYERS[int(np.argmax(grads["norm"][25]))]]
    assert set(spike["evidence"]) == {"text", "values"} and spike["evidence"]["values"]["spikes"] == 1
    assert spike["fixes"][0]["rank"] == 1 and spike["fixes"][0]["change"]["kind"] == "clip"
    assert {"what", "how"} <= set(run["not_checked"][0])


def test_without_events_or_gradient_statistics_it_is_said(tmp_path, monkeypatch):
    from synthetic_runs import ProbeData, RunData, write_run

    from gradlens.probes.base import Quantity

    cushion = ProbeData(
        "c", "LayerCushion",
        {"mu": Quantity((2, 3), ("layer", "sample"), {"layer": ["a", "b"]}),
         "min": Quantity((2,), ("layer",), {"layer": ["a", "b"]})},
        [0, 1], {"mu": np.ones((2, 2, 3)) * 0.5, "min": np.array([[0.5, 0.25], [0.4, 0.2]])},
    )
    run = gradlens.load(write_run(tmp_path / "c.h5", RunData(probes=[cushion])))
    findings = diagnose(run)
    (gradients,) = [f for f in findings if f.rule == "not_checked" and f.title.startswith("gradient rules")]
    assert "GradStats" in gradients.evidence and "vanishing" in gradients.evidence
    (cushion_finding,) = by_rule(findings, "cushion")
    assert "0.2 at b" in cushion_finding.title
    monkeypatch.delattr(gradlens.loader.Run, "events", raising=False)
    events = [f for f in diagnose(gradlens.load(write(tmp_path))) if f.rule == "not_checked" and "probe" in f.title]
    assert events and events[0].severity == "info"


def test_the_demo_plain_net_vanishes_and_its_residual_twin_is_healthy(tmp_path, monkeypatch):
    """The demo at full depth (30 blocks) for one epoch: the effect is set by depth, not training length."""
    from gradlens import demo
    from gradlens.demo import DemoConfig, run_demo

    monkeypatch.setattr(demo, "write_report", lambda runs, out, title=None: out)
    run_demo(DemoConfig(depth=30, epochs=1), out_dir=str(tmp_path), progress=False)
    plain = gradlens.load(tmp_path / "plain.h5")
    (vanishing,) = by_rule(diagnose(plain), "vanishing")
    assert vanishing.severity == "severe" and vanishing.step == 0 and vanishing.layers[0] == "stem"
    assert vanishing.values["decades"] < -10  # "first layer about 1e-12 of the last"
    residual = diagnose(gradlens.load(tmp_path / "residual.h5"))
    assert loud(residual) == [], [f.title for f in loud(residual)]


def test_bad_input_exits_2(tmp_path, capsys):
    assert main(["doctor", str(tmp_path / "missing.h5")]) == 2
    (tmp_path / "junk.h5").write_text("not hdf5")
    assert main(["doctor", str(tmp_path / "junk.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 1 and "junk.h5" in err
    assert main(["doctor", "--classes", "1", write(tmp_path)]) == 2


def test_every_rule_threshold_and_severity_is_documented():
    import importlib

    text = DOCS.read_text()
    for rule in RULES:
        module = importlib.import_module(type(rule).__module__)
        assert f"`{rule.id}`" in text, rule.id
        for name in rule.thresholds:
            assert name in text, name
            assert f"{getattr(module, name):g}" in text, name
