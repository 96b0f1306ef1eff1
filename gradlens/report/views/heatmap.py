"""The layer × step heat-map of a per-layer quantity: one panel per group, shared colour scale (log or
linear, named on the colour bar), state cells coloured over the values: no gradient grey, exactly 0 blue (log
scale), non-finite red, with a legend under the panels."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap, LogNorm, Normalize  # noqa: E402

from gradlens.report.views.cells import group_cells, layer_order, present_states  # noqa: E402
from gradlens.report.views.drawing import (  # noqa: E402
    NONFINITE_LABEL,
    TITLE_PT,
    Groups,
    Section,
    group_arrays,
    integer_steps,
    layer_ticks,
    panel_grid,
    panel_title,
    scale_label,
    state_legend,
    state_words,
    step_edges,
)


def heatmap_section(groups: Groups, key, quantity: str, title: str, label: str, log: bool = True) -> Section | None:
    """``quantity`` as a layer × step heat-map (log colour scale when ``log``); one panel per group, shared
    colours; the mean over a group's runs. Steps may be unevenly spaced.

    State cells are coloured over the values: no gradient grey, exactly 0 blue (log scale only), non-finite
    red; a legend under the panels names the colours present.
    """
    found = group_arrays(groups, key, quantity)
    if not found:
        return None
    cells = {name: group for name, group in group_cells(found, layer_order(found)).items() if len(group.steps)}
    if not cells:
        return None
    values = np.concatenate([c.mean[np.isfinite(c.mean) & ((c.mean > 0) if log else True)] for c in cells.values()])
    lo, hi = (float(values.min()), float(values.max())) if values.size else (1.0, 10.0)
    norm = LogNorm(vmin=lo, vmax=hi) if log else Normalize(vmin=lo, vmax=hi)
    tall = max(len(c.layers) for c in cells.values())
    fig, axes = panel_grid(len(cells), width=6.2, height=max(3.8, min(16, 0.16 * tall + 1.5)), columns=2)
    cmap = plt.get_cmap("magma").with_extremes(bad="white")
    states = present_states(cells.values(), log)
    notes = []
    data = {}
    mesh = None
    for ax, (name, group) in zip(axes, cells.items(), strict=True):
        x_edges = step_edges(group.steps, group.last_steps)
        y_edges = np.arange(len(group.layers) + 1) - 0.5
        shown = np.where(np.isfinite(group.mean) & ((group.mean > 0) if log else True), group.mean, np.nan)
        mesh = ax.pcolormesh(x_edges, y_edges, np.ma.masked_invalid(shown.T), cmap=cmap, norm=norm)
        for state, mask in group.masks(log).items():
            if not mask.any():
                continue
            ax.pcolormesh(
                x_edges,
                y_edges,
                np.ma.masked_where(~mask.T, np.ones(mask.T.shape)),
                cmap=ListedColormap([states[state]]),
                vmin=0,
                vmax=1,
            )
            if state == NONFINITE_LABEL:
                first = int(group.steps[np.argwhere(mask.any(axis=1))[0][0]])
                notes.append(f"{name}: {int(mask.sum())} non-finite cells from step {first}")
            else:
                notes.append(f"{name}: {state} in {int(mask.any(axis=0).sum())} layers at some step")
        ax.invert_yaxis()  # first layer on top
        layer_ticks(ax, group.layers, axis="y")
        integer_steps(ax)
        ax.set_xlabel("optimizer step")
        ax.set_title(panel_title(name, group.runs, band=False), fontsize=TITLE_PT)
        data[name] = {"steps": group.steps, "layers": group.layers, "values": group.mean, "nonfinite": group.nonfinite}
    fig.colorbar(mesh, ax=axes, label=scale_label(label, log))
    state_legend(fig, states)
    caption = (
        f"{label} per layer (rows, first layer on top) and recorded step (columns), colour on a "
        f"{'log' if log else 'linear'} scale."
    )
    if states:
        caption += f" Cells: {state_words(states)}."
    blocks = next(iter(cells.values()))
    if blocks.block > 1:
        caption += (
            " " + blocks.resolution("column", "mean")
            + " A cell is grey when a record of its block had no gradient, red when one was not finite."
        )
    if notes:
        caption += " " + "; ".join(notes) + "."
    return Section(title, fig, caption, kind="heatmap", data=data)
