"""yt-tab2: training loss L, cost C and test error E of equivalently initialised nets, plain p_0 = T(r_0) with
decay ‖T⁻¹(p)‖² vs residual r_0 with ‖r‖², float64 on the CPU (document 004, appendix B, Table 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from figures.base import FigureInputs, FigureOutput, chance_check, config, save_table
from figures.yt_common import equivalence_setup, final_metrics, pair, step_losses

ID = "yt-tab2"
ANALYSES = ("equivalence",)
NEEDS = {"equivalence": ("scalars/train_loss", "scalars/epoch_train_loss", "scalars/cost", "scalars/test_acc")}
TRAINED_NETS = True
CLAIM = (
    "Equivalently initialised plain and residual nets trained on the same mini-batches in double precision end "
    "with L, C and E equal up to small rounding-induced discrepancies (document 004, appendix B, Table 2)."
)


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    runs = inputs.runs["equivalence"]
    keys = sorted({(config(r)["depth"], config(r)["seed"]) for r in runs})
    rows = []
    for depth, seed in keys:
        plain, residual = pair(inputs, depth, seed)
        p, r = final_metrics(plain), final_metrics(residual)
        gap = np.abs(step_losses(plain) - step_losses(residual))
        rows.append({"depth": depth, "seed": seed, "PlnNet L": p["L"], "PlnNet C": p["C"], "PlnNet E": p["E"],
                     "ResNet L": r["L"], "ResNet C": r["C"], "ResNet E": r["E"], "|ΔC| final": abs(p["C"] - r["C"]),
                     "max |ΔL| per step": float(gap.max()), "steps": len(gap)})
    table = pd.DataFrame(rows)
    worst = float(table["max |ΔL| per step"].max())
    numbers = {"max |ΔL| over all steps and depths": worst,
               "max |ΔC| final": float(table["|ΔC| final"].max()),
               "max |ΔE| final": float((table["PlnNet E"] - table["ResNet E"]).abs().max())}
    caption = (
        f"Plain nets initialised at p_0 = T(r_0) and trained with the penalty λ‖T⁻¹(p)‖², and residual nets from "
        f"r_0 with λ‖r‖², on the same mini-batches. L: mean loss over the last epoch's mini-batches, C = L + "
        f"penalty, E: test error. The largest per-step loss difference over the whole training is {worst:.2e} "
        f"(float64 rounding; the table's four significant digits agree). " + equivalence_setup(runs, inputs.scale)
    )
    caption = chance_check(runs).annotate(caption, numbers)
    return FigureOutput(save_table(table, out_dir, ID, caption, inputs), caption, numbers, table=table)
