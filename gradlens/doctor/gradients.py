"""Rules on gradient statistics (GradStats) by depth and size: vanishing/exploding through depth, exploding by
absolute size (spikes, growth and zero gradients over time: :mod:`gradlens.doctor.norms`).

Notation: ``m_ℓ(t)`` is the mean |gradient| of weight ℓ at recorded step t (``mean_abs``; ``norm`` when it is
not recorded), ``G(t) = √(Σ_ℓ ‖g_ℓ(t)‖²)`` the global gradient norm. The depth rule fits d(t), the decades
between the first and the last weight on a Theil–Sen line through log10 m_ℓ(t) (:func:`depth_decades`).

Absolute size (first principles, docs/doctor.md): for a mean-reduced cross-entropy, each sample's gradient
w.r.t. its logits, p − e_y, has norm ≤ √2. A layer's weight gradient is the batch mean of δ xᵀ, so
‖g_ℓ‖ ≤ max_b ‖δ_b‖ ‖x_b‖. A healthy net keeps its signals at unit scale per unit (He/LeCun initialisation,
normalisation), so ‖x‖ ≈ √fan_in and ‖δ‖ ≲ √2: ρ_ℓ = ‖g_ℓ‖ / √(2 fan_in) is of order 1 or less.
"""

from __future__ import annotations

import math

import numpy as np

from gradlens.doctor.evidence import Evidence, LayerSeries
from gradlens.doctor.finding import Finding, Fix, fmt
from gradlens.doctor.loss_series import classes, training_losses, words
from gradlens.doctor.rule import Rule, Unchecked, parameter_table, span, spread, sustained_from, weight_columns

DEPTH_WARN_DECADES = 3.0  # |d| at or above: warning
DEPTH_SEVERE_DECADES = 6.0  # ... at or above: severe (the first layers do not train)
TREND_STEADY_DECADES = 0.5  # a change of d over training below this is "steady"
MAX_DEPTH_RECORDS = 64  # records entering the depth median, evenly spread (the pairwise slopes cost K² each)
MAX_DEPTH_WEIGHTS = 48  # weights in one fit, evenly spread, first and last included (cost; robust as well)
SIZE_WARN_RHO = 1e3  # ρ = ‖g_ℓ‖/√(2·fan_in) at or above: exploding by size
LOSS_SCALE_FACTOR = 10.0  # a first loss ≥ 10 ln K: the logits are far off the unit scale
CROSS_ENTROPY_WORDS = {"nll", "ce", "xent", "crossentropy", "cross_entropy", "cross"}

NO_GRADIENTS = Unchecked(
    "gradient rules (vanishing/exploding, size, spikes, dead layers)",
    "no gradient statistics were recorded (add gradlens.probes.GradStats)",
)


def depth_profile(log_values: np.ndarray) -> np.ndarray:
    """:func:`depth_decades` of every row of ``log_values`` ``[R, K]`` at once (finite rows), ``[R]``."""
    y = np.asarray(log_values, dtype=np.float64)
    i, j = np.triu_indices(y.shape[1], 1)
    return -np.median((y[:, j] - y[:, i]) / (j - i), axis=1) * (y.shape[1] - 1)


def depth_decades(log_values: np.ndarray) -> float:
    """Decades between the first and the last layer on a robust line through a log profile.

    ``log_values`` ``[K]``: log10 m_ℓ of K layers in forward order. With the Theil–Sen slope
    b = median_{i<j} (y_j − y_i)/(j − i), the result is −b·(K − 1) = log10(m_first / m_last) on the fitted
    line: negative when gradients shrink towards the input. One odd layer (e.g. attention query/key weights,
    whose gradients are small at initialisation) cannot move a median of slopes much, unlike the two end
    values alone.
    """
    y = np.asarray(log_values, dtype=np.float64)
    i, j = np.triu_indices(len(y), 1)
    return float(-np.median((y[j] - y[i]) / (j - i)) * (len(y) - 1))


def no_quantity(ev: Evidence, what: str) -> Unchecked:
    """Unchecked for want of a GradStats quantity (all gradient rules at once when no GradStats was recorded)."""
    return NO_GRADIENTS if ev.grad_probe is None else Unchecked(what, "GradStats norm/max_abs was not recorded")


def _gradient_series(ev: Evidence) -> LayerSeries | Unchecked:
    series = ev.grads.get("mean_abs", ev.grads.get("norm"))
    return NO_GRADIENTS if series is None else series


class DepthProfile(Rule):
    id = "vanishing"  # or "exploding": the sign of d decides
    reads = "GradStats mean_abs (or norm) of the weights in forward order, embeddings excluded"
    severity = "warning ≥ 3 decades, severe ≥ 6"
    thresholds = {
        "DEPTH_WARN_DECADES": "a plain ReLU MLP at PyTorch's default initialisation loses ~0.4 per layer: 8 "
        "layers already cost 3 decades; healthy (residual, normalised, well initialised) nets stay within 1–2",
        "DEPTH_SEVERE_DECADES": "at a millionth of the last layer's gradient the first layers do not train",
        "TREND_STEADY_DECADES": "changes of d below half a decade are within the scatter between records",
        "MAX_DEPTH_RECORDS": "cost: the Theil–Sen slopes are K² per record; 64 records make a stable median",
        "MAX_DEPTH_WEIGHTS": "cost: K² slopes; 48 weights spread over depth keep the fit's first and last layer",
    }

    def check(self, ev: Evidence) -> list[Finding] | Unchecked:
        series = _gradient_series(ev)
        if isinstance(series, Unchecked):
            return series
        quantity = "mean_abs" if "mean_abs" in ev.grads else "norm"
        never = series.missing.all(axis=0)
        columns = [i for i in weight_columns(ev, series) if not never[i]]
        columns = [columns[k] for k in spread(len(columns), MAX_DEPTH_WEIGHTS)]
        if len(columns) < 2 or not len(series):
            return []
        values = series.values[:, columns]
        usable = np.isfinite(values) & (values > 0) & ~series.missing[:, columns]
        picked = spread(len(series), MAX_DEPTH_RECORDS)
        key = ("depth", tuple(series.layers[i] for i in columns))
        known = ev.memo.setdefault(key, {})  # step -> d(t): a record never changes once observed
        decades = np.array([known.get(int(series.steps[n]), np.nan) for n in picked])
        todo = np.flatnonzero([int(series.steps[n]) not in known for n in picked])  # NaN is a known answer too
        full = todo[usable[picked[todo]].all(axis=1)]
        if len(full):  # the common case, every weight usable: all new records in one call
            decades[full] = depth_profile(np.log10(values[picked[full]]))
        for k in np.setdiff1d(todo, full):
            ok = np.flatnonzero(usable[picked[k]])
            if len(ok) >= 2:
                decades[k] = depth_decades(np.log10(values[picked[k], ok]))
        known.update({int(series.steps[picked[k]]): float(decades[k]) for k in todo})
        kept = np.flatnonzero(np.isfinite(decades))
        if not len(kept):
            return []
        records = [(int(picked[k]), np.flatnonzero(usable[picked[k]])) for k in kept]
        decades = decades[kept].tolist()
        d = np.asarray(decades)
        median = float(np.median(d))
        if abs(median) < DEPTH_WARN_DECADES:
            return []
        kind = "vanishing" if median < 0 else "exploding"
        sign = np.sign(median)
        onset = sustained_from(sign * d >= DEPTH_WARN_DECADES, at_end=False) or 0
        logs = np.where(usable, np.log10(np.where(usable, values, 1.0)), np.nan)
        with np.errstate(all="ignore"):
            level = np.nanmedian(logs, axis=0)
        last = level[np.flatnonzero(np.isfinite(level))[-1]]
        affected = [series.layers[columns[k]] for k in range(len(columns))
                    if np.isfinite(level[k]) and sign * (level[k] - last) >= DEPTH_WARN_DECADES]
        affected = affected or [series.layers[columns[0]]]

        def point(k: int) -> str:
            n, ok = records[k]
            first, final = columns[ok[0]], columns[ok[-1]]
            return (f"step {int(series.steps[n])}: {series.layers[first]} {fmt(series.values[n, first])}, "
                    f"{series.layers[final]} {fmt(series.values[n, final])} (fit over {len(columns)} weights "
                    f"{decades[k]:+.1f} decades)")

        trend = decades[-1] - decades[0]
        direction = ("steady" if abs(trend) < TREND_STEADY_DECADES
                     else "worsening" if trend * median > 0 else "improving")
        return [
            Finding(
                kind,
                "severe" if abs(median) >= DEPTH_SEVERE_DECADES else "warning",
                f"{kind} gradients: the first layer's {quantity.replace('_', ' ')} gradient is {fmt(10**median)} of "
                f"the last layer's (median over {len(decades)} records, {median:+.1f} decades)",
                f"{point(0)}; {point(len(records) - 1)}; trend over training {trend:+.1f} decades ({direction})",
                f"|median over records of the decades between first and last layer on a Theil–Sen line through "
                f"log10 m_ℓ| ≥ {DEPTH_WARN_DECADES:g}: warning, ≥ {DEPTH_SEVERE_DECADES:g}: severe "
                f"({ev.grad_probe}/{quantity}, weights only, embeddings excluded)",
                step=int(series.steps[records[onset][0]]),
                layers=tuple(affected),
                fixes=_depth_fixes(ev, kind, affected),
                values={"decades": median, "trend": trend},
            )
        ]


def _depth_fixes(ev: Evidence, kind: str, affected: list[str]) -> tuple[Fix, ...]:
    where = span(affected)
    residual = any(bool(row.get("residual")) for row in ev.layers)
    kinds = set(ev.activation_kinds.values())
    saturating = kinds & {"tanh", "sigmoid"}
    structure = Fix(
        f"add residual connections (x + f(x)) or normalisation (BatchNorm/LayerNorm) around {where}",
        "a skip path carries the gradient past the layers that shrink it" if kind == "vanishing"
        else "normalisation resets the signal's scale at every layer",
        {"kind": "residual", "layers": list(affected)},
    )
    init = Fix(
        "initialise with a gain that keeps the signal's power: Kaiming/He (gain √2) for ReLU, Xavier/LeCun for "
        "tanh" + (" (the current weights shrink it)" if kind == "vanishing" else " (the current weights grow it)"),
        f"{'shrinks' if kind == 'vanishing' else 'grows'} by a constant factor per layer: the sign of a gain ≠ 1",
        {"kind": "init"},
    )
    activation = Fix(
        f"replace {'/'.join(sorted(saturating))} by a non-saturating activation (ReLU family, GELU)",
        "saturated units pass almost no gradient", {"kind": "activation", "to": "relu"},
    )
    if kind == "vanishing" and saturating:
        return activation, structure, init
    if kind == "exploding" or residual:
        return init, structure
    return structure, init


def fan_in(ev: Evidence, label: str) -> int | None:
    """Inputs per output of a parameter (numel / shape[0]; 1 for a bias or norm vector), None when unknown.

    From ``meta["parameters"]``; else from the layer table, for a label that is a layer (``GradStats(params=
    "weights")``) or a layer's ``.weight``.
    """
    row = parameter_table(ev).get(label)
    if row is None:
        names = {label, label[: -len(".weight")] if label.endswith(".weight") else label}
        row = next((r for r in ev.layers if r.get("name") in names), None)
    shape = list(row.get("shape") or []) if row else []
    if not shape:
        return None
    return max(1, int(np.prod(shape[1:]))) if len(shape) > 1 else 1


class GradientSize(Rule):
    id = "exploding_size"
    reads = "GradStats norm of every parameter, its fan-in from meta['parameters'] (or the layer table); the " \
            "first loss against ln K"
    severity = "warning"
    thresholds = {
        "SIZE_WARN_RHO": "ρ = ‖g‖/√(2·fan_in) is ≤ ~1 when signals keep unit scale (‖δ‖ ≤ √2 for a "
        "mean-reduced cross-entropy); 10³ leaves three decades for summed losses, conv positions and "
        "unnormalised inputs",
        "LOSS_SCALE_FACTOR": "a first loss ten times ln K needs logits tens of units apart: the forward signal "
        "is off scale already at initialisation",
    }

    def check(self, ev: Evidence) -> list[Finding] | Unchecked:
        norm = ev.grads.get("norm")
        if norm is None:
            return no_quantity(ev, "gradient size")
        key = ("fan_in", tuple(norm.layers))
        if key not in ev.memo:
            ev.memo[key] = [fan_in(ev, label) for label in norm.layers]
        fans = ev.memo[key]
        known = [i for i, f in enumerate(fans) if f is not None]
        if not known or not len(norm):
            return Unchecked("gradient size", "no parameter shapes are stored (meta['parameters'])")
        bound = np.sqrt(2.0 * np.array([fans[i] for i in known], dtype=np.float64))
        skipped = np.isin(norm.steps, list(ev.skipped_steps()))[:, None]  # overflowed on purpose: the scaler's
        values = np.where(norm.missing[:, known] | ~np.isfinite(norm.values[:, known]) | skipped, 0.0,
                          norm.values[:, known])
        rho = values / bound
        worst = rho.max(axis=1)
        loss_scale = self._loss_scale(ev)
        over = worst >= SIZE_WARN_RHO
        if not over.any() and loss_scale is None:
            return []
        n = int(np.argmax(over)) if over.any() else 0
        step = int(norm.steps[n])
        if loss_scale is not None:  # the first loss is off scale: the forward signal is, from the first step
            step = min(step, loss_scale[2])
        order = np.argsort(-rho[n])
        layers = tuple(norm.layers[known[k]] for k in order if rho[n, k] >= SIZE_WARN_RHO) or (
            norm.layers[known[int(order[0])]],)
        G = float(np.sqrt((values[n] ** 2).sum()))
        parts = [f"step {int(norm.steps[n])}: G = {fmt(G)}, largest ρ = {fmt(float(worst[n]))} in {layers[0]} "
                 f"(‖g‖ = {fmt(float(values[n, order[0]]))}, fan-in {fans[known[int(order[0])]]})"]
        if loss_scale is not None:
            parts.append(loss_scale[1])
        at_start = n <= 1 or loss_scale is not None
        return [
            Finding(
                self.id,
                "warning",
                f"exploding gradients by size: ‖g‖ is {fmt(float(worst[n]))}× the bound of a unit-scale net"
                if over.any() else "exploding forward signal: the first loss is far above chance level",
                "; ".join(parts),
                f"ρ = ‖g_ℓ‖/√(2·fan_in_ℓ) ≥ {SIZE_WARN_RHO:g} (the per-sample logit gradient of a mean "
                f"cross-entropy has norm ≤ √2; healthy ρ ≲ 1), or a first loss ≥ {LOSS_SCALE_FACTOR:g} ln K",
                step=step,
                layers=layers,
                fixes=_size_fixes(at_start),
                values={"rho": float(worst[n]), "global_norm": G},
            )
        ]

    @staticmethod
    def _loss_scale(ev: Evidence) -> tuple[float, str, int] | None:
        k, source = classes(ev)
        if k is None:
            return None
        level = math.log(k)
        for name, scalar in training_losses(ev)[0]:
            if source.startswith("the output size") and not words(name) & CROSS_ENTROPY_WORDS:
                continue  # K from the last layer: only a loss named as a cross-entropy is one over K classes
            values = scalar.values[np.isfinite(scalar.values)]
            if len(values) and values[0] >= LOSS_SCALE_FACTOR * level:
                return float(values[0]), (f"first {name} {fmt(float(values[0]))} = {values[0] / level:.3g}× "
                                           f"ln K = {fmt(level)} (K = {k} from {source})"), int(scalar.steps[0])
        return None


def _size_fixes(at_start: bool) -> tuple[Fix, ...]:
    init = Fix(
        "re-initialise with a signal-preserving scale (Kaiming/He gain √2 for ReLU, Xavier for tanh) or add "
        "normalisation layers",
        "the gradient is already far too large at the first step: the weights' scale is wrong, not the training",
        {"kind": "init"},
    )
    lr = Fix("lower the learning rate 10× and clip the gradient norm at its typical value",
             "the gradient grew during training", {"kind": "lr", "factor": 0.1})
    return (init, lr) if at_start else (lr, init)


RULES = (DepthProfile(), GradientSize())
