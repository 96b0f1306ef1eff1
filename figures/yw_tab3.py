"""yw-tab3: skip / vanilla / skip* MLP 512-256-[256]-10 on CIFAR-10 (document 003, Table 3).

Below paper scale the nets are trained on MNIST instead (see :mod:`analyses.concat_mlp_cifar`); the caption
states the substitution.
"""

from __future__ import annotations

from pathlib import Path

from figures.base import FigureInputs, FigureOutput, chance_check, save_table
from figures.yw_common import caption_for, mlp_table

ID = "yw-tab3"
ANALYSES = ("concat_mlp_cifar",)
NEEDS = {"concat_mlp_cifar": ("scalars/train_acc", "scalars/test_acc")}
TRAINED_NETS = True
CLAIM = (
    "On CIFAR-10 the skip MLP improves on vanilla (val 64.1 / 66.6 % vs 63.2 / 65.8 %) and skip* slightly "
    "more (64.2 / 66.7 %), still not significantly (document 003, Table 3)."
)


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    runs = inputs.runs["concat_mlp_cifar"]
    table, numbers, grid = mlp_table(runs, ("skip", "vanilla", "skipstar"), ID)
    caption = chance_check(runs).annotate(caption_for(runs, inputs.scale, grid), numbers)
    return FigureOutput(save_table(table, out_dir, ID, caption, inputs), caption, numbers, table=table)
