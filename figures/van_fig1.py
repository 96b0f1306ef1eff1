"""van-fig1: test accuracy vs depth of thin MLPs, MNIST (left) and Fashion-MNIST (right) (document 002, Fig. 1)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from figures.base import (
    FigureInputs,
    FigureOutput,
    chance_check,
    config,
    describe,
    final_scalar,
    save_figure,
    values_of,
)
from figures.van_common import mean_sd, split_not_run

ID = "van-fig1"
ANALYSES = ("van_thin", "van_thin_fashion")
NEEDS = {"van_thin": ("scalars/test_acc",), "van_thin_fashion": ()}
TRAINED_NETS = True
CLAIM = (
    "Plain thin nets degrade once depth exceeds about 10 layers; ResNet, Highway and DiracNet do not, and VAN "
    "does not degrade nearly as much as plain; VAN(λ = 0) is competitive at all depths (document 002, 4.1)."
)
LABELS = {
    "plain": "Plain",
    "resnet": "ResNet",
    "highway": "Highway",
    "dirac": "DiracNet",
    "van": "VAN",
    "van0": "VAN (λ=0)",
}
STYLES = {
    "plain": ("k", "o"),
    "resnet": ("C0", "s"),
    "highway": ("C2", "^"),
    "dirac": ("C4", "v"),
    "van": ("C3", "D"),
    "van0": ("C1", "x"),
}


def accuracy_table(runs: list) -> pd.DataFrame:
    """One row per variant × depth: final test accuracy mean and sd over seeds, and the seed count."""
    rows = []
    for variant in [v for v in LABELS if any(config(r)["variant"] == v for r in runs)]:
        for depth in values_of([r for r in runs if config(r)["variant"] == variant], "depth"):
            accs = [
                final_scalar(r, "test_acc")
                for r in runs
                if config(r)["variant"] == variant and config(r)["depth"] == depth
            ]
            mean, sd = mean_sd(accs)
            rows.append(
                {"variant": variant, "depth": depth, "test_acc_mean": mean, "test_acc_sd": sd, "seeds": len(accs)}
            )
    return pd.DataFrame(rows)


def _panel(ax, table: pd.DataFrame, title: str) -> None:
    for variant, group in table.groupby("variant", sort=False):
        colour, marker = STYLES[variant]
        ax.errorbar(
            group["depth"],
            group["test_acc_mean"],
            yerr=np.nan_to_num(group["test_acc_sd"]),
            color=colour,
            marker=marker,
            ms=4,
            capsize=3,
            label=LABELS[variant],
        )
    ax.set_xlabel("hidden layers l")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    mnist = inputs.runs["van_thin"]
    fashion, reasons = split_not_run(inputs.runs["van_thin_fashion"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    dataset = config(mnist[0])["dataset"]
    tables = {dataset: accuracy_table(mnist)}
    _panel(axes[0], tables[dataset], f"{dataset} (document: MNIST)")
    if fashion:
        tables["fashion_mnist"] = accuracy_table(fashion)
        _panel(axes[1], tables["fashion_mnist"], "fashion_mnist")
    else:
        axes[1].set_axis_off()
        axes[1].text(
            0.5,
            0.5,
            "Fashion-MNIST: not run\n(no Fashion-MNIST files under --data-dir, or files\nrefused as not Fashion-MNIST;"
            "\nthe caption gives the full message)",
            ha="center",
            va="center",
            fontsize=11,
            transform=axes[1].transAxes,
        )
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle("Test accuracy vs depth, thin 50-unit nets (document 002, Figure 1)")
    table = pd.concat([t.assign(dataset=name) for name, t in tables.items()], ignore_index=True)
    numbers = {}
    for name, t in tables.items():
        by = t.set_index(["variant", "depth"])["test_acc_mean"]
        deepest = t["depth"].max()
        for variant in LABELS:
            if (variant, deepest) in by.index:
                best_shallow = by[variant][by[variant].index <= 10].max()
                numbers[f"{name} {variant}: acc at depth {deepest}"] = float(by[variant, deepest])
                numbers[f"{name} {variant}: best acc at depth<=10 minus acc at {deepest}"] = float(
                    best_shallow - by[variant, deepest]
                )
    first = config(mnist[0])
    deepest = tables[dataset]["depth"].max()
    drops = {v: numbers.get(f"{dataset} {v}: best acc at depth<=10 minus acc at {deepest}") for v in ("plain", "van")}
    verdict = (
        f"Loss of accuracy from the best depth ≤ 10 to depth {deepest}: plain {100 * drops['plain']:.1f} points, "
        f"VAN {100 * drops['van']:.1f} points. "
        if None not in drops.values()
        else ""
    )
    caption = verdict + (
        f"Final test accuracy after {first['epochs']} epochs vs number of hidden blocks, mean ± sd over seeds "
        f"(error bars). SGD momentum {first['momentum']}, batch {first['batch_size']}, η = {first['lr']} "
        f"(document: 0.001 for 50 epochs of the full 60 000-image set), α init 0, λ init {first['lambda_init']}, "
        f"η′ = {first['lambda_lr_ratio']}·η. {describe(mnist, inputs.scale)} "
        + (
            "Fashion-MNIST: " + describe(fashion, inputs.scale)
            if fashion
            else "Fashion-MNIST was not run (" + "; ".join(reasons) + ")."
        )
    )
    caption = chance_check([*mnist, *fashion]).annotate(caption, numbers)
    return FigureOutput(save_figure(fig, out_dir, ID), caption, numbers, figure=fig, table=table)
