"""yt-fig3: histogram of the per-sample layer cushion at the 10th layer, plain vs residual simplified nets of two
depths after training (document 004, section 5, Figure 3).

The nets are the Table-1 runs (analysis ``simplified_noise``: ``simplified_training`` runs, the files yt-tab1
reads), which record the noise-stability probes.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter

from figures.base import FigureInputs, FigureOutput, Recorded, chance_check, config, final_test_accuracy, save_figure
from figures.yt_common import noise, probe_record, training_setup

ID = "yt-fig3"
ANALYSES = ("simplified_noise",)
TRAINED_NETS = True
NEEDS = {"simplified_noise": ("layer_cushion/mu", "scalars/test_acc")}
CLAIM = (
    "The per-sample layer cushion μ = ‖A x‖ / (‖A‖_F ‖x‖) of the 10th layer is larger for ResNets (red) than "
    "for PlnNets (blue) at depths 20 and 32 (‖A‖_F of ResNets measured after removing 1 from the ID entries): "
    "better noise stability; the pattern holds for all layers but two (document 004, Figure 3)."
)
BINS = 20


def test_accuracy(run: Recorded) -> float:
    """The final test accuracy of ``run``; an error naming the file when it recorded none."""
    acc = final_test_accuracy(run)
    if acc is None:
        raise ValueError(f"{run.path} recorded no test accuracy")
    return acc


def cushions(run: Recorded) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """μ ``[layer, sample]`` at the last recorded step, the finite μ of the cushion layer, the layer names."""
    _, values, layers = probe_record(run, "layer_cushion", "mu")
    mu = values[-1]
    row = mu[layers.index(config(run)["cushion_layer_name"])]
    return mu, row[np.isfinite(row)], layers


def log_bins(values: np.ndarray, count: int = BINS) -> np.ndarray:
    """``count`` log-spaced bins spanning the positive ``values`` (each net gets its own bins: the two
    distributions are narrow compared with the gap between them)."""
    values = values[values > 0]
    return np.logspace(np.log10(values.min()), np.log10(values.max()), count + 1)


def untrained_note(runs: list[Recorded]) -> str:
    """A sentence naming the nets whose test accuracy stayed below 50 %: the document measures trained nets."""
    weak = [f"{config(r)['model']} ({100 * test_accuracy(r):.1f} %)" for r in runs if test_accuracy(r) < 0.5]
    if not weak:
        return ""
    return (f"Caution: {', '.join(weak)} ended below 50 % test accuracy (still on the initial plateau or collapsed to "
            f"a constant prediction), so {'its' if len(weak) == 1 else 'their'} cushions describe an untrained net, "
            "not the pre-trained ones of the document. ")


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    runs = inputs.runs["simplified_noise"]
    depths = sorted({config(r)["depth"] for r in runs})
    fig, axes = plt.subplots(1, len(depths), figsize=(5.2 * len(depths), 4.0), squeeze=False)
    numbers: dict[str, object] = {}
    notes = []
    for ax, depth in zip(axes[0], depths, strict=True):
        plain = inputs.one("simplified_noise", depth=depth, kind="plain")
        residual = inputs.one("simplified_noise", depth=depth, kind="residual")
        (mu_p, row_p, layers), (mu_r, row_r, _) = cushions(plain), cushions(residual)
        for row, run, colour, label in ((row_p, plain, "tab:blue", "PlnNet"), (row_r, residual, "tab:red", "ResNet")):
            # the edge keeps a bin narrower than a pixel visible (an untrained net's μ can cluster tightly)
            ax.hist(row, bins=log_bins(row), color=colour, edgecolor=colour, linewidth=0.8, alpha=0.6,
                    label=f"{label} (median {np.median(row):.3g}, test acc {test_accuracy(run):.3f})")
        name = config(plain)["cushion_layer_name"]
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"per-sample layer cushion μ, layer {noise(plain)['cushion_layer']} ({name})")
        ax.set_ylabel("samples")
        ax.set_title(f"depth {depth}")
        ax.legend(fontsize=8)
        medians_p, medians_r = np.nanmedian(mu_p, axis=1), np.nanmedian(mu_r, axis=1)
        above = int(np.sum(medians_r > medians_p))
        numbers[f"test acc plain {depth}"] = test_accuracy(plain)
        numbers[f"test acc residual {depth}"] = test_accuracy(residual)
        numbers[f"median mu plain {depth}"] = float(np.median(row_p))
        numbers[f"median mu residual {depth}"] = float(np.median(row_r))
        numbers[f"layers with residual median > plain, depth {depth}"] = f"{above} of {len(layers)}"
        notes.append(
            f"depth {depth}: medians {np.median(row_p):.3g} (plain) vs {np.median(row_r):.3g} (residual); the "
            f"residual median is higher at {above} of the {len(layers)} layers measured"
        )
    fig.suptitle("Per-sample layer cushion after training (document 004, Figure 3)")
    fig.tight_layout()
    caption = (
        f"Histograms of μ (20 log-spaced bins per net) on the fixed probe batch of {noise(runs[0])['probe_size']} "
        f"test samples, recorded by the "
        f"LayerCushion probe at the last training step (eval mode; residual layers: ‖x + A x‖ / (‖A‖_F ‖x‖), "
        f"‖A‖_F of the residual weights, i.e. the equivalent plain layer with 1 removed from its ID entries). "
        f"The nets are the Table-1 runs (plain KWI / residual HMWI init; yt-tab1 reads the same files, so the "
        f"test accuracies here are its). {'; '.join(notes)}. Every "
        f"convolution is measured, as in the document; for the two channel-doubling block convolutions of a "
        f"ResNet the identity part is the map of their ID entries (document 004, eq. 1: the option-A shortcut, "
        f"x subsampled in the first C of 2C channels), on which T is exact. "
        f"{untrained_note(runs)}Training: {training_setup(runs, inputs.scale)} Document (CIFAR-10, 200 epochs): "
        f"test errors 0.1263 (PlnNet) and 0.1122 (ResNet) at depth 20, 0.1349 and 0.1121 at depth 32."
    )
    caption = chance_check(runs).annotate(caption, numbers)
    return FigureOutput(save_figure(fig, out_dir, ID), caption, numbers, figure=fig)
