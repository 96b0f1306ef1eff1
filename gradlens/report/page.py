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
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gradlens.loader import Run  # noqa: E402
from gradlens.report.common import describe, probe_class, run_label  # noqa: E402
from gradlens.report.diagnosis import Diagnosis, diagnose_run  # noqa: E402
from gradlens.report.views import PAGE_WIDTH_PX, PNG_DPI, Section, probe_sections, scalar_sections  # noqa: E402
from gradlens.report.views.findings import findings_html, missing_html  # noqa: E402

STYLE = f"""body{{font-family:sans-serif;max-width:{PAGE_WIDTH_PX}px;margin:2em auto;color:#222}}
img{{max-width:100%}} table{{border-collapse:collapse;margin:0.5em 0}} td,th{{border:1px solid #ccc;padding:3px 8px}}
.severe{{color:#b00;font-weight:bold}} .warning{{color:#a60;font-weight:bold}} .info{{color:#467}}
.caption{{color:#444;font-size:0.92em;max-width:1100px}} li{{margin:0.2em 0}} .rule{{color:#666;font-size:0.9em}}
.banner{{background:#fee;border:1px solid #c99;padding:0.5em 1em}} .healthy{{color:#262;font-weight:bold}}
.verdict{{border:1px solid #bbb;padding:0.2em 1em;margin:0.5em 0}}"""


@dataclass
class Report:
    """Everything a report page shows, before encoding.

    Attributes:
        groups: run label -> runs (several runs with one label are seeds: drawn as mean and band).
        findings: run path -> the doctor's findings (:class:`gradlens.doctor.Finding`).
        sections: the pictures, in page order.
        undrawn: recorded quantities no view covers (named with their axes on the page).
        verdicts: run path -> the doctor's verdict and how it was read (:class:`Diagnosis`), the page's lead.
    """

    groups: dict[str, list[Run]]
    findings: dict[str, list]
    sections: list[Section]
    undrawn: list[str]
    verdicts: dict[str, Diagnosis] = field(default_factory=dict)


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
    groups = group_runs(runs)
    verdicts = {run.path: diagnose_run(run) for run in runs}
    sections, undrawn = probe_sections(groups)
    sections += scalar_sections(groups)
    return Report(groups, {path: found.findings for path, found in verdicts.items()}, sections, undrawn, verdicts)


def png_bytes(fig: plt.Figure) -> bytes:
    """``fig`` as the page embeds it: a PNG at ``PNG_DPI``, cropped to its content; closes the figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PNG_DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _data_uri(fig: plt.Figure) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(fig)).decode("ascii")


def _summary_html(report: Report) -> str:
    rows = []
    for runs in report.groups.values():
        for run in runs:
            last = {}
            for name in run.scalar_names():  # each scalar's last stored block: its last value
                value = float(run.scalar_summary(name, points=1).last[-1])
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
        f"<img alt='{html.escape(section.title)}' src='{_data_uri(section.figure)}'>"
        f"<p class='caption'>{html.escape(section.caption)}</p>"
        for section in report.sections
    )
    head_refresh = f"<meta http-equiv='refresh' content='{refresh:g}'>" if refresh else ""
    made = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    banner_html = f"<p class='banner'>{html.escape(banner)}</p>" if banner else ""
    verdicts = "".join(report.verdicts[run.path].html() for runs in report.groups.values() for run in runs)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8">{head_refresh}<title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>
{verdicts}{banner_html}
<p>Written {made}. Runs:</p><ul>{runs_list}</ul>
{findings_html(report.groups, report.findings)}
{missing_html(report.groups, report.undrawn)}
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
