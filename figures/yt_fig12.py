"""yt-fig12: fraction σ of dominant gradient flows per layer, (a) simplified and (b) fully-fledged plain vs
residual nets, after the first and the last iteration (document 004, appendix D.4.2, Figure 12)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from figures.base import FigureInputs, FigureOutput, chance_check, config, describe, save_figure

ID = "yt-fig12"
ANALYSES = ("noise_stability",)
NEEDS = {"noise_stability": ("dominant_flow/sigma", "dominant_flow/steps")}
TRAINED_NETS = True
CLAIM = (
    "σ of ResNets (red) is above that of PlnNets (blue) at every layer and rises with the layer index; "
    "simplified nets: ratio 1.24 at ℓ = 1 and 4.06 at ℓ = 18; fully-fledged: 0.99 at ℓ = 1 and 3.07 at ℓ = 17; "
    "σ decreases as training goes on (document 004, Figure 12)."
)


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    simplified_depth = min(config(r)["depth"] for r in inputs.of("noise_stability", family="simplified"))
    panels = (("(a) simplified", {"family": "simplified", "depth": simplified_depth}),
              ("(b) fully-fledged", {"family": "fledged"}))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    numbers: dict[str, object] = {}
    notes = []
    used = []
    for ax, (title, match) in zip(axes, panels, strict=True):
        sigma = {}
        for kind, colour in (("plain", "tab:blue"), ("residual", "tab:red")):
            run = inputs.one("noise_stability", kind=kind, **match)
            used.append(run)
            values, steps = run["dominant_flow/sigma"], run["dominant_flow/steps"]
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
        family = match["family"]
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
    first = config(used[0])
    caption = (
        f"σ^(ℓ) (eq. 13, mean over the fixed probe batch of {first['probe_size']} test samples, eval mode) of every "
        f"activation a^(ℓ) against a^(L) = the average-pooled last map, before the first update (solid) and at the "
        f"last step (dotted), recorded by the DominantFlow probe. The last activation feeds the pool alone, so "
        f"σ = 1 there for every net. "
        f"{'; '.join(notes)}. Layers of (b) are block outputs (the document plots one point per conv layer). "
        f"{describe(used, inputs.scale)} Document: CIFAR-10, 200 (simplified) and 180 (fully-fledged) epochs."
    )
    caption = chance_check(used).annotate(caption, numbers)
    return FigureOutput(save_figure(fig, out_dir, ID), caption, numbers, figure=fig)
