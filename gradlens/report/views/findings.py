"""The page's text views: the doctor's findings per run, and what a run does not show and why (frozen
parameters, parameters without gradients, the first non-finite value, probes without a stored class)."""

from __future__ import annotations

import html

from gradlens.loader import Run
from gradlens.report.blocks import Stream, block_for, count_in_blocks
from gradlens.report.common import NO_GRADIENT, first_nonfinite, frozen_parameters, probe_class, run_label

Groups = dict[str, list[Run]]


def findings_html(groups: Groups, findings: dict[str, list]) -> str:
    """The "Diagnosis" block: per run a verdict line and every finding with its evidence and rule."""
    parts = []
    for runs in groups.values():
        for run in runs:
            found = findings[run.path]
            verdict = (
                "healthy (no warning or severe finding)"
                if all(f.severity == "info" for f in found)
                else ", ".join(
                    f"{sum(f.severity == s for f in found)} {s}"
                    for s in ("severe", "warning")
                    if any(f.severity == s for f in found)
                )
            )
            items = "".join(
                f"<li><span class='{f.severity}'>{f.severity}</span> {html.escape(f.title)}<br>"
                f"evidence: {html.escape(f.evidence)}<br><span class='rule'>rule: {html.escape(f.threshold)}"
                "</span></li>"
                for f in found
            )
            parts.append(f"<h3>{html.escape(run_label(run))}: {verdict}</h3><ul>{items}</ul>")
    return (
        "<h2>Diagnosis</h2>"
        + "".join(parts)
        + ("<p class='rule'>Rules and thresholds: docs/doctor.md (`gradlens doctor RUN.h5` prints the same).</p>")
    )


def missing_lines(run: Run) -> list[str]:
    """What the run does not show, with the reason: frozen parameters, parameters without gradients, the first
    non-finite value, probes whose class is not stored."""
    lines = []
    frozen = frozen_parameters(run)
    if frozen is None:
        lines.append("frozen parameters: not listed in this file (it has no meta['parameters'])")
    elif frozen:
        names = ", ".join(str(p.get("name")) for p in frozen)
        lines.append(f"frozen parameters (requires_grad False, not trained, not measured): {names}")
    else:
        lines.append("frozen parameters: none")
    for probe in run.probes:
        quantities = run.quantities(probe)
        if "nonfinite" not in quantities or quantities["nonfinite"].axes != ("layer",) or not run.n_records(probe):
            continue
        stream = Stream(run, probe, "nonfinite")
        summary = stream.blocks(block_for(stream.count()))
        counts, exact = count_in_blocks(summary, NO_GRADIENT)
        if not counts.any():
            continue
        layers = run.array(probe, "nonfinite", stop=-1)[3]["layer"]
        total = int(summary.count.sum())
        names = [
            f"{name} ({'' if sure else '≥ '}{int(c)} of {total} records)"
            for name, c, sure in zip(layers, counts.sum(axis=0), exact.all(axis=0), strict=True)
            if c
        ]
        lines.append(
            f"without a gradient in {probe} (.grad was None: unused in the forward or detached; drawn grey, "
            f"statistics not recorded): {', '.join(names)}"
        )
    cell, scalar = first_nonfinite(run)
    if cell is None and scalar is None:
        lines.append("non-finite values: none recorded")
    if cell is not None:
        lines.append(f"first non-finite record: {cell} (drawn red from there on)")
    if scalar is not None:
        lines.append(f"first non-finite scalar: {scalar}")
    unknown = [p for p in run.probes if probe_class(run, p) == "?"]
    if unknown:
        lines.append(f"probes without a stored class (drawn by their quantities' axes): {', '.join(unknown)}")
    return lines


def missing_html(groups: Groups, undrawn: list[str]) -> str:
    """The "Not shown, and why" block: :func:`missing_lines` per run, then the quantities no view covers."""
    parts = []
    for runs in groups.values():
        for run in runs:
            items = "".join(f"<li>{html.escape(line)}</li>" for line in missing_lines(run))
            parts.append(
                f"<h3>{html.escape(run_label(run))} — <code>{html.escape(run.path)}</code></h3><ul>{items}</ul>"
            )
    if undrawn:
        parts.append(
            "<p>Recorded but not drawn (no view for these axes; see `gradlens export`): "
            + html.escape(", ".join(undrawn))
            + "</p>"
        )
    return "<h2>Not shown, and why</h2>" + "".join(parts)
