"""Distribution views: per-layer box plots of ``[layer, sample]`` quantities and histograms over steps
(ridges for a few steps, a step × bin heat-map for many).

Histograms are drawn as recorded (counts are never averaged over steps): for long runs every k-th record
(at most ``MAX_SAMPLED_ROWS`` rows), box plots read only the records of the steps they show.

A histogram record whose counts are negative is a parameter without a gradient at that step (GradStats writes
-1): drawn grey, never as negative counts, and left out of the "below/above the bins" totals.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap, LogNorm  # noqa: E402

from gradlens.loader import Run  # noqa: E402
from gradlens.report.blocks import Stream, block_for  # noqa: E402
from gradlens.report.common import chosen_steps, edges_for, short_names  # noqa: E402
from gradlens.report.views.drawing import (  # noqa: E402
    MAX_HIST_LAYERS,
    MAX_RIDGES,
    NO_GRAD_COLOUR,
    NO_GRAD_LABEL,
    TEXT_PT,
    TITLE_PT,
    Groups,
    Section,
    integer_steps,
    layer_ticks,
    matched_probe,
    panel_grid,
    scale_label,
    state_legend,
    step_edges,
)

MAX_SAMPLED_ROWS = 256  # histogram rows read of a long run (every k-th record)


def distribution_section(groups: Groups, key, quantity: str, title: str, ylabel: str) -> Section | None:
    """Per-layer distributions of a ``[layer, sample]`` quantity at chosen steps (box plots, samples pooled
    over a group's runs); non-finite samples are left out and counted in the caption."""
    panels = {}
    for name, runs in groups.items():
        records = []
        for run in runs:
            probe = matched_probe(run, key)
            if probe is not None and quantity in run.quantities(probe) and run.n_records(probe):
                records.append((run, probe, sampled_steps(run, probe)[0]))
        if records:
            panels[name] = (runs, records)
    if not panels:
        return None
    fig, axes = panel_grid(len(panels), width=7.5, columns=2)
    data = {}
    dropped_total = 0
    positive = True  # one axis type for every panel: log when every drawn sample of every group is > 0
    for ax, (name, (runs, records)) in zip(axes, panels.items(), strict=True):
        steps_all = sorted(set.intersection(*(set(steps.tolist()) for _, _, steps in records)))
        picked = chosen_steps(steps_all, count=3)
        # the records at the picked steps only: [run][step] -> (steps, values, axes, labels)
        read = [[run.array(probe, quantity, start=s, stop=s + 1) for s in picked] for run, probe, _ in records]
        layers = list(read[0][0][3].get("layer", [str(i) for i in range(read[0][0][1].shape[1])]))
        width = 0.8 / max(len(picked), 1)
        colours = plt.cm.viridis(np.linspace(0, 0.9, len(picked)))
        panel = {}
        for k, (step, colour) in enumerate(zip(picked, colours, strict=True)):
            pooled = [per_run[k][1][0].reshape(len(layers), -1).astype(np.float64) for per_run in read]
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
        layer_ticks(ax, layers)
        ax.set_title(name if len(runs) == 1 else f"{name} (samples of {len(runs)} runs pooled)", fontsize=TITLE_PT)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=TEXT_PT)
    for ax in axes:
        if positive:
            ax.set_yscale("log")
        ax.set_ylabel(scale_label(ylabel, positive))
    caption = (
        f"Distribution over the probe-batch samples of {ylabel} per layer at up to three recorded steps "
        "(box: quartiles, line: median, whiskers: 1.5 IQR)."
    )
    if dropped_total:
        caption += f" {dropped_total} non-finite sample values are not drawn."
    return Section(title, fig, caption, kind="distribution", data=data)


def sampled_steps(run: Run, probe: str, rows: int = MAX_SAMPLED_ROWS) -> tuple[np.ndarray, int]:
    """At most about ``rows`` recorded steps of ``probe``, every ``stride``-th record from the first, and the
    last record's step: ``(steps, stride)`` (every step while there are at most ``rows`` records)."""
    stride = max(1, -(-run.n_records(probe) // rows))
    steps = run.steps(probe, stride=stride)
    span = run.span(probe)
    if span is not None and (not len(steps) or steps[-1] != span[1]):
        steps = np.append(steps, span[1])
    return steps, stride


def outside_total(run: Run, probe: str, quantity: str) -> str:
    """The sum of a count of values outside a histogram's bins over every record (its -1s, records without a
    gradient, left out), read from blocks: exact for single records and whole counts, "≈ N" otherwise."""
    stream = Stream(run, probe, quantity)
    summary = stream.blocks(block_for(stream.count()))
    if summary.block == 1:
        values = np.asarray(summary.mean, dtype=np.float64)
        return str(int(np.nansum(np.where(values > 0, values, 0))))
    means = np.asarray(summary.mean, dtype=np.float64) * summary.count.reshape((-1,) + (1,) * (summary.mean.ndim - 1))
    return f"≈ {int(round(np.nansum(np.where(means > 0, means, 0))))}"


def histogram_section(groups: Groups, key, quantity: str, title: str) -> Section | None:
    """Histograms over steps as TensorBoard shows them: ridges (≤ 12 steps) or a step × bin heat-map.

    ``[bin]`` quantities: one panel per group (first run of a group). ``[layer, bin]``: one panel per layer,
    at most ``MAX_HIST_LAYERS`` layers spread from the first to the last, for the first group only.
    """
    (name, runs), *_ = groups.items()
    run = next((r for r in runs if matched_probe(r, key) is not None), None)
    if run is None:
        return None
    probe = matched_probe(run, key)
    quantities = run.quantities(probe)
    edges_name = edges_for(quantities, quantity)
    if quantity not in quantities or edges_name is None:
        return None
    stride = sampled_steps(run, probe)[1]
    steps, counts, axes, labels = run.array(probe, quantity, stride=stride)
    edges = run.array(probe, edges_name, stride=stride)[1]
    if len(steps) == 0:
        return None
    per_layer = axes == ("step", "layer", "bin")
    if per_layer:
        layers = list(labels.get("layer", [str(i) for i in range(counts.shape[1])]))
        chosen = np.unique(np.round(np.linspace(0, len(layers) - 1, min(MAX_HIST_LAYERS, len(layers)))).astype(int))
        panels = [(layers[i], counts[:, i, :]) for i in chosen]
    else:
        panels = [(name, counts)]
    fig, panel_axes = panel_grid(len(panels), width=4.6, height=3.6, columns=3 if per_layer else 2)
    fixed = bool(np.all(edges == edges[0]))
    data = {}
    ridge = len(steps) <= MAX_RIDGES or not fixed
    tables = [np.asarray(table, dtype=np.float64) for _, table in panels]
    no_grad = [(table < 0).any(axis=1) for table in tables]  # [N] per panel: GradStats counts -1, no gradient
    tables = [np.where(absent[:, None], np.nan, table) for table, absent in zip(tables, no_grad, strict=True)]
    top = max([float(np.nanmax(t)) for t in tables if np.isfinite(t).any()] + [1.0])
    mesh = None
    for ax, (label, _), table, absent in zip(panel_axes, panels, tables, no_grad, strict=True):
        if ridge:
            picked = chosen_steps(steps, count=MAX_RIDGES)
            scale = max(float(np.nanmax(table)) if np.isfinite(table).any() else 1.0, 1.0)
            for offset, step in enumerate(picked):
                row = int(np.searchsorted(steps, step))
                colour = NO_GRAD_COLOUR if absent[row] else plt.cm.viridis(offset / max(len(picked), 1))
                height = np.full(table.shape[1], 0.3) if absent[row] else table[row] / scale * 1.6
                ax.stairs(
                    height + offset,
                    edges[row],
                    baseline=offset,
                    fill=True,
                    alpha=1 if absent[row] else 0.5,
                    color=colour,
                )
            ax.set_yticks(range(len(picked)), [str(s) for s in picked], fontsize=TEXT_PT)
            ax.set_ylabel("step")
            ax.set_xlabel(scale_label("value", False))
            data[label] = {
                "steps": picked,
                "counts": table[np.searchsorted(steps, picked)],
                "edges": edges,
                "scale": scale,
            }
        else:
            mesh = ax.pcolormesh(
                step_edges(steps),
                edges[0],
                np.ma.masked_less_equal(np.nan_to_num(table.T, nan=0.0), 0),
                norm=LogNorm(vmin=1, vmax=top),
                cmap="viridis",
            )
            if absent.any():
                ax.pcolormesh(
                    step_edges(steps),
                    edges[0],
                    np.ma.masked_where(~np.broadcast_to(absent[:, None], table.shape).T, np.ones(table.T.shape)),
                    cmap=ListedColormap([NO_GRAD_COLOUR]),
                    vmin=0,
                    vmax=1,
                )
            integer_steps(ax)
            ax.set_xlabel("optimizer step")
            ax.set_ylabel(scale_label("value", False))
            data[label] = {"steps": steps, "counts": table, "edges": edges[0]}
        ax.set_title(short_names([label])[0], fontsize=TITLE_PT - 1)
        ax.tick_params(labelsize=TEXT_PT)
    if mesh is not None:
        fig.colorbar(mesh, ax=panel_axes, label=scale_label("count", True))
    absent_notes = [
        f"{label}: {NO_GRAD_LABEL} at {int(absent.sum())} steps (grey)"
        for (label, _), absent in zip(panels, no_grad, strict=True)
        if absent.any()
    ]
    if absent_notes:
        state_legend(fig, {NO_GRAD_LABEL: NO_GRAD_COLOUR})
    extra = []
    for side in ("below", "above"):
        for candidate in (f"{quantity}_{side}", side):
            if candidate in quantities and quantities[candidate].axes in ((), ("layer",)):
                extra.append(f"{outside_total(run, probe, candidate)} values {side} the bins")
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
        + (f"; {'; '.join(absent_notes)}" if absent_notes else "")
        + (f"; run {name}" if len(groups) > 1 else "")
        + "."
    )
    if stride > 1:
        caption += (
            f" Rows: every {stride}-th record from the first ({len(steps)} of {run.n_records(probe)} records; "
            "a histogram is drawn as recorded at its step, never averaged)."
        )
    return Section(title, fig, caption, probe=probe, kind="histogram", data=data)
