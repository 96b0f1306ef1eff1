"""Learning rate too high or too low, from update-to-weight ratios ‖Δw‖/‖w‖ (UpdateRatio).

For SGD Δw = −lr·g, so the ratio is the step size relative to the weights; for Adam ≈ lr·√n/‖w‖. The
common rule of thumb is ≈ 1e−3 per step: below 1e−5 a layer needs 10⁴ steps to move its weights by a tenth
even if every step points the same way; above 0.1 ten steps replace the weights; above 1 each step does.
Weights only (biases start at zero, and a ratio over a zero norm is undefined); embeddings included. A run
whose loss falls to half its start (or below a quarter of ln K) learns: small ratios there are convergence, and
"too low" is not said.
"""

from __future__ import annotations

import math

import numpy as np

from gradlens.doctor.evidence import Evidence
from gradlens.doctor.finding import Finding, Fix, fmt
from gradlens.doctor.loss import learning
from gradlens.doctor.parameters import NO_RATIOS
from gradlens.doctor.rule import Rule, Unchecked, listed, weight_columns

RATIO_LOW = 1e-5  # median ‖Δw‖/‖w‖ below: the layer barely moves
RATIO_HIGH = 1e-1  # ... above: updates too large for the weights
RATIO_SEVERE = 1.0  # ... above: each step replaces the weights
RATIO_TARGET = 3e-3  # the fix aims the median ratio here (between the 1e-3 rule of thumb and 1e-2)
RATIO_MIN_RECORDS = 40  # medians over fewer records are not judged (the first steps of a fresh layer are large)
RATIO_SEVERE_RECORDS = 3  # records whose median ratio over the weights exceeds RATIO_SEVERE: too high at once


def nan_median(values: np.ndarray, axis: int, empty: float = 0.0) -> np.ndarray:
    """Median along ``axis`` ignoring NaN (``empty`` where a row/column has no finite value), vectorised."""
    if np.isfinite(values).all():
        return np.median(values, axis=axis)
    ordered = np.sort(np.where(np.isfinite(values), values, np.inf), axis=axis)  # non-finite sorted last
    count = np.isfinite(values).sum(axis=axis)
    low = np.take_along_axis(ordered, np.expand_dims(np.maximum(count - 1, 0) // 2, axis), axis).squeeze(axis)
    high = np.take_along_axis(ordered, np.expand_dims(np.maximum(count, 1) // 2, axis), axis).squeeze(axis)
    high = np.where(count % 2 == 1, low, high)
    return np.where(count > 0, (low + high) / 2, empty)


class UpdateRatios(Rule):
    id = "lr_too_high"  # or "lr_too_low"
    reads = "UpdateRatio ratio of the weights (median over the later half of the records; the median over the " \
            "weights at each record)"
    severity = "warning; severe above RATIO_SEVERE"
    thresholds = {
        "RATIO_LOW": "10⁴ aligned steps to move a weight by a tenth: the layer effectively does not train",
        "RATIO_HIGH": "ten steps replace the weights: no descent direction survives",
        "RATIO_SEVERE": "each step replaces the weights",
        "RATIO_SEVERE_RECORDS": "steps that replace most weights (at the first record, or at three) are never a "
        "healthy start, even if the net dies after them; a zero-initialised layer has no first ratio and its "
        "second step is ~1-2× its first (one record)",
        "RATIO_TARGET": "the suggested change aims at ~3e-3, inside the rule-of-thumb band",
        "RATIO_MIN_RECORDS": "a freshly initialised layer (a new head) moves by a tenth of its weights per step for "
        "its first ten or so steps, and momentum or Adam's first moment (β = 0.9: an average over 1/(1 − β) = 10 "
        "steps) carries those steps for ten more: medians are taken over the later half of at least forty records",
    }

    def check(self, ev: Evidence) -> list[Finding] | Unchecked:
        ratio = ev.ratios.get("ratio")
        if ratio is None:
            return NO_RATIOS
        if not len(ratio):
            return []
        columns = weight_columns(ev, ratio, embeddings=True)
        values = np.where(np.isfinite(ratio.values) & ~ratio.missing, ratio.values, np.nan)[:, columns]
        if not np.isfinite(values).any():
            return []
        out = []
        steady = values[len(values) // 2:]  # the later half: past the large first steps of a fresh layer
        medians = nan_median(steady, axis=0, empty=np.nan) if len(ratio) >= RATIO_MIN_RECORDS else \
            np.full(len(columns), np.nan)
        low = (medians < RATIO_LOW) & (medians > 0)
        if learning(ev):  # small steps of a loss that falls well are convergence, not a rate too low
            low[:] = False
        # steps that replace the weights: the median over the weights above RATIO_SEVERE at the first record (a
        # zero-initialised weight has no first ratio) or at >= 3 records (a zero-initialised layer's second step
        # is ~1-2× its first: one record); their largest ratio per weight
        across = nan_median(values, axis=1)
        replaced = np.flatnonzero(across > RATIO_SEVERE)
        judged = len(replaced) >= RATIO_SEVERE_RECORDS or (len(replaced) and replaced[0] == 0)
        initial = np.nanmax(values[replaced], axis=0) if judged else np.zeros(len(columns))
        initial = np.nan_to_num(initial, nan=0.0)
        size = np.maximum(np.nan_to_num(medians, nan=0.0), np.where(initial > RATIO_SEVERE, initial, 0.0))
        for which, chosen in (("high", size > RATIO_HIGH), ("low", low)):
            picked = np.flatnonzero(chosen)
            if not len(picked):
                continue
            order = picked[np.argsort(-size[picked] if which == "high" else medians[picked])]
            names = [ratio.layers[columns[k]] for k in order]
            worst = float(size[order[0]] if which == "high" else medians[order[0]])
            crossed = values[:, order[0]] > RATIO_HIGH if which == "high" else values[:, order[0]] < RATIO_LOW
            first = int(np.argmax(crossed)) if crossed.any() else 0
            if which == "high" and initial[order[0]] > RATIO_SEVERE:
                first = int(replaced[0])
            # the step size the optimizer started with, when already too high (once a run diverges its ratios
            # grow with the weights' chaos, not with the rate); else the median found
            basis = float(across[0]) if which == "high" and across[0] > RATIO_HIGH else worst
            factor = 10.0 ** round(math.log10(RATIO_TARGET / basis))
            verb = "lower" if factor < 1 else "raise"
            out.append(Finding(
                f"lr_too_{which}",
                "severe" if which == "high" and worst > RATIO_SEVERE else "warning",
                f"learning rate too {which}: {len(names)} layer(s) "
                f"{'change too fast' if which == 'high' else 'barely move'}"
                f" (‖Δw‖/‖w‖ {fmt(worst)} in {names[0]})",
                listed([f"{ratio.layers[columns[k]]} {fmt(float(medians[k]))}" for k in order], 8)
                + f" (median over the later {len(steady)} of {len(ratio)} records; ≈ 1e-3 is typical)"
                + (f"; {len(replaced)} steps from step {int(ratio.steps[replaced[0]])} replaced the weights (median "
                   f"ratio over the weights > {RATIO_SEVERE:g}; up to {fmt(float(initial[order[0]]))} in {names[0]})"
                   if which == "high" and initial[order[0]] > RATIO_SEVERE else ""),
                f"median ‖Δw‖/‖w‖ of a weight over the later half of the records < {RATIO_LOW:g} or > "
                f"{RATIO_HIGH:g}, or the median over the weights > {RATIO_SEVERE:g} at the first record or at ≥ "
                f"{RATIO_SEVERE_RECORDS} records (severe above {RATIO_SEVERE:g}); biases and ratios over ‖w‖ = 0 not "
                f"judged ({ev.ratio_probe}/ratio)",
                step=int(ratio.steps[first]),
                layers=tuple(names),
                fixes=(Fix(f"{verb} the learning rate {max(factor, 1 / factor):.0f}×",
                           f"that brings the ratio {fmt(basis)} to about {fmt(basis * factor)}",
                           {"kind": "lr", "factor": factor}),),
                values={"median_ratio": worst},
            ))
        return out


RULES = (UpdateRatios(),)
