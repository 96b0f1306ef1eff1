"""gradlens watch keeps a report current while a real training subprocess writes the run (SWMR), says when
the run stopped flushing, and stops with a final report when the run finishes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

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


def test_watch_follows_a_training_subprocess(tmp_path):
    path, out, go = tmp_path / "live.h5", tmp_path / "live.html", tmp_path / "go"
    script = tmp_path / "train.py"
    script.write_text(TRAINER)
    trainer = subprocess.Popen([sys.executable, str(script), str(path), str(go)])
    lines: list[str] = []

    def say(line: str) -> None:
        # the trainer stalls after step 2 until the watcher reports the stall
        refreshed = [item for item in lines if item.startswith("refreshed: ")]
        if line.startswith("the run stopped flushing") and refreshed and refreshed[-1].startswith("refreshed: step 2,"):
            go.touch()
        lines.append(line)

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
    stale = [i for i, line in enumerate(lines) if line.startswith("the run stopped flushing")]
    assert stale, text
    # the stall came after step 2 (flushed at every record): the refresh before the stall message saw step 2,
    # and after it the watcher followed the run to its end
    before = [line for line in lines[: stale[-1]] if line.startswith("refreshed: ")]
    assert before[-1].startswith("refreshed: step 2,"), text
    assert "status still running, last flush" in lines[stale[-1]]
    assert lines[-1] == f"run finished at step 5; final report: {out}", text
    page = out.read_text()
    assert "run finished; final report" in page and "http-equiv='refresh'" not in page
    assert gradlens.load(path).status == "finished"


def test_watch_timeout_on_a_missing_file(tmp_path, capsys):
    started = time.monotonic()
    assert main(["watch", str(tmp_path / "never.h5"), "--every", "0.1", "--timeout", "0.3"]) == 1
    assert time.monotonic() - started < 60  # a hang guard: the 0.3 s timeout is asserted by the message below
    out = capsys.readouterr().out
    assert "waiting for" in out and "stopped watching after 0.3 s" in out
    assert main(["watch", str(tmp_path / "x.h5"), "--every", "0"]) == 2
