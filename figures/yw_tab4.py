"""yw-tab4: train/validation accuracy (%) of the concatenation-skip CNN vs the vanilla CNN (document 003, Table 4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from figures.base import FigureInputs, FigureOutput, chance_check, config, describe, final_scalar, save_table

ID = "yw-tab4"
ANALYSES = ("concat_cnn",)
NEEDS = {"concat_cnn": ("scalars/train_acc", "scalars/test_acc")}
TRAINED_NETS = True
CLAIM = (
    "Concatenation skips improve the CNN considerably: val 83.5 % (skip) vs 80.9 % (vanilla) (document 003, Table 4)."
)
DOCUMENT = {"skip": (84.2, 83.5), "vanilla": (81.7, 80.9), "reinforced": (84.9, 84.1)}
NAMES = {"skip": "skip", "vanilla": "vanilla", "reinforced": "vanilla* (reinforced)"}


def cnn_rows(runs: list, variants: tuple[str, ...]) -> tuple[list[dict], dict]:
    """Rows (ours, then the document's) and key numbers for ``variants``: final train/val accuracy in %."""
    rows, numbers = [], {}
    for variant in variants:
        chosen = [r for r in runs if config(r)["variant"] == variant]
        train = 100 * float(np.mean([final_scalar(r, "train_acc") for r in chosen]))
        val = 100 * float(np.mean([final_scalar(r, "test_acc") for r in chosen]))
        parameters = chosen[0].meta["model"]["parameters"]
        rows.append(
            {
                "net": f"{NAMES[variant]} (ours)",
                "train": train,
                "val": val,
                "parameters": parameters,
                "runs": len(chosen),
            }
        )
        numbers[f"{NAMES[variant]}: val %"] = val
        numbers[f"{NAMES[variant]}: train %"] = train
    rows += [{"net": f"{NAMES[v]} (document)", "train": DOCUMENT[v][0], "val": DOCUMENT[v][1]} for v in variants]
    return rows, numbers


def difference_note(numbers: dict, better: str, worse: str) -> str:
    """'<better> − <worse>: ±x points of validation accuracy (document ±y)' from :func:`cnn_rows` numbers."""
    ours = numbers[f"{NAMES[better]}: val %"] - numbers[f"{NAMES[worse]}: val %"]
    document = DOCUMENT[better][1] - DOCUMENT[worse][1]
    agrees = "same sign as" if ours * document > 0 else "opposite sign to"
    return (f"{NAMES[better]} − {NAMES[worse]}: {ours:+.2f} points of validation accuracy ({agrees} the "
            f"document's {document:+.1f}). ")


def cnn_caption(runs: list, scale: str) -> str:
    """Data, protocol and scale of the CNN tables."""
    first = config(runs[0])
    data = (
        ""
        if first["dataset"] == "cifar10"
        else (
            f"Data: {first['dataset']} (1 channel) stands in for the document's CIFAR-10, which is not available "
            "here; the held-out split is its test subset. "
        )
    )
    return (
        f"{data}Train = running accuracy over the last epoch's mini-batches, "
        "val = accuracy on the held-out split "
        f"after the last epoch, in %, mean over runs. SGD η = {first['lr']}, momentum {first['momentum']}, batch "
        f"{first['batch_size']}, {first['epochs']} epochs (the document gives no optimiser settings). "
        f"{describe(runs, scale)}"
    )


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    runs = inputs.runs["concat_cnn"]
    rows, numbers = cnn_rows(runs, ("skip", "vanilla"))
    table = pd.DataFrame(rows)
    table = table.astype(object).where(table.notna(), "—")
    caption = difference_note(numbers, "skip", "vanilla") + cnn_caption(runs, inputs.scale)
    caption = chance_check(runs).annotate(caption, numbers)
    return FigureOutput(save_table(table, out_dir, ID, caption, inputs), caption, numbers, table=table)
