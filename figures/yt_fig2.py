"""yt-fig2: risk L and test error E vs epoch, simplified plain vs residual nets of depth 20, mean ± sd over
seeds (document 004, Figure 2; Figure 8 repeats it).

Reads analysis ``simplified_curves``: at smoke and quick scale the depth-5 / depth-20 plain and residual runs of
``simplified_training`` (the same files yt-tab1 reads), at paper scale the document's own 13 + 13 nets trained for
1200 epochs."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from figures.base import FigureInputs, FigureOutput, chance_check, config, save_figure, scalar_values
from figures.yt_common import NAMES, hmwi_note, mean_sd, plateau_note, seed_runs, training_setup

ID = "yt-fig2"
ANALYSES = ("simplified_curves",)
NEEDS = {"simplified_curves": ("scalars/epoch_train_loss", "scalars/test_acc")}
TRAINED_NETS = True
CLAIM = (
    "Residual nets of depth 20 reach lower risk L and lower error E than plain nets throughout training "
    "(document 004, Figures 2 and 8; 13 nets each, 1200 epochs on CIFAR-10)."
)
COLORS = {"plain": "C0", "residual": "C3"}
DOCUMENT_NETS, DOCUMENT_EPOCHS = 13, 1200  # "training 13 plain networks and 13 residual networks", "1200 epochs"


def curves(inputs: FigureInputs, kind: str, depth: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Mean and sd over seeds, per epoch, of the risk ``L`` and the test error ``E``."""
    runs = seed_runs(inputs, "simplified_curves", kind=kind, depth=depth)
    loss = np.stack([scalar_values(r, "epoch_train_loss") for r in runs])
    error = np.stack([1.0 - scalar_values(r, "test_acc") for r in runs])
    return {"L": mean_sd(loss), "E": mean_sd(error)}


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    runs = inputs.runs["simplified_curves"]
    depth = 20 if any(config(r)["depth"] == 20 for r in runs) else min(config(r)["depth"] for r in runs)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    numbers = {}
    final_loss = {}
    for kind in ("plain", "residual"):
        stats = curves(inputs, kind, depth)
        final_loss[kind] = stats["L"][0][-1]
        for ax, metric in zip(axes, ("L", "E"), strict=True):
            mean, sd = stats[metric]
            epochs = np.arange(1, len(mean) + 1)
            ax.plot(epochs, mean, color=COLORS[kind], lw=2, marker="o", ms=3,
                    label=f"{NAMES[kind]} {depth}")
            ax.fill_between(epochs, mean - sd, mean + sd, color=COLORS[kind], alpha=0.2, lw=0)
            numbers[f"{NAMES[kind]} {depth} final {metric}"] = f"{mean[-1]:.4g} ± {sd[-1]:.2g}"
    axes[0].set_yscale("log")
    axes[0].set_ylabel("training risk L")
    axes[1].set_ylabel("test error E")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.suptitle(f"Simplified plain vs residual nets, depth {depth}: mean ± sd over seeds (document 004, Fig. 2)")
    caption = (
        f"Risk L (mean loss over each epoch's mini-batches, log scale) and test error E after each epoch of "
        f"depth-{depth} simplified PlnNets (KWI, blue) and ResNets (HMWI, red); lines are means over seeds, bands "
        f"± one sd. Final: {', '.join(f'{k} {v}' for k, v in numbers.items())}. "
        + hmwi_note([depth] if final_loss["residual"] >= final_loss["plain"] else [], runs)
        + plateau_note(
            [r for r in runs if config(r)["depth"] == depth and config(r)["kind"] != "dominant"], DOCUMENT_EPOCHS
        )
        + training_setup(runs, inputs.scale, DOCUMENT_EPOCHS)
    )
    shown = [r for r in runs if config(r)["depth"] == depth and config(r)["kind"] in ("plain", "residual")]
    seeds = {config(r)["seed"] for r in shown}
    if len(seeds) != DOCUMENT_NETS or {config(r)["epochs"] for r in shown} != {DOCUMENT_EPOCHS}:
        caption += (f" The document's Figure 2 trains {DOCUMENT_NETS} PlnNets and {DOCUMENT_NETS} ResNets for "
                    f"{DOCUMENT_EPOCHS} epochs (paper scale); here {len(seeds)} of each.")
    caption = chance_check(shown).annotate(caption, numbers)
    return FigureOutput(save_figure(fig, out_dir, ID), caption, numbers, figure=fig)
