"""Scalar views: a probe's per-record scalars (``()`` quantities) and every scalar logged with
``session.log``, over steps, groups overlaid (mean and min–max band over seeds), red bands where not finite.

One axis type per figure: probe scalars are drawn on linear axes; a logged loss that spans more than
``LOG_LOSS_SPAN`` is drawn on a log axis, in a figure of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

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


def stack_series(series: Sequence[dict[int, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Runs' series (step -> value) on the steps every run has: ``(steps [N], values [R, N], bad [N],
    mean [N])``; ``bad`` where some run is non-finite, ``mean`` over runs (NaN where ``bad``)."""
    steps = np.array(sorted(set.intersection(*(set(s) for s in series))), dtype=np.int64)
    stacked = np.array([[s[int(t)] for t in steps] for s in series], dtype=np.float64).reshape(len(series), -1)
    bad = ~np.isfinite(stacked).all(axis=0)
    return steps, stacked, bad, np.where(bad, np.nan, quiet_mean(stacked))


def draw_series(ax: plt.Axes, steps, stacked, bad, mean, colour, label: str, **style) -> list[tuple[int, int]]:
    """The mean line, the min–max band when there are several runs, red bands where not finite (spans)."""
    ax.plot(steps, mean, color=colour, label=label, **style)
    if len(stacked) > 1:
        low, high = band(stacked)
        ax.fill_between(steps, low, high, color=colour, alpha=0.2, lw=0)
    return mark_nonfinite_steps(ax, steps, bad)


def series_section(groups: Groups, key, quantities: Sequence[str], title: str) -> Section | None:
    """Scalar (``()``) quantities of a probe over steps, one linear panel each, groups overlaid."""
    fig, axes = panel_grid(len(quantities), width=4.6, height=3.2, columns=3)
    data: dict = {}
    notes = []
    for ax, quantity in zip(axes, quantities, strict=True):
        for index, (name, runs) in enumerate(groups.items()):
            series = []
            for run in runs:
                probe = matched_probe(run, key)
                if probe is not None and quantity in run.quantities(probe):
                    steps, values, _, _ = run.array(probe, quantity)
                    series.append(dict(zip(steps.tolist(), np.asarray(values, np.float64).tolist(), strict=True)))
            if not series:
                continue
            steps, stacked, bad, mean = stack_series(series)
            spans = draw_series(ax, steps, stacked, bad, mean, f"C{index}", panel_title(name, runs), marker=".", ms=3)
            if spans:
                notes.append(f"{quantity} ({name}) not finite at steps {describe_spans(spans)} (red)")
            data[(quantity, name)] = {"steps": steps, "values": mean}
        integer_steps(ax)
        ax.set_title(quantity, fontsize=TITLE_PT)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(scale_label(quantity, False))
        ax.grid(alpha=0.3)
        if len(groups) > 1:
            ax.legend(fontsize=TEXT_PT)
    caption = "Per-record scalars of the probe over steps."
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
    linear panels, and the loss panel in a figure of its own when it needs a log axis (``LOG_LOSS_SPAN``)."""
    frames = {label: [run.scalars() for run in runs] for label, runs in groups.items()}
    names = list(dict.fromkeys(n for fs in frames.values() for f in fs for n in f["name"]))
    if not names:
        return []
    lines: dict[str, list] = {}  # panel title -> (group, name, steps, values, bad, mean)
    for title, members in scalar_panels(names).items():
        for label, group_frames in frames.items():
            for name in members:
                series = []
                for frame in group_frames:
                    rows = frame[frame["name"] == name].drop_duplicates("step", keep="last")
                    series.append(dict(zip(rows["step"].tolist(), rows["value"].tolist(), strict=True)))
                series = [s for s in series if s]
                if series:
                    lines.setdefault(title, []).append((label, name, *stack_series(series)))
    log = {title: title == "loss" and _spans_decades(entries) for title, entries in lines.items()}
    first = log[next(iter(lines))]  # the figure holding the first panel (the loss) comes first
    figures = [titles for scale in (first, not first) if (titles := [t for t in lines if log[t] == scale])]
    return [_scalar_figure(titles, lines, log[titles[0]], list(frames), len(figures) > 1) for titles in figures]


def _spans_decades(entries: list) -> bool:
    values = np.concatenate([mean[np.isfinite(mean)] for *_, mean in entries] + [np.zeros(0)])
    return bool(values.size and (values > 0).all() and values.max() / values.min() > LOG_LOSS_SPAN)


def _scalar_figure(titles: list[str], lines: dict, log: bool, groups: list[str], split: bool) -> Section:
    """One figure of logged-scalar panels sharing the axis type ``log``; ``groups``: every group label."""
    fig, axes = panel_grid(len(titles), width=5.0, height=3.4, columns=3)
    data: dict = {}
    notes = []
    for ax, title in zip(axes, titles, strict=True):
        members = list(dict.fromkeys(name for _, name, *_ in lines[title]))
        for label, name, steps, stacked, bad, mean in lines[title]:
            g, k = groups.index(label), members.index(name)
            text = name if len(groups) == 1 else f"{label}: {name}"
            if len(stacked) > 1:
                text += f" (mean of {len(stacked)})"
            colour = f"C{g if len(groups) > 1 else k}"
            style = {"ls": LINE_STYLES[k % 4], "marker": "o" if len(steps) <= 30 else None, "ms": 3, "lw": 1}
            spans = draw_series(ax, steps, stacked, bad, mean, colour, text, **style)
            if spans:
                notes.append(f"{text} not finite at steps {describe_spans(spans)} (red band)")
            data[(title, label, name)] = {"steps": steps, "values": mean}
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
    if notes:
        caption += " " + "; ".join(notes) + "."
    heading = "Logged scalars" if not split else f"Logged scalars ({'log' if log else 'linear'} scale)"
    return Section(heading, fig, caption, kind="scalars", data=data)
