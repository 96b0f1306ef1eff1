"""The first non-finite value of a run: which step, which layer or scalar went first, and why it likely did.

Cells count when a recorded value is NaN/±Inf without being missing by design, or when GradStats counted
NaN/Inf entries (``nonfinite > 0``). Gradient records and scalars at a step the AMP gradient scaler skipped
(``step_skipped`` events) are excused: the scaler found those very overflows and did not step (too many skips
are the ``amp_skipped_steps`` rule's).
"""

from __future__ import annotations

import numpy as np

from gradlens.doctor.evidence import Evidence, LayerSeries
from gradlens.doctor.finding import Finding, Fix, fmt
from gradlens.doctor.rule import Rule, Unchecked

GROWTH_BEFORE = 10.0  # G before the first non-finite value above this many times its early median: divergence


def _first_cell(series: dict[str, LayerSeries], probe: str | None, excused: set[int]) -> tuple | None:
    """(step, layer, where, value, layers bad at that step) of the first bad cell over ``series``."""
    best = None
    for name, s in series.items():
        bad = s.nonfinite | ((s.values > 0) if name == "nonfinite" else False)
        if excused:
            bad &= ~np.isin(s.steps, list(excused))[:, None]
        rows = np.flatnonzero(bad.any(axis=1))
        if not len(rows):
            continue
        n = int(rows[0])
        layer = int(np.flatnonzero(bad[n])[0])
        found = (int(s.steps[n]), s.layers[layer], f"{probe}/{name}", float(s.values[n, layer]), int(bad[n].sum()),
                 len(s.layers))
        if best is None or found[0] < best[0]:
            best = found
    return best


class NonFinite(Rule):
    id = "nonfinite"
    reads = "every per-layer record (gradients, update ratios, activations) and every logged scalar"
    severity = "severe: NaN/Inf weights or losses do not recover"
    thresholds = {
        "GROWTH_BEFORE": "a global norm that rose tenfold before the first NaN is a divergence (step size), not "
        "a bad operation",
    }

    def check(self, ev: Evidence) -> list[Finding] | Unchecked:
        excused = ev.skipped_steps()
        cells = [c for c in (
            _first_cell(ev.grads, ev.grad_probe, excused),
            _first_cell({k: v for k, v in ev.ratios.items() if k == "ratio"}, ev.ratio_probe, set()),
            _first_cell(ev.activations, ev.activation_probe, set()),
        ) if c is not None]
        cell = min(cells, key=lambda c: c[0]) if cells else None
        scalar = None
        for name, s in ev.scalars.items():
            bad = np.flatnonzero(~np.isfinite(s.values) & ~np.isin(s.steps, list(excused)))
            if len(bad) and (scalar is None or s.steps[bad[0]] < scalar[0]):
                scalar = (int(s.steps[bad[0]]), name, float(s.values[bad[0]]))
        if cell is None and scalar is None:
            return []
        parts, layers = [], ()
        if cell is not None:
            step, layer, where, value, count, total = cell
            parts.append(f"step {step}, layer {layer}, {where} = {value:g} ({count} of {total} layers then)")
            layers = (layer,)
        if scalar is not None:
            parts.append(f"step {scalar[0]}: scalar {scalar[1]} = {scalar[2]:g}")
        steps = [c[0] for c in (cell, scalar) if c is not None]
        first = min(steps)
        if cell is not None and scalar is not None and cell[0] != scalar[0]:
            went = f"the {'scalar ' + scalar[1] if scalar[0] < cell[0] else 'gradients'} went first"
        elif cell is not None and scalar is not None:
            went = f"scalar {scalar[1]} and the records went together"
        else:
            went = "only " + ("the records" if scalar is None else f"scalar {scalar[1]}") + " went non-finite"
        what = f"{layers[0]}" if cell is not None and (scalar is None or cell[0] <= scalar[0]) else scalar[1]
        return [
            Finding(
                self.id,
                "severe",
                f"non-finite values from step {first} (first in {what})",
                "; ".join(parts) + f"; {went}",
                "any NaN/±Inf record (a missing gradient, nonfinite = -1, is not counted; values at steps the AMP "
                "scaler skipped are excused) or a non-finite logged scalar",
                step=first,
                layers=layers,
                fixes=self._fixes(ev, first, scalar is not None and (cell is None or scalar[0] < cell[0])),
                values={"step": float(first)},
            )
        ]

    @staticmethod
    def _fixes(ev: Evidence, first: int, loss_first: bool) -> tuple[Fix, ...]:
        lower = Fix("lower the learning rate 10× (and clip the gradient norm)", "", {"kind": "lr", "factor": 0.1})
        data = Fix("find the operation that makes NaN: check inputs and the loss for NaN/Inf, log(0), division by "
                   "zero, sqrt at 0; torch.autograd.set_detect_anomaly(True) names it", "", {"kind": "data"})
        found = ev.global_norm()
        if found is not None:
            steps, total = found
            before = total[(steps < first) & np.isfinite(total)]
            if len(before) >= 2:
                early = float(np.median(before[: max(1, min(5, len(before) // 2))]))
                peak = float(before.max())
                if early > 0 and peak >= GROWTH_BEFORE * early:
                    because = f"the global gradient norm rose from {fmt(early)} to {fmt(peak)} before step {first}"
                    return (Fix(lower.action, because, lower.change),
                            Fix(data.action, "if the rate is not the cause", data.change))
                because = f"the global gradient norm stayed near {fmt(early)} up to step {first}: no divergence"
                return (Fix(data.action, because, data.change),
                        Fix(lower.action, "if no operation is at fault", lower.change))
        because = "the loss went non-finite first" if loss_first else "no gradient norm before it was recorded"
        return Fix(data.action, because, data.change), Fix(lower.action, "if no operation is at fault", lower.change)


RULES = (NonFinite(),)
