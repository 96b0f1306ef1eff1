"""GradStats' exponent histograms over training: per layer a heat map of x = log2|g| bucket, y = step, colour
= how many gradient entries fell in the bucket, one panel per sign, beside a narrow panel of the exactly-zero
and non-finite counts; a vanishing layer's mass sits decades to the left of a healthy one's.

Rows are blocks of ``block`` consecutive records (aligned to the record index, at most ``MAX_EXP_ROWS`` rows):
each row is the bucket counts **summed** over the block's records (a count stays a count). Reading is bounded:
at most ``MAX_EXP_VALUES`` counts per view; a longer record table is read every ``stride``-th record (the sum
is then over those records, and the caption says so). At most ``MAX_EXP_LAYERS`` layers are drawn, spread
from the first to the last (weights first: :func:`chosen_layers`).

Buckets, from the recorded ``exponent`` labels (:mod:`gradlens.probes.grad_exponents`): bucket 0 is
``(0, 2^lo)``, bucket m = 1 .. M-2 is ``[2^e, 2^(e+1))`` with e = lo + m - 1, bucket M-1 is ``[2^hi, inf)``;
bucket m is drawn over x in [lo - 1 + m, lo + m], so the x axis reads log2|g|. A row whose counts are all 0
(the parameter had no gradient at every record of the block) is grey; exact zeros are blue shades and
NaN/±Inf red shades, on the counts' log colour scale.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap, LogNorm  # noqa: E402

from gradlens.loader import Run  # noqa: E402
from gradlens.report.blocks import resolution  # noqa: E402
from gradlens.report.common import short_names  # noqa: E402
from gradlens.report.views.drawing import (  # noqa: E402
    MAX_FIGURE_INCHES,
    NO_GRAD_COLOUR,
    NO_GRAD_LABEL,
    TEXT_PT,
    TITLE_PT,
    Groups,
    Section,
    matched_probe,
    scale_label,
    state_legend,
    step_edges,
)

MAX_EXP_LAYERS = 8  # layers drawn (spread from the first to the last)
MAX_EXP_ROWS = 64  # step blocks per panel
MAX_EXP_VALUES = 1 << 23  # counts read per view (32 MiB of uint32): beyond, every stride-th record
EXPONENT_LABEL = re.compile(r"\[2\^(-?\d+), 2\^(-?\d+)\)")


@dataclass
class ExponentBlocks:
    """Exponent histograms of some layers, summed per block of records.

    Attributes:
        layers: the layers drawn ``[L]``.
        first_steps, last_steps: each block's first and last step read ``[B]``.
        counts: ``[B, L, 2, M]`` int64, sign 0 negative, 1 positive; M magnitude buckets.
        zero, nonfinite: ``[B, L]`` int64: entries exactly 0, entries NaN/±Inf.
        edges: ``[M + 1]`` the buckets' x edges in log2|g|.
        block: records per block; stride: every ``stride``-th record was read; records: the probe's records.
        total_layers: the layers the probe records (``layers`` is a choice of them).
    """

    layers: list[str]
    first_steps: np.ndarray
    last_steps: np.ndarray
    counts: np.ndarray
    zero: np.ndarray
    nonfinite: np.ndarray
    edges: np.ndarray
    block: int
    stride: int
    records: int
    total_layers: int

    @property
    def no_grad(self) -> np.ndarray:
        """``[B, L]``: no entry counted anywhere (the parameter had no gradient at the block's records read)."""
        return (self.counts.sum(axis=(2, 3)) + self.zero + self.nonfinite) == 0


def bucket_edges(labels: list[str]) -> np.ndarray:
    """x edges (log2|g|) of the magnitude buckets named by ``labels`` (``(0, 2^lo)``, ``[2^lo, 2^(lo+1))``, ...,
    ``[2^hi, inf)``).

    Raises:
        ValueError: no label of the form ``[2^e, 2^(e+1))``.
    """
    for index, label in enumerate(labels):
        match = EXPONENT_LABEL.fullmatch(label)
        if match:
            lowest = int(match.group(1)) - (index - 1)  # label `index` is [2^(lo + index - 1), ...)
            return lowest - 1 + np.arange(len(labels) + 1, dtype=np.float64)
    raise ValueError(f"exponent labels name no bucket [2^e, 2^(e+1)): {labels[:3]}")


def chosen_layers(names: list[str], most: int = MAX_EXP_LAYERS) -> list[int]:
    """At most ``most`` indices of ``names`` spread evenly from the first to the last, taken among the weights
    (names ending in ``weight``) when there are at least two: a layer's weight is what shows its gradient flow."""
    weights = [i for i, name in enumerate(names) if name.endswith("weight")]
    pool = weights if len(weights) >= 2 else list(range(len(names)))
    spread = np.unique(np.round(np.linspace(0, len(pool) - 1, min(most, len(pool)))).astype(int))
    return [pool[i] for i in spread]


def exponent_blocks(run: Run, probe: str, layers: list[int] | None = None) -> ExponentBlocks | None:
    """The exponent histograms of ``probe`` for ``layers`` (indices; default :func:`chosen_layers`) summed per
    block (module docstring); None when nothing is recorded."""
    records = run.n_records(probe)
    if not records:
        return None
    _, _, _, labels = run.array(probe, "exp_hist", stop=-1)
    names = list(labels["layer"])
    picked = chosen_layers(names) if layers is None else list(layers)
    per_record = len(picked) * 2 * len(labels["exponent"])
    stride = max(1, -(-records * per_record // MAX_EXP_VALUES))
    rows = -(-records // MAX_EXP_ROWS)  # the fewest records per block for at most MAX_EXP_ROWS blocks
    block = stride * -(-rows // stride)  # rounded up to a multiple of the stride
    steps, counts, _, _ = run.array(probe, "exp_hist", stride=stride, layers=picked)
    zero = run.array(probe, "exp_zero", stride=stride, layers=picked)[1]
    nonfinite = run.array(probe, "exp_nonfinite", stride=stride, layers=picked)[1]
    index = np.arange(len(steps)) * stride  # the record index of each record read
    starts = np.flatnonzero(np.r_[True, np.diff(index // block) > 0])
    ends = np.r_[starts[1:], len(steps)] - 1
    return ExponentBlocks(
        [names[i] for i in picked],
        np.asarray(steps, np.int64)[starts],
        np.asarray(steps, np.int64)[ends],
        np.add.reduceat(np.asarray(counts, np.int64), starts, axis=0),
        np.add.reduceat(np.asarray(zero, np.int64), starts, axis=0),
        np.add.reduceat(np.asarray(nonfinite, np.int64), starts, axis=0),
        bucket_edges(list(labels["exponent"])),
        block,
        stride,
        records,
        len(names),
    )


def _x_limits(found: dict[str, ExponentBlocks]) -> tuple[float, float]:
    """The x range holding every counted bucket of every group, one bucket of margin each side."""
    used = np.zeros(0)
    for blocks in found.values():
        filled = np.flatnonzero(blocks.counts.sum(axis=(0, 1, 2)) > 0)
        used = np.r_[used, blocks.edges[filled], blocks.edges[filled + 1]]
    edges = next(iter(found.values())).edges
    if not used.size:
        return float(edges[0]), float(edges[-1])
    return max(float(edges[0]), used.min() - 1), min(float(edges[-1]), used.max() + 1)


def exponent_section(groups: Groups, key, title: str) -> Section | None:
    """The exponent histograms of the first run of each group (see the module docstring); one row of panels
    per drawn layer, groups side by side, one log colour scale for the figure."""
    found: dict[str, ExponentBlocks] = {}
    for label, runs in groups.items():
        run = next((r for r in runs if matched_probe(r, key) is not None), None)
        if run is not None and "exp_hist" in run.quantities(matched_probe(run, key)):
            blocks = exponent_blocks(run, matched_probe(run, key))
            if blocks is not None:
                found[label] = blocks
    if not found:
        return None
    rows = max(len(b.layers) for b in found.values())
    ratios = [4, 4, 0.6] * len(found)
    fig, axes = plt.subplots(
        rows,
        len(ratios),
        figsize=(min(MAX_FIGURE_INCHES, 3.4 * len(found) * 2.15), 1.9 * rows + 1.2),
        squeeze=False,
        layout="constrained",
        gridspec_kw={"width_ratios": ratios},
    )
    top = max(
        max(int(b.counts.max(initial=0)), int(b.zero.max(initial=0)), int(b.nonfinite.max(initial=0)))
        for b in found.values()
    )
    norm = LogNorm(vmin=1, vmax=max(top, 2))
    grey = ListedColormap([NO_GRAD_COLOUR])
    left, right = _x_limits(found)
    mesh = None
    data = {}
    absent_notes = []
    for g, (label, blocks) in enumerate(found.items()):
        y_edges = step_edges(blocks.first_steps, blocks.last_steps)
        panel_data = {}
        for row in range(rows):
            trio = axes[row, 3 * g : 3 * g + 3]
            if row >= len(blocks.layers):
                for ax in trio:
                    ax.set_visible(False)
                continue
            layer = blocks.layers[row]
            absent = blocks.no_grad[:, row]
            for sign, ax in zip((0, 1), trio[:2], strict=True):
                counts = blocks.counts[:, row, sign, :]
                mesh = ax.pcolormesh(
                    blocks.edges, y_edges, np.ma.masked_less_equal(counts, 0), cmap="viridis", norm=norm
                )
                _grey_rows(ax, [blocks.edges[0], blocks.edges[-1]], y_edges, absent, grey)
                ax.set_xlim(left, right)
                ax.set_title(f"{short_names([layer])[0]}: g {'<' if sign == 0 else '>'} 0", fontsize=TITLE_PT - 1)
                ax.tick_params(labelsize=TEXT_PT)
                if row == len(blocks.layers) - 1:
                    ax.set_xlabel(scale_label("log2 |g|", False))
            trio[0].set_ylabel("optimizer step")
            trio[1].tick_params(labelleft=False)
            special = trio[2]
            for column, (values, cmap) in enumerate(
                ((blocks.zero[:, row], "Blues"), (blocks.nonfinite[:, row], "Reds"))
            ):
                special.pcolormesh(
                    [column, column + 1], y_edges, np.ma.masked_less_equal(values[:, None], 0), cmap=cmap, norm=norm
                )
            _grey_rows(special, [0, 2], y_edges, absent, grey)
            special.set_xticks([0.5, 1.5], ["0", "NaN/Inf"], fontsize=TEXT_PT, rotation=90)
            special.tick_params(labelleft=False, labelsize=TEXT_PT)
            special.set_xlim(0, 2)
            if absent.any():
                absent_notes.append(f"{label}, {layer}: {int(absent.sum())} of {len(absent)} rows")
            panel_data[layer] = {
                "negative": blocks.counts[:, row, 0, :],
                "positive": blocks.counts[:, row, 1, :],
                "zero": blocks.zero[:, row],
                "nonfinite": blocks.nonfinite[:, row],
            }
        axes[0, 3 * g].annotate(label, (0, 1.25), xycoords="axes fraction", fontsize=TITLE_PT, weight="bold")
        data[label] = {
            "steps": blocks.first_steps,
            "last_steps": blocks.last_steps,
            "edges": blocks.edges,
            "layers": panel_data,
        }
    fig.colorbar(mesh, ax=axes, label=scale_label("entries per row", True), shrink=0.6)
    if absent_notes:
        state_legend(fig, {NO_GRAD_LABEL: NO_GRAD_COLOUR})
    first = next(iter(found.values()))
    caption = (
        "Exponent histograms of the gradient: per layer (rows) and sign (g < 0, g > 0), how many entries fell in "
        "each power-of-two bucket [2^e, 2^(e+1)) of |g| (x = log2 |g|, 10 buckets ≈ 3 decades; the end buckets "
        "hold everything beyond), over the recorded steps (y); exact zeros (blue shades) and NaN/±Inf (red "
        "shades) in the narrow panel; one log colour scale (white: none). "
        + "; ".join(
            f"{label}: {len(b.layers)} of {b.total_layers} parameters, spread from first to last"
            + (" (weights)" if all(name.endswith("weight") for name in b.layers) else "")
            + (f" (first of {len(groups[label])} runs)" if len(groups[label]) > 1 else "")
            for label, b in found.items()
        )
        + "."
    )
    if first.block > 1:
        read = "every record" if first.stride == 1 else f"every {first.stride}-th record"
        caption += (
            f" Each row is the sum of the counts of {read} in its block"
            + (
                f" ({-(-first.records // first.stride)} of {first.records} records read). "
                if first.stride > 1
                else ". "
            )
            + resolution(first.block, first.first_steps, first.last_steps, "row", "sum of the counts")
        )
    if absent_notes:
        caption += f" {NO_GRAD_LABEL} in every record of a row (grey): " + "; ".join(absent_notes) + "."
    return Section(title, fig, caption, kind="exponents", data=data)


def _grey_rows(ax: plt.Axes, x: list[float], y_edges: np.ndarray, absent: np.ndarray, grey) -> None:
    """Grey over the rows where the parameter had no gradient."""
    if absent.any():
        ax.pcolormesh(
            x, y_edges, np.ma.masked_where(~absent[:, None], np.ones((len(absent), 1))), cmap=grey, vmin=0, vmax=1
        )
