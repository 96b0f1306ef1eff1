"""What every view draws with: the Section a view returns, colours, panel grids, tick and step helpers.

A view is a function ``(groups, key, ...) -> Section | None``; ``groups`` maps a run label to the runs carrying
it (seeds), ``key`` names a probe by class and rank (:func:`probe_keys`), since names may differ between runs.
Nothing here chooses a view or reads a quantity's meaning.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from gradlens.loader import Run  # noqa: E402
from gradlens.report.common import LayerArray, layer_array, probe_class, short_names  # noqa: E402

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


def integer_steps(ax: plt.Axes, axis: str = "x") -> None:
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True))


def layer_ticks(ax: plt.Axes, layers: Sequence[str], axis: str = "x") -> None:
    """Tick every layer (every k-th beyond MAX_LAYER_TICKS) with its abbreviated name."""
    labels = short_names(layers)
    stride = max(1, int(np.ceil(len(labels) / MAX_LAYER_TICKS)))
    positions = np.arange(0, len(labels), stride)
    size = 7 if len(labels) <= 24 else 5.5
    if axis == "x":
        ax.set_xticks(positions, [labels[i] for i in positions], rotation=90, fontsize=size)
    else:
        ax.set_yticks(positions, [labels[i] for i in positions], fontsize=size)


def step_edges(steps: np.ndarray) -> np.ndarray:
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
    columns = min(columns, max(count, 1))
    rows = int(np.ceil(max(count, 1) / columns))
    fig, axes = plt.subplots(
        rows, columns, figsize=(width * columns, height * rows), squeeze=False, layout="constrained"
    )
    flat = list(axes.ravel())
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def panel_title(label: str, runs: Sequence[Run]) -> str:
    return label if len(runs) == 1 else f"{label} (mean of {len(runs)} runs, band min–max)"


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
    """Per group: the runs that recorded ``quantity`` under ``key`` and their LayerArrays."""
    out = {}
    for label, runs in groups.items():
        found = []
        for run in runs:
            probe = matched_probe(run, key)
            if probe is not None and quantity in run.quantities(probe):
                array = layer_array(run, probe, quantity)
                if len(array.steps):  # a live run may have declared the probe but committed no record yet
                    found.append((run, array))
        if found:
            out[label] = ([r for r, _ in found], [a for _, a in found])
    return out
