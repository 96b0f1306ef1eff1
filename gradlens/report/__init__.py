"""Self-contained HTML reports of one or several recorded runs (``gradlens report`` / ``compare``).

``write_report([run], out)`` is the report of one run; with several runs the same pages overlay them, runs
sharing a label (seeds) drawn as mean and band. The page opens with the doctor's verdict on each run
(:mod:`gradlens.report.diagnosis`: ``verdict_html``/``verdict_dict``, also for the live page), then its
findings in detail, lists what is not shown and why, then draws every probe of the file with a view chosen by
its class and the axes of its quantities (:mod:`gradlens.report.views`) and every logged scalar.
"""

from gradlens.report.common import chosen_steps, describe, run_label, short_names
from gradlens.report.diagnosis import Diagnosis, diagnose_run, verdict_dict, verdict_html
from gradlens.report.page import Report, build, group_runs, render, write_report
from gradlens.report.views import Section
from gradlens.report.views.findings import missing_lines

__all__ = [
    "Diagnosis",
    "Report",
    "Section",
    "build",
    "chosen_steps",
    "describe",
    "diagnose_run",
    "group_runs",
    "missing_lines",
    "render",
    "run_label",
    "short_names",
    "verdict_dict",
    "verdict_html",
    "write_report",
]
