"""yw-tab1: train/validation accuracy (%) of the dense-skip vs vanilla MLP, 3- and 4-layer (document 003, Table 1)."""

from __future__ import annotations

from pathlib import Path

from figures.base import FigureInputs, FigureOutput, chance_check, save_table
from figures.yw_common import caption_for, mlp_table

ID = "yw-tab1"
ANALYSES = ("concat_mlp",)
NEEDS = {"concat_mlp": ("scalars/train_acc", "scalars/test_acc")}
TRAINED_NETS = True
CLAIM = (
    "On EMNIST letters the skip MLP is slightly better than vanilla with 3 layers (val 89.0 vs 88.6 %) and "
    "worse with 4 layers (89.1 vs 90.0 %): dense skips give no significant gain (document 003, Table 1)."
)


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    runs = inputs.runs["concat_mlp"]
    table, numbers, grid = mlp_table(runs, ("skip", "vanilla"), ID)
    caption = chance_check(runs).annotate(caption_for(runs, inputs.scale, grid), numbers)
    return FigureOutput(save_table(table, out_dir, ID, caption, inputs), caption, numbers, table=table)
