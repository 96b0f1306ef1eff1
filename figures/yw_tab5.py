"""yw-tab5: the reinforced vanilla CNN (layers 4, 5 widened to 96, 7, 8 to 224) and its training-time ratio to the
skip CNN, measured interleaved on this machine (document 003, Table 5 and its analysis: about 2×)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from figures.base import FigureInputs, FigureOutput, chance_check, config, run_classes, save_table
from figures.yw_common import cnn_caption, cnn_rows, convergence_note, difference_note, epoch_accuracies

ID = "yw-tab5"
ANALYSES = ("concat_cnn", "concat_cnn_timing")
NEEDS = {
    "concat_cnn": ("scalars/train_acc", "scalars/test_acc"),
    "concat_cnn_timing": ("variants", "seconds_per_step", "parameters", "forward_macs"),
}
TRAINED_NETS = True
CLAIM = (
    "The reinforced vanilla CNN is slightly better than the skip CNN (val 84.1 vs 83.5 %) but its training "
    "takes nearly 2× as long (document 003, Table 5 and its analysis)."
)


def time_ratios(timing) -> dict[str, float]:
    """Median seconds per training step of every variant, from the interleaved rounds."""
    variants = [str(v) for v in timing["variants"]]
    return {v: float(np.median(timing["seconds_per_step"][:, i])) for i, v in enumerate(variants)}


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    runs = inputs.runs["concat_cnn"]
    (timing,) = inputs.runs["concat_cnn_timing"]
    rows, numbers = cnn_rows(runs, ("reinforced", "skip", "vanilla"))
    seconds = time_ratios(timing)
    for row in rows:
        variant = {
            "vanilla* (reinforced) (ours)": "reinforced",
            "skip (ours)": "skip",
            "vanilla (ours)": "vanilla",
        }.get(row["net"])
        if variant is not None:
            row["s / step"] = seconds[variant]
            row["time ratio to skip"] = seconds[variant] / seconds["skip"]
    rows[3]["time ratio to skip"] = 2.0  # the document's "nearly 2 times" for the reinforced net
    table = pd.DataFrame(rows)
    table = table.astype(object).where(table.notna(), "—")
    ratio = seconds["reinforced"] / seconds["skip"]
    numbers["time ratio reinforced / skip (median s per step)"] = ratio
    numbers["time ratio reinforced / skip (document)"] = "≈ 2"
    tconf = config(timing)
    parameters = dict(zip([str(v) for v in timing["variants"]], timing["parameters"].tolist(), strict=True))
    numbers["parameter ratio reinforced / skip"] = parameters["reinforced"] / parameters["skip"]
    macs = dict(zip([str(v) for v in timing["variants"]], timing["forward_macs"].tolist(), strict=True))
    numbers["forward MAC ratio reinforced / skip"] = macs["reinforced"] / macs["skip"]
    accs = epoch_accuracies(runs, ("reinforced", "skip", "vanilla"))
    caption = (
        difference_note(numbers, "reinforced", "skip")
        + convergence_note(accs, "reinforced", "skip", 100 / run_classes(runs[0]))
        + cnn_caption(runs, inputs.scale)
        + f" Time: median seconds per SGD step (forward + backward + update, batch {tconf['batch_size']}, "
        f"{tconf['dataset']} shape, {int(timing['threads'])} torch thread(s)) over {tconf['rounds']} interleaved "
        f"rounds of {tconf['steps']} steps per net, the order rotated each round, in one process: reinforced / "
        f"skip = {ratio:.2f} (document: nearly 2); parameters {parameters['reinforced']:,} vs "
        f"{parameters['skip']:,}; multiply-accumulates per image {macs['reinforced']:,} vs {macs['skip']:,} "
        f"(ratio {macs['reinforced'] / macs['skip']:.2f}), the compute ratio a step's time approaches when the "
        "arithmetic dominates (a busy or overhead-bound CPU need not show it). "
        "The document's row for the ratio is its prose claim, not a measured table value."
    )
    caption = chance_check(runs).annotate(caption, numbers)
    return FigureOutput(save_table(table, out_dir, ID, caption, inputs), caption, numbers, table=table)
