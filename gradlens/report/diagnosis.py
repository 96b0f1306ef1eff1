"""The doctor's verdict that every report, compare and ``watch`` page shows first (issue 21.8), read at a cost
that does not grow with the run.

:func:`diagnose_run` is :func:`gradlens.doctor.diagnose` on the run, read as ``gradlens doctor`` reads it (one
route, one answer): a probe of more than ``FULL_RECORDS`` records as its stored summary blocks, with the first
blocks holding a non-finite value read again record by record, and long scalars thinned
(:mod:`gradlens.doctor.evidence`). The findings the live doctor wrote into the file while training (events of
kind ``finding``) are part of the verdict (``diagnose`` adds them back). The verdict names the block it read.

For the page (and the live page of ``gradlens watch --port``): :func:`verdict_html` is the block a page opens
with, :func:`verdict_dict` the same as plain data; both say at which step and of what kind of run the verdict
is ("doctor verdict at step 12 345, run still being written").
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from gradlens.doctor import Finding, Verdict, diagnose_evidence, from_run, verdict
from gradlens.loader import Run
from gradlens.report.common import last_step, run_label

# How the verdict's heading names the run's state (/run/status).
STATUS_WORDS = {
    "running": ", run still being written",
    "finished": " of a finished run",
    "failed": " of a run that crashed (training raised; status failed)",
    "stopped": " of a run stopped before its end (stop_on or the user; status stopped)",
    "interrupted": " of an interrupted run (its writer was killed; the file was repaired)",
}


@dataclass(frozen=True)
class Diagnosis:
    """The doctor's findings on one run and how they were read.

    Attributes:
        path: the run file.
        label: the run's label (config ``label`` or file name).
        findings: most severe first (:func:`gradlens.doctor.diagnose`).
        verdict: the one line (:func:`gradlens.doctor.verdict`).
        status: the run's status when read (``running``, ``finished``, ...).
        step: the last recorded step when read (None: nothing recorded yet).
        block: 1 when the doctor read every record, else the records per block it read.
        records: the most records of any probe or logged scalar when read.
    """

    path: str
    label: str
    findings: list[Finding]
    verdict: Verdict
    status: str
    step: int | None
    block: int
    records: int

    def heading(self) -> str:
        """What the verdict is, in words: "doctor verdict at step 12 345, run still being written" or "doctor
        verdict at step 40 of a finished run" (and, for a long run, that it was read from its summary)."""
        where = "before the first recorded step" if self.step is None else f"at step {group_digits(self.step)}"
        text = f"doctor verdict {where}{STATUS_WORDS.get(self.status, f' of a run with status {self.status!r}')}"
        if self.block > 1:
            text += f", from its summary (blocks of {self.block} records, each at its first step)"
        return text

    def as_dict(self) -> dict:
        """The verdict block as plain JSON-ready data (the live page's, ``gradlens watch --port``).

        Keys: ``path``, ``label``, ``status``, ``step``, ``heading`` (:meth:`heading`), ``level`` (``severe``,
        ``warning``, ``running``, ``healthy``), ``text`` (the verdict line), ``exit_status``, ``read``
        (``{"block": records per block read, "records": the most records of a probe or scalar}``), ``findings``
        (every warning and severe finding, most severe first: ``rule``, ``severity``, ``summary``, ``step``,
        ``layers``, ``fix`` — the first fix's action, or None) and ``not_checked`` (``what``, ``how``).
        """
        return {
            "path": self.path,
            "label": self.label,
            "status": self.status,
            "step": self.step,
            "heading": self.heading(),
            "level": self.verdict.level,
            "text": self.verdict.text,
            "exit_status": self.verdict.exit_status,
            "read": {"block": self.block, "records": self.records},
            "findings": [
                {
                    "rule": f.rule,
                    "severity": f.severity,
                    "summary": f.title,
                    "step": f.step,
                    "layers": list(f.layers),
                    "fix": f.fixes[0].action if f.fixes else None,
                }
                for f in self.findings
                if f.severity != "info"
            ],
            "not_checked": [{"what": f.title, "how": f.evidence} for f in self.findings if f.rule == "not_checked"],
        }

    def html(self) -> str:
        """The verdict block as HTML: the heading, the verdict line in its level's colour (it names what was
        not checked), each warning and severe finding's one line (where, first fix)."""
        data = self.as_dict()
        items = []
        for f in data["findings"]:
            where = [f"from step {group_digits(f['step'])}"] if f["step"] is not None else []
            if f["layers"]:
                more = f" and {len(f['layers']) - 4} more" if len(f["layers"]) > 4 else ""
                where.append(f"in {', '.join(f['layers'][:4])}{more}")
            fix = f"<br>fix: {html.escape(f['fix'])}" if f["fix"] else ""
            items.append(
                f"<li><span class='{f['severity']}'>{f['severity']}</span> {html.escape(f['summary'])}"
                f"{html.escape(' (' + ' '.join(where) + ')') if where else ''}{fix}</li>"
            )
        level = {"running": "info", "healthy": "healthy"}.get(data["level"], data["level"])
        return (
            f"<div class='verdict'><p><b>{html.escape(data['label'])}: {html.escape(data['heading'])}</b></p>"
            f"<p class='{level}'>{html.escape(data['text'])}</p>"
            + (f"<ul>{''.join(items)}</ul>" if items else "")
            + "</div>"
        )


def group_digits(number: int) -> str:
    """12345 -> "12 345" (a space between groups of three digits)."""
    return f"{int(number):,}".replace(",", " ")


def diagnose_run(run: Run, now: float | None = None) -> Diagnosis:
    """The doctor on ``run`` as ``gradlens doctor`` reads it (module docstring).

    Args:
        run: the run (a file still being written is read as far as it is committed).
        now: unix time the staleness of a running file is judged at (default: now).
    """
    status = run.status
    counts = [run.n_records(probe) for probe in run.probes]
    counts += [run.n_scalar_records(name) for name in run.scalar_names()]
    evidence = from_run(run, now=now)
    findings = diagnose_evidence(evidence)
    step, records = last_step(run), max(counts, default=0)
    return Diagnosis(run.path, run_label(run), findings, verdict(findings), status, step, evidence.block, records)


def verdict_dict(run: Run, now: float | None = None) -> dict:
    """The doctor's verdict on ``run`` as plain data (:meth:`Diagnosis.as_dict`), for the live page."""
    return diagnose_run(run, now=now).as_dict()


def verdict_html(run: Run, now: float | None = None) -> str:
    """The doctor's verdict on ``run`` as the HTML block every report page opens with (:meth:`Diagnosis.html`)."""
    return diagnose_run(run, now=now).html()
