"""yw-tab4: train/validation accuracy (%) of the concatenation-skip CNN vs the vanilla CNN (document 003, Table 4)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from figures.base import FigureInputs, FigureOutput, chance_check, run_classes, save_table
from figures.yw_common import cnn_caption, cnn_rows, convergence_note, difference_note, epoch_accuracies

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
    accs = epoch_accuracies(runs, ("skip", "vanilla"))
    caption = (difference_note(numbers, "skip", "vanilla")
               + convergence_note(accs, "skip", "vanilla", 100 / run_classes(runs[0]))
               + cnn_caption(runs, inputs.scale))
    caption = chance_check(runs).annotate(caption, numbers)
    return FigureOutput(save_table(table, out_dir, ID, caption, inputs), caption, numbers, table=table)
