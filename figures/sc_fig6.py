"""sc-fig6: signed mean gradient per layer, ResNet vs SCResNet, at epoch 1, mid-training and averaged over
training, shallow (a–c) and deep (d–f), the three stages shaded (document 000, section 5.2.2, Figure 6)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from figures.base import FigureInputs, FigureOutput, chance_check, config, describe, grad_profile, save_figure
from figures.sc_common import depth_note, epoch_ends, epoch_steps, main_runs, panel_depths, sc_resnet_defaults

ID = "sc-fig6"
ANALYSES = ("sc_resnet",)
NEEDS = {"sc_resnet": ("grad_stats/mean", "scalars/epoch")}
TRAINED_NETS = True
CLAIM = (
    "The short circuits change the mean gradient of the front layers they feed (2nd and 4th layers of each "
    "stage at depth 20): in epoch 1 most mean gradients are positive, by mid-training the SC layers of the first "
    "stages are clearly enhanced, and averaged over training most layers are negative while the enhanced layers "
    "keep a large response (document 000, Figure 6)."
)
STAGE_COLOURS = ("#cfe3f7", "#d5f0d5", "#fbe3c8")


def periods(run) -> list[tuple[str, tuple[int, int]]]:
    """(label, inclusive step range) of epoch 1, the middle epoch and all epochs."""
    total = len(epoch_ends(run))
    middle = max(1, (total + 1) // 2)
    return [
        ("epoch 1", epoch_steps(run, 1, 1)),
        (f"epoch {middle} (mid-training)", epoch_steps(run, middle, middle)),
        (f"epochs 1–{total} (average)", epoch_steps(run, 1, total)),
    ]


def profile(inputs: FigureInputs, depth: int, sc: bool, period: int) -> tuple[list[str], np.ndarray]:
    """Layer names and the signed mean gradient averaged over the period's steps, then over seeds."""
    runs = main_runs(inputs, depth, sc)
    names = grad_profile(runs[0], "mean")[0]
    values = [grad_profile(r, "mean", periods(r)[period][1])[1] for r in runs]
    return names, np.mean(values, axis=0)


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    defaults = sc_resnet_defaults(inputs.scale)
    depths = panel_depths(defaults["depths"])
    fig, axes = plt.subplots(2, 3, figsize=(16, 8))
    numbers, used = {}, []
    letters = "abcdef"
    for row, depth in enumerate(depths):
        sc_run = main_runs(inputs, depth, True)[0]
        fronts = {front for front, _ in config(sc_run)["short_circuits"]}
        used += main_runs(inputs, depth, False) + main_runs(inputs, depth, True)
        for col in range(3):
            ax = axes[row, col]
            names, base = profile(inputs, depth, False, col)
            _, scn = profile(inputs, depth, True, col)
            x = np.arange(1, len(names) + 1)
            for s in (1, 2, 3):
                inside = [i + 1 for i, n in enumerate(names) if n.startswith(f"stage{s}.")]
                ax.axvspan(min(inside) - 0.5, max(inside) + 0.5, color=STAGE_COLOURS[s - 1], alpha=0.6, lw=0)
                ax.text(
                    (min(inside) + max(inside)) / 2,
                    1.0,
                    f"stage {s}",
                    transform=ax.get_xaxis_transform(),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
            ax.plot(x, base, marker=".", color="C0", label=f"ResNet{depth}")
            ax.plot(x, scn, marker=".", color="C2", label=f"SCResNet{depth}")
            marked = [i for i, n in enumerate(names) if n in fronts]
            ax.plot(x[marked], scn[marked], "o", mfc="none", mec="C3", ms=8, label="SC front layers")
            ax.axhline(0, color="k", lw=0.5)
            # the title sits above the stage labels and the y offset text (×1e−3), which stand on the axes' top
            ax.set_title(f"({letters[3 * row + col]}) depth {depth}, {periods(sc_run)[col][0]}", fontsize=10, pad=16)
            ax.set_xlabel("layer index (conv1, stage convs, fc)")
            ax.set_ylabel("mean ∂J/∂W (signed)")
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
            ax.grid(alpha=0.3)
            front_gain = np.abs(scn[marked]).mean() / max(np.abs(base[marked]).mean(), 1e-30)
            other = [i for i in range(len(names)) if i not in marked]
            other_gain = np.abs(scn[other]).mean() / max(np.abs(base[other]).mean(), 1e-30)
            numbers[f"depth {depth} {['epoch 1', 'mid', 'all'][col]}: |mean| SC/base at fronts, elsewhere"] = (
                f"{front_gain:.2f}, {other_gain:.2f}"
            )
            numbers[f"depth {depth} {['epoch 1', 'mid', 'all'][col]}: fraction of layers > 0 (base, SC)"] = (
                f"{(base > 0).mean():.2f}, {(scn > 0).mean():.2f}"
            )
        axes[row, 0].legend(fontsize=8)
    fig.suptitle("Signed mean gradient per layer, ResNet vs SCResNet (document 000, Figure 6)")
    fig.tight_layout()
    note = depth_note(defaults["depths"], depths, inputs.scale, ("(a)–(c)", "(d)–(f)"))
    caption = (
        "Signed mean of each layer's weight gradient (GradStats 'mean'), averaged over the steps of epoch 1, of "
        "the middle epoch and of all epochs, then over seeds; shading: the three stages; circles: SC front layers. "
        "Ratios |mean| SCResNet / ResNet at the front layers vs the other layers: "
        + "; ".join(f"{k.split(':')[0]} {v}" for k, v in numbers.items() if "SC/base" in k)
        + f".{note} {describe(used, inputs.scale)}"
    )
    caption = chance_check(used).annotate(caption, numbers)
    return FigureOutput(save_figure(fig, out_dir, ID), caption, numbers, figure=fig)
