"""yt-fig6: training loss (semilog when it spans a decade) of equivalently initialised plain and residual nets
(depth 20) and their absolute difference per step (document 004, appendix B, Figure 6)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from figures.base import FigureInputs, FigureOutput, chance_check, config, save_figure
from figures.yt_common import equivalence_setup, pair, step_losses

ID = "yt-fig6"
ANALYSES = ("equivalence",)
NEEDS = {"equivalence": ("scalars/train_loss",)}
TRAINED_NETS = True
CLAIM = (
    "The losses of equivalently initialised plain and residual nets coincide; their absolute difference is at "
    "rounding level and grows very slowly over training (document 004, appendix B, Figure 6)."
)


def y_scale(values: np.ndarray) -> str:
    """'log' when the positive finite ``values`` span at least a decade (max/min ≥ 10), else 'linear': a log
    axis over a narrow range (a loss of 2.22 .. 2.36) only makes its ticks unreadable."""
    shown = values[np.isfinite(values) & (values > 0)]
    return "log" if shown.size and shown.max() >= 10 * shown.min() else "linear"


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    runs = inputs.runs["equivalence"]
    shown = [r for r in runs if config(r)["figure"]]
    depth, seed = config(shown[0])["depth"], min(config(r)["seed"] for r in shown)
    plain, residual = pair(inputs, depth, seed)
    loss_p, loss_r = step_losses(plain), step_losses(residual)
    diff = np.abs(loss_p - loss_r)
    steps = np.arange(len(diff))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    left.plot(steps, loss_p, color="C0", lw=2.5, label="plain, p_0 = T(r_0), λ‖T⁻¹(p)‖²")
    left.plot(steps, loss_r, color="C3", lw=1, ls="--", label="residual, r_0, λ‖r‖²")
    left.set_yscale(y_scale(np.concatenate([loss_p, loss_r])))
    if left.get_yscale() == "linear":
        left.ticklabel_format(axis="y", useOffset=False)
    left.set_xlabel("step")
    left.set_ylabel("mini-batch training loss")
    left.legend(fontsize=8)
    left.grid(alpha=0.3, which="both")
    shown_diff = np.where(diff > 0, diff, np.nan)
    right.plot(steps, shown_diff, color="k", marker=".", ms=3, lw=0.8)
    right.set_yscale(y_scale(shown_diff))
    if not np.isfinite(shown_diff).any():
        right.set_ylim(0, 1)  # an absolute difference: no negative axis, even with nothing to draw
        right.text(0.5, 0.5, "every step: L(plain) = L(residual) exactly", transform=right.transAxes, ha="center")
    elif right.get_yscale() == "linear":
        right.set_ylim(bottom=0)
    right.set_xlabel("step")
    right.set_xlim(left.get_xlim())  # the same steps as the loss panel, so where differences start shows
    right.set_ylabel("|L(plain) − L(residual)|")
    right.grid(alpha=0.3, which="both")
    zeros = int((diff == 0).sum())
    right.set_title(f"absolute difference ({zeros} of {len(diff)} steps exactly 0, not drawn)", fontsize=9)
    fig.suptitle(f"Equivalently initialised nets of depth {depth}, float64 (document 004, Fig. 6)")
    half = len(diff) // 2
    numbers = {
        "max |ΔL|, first half of the steps": float(diff[:half].max()),
        "max |ΔL|, second half of the steps": float(diff[half:].max()),
        "steps with ΔL = 0": zeros,
        "final L plain / residual": f"{loss_p[-1]:.10g} / {loss_r[-1]:.10g}",
    }
    caption = (
        f"Left: per-step mini-batch loss of the plain net p_0 = T(r_0) (thick blue) and the residual net r_0 "
        f"(dashed red), depth {depth}, seed {seed} ({left.get_yscale()} axis: log only where the values span a "
        f"decade or more, as in the document's semilog plot). Right: their absolute difference per step "
        f"({right.get_yscale()} axis; steps with exactly equal losses are not drawn). Max |ΔL| "
        f"{diff[:half].max():.1e} in the first half of the "
        f"steps, {diff[half:].max():.1e} in the second. " + equivalence_setup([plain, residual], inputs.scale)
    )
    caption = chance_check([plain, residual]).annotate(caption, numbers)
    return FigureOutput(save_figure(fig, out_dir, ID), caption, numbers, figure=fig)
