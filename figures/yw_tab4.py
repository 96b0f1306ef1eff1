"""yw-tab4: train/validation accuracy (%) of the concatenation-skip CNN vs the vanilla CNN (document 003, Table 4)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from figures.base import FigureInputs, FigureOutput, chance_check, save_table
from figures.yw_common import cnn_caption, cnn_rows, difference_note

ID = "yw-tab4"
ANALYSES = ("concat_cnn",)
NEEDS = {"concat_cnn": ("scalars/train_acc", "scalars/test_acc")}
TRAINED_NETS = True
CLAIM = (
    "Concatenation skips improve the CNN considerably: val 83.5 % (skip) vs 80.9 % (vanilla) (document 003, Table 4)."
)


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    runs = inputs.runs["concat_cnn"]
    rows, numbers = cnn_rows(runs, ("skip", "vanilla"))
    table = pd.DataFrame(rows)
    table = table.astype(object).where(table.notna(), "—")
    caption = difference_note(numbers, "skip", "vanilla") + cnn_caption(runs, inputs.scale)
    caption = chance_check(runs).annotate(caption, numbers)
    return FigureOutput(save_table(table, out_dir, ID, caption, inputs), caption, numbers, table=table)
