"""yw-extra-gradflow (not in document 003): per-layer gradient flow of the skip vs vanilla MLP (4 layers) and of the
skip, vanilla and reinforced CNNs, from the GradStats and DominantFlow records of the yw-tab runs."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from figures.base import FigureInputs, FigureOutput, chance_check, config, describe, save_figure

ID = "yw-extra-gradflow"
ANALYSES = ("concat_mlp", "concat_cnn")
NEEDS = {
    "concat_mlp": ("grad_stats/norm", "dominant_flow/sigma"),
    "concat_cnn": ("grad_stats/norm", "dominant_flow/sigma"),
}
TRAINED_NETS = True
CLAIM = (
    "Not in the document. Its first motivation for skips is a gradient shortcut, which it chose not to "
    "examine; here: do the concatenation skips change how much gradient reaches the early layers?"
)
COLOURS = {"skip": "C3", "vanilla": "k", "reinforced": "C0", "skipstar": "C1"}


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    mlp_runs = inputs.runs["concat_mlp"]
    layers = max(config(r)["layers"] for r in mlp_runs)
    wd = min(config(r)["weight_decay"] for r in mlp_runs)
    seed = min(config(r)["seed"] for r in mlp_runs)
    mlps = {
        v: next(
            r
            for r in mlp_runs
            if config(r)["variant"] == v
            and config(r)["layers"] == layers
            and config(r)["weight_decay"] == wd
            and config(r)["seed"] == seed
        )
        for v in ("skip", "vanilla")
    }
    cnn_seed = min(config(r)["seed"] for r in inputs.runs["concat_cnn"])
    cnns = {
        v: next(r for r in inputs.runs["concat_cnn"] if config(r)["variant"] == v and config(r)["seed"] == cnn_seed)
        for v in ("skip", "vanilla", "reinforced")
    }
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    numbers: dict[str, object] = {}
    for column, (title, chosen) in enumerate(((f"MLP, {layers} layers", mlps), ("CNN", cnns))):
        for variant, run in chosen.items():
            _, norm, _, labels = run.array("grad_stats", "norm")
            mean = np.nanmean(norm, axis=0)
            axes[0, column].plot(labels["layer"], mean, color=COLOURS[variant], marker="o", label=variant)
            numbers[f"{title} {variant}: grad norm first/last layer"] = float(mean[0] / mean[-1])
            steps, sigma, _, sigma_labels = run.array("dominant_flow", "sigma")
            for index, style in ((0, ":"), (-1, "-")):
                axes[1, column].plot(
                    sigma_labels["layer"],
                    sigma[index],
                    color=COLOURS[variant],
                    ls=style,
                    marker=".",
                    label=f"{variant}, step {steps[index]}",
                )
            numbers[f"{title} {variant}: σ at the last record, first / last activation"] = (
                f"{sigma[-1][0]:.3f} / {sigma[-1][-1]:.3f}"
            )
        axes[0, column].set_yscale("log")
        axes[0, column].set_ylabel("mean over training of ‖∂L/∂W‖₂")
        axes[0, column].set_title(f"{title}: per-layer gradient norm")
        axes[1, column].set_ylabel("σ (fraction of channels with dominant flow)")
        axes[1, column].set_title(f"{title}: σ per activation, first (dotted) and last (solid) record")
        for ax in axes[:, column]:
            ax.tick_params(axis="x", rotation=30)
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3, which="both")
    fig.suptitle("Gradient flow with and without concatenation skips (extra figure, not in document 003)")
    fig.tight_layout()
    caption = (
        f"Extra figure (not in document 003). Top: mean over recorded steps of each weight layer's gradient L2 "
        f"norm; bottom: σ per activation layer (DominantFlow, document 004's dominant-flow fraction) at the "
        f"first and last record (the last activation is a^(L) itself, so its σ is 1 by definition). "
        f"MLP: the yw-tab1 runs with {layers} layers, weight decay {wd:g}, seed {seed}; "
        f"CNN: the yw-tab4/5 runs, seed {cnn_seed}. A skip layer's weight also holds the columns reading the "
        f"skipped inputs, so its norm covers more weights. MLP: {describe(list(mlps.values()), inputs.scale)} "
        f"CNN: {describe(list(cnns.values()), inputs.scale)}"
    )
    caption = chance_check([*mlps.values(), *cnns.values()]).annotate(caption, numbers)
    return FigureOutput(save_figure(fig, out_dir, ID), caption, numbers, figure=fig)
