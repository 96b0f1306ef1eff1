"""``gradlens doctor``: what is wrong with a run, in words, each finding with its evidence and its rule.

``diagnose(run)`` applies every rule the run's records support and returns :class:`Finding` objects; rules
whose data was not recorded say so (severity ``info``) instead of passing silently. The thresholds below are
documented, with their reasons, in ``docs/doctor.md``. ``gradlens doctor`` exits 0 when no finding is
severe, 1 when one is, 2 on bad input.

Notation: for a gradient-statistics probe (GradStats) ``m_ℓ(t)`` is the mean |gradient| of parameter ℓ at
recorded step t, ``G(t) = √(Σ_ℓ ‖g_ℓ(t)‖²)`` the global gradient norm; ``first``/``last`` are the first and
last weight parameters in forward order that had a gradient (embedding tables excluded).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gradlens.loader import Run
from gradlens.report.common import (
    GRADIENT_CLASSES,
    LayerArray,
    events,
    first_nonfinite,
    frozen_parameters,
    last_step,
    layer_array,
    probe_class,
    probes_of_class,
    run_label,
)

SEVERITIES = ("severe", "warning", "info")

# Thresholds (docs/doctor.md explains each).
DEPTH_WARN_DECADES = 3.0  # |log10(m_first / m_last)| at or above: warning
DEPTH_SEVERE_DECADES = 6.0  # ... at or above: severe
TREND_STEADY_DECADES = 0.5  # a change of the depth decades below this over training is called steady
NORM_GROWTH_DECADES = 3.0  # max G over the first records' median: exploding trend
SPIKE_FACTOR = 10.0  # G(t) above this many times the running median of the preceding records: a spike
SPIKE_WINDOW = 20  # preceding finite records in the running median
SPIKE_MIN_HISTORY = 5  # no spike test before this many finite records
DEAD_FRACTION = 0.9  # a layer whose gradient is exactly zero at this fraction of the records (and the last)
RATIO_LOW = 1e-5  # median update-to-weight ratio below: the layer barely moves
RATIO_HIGH = 1e-1  # ... above: updates too large for the weights
RATIO_SEVERE = 1.0  # ... above: each step replaces the weights
SKIPPED_WARN_FRACTION = 0.05  # AMP-skipped optimizer steps above this fraction: warning
LOSS_WINDOW_FRACTION = 0.1  # first/last 10 % of a loss's records compared
LOSS_MIN_DROP = 0.02  # a loss whose final median is not at least 2 % below its initial median: warning
STALE_SECONDS = 300.0  # a running file not flushed for this long: the writer probably stopped


@dataclass(frozen=True)
class Finding:
    """One diagnosis.

    Attributes:
        rule: short identifier of the rule (``vanishing``, ``nonfinite``, ...; see docs/doctor.md).
        severity: ``severe`` (exit status 1), ``warning`` or ``info``.
        title: what is wrong, in words.
        evidence: the steps, layers and values that show it.
        threshold: the rule that fired, with its numbers.
    """

    rule: str
    severity: str
    title: str
    evidence: str
    threshold: str

    def lines(self) -> list[str]:
        """The finding as indented text lines (title, evidence, rule)."""
        return [
            f"  {self.severity.upper():<7} {self.title}",
            f"          evidence: {self.evidence}",
            f"          rule: {self.threshold}",
        ]


def _g(value: float) -> str:
    return f"{value:.3g}"


def _weight_rows(run: Run, array: LayerArray, embeddings: bool = False) -> list[int]:
    """Columns of weight parameters (names ending in ``weight`` or naming a layer), embeddings excluded
    unless ``embeddings``."""
    layer_names = set(run.layers["name"]) if len(run.layers) else set()
    names = array.layers
    weights = [i for i, n in enumerate(names) if n.endswith("weight") or n in layer_names]
    rows = weights or list(range(len(names)))
    kept = [i for i in rows if embeddings or "embed" not in names[i].lower()]
    return kept or rows


def _gradient_probe(run: Run) -> str | None:
    probes = probes_of_class(run, GRADIENT_CLASSES)
    for probe in probes:
        quantities = run.quantities(probe)
        if "mean_abs" in quantities or "norm" in quantities:
            return probe
    return None


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


MAX_DEPTH_RECORDS = 200  # records used by the depth rule (evenly spread): the pairwise slopes cost K² each


def _depth_findings(run: Run, probe: str) -> list[Finding]:
    """Vanishing/exploding: decades between the first and the last weight's mean |g|, and their trend."""
    quantity = "mean_abs" if "mean_abs" in run.quantities(probe) else "norm"
    array = layer_array(run, probe, quantity)
    rows = [i for i in _weight_rows(run, array) if not array.no_grad[:, i].all()]
    if len(rows) < 2 or len(array.steps) == 0:
        return []
    values = array.values[:, rows]
    usable = np.isfinite(values) & (values > 0)
    decades, at = [], []
    records = np.unique(np.linspace(0, len(array.steps) - 1, MAX_DEPTH_RECORDS).round().astype(int))
    for n in records:
        columns = np.flatnonzero(usable[n])
        if len(columns) >= 2:
            first, last = columns[0], columns[-1]
            decades.append(depth_decades(np.log10(values[n, columns])))
            at.append((int(array.steps[n]), rows[first], rows[last], values[n, first], values[n, last]))
    if not decades:
        return []
    median = float(np.median(decades))
    size = abs(median)
    if size < DEPTH_WARN_DECADES:
        return []
    kind = "vanishing" if median < 0 else "exploding"
    severity = "severe" if size >= DEPTH_SEVERE_DECADES else "warning"

    def point(k: int) -> str:
        step, first, last, a, b = at[k]
        return (
            f"step {step}: {array.layers[first]} {_g(a)}, {array.layers[last]} {_g(b)} "
            f"(fit over {len(rows)} weights {decades[k]:+.1f} decades)"
        )

    trend = decades[-1] - decades[0]
    direction = "steady" if abs(trend) < TREND_STEADY_DECADES else "worsening" if trend * median > 0 else "improving"
    return [
        Finding(
            kind,
            severity,
            f"{kind} gradients: the first layer's {quantity.replace('_', ' ')} gradient is "
            f"{_g(10**median)} of the last layer's (median over {len(decades)} records, {median:+.1f} decades)",
            f"{point(0)}; {point(len(at) - 1)}; trend over training {trend:+.1f} decades ({direction})",
            f"|median over records of the decades between first and last layer on a Theil–Sen line through "
            f"log10 m_ℓ| ≥ {DEPTH_WARN_DECADES:g}: warning, ≥ {DEPTH_SEVERE_DECADES:g}: severe "
            f"({probe}/{quantity}, weights only, embeddings excluded)",
        )
    ]


def _global_norm(run: Run, probe: str) -> tuple[np.ndarray, np.ndarray, LayerArray] | None:
    if "norm" not in run.quantities(probe):
        return None
    array = layer_array(run, probe, "norm")
    finite = np.isfinite(array.values)
    total = np.sqrt((np.where(finite, array.values, 0.0) ** 2).sum(axis=1))
    ok = ~array.nonfinite.any(axis=1)
    return array.steps, np.where(ok, total, np.nan), array


def _norm_findings(run: Run, probe: str) -> list[Finding]:
    """Spikes of G(t) against its running median, and an exploding trend of G over training."""
    found = _global_norm(run, probe)
    if found is None:
        return []
    steps, total, array = found
    out = []
    finite_index = np.flatnonzero(np.isfinite(total) & (total > 0))
    spikes = []
    for k, index in enumerate(finite_index):
        if k < SPIKE_MIN_HISTORY:
            continue
        history = total[finite_index[max(0, k - SPIKE_WINDOW) : k]]
        median = float(np.median(history))
        if median > 0 and total[index] > SPIKE_FACTOR * median:
            layer = array.layers[int(np.nanargmax(np.where(np.isfinite(array.values[index]), array.values[index], -1)))]
            spikes.append((int(steps[index]), float(total[index]), median, layer))
    if spikes:
        shown = "; ".join(
            f"step {s}: G = {_g(v)} vs running median {_g(m)} ({v / m:.0f}×, largest in {layer})"
            for s, v, m, layer in spikes[:5]
        )
        more = f"; and {len(spikes) - 5} more" if len(spikes) > 5 else ""
        out.append(
            Finding(
                "spike",
                "warning",
                f"gradient-norm spikes at {len(spikes)} recorded step(s)",
                shown + more,
                f"G(t) > {SPIKE_FACTOR:g} × median of the preceding {SPIKE_WINDOW} finite records "
                f"(after {SPIKE_MIN_HISTORY}); G = √(Σ_ℓ ‖g_ℓ‖²) from {probe}/norm",
            )
        )
    if len(finite_index) >= 2:
        start = float(np.median(total[finite_index[:SPIKE_MIN_HISTORY]]))
        peak_index = finite_index[int(np.argmax(total[finite_index]))]
        growth = math.log10(total[peak_index] / start) if start > 0 else 0.0
        if growth >= NORM_GROWTH_DECADES:
            out.append(
                Finding(
                    "exploding_trend",
                    "warning",
                    f"the global gradient norm grew by {growth:.1f} decades during training",
                    f"median G over the first {min(SPIKE_MIN_HISTORY, len(finite_index))} records {_g(start)}; "
                    f"G = {_g(float(total[peak_index]))} at step {int(steps[peak_index])}",
                    f"log10(max G / median G of the first {SPIKE_MIN_HISTORY} records) ≥ {NORM_GROWTH_DECADES:g}",
                )
            )
    return out


def _dead_findings(run: Run, probe: str) -> list[Finding]:
    """Layers whose gradient is exactly zero (dead), and parameters that never received a gradient."""
    out = []
    quantities = run.quantities(probe)
    if "nonfinite" in quantities:
        array = layer_array(run, probe, "nonfinite")
        never = [array.layers[i] for i in range(len(array.layers)) if array.no_grad[:, i].all()]
        sometimes = [
            (array.layers[i], int(array.no_grad[:, i].sum()))
            for i in range(len(array.layers))
            if array.no_grad[:, i].any() and not array.no_grad[:, i].all()
        ]
        if never:
            out.append(
                Finding(
                    "no_gradient",
                    "warning",
                    f"{len(never)} parameter(s) never received a gradient (unused in the forward, detached, "
                    "or outside the loss)",
                    f"{', '.join(never[:10])}{' ...' if len(never) > 10 else ''}: .grad was None at all "
                    f"{len(array.steps)} records",
                    f"{probe}/nonfinite = -1 (no .grad) at every record",
                )
            )
        if sometimes:
            out.append(
                Finding(
                    "no_gradient",
                    "info",
                    f"{len(sometimes)} parameter(s) had no gradient at some records",
                    ", ".join(f"{name} ({count} of {len(array.steps)})" for name, count in sometimes[:10]),
                    f"{probe}/nonfinite = -1 (no .grad) at some records",
                )
            )
    measure = "max_abs" if "max_abs" in quantities else ("norm" if "norm" in quantities else None)
    if measure is not None:
        array = layer_array(run, probe, measure)
        zero = (array.values == 0) & ~array.no_grad
        dead = [
            (array.layers[i], int(zero[:, i].sum()))
            for i in range(len(array.layers))
            if len(array.steps) and zero[-1, i] and zero[:, i].mean() >= DEAD_FRACTION
        ]
        if dead:
            out.append(
                Finding(
                    "dead",
                    "warning",
                    f"{len(dead)} dead layer(s): their gradient is exactly zero",
                    ", ".join(
                        f"{name} (zero at {count} of {len(array.steps)} records, including the last)"
                        for name, count in dead[:10]
                    ),
                    f"{probe}/{measure} == 0 at ≥ {DEAD_FRACTION:.0%} of the records and at the last",
                )
            )
    return out


def _frozen_findings(run: Run) -> list[Finding]:
    frozen = frozen_parameters(run)
    if not frozen:
        return []
    names = [str(p.get("name")) for p in frozen]
    count = sum(int(p.get("numel", 0) or 0) for p in frozen)
    return [
        Finding(
            "frozen",
            "info",
            f"{len(names)} frozen parameter(s) ({count} values) are not trained and not measured",
            ", ".join(names[:10]) + (" ..." if len(names) > 10 else ""),
            'meta["parameters"] lists them with trainable = False (requires_grad was False)',
        )
    ]


def _nonfinite_findings(run: Run) -> list[Finding]:
    probe_cell, scalar = first_nonfinite(run)
    out = []
    if probe_cell is not None:
        evidence = f"step {probe_cell.step}, layer {probe_cell.where}, {probe_cell.quantity} = {probe_cell.value:g}"
        probe = probe_cell.quantity.split("/", 1)[0]
        if "nonfinite" in run.quantities(probe) and run.quantities(probe)["nonfinite"].axes == ("layer",):
            counts = layer_array(run, probe, "nonfinite")
            row = int(np.searchsorted(counts.steps, probe_cell.step))
            entries = counts.values[row, counts.layers.index(probe_cell.where)]
            layers = int((counts.values[row] > 0).sum())
            if entries > 0:
                evidence += f" ({entries:g} NaN/Inf entries; {layers} of {len(counts.layers)} layers affected then)"
        out.append(
            Finding(
                "nonfinite",
                "severe",
                f"first non-finite value at step {probe_cell.step} in {probe_cell.where}",
                evidence,
                "any NaN/±Inf record (a missing gradient, nonfinite = -1, does not count) or nonfinite count > 0",
            )
        )
    if scalar is not None:
        out.append(
            Finding(
                "nonfinite_scalar",
                "severe",
                f"logged scalar {scalar.where!r} is non-finite from step {scalar.step}",
                f"step {scalar.step}: {scalar.where} = {scalar.value:g}",
                "a logged scalar that is NaN or ±Inf",
            )
        )
    return out


def _update_ratio_findings(run: Run) -> list[Finding]:
    probes = [p for p in probes_of_class(run, ("UpdateRatio",)) if "ratio" in run.quantities(p)]
    if not probes:
        return [
            Finding(
                "update_ratio",
                "info",
                "update-to-weight ratios not recorded",
                "no UpdateRatio probe in this run",
                "record gradlens.probes.UpdateRatio to check ‖Δw‖/‖w‖ per layer",
            )
        ]
    out = []
    for probe in probes:
        array = layer_array(run, probe, "ratio")
        weights = set(_weight_rows(run, array, embeddings=True))
        finite = np.where(np.isfinite(array.values) & ~array.missing, array.values, np.nan)
        with np.errstate(all="ignore"):
            medians = np.array([np.nanmedian(c) if np.isfinite(c).any() else np.nan for c in finite.T])
        checked = [(array.layers[i], m) for i, m in enumerate(medians) if i in weights and np.isfinite(m)]
        low = [(name, m) for name, m in checked if m < RATIO_LOW]
        high = [(name, m) for name, m in checked if m > RATIO_HIGH]
        for which, rows, word in (("low", low, "barely move"), ("high", high, "change too fast")):
            if not rows:
                continue
            severe = which == "high" and any(m > RATIO_SEVERE for _, m in rows)
            out.append(
                Finding(
                    f"update_ratio_{which}",
                    "severe" if severe else "warning",
                    f"{len(rows)} layer(s) {word}: median update-to-weight ratio out of range",
                    ", ".join(f"{name} {_g(m)}" for name, m in rows[:10])
                    + f" (median over {len(array.steps)} records)",
                    f"median ‖Δw‖/‖w‖ of a weight < {RATIO_LOW:g} or > {RATIO_HIGH:g} (severe > {RATIO_SEVERE:g}); "
                    f"typical SGD/Adam ≈ 1e-3; biases and ratios over ‖w‖ = 0 not judged ({probe}/ratio)",
                )
            )
    return out


def _event_findings(run: Run) -> list[Finding]:
    frame = events(run)
    if frame is None:
        return [
            Finding(
                "events",
                "info",
                "probe errors and skipped steps not checked",
                "this gradlens cannot read run events",
                "needs Run.events()",
            )
        ]
    if len(frame) == 0:
        return []
    out = []
    for kind, severity, word in (
        ("probe_error", "warning", "probe errors"),
        ("probe_disabled", "warning", "probes switched off"),
    ):
        rows = frame[frame["kind"] == kind]
        if len(rows):
            by_source = rows.groupby("source", sort=False)
            evidence = "; ".join(
                f"{source}: {len(group)} at steps {', '.join(str(int(s)) for s in group['step'].iloc[:5])}"
                f"{' ...' if len(group) > 5 else ''} — {group['message'].iloc[0]}"
                for source, group in by_source
            )
            out.append(Finding(kind, severity, f"{len(rows)} {word}", evidence, f"events of kind {kind!r}"))
    skipped = frame[frame["kind"] == "step_skipped"]
    if len(skipped):
        last = last_step(run)
        total = (last + 1) if last is not None else len(skipped)
        fraction = len(skipped) / max(total, 1)
        out.append(
            Finding(
                "step_skipped",
                "warning" if fraction > SKIPPED_WARN_FRACTION else "info",
                f"{len(skipped)} optimizer step(s) skipped by the AMP gradient scaler ({fraction:.1%} of the steps)",
                "steps "
                + ", ".join(str(int(s)) for s in skipped["step"].iloc[:10])
                + (" ..." if len(skipped) > 10 else ""),
                f"step_skipped events; warning above {SKIPPED_WARN_FRACTION:.0%} of the steps",
            )
        )
    warnings_ = frame[frame["kind"] == "warning"]
    if len(warnings_):
        out.append(
            Finding(
                "warning_event",
                "info",
                f"{len(warnings_)} warning(s) recorded during the run",
                "; ".join(f"step {int(r.step)} {r.source}: {r.message}" for r in warnings_.head(5).itertuples()),
                "events of kind 'warning'",
            )
        )
    return out


def _loss_findings(run: Run) -> list[Finding]:
    """Loss-like scalars (name contains ``loss``) whose final level is not below their initial level."""
    scalars = run.scalars()
    flat = []
    for name in dict.fromkeys(scalars["name"]):
        if "loss" not in name.lower():
            continue
        values = scalars[scalars["name"] == name]["value"].to_numpy()
        values = values[np.isfinite(values)]
        if len(values) < 4:
            continue
        window = max(1, int(round(LOSS_WINDOW_FRACTION * len(values))))
        start, end = float(np.median(values[:window])), float(np.median(values[-window:]))
        if end > start * (1 - LOSS_MIN_DROP):
            flat.append(f"{name}: {_g(start)} → {_g(end)} (medians of the first/last {window} of {len(values)})")
    if not flat:
        return []
    return [
        Finding(
            "loss_not_decreasing",
            "warning",
            f"the loss did not decrease ({len(flat)} loss scalar(s))",
            "; ".join(flat),
            f"final median not at least {LOSS_MIN_DROP:.0%} below the initial median "
            f"(first/last {LOSS_WINDOW_FRACTION:.0%} of the finite records, at least 4 records)",
        )
    ]


def _science_findings(run: Run) -> list[Finding]:
    """What the σ and cushion probes say, stated without a pass/fail threshold (info)."""
    out = []
    for probe in run.probes:
        cls = probe_class(run, probe)
        quantities = run.quantities(probe)
        if cls == "DominantFlow" and "sigma" in quantities:
            array = layer_array(run, probe, "sigma")
            last = array.values[-1] if len(array.steps) else np.zeros(0)
            if np.isfinite(last).any():
                low = int(np.nanargmin(last))
                out.append(
                    Finding(
                        "sigma",
                        "info",
                        f"σ at the last record (step {int(array.steps[-1])}) ranges "
                        f"{_g(np.nanmin(last))}–{_g(np.nanmax(last))}",
                        f"lowest at {array.layers[low]}; first layer {_g(last[0])}, last layer {_g(last[-1])}",
                        f"{probe}/sigma (fraction of channels with a dominant gradient flow; no threshold)",
                    )
                )
        if cls in ("LayerCushion", "InterlayerCushion") and "min" in quantities:
            array = layer_array(run, probe, "min")
            last = array.values[-1] if len(array.steps) else np.zeros(0)
            if np.isfinite(last).any():
                low = int(np.nanargmin(last))
                out.append(
                    Finding(
                        "cushion",
                        "info",
                        f"smallest cushion at the last record (step {int(array.steps[-1])}): {_g(last[low])} "
                        f"at {array.layers[low]}",
                        "per-layer minimum over the probe batch: "
                        + ", ".join(f"{name} {_g(v)}" for name, v in list(zip(array.layers, last, strict=True))[:8]),
                        f"{probe}/min (Arora et al.'s cushion; no threshold)",
                    )
                )
    return out


def _status_findings(run: Run, now: float | None = None) -> list[Finding]:
    status = run.status
    if status == "failed":
        return [
            Finding(
                "status",
                "warning",
                "the run ended with an exception (status failed)",
                f"/run/status = {status}",
                "status 'failed' is written when training raised",
            )
        ]
    if status == "running":
        last = run.last_flush
        age = None if last is None else (now or time.time()) - last
        if age is not None and age > STALE_SECONDS:
            return [
                Finding(
                    "status",
                    "warning",
                    f"the run is not finished and stopped flushing {age:.0f} s ago",
                    f"/run/status = running, last flush {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(last))} UTC",
                    f"running and no flush for more than {STALE_SECONDS:g} s: the writer probably died",
                )
            ]
        return [
            Finding(
                "status",
                "info",
                "the run is still being written",
                "/run/status = running",
                "findings cover the records committed so far",
            )
        ]
    return []


def diagnose(run: Run) -> list[Finding]:
    """Every finding for ``run``, most severe first (then in rule order)."""
    findings: list[Finding] = []
    findings += _nonfinite_findings(run)
    probe = _gradient_probe(run)
    if probe is None:
        findings.append(
            Finding(
                "gradients",
                "info",
                "gradient rules not checked: no gradient statistics recorded",
                f"probes: {', '.join(run.probes) or 'none'}",
                "vanishing/exploding, spikes and dead layers need a GradStats probe",
            )
        )
    else:
        findings += _depth_findings(run, probe)
        findings += _norm_findings(run, probe)
        findings += _dead_findings(run, probe)
    findings += _frozen_findings(run)
    findings += _update_ratio_findings(run)
    findings += _event_findings(run)
    findings += _loss_findings(run)
    findings += _science_findings(run)
    findings += _status_findings(run)
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))


def healthy(findings: Sequence[Finding]) -> bool:
    """True when no finding is severe or a warning."""
    return all(f.severity == "info" for f in findings)


def format_findings(run: Run, findings: Sequence[Finding]) -> str:
    """The text ``gradlens doctor`` prints for one run."""
    counts = {s: sum(f.severity == s for f in findings) for s in SEVERITIES}
    verdict = "healthy" if healthy(findings) else ", ".join(f"{n} {s}" for s, n in counts.items() if n and s != "info")
    lines = [f"{run.path} ({run_label(run)}): {verdict}"]
    for finding in findings:
        lines += finding.lines()
    return "\n".join(lines)


def doctor(paths: Sequence[str]) -> tuple[str, int]:
    """Diagnose every run; returns the text and the exit status (1 when any finding is severe, else 0).

    Raises:
        FileNotFoundError, ValueError: a path is not a readable gradlens run (the CLI exits 2).
    """
    from gradlens.loader import load

    runs = [load(path) for path in paths]
    texts, severe = [], False
    for run in runs:
        findings = diagnose(run)
        severe |= any(f.severity == "severe" for f in findings)
        texts.append(format_findings(run, findings))
    return "\n\n".join(texts), int(severe)
