"""Self-contained HTML reports of one or several recorded runs.

``write_report([run])`` is the report of one run; with several runs the same pages overlay them (this is
``gradlens compare``). Every picture is a PNG embedded as base64, so the HTML file travels alone.
Pictures: per-layer mean |gradient| vs layer at chosen steps (log scale), a layer × step heat-map of
log10 mean |gradient| per run, and loss/accuracy curves.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gradlens.loader import Run  # noqa: E402

GRAD_PROBE = "grad_stats"


def run_label(run: Run) -> str:
    """A short label: the run's ``label`` in its config, else the file name."""
    return str(run.meta.get("config", {}).get("label") or os.path.splitext(os.path.basename(run.path))[0])


def describe(run: Run) -> str:
    """One line stating what the run is: model, dataset, scale, seed, epochs (from its stored config)."""
    config = run.meta.get("config", {})
    parts = [
        f"{key}={config[key]}" for key in ("model", "dataset", "scale", "seed", "epochs") if key in config
    ]
    model = run.meta.get("model", {})
    parts.append(
        f"{model.get('class', '?')} with {model.get('parameters', '?')} parameters "
        f"({model.get('dtype', '?')})"
    )
    return f"{run_label(run)}: " + ", ".join(parts)


def _png(fig: plt.Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def grad_profile(frame: pd.DataFrame, quantity: str = "mean_abs") -> pd.DataFrame:
    """Rows of ``quantity`` with a 1-based layer index in forward order (the layer table's order)."""
    rows = frame[frame["quantity"] == quantity].copy()
    order = {name: i + 1 for i, name in enumerate(dict.fromkeys(rows["layer"]))}
    rows["index"] = rows["layer"].map(order)
    return rows


def chosen_steps(steps: Sequence[int], count: int = 4) -> list[int]:
    """``count`` recorded steps spread log-uniformly from the first to the last (always both ends)."""
    steps = sorted(set(int(s) for s in steps))
    if len(steps) <= count:
        return steps
    targets = np.unique(np.round(np.geomspace(1, steps[-1] + 1, count) - 1).astype(int))
    picked = {min(steps, key=lambda s, t=t: abs(s - t)) for t in targets}
    return sorted(picked | {steps[0], steps[-1]})


def profile_figure(runs: Sequence[Run], quantity: str = "mean_abs") -> plt.Figure:
    """Per-layer ``quantity`` vs layer index at a few steps, one panel per run, log y."""
    fig, axes = plt.subplots(1, len(runs), figsize=(5.2 * len(runs), 3.8), squeeze=False, sharey=True)
    for ax, run in zip(axes[0], runs, strict=True):
        rows = grad_profile(run.frame(GRAD_PROBE), quantity)
        steps = chosen_steps(rows["step"].unique())
        colours = plt.cm.viridis(np.linspace(0, 0.9, len(steps)))
        for step, colour in zip(steps, colours, strict=True):
            at = rows[rows["step"] == step].sort_values("index")
            ax.plot(at["index"], at["value"], marker="o", ms=3, color=colour, label=f"step {step}")
        ax.set_yscale("log")
        ax.set_xlabel("layer (input → output)")
        ax.set_title(run_label(run))
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(f"{quantity.replace('_', ' ')} of weight gradient")
    fig.suptitle(f"Per-layer {quantity.replace('_', ' ')} of the weight gradient at chosen steps")
    return fig


def overlay_figure(runs: Sequence[Run], quantity: str = "mean_abs") -> plt.Figure:
    """Per-layer ``quantity`` averaged over all recorded steps, every run in one panel (log y)."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for run in runs:
        rows = grad_profile(run.frame(GRAD_PROBE), quantity)
        mean = rows.groupby("index")["value"].mean()
        ax.plot(mean.index, mean.values, marker="o", ms=3, label=run_label(run))
    ax.set_yscale("log")
    ax.set_xlabel("layer (input → output)")
    ax.set_ylabel(f"{quantity.replace('_', ' ')}, mean over steps")
    ax.set_title(f"Per-layer {quantity.replace('_', ' ')} of the weight gradient, runs overlaid")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


def heatmap_figure(runs: Sequence[Run], quantity: str = "mean_abs") -> plt.Figure:
    """log10 ``quantity`` as a layer × step heat-map, one panel per run, one shared colour scale."""
    tables = []
    for run in runs:
        rows = grad_profile(run.frame(GRAD_PROBE), quantity)
        table = rows.pivot_table(index="index", columns="step", values="value")
        tables.append(np.log10(table.where(table > 0)))
    finite = [t.values[np.isfinite(t.values)] for t in tables]
    lo = min((v.min() for v in finite if v.size), default=-8)
    hi = max((v.max() for v in finite if v.size), default=0)
    fig, axes = plt.subplots(1, len(runs), figsize=(5.2 * len(runs), 3.8), squeeze=False)
    for ax, run, table in zip(axes[0], runs, tables, strict=True):
        steps = table.columns.to_numpy()
        image = ax.imshow(
            table.values,
            aspect="auto",
            origin="lower",
            cmap="magma",
            vmin=lo,
            vmax=hi,
            extent=(steps[0] - 0.5, steps[-1] + 0.5, 0.5, len(table) + 0.5),
            interpolation="nearest",
        )
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("layer (input → output)")
        ax.set_title(run_label(run))
    fig.colorbar(image, ax=axes[0].tolist(), label=f"log10 {quantity.replace('_', ' ')}")
    return fig


def curves_figure(runs: Sequence[Run]) -> plt.Figure | None:
    """Training loss per step and test accuracy per epoch, runs overlaid; None when nothing was logged."""
    scalars = {run_label(run): run.scalars() for run in runs}
    if all(frame.empty for frame in scalars.values()):
        return None
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
    for index, (label, frame) in enumerate(scalars.items()):
        colour = f"C{index}"
        loss = frame[frame["name"] == "train_loss"]
        if not loss.empty:
            loss_ax.plot(loss["step"], loss["value"], lw=0.8, color=colour, label=f"{label} (mini-batch)")
        for name, style in (("test_acc", "-o"), ("train_acc", "--")):
            acc = frame[frame["name"] == name]
            if not acc.empty:
                acc_ax.plot(
                    acc["step"], acc["value"], style, ms=3, color=colour, label=f"{label} {name.replace('_', ' ')}"
                )
    loss_ax.set_yscale("log")
    loss_ax.set_xlabel("optimizer step")
    loss_ax.set_ylabel("training loss")
    acc_ax.set_xlabel("optimizer step (end of epoch)")
    acc_ax.set_ylabel("accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:  # say so rather than leave an empty frame
            ax.text(0.5, 0.5, "not recorded in this run", transform=ax.transAxes, ha="center", va="center")
    return fig


def summary_table(runs: Sequence[Run], quantity: str = "mean_abs") -> str:
    """HTML table: first/last-layer mean |gradient| at the last step, their ratio, final accuracy, flags."""
    rows = []
    for run in runs:
        profile = grad_profile(run.frame(GRAD_PROBE), quantity)
        last = profile[profile["step"] == profile["step"].max()].sort_values("index")
        first_value, last_value = float(last["value"].iloc[0]), float(last["value"].iloc[-1])
        nonfinite = run.frame(GRAD_PROBE).query("quantity == 'nonfinite' and value > 0")
        scalars = run.scalars()
        accuracy = scalars[scalars["name"] == "test_acc"]["value"]
        rows.append(
            "<tr>"
            f"<td>{html.escape(run_label(run))}</td><td>{int(profile['step'].max())}</td>"
            f"<td>{first_value:.3g}</td><td>{last_value:.3g}</td><td>{first_value / last_value:.3g}</td>"
            f"<td>{'—' if accuracy.empty else f'{float(accuracy.iloc[-1]):.4f}'}</td>"
            f"<td>{'none' if nonfinite.empty else f'{len(nonfinite)} layer-steps with NaN/Inf'}</td>"
            "</tr>"
        )
    header = (
        "<tr><th>run</th><th>last step</th><th>first layer</th><th>last layer</th>"
        "<th>first / last</th><th>final test acc.</th><th>non-finite gradients</th></tr>"
    )
    return f"<table>{header}{''.join(rows)}</table>"


def write_report(runs: Sequence[Run], out: str | os.PathLike, title: str | None = None) -> str:
    """Write the HTML report of ``runs`` to ``out`` and return its path."""
    runs = list(runs)
    if not runs:
        raise ValueError("write_report needs at least one run")
    missing = [run.path for run in runs if GRAD_PROBE not in run.probes]
    if missing:
        raise ValueError(f"{missing[0]} has no {GRAD_PROBE!r} records; record with GradStats to get a report")
    title = title or ("gradlens report" if len(runs) == 1 else "gradlens comparison")
    sections = [
        ("Per-layer gradient magnitude at chosen steps", profile_figure(runs)),
        ("Layer × step heat-map", heatmap_figure(runs)),
    ]
    if len(runs) > 1:
        sections.insert(0, ("Runs overlaid", overlay_figure(runs)))
    curves = curves_figure(runs)
    if curves is not None:
        sections.append(("Loss and accuracy", curves))
    body = "".join(
        f"<h2>{html.escape(heading)}</h2>"
        f"<img alt='{html.escape(heading)}' src='data:image/png;base64,{_png(fig)}'>"
        for heading, fig in sections
    )
    runs_list = "".join(
        f"<li>{html.escape(describe(run))} — <code>{html.escape(run.path)}</code></li>" for run in runs
    )
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}}
img{{max-width:100%}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:4px 8px}}</style>
</head><body><h1>{html.escape(title)}</h1>
<p>Runs:</p><ul>{runs_list}</ul>
<h2>Summary</h2>{summary_table(runs)}
<p>Gradients are of each layer's weight, recorded by GradStats at every optimizer step it fired.</p>
{body}
</body></html>
"""
    out = os.fspath(out)
    with open(out, "w", encoding="utf-8") as handle:
        handle.write(page)
    return out
