"""van-extra-gradflow (not in document 002): per-layer gradient flow of the thin plain, VAN and ResNet nets at the
largest depth over training, from the GradStats records of the van-fig1 runs."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm

from figures.base import FigureInputs, FigureOutput, chance_check, config, describe, save_figure

ID = "van-extra-gradflow"
ANALYSES = ("van_thin",)
NEEDS = {"van_thin": ("grad_stats/norm",)}
TRAINED_NETS = True
CLAIM = (
    "Not in the document. Its argument: skips help early training by improving gradient flow (less "
    "vanishing/shattering); VAN keeps them only while α < 1, so its per-layer gradients should look like "
    "ResNet's early and like the plain net's once the skips are phased out."
)
SHOWN = ("plain", "van", "resnet")
LABELS = {"plain": "Plain", "van": "VAN", "resnet": "ResNet"}
COLOURS = {"plain": "k", "van": "C3", "resnet": "C0"}


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    runs = inputs.runs["van_thin"]
    depth = max(config(r)["depth"] for r in runs)
    seed = min(config(r)["seed"] for r in runs)
    chosen = {
        v: next(
            r for r in runs if config(r)["variant"] == v and config(r)["depth"] == depth and config(r)["seed"] == seed
        )
        for v in SHOWN
    }
    records = {v: run.array("grad_stats", "norm") for v, run in chosen.items()}
    norms = np.concatenate([values[1].ravel() for values in records.values()])
    positive = norms[np.isfinite(norms) & (norms > 0)]
    scale = LogNorm(vmin=float(np.percentile(positive, 1)), vmax=float(positive.max()))
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.6), width_ratios=(1, 1, 1, 1.2))
    numbers: dict[str, object] = {}
    for ax, (variant, (steps, values, _, _)) in zip(axes, records.items(), strict=False):
        image = ax.imshow(
            values.T,
            aspect="auto",
            origin="lower",
            norm=scale,
            cmap="viridis",
            extent=(steps[0], steps[-1], -0.5, values.shape[1] - 0.5),
            interpolation="nearest",
        )
        ax.set_title(f"{LABELS[variant]}, {depth} blocks: ‖∂L/∂W‖₂")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("layer index (0 = stem, last = head)")
        mean = np.nanmean(values, axis=0)
        axes[3].plot(np.arange(values.shape[1]), mean, color=COLOURS[variant], marker=".", label=LABELS[variant])
        numbers[f"{LABELS[variant]}: mean grad norm, first weight layer / last hidden"] = float(mean[0] / mean[-2])
        numbers[f"{LABELS[variant]}: mean grad norm of stem"] = float(mean[0])
    fig.colorbar(image, ax=axes[2], label="‖∂L/∂W‖₂")
    axes[3].set_yscale("log")
    axes[3].set_xlabel("layer index")
    axes[3].set_ylabel("mean over recorded steps of ‖∂L/∂W‖₂")
    axes[3].set_title("per-layer gradient norm, averaged over training")
    axes[3].legend(fontsize=8)
    axes[3].grid(alpha=0.3, which="both")
    fig.suptitle("Gradient flow through thin nets at the largest depth (extra figure, not in document 002)")
    fig.tight_layout()
    recorded = {v: len(records[v][0]) for v in SHOWN}
    sigma_notes = []
    for variant, run in chosen.items():
        if "dominant_flow" in run.probes:
            sigma_steps, sigma, _, _ = run.array("dominant_flow", "sigma")
            # the last activation feeds the head alone (σ = 1 by construction): leave it out of the mean
            first, last = float(np.nanmean(sigma[0, :-1])), float(np.nanmean(sigma[-1, :-1]))
            numbers[f"{LABELS[variant]}: mean σ over layers, step {int(sigma_steps[0])} / {int(sigma_steps[-1])}"] = (
                f"{first:.3f} / {last:.3f}"
            )
            sigma_notes.append(f"{LABELS[variant]} {first:.3f} → {last:.3f}")
    caption = (
        f"Extra figure (not in document 002). GradStats of the van-fig1 runs, seed {seed}, {depth} hidden blocks: "
        f"L2 norm of each weight layer's gradient at every recorded step ({recorded['plain']} records per run; "
        "rows: stem, the blocks' linear layers, head), and its mean over training per layer (right, log). "
        + (
            f"Mean σ (DominantFlow, eval mode, fixed probe batch) over the hidden layers, first → last firing: "
            f"{', '.join(sigma_notes)}. "
            if sigma_notes
            else ""
        )
        + f"{describe(list(chosen.values()), inputs.scale)}"
    )
    caption = chance_check(list(chosen.values())).annotate(caption, numbers)
    return FigureOutput(save_figure(fig, out_dir, ID), caption, numbers, figure=fig)
