"""sc-fig5: per-layer mean gradient of the five-layer sigmoid FCN vs SCFCN (short circuit fc4 → fc2) on a log
axis (document 000, section 5.2.1, Figure 5)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from figures.base import FigureInputs, FigureOutput, chance_check, config, describe, grad_profile, save_figure
from figures.sc_common import seeds_of

ID = "sc-fig5"
ANALYSES = ("sc_fcn",)
NEEDS = {"sc_fcn": ("grad_stats/mean", "grad_stats/mean_abs", "scalars/test_acc")}
TRAINED_NETS = True
CLAIM = (
    "In the five-layer sigmoid FCN the mean gradient falls from about 1e-2 to 1e-4 over five layers; the short "
    "circuit from layer 4 to layer 2 (SCFCN) greatly enhances the gradient of layer 2 (document 000, Figure 5)."
)
MODELS = (("sigmoid_fcn_5", "FCN", "C0", "o"), ("scfcn_5", "SCFCN (SC fc4 → fc2)", "C2", "s"))


def profiles(inputs: FigureInputs) -> dict[str, dict[str, np.ndarray]]:
    """model -> {"mean_abs", "abs_mean"}: per-layer values averaged over all steps, then over seeds."""
    out = {}
    for model, *_ in MODELS:
        runs = inputs.of("sc_fcn", model=model)
        mean_abs = np.mean([grad_profile(r, "mean_abs")[1] for r in runs], axis=0)
        abs_mean = np.mean([np.abs(grad_profile(r, "mean")[1]) for r in runs], axis=0)
        out[model] = {"mean_abs": mean_abs, "abs_mean": abs_mean}
    return out


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    runs = inputs.runs["sc_fcn"]
    values = profiles(inputs)
    layers = np.arange(1, len(values["sigmoid_fcn_5"]["mean_abs"]) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = (("mean_abs", "mean |∂J/∂W| per layer"), ("abs_mean", "|mean ∂J/∂W| per layer (signed mean)"))
    for ax, (key, label) in zip(axes, panels, strict=True):
        for model, name, colour, marker in MODELS:
            ax.plot(layers, values[model][key], marker=marker, color=colour, label=name)
        ax.set_yscale("log")
        ax.set_xticks(layers, [f"fc{i}" for i in layers])
        ax.set_xlabel("layer")
        ax.set_ylabel(label)
        ax.axvspan(1.7, 2.3, color="C2", alpha=0.08)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0].set_title("(a) mean absolute gradient")
    axes[1].set_title("(b) absolute value of the signed mean gradient")
    fcn, sc = values["sigmoid_fcn_5"]["mean_abs"], values["scfcn_5"]["mean_abs"]
    decades = float(np.log10(fcn.max() / fcn[0]))
    lift = float(sc[1] / fcn[1])
    accuracy = {
        m: float(
            np.mean([r.scalars().query("name == 'test_acc'")["value"].iloc[-1] for r in inputs.of("sc_fcn", model=m)])
        )
        for m, *_ in MODELS
    }
    cfg = config(runs[0])
    fig.suptitle("Mean gradient per layer, 5-layer sigmoid FCN vs SCFCN (document 000, Figure 5)")
    numbers = {
        "FCN mean|g| fc1..fc5": ", ".join(f"{v:.2e}" for v in fcn),
        "SCFCN mean|g| fc1..fc5": ", ".join(f"{v:.2e}" for v in sc),
        "FCN decades (max layer / fc1)": round(decades, 2),
        "fc2 lift SCFCN / FCN": round(lift, 2),
        "test acc FCN / SCFCN": f"{accuracy['sigmoid_fcn_5']:.4f} / {accuracy['scfcn_5']:.4f}",
    }
    caption = (
        f"Per-layer weight-gradient statistics of GradStats averaged over every training step and over "
        f"{len(seeds_of(runs))} seeds; SC weight {cfg['sc_weight']}, width {cfg['width']}, SGD lr {cfg['lr']}, "
        f"batch {cfg['batch_size']} (the document gives no widths or optimiser). The FCN's mean |gradient| spans "
        f"{decades:.2f} decades between fc1 and its largest layer (document: about two, 1e-2 to 1e-4); the SC "
        f"multiplies fc2's mean |gradient| by {lift:.2f}. Final test accuracy FCN {accuracy['sigmoid_fcn_5']:.3f}, "
        f"SCFCN {accuracy['scfcn_5']:.3f}. {describe(runs, inputs.scale)}"
    )
    caption = chance_check(runs).annotate(caption, numbers)
    return FigureOutput(save_figure(fig, out_dir, ID), caption, numbers, figure=fig)
