"""Gradient clipping that dominates: clipping meant to cut rare spikes that instead rescales (most) steps.

Reads the scalars ``clip/preclip_norm`` (the total norm ``clip_grad_norm_`` returned, before clipping) and
``clip/max_norm`` at each step clipping was called, and ``meta["clipping"]`` when a framework's settings say so.
Without them, a global gradient norm that is *constant* over the records is the signature of clipping by norm
after backward (the probes see the clipped gradients): said as a warning, since the natural norm is unknown.

A step is clipped when its pre-clip norm exceeds the threshold; clipping then multiplies the update by
max_norm / norm, i.e. it lowers that step's learning rate by the same factor.
"""

from __future__ import annotations

import numpy as np

from gradlens.doctor.evidence import Evidence
from gradlens.doctor.finding import Finding, Fix, fmt
from gradlens.doctor.norms import SPIKE_FACTOR
from gradlens.doctor.rule import Rule, Unchecked, sustained_from

PRECLIP, MAX_NORM = "clip/preclip_norm", "clip/max_norm"
CLIP_WARN_SHARE = 0.5  # clipped at half the steps or more: clipping is the rule, not the exception
CLIP_SEVERE_SHARE = 0.9  # clipped at 90 % of the steps ...
CLIP_SEVERE_FACTOR = 100.0  # ... each update shrunk 100× or more: the gradients are clipped to nothing
CONSTANT_NORM_SPREAD = 1e-3  # G constant to 0.1 % over the records: clipped by norm (no natural run does that)
CLIP_MIN_RECORDS = 10


class ClippingDominates(Rule):
    id = "clipping_dominates"
    reads = "scalars clip/preclip_norm and clip/max_norm; meta['clipping']; else a constant GradStats global norm"
    severity = "warning; severe when ≥ 90 % of the steps are shrunk ≥ 100×"
    thresholds = {
        "CLIP_WARN_SHARE": "clipping is a guard against rare spikes; on most steps it is a hidden learning-rate "
        "change",
        "CLIP_SEVERE_SHARE": "nearly every step clipped ...",
        "CLIP_SEVERE_FACTOR": "... by a factor 100 or more: the effective learning rate is below 1 % of the set one",
        "CONSTANT_NORM_SPREAD": "mini-batch gradients vary by far more than 0.1 % from step to step",
        "CLIP_MIN_RECORDS": "a constant norm over fewer records could be chance",
    }

    def check(self, ev: Evidence) -> list[Finding] | Unchecked:
        pre, limit = ev.scalars.get(PRECLIP), ev.scalars.get(MAX_NORM)
        if pre is None or limit is None or not len(pre.steps):
            return self._constant_norm(ev)
        threshold = dict(zip(limit.steps.tolist(), limit.values.tolist(), strict=True))
        steps = np.array([s for s in pre.steps if s in threshold], dtype=np.int64)
        norms = np.array([v for s, v in zip(pre.steps, pre.values, strict=True) if s in threshold])
        maxima = np.array([threshold[int(s)] for s in steps])
        ok = np.isfinite(norms) & np.isfinite(maxima) & (maxima > 0)
        steps, norms, maxima = steps[ok], norms[ok], maxima[ok]
        if len(steps) < CLIP_MIN_RECORDS:
            return []
        clipped = norms > maxima
        share = float(clipped.mean())
        if share < CLIP_WARN_SHARE:
            return []
        factor = float(np.median(norms[clipped] / maxima[clipped]))
        natural = float(np.median(norms))
        suggested = SPIKE_FACTOR * natural  # a threshold that cuts spikes only (what the spike rule calls one)
        severe = share >= CLIP_SEVERE_SHARE and factor >= CLIP_SEVERE_FACTOR
        onset = sustained_from(clipped, share=CLIP_WARN_SHARE, at_end=False) or 0
        setting = ev.setting("clipping") if isinstance(ev.setting("clipping"), dict) else {}
        source = f" (set by {setting.get('source')})" if setting.get("source") else ""
        return [Finding(
            self.id, "severe" if severe else "warning",
            f"gradient clipping cuts {share:.0%} of the steps: your clip threshold {fmt(float(np.median(maxima)))} is "
            f"{factor:.3g}× below the natural norm {fmt(natural)}",
            f"{int(clipped.sum())} of {len(steps)} steps clipped{source}; median pre-clip norm {fmt(natural)}, "
            f"threshold {fmt(float(np.median(maxima)))}; each clipped update shrunk {factor:.3g}× (median)",
            f"share of steps with pre-clip norm > max_norm ≥ {CLIP_WARN_SHARE:.0%} (severe: ≥ {CLIP_SEVERE_SHARE:.0%} "
            f"of the steps shrunk ≥ {CLIP_SEVERE_FACTOR:g}×)",
            step=int(steps[onset]),
            fixes=(Fix(f"raise the clip threshold to about {fmt(suggested)} ({SPIKE_FACTOR:g}× the median pre-clip "
                       "norm: clipping then cuts spikes only), or remove clipping",
                       f"the threshold is {factor:.3g}× below the natural norm {fmt(natural)}",
                       {"kind": "clip", "max_norm": suggested}),),
            values={"share": share, "factor": factor, "natural_norm": natural},
        )]

    def _constant_norm(self, ev: Evidence) -> list[Finding] | Unchecked:
        found = ev.global_norm()
        if found is None:
            return []
        steps, total = found
        keep = np.isfinite(total) & (total > 0)
        if keep.sum() < CLIP_MIN_RECORDS:
            return []
        values = total[keep]
        level = float(np.median(values))
        flat = np.abs(values / level - 1) <= CONSTANT_NORM_SPREAD
        if flat.mean() < CLIP_SEVERE_SHARE:
            return []
        return [Finding(
            self.id, "warning",
            f"the gradients look clipped at every step: the global norm is constant at {fmt(level)}",
            f"G within {CONSTANT_NORM_SPREAD:.1%} of {fmt(level)} at {int(flat.sum())} of {len(values)} records "
            "(no clip/preclip_norm was recorded, so the natural norm is unknown)",
            f"G(t) constant to {CONSTANT_NORM_SPREAD:g} at ≥ {CLIP_SEVERE_SHARE:.0%} of ≥ {CLIP_MIN_RECORDS} records",
            step=int(steps[keep][int(np.argmax(flat))]),
            fixes=(Fix("raise the clip threshold or remove clipping; log the norm clip_grad_norm_ returns to compare",
                       f"every step is rescaled to G = {fmt(level)}", {"kind": "clip"}),),
            values={"norm": level},
        )]


RULES = (ClippingDominates(),)
