"""Scalar views: a probe's per-record scalars (``()`` quantities) and every scalar logged with
``session.log``, over steps, groups overlaid (mean and min–max band over seeds), red bands where not finite."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gradlens.report.views.drawing import (
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
)


def series_section(groups: Groups, key, quantities: Sequence[str], title: str) -> Section | None:
    """Scalar (``()``) quantities of a probe over steps, one panel each, groups overlaid."""
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
            steps = np.array(sorted(set.intersection(*(set(s) for s in series))), dtype=np.int64)
            stacked = np.array([[s[int(t)] for t in steps] for s in series])
            mean = quiet_mean(stacked)
            bad = ~np.isfinite(stacked).all(axis=0)
            ax.plot(
                steps, np.where(bad, np.nan, mean), marker=".", ms=3, color=f"C{index}", label=panel_title(name, runs)
            )
            if len(runs) > 1:
                low, high = band(stacked)
                ax.fill_between(steps, low, high, color=f"C{index}", alpha=0.2, lw=0)
            spans = mark_nonfinite_steps(ax, steps, bad)
            if spans:
                notes.append(f"{quantity} ({name}) not finite at steps {describe_spans(spans)} (red)")
            data[(quantity, name)] = {"steps": steps, "values": np.where(bad, np.nan, mean)}
        integer_steps(ax)
        ax.set_title(quantity, fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if len(groups) > 1:
            ax.legend(fontsize=7)
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
    """Every scalar logged with ``session.log``, whatever its name (see :func:`scalar_panels`)."""
    frames = {label: [run.scalars() for run in runs] for label, runs in groups.items()}
    names = list(dict.fromkeys(n for fs in frames.values() for f in fs for n in f["name"]))
    if not names:
        return []
    panels = scalar_panels(names)
    fig, axes = panel_grid(len(panels), width=5.0, height=3.4, columns=3)
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
                mean = np.where(bad, np.nan, quiet_mean(stacked))
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
                    low, high = band(stacked)
                    ax.fill_between(steps, low, high, color=f"C{g if len(frames) > 1 else k}", alpha=0.2, lw=0)
                spans = mark_nonfinite_steps(ax, steps, bad)
                if spans:
                    notes.append(f"{text} not finite at steps {describe_spans(spans)} (red band)")
                finite_values.append(mean[np.isfinite(mean)])
                data[(title, label, name)] = {"steps": steps, "values": mean}
        values = np.concatenate(finite_values) if finite_values else np.zeros(0)
        if title == "loss" and values.size and (values > 0).all() and values.max() / values.min() > 20:
            ax.set_yscale("log")
        integer_steps(ax)
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
