"""Rules on gradient sizes over time (GradStats): spikes and growth of the global gradient norm
G(t) = √(Σ_ℓ ‖g_ℓ(t)‖²), and layers whose gradient is exactly zero (a layer that gets no gradient does not
learn: dead ReLUs in front of it, or an output that does not reach the loss).
"""

from __future__ import annotations

import numpy as np

from gradlens.doctor.evidence import Evidence
from gradlens.doctor.finding import Finding, Fix, fmt
from gradlens.doctor.gradients import no_quantity
from gradlens.doctor.parameters import NO_RATIOS
from gradlens.doctor.rule import Rule, Unchecked, span, sustained_columns, weight_columns

SPIKE_FACTOR = 10.0  # G(t) above this many times the running median of the preceding records: a spike
SPIKE_WINDOW = 20  # preceding finite records in the running median
SPIKE_MIN_HISTORY = 5  # no spike test before this many finite records
SPIKE_OVER_MAX = 2.0  # ... and above twice the largest of those records
NORM_GROWTH_DECADES = 3.0  # max G over the first records' median: exploding trend
DEAD_MIN_RECORDS = 5  # a layer's gradient exactly zero for at least this many records (and 90 % since onset)
WEIGHT_GROWTH_DECADES = 1.0  # a weight's norm tenfold its first recorded norm: the weights run away


def positive_norms(ev: Evidence, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | Unchecked:
    """``(steps, G, index)``: the global norm and the indices of its finite, positive records."""
    found = ev.global_norm()
    if found is None:
        return no_quantity(ev, what)
    steps, total = found
    return steps, total, np.flatnonzero(np.isfinite(total) & (total > 0))


class NormSpikes(Rule):
    id = "spike"
    reads = "GradStats norm: the global norm G(t)"
    severity = "warning"
    thresholds = {
        "SPIKE_FACTOR": "noisy mini-batch SGD peaks at ~6× its running median (the demo's residual run: 5.7×); "
        "10× is what a mini-batch alone does not do",
        "SPIKE_WINDOW": "twenty records make the median robust to one earlier spike",
        "SPIKE_MIN_HISTORY": "no median of fewer than five records",
        "SPIKE_OVER_MAX": "heavy-tailed gradient norms (a near-converged classifier meets an occasional hard batch) "
        "reach 10× their median; a spike is also twice anything the window saw",
    }

    def check(self, ev: Evidence) -> list[Finding] | Unchecked:
        found = positive_norms(ev, "gradient-norm spikes")
        if isinstance(found, Unchecked):
            return found
        steps, total, index = found
        values = total[index]
        if len(values) <= SPIKE_MIN_HISTORY:
            return []
        medians, maxima = np.full(len(values), np.nan), np.full(len(values), np.nan)
        for k in range(SPIKE_MIN_HISTORY, min(SPIKE_WINDOW, len(values))):
            medians[k], maxima[k] = np.median(values[:k]), values[:k].max()
        if len(values) > SPIKE_WINDOW:
            windows = np.lib.stride_tricks.sliding_window_view(values[:-1], SPIKE_WINDOW)
            medians[SPIKE_WINDOW:], maxima[SPIKE_WINDOW:] = np.median(windows, axis=1), windows.max(axis=1)
        with np.errstate(invalid="ignore"):
            spikes = np.flatnonzero((values > SPIKE_FACTOR * medians) & (values > SPIKE_OVER_MAX * maxima))
        if not len(spikes):
            return []
        first = index[spikes[0]]
        layer = largest_layer(ev, first)
        shown = "; ".join(f"step {int(steps[index[k]])}: G = {fmt(values[k])} vs running median {fmt(medians[k])} "
                          f"({values[k] / medians[k]:.0f}×)" for k in spikes[:5])
        more = f"; and {len(spikes) - 5} more" if len(spikes) > 5 else ""
        return [
            Finding(
                self.id,
                "warning",
                f"gradient-norm spikes at {len(spikes)} recorded step(s)",
                f"{shown}{more}; largest layer at the first: {layer}",
                f"G(t) > {SPIKE_FACTOR:g} × the median and > {SPIKE_OVER_MAX:g} × the largest of the preceding "
                f"{SPIKE_WINDOW} finite records (after {SPIKE_MIN_HISTORY}); G = √(Σ_ℓ ‖g_ℓ‖²) from "
                f"{ev.grad_probe}/norm",
                step=int(steps[first]),
                layers=(layer,),
                fixes=(
                    Fix(f"clip the gradient norm at about {fmt(float(np.median(values)))} (the run's median G)",
                        "single steps carry gradients many times the usual size",
                        {"kind": "clip", "max_norm": float(np.median(values))}),
                    Fix("lower the learning rate 3×, or add a warm-up", "spikes grow when steps overshoot",
                        {"kind": "lr", "factor": 0.3}),
                ),
                values={"spikes": float(len(spikes)), "first_ratio": float(values[spikes[0]] / medians[spikes[0]])},
            )
        ]


def largest_layer(ev: Evidence, record: int) -> str:
    """The parameter with the largest finite gradient norm at ``record`` (of the GradStats norm table)."""
    norm = ev.grads["norm"]
    row = np.where(np.isfinite(norm.values[record]) & ~norm.missing[record], norm.values[record], -1)
    return norm.layers[int(np.argmax(row))]


class NormGrowth(Rule):
    id = "exploding_trend"
    reads = "GradStats norm: the global norm G(t)"
    severity = "warning"
    thresholds = {
        "NORM_GROWTH_DECADES": "healthy training changes G by a decade or two (it usually falls); a thousandfold "
        "rise is a feedback loop between weights and gradients",
    }

    def check(self, ev: Evidence) -> list[Finding] | Unchecked:
        found = positive_norms(ev, "gradient-norm growth")
        if isinstance(found, Unchecked):
            return found
        steps, total, index = found
        if len(index) < 2:
            return []
        start = float(np.median(total[index[:SPIKE_MIN_HISTORY]]))
        growth = np.log10(total[index] / start)
        over = np.flatnonzero(growth >= NORM_GROWTH_DECADES)
        if not len(over):
            return []
        peak = index[int(np.argmax(total[index]))]
        at = index[over[0]]
        return [
            Finding(
                self.id,
                "warning",
                f"the global gradient norm grew by {float(growth.max()):.1f} decades during training",
                f"median G over the first {min(SPIKE_MIN_HISTORY, len(index))} records {fmt(start)}; G = "
                f"{fmt(float(total[at]))} at step {int(steps[at])}, peak {fmt(float(total[peak]))} at step "
                f"{int(steps[peak])}",
                f"log10(G / median G of the first {SPIKE_MIN_HISTORY} records) ≥ {NORM_GROWTH_DECADES:g}",
                step=int(steps[at]),
                layers=(largest_layer(ev, at),),
                fixes=(
                    Fix("lower the learning rate 10×", "the gradients grow as the weights grow: a feedback loop",
                        {"kind": "lr", "factor": 0.1}),
                    Fix(f"clip the gradient norm at about {fmt(start)}", "the early norm is the healthy scale",
                        {"kind": "clip", "max_norm": start}),
                ),
                values={"decades": float(growth.max())},
            )
        ]


class DeadLayer(Rule):
    id = "dead_layer"
    reads = "GradStats max_abs (or norm): gradients that are exactly zero"
    severity = "severe: a layer that gets no gradient does not learn"
    thresholds = {
        "DEAD_MIN_RECORDS": "exactly zero at five records in a row is no single closed gate on one batch",
    }

    def check(self, ev: Evidence) -> list[Finding] | Unchecked:
        series = ev.grads.get("max_abs", ev.grads.get("norm"))
        if series is None:
            return no_quantity(ev, "dead layers")
        zero = (series.values == 0) & ~series.missing
        onsets = sustained_columns(zero)
        dead = [(int(i), int(onsets[i])) for i in np.flatnonzero(onsets >= 0)
                if len(series) - onsets[i] >= DEAD_MIN_RECORDS]
        if not dead:
            return []
        first = min(start for _, start in dead)
        names = [series.layers[i] for i, _ in dead]
        at_init = first == 0
        lower = Fix("lower the learning rate 10×", "the gradient died during training: large steps push ReLUs "
                    "into their zero side for every input", {"kind": "lr", "factor": 0.1})
        reinit = Fix("re-initialise (He init, biases at 0) and use LeakyReLU", "the gradient is zero from the first "
                     "step: the units were dead at initialisation", {"kind": "init"})
        leaky = Fix("use LeakyReLU (or GELU) instead of ReLU", "a leaky unit always passes some gradient",
                    {"kind": "activation", "to": "leaky_relu"})
        fixes = (reinit, leaky) if at_init else (lower, leaky)
        return [
            Finding(
                self.id,
                "severe",
                f"{len(dead)} layer(s) get exactly zero gradient: {span(names)}",
                ", ".join(f"{series.layers[i]} (zero from step {int(series.steps[s])}, {int(zero[s:, i].sum())} of "
                          f"{len(series) - s} records since)" for i, s in dead[:8]),
                f"{ev.grad_probe}/{'max_abs' if 'max_abs' in ev.grads else 'norm'} == 0 from a record on, at ≥ 90 % "
                f"of the records since and at the last, for ≥ {DEAD_MIN_RECORDS} records",
                step=int(series.steps[first]),
                layers=tuple(names),
                fixes=fixes,
                values={"layers": float(len(dead))},
            )
        ]


class WeightGrowth(Rule):
    id = "weight_growth"
    reads = "UpdateRatio weight_norm of the weights (zero-initialised ones excluded)"
    severity = "warning"
    thresholds = {
        "WEIGHT_GROWTH_DECADES": "training moves a weight by a small factor (healthy benchmark runs: at most 0.6 "
        "decades, a fresh head); tenfold means the updates keep adding up in one direction",
    }

    def check(self, ev: Evidence) -> list[Finding] | Unchecked:
        norms = ev.ratios.get("weight_norm")
        if norms is None:
            return NO_RATIOS
        if not len(norms):
            return []
        columns = [i for i in weight_columns(ev, norms, embeddings=True) if norms.values[0, i] > 0]
        if not columns:
            return []
        values = np.where(np.isfinite(norms.values[:, columns]), norms.values[:, columns], np.nan)
        with np.errstate(all="ignore"):
            growth = np.log10(values / values[0])
        over = np.nan_to_num(growth, nan=0.0) >= WEIGHT_GROWTH_DECADES
        if not over.any():
            return []
        n = int(np.argmax(over.any(axis=1)))
        peak = np.nanmax(growth, axis=0)
        order = np.argsort(-peak)
        names = [norms.layers[columns[k]] for k in order if peak[k] >= WEIGHT_GROWTH_DECADES]
        k = int(order[0])
        return [Finding(
            self.id, "warning",
            f"exploding weights: the norm of {names[0]} grew {10 ** peak[k]:.3g}× during training",
            f"{names[0]}: ‖w‖ {fmt(float(values[0, k]))} at step {int(norms.steps[0])} → "
            f"{fmt(float(np.nanmax(values[:, k])))}; {len(names)} weight(s) grew ≥ {10 ** WEIGHT_GROWTH_DECADES:g}×, "
            f"the first at step {int(norms.steps[n])}",
            f"log10(‖w(t)‖ / ‖w(first record)‖) ≥ {WEIGHT_GROWTH_DECADES:g} ({ev.ratio_probe}/weight_norm)",
            step=int(norms.steps[n]), layers=tuple(names),
            fixes=(Fix("lower the learning rate 10× (or add weight decay)", "the weights run away: each update adds "
                       "to the last", {"kind": "lr", "factor": 0.1}),),
            values={"decades": float(peak[k])},
        )]


RULES = (NormSpikes(), NormGrowth(), DeadLayer(), WeightGrowth())
