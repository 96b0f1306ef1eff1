"""sc-fig7: accuracy with a single vs multiple short circuits per stage, several backbone depths (document 000,
section 5.3, Figure 7)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from figures.base import FigureInputs, FigureOutput, describe, save_figure
from figures.sc_common import final_accuracies, grouped_bars, main_runs, sc_resnet_defaults

ID = "sc-fig7"
ANALYSES = ("sc_resnet",)
NEEDS = {"sc_resnet": ("scalars/test_acc",)}
CLAIM = (
    "Multiple SC connections do not always help: they hurt SCResNet20, barely change SCResNet32, and help the "
    "deeper models more than a single SC (document 000, Figure 7)."
)


def series(inputs: FigureInputs) -> tuple[list[int], dict[str, list[list[float]]], list]:
    """Depths, accuracies per bar series and depth, and the runs used."""
    defaults = sc_resnet_defaults(inputs.scale)
    depths = list(defaults["ablation_depths"])
    out: dict[str, list[list[float]]] = {"ResNet": [], "SC single (stage end)": [], "SC multiple (every block)": []}
    used = []
    for depth in depths:
        multiple = inputs.of(
            "sc_resnet",
            depth=depth,
            sc=True,
            sc_rears="every_block",
            sc_weight=defaults["sc_weight"],
            batch_size=defaults["batch_size"],
        )
        groups = (main_runs(inputs, depth, False), main_runs(inputs, depth, True), multiple)
        for label, runs in zip(out, groups, strict=True):
            out[label].append(final_accuracies(runs))
            used += runs
    return depths, out, used


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    depths, values, used = series(inputs)
    fig, ax = plt.subplots(figsize=(7, 4))
    plotted = grouped_bars(ax, [f"depth {d}" for d in depths], values, "test accuracy (%)")
    ax.set_title("Single vs multiple short circuits (document 000, Figure 7)")
    numbers = {
        f"{label} depth {d}": f"{m:.2f}±{s:.2f}"
        for label, (means, sds) in plotted.items()
        for d, m, s in zip(depths, means, sds, strict=True)
    }
    caption = (
        "Final test accuracy, mean ± sd over seeds: ResNet, SCResNet with one rear per stage (single SC) and with "
        "every block's second convolution as a rear (multiple SC), SC weight and batch as in sc-tab2. "
        + "; ".join(f"{k}: {v}" for k, v in numbers.items())
        + f". {describe(used, inputs.scale)}"
    )
    return FigureOutput(save_figure(fig, out_dir, ID), caption, numbers, figure=fig)
