"""yw-tab3: skip / vanilla / skip* MLP 512-256-[256]-10 on CIFAR-10 (document 003, Table 3)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from figures.base import FigureInputs, FigureOutput, save_table
from figures.van_util import split_not_run
from figures.yw_tab1 import DOCUMENT, NAMES, caption_for, mlp_table

ID = "yw-tab3"
ANALYSES = ("concat_mlp_cifar",)
NEEDS = {"concat_mlp_cifar": ()}  # runs may be not-run markers (no CIFAR-10): checked in draw
CLAIM = (
    "On CIFAR-10 the skip MLP improves on vanilla (val 64.1 / 66.6 % vs 63.2 / 65.8 %) and skip* slightly "
    "more (64.2 / 66.7 %), still not significantly (document 003, Table 3)."
)


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    runs, reasons = split_not_run(inputs.runs["concat_mlp_cifar"])
    if runs:
        table, numbers, grid = mlp_table(runs, ("skip", "vanilla", "skipstar"), ID)
        caption = caption_for(runs, inputs.scale, grid, "")
    else:
        rows = [
            {"net": f"{NAMES[v]} (ours)", "status": "not run: no CIFAR-10 under --data-dir (see caption)"}
            for v in ("skip", "vanilla", "skipstar")
        ]
        rows += [
            {"net": f"{NAMES[v]} (document)", "train(3-l)": a, "val(3-l)": b, "train(4-l)": c, "val(4-l)": d}
            for v, (a, b, c, d) in DOCUMENT[ID].items()
        ]
        table = pd.DataFrame(rows)
        table = table.astype(object).where(table.notna(), "—")
        numbers = {"runs": "not run (no CIFAR-10 under --data-dir)"}
        caption = (
            f"Not run at scale {inputs.scale}: CIFAR-10 was not found (" + "; ".join(reasons) + "). The table "
            "lists the document's values only; pass --data-dir with cifar-10-batches-py/ to run it."
        )
    return FigureOutput(save_table(table, out_dir, ID), caption, numbers, table=table)
