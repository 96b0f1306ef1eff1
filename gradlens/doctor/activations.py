"""Rules on activation statistics (the ``activation_stats`` probe contract): dead units and saturated units,
per activation module, as a fraction of its units, from the step they appear.

Recorded per module and step: ``dead_fraction`` (units whose output is exactly zero for every sample of the
batch: a ReLU-like unit then passes no gradient for any of them) and ``saturated_fraction`` (units in the flat
tail of a saturating activation for every sample: tanh |y| > 0.99, sigmoid y < 0.01 or > 0.99, GELU input
x < −3, SiLU x < −6; the local slope is then below 2 % of its peak: :mod:`gradlens.metrics.activations`).
The probe sees activation *modules* only: an ``F.relu`` inside a ``forward`` is invisible to it.

Why these numbers: for a unit with random symmetric pre-activations, being zero for all B samples of a batch
has probability 2^−B (1e−10 for B = 32): a sizeable dead fraction is never chance, it is units pushed to the
zero side for every input. Half the units of a layer dead (warning) halves its capacity; 90 % in a layer, or
half of all units, leaves the layer (net) unable to learn (severe).
"""

from __future__ import annotations

import numpy as np

from gradlens.doctor.evidence import Evidence, LayerSeries
from gradlens.doctor.finding import Finding, Fix
from gradlens.doctor.rule import Rule, Unchecked, listed, sustained_columns

UNITS_WARN_FRACTION = 0.5  # dead (or saturated) fraction of a layer at or above: warning
UNITS_SEVERE_FRACTION = 0.9  # ... in one layer, or UNITS_WARN_FRACTION averaged over all layers: severe
UNITS_MIN_RECORDS = 3  # the fraction holds for at least three records (90 % of those since onset) ...
UNITS_MIN_STEPS = 20  # ... spanning at least 20 steps

UNCHECKED = Unchecked(
    "activation rules (dead units, saturation)",
    "no activation statistics were recorded (the activation_stats probe); functional activations (F.relu "
    "inside a forward) are not visible to it",
)


def _affected(series: LayerSeries) -> list[tuple[int, int, float]]:
    """(column, onset record, median fraction since onset) of layers at or above the warning fraction."""
    values = np.where(np.isfinite(series.values), series.values, 0.0)
    onsets = sustained_columns(values >= UNITS_WARN_FRACTION)
    return [(int(i), int(onsets[i]), float(np.median(values[onsets[i]:, i]))) for i in np.flatnonzero(onsets >= 0)
            if len(series) - onsets[i] >= UNITS_MIN_RECORDS
            and series.steps[-1] - series.steps[onsets[i]] >= UNITS_MIN_STEPS]


class _UnitsRule(Rule):
    quantity = ""
    word = ""
    thresholds = {
        "UNITS_WARN_FRACTION": "half of a layer's units gone halves its capacity; random units are all-zero on a "
        "batch with probability 2^-B, so this is never chance",
        "UNITS_SEVERE_FRACTION": "with 90 % of a layer's units (or half of all units) gone the net cannot learn",
        "UNITS_MIN_RECORDS": "three records in a row, so that one odd batch is not a finding",
        "UNITS_MIN_STEPS": "a dead unit stays dead (no input revives it); a net finding its scale has units that "
        "dip below zero for every input for a few steps and come back within ~15",
    }

    def check(self, ev: Evidence) -> list[Finding] | Unchecked:
        series = ev.activations.get(self.quantity)
        if series is None:
            return UNCHECKED
        if not len(series):
            return []
        affected = _affected(series)
        if not affected:
            return []
        last = np.nan_to_num(series.values[-min(len(series), UNITS_MIN_RECORDS):]).mean(axis=0)
        most = float(last.mean())
        severe = max(level for *_, level in affected) >= UNITS_SEVERE_FRACTION or most >= UNITS_WARN_FRACTION
        affected.sort(key=lambda a: -a[2])
        first = min(start for _, start, _ in affected)
        names = [series.layers[i] for i, _, _ in affected]
        kinds = ev.activation_kinds
        shown = listed([f"{series.layers[i]} {level:.0%}" + (f" ({kinds[series.layers[i]]})"
                        if series.layers[i] in kinds else "") + f" from step {int(series.steps[s])}"
                        for i, s, level in affected])
        return [
            Finding(
                self.id,
                "severe" if severe else "warning",
                f"{affected[0][2]:.0%} of the units in {names[0]} are {self.word}"
                + (f" ({len(affected)} layers affected)" if len(affected) > 1 else ""),
                f"{shown}; mean over all {len(series.layers)} activation layers at the end {most:.0%}",
                f"{ev.activation_probe}/{self.quantity} ≥ {UNITS_WARN_FRACTION:.0%} from a record on (90 % of the "
                f"records since, the last included, ≥ {UNITS_MIN_RECORDS} records over ≥ {UNITS_MIN_STEPS} steps); "
                f"severe ≥ {UNITS_SEVERE_FRACTION:.0%} in "
                f"a layer or ≥ {UNITS_WARN_FRACTION:.0%} on average over layers",
                step=int(series.steps[first]),
                layers=tuple(names),
                fixes=self.fixes(ev, at_init=first == 0, level=affected[0][2], layer=names[0]),
                values={"fraction": affected[0][2], "mean_fraction": most},
            )
        ]

    def fixes(self, ev: Evidence, at_init: bool, level: float, layer: str) -> tuple[Fix, ...]:
        raise NotImplementedError


class DeadUnits(_UnitsRule):
    id = "dead_units"
    quantity = "dead_fraction"
    word = "dead (zero for the whole batch)"
    reads = "activation_stats dead_fraction per activation module"
    severity = "warning ≥ 50 % of a layer; severe ≥ 90 % in a layer or ≥ 50 % over all layers"

    def fixes(self, ev: Evidence, at_init: bool, level: float, layer: str) -> tuple[Fix, ...]:
        leaky = Fix(f"use LeakyReLU (or GELU) in {layer}", f"{level:.0%} of its units are dead; a leaky unit "
                    "always passes some gradient", {"kind": "activation", "to": "leaky_relu"})
        if at_init:
            return (Fix("re-initialise: He (Kaiming) weights and zero biases", f"{level:.0%} of the units in {layer} "
                        "are dead from the first step: their pre-activations start below zero for every input",
                        {"kind": "init"}), leaky)
        return (Fix("lower the learning rate 10×", f"the units of {layer} died during training: large updates push "
                    "biases below every input's pre-activation", {"kind": "lr", "factor": 0.1}), leaky)


class SaturatedUnits(_UnitsRule):
    id = "saturated_units"
    quantity = "saturated_fraction"
    word = "saturated (in a flat tail for the whole batch)"
    reads = "activation_stats saturated_fraction per activation module (tanh, sigmoid, GELU, SiLU)"
    severity = "warning ≥ 50 % of a layer; severe ≥ 90 % in a layer or ≥ 50 % over all layers"

    def fixes(self, ev: Evidence, at_init: bool, level: float, layer: str) -> tuple[Fix, ...]:
        structure = Fix(f"normalise the pre-activations of {layer} (LayerNorm/BatchNorm before it) or use a "
                        "non-saturating activation", "a saturated unit's slope is below 2 % of its peak",
                        {"kind": "activation", "to": "relu"})
        if at_init:
            return (Fix("initialise with a smaller scale (Xavier/LeCun for tanh and sigmoid)", f"{level:.0%} of the "
                        f"units in {layer} are saturated from the first step: the pre-activations start too large",
                        {"kind": "init"}), structure)
        return (Fix("lower the learning rate 10×", f"the units of {layer} saturated during training",
                    {"kind": "lr", "factor": 0.1}), structure)


RULES = (DeadUnits(), SaturatedUnits())
