"""yt-fig11: E[σ] in the trivial case against n, l, σ_A, σ_V, p and ε; simulated plain and residual nets and
the analytical approximations of the residual case (document 004, appendix D.4.1, Figure 11)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from figures.base import FigureInputs, FigureOutput, config, describe, save_figure
from gradlens.results import Result

ID = "yt-fig11"
ANALYSES = ("trivial_case",)
NEEDS = {"trivial_case": ("x", "plain", "plain_se", "residual", "residual_se", "x_dense", "eq11", "conclusion")}
TRAINED_NETS = False  # simulated and analytical E[σ] of random nets: no training
CLAIM = (
    "Simulated (100K draws) and analytical E[σ] of residual nets almost coincide in (a)–(d); E[σ] rises with l "
    "and p, does not depend on σ_V, and residual nets lie far above plain nets when p is large (document 004, "
    "Figure 11)."
)
LABELS = {"n": "dimension n", "l": "layer index l", "sigma_a": "σ_A", "sigma_v": "σ_V", "p": "p", "eps": "ε"}
LOG_SCALE = ("sigma_a", "sigma_v", "eps")


def at_points(run: Result, form: str) -> np.ndarray:
    """An analytical curve at the simulated points (linear interpolation of the dense grid, in log x where the
    panel is logarithmic)."""
    x, dense = run["x"], run["x_dense"]
    if config(run)["parameter"] in LOG_SCALE:
        x, dense = np.log(x), np.log(dense)
    return np.interp(x, dense, run[form])


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    runs = sorted(inputs.runs["trivial_case"], key=lambda r: config(r)["panel"])
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    numbers: dict[str, object] = {}
    notes = []
    for ax, run in zip(axes.flat, runs, strict=True):
        meta = config(run)
        parameter = meta["parameter"]
        x = run["x"]
        ax.errorbar(x, run["plain"], yerr=run["plain_se"], color="tab:blue", marker="o", ms=3, label="plain, simulated")
        ax.errorbar(x, run["residual"], yerr=run["residual_se"], color="tab:red", marker="o", ms=3,
                    label="residual, simulated")
        ax.plot(run["x_dense"], run["eq11"], color="tab:red", ls=":", lw=1.8, label="residual, eq. 11 (p′)")
        ax.plot(run["x_dense"], run["conclusion"], color="darkred", ls="-.", lw=1,
                label="residual, 'in conclusion' (L−l)")
        if parameter in LOG_SCALE:
            ax.set_xscale("log")
        ax.set_xlabel(LABELS[parameter])
        ax.set_ylabel("E[σ]")
        ax.set_title(f"({meta['panel']}) E[σ] vs {LABELS[parameter]}")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        gaps = {form: float(np.max(np.abs(at_points(run, form) - run["residual"]))) for form in ("eq11", "conclusion")}
        numbers[f"({meta['panel']}) max |sim - eq11|"] = gaps["eq11"]
        numbers[f"({meta['panel']}) max |sim - conclusion|"] = gaps["conclusion"]
        notes.append(f"({meta['panel']}) {gaps['eq11']:.3f} / {gaps['conclusion']:.3f}")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Dominant gradient flow in the trivial case (document 004, Figure 11)")
    fig.tight_layout()
    first = config(runs[0])
    defaults = ", ".join(f"{k} = {v}" for k, v in first["defaults"].items())
    caption = (
        f"Monte Carlo E[σ] ({first['draws']} draws per point, seed 0; error bars ± 1 standard error) of Θ = "
        f"[Π (K^(m))ᵀ S^(m)] V with K = I + εA (residual) or K′ = A′ (plain), A entries N(0, σ_A²), S Bernoulli(p), "
        f"V N(0, σ_V²); defaults {defaults}. Dotted: eq. 11 with p′ = Σ p^(2(L−m+1)); dash-dot: the document's "
        f"'in conclusion' form with L − l in place of p′. Max |simulated − analytical| per panel (eq. 11 / "
        f"conclusion): {'; '.join(notes)}. Sweep ranges are ours (the document's figure is an image). Computed, no "
        f"data; {describe(runs, inputs.scale)}"
    )
    return FigureOutput(save_figure(fig, out_dir, ID), caption, numbers, figure=fig)
