"""What a watch page reads (gradlens.watch.data, gradlens.watch.verdict): the run's points after a step, equal to
the file's records; the live doctor's findings from the file's events; the headline led by the worst of both."""

from __future__ import annotations

import json

import numpy as np
from synthetic_runs import LAYERS, STEPS, RunData, grad_probe, healthy_grads, healthy_scalars, write_run

import gradlens
from gradlens.doctor import Finding
from gradlens.watch.data import global_norm, numbers, snapshot
from gradlens.watch.verdict import answer, clean, doctor_json, headline, live_findings


def _run(tmp_path, events=(), grads=None):
    grads = healthy_grads() if grads is None else grads
    data = RunData(probes=[grad_probe(grads)], scalars=healthy_scalars(), events=list(events))
    return gradlens.load(write_run(tmp_path / "run.h5", data))


def test_snapshot_holds_every_record_and_only_new_points_after_since(tmp_path):
    grads = healthy_grads()
    grads["nonfinite"][:, 2] = -1  # fc2 had no gradient: it adds 0 to the global norm
    grads["norm"][:, 2] = np.nan
    run = _run(tmp_path, grads=grads)
    whole = snapshot(run)
    assert whole["status"] == "finished" and whole["step"] == STEPS[-1]
    steps, loss = run.scalar("loss")
    assert whole["scalars"]["loss"]["first"] == steps.tolist() == whole["scalars"]["loss"]["last"]
    np.testing.assert_array_equal(whole["scalars"]["loss"]["mean"], loss)
    layers = whole["layers"]
    assert layers["names"] == LAYERS and layers["probe"] == "grads_every_step" and layers["count"] == [1] * len(STEPS)
    stored = run.array("grads_every_step", "norm")[1].astype(np.float64)
    np.testing.assert_array_equal(np.array(layers["mean"], dtype=np.float64), stored)  # "NaN" strings read back
    brute = np.sqrt(np.array([sum(v * v for j, v in enumerate(row) if j != 2) for row in stored]))
    np.testing.assert_allclose(whole["global_norm"]["mean"], brute, rtol=1e-12)
    assert json.loads(json.dumps(whole, allow_nan=False))["layers"]["mean"][0][2] == "NaN"

    later = snapshot(run, since=29)
    assert later["scalars"]["loss"]["first"] == list(range(30, 40)) and later["step"] == 39
    assert later["layers"]["first"] == list(range(30, 40)) and later["global_norm"]["first"] == list(range(30, 40))
    assert snapshot(run, since=39)["scalars"]["loss"]["first"] == [] and snapshot(run, since=39)["step"] == 39


def test_numbers_and_global_norm_by_hand():
    assert numbers(np.array([1.5, np.nan, np.inf, -np.inf])) == [1.5, "NaN", "Infinity", "-Infinity"]
    assert numbers(np.array([[1.0, np.nan], [np.inf, 2.0]])) == [[1.0, "NaN"], ["Infinity", 2.0]]
    norms = np.array([[3.0, 4.0, np.nan], [3.0, np.nan, 12.0], [np.inf, 1.0, 1.0]])
    missing = np.array([[0, 0, -1], [0, 1, 0], [0, 0, 0]])
    result = global_norm(norms, missing)
    assert result[0] == 5.0 and np.isnan(result[1]) and result[2] == np.inf  # NaN without -1 is not hidden
    assert clean({"a": np.float32(np.nan), "b": [np.int64(3), np.inf], "c": (1.0,)}) == {
        "a": "NaN", "b": [3, "Infinity"], "c": [1.0]}


FINDING = Finding("nonfinite", "severe", "a gradient became NaN", "evidence", "rule", step=7, layers=("fc3.weight",))


def test_live_findings_come_from_the_files_finding_events_and_lead_the_headline(tmp_path):
    run = _run(tmp_path, events=[(8, "finding", "nonfinite", FINDING.event_message()),
                                 (9, "probe_error", "other", "RuntimeError: boom")])
    live = live_findings(run)
    assert live == [{"rule": "nonfinite", "severity": "severe", "step": 7, "found_at": 8,
                     "layers": ["fc3.weight"], "title": "a gradient became NaN"}]
    state = {"status": "running", "step": 12, "last_flush": 1000.0, "now": 1001.0}
    said = headline(state, None, live, stale=120)
    assert said["level"] == "severe"
    assert said["text"] == ("At step 12, run still being written, last flush 00:16:40 UTC: live doctor: SEVERE: a "
                            "gradient became NaN (from step 7, fc3.weight); the doctor is still reading the run")
    stale = headline({**state, "now": 1200.0}, None, [], stale=120)
    assert stale["level"] == "running" and "stopped flushing: last flush 200 s ago at 00:16:40 UTC" in stale["text"]


def test_answer_leads_with_the_post_hoc_doctor_and_names_its_step(tmp_path):
    run = _run(tmp_path)
    doctor = doctor_json(run)
    assert doctor["step"] == 39 and doctor["verdict"] == {"level": "healthy", "exit_status": 0,
                                                         "text": doctor["verdict"]["text"]}
    data = answer(run, since=None, doctor=doctor, stale=120)
    assert data["headline"] == {"level": "healthy", "text": f"At step 39, run finished: {doctor['verdict']['text']}"}
    behind = headline({**data, "step": 45, "status": "running", "now": data["last_flush"]}, doctor, [], 120)
    assert behind["level"] == "running" and "(diagnosed at step 39)" in behind["text"]
    severe = dict(doctor, verdict={"level": "severe", "text": "SEVERE: x", "exit_status": 1})
    assert headline(data, severe, [], 120) == {"level": "severe", "text": "At step 39, run finished: SEVERE: x"}
    json.dumps(data, allow_nan=False)  # valid JSON as it is sent
