"""yt-fig9: left, training risk of plain (KWI p) vs residual-equivalent plain (t = T(r), HMWI) nets of depths
32 and 44, mean ± sd, final means annotated; right, risk difference plain − residual vs epoch, depths 20/32/44
(document 004, appendix D.1, Figure 9)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from figures.base import FigureInputs, FigureOutput, chance_check, config, save_figure, scalar_values
from figures.yt_common import mean_sd, plateau_note, seed_runs, training_setup

ID = "yt-fig9"
ANALYSES = ("simplified_training",)
NEEDS = {"simplified_training": ("scalars/epoch_train_loss",)}
TRAINED_NETS = True
CLAIM = (
    "Residual(-equivalent) nets reach lower risk than plain nets at every depth, and adding 12 layers (32 → 44) "
    "makes the plain risk 3.54× worse but the residual one only 1.51× (document 004, appendix D.1, Figure 9)."
)
COLORS = {"plain": "C0", "residual": "C3"}
STYLES = ("-", ":", "--")


def losses(inputs: FigureInputs, kind: str, depth: int) -> np.ndarray:
    """``[seeds, epochs]`` risk of ``kind`` at ``depth``, seeds in order."""
    return np.stack([scalar_values(r, "epoch_train_loss") for r in seed_runs(inputs, "simplified_training",
                                                                              kind=kind, depth=depth)])


def lr_note(plain_growth: float, res_growth: float, runs: list, depth: int) -> str:
    """Our best explanation when the plain net does not degrade more than the residual one from the
    second-deepest to the deepest depth (empty when it does)."""
    if plain_growth > res_growth:
        return ""
    lrs = sorted({config(r)["lr"] for r in runs if config(r)["kind"] == "plain" and config(r)["depth"] == depth})
    return (
        f"Not reproduced at this scale: the plain net does not degrade more than the residual one. Best "
        f"explanation: the document's learning-rate exception trains PlnNet {depth} at "
        f"{', '.join(f'{lr:g}' for lr in lrs)} instead of 1e-2, which keeps it from collapsing, while the shallower "
        f"plain nets at 1e-2 can collapse to chance (see below) and the HMWI nets start on the initial plateau "
        f"(yt-tab1). "
    )


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    runs = inputs.runs["simplified_training"]
    depths = sorted({config(r)["depth"] for r in runs})
    deep = depths[-2:]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    numbers: dict[str, object] = {}
    finals = {}
    for depth, style in zip(deep, STYLES, strict=False):
        for kind, label in (("plain", "p (KWI)"), ("residual", "t = T(r) (HMWI)")):
            mean, sd = mean_sd(losses(inputs, kind, depth))
            epochs = np.arange(1, len(mean) + 1)
            left.plot(epochs, mean, color=COLORS[kind], ls=style, lw=2, label=f"{label}, depth {depth}")
            left.fill_between(epochs, mean - sd, mean + sd, color=COLORS[kind], alpha=0.15, lw=0)
            left.annotate(f"{mean[-1]:.3g}", (epochs[-1], mean[-1]), xytext=(4, 0), textcoords="offset points",
                          color=COLORS[kind], fontsize=8, va="center")
            finals[kind, depth] = mean[-1]
            numbers[f"final L {kind} {depth}"] = float(mean[-1])
    left.set_yscale("log")
    left.set_xlabel("epoch")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_ylabel("training risk L")
    left.set_title("plain p vs residual-equivalent plain t")
    left.legend(fontsize=8)
    left.grid(alpha=0.3, which="both")
    differences = {}
    for depth, style in zip(depths, ("-", "--", ":"), strict=False):
        diff = losses(inputs, "plain", depth) - losses(inputs, "residual", depth)
        mean, sd = mean_sd(diff)
        differences[depth] = mean
        epochs = np.arange(1, len(mean) + 1)
        right.plot(epochs, mean, ls=style, lw=2, marker="o", ms=3, color=f"C{depths.index(depth) + 1}",
                   label=f"depth {depth}")
        right.fill_between(epochs, mean - sd, mean + sd, color=f"C{depths.index(depth) + 1}", alpha=0.15, lw=0)
        numbers[f"L plain − residual, depth {depth}, peak (epoch)"] = f"{mean.max():.3g} ({int(mean.argmax()) + 1})"
    positive = all((d > 0).all() for d in differences.values())
    right.set_yscale("log" if positive else "symlog", **({} if positive else {"linthresh": 1e-2}))
    right.set_xlabel("epoch")
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_ylabel("L(plain) − L(residual)")
    right.set_title("risk difference, mean ± sd over seeds")
    right.legend(fontsize=8)
    right.grid(alpha=0.3, which="both")
    fig.suptitle("Degradation of simplified plain vs residual nets (document 004, Fig. 9)")
    a, b = deep[0], deep[-1]
    plain_growth, res_growth = finals["plain", b] / finals["plain", a], finals["residual", b] / finals["residual", a]
    numbers[f"L({b})/L({a}) plain"] = float(plain_growth)
    numbers[f"L({b})/L({a}) residual"] = float(res_growth)
    caption = (
        f"Left: mean risk per epoch (bands ± sd over seeds) of plain nets p (KWI, blue) and residual nets "
        f"written as plain nets t = T(r) (HMWI, red) of depths {a} (solid) and {b} (dotted), final means "
        f"annotated. Going from depth {a} to {b} multiplies the final risk by {plain_growth:.2f} for plain and "
        f"{res_growth:.2f} for residual nets (document: 3.54 and 1.51). Right: per-seed difference "
        f"L(plain) − L(residual), mean ± sd, {'log' if positive else 'symmetric-log (some differences ≤ 0)'} "
        f"scale. " + lr_note(plain_growth, res_growth, runs, b)
        + plateau_note([r for r in runs if config(r)["kind"] != "dominant"])
        + training_setup(runs, inputs.scale)
    )
    caption = chance_check(runs).annotate(caption, numbers)
    return FigureOutput(save_figure(fig, out_dir, ID), caption, numbers, figure=fig)
