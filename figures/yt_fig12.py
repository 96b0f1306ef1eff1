"""yt-fig12: fraction σ of dominant gradient flows per layer, (a) simplified and (b) fully-fledged plain vs
residual nets, after the first and the last iteration (document 004, appendix D.4.2, Figure 12).

(a) reads the Table-1 runs (analysis ``simplified_noise``: ``simplified_training`` runs, the files yt-tab1 reads),
(b) the fully-fledged nets of analysis ``noise_stability``."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from figures.base import FigureInputs, FigureOutput, Recorded, chance_check, config, describe, save_figure
from figures.yt_common import noise, probe_record, training_setup

ID = "yt-fig12"
ANALYSES = ("simplified_noise", "noise_stability")
NEEDS = {
    "simplified_noise": ("dominant_flow/sigma",),
    "noise_stability": ("dominant_flow/sigma", "dominant_flow/steps"),
}
TRAINED_NETS = True
CLAIM = (
    "σ of ResNets (red) is above that of PlnNets (blue) at every layer and rises with the layer index; "
    "simplified nets: ratio 1.24 at ℓ = 1 and 4.06 at ℓ = 18; fully-fledged: 0.99 at ℓ = 1 and 3.07 at ℓ = 17; "
    "σ decreases as training goes on (document 004, Figure 12)."
)


def fledged_setup(runs: list[Recorded], scale: str) -> str:
    """How the fully-fledged nets were trained (optimizer weight decay, BatchNorm nets), for the caption."""
    first = config(runs[0])
    return (
        f"SGD, momentum {first['momentum']:g}, batch {first['batch_size']}, learning rate {first['lr']:g} "
        + (f"divided by 10 after epochs {', '.join(map(str, first['milestones']))}" if first["milestones"]
           else "(constant)")
        + f", optimizer weight decay {first['weight_decay']:g}. {describe(runs, scale)}"
    )


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    simplified_depth = min(config(r)["depth"] for r in inputs.runs["simplified_noise"])
    panels = (("(a) simplified", "simplified_noise", {"depth": simplified_depth}),
              ("(b) fully-fledged", "noise_stability", {"family": "fledged"}))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    numbers: dict[str, object] = {}
    notes = []
    used = []
    for ax, (title, analysis, match) in zip(axes, panels, strict=True):
        sigma = {}
        for kind, colour in (("plain", "tab:blue"), ("residual", "tab:red")):
            run = inputs.one(analysis, kind=kind, **match)
            used.append(run)
            steps, values, _ = probe_record(run, "dominant_flow", "sigma")
            layers = np.arange(1, values.shape[1] + 1)
            for index, style, when in ((0, "-", "first"), (-1, ":", "last")):
                ax.plot(layers, values[index], ls=style, marker="o", ms=3, color=colour,
                        label=f"{config(run)['model']}, {when} iteration (step {int(steps[index])})")
            sigma[kind] = values
        depth = config(run)["depth"]
        ax.set_title(f"{title}, depth {depth}")
        ax.set_xlabel("activation layer ℓ (1 = stem ReLU, then one per block)")
        ax.set_ylabel("σ^(ℓ)")
        ax.set_ylim(-0.02, 1.05)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ratio = sigma["residual"] / sigma["plain"]
        family = "simplified" if analysis == "simplified_noise" else "fledged"
        inner = ratio.shape[1] - 2  # the last activation feeds the pool alone: σ = 1 for both nets there
        for index, when in ((0, "first"), (-1, "last")):
            numbers[f"{family} ratio res/plain l=1 {when}"] = float(ratio[index, 0])
            numbers[f"{family} ratio res/plain l={inner + 1} {when}"] = float(ratio[index, inner])
        notes.append(
            f"{family}: residual/plain σ ratio at ℓ = 1 {ratio[0, 0]:.2f} (first) and {ratio[-1, 0]:.2f} (last), "
            f"at ℓ = {inner + 1} {ratio[0, inner]:.2f} and {ratio[-1, inner]:.2f}"
        )
    fig.suptitle("Fraction σ of dominant gradient flows per layer (document 004, Figure 12)")
    fig.tight_layout()
    simplified, fledged = used[:2], used[2:]
    sizes = f"{noise(simplified[0])['probe_size']} in (a), {noise(fledged[0])['probe_size']} in (b)"
    caption = (
        f"σ^(ℓ) (eq. 13, mean over the fixed probe batch of test samples, {sizes}, eval mode) of every"
        f" activation a^(ℓ) against a^(L) = the average-pooled last map, before the first update (solid) and "
        f"at the last step (dotted), recorded by the DominantFlow probe. The last activation feeds the pool alone, "
        f"so σ = 1 there for every net. "
        f"{'; '.join(notes)}. Layers of (b) are block outputs (the document plots one point per conv layer). "
        f"(a) shows the Table-1 nets (yt-tab1 reads the same files): {training_setup(simplified, inputs.scale)} "
        f"(b): {fledged_setup(fledged, inputs.scale)} "
        f"Document: CIFAR-10, 200 (simplified) and 180 (fully-fledged) epochs, initial learning rates 0.01 and 0.1."
    )
    caption = chance_check(used).annotate(caption, numbers)
    return FigureOutput(save_figure(fig, out_dir, ID), caption, numbers, figure=fig)
