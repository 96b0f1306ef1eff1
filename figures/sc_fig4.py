"""sc-fig4: training loss vs epoch, ResNet vs SCResNet, shallow and deep (document 000, section 5.1, Figure 4)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from figures.base import FigureInputs, FigureOutput, chance_check, describe, save_figure, scalar_values
from figures.sc_common import depth_note, main_runs, panel_depths, sc_resnet_defaults

ID = "sc-fig4"
ANALYSES = ("sc_resnet",)
NEEDS = {"sc_resnet": ("scalars/epoch_train_loss",)}
TRAINED_NETS = True
CLAIM = (
    "SCResNet converges faster than ResNet on the training loss, at depth 20 and at depth 56 (document 000, Figure 4)."
)


def curves(inputs: FigureInputs, depth: int, sc: bool) -> tuple[np.ndarray, np.ndarray]:
    """Epochs and the per-epoch training loss of every seed ``[seeds, epochs]``."""
    runs = main_runs(inputs, depth, sc)
    series = [scalar_values(r, "epoch_train_loss") for r in runs]
    return np.arange(1, len(series[0]) + 1), np.array(series)


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    defaults = sc_resnet_defaults(inputs.scale)
    depths = panel_depths(defaults["depths"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    numbers, used = {}, []
    for ax, depth in zip(axes, depths, strict=True):
        for sc, label, colour in ((False, f"ResNet{depth}", "C0"), (True, f"SCResNet{depth}", "C2")):
            used += main_runs(inputs, depth, sc)
            epochs, losses = curves(inputs, depth, sc)
            mean = losses.mean(axis=0)
            ax.plot(epochs, mean, marker="o", color=colour, label=f"{label} (mean of {len(losses)} seeds)")
            if len(losses) > 1:
                ax.fill_between(epochs, losses.min(axis=0), losses.max(axis=0), color=colour, alpha=0.15)
            numbers[f"final train loss {label}"] = round(float(mean[-1]), 4)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss (epoch mean)")
        ax.set_title(f"depth {depth}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("Training loss, ResNet vs SCResNet (document 000, Figure 4)")
    note = depth_note(defaults["depths"], depths, inputs.scale, ("the left panel", "the right panel"))
    caption = (
        f"Mean training loss per epoch (running mean over the epoch's mini-batches; band: min–max over seeds), "
        f"SC weight {defaults['sc_weight']}, batch {defaults['batch_size']}. Final losses: "
        + ", ".join(f"{k[17:]} {v}" for k, v in numbers.items())
        + f".{note} {describe(used, inputs.scale)}"
    )
    caption = chance_check(used).annotate(caption, numbers)
    return FigureOutput(save_figure(fig, out_dir, ID), caption, numbers, figure=fig)
