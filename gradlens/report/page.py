"""Page assembly: the doctor's findings, what is missing, a summary, then every view; one HTML file.

Every picture is a PNG embedded as base64, so the file travels alone.
"""

from __future__ import annotations

import base64
import html
import io
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gradlens.loader import Run  # noqa: E402
from gradlens.report.common import (  # noqa: E402
    describe,
    first_nonfinite,
    frozen_parameters,
    layer_array,
    probe_class,
    run_label,
)
from gradlens.report.views import Section, probe_sections, scalar_sections  # noqa: E402

STYLE = """body{font-family:sans-serif;max-width:1280px;margin:2em auto;color:#222}
img{max-width:100%} table{border-collapse:collapse;margin:0.5em 0} td,th{border:1px solid #ccc;padding:3px 8px}
.severe{color:#b00;font-weight:bold} .warning{color:#a60;font-weight:bold} .info{color:#467}
.caption{color:#444;font-size:0.92em;max-width:1100px} li{margin:0.2em 0} .rule{color:#666;font-size:0.9em}
.banner{background:#fee;border:1px solid #c99;padding:0.5em 1em}"""


@dataclass
class Report:
    """Everything a report page shows, before encoding.

    Attributes:
        groups: run label -> runs (several runs with one label are seeds: drawn as mean and band).
        findings: run path -> the doctor's findings (:class:`gradlens.doctor.Finding`).
        sections: the pictures, in page order.
        undrawn: recorded quantities no view covers (named with their axes on the page).
    """

    groups: dict[str, list[Run]]
    findings: dict[str, list]
    sections: list[Section]
    undrawn: list[str]


def group_runs(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs grouped by label (config ``label`` or file name), in first-appearance order."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run_label(run), []).append(run)
    return groups


def build(runs: Sequence[Run]) -> Report:
    """Diagnose the runs and draw every view (figures stay open until :func:`render`)."""
    runs = list(runs)
    if not runs:
        raise ValueError("write_report needs at least one run")
    from gradlens.doctor import diagnose  # the doctor reads runs through report.common: import it late

    groups = group_runs(runs)
    sections, undrawn = probe_sections(groups)
    sections += scalar_sections(groups)
    return Report(groups, {run.path: diagnose(run) for run in runs}, sections, undrawn)


def _png(fig: plt.Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _findings_html(report: Report) -> str:
    parts = []
    for runs in report.groups.values():
        for run in runs:
            findings = report.findings[run.path]
            verdict = (
                "healthy (no warning or severe finding)"
                if all(f.severity == "info" for f in findings)
                else ", ".join(
                    f"{sum(f.severity == s for f in findings)} {s}"
                    for s in ("severe", "warning")
                    if any(f.severity == s for f in findings)
                )
            )
            items = "".join(
                f"<li><span class='{f.severity}'>{f.severity}</span> {html.escape(f.title)}<br>"
                f"evidence: {html.escape(f.evidence)}<br><span class='rule'>rule: {html.escape(f.threshold)}"
                "</span></li>"
                for f in findings
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
        if "nonfinite" not in quantities or quantities["nonfinite"].axes != ("layer",):
            continue
        array = layer_array(run, probe, "nonfinite")
        if not array.no_grad.any():
            continue
        counts = array.no_grad.sum(axis=0)
        names = [
            f"{name} ({int(c)} of {len(array.steps)} records)"
            for name, c in zip(array.layers, counts, strict=True)
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


def _missing_html(report: Report) -> str:
    parts = []
    for runs in report.groups.values():
        for run in runs:
            items = "".join(f"<li>{html.escape(line)}</li>" for line in missing_lines(run))
            parts.append(
                f"<h3>{html.escape(run_label(run))} — <code>{html.escape(run.path)}</code></h3><ul>{items}</ul>"
            )
    if report.undrawn:
        parts.append(
            "<p>Recorded but not drawn (no view for these axes; see `gradlens export`): "
            + html.escape(", ".join(report.undrawn))
            + "</p>"
        )
    return "<h2>Not shown, and why</h2>" + "".join(parts)


def _summary_html(report: Report) -> str:
    rows = []
    for runs in report.groups.values():
        for run in runs:
            scalars = run.scalars()
            last = {}
            for name in dict.fromkeys(scalars["name"]):
                value = scalars[scalars["name"] == name]["value"].iloc[-1]
                last[name] = f"{value:.4g}" if np.isfinite(value) else f"{value} (non-finite)"
            shown = ", ".join(f"{k} {v}" for k, v in list(last.items())[:8]) or "—"
            probes = ", ".join(f"{p} ({probe_class(run, p)})" for p in run.probes) or "none"
            rows.append(
                f"<tr><td>{html.escape(run_label(run))}</td><td>{html.escape(run.status)}</td>"
                f"<td>{len(run.layers)}</td><td>{html.escape(probes)}</td><td>{html.escape(shown)}</td></tr>"
            )
    header = "<tr><th>run</th><th>status</th><th>layers</th><th>probes (class)</th><th>last logged values</th></tr>"
    return f"<h2>Summary</h2><table>{header}{''.join(rows)}</table>"


def render(report: Report, title: str, refresh: float | None = None, banner: str | None = None) -> str:
    """The HTML page of ``report`` (closes its figures)."""
    runs_list = "".join(
        f"<li>{html.escape(describe(run))} — <code>{html.escape(run.path)}</code></li>"
        for runs in report.groups.values()
        for run in runs
    )
    body = "".join(
        f"<h2>{html.escape(section.title)}</h2>"
        f"<img alt='{html.escape(section.title)}' src='data:image/png;base64,{_png(section.figure)}'>"
        f"<p class='caption'>{html.escape(section.caption)}</p>"
        for section in report.sections
    )
    head_refresh = f"<meta http-equiv='refresh' content='{refresh:g}'>" if refresh else ""
    made = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    banner_html = f"<p class='banner'>{html.escape(banner)}</p>" if banner else ""
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8">{head_refresh}<title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{banner_html}
<p>Written {made}. Runs:</p><ul>{runs_list}</ul>
{_findings_html(report)}
{_missing_html(report)}
{_summary_html(report)}
{body or "<p>No probe records and no logged scalars in these runs.</p>"}
</body></html>
"""


def write_report(
    runs: Sequence[Run],
    out: str | os.PathLike,
    title: str | None = None,
    refresh: float | None = None,
    banner: str | None = None,
) -> str:
    """Write the HTML report of ``runs`` to ``out`` (atomically: readers never see half a page); returns its
    path.

    Args:
        runs: one run (``gradlens report``) or several (``gradlens compare``; runs sharing a label are seeds).
        out: the HTML file.
        title: page title (default "gradlens report" / "gradlens comparison").
        refresh: seconds after which a browser reloads the page (``gradlens watch``).
        banner: a line shown under the title (``gradlens watch``: live state of the run).
    """
    runs = list(runs)
    report = build(runs)
    title = title or ("gradlens report" if len(runs) == 1 else "gradlens comparison")
    page = render(report, title, refresh=refresh, banner=banner)
    out = os.fspath(out)
    partial = f"{out}.partial"
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(page)
    os.replace(partial, out)
    return out
