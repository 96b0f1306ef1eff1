"""What every view draws with: the Section a view returns, colours, sizes, panel grids, tick and step helpers.

A view is a function ``(groups, key, ...) -> Section | None``; ``groups`` maps a run label to the runs carrying
it (seeds), ``key`` names a probe by class and rank (:func:`probe_keys`), since names may differ between runs.
Nothing here chooses a view or reads a quantity's meaning.

Legibility, as the page shows a view: the page embeds each figure as a PNG at ``PNG_DPI`` in a column
``PAGE_WIDTH_PX`` wide, and the browser shrinks a wider PNG to fit. A text of s points is s × PNG_DPI / 72 px
high at full size, so figures are at most ``MAX_FIGURE_INCHES`` wide (never shrunk) and no text is smaller than
``TEXT_PT`` (8 pt = 10 px ≥ ``MIN_TEXT_PX``); layer names are thinned out (every k-th), never shrunk. Cell
states have one colour each in every view: no gradient grey, exactly 0 blue, non-finite red. A figure has one
axis type (log or linear) for all its panels, named in the value axis' label ("‖g‖ (log scale)").
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from gradlens.loader import Run  # noqa: E402
from gradlens.report.blocks import block_for  # noqa: E402
from gradlens.report.common import LayerArray, layer_array, probe_class, short_names  # noqa: E402

MAX_LAYER_TICKS = 48  # more layers than this: every k-th layer is labelled
MAX_HIST_LAYERS = 8  # per-layer histograms drawn for at most this many layers
MAX_RIDGES = 12  # histograms of at most this many steps are drawn as ridges, more as a heat-map

PNG_DPI = 90  # the page's PNG resolution (gradlens.report.page.png_bytes)
PAGE_WIDTH_PX = 1280  # the page's content column (page.STYLE max-width): wider PNGs are shrunk to it
MIN_TEXT_PX = 9  # no text of a view is smaller than this on the page
TEXT_PT = 8.0  # smallest font of a view: 8 pt × 90 dpi / 72 = 10 px
TITLE_PT = 10.0
MAX_FIGURE_INCHES = (PAGE_WIDTH_PX - 40) / PNG_DPI  # 13.8 in; 40 px spare for the tight bounding box
LINE_PITCH = 1.3  # a tick label needs its font size × this of axis length (so labels never touch)
LABEL_LINE = 24  # characters of an axis label that fit along a 3-inch panel side at 10 pt

NONFINITE_COLOUR = "red"
NO_GRAD_COLOUR = "#a8a8a8"  # grey
ZERO_COLOUR = "#1e90ff"  # blue: outside the magma and viridis ends, not grey, not red
NO_GRAD_LABEL = "no gradient (.grad was None)"
UNDEFINED_LABEL = "undefined (a ratio over ‖w‖ = 0)"
ZERO_LABEL = "exactly 0"
NONFINITE_LABEL = "non-finite"
COLOUR_WORDS = {NO_GRAD_COLOUR: "grey", ZERO_COLOUR: "blue", NONFINITE_COLOUR: "red"}


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


def integer_steps(ax: plt.Axes, axis: str = "x") -> None:
    """Integer step ticks; from 10 000 on written in thousands ("36k"), so long runs' labels never touch."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(MaxNLocator(integer=True))
    target.set_major_formatter(FuncFormatter(step_text))


def step_text(value: float, _position=None) -> str:
    """A step tick's label: "950", "12k", "1.25M" (thousands and millions from 10 000 on)."""
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


def layer_ticks(ax: plt.Axes, layers: Sequence[str], axis: str = "x", length: float | None = None) -> None:
    """Tick layers with their abbreviated names at ``TEXT_PT``: every layer when they fit along the axis
    (``length`` inches, default :func:`axis_inches`; font size × ``LINE_PITCH`` each, at most
    ``MAX_LAYER_TICKS``), else every k-th from the first."""
    labels = short_names(layers)
    room = TEXT_PT * LINE_PITCH / 72  # inches one label needs along the axis
    length = axis_inches(ax, axis) if length is None else length
    fits = max(2, min(MAX_LAYER_TICKS, int(length / room)))
    stride = max(1, int(np.ceil(len(labels) / fits)))
    positions = np.arange(0, len(labels), stride)
    if axis == "x":
        ax.set_xticks(positions, [labels[i] for i in positions], rotation=90, fontsize=TEXT_PT)
    else:
        ax.set_yticks(positions, [labels[i] for i in positions], fontsize=TEXT_PT)


def layer_axis_inches(layers: int, columns: int, beside: float = 0.0) -> float:
    """The length of a layer axis of ``layers`` layers: 0.22 in per layer (at least 4.5 in), shortened so that
    ``columns`` panels, each with ``beside`` inches next to its axis (a legend) and 1 in for the value axis'
    ticks and label, fit in ``MAX_FIGURE_INCHES``."""
    return min(max(4.5, 0.22 * layers), MAX_FIGURE_INCHES / columns - beside - 1.0)


def axis_inches(ax: plt.Axes, axis: str = "x") -> float:
    """About how long ``ax``'s x or y axis is on its figure, in inches (its grid cell, less room for labels)."""
    rows, columns = ax.get_subplotspec().get_gridspec().get_geometry()
    width, height = ax.get_figure().get_size_inches()
    return 0.8 * (width / columns if axis == "x" else height / rows)


def scale_label(label: str, log: bool) -> str:
    """``label`` with the axis type the reader needs to read it: "‖g‖ (log scale)" or "σ (linear scale)"; the
    type goes on a line of its own after a label longer than ``LABEL_LINE`` characters (so it is never cut)."""
    return f"{label}{chr(10) if len(label) > LABEL_LINE else ' '}({'log' if log else 'linear'} scale)"


def is_colorbar(ax: plt.Axes) -> bool:
    """Whether ``ax`` is a colour bar (its scale is the colour scale of the figure's meshes)."""
    return hasattr(ax, "_colorbar")


def state_legend(fig: plt.Figure, states: dict[str, str]) -> None:
    """One legend under the figure's panels with a colour patch per cell state (label -> colour)."""
    if states:
        handles = [Patch(facecolor=colour, edgecolor="none", label=label) for label, colour in states.items()]
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=TEXT_PT, frameon=False)


def state_words(states: dict[str, str]) -> str:
    """The caption's key to the state colours: "no gradient (.grad was None) in grey, exactly 0 in blue"."""
    return ", ".join(f"{label} in {COLOUR_WORDS.get(colour, colour)}" for label, colour in states.items())


def step_edges(steps: np.ndarray, last_steps: np.ndarray | None = None) -> np.ndarray:
    """Cell edges around (possibly unevenly spaced) steps: midpoints, ±0.5 at the ends. With ``last_steps``
    (blocks of records from ``steps[k]`` to ``last_steps[k]``) a cell spans its block: the edges are midway
    between one block's last step and the next block's first."""
    steps = np.asarray(steps, dtype=np.float64)
    last = steps if last_steps is None else np.asarray(last_steps, dtype=np.float64)
    if len(steps) == 1:
        return np.array([steps[0] - 0.5, last[0] + 0.5])
    middle = (steps[1:] + last[:-1]) / 2
    return np.concatenate([[steps[0] - 0.5], middle, [last[-1] + 0.5]])


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


def describe_spans(spans: list[tuple[int, int]]) -> str:
    text = ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in spans[:6])
    return text + (f" and {len(spans) - 6} more" if len(spans) > 6 else "")


def mark_nonfinite_steps(ax: plt.Axes, steps: np.ndarray, bad: np.ndarray) -> list[tuple[int, int]]:
    """Red bands over the recorded steps where ``bad`` holds; returns the spans drawn."""
    spans = _spans(np.asarray(steps), np.asarray(bad, dtype=bool))
    for first, last in spans:
        ax.axvspan(first - 0.5, last + 0.5, color=NONFINITE_COLOUR, alpha=0.25, lw=0, label="_nonfinite")
    return spans


def quiet_mean(stacked: np.ndarray, axis: int = 0) -> np.ndarray:
    """Mean over runs; a cell that is non-finite in any run stays non-finite (never averaged away)."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", over="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return stacked.mean(axis=axis)


def band(stacked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmin(stacked, axis=0), np.nanmax(stacked, axis=0)


def panel_grid(count: int, width: float = 5.4, height: float = 3.8, columns: int = 3):
    """A figure of ``count`` panels ``width`` × ``height`` inches in ``columns`` columns; panels are narrowed
    so that the figure is at most ``MAX_FIGURE_INCHES`` wide (the page then never shrinks its text)."""
    columns = min(columns, max(count, 1))
    rows = int(np.ceil(max(count, 1) / columns))
    width = min(width, MAX_FIGURE_INCHES / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(width * columns, height * rows), squeeze=False, layout="constrained"
    )
    flat = list(axes.ravel())
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def panel_title(label: str, runs: Sequence[Run], band: bool = True) -> str:
    """The title of a group's panel: its label, and how its runs are summarised when there are several
    (the mean, and with ``band`` a band from their minimum to their maximum)."""
    if len(runs) == 1:
        return label
    return f"{label} (mean of {len(runs)} runs{', band min–max' if band else ''})"


def matched_probe(run: Run, key: tuple[str, int | str]) -> str | None:
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


def group_arrays(groups: Groups, key, quantity: str) -> dict[str, tuple[list[Run], list[LayerArray]]]:
    """Per group: the runs that recorded ``quantity`` under ``key`` and their LayerArrays, all in blocks of one
    size (:func:`gradlens.report.blocks.block_for` of the longest run's records), so runs align by step."""
    matched = {
        label: [(run, probe) for run in runs if (probe := matched_probe(run, key)) is not None]
        for label, runs in groups.items()
    }
    matched = {
        label: [(run, probe) for run, probe in pairs if quantity in run.quantities(probe)]
        for label, pairs in matched.items()
    }
    counts = {(id(run), probe): run.n_records(probe) for pairs in matched.values() for run, probe in pairs}
    block = block_for(max(counts.values(), default=0))
    out = {}
    for label, pairs in matched.items():
        # a live run may have declared the probe but committed no record yet
        found = [(run, layer_array(run, probe, quantity, block)) for run, probe in pairs if counts[(id(run), probe)]]
        if found:
            out[label] = ([r for r, _ in found], [a for _, a in found])
    return out
