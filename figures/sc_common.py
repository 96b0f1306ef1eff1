"""What the items of document 000 (SCNet) share: epoch boundaries, the runs of the main comparison and its
preset, the depths the loss and gradient panels show, final accuracies, mean ± sd over seeds, the ablation bars
(sc-fig7–9). Not a figure module; imports only :mod:`figures.base` of ``figures/``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from figures.base import FigureInputs, FigureOutput, Recorded, chance_check, config, describe, final_scalar, save_figure


def epoch_ends(run: Recorded) -> np.ndarray:
    """The optimizer step at which each epoch ended ``[E]`` (the step the trainer logged ``epoch`` at)."""
    scalars = run.scalars()
    return scalars[scalars["name"] == "epoch"]["step"].to_numpy()


def epoch_steps(run: Recorded, first: int, last: int) -> tuple[int, int]:
    """Inclusive step range ``(start, stop)`` of epochs ``first .. last`` (1-based)."""
    ends = epoch_ends(run)
    start = 0 if first == 1 else int(ends[first - 2]) + 1
    return start, int(ends[last - 1])


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def seeds_of(runs: Sequence[Recorded]) -> list[int]:
    """Sorted seeds of ``runs``."""
    return sorted({int(config(r)["seed"]) for r in runs})


def seeds_note(seeds: Sequence[int]) -> str:
    """'seed 0', 'seeds 0, 1' or 'no runs'."""
    if not seeds:
        return "no runs"
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def sc_resnet_defaults(scale: str) -> dict:
    """The main configuration of the sc_resnet sweep at ``scale`` (SC weight, batch size, depths) from its preset."""
    from analyses.runner import preset

    cfg = preset("sc_resnet", scale)
    return {
        "sc_weight": cfg.sc_weight,
        "batch_size": cfg.batch_size,
        "depths": cfg.depths,
        "ablation_depths": cfg.ablation_depths,
    }


def panel_depths(depths: tuple[int, ...]) -> tuple[int, int]:
    """Depth 20 and 56 where the sweep has them, else its shallowest and deepest."""
    return (20 if 20 in depths else min(depths), 56 if 56 in depths else max(depths))


def depth_note(sweep: tuple[int, ...], shown: tuple[int, int], scale: str, panels: tuple[str, str]) -> str:
    """Caption text for the document's depths 20 and 56 that the sweep lacks, naming what is shown instead."""
    notes = [
        f"{where} shows depth {depth} in place of the document's {wanted}"
        for wanted, depth, where in zip((20, 56), shown, panels, strict=True)
        if wanted != depth
    ]
    if not notes:
        return ""
    same = f"; {panels[0]} and {panels[1]} show the same runs" if shown[0] == shown[1] else ""
    return f" The {scale} sweep has depths {', '.join(map(str, sweep))} only: " + "; ".join(notes) + same + "."


def main_runs(inputs, depth: int, sc: bool) -> list[Recorded]:
    """The main-comparison runs (default SC weight, single SC per stage, default batch) of one model."""
    defaults = sc_resnet_defaults(inputs.scale)
    match = {"depth": depth, "sc": sc, "batch_size": defaults["batch_size"]}
    if sc:
        match |= {"sc_weight": defaults["sc_weight"], "sc_rears": "stage_end"}
    return inputs.of("sc_resnet", **match)


def final_accuracies(runs: Sequence[Recorded]) -> list[float]:
    """Final test accuracy (%) of each run."""
    return [100.0 * final_scalar(r, "test_acc") for r in runs]


def grouped_bars(ax, groups: Sequence[str], series: dict[str, list[list[float]]], ylabel: str) -> dict:
    """Grouped bars of accuracies in % (one group per entry of ``groups``, one bar per series) with ±sd error
    bars; the y axis by :func:`accuracy_limits`, the legend outside the axes (right), where it covers no bar.

    Returns ``{series label: (means, sds)}`` as plotted; bars with no runs are left out (height NaN).
    """
    width = 0.8 / len(series)
    x = np.arange(len(groups))
    plotted = {}
    for k, (label, per_group) in enumerate(series.items()):
        stats = [mean_sd(values) if values else (np.nan, 0.0) for values in per_group]
        means = np.array([m for m, _ in stats])
        sds = np.array([s for _, s in stats])
        ax.bar(x + (k - (len(series) - 1) / 2) * width, means, width, yerr=sds, capsize=3, label=label)
        plotted[label] = (means, sds)
    ax.set_xticks(x, groups)
    low = np.concatenate([m[np.isfinite(m)] - s[np.isfinite(m)] for m, s in plotted.values()])
    high = np.concatenate([m[np.isfinite(m)] + s[np.isfinite(m)] for m, s in plotted.values()])
    bottom = 0.0
    if low.size:
        bottom, top = accuracy_limits(float(low.min()), float(high.max()))
        ax.set_ylim(bottom, top)
    ax.set_ylabel(ylabel if bottom == 0 else f"{ylabel}\n(axis starts at {bottom:.3g}, not 0)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return plotted


def accuracy_limits(low: float, high: float) -> tuple[float, float]:
    """y limits (%) for accuracy bars whose bars and error bars span ``low`` .. ``high``: a margin of 15 % of the
    span (at least 1 point) around them, never below 0 or above 100 (unless an error bar is); the axis starts
    at 0 when zooming would cut off less than a fifth of it."""
    pad = 0.15 * max(high - low, 1.0)
    bottom, top = max(low - pad, 0.0), min(high + pad, max(high, 100.0))
    return (0.0 if bottom < 0.2 * top else bottom), top


def accuracy_bars(
    inputs: FigureInputs,
    out_dir: Path,
    item_id: str,
    title: str,
    description: str,
    series: tuple[list[int], dict[str, list[list[Recorded]]]],
) -> FigureOutput:
    """The SCResNet ablation figures (sc-fig7/8/9): final test accuracy per depth as grouped bars (mean ± sd
    over seeds), the plotted numbers and a caption ``description`` + each bar's mean ± sd and seeds + what was
    run.

    ``series`` is ``(depths, label -> the runs of each depth's bar)``. Each bar names its own seeds: the ResNet
    and single-SC bars are the main comparison's runs, which can span more seeds than the ablations'.
    """
    depths, bars = series
    fig, ax = plt.subplots(figsize=(8, 4))
    values = {label: [final_accuracies(runs) for runs in per_depth] for label, per_depth in bars.items()}
    plotted = grouped_bars(ax, [f"depth {d}" for d in depths], values, "test accuracy (%)")
    ax.set_title(title)
    numbers = {
        f"{label} depth {d}": f"{m:.2f}±{s:.2f}"
        for label, (means, sds) in plotted.items()
        for d, m, s in zip(depths, means, sds, strict=True)
    }
    seeds = {f"{label} depth {d}": seeds_of(runs) for label, per_depth in bars.items()
             for d, runs in zip(depths, per_depth, strict=True)}
    used = [run for k in range(len(depths)) for per_depth in bars.values() for run in per_depth[k]]
    caption = (
        description
        + "; ".join(f"{key}: {value} ({seeds_note(seeds[key])})" for key, value in numbers.items())
        + f". {describe(used, inputs.scale)}"
    )
    caption = chance_check(used).annotate(caption, numbers)
    return FigureOutput(save_figure(fig, out_dir, item_id), caption, numbers, figure=fig)
