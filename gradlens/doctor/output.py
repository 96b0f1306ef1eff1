"""What ``gradlens doctor`` prints: per run the verdict and each finding (text), or one JSON document
(``--json``; its layout is versioned by ``JSON_SCHEMA`` and documented in docs/doctor.md)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from gradlens.doctor.engine import diagnose
from gradlens.doctor.evidence import run_label
from gradlens.doctor.finding import Finding, verdict

JSON_SCHEMA = "gradlens.doctor/1"  # bump the number on any change a reader could notice


def format_findings(run, findings: Sequence[Finding]) -> str:
    """The text ``gradlens doctor`` prints for one run: ``path (label): verdict``, then every finding."""
    lines = [f"{run.path} ({run_label(run)}): {verdict(findings).text}"]
    for finding in findings:
        lines += finding.lines()
    return "\n".join(lines)


def run_json(run, findings: Sequence[Finding]) -> dict:
    """One run's JSON object: path, label, status, verdict, findings (rules not checked among them)."""
    said = verdict(findings)
    return {
        "path": str(run.path),
        "label": run_label(run),
        "status": run.status,
        "verdict": {"level": said.level, "text": said.text, "exit_status": said.exit_status},
        "findings": [f.as_dict() for f in findings if f.rule != "not_checked"],
        "not_checked": [{"what": f.title, "how": f.evidence} for f in findings if f.rule == "not_checked"],
    }


def doctor(
    paths: Sequence[str],
    *,
    as_json: bool = False,
    loss: str | None = None,
    num_classes: int | None = None,
) -> tuple[str, int]:
    """Diagnose every run; returns the text (or JSON) and the exit status (1 when any finding is severe, else 0).

    Raises:
        FileNotFoundError, ValueError: a path is not a readable gradlens run, or ``loss`` was not logged (the CLI
            exits 2).
    """
    from gradlens.loader import load

    runs = [load(path) for path in paths]
    results = [(run, diagnose(run, loss=loss, num_classes=num_classes)) for run in runs]
    status = max((verdict(findings).exit_status for _, findings in results), default=0)
    if as_json:
        document = {"schema": JSON_SCHEMA, "exit_status": status, "runs": [run_json(r, f) for r, f in results]}
        return json.dumps(document, indent=2, ensure_ascii=False), status
    return "\n\n".join(format_findings(run, findings) for run, findings in results), status
