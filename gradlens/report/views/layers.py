"""Per-layer views: a quantity per layer at chosen steps (profile), runs overlaid, a layer × step heat-map,
and the global gradient norm over steps.

Non-finite values are never dropped silently: heat-map cells are red, profile layers get a red ×, the norm
curve a red band over the steps, and every caption says where. Cells of layers without a value by design
(no gradient, or a ratio over a zero weight norm) are grey.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from gradlens.report.common import LayerArray, align, chosen_steps  # noqa: E402
from gradlens.report.views.drawing import (  # noqa: E402
    MISSING_WORDS,
    NO_GRAD_COLOUR,
    NONFINITE_COLOUR,
    Groups,
    Section,
    band,
    describe_spans,
    group_arrays,
    integer_steps,
    layer_ticks,
    mark_nonfinite_steps,
    panel_grid,
    panel_title,
    quiet_mean,
    step_edges,
)


def _first_bad_step(arrays: Sequence[LayerArray]) -> int | None:
    steps = [int(a.steps[np.argwhere(a.nonfinite.any(axis=1))[0][0]]) for a in arrays if a.nonfinite.any()]
    return min(steps) if steps else None


def profile_section(
    groups: Groups, key, quantity: str, title: str, ylabel: str, log: bool | None = None, ylim=None
) -> Section | None:
    """Per-layer ``quantity`` vs layer (by name, forward order) at chosen steps; one panel per group."""
    found = group_arrays(groups, key, quantity)
    if not found:
        return None
    fig, axes = panel_grid(len(found), width=max(5.4, min(14, 0.22 * _layer_count(found))), columns=2)
    data: dict = {}
    notes = []
    order = _layer_order(found)
    for ax, (label, (runs, arrays)) in zip(axes, found.items(), strict=True):
        steps, layers, stacked = align(arrays, order)
        nonfinite = np.stack([_aligned_mask(a, steps, layers, "nonfinite") for a in arrays])
        bad_step = _first_bad_step(arrays)
        include = [] if bad_step is None else [bad_step, *steps[steps < bad_step][-1:].tolist()]
        picked = chosen_steps(steps, include=include)
        colours = plt.cm.viridis(np.linspace(0, 0.9, len(picked)))
        x = np.arange(len(layers))
        marker_transform = blended_transform_factory(ax.transData, ax.transAxes)
        panel = {}
        missing = np.stack([_aligned_mask(a, steps, layers, "missing") for a in arrays]).all(axis=0)
        missing_layers: set[str] = set()
        for step, colour in zip(picked, colours, strict=True):
            row = int(np.searchsorted(steps, step))
            mean = quiet_mean(stacked[:, row, :])
            bad = nonfinite[:, row, :].any(axis=0)
            shown = np.where(bad, np.nan, mean)
            name = f"step {step}" + (f" ({int(bad.sum())} non-finite: ×)" if bad.any() else "")
            ax.plot(x, shown, marker="o", ms=3, color=colour, label=name)
            if len(runs) > 1:
                low, high = band(stacked[:, row, :])
                ax.fill_between(x, low, high, color=colour, alpha=0.2, lw=0)
            empty = missing[row]
            if empty.any():
                ax.plot(
                    x[empty],
                    np.full(int(empty.sum()), 0.04),
                    "o",
                    mfc="none",
                    color=NO_GRAD_COLOUR,
                    ms=6,
                    transform=marker_transform,
                    label="_missing",
                )
                missing_layers.update(layers[i] for i in np.flatnonzero(empty))
            if bad.any():
                ax.plot(
                    x[bad],
                    np.full(int(bad.sum()), 0.96),
                    "x",
                    color=NONFINITE_COLOUR,
                    ms=7,
                    mew=2,
                    transform=marker_transform,
                    label="_nonfinite",
                )
            panel[step] = shown
        data[label] = {"layers": layers, "steps": picked, "values": panel}
        if missing_layers:
            notes.append(f"{label}: {len(missing_layers)} layers {MISSING_WORDS} (grey ○ at the bottom)")
        positive = stacked[np.isfinite(stacked)]
        if (log is None and positive.size and (positive > 0).all()) or log:
            ax.set_yscale("log")
        if ylim is not None:
            ax.set_ylim(*ylim)
        layer_ticks(ax, layers)
        ax.set_xlabel("layer (input → output)")
        ax.set_ylabel(ylabel)
        ax.set_title(panel_title(label, runs), fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        if bad_step is not None:
            notes.append(f"{label}: non-finite values from step {bad_step} (red × above the layer)")
    caption = (
        f"{ylabel} per layer at log-spaced recorded steps (always the first and last; also the first step "
        "with a non-finite value and the step before it)."
    )
    if notes:
        caption += " " + "; ".join(notes) + "."
    return Section(title, fig, caption, kind="profile", data=data)


def overlay_section(groups: Groups, key, quantity: str, title: str, ylabel: str) -> Section | None:
    """Every group in one panel: per-layer ``quantity`` averaged over each run's finite records, then the
    group mean (band min–max over its runs); layers aligned by name."""
    found = group_arrays(groups, key, quantity)
    if len(found) < 2:
        return None
    order = _layer_order(found)
    fig, ax = plt.subplots(figsize=(max(6.5, min(14, 0.22 * len(order))), 4), layout="constrained")
    data = {}
    x = np.arange(len(order))
    for index, (label, (runs, arrays)) in enumerate(found.items()):
        _, layers, stacked = align(arrays, order)
        finite = np.where(np.isfinite(stacked), stacked, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            per_run = np.nanmean(finite, axis=1)  # [R, L]: mean over the run's finite records
        mean = quiet_mean(per_run)
        ax.plot(x, mean, marker="o", ms=3, color=f"C{index}", label=panel_title(label, runs))
        if len(runs) > 1:
            low, high = band(per_run)
            ax.fill_between(x, low, high, color=f"C{index}", alpha=0.2, lw=0)
        data[label] = {"layers": layers, "values": mean, "per_run": per_run}
    finite = np.concatenate([d["values"][np.isfinite(d["values"])] for d in data.values()])
    if finite.size and (finite > 0).all():
        ax.set_yscale("log")
    layer_ticks(ax, order)
    ax.set_xlabel("layer (input → output)")
    ax.set_ylabel(f"{ylabel}, mean over recorded steps")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    caption = (
        f"{ylabel} per layer, averaged over each run's finite records; runs aligned by layer name "
        "(a layer a run lacks is a gap)."
    )
    return Section(title, fig, caption, kind="overlay", data=data)


def _layer_order(found) -> list[str]:
    """Every layer of every group, in the first run's forward order: all panels share one numbering."""
    return list(dict.fromkeys(name for _, arrays in found.values() for array in arrays for name in array.layers))


def _layer_count(found) -> int:
    return len(_layer_order(found))


def _aligned_mask(array: LayerArray, steps: np.ndarray, layers: list[str], which: str) -> np.ndarray:
    mask = getattr(array, which)
    out = np.zeros((len(steps), len(layers)), dtype=bool)
    rows = np.searchsorted(array.steps, steps)
    position = {name: i for i, name in enumerate(array.layers)}
    for j, name in enumerate(layers):
        if name in position:
            out[:, j] = mask[rows, position[name]]
    return out


def heatmap_section(groups: Groups, key, quantity: str, title: str, label: str, log: bool = True) -> Section | None:
    """``quantity`` (log10 when ``log``) as a layer × step heat-map; one panel per group, shared colours.

    Non-finite cells are red, cells of layers without a gradient grey; steps may be unevenly spaced.
    """
    found = group_arrays(groups, key, quantity)
    if not found:
        return None
    panels = {}
    order = _layer_order(found)
    for name, (runs, arrays) in found.items():
        steps, layers, stacked = align(arrays, order)
        with np.errstate(divide="ignore", invalid="ignore"):
            shown = np.log10(np.where(stacked > 0, stacked, np.nan)) if log else stacked
        shown = quiet_mean(np.where(np.isfinite(stacked), shown, np.nan))
        nonfinite = np.stack([_aligned_mask(a, steps, layers, "nonfinite") for a in arrays]).any(axis=0)
        missing = np.stack([_aligned_mask(a, steps, layers, "missing") for a in arrays]).all(axis=0)
        if len(steps):
            panels[name] = (runs, steps, layers, shown, nonfinite, missing)
    if not panels:
        return None
    finite = np.concatenate([p[3][np.isfinite(p[3])] for p in panels.values()] + [np.zeros(0)])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    tall = max(len(p[2]) for p in panels.values())
    fig, axes = panel_grid(len(panels), width=6.2, height=max(3.8, min(16, 0.16 * tall + 1.5)), columns=2)
    cmap = plt.get_cmap("magma").with_extremes(bad=NO_GRAD_COLOUR)
    notes = []
    data = {}
    mesh = None
    for ax, (name, (runs, steps, layers, shown, nonfinite, empty)) in zip(axes, panels.items(), strict=True):
        x_edges = step_edges(steps)
        y_edges = np.arange(len(layers) + 1) - 0.5
        mesh = ax.pcolormesh(x_edges, y_edges, np.ma.masked_invalid(shown.T), cmap=cmap, vmin=lo, vmax=hi)
        if nonfinite.any():
            ax.pcolormesh(
                x_edges,
                y_edges,
                np.ma.masked_where(~nonfinite.T, np.ones(nonfinite.T.shape)),
                cmap=ListedColormap([NONFINITE_COLOUR]),
                vmin=0,
                vmax=1,
            )
            first = int(steps[np.argwhere(nonfinite.any(axis=1))[0][0]])
            notes.append(f"{name}: {int(nonfinite.sum())} non-finite cells (red) from step {first}")
        missing = empty & ~nonfinite
        if missing.any():
            notes.append(f"{name}: {int(missing.any(axis=0).sum())} layers {MISSING_WORDS} at some step (grey)")
        ax.invert_yaxis()  # first layer on top
        layer_ticks(ax, layers, axis="y")
        integer_steps(ax)
        ax.set_xlabel("optimizer step")
        ax.set_title(panel_title(name, runs), fontsize=10)
        data[name] = {"steps": steps, "layers": layers, "values": shown, "nonfinite": nonfinite}
    fig.colorbar(mesh, ax=axes, label=("log10 " if log else "") + label)
    caption = f"{'log10 ' if log else ''}{label} per layer (rows, first layer on top) and recorded step (columns)."
    if notes:
        caption += " " + "; ".join(notes) + "."
    return Section(title, fig, caption, kind="heatmap", data=data)


def total_norm_section(groups: Groups, key, quantity: str = "norm") -> Section | None:
    """The global gradient norm √(Σ_ℓ ‖g_ℓ‖²) over steps; red bands where it is not finite."""
    found = group_arrays(groups, key, quantity)
    if not found:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    data = {}
    notes = []
    for index, (name, (runs, arrays)) in enumerate(found.items()):
        steps, _, stacked = align(arrays)
        with np.errstate(over="ignore", invalid="ignore"):
            totals = np.sqrt(np.nansum(np.where(np.isfinite(stacked), stacked, 0) ** 2, axis=2))
        bad = np.stack([a.nonfinite[np.searchsorted(a.steps, steps)].any(axis=1) for a in arrays]).any(axis=0)
        mean = np.where(bad, np.nan, totals.mean(axis=0))
        ax.plot(steps, mean, lw=1, color=f"C{index}", label=panel_title(name, runs))
        if len(runs) > 1:
            ax.fill_between(steps, totals.min(axis=0), totals.max(axis=0), color=f"C{index}", alpha=0.2, lw=0)
        spans = mark_nonfinite_steps(ax, steps, bad)
        if spans:
            notes.append(f"{name}: not finite at steps {describe_spans(spans)} (red)")
        data[name] = {"steps": steps, "values": mean}
    drawn = np.concatenate([d["values"][np.isfinite(d["values"])] for d in data.values()])
    if drawn.size and drawn.min() > 0 and drawn.max() / drawn.min() > 10:
        ax.set_yscale("log")
    integer_steps(ax)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("‖g‖₂ over all recorded parameters")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    caption = "Global gradient norm √(Σ_ℓ ‖g_ℓ‖²) over the recorded parameters at every recorded step."
    if notes:
        caption += " " + "; ".join(notes) + "."
    return Section("Global gradient norm", fig, caption, kind="series", data=data)
