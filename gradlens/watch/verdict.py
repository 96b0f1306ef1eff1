"""The verdict a watch page leads with (issue 21.8): what the live doctor wrote into the file while training,
plus the post-hoc doctor on everything recorded so far, with the step it speaks of and the run's state.

- :func:`live_findings`: the run's events of kind ``finding`` (the live engine of ``attach(live=N)`` writes
  each new finding at once); one event read, so every refresh shows them.
- :func:`doctor_json`: :func:`gradlens.doctor.diagnose` on the whole run, as ``gradlens doctor --json`` gives
  one run (the one call site to replace by the report's own verdict block once it reads summaries).
- :class:`DoctorThread`: runs :func:`doctor_json` in the background whenever new records were committed, so a
  slow diagnosis of a long run never delays the curves; the page says which step its verdict is from.
- :func:`headline`: the one line on top, worst first: severe > warning > running > healthy, from both sources.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from gradlens.doctor import SEVERITIES, finding_from_event
from gradlens.doctor.finding import EVENT_KIND
from gradlens.doctor.output import run_json
from gradlens.loader import Run, load
from gradlens.report.common import last_step
from gradlens.report.diagnosis import diagnose_run

LEVELS = ("severe", "warning", "running", "unknown", "healthy")  # worst first ("unknown": no diagnosis yet)


def live_findings(run: Run) -> list[dict]:
    """The findings the live doctor wrote into the file (events of kind ``finding``), in the order written:
    ``rule``, ``severity``, ``step`` (onset), ``found_at`` (the step the check ran after), ``layers``, ``title``."""
    events = run.events()
    out = []
    for row in events[events["kind"] == EVENT_KIND].itertuples(index=False):
        finding = finding_from_event(row.source, row.message, int(row.step))
        if finding is not None:
            out.append({"rule": finding.rule, "severity": finding.severity, "step": finding.step,
                        "found_at": int(row.step), "layers": list(finding.layers), "title": finding.title})
    return out


def doctor_json(run: Run) -> dict:
    """The post-hoc doctor on ``run`` as JSON: ``gradlens doctor --json``'s object for one run (``verdict``,
    ``findings``, ``not_checked``, ...) plus ``step``, the last recorded step it diagnosed. Read as the report
    reads it (:func:`gradlens.report.diagnosis.diagnose_run`: a long run from its summary blocks)."""
    result = run_json(run, diagnose_run(run).findings)
    result["step"] = last_step(run)
    return clean(result)


class DoctorThread:
    """Keeps :func:`doctor_json` of the run at ``path`` current in a background thread.

    :meth:`poke` says new records were committed; the thread diagnoses again, resting between two diagnoses
    ``pause`` seconds or twice the last one's time, whichever is longer (so it takes at most a third of a CPU
    from the watcher), and :meth:`latest` returns the last result with ``seconds`` (how long it took) and ``at`` (unix
    time it finished), or None before the first. A diagnosis that raises is kept as ``{"error": "..."}``:
    the page says it, the watcher goes on.
    """

    def __init__(self, path: str, pause: float = 1.0) -> None:
        self.path = path
        self.pause = pause
        self._wanted = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._latest: dict | None = None
        self._thread = threading.Thread(target=self._loop, name="gradlens-watch-doctor", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """New records were committed: diagnose again when the current diagnosis is done."""
        self._wanted.set()

    def latest(self) -> dict | None:
        """The last diagnosis (see the class docstring), or None before the first finished."""
        with self._lock:
            return self._latest

    def wait(self, timeout: float) -> dict | None:
        """Wait until a diagnosis newer than the current one finished (or ``timeout`` seconds); return it."""
        before = self.latest()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.latest() is before:
            time.sleep(0.05)
        return self.latest()

    def stop(self) -> None:
        """End the thread after the diagnosis under way, if any (its cost is bounded at any run length): a thread
        still inside HDF5 while the interpreter exits can crash it."""
        self._stop.set()
        self._wanted.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wanted.wait()
            if self._stop.is_set():
                return
            self._wanted.clear()
            started = time.monotonic()
            try:
                result = doctor_json(load(self.path))
            except Exception as error:  # the page shows it; watching goes on
                result = {"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
            result["seconds"] = round(time.monotonic() - started, 3)
            result["at"] = time.time()
            with self._lock:
                self._latest = result
            self._stop.wait(max(self.pause, 2 * result["seconds"]))


def _clock(stamp: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(stamp))


def headline(state: dict, doctor: dict | None, live: list[dict], stale: float) -> dict:
    """The line a page leads with: ``level`` (one of ``LEVELS``) and ``text``.

    ``state`` is a :func:`gradlens.watch.data.snapshot` (status, step, last flush, now); ``doctor`` the last
    :func:`doctor_json` (or None before the first); ``live`` the :func:`live_findings`. The text says the step
    the verdict speaks of and whether the run is still being written (or stopped flushing ``stale`` seconds ago).
    """
    status, step, flushed, now = state["status"], state["step"], state["last_flush"], state["now"]
    where = "no step recorded yet" if step is None else f"step {step}"
    if status == "running":
        age = None if flushed is None else now - flushed
        if age is not None and age > stale:
            state_text = (f"run not finished but stopped flushing: last flush {age:.0f} s ago at {_clock(flushed)} "
                          "(writer stuck or killed?)")
        else:
            state_text = "run still being written" + (f", last flush {_clock(flushed)}" if flushed else "")
    else:
        state_text = f"run {status}"
    level, said = "running" if status == "running" else "unknown", []
    if doctor is not None and "error" in doctor:
        said.append(f"the doctor failed ({doctor['error']})")
    elif doctor is not None:
        level = doctor["verdict"]["level"]
        behind = "" if doctor.get("step") == step else f" (diagnosed at step {doctor.get('step')})"
        said.append(f"{doctor['verdict']['text']}{behind}")
    else:
        said.append("the doctor is still reading the run")
    new = [f for f in live if doctor is None or "findings" not in doctor or not any(
        d["rule"] == f["rule"] for d in doctor["findings"])]
    worst = min((f["severity"] for f in new if f["severity"] != "info"), key=SEVERITIES.index, default=None)
    if worst is not None and LEVELS.index(worst) < LEVELS.index(level):
        level = worst
    if new:
        first = min(new, key=lambda f: (SEVERITIES.index(f["severity"]), f["step"] if f["step"] is not None else 0))
        said.insert(0, f"live doctor: {first['severity'].upper()}: {first['title']} (from step {first['step']}"
                       + (f", {first['layers'][0]}" if first["layers"] else "") + ")"
                       + (f" and {len(new) - 1} more" if len(new) > 1 else ""))
    if status == "running" and level in ("unknown", "healthy"):
        level = "running"
    return {"level": level, "text": f"At {where}, {state_text}: " + "; ".join(said)}


def answer(run: Run, since: int | None, doctor: dict | None, stale: float) -> dict:
    """What a page gets: :func:`gradlens.watch.data.snapshot` after ``since``, plus ``live`` (the live doctor's
    findings), ``doctor`` (the last :func:`doctor_json`, or None) and the ``headline`` built from both."""
    from gradlens.watch.data import snapshot

    state = snapshot(run, since)
    live = live_findings(run)
    state.update(live=live, doctor=doctor, headline=headline(state, doctor, live, stale))
    return state


def clean(value: object) -> object:
    """``value`` (dicts, lists, numbers, numpy numbers) made valid JSON: non-finite numbers as ``"NaN"``,
    ``"Infinity"`` or ``"-Infinity"`` (what the page's ``Number()`` reads back), numpy numbers as Python's."""
    if isinstance(value, dict):
        return {str(key): clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [clean(item) for item in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        if number != number:
            return "NaN"
        if number in (float("inf"), float("-inf")):
            return "Infinity" if number > 0 else "-Infinity"
        return number
    return value
