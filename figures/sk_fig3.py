"""sk-fig3: 2-D loss landscapes around the trained weights (filter-normalised random directions, Li et al.
2018) of a deep MLP without and with skip connections at equal depth (document 001)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from figures.base import FigureInputs, FigureOutput, chance_check, config, describe, save_figure

ID = "sk-fig3"
ANALYSES = ("skip_landscape",)
NEEDS = {"skip_landscape": ("alphas", "betas", "loss", "center_loss", "final_test_acc")}
TRAINED_NETS = True
CLAIM = (
    "Skip connections change the loss landscape markedly: without them the surface around the minimum is "
    "chaotic and non-convex, with them it is smooth and nearly convex (document 001, after Li et al. 2018)."
)


def nonconvexity(loss: np.ndarray) -> float:
    """Fraction of interior grid points where the discrete Laplacian of log10(loss) is negative."""
    z = np.log10(loss)
    laplacian = z[:-2, 1:-1] + z[2:, 1:-1] + z[1:-1, :-2] + z[1:-1, 2:] - 4 * z[1:-1, 1:-1]
    return float((laplacian < 0).mean())


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    runs = inputs.runs["skip_landscape"]
    seed = min(config(r)["seed"] for r in runs)
    chosen = [inputs.one("skip_landscape", kind=k, seed=seed) for k in ("plain", "resnet")]
    fig = plt.figure(figsize=(12, 10))
    numbers = {}
    levels = None
    for col, (result, label) in enumerate(zip(chosen, ("without skips (plain)", "with skips (residual)"), strict=True)):
        cfg = config(result)
        alphas, betas, loss = result["alphas"], result["betas"], result["loss"]
        z = np.log10(loss)
        if levels is None:
            levels = np.linspace(
                min(np.log10(r["loss"]).min() for r in chosen), max(np.log10(r["loss"]).max() for r in chosen), 30
            )
        ax = fig.add_subplot(2, 2, col + 1)
        contour = ax.contour(alphas, betas, z.T, levels=levels, cmap="viridis", linewidths=0.8)
        ax.plot([0], [0], "r*", ms=9)
        ax.set_xlabel("α (direction δ)")
        ax.set_ylabel("β (direction η)")
        ax.set_aspect("equal")
        ax.set_title(f"({'ab'[col]}) {cfg['model']}, {label}: contours of log10 loss", fontsize=9)
        surf = fig.add_subplot(2, 2, col + 3, projection="3d")
        grid_a, grid_b = np.meshgrid(alphas, betas, indexing="ij")
        surf.plot_surface(grid_a, grid_b, z, cmap="viridis", linewidth=0, antialiased=True)
        surf.set_zlim(levels[0], levels[-1])
        surf.set_xlabel("α")
        surf.set_ylabel("β")
        surf.set_zlabel("log10 loss")
        surf.set_title(f"({'cd'[col]}) surface", fontsize=9)
        kind = cfg["kind"]
        numbers[f"{kind} centre loss"] = round(float(result["center_loss"]), 4)
        numbers[f"{kind} max loss on grid"] = f"{loss.max():.3g}"
        numbers[f"{kind} non-convex fraction"] = round(nonconvexity(loss), 3)
        numbers[f"{kind} final test acc"] = round(float(result["final_test_acc"]), 4)
    fig.colorbar(contour, ax=fig.axes[:1], shrink=0.7, label="log10 loss")
    fig.suptitle("Loss landscape without and with skip connections at equal depth (document 001, Li et al. 2018)")
    cfg = config(chosen[0])
    caption = (
        f"L(θ + αδ + βη) of mlp_plain_{cfg['depth']} and mlp_resnet_{cfg['depth']} (width {cfg['width']}, He init, "
        f"SGD lr {cfg['lr']}, seed {seed}) around their trained weights, on a {cfg['resolution']}×"
        f"{cfg['resolution']} grid over [−{cfg['span']}, {cfg['span']}]², {cfg['landscape_samples']} test "
        "samples per point; δ, η filter-normalised Gaussian directions (biases: zero direction); common colour "
        "scale. Plain: centre loss {pc}, max {pm}, non-convex fraction {pn} (share of grid points with a "
        "negative Laplacian of log loss); residual: {rc}, {rm}, {rn}. Li et al. used CIFAR-10 ResNet-56/110 "
        "with and without shortcuts; here MLPs on the data named. ".format(
            pc=numbers["plain centre loss"],
            pm=numbers["plain max loss on grid"],
            pn=numbers["plain non-convex fraction"],
            rc=numbers["resnet centre loss"],
            rm=numbers["resnet max loss on grid"],
            rn=numbers["resnet non-convex fraction"],
        )
        + describe(runs, inputs.scale)
    )
    caption = chance_check(chosen).annotate(caption, numbers)
    return FigureOutput(save_figure(fig, out_dir, ID), caption, numbers, figure=fig)
