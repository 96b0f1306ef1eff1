"""Whether the run finished: crashed (``failed``), killed (``running`` with a dead writer), interrupted (a killed
run closed by ``gradlens repair``), stale, or still being written. Such a run is never called healthy.

A ``running`` file's writer holds a lock beside it (:mod:`gradlens.lock`): the operating system drops the lock
when its holder dies, however it dies, so "lock file present, nobody holds it" means the writer was killed.
Without a lock file (a copied file, another machine) the last flush's age decides: no flush for
``STALE_SECONDS`` means the writer probably stopped.
"""

from __future__ import annotations

import time

from gradlens.doctor.evidence import Evidence
from gradlens.doctor.finding import Finding, Fix
from gradlens.doctor.rule import Rule, Unchecked

STALE_SECONDS = 300.0  # a running file not flushed for this long (and no lock to ask): the writer probably died


class RunStatus(Rule):
    id = "status"
    reads = "/run/status, /run/last_flush and the run's lock file"
    severity = "severe: crashed, killed or interrupted; warning: stale; info: still running"
    thresholds = {"STALE_SECONDS": "the recorder flushes every few seconds while records arrive: five minutes "
                                   "without one is no slow epoch"}
    live = False

    def check(self, ev: Evidence) -> list[Finding] | Unchecked:
        last = ev.last_step()
        ended = f"; records end at step {last}" if last is not None else ""
        repair = Fix(f"`gradlens repair {ev.path}` closes the file with its committed records; resume or rerun the "
                     "training", "its writer is gone", {"kind": "repair"})
        if ev.status == "failed":
            return [Finding(self.id, "severe", "the run crashed: training raised an exception (status failed)",
                            f"/run/status = failed{ended}", "status 'failed' is written when training raised",
                            step=last, fixes=(Fix("read the exception of the training process; fix and rerun",
                                                  "the run did not finish", {"kind": "rerun"}),))]
        if ev.status == "interrupted":
            return [Finding(self.id, "severe", "the run was interrupted: its writer was killed and the file repaired",
                            f"/run/status = interrupted{ended}",
                            "status 'interrupted' is what `gradlens repair` writes for a killed run", step=last,
                            fixes=(Fix("resume from the last checkpoint or rerun", "the run did not finish",
                                       {"kind": "rerun"}),))]
        if ev.status != "running":
            return []
        writer = ev.writer
        if writer is not None and writer.alive:
            return [Finding(self.id, "info", "the run is still being written",
                            f"/run/status = running, writer alive (process {writer.holder.get('pid')} on host "
                            f"{writer.holder.get('host')!r}){ended}" if writer.holder else "/run/status = running",
                            "findings cover the records committed so far")]
        if writer is not None and writer.alive is False:
            who = f"process {writer.holder.get('pid')} on host {writer.holder.get('host')!r}"
            return [Finding(self.id, "severe", f"the run was killed: status running, but its writer ({who}) is gone",
                            f"/run/status = running; nobody holds the lock {ev.path}.lock{ended}",
                            "a lock file nobody holds: the operating system dropped it when the writer died",
                            step=last, fixes=(repair,))]
        age = None if ev.last_flush is None else (ev.now or time.time()) - ev.last_flush
        if age is not None and age > STALE_SECONDS:
            flushed = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ev.last_flush))
            return [Finding(self.id, "warning", f"the run is not finished and stopped flushing {age:.0f} s ago",
                            f"/run/status = running, last flush {flushed} UTC, no lock file to ask{ended}",
                            f"running and no flush for more than {STALE_SECONDS:g} s: the writer probably died",
                            step=last, fixes=(repair,))]
        return [Finding(self.id, "info", "the run is still being written", "/run/status = running (no lock file "
                        f"to ask; last flush {age:.0f} s ago)" if age is not None else "/run/status = running",
                        "findings cover the records committed so far")]


RULES = (RunStatus(),)
