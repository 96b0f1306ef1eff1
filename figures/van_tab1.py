"""van-tab1: test error (%) of the pre-activation nets, best and mean ± sd over runs (document 002, Table 1)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from figures.base import FigureInputs, FigureOutput, chance_check, config, describe, final_scalar, save_table, values_of
from figures.van_common import LABELS, mean_sd

ID = "van-tab1"
ANALYSES = ("van_preact",)
NEEDS = {"van_preact": ("scalars/test_acc",)}
TRAINED_NETS = True
CLAIM = (
    "VAN does not beat ResNets but beats Highway networks at similar depth; VAN and VAN(λ=0) are best at "
    "26 layers (CIFAR-10: VAN 26 6.08 (6.35 ± 0.21) %, VAN(λ=0) 26 6.29 (6.40 ± 0.16) %) (document 002, "
    "Table 1)."
)
# (variant, depth) -> document's test error % "best (mean ± sd)" on (CIFAR-10, CIFAR-100).
DOCUMENT = {
    ("van0", 26): ("6.29 (6.40 ± 0.16)", "27.04 (27.42 ± 0.26)"),
    ("van0", 34): ("6.28 (6.45 ± 0.14)", "26.46 (26.81 ± 0.31)"),
    ("van", 18): ("6.23 (6.49 ± 0.16)", "28.20 (28.42 ± 0.36)"),
    ("van", 26): ("6.08 (6.35 ± 0.21)", "27.70 (28.01 ± 0.39)"),
}


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    runs = inputs.runs["van_preact"]
    rows = []
    for dataset in values_of(runs, "dataset"):
        for variant in LABELS:
            chosen = [r for r in runs if config(r)["dataset"] == dataset and config(r)["variant"] == variant]
            for depth in values_of(chosen, "depth") if chosen else []:
                errors = [100 * (1 - final_scalar(r, "test_acc")) for r in chosen if config(r)["depth"] == depth]
                mean, sd = mean_sd(errors)
                document = DOCUMENT.get((variant, depth), ("—", "—"))
                rows.append(
                    {
                        "data": dataset,
                        "architecture": LABELS[variant],
                        "layers": depth,
                        "best error %": min(errors),
                        "mean error %": mean,
                        "sd %": sd,
                        "runs": len(errors),
                        "document CIFAR-10": document[0],
                        "document CIFAR-100": document[1],
                    }
                )
    table = pd.DataFrame(rows)
    numbers = {f"{r['data']} {r['architecture']} {r['layers']}: mean error %": r["mean error %"] for r in rows}
    substitute = [d for d in values_of(runs, "dataset") if d not in ("cifar10", "cifar100")]
    caption = (
        "Test error (%) after the last epoch: best over runs and mean ± sd (sample sd; NaN for one run), every "
        "variant and depth; the document's CIFAR values are given for the rows it reports (its other rows, "
        "Highway, DiracNet, ELU, Wide ResNet, DenseNet, are literature values and not rerun). "
        + (
            f"Data {', '.join(substitute)} stands in for CIFAR-10/100 at this scale, so the numbers are not "
            "comparable to the document's columns. "
            if substitute
            else ""
        )
        + describe(runs, inputs.scale)
    )
    caption = chance_check(runs).annotate(caption, numbers)
    return FigureOutput(save_table(table, out_dir, ID, caption, inputs), caption, numbers, table=table)
