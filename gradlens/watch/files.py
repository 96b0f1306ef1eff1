"""``gradlens watch RUN.h5`` (file mode): keep one HTML file current while training writes the run.

Every ``every`` seconds the watcher reads the run's status and last flush (two attribute reads through the
loader's SWMR path). When a new flush was committed, or the background doctor finished a newer diagnosis, it
rewrites the file atomically with the page of :mod:`gradlens.watch.page` and the run's data inline: the
summaries of :mod:`gradlens.watch.data` (a bounded number of blocks whatever the run's length) and the verdict
of :mod:`gradlens.watch.verdict`; the browser reloads it every ``every`` seconds. The looks are ``every``
seconds apart whatever a rewrite took, so the file lags a flush by at most ``every`` plus one such rewrite
(``benchmarks/watch_latency.py`` measures it). The doctor runs in a
thread of its own: a long diagnosis delays the verdict, never the curves, and the page names the step its
verdict is from.

It says when the run stopped flushing (``running`` but no flush for ``stale`` seconds: the writer is stuck or
was killed), and stops with the full report (:func:`gradlens.report.write_report`) when the run is
``finished`` or ``failed`` (the page with the last records is written first: the full report of a long run
takes seconds), or after ``timeout`` seconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from gradlens.loader import Run, load
from gradlens.report.common import run_label
from gradlens.watch.page import page_html
from gradlens.watch.verdict import DoctorThread, answer

DEFAULT_EVERY = 1.0
DEFAULT_STALE = 120.0
ENDED = ("finished", "failed", "stopped", "interrupted")  # statuses of a closed file


def print_line(line: str) -> None:
    """Print ``line`` at once (stdout may be a pipe read line by line)."""
    print(line, flush=True)


def _clock(stamp: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(stamp))


def check_watch_args(every: float, stale: float) -> None:
    """Raise a one-line ValueError naming a non-positive ``every`` or ``stale``."""
    if not every > 0:
        raise ValueError(f"watch --every must be > 0 seconds, got {every}")
    if not stale > 0:
        raise ValueError(f"watch --stale must be > 0 seconds, got {stale}")


def open_run(path: str) -> Run | None:
    """The run at ``path``, or None while it does not exist or is being created (caught between the file's
    creation and its switch to SWMR: look again)."""
    if not os.path.exists(path):
        return None
    try:
        return load(path)
    except (ValueError, OSError, KeyError):
        return None


def write_atomically(out: str, text: str) -> None:
    """Write ``text`` to ``out`` through a temporary file and a rename: a browser never reads half a page."""
    temporary = f"{out}.tmp{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, out)


def watch(
    path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    every: float = DEFAULT_EVERY,
    timeout: float | None = None,
    stale: float = DEFAULT_STALE,
    say: Callable[[str], None] = print_line,
) -> int:
    """Keep the watch page of the run at ``path`` current until it ends; returns 0 (finished), 1 (failed,
    stale at the timeout, or timed out before the file appeared).

    Args:
        path: the run file being written (it may not exist yet: the recorder creates it at the first step).
        out: the HTML file (default: ``RUN.html``).
        every: seconds between looks at the file (and between the browser's reloads).
        timeout: stop after this many seconds (None: wait for the run to end).
        stale: a running file without a flush for this many seconds is reported as stopped.
        say: where progress lines go.

    Raises:
        ValueError: ``every`` or ``stale`` not positive, or the file is not a gradlens run.
    """
    check_watch_args(every, stale)
    path = os.fspath(path)
    out = os.fspath(out) if out is not None else os.path.splitext(path)[0] + ".html"
    started = time.monotonic()
    doctor = DoctorThread(path)
    shown_flush: float | None = None  # the last flush and diagnosis the page on disk shows
    shown_diagnosis: dict | None = None
    announced_wait = announced_stale = False
    tick = time.monotonic()
    try:
        while True:
            run = open_run(path)
            if run is None and not announced_wait and not os.path.exists(path):
                say(f"waiting for {path} (the recorder creates it at the first optimizer step)")
                announced_wait = True
            if run is not None:
                status, flushed = run.status, run.last_flush
                if status in ENDED:
                    from gradlens.report import write_report

                    data = answer(run, None, doctor.latest(), stale)  # the last records at once, then the report
                    write_atomically(out, page_html(run_label(run), every, data))
                    write_report([run], out, banner=f"run {status}; final report")
                    step = data["step"]
                    say(f"run {status} at step {step}; final report: {os.path.abspath(out)}")
                    return 0 if status == "finished" else 1
                if flushed != shown_flush:
                    doctor.poke()
                diagnosis = doctor.latest()
                age = None if flushed is None else time.time() - flushed
                stalled = age is not None and age > stale and not announced_stale
                if flushed != shown_flush or diagnosis is not shown_diagnosis or stalled:
                    data = answer(run, None, diagnosis, stale)  # reads the file again: maybe a newer flush
                    write_atomically(out, page_html(run_label(run), every, data))
                    fresh = data["last_flush"]
                    if fresh != shown_flush or diagnosis is not shown_diagnosis:
                        where = "no step recorded yet" if data["step"] is None else f"step {data['step']}"
                        say(f"refreshed: {where}, last flush {_clock(fresh) if fresh else 'none'}")
                        announced_stale = announced_stale and fresh == shown_flush
                    shown_flush, shown_diagnosis = fresh, diagnosis
                    age = None if fresh is None else time.time() - fresh
                    if age is not None and age > stale and not announced_stale:  # the page just written says so
                        say(f"the run stopped flushing: status still running, last flush {age:.0f} s ago at "
                            f"{_clock(fresh)} (writer stuck or killed?)")
                        announced_stale = True
            if timeout is not None and time.monotonic() - started >= timeout:
                say(f"stopped watching after {timeout:g} s (--timeout); page: {os.path.abspath(out)}")
                return 1 if announced_stale or not os.path.exists(path) else 0
            tick = max(tick + every, time.monotonic())  # looks every ``every`` s, the rewrite's time included
            time.sleep(max(0.0, tick - time.monotonic()))
    finally:
        doctor.stop()

