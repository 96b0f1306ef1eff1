"""yw-tab1: train/validation accuracy (%) of the dense-skip vs vanilla MLP, 3- and 4-layer (document 003, Table 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from figures.base import FigureInputs, FigureOutput, chance_check, config, describe, final_scalar, save_table
from figures.van_util import values_of

ID = "yw-tab1"
ANALYSES = ("concat_mlp",)
NEEDS = {"concat_mlp": ("scalars/train_acc", "scalars/test_acc")}
TRAINED_NETS = True
CLAIM = (
    "On EMNIST letters the skip MLP is slightly better than vanilla with 3 layers (val 89.0 vs 88.6 %) and "
    "worse with 4 layers (89.1 vs 90.0 %): dense skips give no significant gain (document 003, Table 1)."
)
NAMES = {"skip": "skip", "vanilla": "vanilla", "skipstar": "skip*"}
# document row -> (train 3-l, val 3-l, train 4-l, val 4-l), per table.
DOCUMENT = {
    "yw-tab1": {"skip": (91.0, 89.0, 91.6, 89.1), "vanilla": (90.4, 88.6, 92.0, 90.0)},
    "yw-tab2": {"skipstar": (91.2, 89.4, 92.5, 90.9)},
    "yw-tab3": {
        "skip": (64.9, 64.1, 67.8, 66.6),
        "vanilla": (64.0, 63.2, 66.5, 65.8),
        "skipstar": (64.9, 64.2, 68.0, 66.7),
    },
}


def tuned(runs: list, variant: str, layers: int) -> dict:
    """The weight decay with the best final validation accuracy (mean over seeds; ties: the smaller decay)."""
    chosen = [r for r in runs if config(r)["variant"] == variant and config(r)["layers"] == layers]
    scores = {}
    for wd in values_of(chosen, "weight_decay"):
        group = [r for r in chosen if config(r)["weight_decay"] == wd]
        scores[wd] = (
            100 * float(np.mean([final_scalar(r, "test_acc") for r in group])),
            100 * float(np.mean([final_scalar(r, "train_acc") for r in group])),
            len(group),
        )
    best = max(scores, key=lambda wd: scores[wd][0])
    val, train, seeds = scores[best]
    return {
        "train": train,
        "val": val,
        "wd": best,
        "seeds": seeds,
        "grid": scores,
        "epochs": config(chosen[0])["total_epochs"],
    }


def mlp_table(runs: list, variants: tuple[str, ...], item_id: str) -> tuple[pd.DataFrame, dict, str]:
    """The document's layout (rows: variants then the document's rows) with the tuned weight decays.

    Returns the table, key numbers and the grid sentence for the caption.
    """
    rows, numbers, grid = [], {}, []
    for variant in variants:
        row: dict[str, object] = {"net": f"{NAMES[variant]} (ours)"}
        for layers in values_of(runs, "layers"):
            result = tuned(runs, variant, layers)
            row[f"train({layers}-l)"] = result["train"]
            row[f"val({layers}-l)"] = result["val"]
            row[f"weight decay ({layers}-l)"] = result["wd"]
            row[f"epochs ({layers}-l)"] = result["epochs"]
            numbers[f"{NAMES[variant]} {layers}-layer: val %"] = result["val"]
            numbers[f"{NAMES[variant]} {layers}-layer: train %"] = result["train"]
            grid.append(
                f"{NAMES[variant]} {layers}-l: "
                + ", ".join(f"wd {wd:g} → val {v[0]:.2f}" for wd, v in result["grid"].items())
            )
        rows.append(row)
    for variant, values in DOCUMENT[item_id].items():
        if variant in variants:
            rows.append(
                {
                    "net": f"{NAMES[variant]} (document)",
                    "train(3-l)": values[0],
                    "val(3-l)": values[1],
                    "train(4-l)": values[2],
                    "val(4-l)": values[3],
                }
            )
    table = pd.DataFrame(rows)
    return table.astype(object).where(table.notna(), "—"), numbers, "; ".join(grid)


# the MLP's widths (``arch``) -> the document's dataset for them, with its widths
DOCUMENT_DATA = {
    "emnist": ("emnist_letters", "EMNIST letters (26 classes)", "128-256-[256]"),
    "cifar": ("cifar10", "CIFAR-10 (32×32×3, 10 classes)", "512-256-[256]"),
}


def data_note(runs: list) -> str:
    """Empty when the runs used the document's dataset for their widths, else the substitution sentence."""
    first = config(runs[0])
    dataset, name, widths = DOCUMENT_DATA[first["arch"]]
    if first["dataset"] == dataset:
        return ""
    return (
        f"Substitution: {first['dataset']} (10 digit classes) stands in for the document's "
        f"{name}, which is not available here; the document's hidden widths {widths}, the data's input size and "
        "classes. "
    )


def caption_for(runs: list, scale: str, grid: str) -> str:
    """What the MLP tables say about data, protocol, tuning grid and scale."""
    first = config(runs[0])
    return (
        f"{data_note(runs)}Train = running accuracy over the last epoch's mini-batches, val = accuracy on "
        f"{first['n_val']} training images held out as validation split, both after the last epoch, in %. "
        f"SGD η = {first['lr']}, momentum {first['momentum']}, batch {first['batch_size']}; skip and vanilla "
        f"{first['epochs']} epochs, skip* {first['epochs']} epochs with skips disabled then {first['epochs']} with "
        "skips enabled (skip weights started at zero). The L2 weight decay was tuned on the validation split "
        f"as in the document, grid {values_of(runs, 'weight_decay')}; the table shows each net at its best "
        f"value (validation accuracy per grid value: {grid}). {describe(runs, scale)}"
    )


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    runs = inputs.runs["concat_mlp"]
    table, numbers, grid = mlp_table(runs, ("skip", "vanilla"), ID)
    caption = chance_check(runs).annotate(caption_for(runs, inputs.scale, grid), numbers)
    return FigureOutput(save_table(table, out_dir, ID, caption, inputs), caption, numbers, table=table)
