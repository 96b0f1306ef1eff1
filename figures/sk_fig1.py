"""sk-fig1: per-layer weight-gradient norm through depth of a deep plain MLP vs the same net with additive
(residual) and concatenative (dense) skips, log scale (document 001, vanishing gradients)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from figures.base import FigureInputs, FigureOutput, Recorded, config, describe, grad_profile, save_figure

ID = "sk-fig1"
ANALYSES = ("skip_gradflow",)
NEEDS = {"skip_gradflow": ("grad_stats/norm",)}
TRAINED_NETS = False  # the claim is about gradient flow through initialised nets, not trained ones
CLAIM = (
    "Without skips the gradient shrinks layer by layer towards the input (vanishing gradient); additive skips "
    "pass it back through the identity and concatenative skips give every layer a direct path, so the early "
    "layers keep a usable gradient (document 001)."
)
KINDS = (
    ("plain", "plain (no skips)", "C3"),
    ("residual", "additive skips", "C0"),
    ("dense", "concatenative skips", "C2"),
)


def grad_at_step(run: Recorded, quantity: str, step: int, probe: str = "grad_stats") -> np.ndarray:
    """Per-layer ``quantity`` recorded at ``step``."""
    recorded, values, _, _ = run.array(probe, quantity)
    return values[int(np.flatnonzero(recorded == step)[0])]


def norms(inputs: FigureInputs, kind: str, first_step: bool) -> np.ndarray:
    """Per-layer gradient norm ``[seeds, layers]``: at step 0, or averaged over all steps."""
    runs = inputs.of("skip_gradflow", kind=kind)
    if first_step:
        return np.array([grad_at_step(r, "norm", 0) for r in runs])
    return np.array([grad_profile(r, "norm")[1] for r in runs])


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    runs = inputs.runs["skip_gradflow"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    numbers = {}
    for ax, first, title in zip(
        axes, (True, False), ("(a) at initialisation (step 0)", "(b) averaged over training"), strict=True
    ):
        for kind, label, colour in KINDS:
            values = norms(inputs, kind, first)
            mean = np.exp(np.log(values).mean(axis=0))
            x = np.arange(1, values.shape[1] + 1)
            ax.plot(x, mean, color=colour, marker=".", label=label)
            if len(values) > 1:
                ax.fill_between(x, values.min(axis=0), values.max(axis=0), color=colour, alpha=0.15)
            key = "init" if first else "training"
            numbers[f"{kind} first/last-hidden norm ratio ({key})"] = f"{mean[1] / mean[-2]:.2e}"
        ax.set_yscale("log")
        ax.set_xlabel("layer (1 = stem, last = head)")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("‖∂L/∂W‖₂ per layer")
    axes[0].legend(fontsize=8)
    cfg = config(runs[0])
    fig.suptitle(f"Gradient norm through depth, {cfg['depth']} hidden layers (document 001)")
    caption = (
        f"Weight-gradient L2 norm per layer (GradStats) of explainer MLPs with {cfg['depth']} hidden layers of "
        f"{cfg['width']} units (dense: growth {cfg['growth']}), PyTorch default init, SGD lr {cfg['lr']}; geometric "
        "mean over seeds (band: min–max). Ratio of the first hidden layer's norm to the last hidden layer's: "
        + "; ".join(f"{k.split(' first')[0]} {v} ({k.split('(')[1][:-1]})" for k, v in numbers.items())
        + f". The document has no measurement of its own. {describe(runs, inputs.scale)}"
    )
    return FigureOutput(save_figure(fig, out_dir, ID), caption, numbers, figure=fig)
