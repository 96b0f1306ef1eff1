"""The doctor's verdict leads every report and compare page (issue 21.8): its heading says at which step and of
what kind of run, each finding's one line and first fix; the same block as a dict for the live page; findings
the live doctor wrote into the file are part of it; long runs are diagnosed from their stored summary."""

from __future__ import annotations

import json
import re

import numpy as np
from synthetic_runs import RunData, grad_probe, healthy_grads, healthy_scalars, write_run

import gradlens
from gradlens.doctor import diagnose, verdict
from gradlens.recorder import Recorder
from gradlens.report import verdict_dict, verdict_html, write_report
from gradlens.report.diagnosis import diagnose_run, group_digits


def nonfinite_run(path):
    values = healthy_grads()
    values["mean_abs"][20:, 3] = np.nan
    values["norm"][20:, 3] = np.nan
    values["nonfinite"][20:, 3] = 16
    return gradlens.load(write_run(path, RunData([grad_probe(values)], healthy_scalars(), label="broken")))


def healthy_run(path, label="fine"):
    return gradlens.load(write_run(path, RunData([grad_probe(healthy_grads())], healthy_scalars(), label=label)))


def test_verdict_of_a_healthy_finished_run(tmp_path):
    run = healthy_run(tmp_path / "ok.h5")
    block = verdict_dict(run)
    assert block["heading"] == "doctor verdict at step 39 of a finished run"
    assert (block["level"], block["exit_status"], block["status"], block["step"]) == ("healthy", 0, "finished", 39)
    assert block["text"] == verdict(diagnose(run)).text
    assert block["findings"] == [] and block["read"] == {"block": 1, "records": 40}
    assert json.loads(json.dumps(block)) == block  # plain JSON for the live page
    page = verdict_html(run)
    assert "doctor verdict at step 39 of a finished run" in page and "healthy" in page


def test_verdict_lists_each_finding_with_its_first_fix(tmp_path):
    run = nonfinite_run(tmp_path / "nan.h5")
    findings = diagnose(run)
    block = verdict_dict(run)
    assert block["level"] == "severe" and block["exit_status"] == 1
    shown = [f for f in findings if f.severity != "info"]
    assert [f["rule"] for f in block["findings"]] == [f.rule for f in shown]
    first = block["findings"][0]
    nonfinite = next(f for f in shown if f.rule == first["rule"])
    assert first == {
        "rule": nonfinite.rule,
        "severity": "severe",
        "summary": nonfinite.title,
        "step": nonfinite.step,
        "layers": list(nonfinite.layers),
        "fix": nonfinite.fixes[0].action,
    }
    assert first["step"] == 20 and "fc3.weight" in first["layers"]
    page = verdict_html(run)
    assert f"fix: {nonfinite.fixes[0].action}"[:60] in page.replace("&#x27;", "'").replace("&quot;", '"')
    assert "class='severe'" in page


def test_running_run_is_said_still_being_written(tmp_path):
    path = tmp_path / "live.h5"
    recorder = Recorder(path, meta={"probes": []}, flush_every=1000, flush_seconds=3600)
    recorder.start([{"name": "fc0", "kind": "linear", "shape": [4, 4], "params": 16}], {})
    for step in range(12346):
        if step % 1000 == 0 or step == 12345:
            recorder.log_scalars(step, loss=2.0 - step * 1e-4)
    recorder.flush()
    run = gradlens.load(path)
    block = verdict_dict(run, now=run.last_flush + 1)
    assert block["heading"] == "doctor verdict at step 12 345, run still being written"
    assert block["status"] == "running"
    recorder.close()
    assert group_digits(1234567) == "1 234 567"


def test_findings_the_live_doctor_wrote_are_in_the_verdict(tmp_path):
    message = json.dumps({"severity": "severe", "step": 17, "layers": ["fc2"], "summary": "80 % of units in fc2 dead"})
    data = RunData([grad_probe(healthy_grads())], healthy_scalars(), events=[(18, "finding", "dead_units", message)])
    run = gradlens.load(write_run(tmp_path / "ev.h5", data))
    block = verdict_dict(run)
    dead = [f for f in block["findings"] if f["rule"] == "dead_units"]
    assert dead and dead[0]["summary"] == "80 % of units in fc2 dead" and dead[0]["step"] == 17
    assert block["level"] == "severe"


def test_report_and_compare_lead_with_the_verdict(tmp_path):
    broken, fine = nonfinite_run(tmp_path / "nan.h5"), healthy_run(tmp_path / "ok.h5")
    page = tmp_path / "c.html"
    write_report([broken, fine], page)
    text = page.read_text()
    body = text[text.index("<body>") :]
    headings = [m.start() for m in re.finditer("doctor verdict at step 39", body)]
    assert len(headings) == 2
    first_other = min(body.index(tag) for tag in ("<h2>", "<img", "<table>", "<p>Written") if tag in body)
    assert body.index("<h1>") < headings[0] < headings[1] < first_other
    assert body.index("broken") < body.index("fine")  # the runs in the page's order


def test_long_run_is_diagnosed_from_its_summary_as_gradlens_doctor_reads_it(tmp_path, monkeypatch):
    """The report's verdict on a long run is the doctor's own (one route): the same findings as ``diagnose``, and the
    heading names the block the doctor read."""
    import gradlens.doctor.evidence as evidence

    monkeypatch.setattr(evidence, "FULL_RECORDS", 16)  # 40 records > 16: read as summary blocks ...
    monkeypatch.setattr(evidence, "SUMMARY_POINTS", 2)  # ... of 32 records (the coarsest giving >= 2 blocks)
    run = nonfinite_run(tmp_path / "nan.h5")
    found = diagnose_run(run)
    assert found.block == 32
    assert "from its summary (blocks of 32 records" in found.heading()
    assert found.verdict.level == "severe"  # the NaN block is still seen, at its exact first step
    assert found.findings == diagnose(run)
    first = next(f for f in found.findings if f.rule == "nonfinite")
    assert first.step == 20 and first.layers[0] == "fc3.weight"  # exact: the NaN block read again record by record


def test_report_of_a_live_run_whose_probe_has_no_record_yet(tmp_path):
    from gradlens.probes.base import Quantity

    path = tmp_path / "young.h5"
    quantity = {"mean_abs": Quantity((1,), ("layer",), {"layer": ["fc0.weight"]})}
    meta = {"probes": [{"name": "g", "class": "GradStats", "schedule": "every 100"}]}
    recorder = Recorder(path, meta=meta, flush_every=1000, flush_seconds=3600)
    recorder.start([{"name": "fc0", "kind": "linear", "shape": [4, 4], "params": 16}], {"g": quantity})
    recorder.log_scalars(0, loss=2.3)
    recorder.flush()
    run = gradlens.load(path)
    page = write_report([run], tmp_path / "young.html")
    text = open(page).read()
    assert "doctor verdict at step 0, run still being written" in text
    assert "g (no records committed yet)" in text
    recorder.close()
