"""van-fig1: test accuracy vs depth of thin MLPs, MNIST (left) and Fashion-MNIST (right) (document 002, Fig. 1)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from figures.base import (
    CHANCE_MARGIN,
    FigureInputs,
    FigureOutput,
    chance_check,
    config,
    describe,
    run_classes,
    save_figure,
)
from figures.van_common import (
    accuracy_errorbars,
    alpha_update_reading,
    depth_table,
    schedule_text,
    split_not_run,
    steps_per_epoch,
)

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

COLLAPSE_FRACTION = 0.5
"""A variant *collapsed* at a depth when its mean test accuracy is less than this fraction of the way from chance to
the best mean of its panel: the other nets show the task is learned at this scale, and a net that loses over half
of that margin has not degraded, it has failed to train. Judged only when the panel's best net is itself clear of
chance (:data:`figures.base.CHANCE_MARGIN`)."""


def collapsed(table: pd.DataFrame, chance: float) -> pd.DataFrame:
    """The rows of ``table`` (:func:`figures.van_common.depth_table`) that collapsed (:data:`COLLAPSE_FRACTION`)."""
    best = float(table["test_acc_mean"].max())
    if (best - chance) / (1 - chance) < CHANCE_MARGIN:
        return table.iloc[:0]
    return table[table["test_acc_mean"] < chance + COLLAPSE_FRACTION * (best - chance)]


def collapse_note(table: pd.DataFrame, chance: float, dataset: str) -> str:
    """A caption sentence naming every collapsed variant and depth with its per-seed accuracies ('' when none)."""
    fallen = collapsed(table, chance)
    if fallen.empty:
        return ""
    best = table.loc[table["test_acc_mean"].idxmax()]
    listed = "; ".join(
        f"{LABELS[row.variant]} at {row.depth} hidden layers: {100 * row.test_acc_mean:.1f} % mean ("
        + ", ".join(f"seed {seed} {100 * acc:.1f} %" for seed, acc in row.seed_accs)
        + ")"
        for row in fallen.itertuples()
    )
    return (
        f"COLLAPSE on {dataset} (mean test accuracy less than {COLLAPSE_FRACTION:.0%} of the way from chance, "
        f"{100 * chance:.0f} %, to the best net of the panel, {LABELS[best.variant]} at {best.depth} layers with "
        f"{100 * best.test_acc_mean:.1f} %): {listed}; drawn below the broken axis, so that the other curves keep "
        "their scale. "
    )


def accuracy_panel(fig, cell, table: pd.DataFrame, title: str, chance: float) -> list:
    """Test accuracy vs depth in grid cell ``cell``: one axis, or, when a variant collapsed (:func:`collapsed`), a
    broken axis: the upper part spans the other points (mean ± sd), the lower one the collapsed points and chance
    (dotted). Returns the axes, upper first."""
    fallen = collapsed(table, chance)
    if fallen.empty:
        axes = [fig.add_subplot(cell)]
    else:
        upper_cell, lower_cell = cell.subgridspec(2, 1, height_ratios=(3, 1), hspace=0.08)
        upper = fig.add_subplot(upper_cell)
        axes = [upper, fig.add_subplot(lower_cell, sharex=upper)]
    for ax in axes:
        accuracy_errorbars(ax, table, STYLES, LABELS)
        ax.grid(alpha=0.3)
    axes[0].set_title(title)
    axes[0].set_ylabel("test accuracy")
    axes[-1].set_xlabel("hidden layers l")
    if not fallen.empty:
        upper, lower = axes
        sd = np.nan_to_num(table["test_acc_sd"].to_numpy())
        kept = ~table.index.isin(fallen.index)
        top, bottom = (table["test_acc_mean"] + sd)[kept].max(), (table["test_acc_mean"] - sd)[kept].min()
        low = min(chance, (fallen["test_acc_mean"] - sd[~kept]).min())
        high = (fallen["test_acc_mean"] + sd[~kept]).max()
        upper.set_ylim(bottom - 0.08 * (top - bottom), top + 0.08 * (top - bottom))
        lower.set_ylim(low - 0.15 * (high - low), high + 0.15 * (high - low))
        lower.axhline(chance, color="grey", ls=":", lw=1)
        lower.text(1.0, chance, f" chance {100 * chance:.0f} %", transform=lower.get_yaxis_transform(),
                   va="center", ha="left", fontsize=8, color="grey")
        upper.spines["bottom"].set_visible(False)
        lower.spines["top"].set_visible(False)
        upper.tick_params(axis="x", bottom=False, labelbottom=False)
        marks = {"marker": [(-1, -0.5), (1, 0.5)], "markersize": 10, "linestyle": "none", "color": "k",
                 "mec": "k", "mew": 1, "clip_on": False}
        upper.plot([0, 1], [0, 0], transform=upper.transAxes, **marks)  # the break: two slashes per axis
        lower.plot([0, 1], [1, 1], transform=lower.transAxes, **marks)
        lower.set_ylabel("(collapsed)", fontsize=8)
    return axes


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    mnist = inputs.runs["van_thin"]
    fashion, reasons = split_not_run(inputs.runs["van_thin_fashion"])
    fig = plt.figure(figsize=(12, 4.8))
    grid = fig.add_gridspec(1, 2, wspace=0.25)
    dataset = config(mnist[0])["dataset"]
    tables = {dataset: depth_table(mnist, tuple(LABELS))}
    chances = {dataset: 1 / run_classes(mnist[0])}
    main = accuracy_panel(fig, grid[0], tables[dataset], f"{dataset} (document: MNIST)", chances[dataset])
    if fashion:
        tables["fashion_mnist"] = depth_table(fashion, tuple(LABELS))
        chances["fashion_mnist"] = 1 / run_classes(fashion[0])
        accuracy_panel(fig, grid[1], tables["fashion_mnist"], "fashion_mnist", chances["fashion_mnist"])
    else:
        empty = fig.add_subplot(grid[1])
        empty.set_axis_off()
        empty.text(
            0.5,
            0.5,
            "Fashion-MNIST: not run\n(no Fashion-MNIST files under --data-dir, or files\nrefused as not Fashion-MNIST;"
            "\nthe caption gives the full message)",
            ha="center",
            va="center",
            fontsize=11,
            transform=empty.transAxes,
        )
    main[0].legend(fontsize=8, loc="lower left")
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
        numbers[f"{name}: collapsed (variant, depth)"] = ", ".join(
            f"{LABELS[row.variant]} {row.depth}" for row in collapsed(t, chances[name]).itertuples()) or "none"
    first = config(mnist[0])
    drops = []
    for name, t in tables.items():
        deepest = t["depth"].max()
        lost = [numbers.get(f"{name} {v}: best acc at depth<=10 minus acc at {deepest}") for v in ("plain", "van")]
        if None not in lost:
            drops.append(f"{name} {100 * lost[0]:.1f} / {100 * lost[1]:.1f} points (depth {deepest})")
    verdict = f"Loss of accuracy from the best depth ≤ 10 to the deepest net, plain / VAN: {'; '.join(drops)}. "
    verdict = verdict if drops else ""
    collapses = "".join(collapse_note(tables[name], chances[name], name) for name in tables)
    vans = [r for r in mnist if config(r)["variant"] in ("van", "van0")]
    caption = collapses + verdict + (
        f"Final test accuracy after {first['epochs']} epochs"
        + (f" (Fashion-MNIST: {config(fashion[0])['epochs']})" if fashion else "")
        + " vs number of hidden blocks, mean ± sd over seeds "
        f"(error bars). SGD momentum {first['momentum']}, batch {first['batch_size']}, learning rate as recorded: "
        f"{schedule_text(first['train'], steps_per_epoch(mnist[0]))} (document: 0.001 for 50 epochs of the full "
        f"60 000-image set), α init 0, λ init {first['lambda_init']}, η′ = {first['lambda_lr_ratio']}·η. "
        + (alpha_update_reading(config(vans[0])) if vans else "")
        + f"{describe(mnist, inputs.scale)} "
        + (
            "Fashion-MNIST: " + describe(fashion, inputs.scale)
            if fashion
            else "Fashion-MNIST was not run (" + "; ".join(reasons) + ")."
        )
    )
    caption = chance_check([*mnist, *fashion]).annotate(caption, numbers)
    return FigureOutput(save_figure(fig, out_dir, ID), caption, numbers, figure=fig, table=table)
