"""Scalar views: a probe's per-record scalars (``()`` quantities) and every scalar logged with
``session.log``, over steps, groups overlaid (mean and min–max band over seeds), red bands where not finite.

One axis type per figure: probe scalars are drawn on linear axes; a logged loss that spans more than
``LOG_LOSS_SPAN`` is drawn on a log axis, in a figure of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np

from gradlens.loader import Summary
from gradlens.report.blocks import Stream, block_for, resolution
from gradlens.report.views.drawing import (
    TEXT_PT,
    TITLE_PT,
    Groups,
    Section,
    band,
    describe_spans,
    integer_steps,
    mark_nonfinite_steps,
    matched_probe,
    panel_grid,
    panel_title,
    quiet_mean,
    scale_label,
)

LOG_LOSS_SPAN = 20  # a loss whose largest drawn value is more than 20× its smallest: log axis (decades matter)
LINE_STYLES = ["-", "--", ":", "-."]


@dataclass
class Stacked:
    """Runs' series on the steps every run has (points: records, or blocks of ``block`` records).

    Attributes:
        steps: ``[N]`` each point's (first) step.
        values: ``[R, N]`` each run's value (a block's mean).
        low, high: ``[N]`` the band: min and max over runs and over each block's records (NaN ignored).
        bad: ``[N]`` some run is non-finite there.
        mean: ``[N]`` the mean over runs (NaN where ``bad``).
        block: records per point.
    """

    steps: np.ndarray
    values: np.ndarray
    low: np.ndarray
    high: np.ndarray
    bad: np.ndarray
    mean: np.ndarray
    block: int = 1
    last_steps: np.ndarray | None = None


def stack_series(series: Sequence[Summary]) -> Stacked:
    """Runs' blocks of one series (:class:`gradlens.loader.Summary`, one size) on the steps every run has; a
    step recorded twice keeps its last value."""
    tables = [
        {int(s): (m, lo, hi, last) for s, m, lo, hi, last in
         zip(x.first_step, x.mean, x.min, x.max, x.last_step, strict=True)}
        for x in series
    ]
    steps = np.array(sorted(set.intersection(*(set(t) for t in tables))), dtype=np.int64)
    rows = np.array([[t[int(s)] for s in steps] for t in tables], dtype=np.float64).reshape(len(tables), -1, 4)
    values = rows[..., 0]
    bad = ~np.isfinite(values).all(axis=0)
    low, high = band(rows[..., 1]), band(rows[..., 2])
    mean = np.where(bad, np.nan, quiet_mean(values))
    return Stacked(steps, values, low[0], high[1], bad, mean, series[0].block, rows[0, :, 3].astype(np.int64))


def drawn_data(stacked: Stacked) -> dict:
    """What a curve draws, for tests and exports: each point's first step, the mean line, the band."""
    return {"steps": stacked.steps, "values": stacked.mean, "low": stacked.low, "high": stacked.high}


def draw_series(ax: plt.Axes, stacked: Stacked, colour, label: str, **style) -> list[tuple[int, int]]:
    """The mean line, the band (min–max over runs and blocks) when there is one, red bands where not finite
    (returns those spans)."""
    ax.plot(stacked.steps, stacked.mean, color=colour, label=label, **style)
    if len(stacked.values) > 1 or stacked.block > 1:
        ax.fill_between(stacked.steps, stacked.low, stacked.high, color=colour, alpha=0.2, lw=0)
    return mark_nonfinite_steps(ax, stacked.steps, stacked.bad)


def stream_blocks(streams: Sequence[Stream]) -> list[Summary]:
    """Every stream in blocks of one size: :func:`block_for` of the longest (so runs align by step)."""
    block = block_for(max((stream.count() for stream in streams), default=0))
    return [stream.blocks(block) for stream in streams]


def resolution_of(lines: Sequence[Stacked]) -> str:
    """The caption's resolution sentence for curves drawn from ``lines`` ("" for records)."""
    coarse = [line for line in lines if line.block > 1 and len(line.steps)]
    if not coarse:
        return ""
    line = max(coarse, key=lambda item: item.block)
    band = "band: min–max over the block's records" + (" and over seeds" if len(line.values) > 1 else "")
    return " " + resolution(line.block, line.steps, line.last_steps, "point", f"mean ({band})")


def series_section(groups: Groups, key, quantities: Sequence[str], title: str) -> Section | None:
    """Scalar (``()``) quantities of a probe over steps, one linear panel each, groups overlaid."""
    fig, axes = panel_grid(len(quantities), width=4.6, height=3.2, columns=3)
    data: dict = {}
    notes = []
    drawn = []
    for ax, quantity in zip(axes, quantities, strict=True):
        for index, (name, runs) in enumerate(groups.items()):
            streams = []
            for run in runs:
                probe = matched_probe(run, key)
                if probe is not None and quantity in run.quantities(probe) and run.n_records(probe):
                    streams.append(Stream(run, probe, quantity))
            if not streams:
                continue
            stacked = stack_series(stream_blocks(streams))
            spans = draw_series(ax, stacked, f"C{index}", panel_title(name, runs), marker=".", ms=3)
            if spans:
                notes.append(f"{quantity} ({name}) not finite at steps {describe_spans(spans)} (red)")
            data[(quantity, name)] = drawn_data(stacked)
            drawn.append(stacked)
        integer_steps(ax)
        ax.set_title(quantity, fontsize=TITLE_PT)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(scale_label(quantity, False))
        ax.grid(alpha=0.3)
        if len(groups) > 1:
            ax.legend(fontsize=TEXT_PT)
    caption = "Per-record scalars of the probe over steps." + resolution_of(drawn)
    if notes:
        caption += " " + "; ".join(notes) + "."
    return Section(title, fig, caption, kind="series", data=data)


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
    """Every scalar logged with ``session.log``, whatever its name (see :func:`scalar_panels`): one figure of
    linear panels, and the loss panel in a figure of its own when it needs a log axis (``LOG_LOSS_SPAN``).
    Each name is read in blocks of one size over every run (:func:`stream_blocks`)."""
    runs = [run for group in groups.values() for run in group]
    logged = {id(run): run.scalar_names() for run in runs}
    names = list(dict.fromkeys(name for run in runs for name in logged[id(run)]))
    if not names:
        return []
    blocks: dict[tuple[int, str], Summary] = {}
    for name in names:
        having = [run for run in runs if name in logged[id(run)]]
        for run, summary in zip(having, stream_blocks([Stream(run, None, name) for run in having]), strict=True):
            blocks[(id(run), name)] = summary
    lines: dict[str, list] = {}  # panel title -> (group, name, Stacked)
    for title, members in scalar_panels(names).items():
        for label, group in groups.items():
            for name in members:
                series = [blocks[(id(run), name)] for run in group if (id(run), name) in blocks]
                if series:
                    lines.setdefault(title, []).append((label, name, stack_series(series)))
    log = {title: title == "loss" and _spans_decades(entries) for title, entries in lines.items()}
    first = log[next(iter(lines))]  # the figure holding the first panel (the loss) comes first
    figures = [titles for scale in (first, not first) if (titles := [t for t in lines if log[t] == scale])]
    return [_scalar_figure(titles, lines, log[titles[0]], list(groups), len(figures) > 1) for titles in figures]


def _spans_decades(entries: list) -> bool:
    values = np.concatenate([x.mean[np.isfinite(x.mean)] for *_, x in entries] + [np.zeros(0)])
    return bool(values.size and (values > 0).all() and values.max() / values.min() > LOG_LOSS_SPAN)


def _scalar_figure(titles: list[str], lines: dict, log: bool, groups: list[str], split: bool) -> Section:
    """One figure of logged-scalar panels sharing the axis type ``log``; ``groups``: every group label."""
    fig, axes = panel_grid(len(titles), width=5.0, height=3.4, columns=3)
    data: dict = {}
    notes = []
    for ax, title in zip(axes, titles, strict=True):
        members = list(dict.fromkeys(name for _, name, _ in lines[title]))
        for label, name, stacked in lines[title]:
            g, k = groups.index(label), members.index(name)
            text = name if len(groups) == 1 else f"{label}: {name}"
            if len(stacked.values) > 1:
                text += f" (mean of {len(stacked.values)})"
            colour = f"C{g if len(groups) > 1 else k}"
            style = {"ls": LINE_STYLES[k % 4], "marker": "o" if len(stacked.steps) <= 30 else None, "ms": 3, "lw": 1}
            spans = draw_series(ax, stacked, colour, text, **style)
            if spans:
                notes.append(f"{text} not finite at steps {describe_spans(spans)} (red band)")
            data[(title, label, name)] = drawn_data(stacked)
        if log:
            ax.set_yscale("log")
        integer_steps(ax)
        ax.set_title(title, fontsize=TITLE_PT)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(scale_label(title, log))
        ax.grid(alpha=0.3, which="both" if log else "major")
        ax.legend(fontsize=TEXT_PT)
    caption = (
        "Every scalar logged with session.log: names containing 'loss' share the loss panel, names containing "
        "'acc' the accuracy panel, every other name has its own."
    )
    if split:
        caption += (
            f" The loss spans more than {LOG_LOSS_SPAN}× and is drawn on a log axis in a figure of its own; "
            "the other scalars follow on linear axes."
            if log
            else " Linear axes (the loss, on a log axis, is drawn in its own figure)."
        )
    caption += resolution_of([stacked for title in titles for *_, stacked in lines[title]])
    if notes:
        caption += " " + "; ".join(notes) + "."
    heading = "Logged scalars" if not split else f"Logged scalars ({'log' if log else 'linear'} scale)"
    return Section(heading, fig, caption, kind="scalars", data=data)
