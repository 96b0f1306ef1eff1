"""gradlens watch (file mode) keeps a page current while a real training subprocess writes the run (SWMR): led
by the verdict, with the run's points inline; it says when the run stopped flushing, and stops with the full
report when the run finishes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import numpy as np

import gradlens
from gradlens.cli import main
from gradlens.watch import watch

TRAINER = textwrap.dedent(
    """
    import os, sys, time
    import torch
    from torch import nn
    import gradlens
    from gradlens.probes import GradStats

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    with gradlens.attach(model, optimizer, sys.argv[1], probes=[GradStats(name="g")], flush_every=1) as session:
        for step in range(6):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            session.log(loss=loss.item())
            time.sleep(0.1)
            if step == 2:  # stall without flushing until the watcher has said so (at most 60 s)
                deadline = time.monotonic() + 60
                while not os.path.exists(sys.argv[2]) and time.monotonic() < deadline:
                    time.sleep(0.05)
    """
)


def _inline(page: str) -> dict:
    """The data a live watch page carries (its script's ``EMBEDDED``)."""
    return json.loads(page.split("const EMBEDDED = ", 1)[1].split(", EVERY_MS = ", 1)[0])


def test_watch_follows_a_training_subprocess(tmp_path):
    path, out, go = tmp_path / "live.h5", tmp_path / "live.html", tmp_path / "go"
    script = tmp_path / "train.py"
    script.write_text(TRAINER)
    trainer = subprocess.Popen([sys.executable, str(script), str(path), str(go)])
    lines: list[str] = []
    pages: list[str] = []  # the page when the watcher said the stall, and the index of that line

    def say(line: str) -> None:
        # the trainer stalls after step 2 until the watcher reports the stall of a page that shows step 2 whole
        # (on a loaded machine a slow step can look stale too: those stall lines do not count)
        if line.startswith("the run stopped flushing") and not pages:
            data = _inline(out.read_text())
            if data["step"] == 2 and data["scalars"]["loss"]["last"][-1:] == [2]:
                pages.append(out.read_text())
                trigger.append(len(lines))
                go.touch()
        lines.append(line)

    trigger: list[int] = []
    try:
        status = watch(path, out=out, every=0.2, timeout=90, stale=1.5, say=say)
    finally:
        go.touch()
        trainer.wait(timeout=90)
    text = "\n".join(lines)
    assert trainer.returncode == 0 and status == 0, text
    assert lines[0] == f"waiting for {path} (the recorder creates it at the first optimizer step)"
    refreshed = [int(line.split()[2].rstrip(",")) for line in lines if line.startswith("refreshed: step")]
    assert len(refreshed) >= 2 and refreshed == sorted(refreshed), text
    assert trigger, text
    # the stall came after step 2 (flushed at every record): the refresh before the stall message saw step 2,
    # and after it the watcher followed the run to its end
    before = [line for line in lines[: trigger[0]] if line.startswith("refreshed: ")]
    assert before[-1].startswith("refreshed: step 2,"), text
    assert "status still running, last flush" in lines[trigger[0]]
    assert lines[-1] == f"run finished at step 5; final report: {out}", text
    page = out.read_text()
    assert "run finished; final report" in page and "http-equiv='refresh'" not in page
    assert gradlens.load(path).status == "finished"
    # the page while the run stalled: led by the verdict at step 2, the points of steps 0..2 inline
    data = _inline(pages[0])
    assert "http-equiv='refresh' content='0.2'" in pages[0]
    assert data["step"] == 2 and data["status"] == "running"
    assert data["headline"]["text"].startswith("At step 2, run not finished but stopped flushing: last flush ")
    steps, loss = gradlens.load(path).scalar("loss", stop=3)
    assert data["scalars"]["loss"]["first"] == steps.tolist() == [0, 1, 2]
    np.testing.assert_allclose(data["scalars"]["loss"]["mean"], loss, rtol=1e-15)


def test_watch_timeout_on_a_missing_file(tmp_path, capsys):
    started = time.monotonic()
    assert main(["watch", str(tmp_path / "never.h5"), "--every", "0.1", "--timeout", "0.3"]) == 1
    assert time.monotonic() - started < 60  # a hang guard: the 0.3 s timeout is asserted by the message below
    out = capsys.readouterr().out
    assert "waiting for" in out and "stopped watching after 0.3 s" in out
    assert main(["watch", str(tmp_path / "x.h5"), "--every", "0"]) == 2


def test_the_last_records_are_on_the_page_before_the_slow_final_report(tmp_path, monkeypatch):
    """When the run has ended, the page shows its last records at once; the full report replaces it after."""
    import gradlens.report

    path, out = tmp_path / "done.h5", tmp_path / "done.html"
    from gradlens.recorder import Recorder

    recorder = Recorder(path, meta={}, flush_every=4)
    recorder.start([{"name": "fc", "kind": "Linear", "shape": [1, 1], "params": 1}], {})
    for step in range(9):
        recorder.log_scalars(step, loss=1.0 / (step + 1))
    recorder.close()
    seen: list[str] = []

    def report(runs, where, banner):
        seen.append(out.read_text())  # what the page held while the report was being made
        out.write_text(f"<p>{banner}</p>")

    monkeypatch.setattr(gradlens.report, "write_report", report)
    assert watch(path, out=out, every=0.1, timeout=60, say=lambda line: None) == 0
    data = _inline(seen[0])
    assert data["status"] == "finished" and data["step"] == 8
    assert data["scalars"]["loss"]["last"][-1] == 8 and data["scalars"]["loss"]["mean"][-1] == 1 / 9
    assert out.read_text() == "<p>run finished; final report</p>"
