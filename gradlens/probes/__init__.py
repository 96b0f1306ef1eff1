"""Probes: small classes that measure one thing when their schedule fires.

Gradient probes read parameter gradients at ``optimizer.step()``; probe-batch probes evaluate the model on
a fixed batch (the same samples at every firing) through the session's side-effect-free capture; activation
probes (``ActivationStats``) read module outputs on the training batch through hooks the session installs.
"""

from gradlens.probes.activation_stats import ActivationStats
from gradlens.probes.base import ACTIVATIONS, GRADS, PROBE_BATCH, Probe, Quantity, Schedule
from gradlens.probes.dominant_flow import DominantFlow
from gradlens.probes.final_grad_hist import FinalGradHist
from gradlens.probes.grad_stats import GradStats
from gradlens.probes.interlayer_cushion import InterlayerCushion
from gradlens.probes.layer_cushion import LayerCushion
from gradlens.probes.update_ratio import UpdateRatio

__all__ = [
    "ACTIVATIONS",
    "GRADS",
    "PROBE_BATCH",
    "ActivationStats",
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
