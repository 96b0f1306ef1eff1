"""Per-layer views: a quantity per layer at chosen steps (profile), runs overlaid, and the global gradient
norm over steps (the layer × step heat-map is :mod:`.heatmap`).

Every cell has one state colour wherever it is drawn (see :mod:`.drawing`): a layer without a gradient (or a
ratio over a zero weight norm) is grey, an exact 0 on a log axis (which cannot place it) blue, a non-finite
value red; profiles put a grey ○ / blue ▽ at the bottom of the layer and a red × at its top, heat-maps colour
the cell, and the legend and caption say which is which. Non-finite values are never dropped silently.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from gradlens.loader import Run  # noqa: E402
from gradlens.report.blocks import resolution  # noqa: E402
from gradlens.report.common import LayerArray, align, chosen_steps, first_bad, layer_array  # noqa: E402
from gradlens.report.views.cells import Cells, group_cells, layer_order, present_states, wants_log  # noqa: E402
from gradlens.report.views.drawing import (  # noqa: E402
    NO_GRAD_COLOUR,
    NO_GRAD_LABEL,
    NONFINITE_COLOUR,
    NONFINITE_LABEL,
    TEXT_PT,
    TITLE_PT,
    UNDEFINED_LABEL,
    ZERO_COLOUR,
    ZERO_LABEL,
    Groups,
    Section,
    band,
    describe_spans,
    group_arrays,
    integer_steps,
    layer_axis_inches,
    layer_ticks,
    mark_nonfinite_steps,
    matched_probe,
    panel_grid,
    panel_title,
    quiet_mean,
    scale_label,
)

LEGEND_INCHES = 2.6  # room right of a layer axis for its legend (steps or runs, and the state markers)

# Where a state's marker sits in a profile (axes fraction), and how it looks (and is said in a caption).
GLYPHS = {NO_GRAD_LABEL: "grey ○", UNDEFINED_LABEL: "grey ◇", ZERO_LABEL: "blue ▽", NONFINITE_LABEL: "red ×"}
MARKERS = {
    NO_GRAD_LABEL: ("_no_gradient", 0.04, {"marker": "o", "mfc": "none", "color": NO_GRAD_COLOUR, "ms": 6}),
    UNDEFINED_LABEL: ("_undefined", 0.04, {"marker": "D", "mfc": "none", "color": NO_GRAD_COLOUR, "ms": 5}),
    ZERO_LABEL: ("_zero", 0.04, {"marker": "v", "color": ZERO_COLOUR, "ms": 6}),
    NONFINITE_LABEL: ("_nonfinite", 0.96, {"marker": "x", "color": NONFINITE_COLOUR, "ms": 7, "mew": 2}),
}


def mark_states(ax: plt.Axes, x: np.ndarray, masks: dict[str, np.ndarray]) -> list[str]:
    """A marker per layer ``x[mask]`` in each state's style (``MARKERS``: ○ ◇ ▽ at the bottom of the axes, × at
    its top, whatever the y scale); returns the states drawn."""
    transform = blended_transform_factory(ax.transData, ax.transAxes)
    drawn = []
    for state, mask in masks.items():
        if mask.any():
            artist, height, style = MARKERS[state]
            ax.plot(x[mask], np.full(int(mask.sum()), height), ls="", transform=transform, label=artist, **style)
            drawn.append(state)
    return drawn


def legend_with_states(ax: plt.Axes, states) -> None:
    """The axes' legend (its labelled lines) plus one entry per state marker drawn, in ``TEXT_PT``, right of
    the axes (a legend inside would hide layers)."""
    handles = ax.get_legend_handles_labels()[0]
    handles += [Line2D([], [], ls="", label=state, **MARKERS[state][2]) for state in states]
    ax.legend(handles=handles, fontsize=TEXT_PT, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def marks_words(states) -> str:
    """The caption's key to the markers: "no gradient (.grad was None): grey ○; exactly 0: blue ▽"."""
    return "; ".join(f"{state}: {GLYPHS[state]}" for state in states)


def _bad_steps(runs: Sequence[Run], arrays: Sequence[LayerArray], key, quantity: str) -> list[int]:
    """The first step with a non-finite value over a group's runs and the recorded step before it (exact, also
    when ``arrays`` hold blocks); [] when every value is finite."""
    found = [first_bad(run, matched_probe(run, key), quantity, array) for run, array in zip(runs, arrays, strict=True)]
    found = [bad for bad in found if bad is not None]
    if not found:
        return []
    first = min(found, key=lambda bad: bad.step)
    return [first.step] + ([first.before] if first.before is not None else [])


def group_cells_at(found: dict, key, quantity: str, picks: dict[str, list[int]], order: list[str]) -> dict[str, Cells]:
    """Each group's records at its picked steps (read one by one), as Cells."""
    exact = {
        label: (runs, [layer_array(run, matched_probe(run, key), quantity, steps=picks[label]) for run in runs])
        for label, (runs, _) in found.items()
    }
    return group_cells(exact, order)


def profile_section(
    groups: Groups, key, quantity: str, title: str, ylabel: str, log: bool | None = None, ylim=None
) -> Section | None:
    """Per-layer ``quantity`` vs layer (by name, forward order) at chosen steps; one panel per group.

    ``log`` None: a log axis when every finite non-zero value of every group is positive (:func:`wants_log`),
    the same for every panel.
    """
    found = group_arrays(groups, key, quantity)
    if not found:
        return None
    order = layer_order(found)
    cells = group_cells(found, order)
    log = wants_log(c.stacked for c in cells.values()) if log is None else log
    bad_steps = {label: _bad_steps(runs, arrays, key, quantity) for label, (runs, arrays) in found.items()}
    picks = {
        label: chosen_steps([*group.steps.tolist(), *group.last_steps[-1:].tolist()], include=bad_steps[label])
        for label, group in cells.items()
    }
    block = next(iter(cells.values())).block
    if block > 1:  # blocks: the profiles are the records at the picked steps, read one by one
        cells = group_cells_at(found, key, quantity, picks, order)
    columns = 2 if len(order) <= 24 else 1  # long layer axes get the page's width
    length = layer_axis_inches(len(order), columns, beside=LEGEND_INCHES)
    fig, axes = panel_grid(len(cells), width=length + LEGEND_INCHES + 1.0, columns=columns)
    data: dict = {}
    notes = []
    for ax, (label, group) in zip(axes, cells.items(), strict=True):
        bad_step = bad_steps[label][0] if bad_steps[label] else None
        steps = group.steps
        picked = [step for step in picks[label] if step in set(steps.tolist())]
        colours = plt.cm.viridis(np.linspace(0, 0.9, len(picked)))
        x = np.arange(len(group.layers))
        panel = {}
        masks = group.masks(log)
        marked: dict[str, set[str]] = {}
        for step, colour in zip(picked, colours, strict=True):
            row = int(np.searchsorted(steps, step))
            bad = group.nonfinite[row]
            hidden = bad | (masks[ZERO_LABEL][row] if log else False)
            shown = np.where(hidden, np.nan, group.mean[row])
            name = f"step {step}" + (f" ({int(bad.sum())} non-finite: ×)" if bad.any() else "")
            ax.plot(x, shown, marker="o", ms=3, color=colour, label=name)
            if len(group.runs) > 1:
                low, high = band(group.stacked[:, row, :])
                ax.fill_between(x, low, high, color=colour, alpha=0.2, lw=0)
            for state in mark_states(ax, x, {state: mask[row] for state, mask in masks.items()}):
                marked.setdefault(state, set()).update(group.layers[i] for i in np.flatnonzero(masks[state][row]))
            panel[step] = shown
        data[label] = {"layers": group.layers, "steps": picked, "values": panel}
        for state, layers in marked.items():
            if state != NONFINITE_LABEL:
                notes.append(f"{label}: {state} in {len(layers)} layers at some drawn step")
        if ylim is not None:
            ax.set_ylim(*ylim)
        if log:
            ax.set_yscale("log")
        layer_ticks(ax, group.layers, length=length)
        ax.set_xlabel("layer (input → output)")
        ax.set_ylabel(scale_label(ylabel, log))
        ax.set_title(panel_title(label, group.runs), fontsize=TITLE_PT)
        ax.grid(alpha=0.3, which="both")
        legend_with_states(ax, marked)
        if bad_step is not None:
            notes.append(f"{label}: non-finite values from step {bad_step} (red × above the layer)")
    states = present_states(cells.values(), log)
    caption = (
        f"{ylabel} per layer at log-spaced recorded steps (always the first and last; also the first step "
        "with a non-finite value and the step before it)."
    )
    if block > 1:
        caption += " Each line is the record at that step (not a block summary)."
    if states:
        caption += f" Marks (○ ◇ ▽ at the bottom of the layer, × at its top): {marks_words(states)}."
    if notes:
        caption += " " + "; ".join(notes) + "."
    return Section(title, fig, caption, kind="profile", data=data)


def overlay_section(groups: Groups, key, quantity: str, title: str, ylabel: str) -> Section | None:
    """Every group in one panel: per-layer ``quantity`` averaged over each run's finite records, then the
    group mean (band min–max over its runs); layers aligned by name. A layer with no value at any record is a
    gap marked grey ○; a mean of exactly 0 on a log axis a blue ▽."""
    found = group_arrays(groups, key, quantity)
    if len(found) < 2:
        return None
    order = layer_order(found)
    cells = group_cells(found, order)
    length = layer_axis_inches(len(order), 1, beside=LEGEND_INCHES)
    fig, (ax,) = panel_grid(1, width=length + LEGEND_INCHES + 1.0, height=4)
    data = {}
    x = np.arange(len(order))
    for label, group in cells.items():
        finite = np.where(np.isfinite(group.stacked), group.stacked, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            per_run = np.nanmean(finite, axis=1)  # [R, L]: mean over the run's finite records
        data[label] = {"layers": group.layers, "values": quiet_mean(per_run), "per_run": per_run}
    log = wants_log(d["values"] for d in data.values())
    marked: dict[str, str] = {}
    for index, (label, group) in enumerate(cells.items()):
        mean, per_run = data[label]["values"], data[label]["per_run"]
        ax.plot(
            x,
            np.where(log & (mean == 0), np.nan, mean),
            marker="o",
            ms=3,
            color=f"C{index}",
            label=panel_title(label, group.runs),
        )
        if len(group.runs) > 1:
            low, high = band(per_run)
            ax.fill_between(x, low, high, color=f"C{index}", alpha=0.2, lw=0)
        states = {
            NO_GRAD_LABEL: group.no_grad.all(axis=0),
            UNDEFINED_LABEL: group.undefined.all(axis=0) & ~group.no_grad.all(axis=0),
        }
        if log:
            states[ZERO_LABEL] = mean == 0
        marked.update({state: MARKERS[state][2]["color"] for state in mark_states(ax, x, states)})
    if log:
        ax.set_yscale("log")
    layer_ticks(ax, order, length=length)
    ax.set_xlabel("layer (input → output)")
    ax.set_ylabel(scale_label(f"{ylabel},\nmean over recorded steps", log))
    ax.grid(alpha=0.3, which="both")
    legend_with_states(ax, marked)
    caption = (
        f"{ylabel} per layer, averaged over each run's finite records; runs aligned by layer name "
        "(a layer a run lacks is a gap)."
    )
    if marked:
        caption += f" Marks at the bottom of a layer, in that state at every record: {marks_words(marked)}."
    first = next(iter(cells.values()))
    if first.block > 1:
        caption += (
            f" Read from blocks of {first.block} records: each run's value is the mean of its finite block means."
        )
    return Section(title, fig, caption, kind="overlay", data=data)


def total_norm_section(groups: Groups, key, quantity: str = "norm") -> Section | None:
    """The global gradient norm √(Σ_ℓ ‖g_ℓ‖²) over steps (layers without a gradient add 0); red bands where
    it is not finite; a log axis when it spans more than a decade.

    From blocks of records (long runs) the line is √(Σ_ℓ m_ℓ²) with m_ℓ the block mean of ‖g_ℓ‖, and the band
    runs from √(Σ_ℓ min_ℓ²) to √(Σ_ℓ max_ℓ²): every record's global norm of the block lies inside it.
    """
    found = group_arrays(groups, key, quantity)
    if not found:
        return None
    fig, (ax,) = panel_grid(1, width=7.5, height=3.6)
    data = {}
    notes = []
    block = 1
    for index, (name, (runs, arrays)) in enumerate(found.items()):
        steps, _, stacked = align(arrays)
        block = arrays[0].block
        totals, bad = _global_norms(arrays, steps, stacked)
        mean = np.where(bad, np.nan, totals.mean(axis=0))
        ax.plot(steps, mean, lw=1, color=f"C{index}", label=panel_title(name, runs))
        low, high = totals.min(axis=0), totals.max(axis=0)
        if block > 1:
            low = _global_norms(arrays, steps, align(arrays, what="low")[2])[0].min(axis=0)
            high = _global_norms(arrays, steps, align(arrays, what="high")[2])[0].max(axis=0)
        if block > 1 or len(runs) > 1:
            ax.fill_between(steps, low, high, color=f"C{index}", alpha=0.2, lw=0)
        spans = mark_nonfinite_steps(ax, steps, bad)
        if spans:
            notes.append(f"{name}: not finite at steps {describe_spans(spans)} (red)")
        data[name] = {"steps": steps, "values": mean, "low": low, "high": high}
    drawn = np.concatenate([d["values"][np.isfinite(d["values"])] for d in data.values()])
    log = bool(drawn.size and drawn.min() > 0 and drawn.max() / drawn.min() > 10)
    if log:
        ax.set_yscale("log")
    integer_steps(ax)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(scale_label("‖g‖₂ over all recorded parameters", log))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=TEXT_PT)
    caption = "Global gradient norm √(Σ_ℓ ‖g_ℓ‖²) over the recorded parameters at every recorded step."
    if block > 1:
        first = next(iter(found.values()))[1][0]
        caption = (
            "Global gradient norm over the recorded parameters: line √(Σ_ℓ m_ℓ²) with m_ℓ the block mean of ‖g_ℓ‖; "
            "band from √(Σ_ℓ min_ℓ²) to √(Σ_ℓ max_ℓ²), which holds every record's √(Σ_ℓ ‖g_ℓ‖²) of the block "
            "(and of every seed). " + resolution(block, first.steps, first.last_steps, "point", "")
        )
    if notes:
        caption += " " + "; ".join(notes) + "."
    return Section("Global gradient norm", fig, caption, kind="series", data=data)


def _global_norms(arrays: Sequence[LayerArray], steps: np.ndarray, stacked: np.ndarray):
    """√(Σ_ℓ x_ℓ²) per run and point of ``stacked`` ``[R, N, L]`` (missing layers add 0), and where a run's
    point is not finite ``[N]``."""
    with np.errstate(over="ignore", invalid="ignore"):
        totals = np.sqrt(np.nansum(np.where(np.isfinite(stacked), stacked, 0) ** 2, axis=2))
    bad = np.stack([a.nonfinite[np.searchsorted(a.steps, steps)].any(axis=1) for a in arrays]).any(axis=0)
    return totals, bad
