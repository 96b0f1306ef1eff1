"""yt-fig7: histograms of the weights of p (KWI plain net, blue) and t = T(r) (HMWI ResNet as a plain net, red),
all weights with the y axis clipped (top) and the ID entries (bottom), before and after training, depth 32
(document 004, appendix C, Figure 7)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from figures.base import FigureInputs, FigureOutput, chance_check, config, save_figure
from figures.yt_common import training_setup, weight_vectors

ID = "yt-fig7"
ANALYSES = ("simplified_training",)
NEEDS = {"simplified_training": ("scalars/epoch_train_loss",)}
TRAINED_NETS = True
CLAIM = (
    "The ID entries of t stay near 1 (mode ≈ 0.9 after 200 epochs) while very few weights of p exceed 0.7; "
    "training changes both distributions little relative to 1 (document 004, appendix C, Figure 7)."
)
CLIP = 800
BINS = np.linspace(-1.5, 1.5, 121)


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    vectors, id_p, id_t, chosen = weight_vectors(inputs)
    cfg = config(chosen[0])
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True, layout="constrained")
    numbers = {}
    for col, (when, label) in enumerate((("0", "before training"), ("_end", f"after {cfg['epochs']} epochs"))):
        p, t = vectors[f"p{when}"], vectors[f"t{when}"]
        top, bottom = axes[0, col], axes[1, col]
        top.hist(p, bins=BINS, color="C0", alpha=0.6, label="p (plain, KWI)")
        top.hist(t, bins=BINS, color="C3", alpha=0.6, label="t = T(r) (residual, HMWI)")
        top.set_ylim(0, CLIP)
        top.set_title(f"all weights, {label} (y clipped at {CLIP})", fontsize=10)
        bottom.hist(t[id_t], bins=BINS, color="C3", alpha=0.7, label="ID entries of t")
        bottom.hist(p[id_p], bins=BINS, color="C0", alpha=0.7, label="ID entries of p")
        bottom.set_title(f"ID entries, {label}", fontsize=10)
        bottom.set_xlabel("weight value")
        counts, edges = np.histogram(t[id_t], bins=BINS)
        numbers[f"mode of ID entries of t{when}"] = float((edges[counts.argmax()] + edges[counts.argmax() + 1]) / 2)
        numbers[f"count |p{when}| > 0.7"] = int((np.abs(p) > 0.7).sum())
        for ax in (top, bottom):
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("count")
    axes[1, 0].set_ylabel("count")
    fig.suptitle(f"Weights of p and t = T(r), depth {cfg['depth']} (document 004, Fig. 7)")
    caption = (
        f"Histograms ({len(BINS) - 1} bins on [{BINS[0]:g}, {BINS[-1]:g}]) of the weights (biases excluded) of the "
        f"depth-{cfg['depth']} plain net p (KWI, blue) and of the ResNet written as the plain net t = T(r) (HMWI, "
        f"red), seed {cfg['seed']}; top: all weights, y clipped at {CLIP}; bottom: the ID entries only. Mode of the "
        f"ID entries of t: {numbers['mode of ID entries of t0']:.3f} before, "
        f"{numbers['mode of ID entries of t_end']:.3f} after training (document: ≈ 0.9 after 200 epochs); "
        f"|p| > 0.7: {numbers['count |p0| > 0.7']} before, {numbers['count |p_end| > 0.7']} after (document: 1 and "
        f"26). " + training_setup(chosen, inputs.scale)
    )
    caption = chance_check(chosen).annotate(caption, numbers)
    return FigureOutput(save_figure(fig, out_dir, ID), caption, numbers, figure=fig)
