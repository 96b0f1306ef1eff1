"""``gradlens watch``: keep a run's HTML report current while training writes the file.

The training process writes its run in SWMR mode; ``watch`` opens it read-only every ``every`` seconds and
rewrites the report (atomically, with a browser refresh tag) only when a new flush was committed, so the
page is at most ``every`` seconds plus one flush interval behind. It says when the run stopped flushing
(``running`` but no flush for ``stale`` seconds: the writer is stuck or was killed), and stops when the run
is ``finished`` or ``failed`` (after a final report) or after ``timeout`` seconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from gradlens.loader import load
from gradlens.report.common import last_step
from gradlens.report.page import write_report

DEFAULT_EVERY = 5.0
DEFAULT_STALE = 120.0


def _clock(stamp: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(stamp))


def watch(
    path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    every: float = DEFAULT_EVERY,
    timeout: float | None = None,
    stale: float = DEFAULT_STALE,
    say: Callable[[str], None] = print,
) -> int:
    """Refresh the report of the run at ``path`` until it ends; returns 0 (finished), 1 (failed, stale at
    the timeout, or timed out before the file appeared).

    Args:
        path: the run file being written (it may not exist yet: the recorder creates it at the first step).
        out: the HTML report (default: ``RUN.html``).
        every: seconds between looks at the file (the report is rewritten at most this often).
        timeout: stop after this many seconds (None: wait for the run to end).
        stale: a running file without a flush for this many seconds is reported as stopped.
        say: where progress lines go.

    Raises:
        ValueError: ``every`` or ``stale`` not positive, or the file is not a gradlens run.
    """
    if not every > 0:
        raise ValueError(f"watch --every must be > 0 seconds, got {every}")
    if not stale > 0:
        raise ValueError(f"watch --stale must be > 0 seconds, got {stale}")
    path = os.fspath(path)
    out = os.fspath(out) if out is not None else os.path.splitext(path)[0] + ".html"
    started = time.monotonic()
    seen_flush: float | None = None
    announced_wait = announced_stale = False
    while True:
        if not os.path.exists(path):
            if not announced_wait:
                say(f"waiting for {path} (the recorder creates it at the first optimizer step)")
                announced_wait = True
        else:
            try:
                run = load(path)
                status, flushed = run.status, run.last_flush
            except (ValueError, OSError, KeyError):
                run = None  # caught between the file's creation and its switch to SWMR: look again
            if run is not None:
                if status in ("finished", "failed"):
                    write_report([run], out, banner=f"run {status}; final report")
                    say(f"run {status} at step {last_step(run)}; final report: {os.path.abspath(out)}")
                    return 0 if status == "finished" else 1
                age = None if flushed is None else time.time() - flushed
                if flushed != seen_flush:
                    seen_flush = flushed
                    announced_stale = False
                    banner = (
                        f"live: run {status}, last flush {_clock(flushed) if flushed else 'not yet'}; "
                        f"this page reloads every {every:g} s"
                    )
                    write_report([run], out, refresh=every, banner=banner)
                    step = last_step(run)
                    where = "no step recorded yet" if step is None else f"step {step}"
                    say(f"refreshed: {where}, last flush {_clock(flushed) if flushed else 'none'}")
                elif age is not None and age > stale and not announced_stale:
                    message = (
                        f"the run stopped flushing: status still running, last flush {age:.0f} s ago at "
                        f"{_clock(flushed)} (writer stuck or killed?)"
                    )
                    write_report([run], out, refresh=every, banner=message)
                    say(message)
                    announced_stale = True
        if timeout is not None and time.monotonic() - started >= timeout:
            say(f"stopped watching after {timeout:g} s (--timeout); report: {os.path.abspath(out)}")
            return 1 if announced_stale or not os.path.exists(path) else 0
        time.sleep(every)
