"""yt-fig10: histogram of ∂L/∂a^(L), the gradient of the final activation, of residual nets over the first
epochs, with its mean and sd (document 004, appendix D.4.1, Figure 10).

The nets are the Table-1 residual runs (analysis ``simplified_noise``: ``simplified_training`` runs, the files
yt-tab1 reads), which record FinalGradHist over their first epochs."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from figures.base import FigureInputs, FigureOutput, Recorded, chance_check, config, describe, save_figure
from figures.yt_common import noise, probe_record

ID = "yt-fig10"
ANALYSES = ("simplified_noise",)
NEEDS = {"simplified_noise": ("scalars/test_acc",)}
TRAINED_NETS = True
CLAIM = (
    "The gradients of the final activation a^(L) of residual nets, collected over the first 4 epochs, follow a "
    "normal distribution with mean close to zero (document: mean 1.44e−4, sd 0.011; Figure 10)."
)


def plural(count: int, unit: str) -> str:
    """'step' / '16 steps', for 'every …' and 'the first …'."""
    return unit if count == 1 else f"{count} {unit}s"


def hist_record(run: Recorded, quantity: str) -> np.ndarray:
    """``quantity`` of FinalGradHist at every firing (``[firing, ...]``)."""
    return probe_record(run, "final_grad_hist", quantity)[1]


def pooled(run: Recorded) -> dict[str, np.ndarray | float]:
    """Histogram and moments of every firing added up (bin edges are fixed for the whole run)."""
    edges = hist_record(run, "edges")
    if not np.all(edges == edges[0]):
        raise ValueError(f"{run.path}: FinalGradHist bin edges change between firings; they cannot be added")
    count, mean, std = (hist_record(run, q).astype(np.float64) for q in ("count", "mean", "std"))
    total = count.sum()
    pooled_mean = float((count * mean).sum() / total)
    pooled_var = float((count * (std**2 + mean**2)).sum() / total - pooled_mean**2)
    return {"edges": edges[0], "counts": hist_record(run, "counts").sum(axis=0), "total": float(total),
            "mean": pooled_mean, "std": float(np.sqrt(max(pooled_var, 0.0))), "firings": len(count)}


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    runs = sorted(inputs.of("simplified_noise", kind="residual"), key=lambda r: config(r)["depth"])
    fig, axes = plt.subplots(1, len(runs), figsize=(5.0 * len(runs), 3.8), squeeze=False)
    numbers: dict[str, object] = {}
    notes = []
    for ax, run in zip(axes[0], runs, strict=True):
        depth = config(run)["depth"]
        stats = pooled(run)
        edges, density = stats["edges"], stats["counts"] / (stats["total"] * np.diff(stats["edges"]))
        ax.stairs(density, edges, fill=True, color="tab:red", alpha=0.55, label="∂L/∂a^(L) (density)")
        grid = np.linspace(edges[0], edges[-1], 400)
        normal = np.exp(-0.5 * ((grid - stats["mean"]) / stats["std"]) ** 2) / (stats["std"] * np.sqrt(2 * np.pi))
        ax.plot(grid, normal, color="k", lw=1, ls="--", label="normal, same mean and sd")
        ax.axvline(stats["mean"], color="k", lw=0.8)
        ax.set_title(f"simplified ResNet, depth {depth}")
        ax.set_xlabel("∂L/∂a^(L)")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 2))
        ax.locator_params(axis="x", nbins=6)
        ax.set_ylabel("density")
        ax.text(0.02, 0.97, f"mean {stats['mean']:.3g}\nsd {stats['std']:.3g}\n{int(stats['total'])} values",
                transform=ax.transAxes, va="top", fontsize=8)
        ax.legend(fontsize=7, loc="upper right")
        numbers[f"mean depth {depth}"] = stats["mean"]
        numbers[f"sd depth {depth}"] = stats["std"]
        notes.append(f"depth {depth}: mean {stats['mean']:.3g}, sd {stats['std']:.3g} over {stats['firings']} firings")
    fig.suptitle("Gradient of the final activation of residual nets, first epochs (document 004, Figure 10)")
    fig.tight_layout()
    first = noise(runs[0])
    caption = (
        f"∂L/∂a^(L) (a^(L): the 64 average-pooled channels) on the fixed probe batch of {first['probe_size']} test "
        f"samples (eval mode), recorded by the FinalGradHist probe every {plural(first['hist_every'], 'step')} "
        f"of the first {plural(first['hist_epochs'], 'epoch')} and added up; values outside the fixed bins (±5 sd "
        f"of the first firing) are counted in the moments but not drawn. {'; '.join(notes)}. The nets are the "
        f"Table-1 residual runs (HMWI init; yt-tab1 reads the same files). The document collects the training "
        f"mini-batches' gradients over 4 epochs instead of a fixed probe batch (CIFAR-10: mean 1.44e−4, sd 0.011). "
        f"{describe(runs, inputs.scale)}"
    )
    caption = chance_check(runs).annotate(caption, numbers)
    return FigureOutput(save_figure(fig, out_dir, ID), caption, numbers, figure=fig)
