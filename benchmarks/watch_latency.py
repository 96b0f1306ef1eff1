"""How far ``gradlens watch`` lags a training run (issue 23.5, 23.3): the file mode and the served page.

A writer subprocess trains ``TinyParameters`` (150 parameter tensors of 16 entries: ``benchmarks/long_runs.py``'s
recording script) for ``--steps`` steps (default 10^4) with ``GradStats`` at every step and the loss
logged, flushing as ``attach`` does by default (every 64 records or 5 s); ``--sleep`` seconds per step (default
2 ms) make the run last as a real one would. Beside it, one watcher as a user starts it (a cold
``gradlens watch`` subprocess, started before the file exists):

- ``file``: ``gradlens watch RUN --every 1 --out PAGE``; this script looks at PAGE every 50 ms and reads the
  step of the data inside it whenever it changed;
- ``served``: ``gradlens watch RUN --port 0 --every 1``; this script asks ``/data?since=STEP`` every second, as
  the page does, and takes the step of each answer.

This script also samples the run file every 50 ms (``n_records`` and ``last_flush``: the writer's own clock at
each flush) to learn when each step was committed. The lag of a flush = the first moment the watcher showed
its step (or a later one) − the flush's time; the table gives median, 90th percentile and maximum over the
flushes, for the first and the last tenth of the run and for all of it, and the load average. Lags are wall
seconds on whatever machine runs this (state its load). ``--mode file served`` (default: both, one after the
other, each with its own writer run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from long_runs import PARAMS, RECORD, ROOT, SIZE  # this folder is on sys.path when run as a script

GRADLENS = [sys.executable, "-c", "import sys; from gradlens.cli import main; sys.exit(main(sys.argv[1:]))"]

LOGGED = "        session.log(loss=loss.item())\n"  # the writer's last line in a step


def writer_script(pause: float) -> str:
    """``long_runs.RECORD`` (TinyParameters, GradStats at every step, the loss logged, attach's default
    flushes) with a sleep of ``pause`` seconds after each step."""
    if LOGGED not in RECORD:
        raise RuntimeError("benchmarks/long_runs.py's RECORD changed: update watch_latency.writer_script")
    return RECORD.replace(LOGGED, LOGGED + f"        time.sleep({pause!r})\n")


FINAL = 2**62  # the step a final report "shows"


class Flushes:
    """The run file sampled: for each new committed record count, the writer's time of that flush."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.run = None
        self.seen: list[tuple[int, float]] = []  # (last committed step, flush time)

    def sample(self) -> None:
        import gradlens

        try:
            if self.run is None:
                self.run = gradlens.load(self.path)
            count, flushed = self.run.n_records("grad_stats"), self.run.last_flush
        except (FileNotFoundError, ValueError, OSError, KeyError):
            return
        if count and flushed is not None and (not self.seen or count - 1 > self.seen[-1][0]):
            self.seen.append((count - 1, flushed))  # GradStats at every step from step 0: record k is step k


def page_step(page: Path) -> int | None:
    """The step of the data inside a watch page (``FINAL`` for the final report; None: not readable yet)."""
    try:
        text = page.read_text()
        if "; final report" in text:  # the run ended: the full report shows every step
            return FINAL
        data = json.loads(text.split("const EMBEDDED = ", 1)[1].split(", EVERY_MS = ", 1)[0])
    except (OSError, IndexError, ValueError):
        return None
    return data.get("step") if isinstance(data, dict) else None


def served_step(url: str, since: int | None) -> int | None:
    query = "" if since is None else f"?since={since}"
    with urllib.request.urlopen(url + "data" + query, timeout=30) as answer:
        data = json.loads(answer.read())
    return data.get("step")


def measure(mode: str, steps: int, pause: float, work: Path) -> tuple[list[tuple[int, float]], list[tuple[float, int]]]:
    """One writer run and one watcher: the flushes ``(step, time)`` and what the watcher showed ``(time, step)``."""
    path, page = work / f"{mode}.h5", work / f"{mode}.html"
    for stale in (path, page):
        stale.unlink(missing_ok=True)
    if mode == "file":
        command = [*GRADLENS, "watch", str(path), "--every", "1", "--out", str(page), "--timeout", "3600"]
    else:
        command = [*GRADLENS, "watch", str(path), "--port", "0", "--every", "1", "--timeout", "3600"]
    watcher = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    url = None
    if mode == "served":
        line = watcher.stdout.readline()
        url = line.split(" at ")[1].split()[0]
    arguments = [str(path), str(steps), str(PARAMS), str(SIZE), "none"]
    writer = subprocess.Popen([sys.executable, "-c", writer_script(pause), *arguments], stdout=subprocess.DEVNULL)
    flushes, shown = Flushes(path), []
    mtime, since, next_poll = None, None, time.monotonic()
    try:
        while True:
            flushes.sample()
            now = time.time()
            if mode == "file":
                stamp = page.stat().st_mtime if page.exists() else None
                if stamp != mtime:
                    mtime, step = stamp, page_step(page)
                    if step is not None:
                        shown.append((now, step))
            elif time.monotonic() >= next_poll:
                next_poll += 1.0
                step = served_step(url, None if since is None else since - 1)  # as the page asks
                if step is not None:
                    shown.append((time.time(), step))
                    since = step
            done = writer.poll() is not None
            if done and flushes.seen and shown and shown[-1][1] >= flushes.seen[-1][0]:
                break
            if done and time.time() - flushes.seen[-1][1] > 120:
                break
            time.sleep(0.05)
    finally:
        watcher.terminate()
        watcher.wait(timeout=60)
        if writer.poll() is None:
            writer.kill()
    return flushes.seen, shown


def lags(flushes: list[tuple[int, float]], shown: list[tuple[float, int]]) -> np.ndarray:
    """Per flush: the first time the watcher showed its step or a later one, minus the flush time (NaN: never)."""
    out = []
    for step, flushed in flushes:
        later = [t for t, s in shown if s >= step and t >= flushed]
        out.append(min(later) - flushed if later else np.nan)
    return np.asarray(out)


def row(name: str, values: np.ndarray) -> str:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return f"| {name} | {len(values)} | — | — | — | {int(np.isnan(values).sum())} |"
    return (f"| {name} | {len(values)} | {np.median(finite):.2f} | {np.percentile(finite, 90):.2f} | "
            f"{finite.max():.2f} | {int(np.isnan(values).sum())} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--sleep", type=float, default=0.002, help="seconds the writer sleeps per step")
    parser.add_argument("--mode", nargs="+", choices=("file", "served"), default=["file", "served"])
    args = parser.parse_args(argv)
    print(f"load average before: {' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as work:
        for mode in args.mode:
            started = time.monotonic()
            flushes, shown = measure(mode, args.steps, args.sleep, Path(work))
            lag = lags(flushes, shown)
            tenth = max(1, len(lag) // 10)
            print(f"\n{mode}: {args.steps} steps × {PARAMS} parameters, {len(flushes)} flushes seen, "
                  f"{len(shown)} updates by the watcher, {time.monotonic() - started:.0f} s wall")
            print("| flushes | n | median lag s | p90 s | max s | never shown |\n|---|---|---|---|---|---|")
            print(row("first tenth", lag[:tenth]))
            print(row("last tenth", lag[-tenth:]))
            print(row("all", lag))
    print(f"\nload average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
