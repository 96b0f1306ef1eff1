"""What the document probes say (σ of DominantFlow, Arora et al.'s cushions), stated without a pass/fail
threshold: the documents give none, so these are info findings."""

from __future__ import annotations

import numpy as np

from gradlens.doctor.evidence import Evidence
from gradlens.doctor.finding import Finding, fmt
from gradlens.doctor.rule import Rule, Unchecked


class Science(Rule):
    id = "sigma"  # and "cushion"
    reads = "DominantFlow sigma; LayerCushion/InterlayerCushion min"
    severity = "info"
    thresholds = {}

    def check(self, ev: Evidence) -> list[Finding] | Unchecked:
        out = []
        for (cls, _), series in ev.science.items():
            last = series.values[-1] if len(series) else np.zeros(0)
            if not np.isfinite(last).any():
                continue
            low = int(np.nanargmin(last))
            step = int(series.steps[-1])
            if cls == "DominantFlow":
                out.append(Finding(
                    "sigma", "info",
                    f"σ at the last record (step {step}) ranges {fmt(np.nanmin(last))}–{fmt(np.nanmax(last))}",
                    f"lowest at {series.layers[low]}; first layer {fmt(last[0])}, last layer {fmt(last[-1])}",
                    "DominantFlow/sigma (fraction of channels with a dominant gradient flow; no threshold)",
                ))
            else:
                out.append(Finding(
                    "cushion", "info",
                    f"smallest cushion at the last record (step {step}): {fmt(last[low])} at {series.layers[low]}",
                    "per-layer minimum over the probe batch: "
                    + ", ".join(f"{name} {fmt(v)}" for name, v in list(zip(series.layers, last, strict=True))[:8]),
                    f"{cls}/min (Arora et al.'s cushion; no threshold)",
                ))
        return out


RULES = (Science(),)
