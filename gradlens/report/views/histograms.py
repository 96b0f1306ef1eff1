"""Distribution views: per-layer box plots of ``[layer, sample]`` quantities and histograms over steps
(ridges for a few steps, a step × bin heat-map for many)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from gradlens.report.common import chosen_steps, edges_for, short_names  # noqa: E402
from gradlens.report.views.drawing import (  # noqa: E402
    MAX_HIST_LAYERS,
    MAX_RIDGES,
    Groups,
    Section,
    integer_steps,
    layer_ticks,
    matched_probe,
    panel_grid,
    panel_title,
    step_edges,
)


def distribution_section(groups: Groups, key, quantity: str, title: str, ylabel: str) -> Section | None:
    """Per-layer distributions of a ``[layer, sample]`` quantity at chosen steps (box plots, samples pooled
    over a group's runs); non-finite samples are left out and counted in the caption."""
    panels = {}
    for name, runs in groups.items():
        records = []
        for run in runs:
            probe = matched_probe(run, key)
            if probe is not None and quantity in run.quantities(probe):
                records.append(run.array(probe, quantity))
        if records:
            panels[name] = (runs, records)
    if not panels:
        return None
    fig, axes = panel_grid(len(panels), width=7.5, columns=2)
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
        layer_ticks(ax, layers)
        ax.set_ylabel(ylabel)
        ax.set_title(panel_title(name, runs), fontsize=10)
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
    run = next((r for r in runs if matched_probe(r, key) is not None), None)
    if run is None:
        return None
    probe = matched_probe(run, key)
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
    fig, panel_axes = panel_grid(len(panels), width=5.0, height=3.8, columns=4 if per_layer else 2)
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
                step_edges(steps),
                edges[0],
                np.ma.masked_less_equal(table.T, 0),
                norm=LogNorm(vmin=1, vmax=max(float(table.max()), 1.0)),
                cmap="viridis",
            )
            fig.colorbar(mesh, ax=ax, label="count")
            integer_steps(ax)
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
