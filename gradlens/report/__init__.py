"""Self-contained HTML reports of one or several recorded runs (``gradlens report`` / ``compare``).

``write_report([run], out)`` is the report of one run; with several runs the same pages overlay them, runs
sharing a label (seeds) drawn as mean and band. The page opens with the doctor's findings
(:mod:`gradlens.doctor`), lists what is not shown and why, then draws every probe of the file with a view
chosen by its class and the axes of its quantities (:mod:`gradlens.report.views`) and every logged scalar.
"""

from gradlens.report.common import chosen_steps, describe, run_label, short_names
from gradlens.report.page import Report, build, group_runs, render, write_report
from gradlens.report.views import Section
from gradlens.report.views.findings import missing_lines

__all__ = [
    "Report",
    "Section",
    "build",
    "chosen_steps",
    "describe",
    "group_runs",
    "missing_lines",
    "render",
    "run_label",
    "short_names",
    "write_report",
]
