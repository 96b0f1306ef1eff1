"""yw-tab2: skip* — vanilla training to convergence, then skips enabled and training continued (document 003,
Table 2), next to the skip and vanilla nets of yw-tab1."""

from __future__ import annotations

from pathlib import Path

from figures.base import FigureInputs, FigureOutput, chance_check, save_table
from figures.yw_common import caption_for, mlp_table

ID = "yw-tab2"
ANALYSES = ("concat_mlp",)
NEEDS = {"concat_mlp": ("scalars/train_acc", "scalars/test_acc")}
TRAINED_NETS = True
CLAIM = (
    "Training the vanilla net first and then enabling the skips (skip*) beats vanilla with both 3 and 4 "
    "layers (val 89.4 / 90.9 % vs 88.6 / 90.0 %), but not significantly (document 003, Table 2)."
)


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    runs = inputs.runs["concat_mlp"]
    table, numbers, grid = mlp_table(runs, ("skipstar", "vanilla", "skip"), ID)
    caption = chance_check(runs).annotate(caption_for(runs, inputs.scale, grid), numbers)
    return FigureOutput(save_table(table, out_dir, ID, caption, inputs), caption, numbers, table=table)
