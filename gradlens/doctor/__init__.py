"""``gradlens doctor``: what is wrong with a run, in words: each finding located (first step, layers), with its
evidence, its rule and ranked fixes; after the fact (:func:`diagnose`) or while training (:class:`LiveDoctor`).

One module per family of rules (:mod:`~gradlens.doctor.gradients`, :mod:`~gradlens.doctor.nonfinite`,
:mod:`~gradlens.doctor.activations`, :mod:`~gradlens.doctor.parameters`, :mod:`~gradlens.doctor.loss`,
:mod:`~gradlens.doctor.clipping`, :mod:`~gradlens.doctor.learning_rate`, :mod:`~gradlens.doctor.events`,
:mod:`~gradlens.doctor.status`, :mod:`~gradlens.doctor.science`); rules read an
:class:`~gradlens.doctor.evidence.Evidence`, never a file. Thresholds and their reasons: docs/doctor.md.
``gradlens doctor`` exits 0 when no finding is severe, 1 when one is, 2 on bad input.
"""

from gradlens.doctor.engine import RULES, diagnose, diagnose_evidence, healthy
from gradlens.doctor.evidence import Evidence, LayerSeries, from_run
from gradlens.doctor.finding import SEVERITIES, Finding, Fix, Verdict, finding_from_event, verdict
from gradlens.doctor.gradients import depth_decades
from gradlens.doctor.live import LiveDoctor, replay
from gradlens.doctor.output import JSON_SCHEMA, doctor, format_findings
from gradlens.doctor.rule import Rule, Unchecked

__all__ = [
    "JSON_SCHEMA",
    "RULES",
    "SEVERITIES",
    "Evidence",
    "Finding",
    "Fix",
    "LayerSeries",
    "LiveDoctor",
    "Rule",
    "Unchecked",
    "Verdict",
    "depth_decades",
    "diagnose",
    "diagnose_evidence",
    "doctor",
    "finding_from_event",
    "format_findings",
    "from_run",
    "healthy",
    "replay",
    "verdict",
]
