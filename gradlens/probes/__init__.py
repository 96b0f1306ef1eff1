"""Probes: small classes that measure one thing when their schedule fires.

Gradient probes read parameter gradients at ``optimizer.step()``; probe-batch probes evaluate the model on
a fixed batch (the same samples at every firing) through the session's side-effect-free capture.
"""

from gradlens.probes.base import GRADS, PROBE_BATCH, Probe, Quantity, Schedule
from gradlens.probes.dominant_flow import DominantFlow
from gradlens.probes.final_grad_hist import FinalGradHist
from gradlens.probes.grad_stats import GradStats
from gradlens.probes.interlayer_cushion import InterlayerCushion
from gradlens.probes.layer_cushion import LayerCushion
from gradlens.probes.update_ratio import UpdateRatio

__all__ = [
    "GRADS",
    "PROBE_BATCH",
    "DominantFlow",
    "FinalGradHist",
    "GradStats",
    "InterlayerCushion",
    "LayerCushion",
    "Probe",
    "Quantity",
    "Schedule",
    "UpdateRatio",
]
