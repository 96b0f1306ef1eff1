"""The views of a report: one function per kind of record, chosen by probe class and quantity axes.

``probe_sections(groups)`` draws every probe of the runs; ``scalar_sections(groups)`` every scalar logged
with ``session.log``. ``groups`` maps a run label to the runs carrying it (seeds): each panel draws the mean
over a group's runs and, with several runs, a band from their minimum to their maximum, aligned by layer
name and step. Nothing here depends on a probe's *name*: views are chosen by the probe's class
(``meta["probes"]``) and, for classes the report does not know, by the axes of each quantity:

| axes | view |
|---|---|
| ``("layer",)`` | per-layer profile at chosen steps and a layer × step heat-map |
| ``("layer", "sample")`` (and any ``("layer", X)``) | per-layer distributions (box plots) at chosen steps |
| ``("bin",)``, ``("layer", "bin")`` + an ``("edge",)`` quantity | ridges (≤ 12 steps) or a step × bin heat-map |
| ``()`` | the value over steps |

Non-finite values are never dropped silently: heat-map cells are red, profile layers get a red ×, curves a
red band over the steps, and every caption says where. Cells of layers without a gradient are grey.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap, LogNorm  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from gradlens.loader import Run  # noqa: E402
from gradlens.report.common import (  # noqa: E402
    GRADIENT_CLASSES,
    LayerArray,
    align,
    chosen_steps,
    edges_for,
    frozen_parameters,
    layer_array,
    probe_class,
    short_names,
)

MAX_LAYER_TICKS = 48  # more layers than this: every k-th layer is labelled
MAX_HIST_LAYERS = 8  # per-layer histograms drawn for at most this many layers
MAX_RIDGES = 12  # histograms of at most this many steps are drawn as ridges, more as a heat-map
NONFINITE_COLOUR = "red"
NO_GRAD_COLOUR = "#bbbbbb"
MISSING_WORDS = "without a value by design (no gradient, or a ratio over a zero weight norm)"


@dataclass
class Section:
    """One picture of the report, before it is encoded (tests inspect ``figure``'s artists).

    Attributes:
        title: the heading.
        figure: the matplotlib figure.
        caption: what is drawn, in words, including what is missing or non-finite.
        probe: the probe it shows ("" for scalars).
        kind: the view (``profile``, ``heatmap``, ``histogram``, ``distribution``, ``series``, ``scalars``).
        data: the numbers drawn, keyed by panel (for tests and for the export of a figure's values).
    """

    title: str
    figure: plt.Figure
    caption: str
    probe: str = ""
    kind: str = ""
    data: dict = field(default_factory=dict)


Groups = dict[str, list[Run]]


# ---------------------------------------------------------------------------------------------- helpers


def _integer_steps(ax: plt.Axes, axis: str = "x") -> None:
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True))


def _layer_ticks(ax: plt.Axes, layers: Sequence[str], axis: str = "x") -> None:
    """Tick every layer (every k-th beyond MAX_LAYER_TICKS) with its abbreviated name."""
    labels = short_names(layers)
    stride = max(1, int(np.ceil(len(labels) / MAX_LAYER_TICKS)))
    positions = np.arange(0, len(labels), stride)
    size = 7 if len(labels) <= 24 else 5.5
    if axis == "x":
        ax.set_xticks(positions, [labels[i] for i in positions], rotation=90, fontsize=size)
    else:
        ax.set_yticks(positions, [labels[i] for i in positions], fontsize=size)


def _step_edges(steps: np.ndarray) -> np.ndarray:
    """Cell edges around (possibly unevenly spaced) steps: midpoints, ±0.5 at the ends."""
    steps = np.asarray(steps, dtype=np.float64)
    if len(steps) == 1:
        return np.array([steps[0] - 0.5, steps[0] + 0.5])
    middle = (steps[1:] + steps[:-1]) / 2
    return np.concatenate([[steps[0] - 0.5], middle, [steps[-1] + 0.5]])


def _spans(steps: np.ndarray, bad: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs of recorded steps where ``bad`` holds, as (first step, last step)."""
    spans = []
    start = None
    for index, flag in enumerate(bad):
        if flag and start is None:
            start = index
        if not flag and start is not None:
            spans.append((int(steps[start]), int(steps[index - 1])))
            start = None
    if start is not None:
        spans.append((int(steps[start]), int(steps[len(bad) - 1])))
    return spans


def _describe_spans(spans: list[tuple[int, int]]) -> str:
    text = ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in spans[:6])
    return text + (f" and {len(spans) - 6} more" if len(spans) > 6 else "")


def mark_nonfinite_steps(ax: plt.Axes, steps: np.ndarray, bad: np.ndarray) -> list[tuple[int, int]]:
    """Red bands over the recorded steps where ``bad`` holds; returns the spans drawn."""
    spans = _spans(np.asarray(steps), np.asarray(bad, dtype=bool))
    for first, last in spans:
        ax.axvspan(first - 0.5, last + 0.5, color=NONFINITE_COLOUR, alpha=0.25, lw=0, label="_nonfinite")
    return spans


def _quiet_mean(stacked: np.ndarray, axis: int = 0) -> np.ndarray:
    """Mean over runs; a cell that is non-finite in any run stays non-finite (never averaged away)."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", over="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return stacked.mean(axis=axis)


def _band(stacked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmin(stacked, axis=0), np.nanmax(stacked, axis=0)


def _panel_grid(count: int, width: float = 5.4, height: float = 3.8, columns: int = 3):
    columns = min(columns, max(count, 1))
    rows = int(np.ceil(max(count, 1) / columns))
    fig, axes = plt.subplots(
        rows, columns, figsize=(width * columns, height * rows), squeeze=False, layout="constrained"
    )
    flat = list(axes.ravel())
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def _panel_title(label: str, runs: Sequence[Run]) -> str:
    return label if len(runs) == 1 else f"{label} (mean of {len(runs)} runs, band min–max)"


def _matched_probe(run: Run, key: tuple[str, int | str]) -> str | None:
    """The run's probe for ``key`` = (class, k-th probe of that class) or ("?", probe name)."""
    cls, which = key
    if cls == "?":
        return which if which in run.probes and probe_class(run, which) == "?" else None
    of_class = [p for p in run.probes if probe_class(run, p) == cls]
    return of_class[which] if isinstance(which, int) and which < len(of_class) else None


def probe_keys(runs: Sequence[Run]) -> list[tuple[str, int | str]]:
    """Every probe of the runs, keyed by class and rank among its class (names may differ between runs)."""
    keys: list[tuple[str, int | str]] = []
    for run in runs:
        counts: dict[str, int] = {}
        for probe in run.probes:
            cls = probe_class(run, probe)
            key: tuple[str, int | str] = ("?", probe) if cls == "?" else (cls, counts.get(cls, 0))
            counts[cls] = counts.get(cls, 0) + 1
            if key not in keys:
                keys.append(key)
    return keys


def _group_arrays(groups: Groups, key, quantity: str) -> dict[str, tuple[list[Run], list[LayerArray]]]:
    """Per group: the runs that recorded ``quantity`` under ``key`` and their LayerArrays."""
    out = {}
    for label, runs in groups.items():
        found = []
        for run in runs:
            probe = _matched_probe(run, key)
            if probe is not None and quantity in run.quantities(probe):
                array = layer_array(run, probe, quantity)
                if len(array.steps):  # a live run may have declared the probe but committed no record yet
                    found.append((run, array))
        if found:
            out[label] = ([r for r, _ in found], [a for _, a in found])
    return out


def _first_bad_step(arrays: Sequence[LayerArray]) -> int | None:
    steps = [int(a.steps[np.argwhere(a.nonfinite.any(axis=1))[0][0]]) for a in arrays if a.nonfinite.any()]
    return min(steps) if steps else None


# ------------------------------------------------------------------------------------ per-layer views


def profile_section(
    groups: Groups, key, quantity: str, title: str, ylabel: str, log: bool | None = None, ylim=None
) -> Section | None:
    """Per-layer ``quantity`` vs layer (by name, forward order) at chosen steps; one panel per group."""
    found = _group_arrays(groups, key, quantity)
    if not found:
        return None
    fig, axes = _panel_grid(len(found), width=max(5.4, min(14, 0.22 * _layer_count(found))), columns=2)
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
            mean = _quiet_mean(stacked[:, row, :])
            bad = nonfinite[:, row, :].any(axis=0)
            shown = np.where(bad, np.nan, mean)
            name = f"step {step}" + (f" ({int(bad.sum())} non-finite: ×)" if bad.any() else "")
            ax.plot(x, shown, marker="o", ms=3, color=colour, label=name)
            if len(runs) > 1:
                low, high = _band(stacked[:, row, :])
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
        _layer_ticks(ax, layers)
        ax.set_xlabel("layer (input → output)")
        ax.set_ylabel(ylabel)
        ax.set_title(_panel_title(label, runs), fontsize=10)
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
    found = _group_arrays(groups, key, quantity)
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
        mean = _quiet_mean(per_run)
        ax.plot(x, mean, marker="o", ms=3, color=f"C{index}", label=_panel_title(label, runs))
        if len(runs) > 1:
            low, high = _band(per_run)
            ax.fill_between(x, low, high, color=f"C{index}", alpha=0.2, lw=0)
        data[label] = {"layers": layers, "values": mean, "per_run": per_run}
    finite = np.concatenate([d["values"][np.isfinite(d["values"])] for d in data.values()])
    if finite.size and (finite > 0).all():
        ax.set_yscale("log")
    _layer_ticks(ax, order)
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
    found = _group_arrays(groups, key, quantity)
    if not found:
        return None
    panels = {}
    order = _layer_order(found)
    for name, (runs, arrays) in found.items():
        steps, layers, stacked = align(arrays, order)
        with np.errstate(divide="ignore", invalid="ignore"):
            shown = np.log10(np.where(stacked > 0, stacked, np.nan)) if log else stacked
        shown = _quiet_mean(np.where(np.isfinite(stacked), shown, np.nan))
        nonfinite = np.stack([_aligned_mask(a, steps, layers, "nonfinite") for a in arrays]).any(axis=0)
        missing = np.stack([_aligned_mask(a, steps, layers, "missing") for a in arrays]).all(axis=0)
        if len(steps):
            panels[name] = (runs, steps, layers, shown, nonfinite, missing)
    if not panels:
        return None
    finite = np.concatenate([p[3][np.isfinite(p[3])] for p in panels.values()] + [np.zeros(0)])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    tall = max(len(p[2]) for p in panels.values())
    fig, axes = _panel_grid(len(panels), width=6.2, height=max(3.8, min(16, 0.16 * tall + 1.5)), columns=2)
    cmap = plt.get_cmap("magma").with_extremes(bad=NO_GRAD_COLOUR)
    notes = []
    data = {}
    mesh = None
    for ax, (name, (runs, steps, layers, shown, nonfinite, empty)) in zip(axes, panels.items(), strict=True):
        x_edges = _step_edges(steps)
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
        _layer_ticks(ax, layers, axis="y")
        _integer_steps(ax)
        ax.set_xlabel("optimizer step")
        ax.set_title(_panel_title(name, runs), fontsize=10)
        data[name] = {"steps": steps, "layers": layers, "values": shown, "nonfinite": nonfinite}
    fig.colorbar(mesh, ax=axes, label=("log10 " if log else "") + label)
    caption = f"{'log10 ' if log else ''}{label} per layer (rows, first layer on top) and recorded step (columns)."
    if notes:
        caption += " " + "; ".join(notes) + "."
    return Section(title, fig, caption, kind="heatmap", data=data)


def total_norm_section(groups: Groups, key, quantity: str = "norm") -> Section | None:
    """The global gradient norm √(Σ_ℓ ‖g_ℓ‖²) over steps; red bands where it is not finite."""
    found = _group_arrays(groups, key, quantity)
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
        ax.plot(steps, mean, lw=1, color=f"C{index}", label=_panel_title(name, runs))
        if len(runs) > 1:
            ax.fill_between(steps, totals.min(axis=0), totals.max(axis=0), color=f"C{index}", alpha=0.2, lw=0)
        spans = mark_nonfinite_steps(ax, steps, bad)
        if spans:
            notes.append(f"{name}: not finite at steps {_describe_spans(spans)} (red)")
        data[name] = {"steps": steps, "values": mean}
    drawn = np.concatenate([d["values"][np.isfinite(d["values"])] for d in data.values()])
    if drawn.size and drawn.min() > 0 and drawn.max() / drawn.min() > 10:
        ax.set_yscale("log")
    _integer_steps(ax)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("‖g‖₂ over all recorded parameters")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    caption = "Global gradient norm √(Σ_ℓ ‖g_ℓ‖²) over the recorded parameters at every recorded step."
    if notes:
        caption += " " + "; ".join(notes) + "."
    return Section("Global gradient norm", fig, caption, kind="series", data=data)


# ----------------------------------------------------------------------------- distributions, histograms


def distribution_section(groups: Groups, key, quantity: str, title: str, ylabel: str) -> Section | None:
    """Per-layer distributions of a ``[layer, sample]`` quantity at chosen steps (box plots, samples pooled
    over a group's runs); non-finite samples are left out and counted in the caption."""
    panels = {}
    for name, runs in groups.items():
        records = []
        for run in runs:
            probe = _matched_probe(run, key)
            if probe is not None and quantity in run.quantities(probe):
                records.append(run.array(probe, quantity))
        if records:
            panels[name] = (runs, records)
    if not panels:
        return None
    fig, axes = _panel_grid(len(panels), width=7.5, columns=2)
    data = {}
    dropped_total = 0
    for ax, (name, (runs, records)) in zip(axes, panels.items(), strict=True):
        steps_all = sorted(set.intersection(*(set(r[0].tolist()) for r in records)))
        picked = chosen_steps(steps_all, count=3)
        layers = list(records[0][3].get("layer", [str(i) for i in range(records[0][1].shape[1])]))
        width = 0.8 / max(len(picked), 1)
        colours = plt.cm.viridis(np.linspace(0, 0.9, len(picked)))
        panel = {}
        positive = True
        for k, (step, colour) in enumerate(zip(picked, colours, strict=True)):
            pooled = []
            for steps, values, _, _ in records:
                row = values[int(np.searchsorted(steps, step))].reshape(len(layers), -1).astype(np.float64)
                pooled.append(row)
            samples = np.concatenate(pooled, axis=1)
            per_layer = [s[np.isfinite(s)] for s in samples]
            dropped_total += int(sum((~np.isfinite(s)).sum() for s in samples))
            positive &= all((s > 0).all() for s in per_layer)
            positions = np.arange(len(layers)) - 0.4 + width * (k + 0.5)
            drawn = [s if s.size else np.array([np.nan]) for s in per_layer]
            boxes = ax.boxplot(
                drawn, positions=positions, widths=width * 0.9, patch_artist=True, showfliers=False, manage_ticks=False
            )
            for patch in boxes["boxes"]:
                patch.set_facecolor(colour)
                patch.set_alpha(0.6)
            ax.plot([], [], color=colour, lw=6, alpha=0.6, label=f"step {step}")
            panel[step] = per_layer
        data[name] = {"layers": layers, "steps": picked, "values": panel}
        if positive:
            ax.set_yscale("log")
        _layer_ticks(ax, layers)
        ax.set_ylabel(ylabel)
        ax.set_title(_panel_title(name, runs), fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    caption = (
        f"Distribution over the probe-batch samples of {ylabel} per layer at up to three recorded steps "
        "(box: quartiles, line: median, whiskers: 1.5 IQR)."
    )
    if dropped_total:
        caption += f" {dropped_total} non-finite sample values are not drawn."
    return Section(title, fig, caption, kind="distribution", data=data)


def histogram_section(groups: Groups, key, quantity: str, title: str) -> Section | None:
    """Histograms over steps as TensorBoard shows them: ridges (≤ 12 steps) or a step × bin heat-map.

    ``[bin]`` quantities: one panel per group (first run of a group). ``[layer, bin]``: one panel per layer,
    at most ``MAX_HIST_LAYERS`` layers spread from the first to the last, for the first group only.
    """
    (name, runs), *_ = groups.items()
    run = next((r for r in runs if _matched_probe(r, key) is not None), None)
    if run is None:
        return None
    probe = _matched_probe(run, key)
    quantities = run.quantities(probe)
    edges_name = edges_for(quantities, quantity)
    if quantity not in quantities or edges_name is None:
        return None
    steps, counts, axes, labels = run.array(probe, quantity)
    edge_steps, edges, _, _ = run.array(probe, edges_name)
    if len(steps) == 0:
        return None
    per_layer = axes == ("step", "layer", "bin")
    if per_layer:
        layers = list(labels.get("layer", [str(i) for i in range(counts.shape[1])]))
        chosen = np.unique(np.round(np.linspace(0, len(layers) - 1, min(MAX_HIST_LAYERS, len(layers)))).astype(int))
        panels = [(layers[i], counts[:, i, :]) for i in chosen]
    else:
        panels = [(name, counts)]
    fig, panel_axes = _panel_grid(len(panels), width=5.0, height=3.8, columns=4 if per_layer else 2)
    fixed = bool(np.all(edges == edges[0]))
    data = {}
    ridge = len(steps) <= MAX_RIDGES or not fixed
    for ax, (label, table) in zip(panel_axes, panels, strict=True):
        table = np.asarray(table, dtype=np.float64)
        if ridge:
            picked = chosen_steps(steps, count=MAX_RIDGES)
            scale = max(float(table.max()), 1.0)
            for offset, step in enumerate(picked):
                row = int(np.searchsorted(steps, step))
                ax.stairs(
                    table[row] / scale * 1.6 + offset,
                    edges[row],
                    baseline=offset,
                    fill=True,
                    alpha=0.5,
                    color=plt.cm.viridis(offset / max(len(picked), 1)),
                )
            ax.set_yticks(range(len(picked)), [str(s) for s in picked], fontsize=6)
            ax.set_ylabel("step")
            data[label] = {
                "steps": picked,
                "counts": table[np.searchsorted(steps, picked)],
                "edges": edges,
                "scale": scale,
            }
        else:
            mesh = ax.pcolormesh(
                _step_edges(steps),
                edges[0],
                np.ma.masked_less_equal(table.T, 0),
                norm=LogNorm(vmin=1, vmax=max(float(table.max()), 1.0)),
                cmap="viridis",
            )
            fig.colorbar(mesh, ax=ax, label="count")
            _integer_steps(ax)
            ax.set_xlabel("optimizer step")
            data[label] = {"steps": steps, "counts": table, "edges": edges[0]}
        ax.set_title(short_names([label])[0], fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    extra = []
    for side in ("below", "above"):
        for candidate in (f"{quantity}_{side}", side):
            if candidate in quantities and quantities[candidate].axes in ((), ("layer",)):
                total = run.array(probe, candidate)[1]
                extra.append(f"{int(np.nansum(total))} values {side} the bins")
                break
    caption = (
        f"Histogram {quantity} of {probe} "
        + (
            "as ridges at chosen steps (height ∝ count; each ridge sits on its step)"
            if ridge
            else "as a step × value heat-map (colour: count, log scale; empty bins blank)"
        )
        + ("" if not per_layer else f"; {len(panels)} of {counts.shape[1]} layers, spread from first to last")
        + (f"; {'; '.join(extra)}" if extra else "")
        + (f"; run {name}" if len(groups) > 1 else "")
        + "."
    )
    return Section(title, fig, caption, probe=probe, kind="histogram", data=data)


def series_section(groups: Groups, key, quantities: Sequence[str], title: str) -> Section | None:
    """Scalar (``()``) quantities of a probe over steps, one panel each, groups overlaid."""
    fig, axes = _panel_grid(len(quantities), width=4.6, height=3.2, columns=3)
    data: dict = {}
    notes = []
    for ax, quantity in zip(axes, quantities, strict=True):
        for index, (name, runs) in enumerate(groups.items()):
            series = []
            for run in runs:
                probe = _matched_probe(run, key)
                if probe is not None and quantity in run.quantities(probe):
                    steps, values, _, _ = run.array(probe, quantity)
                    series.append(dict(zip(steps.tolist(), np.asarray(values, np.float64).tolist(), strict=True)))
            if not series:
                continue
            steps = np.array(sorted(set.intersection(*(set(s) for s in series))), dtype=np.int64)
            stacked = np.array([[s[int(t)] for t in steps] for s in series])
            mean = _quiet_mean(stacked)
            bad = ~np.isfinite(stacked).all(axis=0)
            ax.plot(
                steps, np.where(bad, np.nan, mean), marker=".", ms=3, color=f"C{index}", label=_panel_title(name, runs)
            )
            if len(runs) > 1:
                low, high = _band(stacked)
                ax.fill_between(steps, low, high, color=f"C{index}", alpha=0.2, lw=0)
            spans = mark_nonfinite_steps(ax, steps, bad)
            if spans:
                notes.append(f"{quantity} ({name}) not finite at steps {_describe_spans(spans)} (red)")
            data[(quantity, name)] = {"steps": steps, "values": np.where(bad, np.nan, mean)}
        _integer_steps(ax)
        ax.set_title(quantity, fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if len(groups) > 1:
            ax.legend(fontsize=7)
    caption = "Per-record scalars of the probe over steps."
    if notes:
        caption += " " + "; ".join(notes) + "."
    return Section(title, fig, caption, kind="series", data=data)


# ------------------------------------------------------------------------------------------- probes


def _declared(groups: Groups, key) -> tuple[str, str, dict]:
    """(probe names joined, class, quantities) of ``key`` from the first run that has it."""
    names = []
    quantities: dict = {}
    for runs in groups.values():
        for run in runs:
            probe = _matched_probe(run, key)
            if probe is not None:
                names.append(probe)
                quantities = quantities or run.quantities(probe)
    return " / ".join(dict.fromkeys(names)), key[0], quantities


def _gradient_views(groups: Groups, key, heading: str, quantities: dict) -> tuple[list, set]:
    main = (
        "mean_abs"
        if "mean_abs" in quantities
        else next((n for n, q in quantities.items() if q.axes == ("layer",) and n != "nonfinite"), None)
    )
    sections = []
    drawn = {"nonfinite"}  # its -1 (no gradient) and >0 (NaN/Inf entries) are drawn as grey/red cells
    if main is not None:
        label = f"{main.replace('_', ' ')} of the gradient"
        sections += [
            overlay_section(groups, key, main, f"Runs overlaid: {heading}, per-layer {label}", label),
            profile_section(groups, key, main, f"{heading}: per-layer {label} at chosen steps", label),
            heatmap_section(groups, key, main, f"{heading}: layer × step heat-map", label),
        ]
        drawn.add(main)
    if "norm" in quantities:
        sections.append(total_norm_section(groups, key))
        drawn.add("norm")
    frozen = sorted(
        {str(p.get("name")) for runs in groups.values() for run in runs for p in frozen_parameters(run) or []}
    )
    profiles = [section for section in sections if section is not None and section.kind == "profile"]
    if frozen and profiles:
        note = f" Frozen parameters (requires_grad False, not measured, not drawn): {', '.join(frozen)}."
        profiles[0].caption += note
    return sections, drawn


def _update_ratio_views(groups: Groups, key, heading: str, quantities: dict) -> tuple[list, set]:
    if "ratio" not in quantities:
        return [], set()
    label = "update-to-weight ratio ‖Δw‖/‖w‖"
    return [
        profile_section(groups, key, "ratio", f"{heading}: {label} per layer at chosen steps", label, log=True),
        heatmap_section(groups, key, "ratio", f"{heading}: {label}, layer × step", label),
    ], {"ratio"}


def _sigma_views(groups: Groups, key, heading: str, quantities: dict) -> tuple[list, set]:
    if "sigma" not in quantities:
        return [], set()
    label = "σ (fraction of channels with dominant flow)"
    return [
        profile_section(
            groups, key, "sigma", f"{heading}: σ per layer at chosen steps", label, log=False, ylim=(-0.02, 1.02)
        ),
        heatmap_section(groups, key, "sigma", f"{heading}: σ, layer × step", "σ", log=False),
    ], {"sigma", "nonfinite"}


def _cushion_views(groups: Groups, key, heading: str, quantities: dict) -> tuple[list, set]:
    if "mu" not in quantities:
        return [], set()
    return [distribution_section(groups, key, "mu", f"{heading}: cushion μ per layer over steps", "cushion μ")], {
        "mu",
        "nonfinite",
    }


# Known probe classes -> which of their quantities get which view. Everything else: generic, by axes.
CLASS_VIEWS: dict[str, Callable[[Groups, tuple, str, dict], tuple[list, set]]] = {
    "GradStats": _gradient_views,
    "UpdateRatio": _update_ratio_views,
    "DominantFlow": _sigma_views,
    "LayerCushion": _cushion_views,
    "InterlayerCushion": _cushion_views,
}


def generic_views(groups: Groups, key, heading: str, quantities: dict, skip: set) -> list[Section | None]:
    """Views for every quantity not in ``skip``, chosen by its axes alone (see the module docstring)."""
    sections: list[Section | None] = []
    scalars = []
    for name, q in quantities.items():
        if name in skip or q.axes == ("edge",):
            continue
        pretty = name.replace("_", " ")
        if q.axes == ():
            scalars.append(name)
        elif q.axes == ("layer",):
            sections.append(
                profile_section(groups, key, name, f"{heading}: {pretty} per layer at chosen steps", pretty)
            )
            sections.append(
                heatmap_section(
                    groups,
                    key,
                    name,
                    f"{heading}: {pretty}, layer × step",
                    pretty,
                    log=_all_positive(groups, key, name),
                )
            )
        elif q.axes[-1] == "bin" and len(q.axes) <= 2:
            sections.append(histogram_section(groups, key, name, f"{heading}: histogram {pretty}"))
        elif len(q.axes) == 2 and q.axes[0] == "layer":
            sections.append(distribution_section(groups, key, name, f"{heading}: {pretty} per layer", pretty))
        else:
            sections.append(None)
    if scalars:
        sections.append(series_section(groups, key, scalars, f"{heading}: per-record values"))
    return sections


def _all_positive(groups: Groups, key, quantity: str) -> bool:
    for runs in groups.values():
        for run in runs:
            probe = _matched_probe(run, key)
            if probe is not None and quantity in run.quantities(probe):
                values = run.array(probe, quantity)[1]
                finite = values[np.isfinite(values)]
                if finite.size == 0 or (finite <= 0).any():
                    return False
    return True


def not_drawn(quantities: dict, drawn: set) -> list[str]:
    """Quantities that no view covers (axes the report has no view for)."""
    out = []
    for name, q in quantities.items():
        if name in drawn or q.axes == ("edge",) or q.axes in ((), ("layer",)):
            continue
        if q.axes[-1] == "bin" or (len(q.axes) == 2 and q.axes[0] == "layer"):
            continue
        out.append(f"{name} {list(q.axes)}")
    return out


def probe_sections(groups: Groups) -> tuple[list[Section], list[str]]:
    """Sections for every probe of every run, and the quantities recorded but not drawn (with axes)."""
    runs = [run for group in groups.values() for run in group]
    sections: list[Section] = []
    undrawn: list[str] = []
    for key in probe_keys(runs):
        names, cls, quantities = _declared(groups, key)
        heading = f"{names} ({cls})" if cls != "?" else f"{names} (class not stored)"
        chosen, drawn = CLASS_VIEWS.get(cls, lambda *a: ([], set()))(groups, key, heading, quantities)
        if cls in GRADIENT_CLASSES:
            drawn |= {n for n in quantities if n.startswith("hist_") and quantities[n].axes in ((), ("layer",))}
        # Class views draw the main quantities; every other quantity still gets the view its axes call for,
        # except the statistics a class view already summarises (listed in the caption instead).
        summarised = {n for n, q in quantities.items() if q.axes in ((), ("layer",))} if chosen else set()
        rest = generic_views(groups, key, heading, quantities, drawn | summarised)
        found = [s for s in [*chosen, *rest] if s is not None]
        for section in found:
            section.probe = section.probe or names
        if not found:
            undrawn.append(f"{names} (no records committed yet)")
            continue
        if chosen and summarised - drawn:
            target = next((section for section in found if section.kind == "profile"), found[0])
            target.caption += (
                " Also recorded per layer (see `gradlens export`): " + ", ".join(sorted(summarised - drawn)) + "."
            )
        sections += found
        undrawn += [f"{names}/{item}" for item in not_drawn(quantities, drawn)]
    return sections, undrawn


# ------------------------------------------------------------------------------------------ scalars


def scalar_panels(names: Sequence[str]) -> dict[str, list[str]]:
    """Panel title -> scalar names: names containing ``loss`` share the loss panel, ``acc`` the accuracy
    panel (after loss), every other name gets a panel of its own."""
    panels: dict[str, list[str]] = {}
    for name in names:
        lower = name.lower()
        title = "loss" if "loss" in lower else "accuracy" if "acc" in lower else name
        panels.setdefault(title, []).append(name)
    order = sorted(panels, key=lambda t: (t != "loss", t != "accuracy"))
    return {title: panels[title] for title in order}


def scalar_sections(groups: Groups) -> list[Section]:
    """Every scalar logged with ``session.log``, whatever its name (see :func:`scalar_panels`)."""
    frames = {label: [run.scalars() for run in runs] for label, runs in groups.items()}
    names = list(dict.fromkeys(n for fs in frames.values() for f in fs for n in f["name"]))
    if not names:
        return []
    panels = scalar_panels(names)
    fig, axes = _panel_grid(len(panels), width=5.0, height=3.4, columns=3)
    data: dict = {}
    notes = []
    styles = ["-", "--", ":", "-."]
    for ax, (title, members) in zip(axes, panels.items(), strict=True):
        finite_values = []
        for g, (label, group_frames) in enumerate(frames.items()):
            for k, name in enumerate(members):
                series = []
                for frame in group_frames:
                    rows = frame[frame["name"] == name].drop_duplicates("step", keep="last")
                    series.append(dict(zip(rows["step"].tolist(), rows["value"].tolist(), strict=True)))
                series = [s for s in series if s]
                if not series:
                    continue
                steps = np.array(sorted(set.intersection(*(set(s) for s in series))), dtype=np.int64)
                stacked = np.array([[s[int(t)] for t in steps] for s in series], dtype=np.float64)
                bad = ~np.isfinite(stacked).all(axis=0)
                mean = np.where(bad, np.nan, _quiet_mean(stacked))
                text = name if len(frames) == 1 else f"{label}: {name}"
                if len(series) > 1:
                    text += f" (mean of {len(series)})"
                few = len(steps) <= 30
                ax.plot(
                    steps,
                    mean,
                    styles[k % 4],
                    marker="o" if few else None,
                    ms=3,
                    lw=1,
                    color=f"C{g if len(frames) > 1 else k}",
                    label=text,
                )
                if len(series) > 1:
                    low, high = _band(stacked)
                    ax.fill_between(steps, low, high, color=f"C{g if len(frames) > 1 else k}", alpha=0.2, lw=0)
                spans = mark_nonfinite_steps(ax, steps, bad)
                if spans:
                    notes.append(f"{text} not finite at steps {_describe_spans(spans)} (red band)")
                finite_values.append(mean[np.isfinite(mean)])
                data[(title, label, name)] = {"steps": steps, "values": mean}
        values = np.concatenate(finite_values) if finite_values else np.zeros(0)
        if title == "loss" and values.size and (values > 0).all() and values.max() / values.min() > 20:
            ax.set_yscale("log")
        _integer_steps(ax)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    caption = (
        "Every scalar logged with session.log: names containing 'loss' share the loss panel, names containing "
        "'acc' the accuracy panel, every other name has its own."
    )
    if notes:
        caption += " " + "; ".join(notes) + "."
    return [Section("Logged scalars", fig, caption, kind="scalars", data=data)]
