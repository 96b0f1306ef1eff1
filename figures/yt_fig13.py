"""yt-fig13: φ(r) = P[|X| > |Y|] on a log r axis with φ(1) = 1/2 marked and 1/(1 + r^−1.2) (doc 004, Fig. 13)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from figures.base import FigureInputs, FigureOutput, describe, save_figure

ID = "yt-fig13"
ANALYSES = ("phi_curve",)
NEEDS = {"phi_curve": ("r", "phi", "phi_integral", "phi_approx", "best_c")}
TRAINED_NETS = False  # a computed curve: no nets
CLAIM = "φ(r) and its approximation 1/(1 + r^−1.2) coincide to the eye (document 004, appendix E, Figure 13)."


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    (result,) = inputs.runs["phi_curve"]
    r, exact, integral, approx = (result[k] for k in ("r", "phi", "phi_integral", "phi_approx"))
    c = result.meta["config"]["c"]
    best_c, best_error = result["best_c"]
    fig, (ax, err_ax) = plt.subplots(2, 1, figsize=(6, 5.5), sharex=True, height_ratios=(3, 1.2))
    ax.plot(r, integral, color="C0", lw=2.5, label="φ(r), document's integral (quad)")
    ax.plot(r, exact, color="k", lw=0.8, ls=":", label="φ(r) = (2/π)·arctan r (closed form)")
    ax.plot(r, approx, color="C3", lw=1.2, ls="--", label=f"1/(1 + r^−{c:g}) (document's approximation)")
    ax.plot([1], [0.5], "o", color="k", ms=5)
    ax.annotate("φ(1) = 1/2", (1, 0.5), xytext=(8, -12), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_ylabel("φ(r) = P[|X| > |Y|]")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3, which="both")
    approx_error = np.abs(approx - integral)
    err_ax.plot(r, approx_error, color="C3", label=f"|approx. − φ|, c = {c:g}")
    err_ax.plot(r, np.abs(result["phi_best_fit"] - integral), color="C2", label=f"best-fit c = {best_c:.3f}")
    err_ax.set_xscale("log")
    err_ax.set_xlabel("r = σ_X / σ_Y")
    err_ax.set_ylabel("abs. error")
    err_ax.legend(fontsize=8)
    err_ax.grid(alpha=0.3, which="both")
    fig.suptitle("φ(r) and its approximation (document 004, Figure 13)")
    numbers = {
        "phi(1)": float(np.interp(0.0, np.log10(r), integral)),
        "max |integral - closed form|": float(np.max(np.abs(integral - exact))),
        f"max |approx(c={c:g}) - phi|": float(approx_error.max()),
        "best-fit c": float(best_c),
        "max error at best-fit c": float(best_error),
    }
    caption = (
        f"φ(r) on {len(r)} log-spaced points in [{r[0]:g}, {r[-1]:g}], the document's integral by quadrature, "
        f"the closed form (2/π)·arctan r and the approximation 1/(1 + r^−{c:g}); max |approx − φ| = "
        f"{approx_error.max():.3f}, best-fit c = {best_c:.3f} (max error {best_error:.3f}). "
        f"Computed, no data; {describe([result], inputs.scale)}"
    )
    return FigureOutput(save_figure(fig, out_dir, ID), caption, numbers, figure=fig)
