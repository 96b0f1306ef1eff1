"""Drawing a schematic graph with matplotlib: boxes stacked top to bottom in forward order, one column per
stage (long stages wrap after ``max_rows``), forward edges in blue, skip-type edges as arcs on the left, short
circuits in green as dashed arcs on the right (from the rear to the front, the direction the sensitivity
travels), and, with ``backward=True``, the backpropagation flow in orange (document 000, Figure 1).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.path import Path
from torch import nn

from gradlens.models.schematic.graph import SchematicGraph
from gradlens.models.schematic.record import schematic_graph

EDGE_COLOURS = {
    "forward": "tab:blue",
    "skip": "tab:red",
    "van": "tab:purple",
    "gated": "tab:brown",
    "concat": "crimson",
    "long": "darkmagenta",
    "short_circuit": "tab:green",
    "backward": "tab:orange",
}
_NODE_COLOURS = {
    "input": "#eeeeee",
    "linear": "#dbe9f6",
    "conv": "#dbe9f6",
    "embedding": "#e5dbf6",
    "pool": "#f0f0f0",
    "merge": "#fde2e2",
    "collapsed": "#ffffff",
    "block": "#dbe9f6",
}
_STAGE_COLOURS = ("#cfe3f7", "#d5f0d5", "#fbe3c8", "#eadcf5", "#f7d7df", "#e0e0e0")


# ------------------------------------------------------------------------------------------------- drawing

_ROW = 0.34  # vertical pitch of boxes (data units = inches at scale 1)
_BOX_W, _BOX_H = 2.5, 0.24
_COL = 4.2  # column pitch


def _layout(graph: SchematicGraph, max_rows: int) -> dict[str, tuple[float, float]]:
    """Column/row of each node: a new column per stage (when the current one is not nearly empty) and
    whenever a column reaches ``max_rows``."""
    pos: dict[str, tuple[float, float]] = {}
    col, row, stage = 0, 0, None
    for node in graph.nodes:
        new_stage = node.stage is not None and node.stage != stage and stage is not None
        if row >= max_rows or (new_stage and row > 3):
            col, row = col + 1, 0
        if node.stage is not None:
            stage = node.stage
        pos[node.name] = (col * _COL, -row * _ROW)
        row += 1
    return pos


def _arc(ax: Axes, p: tuple[float, float], q: tuple[float, float], side: int, colour: str, **kw: Any) -> None:
    """Arrow p -> q bulging to the left (side = -1) or right (side = +1) of a column."""
    span = abs(q[1] - p[1]) + abs(q[0] - p[0])
    bulge = min(0.3 + 0.06 * span / _ROW, 1.2)
    rad = bulge / max(span, 1e-9)
    # arc3 bulges to the left of the direction of travel for rad > 0.
    going_down = q[1] < p[1]
    rad = rad if (side < 0) == going_down else -rad
    ax.add_patch(
        FancyArrowPatch(
            p,
            q,
            connectionstyle=f"arc3,rad={rad:.4f}",
            arrowstyle="-|>",
            mutation_scale=7,
            color=colour,
            lw=kw.pop("lw", 0.9),
            shrinkA=1,
            shrinkB=1,
            **kw,
        )
    )


def draw_schematic(
    model: nn.Module | SchematicGraph,
    ax: Axes | None = None,
    title: str | None = None,
    *,
    level: str = "layers",
    max_blocks: int | None = 9,
    max_rows: int = 32,
    backward: bool = False,
    show_names: bool = True,
) -> Axes:
    """Draw ``model`` (or a prepared :class:`SchematicGraph`) as an architecture schematic.

    Args:
        model: a zoo model or the graph of :func:`schematic_graph`.
        ax: axes to draw on (a new figure sized to the graph when None).
        title: axes title (default: the model class name).
        level, max_blocks: as in :func:`schematic_graph`.
        max_rows: boxes per column before wrapping.
        backward: also draw the backpropagation flow (orange) next to the forward edges.
        show_names: prefix each box with its module name.

    Returns:
        The axes; the figure is ``ax.figure``.
    """
    graph = model if isinstance(model, SchematicGraph) else schematic_graph(model, level=level, max_blocks=max_blocks)
    pos = _layout(graph, max_rows)
    n_cols = 1 + round(max(x for x, _ in pos.values()) / _COL)
    n_rows = 1 + round(max(-y for _, y in pos.values()) / _ROW)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 + n_cols * _COL * 0.85, 0.9 + n_rows * _ROW * 0.85))
    kinds = {n.name: n for n in graph.nodes}

    # Shade blocks (one rectangle per block and column), coloured by stage.
    stage_ids: dict[str, int] = {}
    spans: dict[tuple[str, float], list[float]] = {}
    for node in graph.nodes:
        if node.block is not None and node.kind not in ("block",):
            x, y = pos[node.name]
            spans.setdefault((node.block, x), []).append(y)
            stage_ids.setdefault(node.stage or "", len(stage_ids))
    for (block, x), ys in spans.items():
        stage = next(n.stage or "" for n in graph.nodes if n.block == block)
        colour = _STAGE_COLOURS[stage_ids[stage] % len(_STAGE_COLOURS)]
        top, bottom = max(ys) + _ROW / 2 - 0.02, min(ys) - _ROW / 2 + 0.02
        ax.add_patch(
            FancyBboxPatch(
                (x - _BOX_W / 2 - 0.12, bottom),
                _BOX_W + 0.24,
                top - bottom,
                boxstyle="round,pad=0.0,rounding_size=0.06",
                fc=colour,
                ec="none",
                zorder=0,
            )
        )

    for node in graph.nodes:
        x, y = pos[node.name]
        width = _BOX_W * (0.55 if node.kind == "merge" else 1.0)
        style = "round,pad=0.0,rounding_size=0.1" if node.kind == "merge" else "square,pad=0.0"
        ax.add_patch(
            FancyBboxPatch(
                (x - width / 2, y - _BOX_H / 2),
                width,
                _BOX_H,
                boxstyle=style,
                fc=_NODE_COLOURS.get(node.kind, "white"),
                ec="0.35",
                lw=0.6,
                zorder=2,
                ls="--" if node.kind == "collapsed" else "-",
            )
        )
        text = (
            node.label
            if node.kind in ("merge", "collapsed", "input") or not show_names
            else (f"{node.name}: {node.label}")
        )
        if node.kind == "input":
            text = f"input {list(node.shape)}"
        ax.text(x, y, text, ha="center", va="center", fontsize=5.2, zorder=3, clip_on=False)

    def anchor(name: str, side: str) -> tuple[float, float]:
        # Arcs attach at the column edge; a narrow merge box gets a thin stub out to that edge.
        x, y = pos[name]
        if side in ("left", "right") and kinds[name].kind == "merge":
            sign = -1 if side == "left" else 1
            ax.plot([x + sign * _BOX_W * 0.275, x + sign * _BOX_W / 2], [y, y], color="0.6", lw=0.5, zorder=1)
        return {
            "top": (x, y + _BOX_H / 2),
            "bottom": (x, y - _BOX_H / 2),
            "left": (x - _BOX_W / 2, y),
            "right": (x + _BOX_W / 2, y),
        }[side]

    def elbow(src: str, dst: str, colour: str, lane: float) -> None:
        # Between columns: down out of src, along the gutter, into dst from its left.
        gutter = (pos[src][0] + pos[dst][0]) / 2 + lane
        start, end = anchor(src, "bottom"), anchor(dst, "left")
        drop = start[1] - _ROW * 0.3
        verts = [start, (start[0], drop), (gutter, drop), (gutter, end[1]), end]
        path = Path(verts, [Path.MOVETO] + [Path.LINETO] * 4)
        ax.add_patch(FancyArrowPatch(path=path, arrowstyle="-|>", mutation_scale=6, color=colour, lw=0.8, zorder=1))

    present = set()
    for e in graph.edges:
        colour = EDGE_COLOURS.get(e.kind, "black")
        present.add(e.kind)
        (xs, ys), (xd, yd) = pos[e.src], pos[e.dst]
        same_col = abs(xs - xd) < 1e-9
        if e.kind == "short_circuit":
            _arc(ax, anchor(e.src, "right"), anchor(e.dst, "right"), +1, colour, ls="--", lw=1.1, zorder=4)
        elif e.kind == "forward" and same_col and abs(ys - yd - _ROW) < 1e-6:
            ax.add_patch(
                FancyArrowPatch(
                    anchor(e.src, "bottom"),
                    anchor(e.dst, "top"),
                    arrowstyle="-|>",
                    mutation_scale=6,
                    color=colour,
                    lw=0.8,
                    shrinkA=0,
                    shrinkB=0,
                    zorder=1,
                )
            )
            if backward:
                off = 0.18
                ax.add_patch(
                    FancyArrowPatch(
                        (xd + off, yd + _BOX_H / 2),
                        (xs + off, ys - _BOX_H / 2),
                        arrowstyle="-|>",
                        mutation_scale=6,
                        color=EDGE_COLOURS["backward"],
                        lw=0.8,
                        shrinkA=0,
                        shrinkB=0,
                        zorder=1,
                    )
                )
                present.add("backward")
        elif same_col:
            _arc(ax, anchor(e.src, "left"), anchor(e.dst, "left"), -1, colour, zorder=1)
        else:
            lane = -0.15 if e.kind == "forward" else 0.15
            elbow(e.src, e.dst, colour, lane)
        if e.count > 1 and e.kind != "forward":  # e.g. several short circuits into a collapsed run
            mid = ((xs + xd) / 2 + (0.9 if e.kind == "short_circuit" else -1.6), (ys + yd) / 2)
            ax.text(*mid, f"×{e.count}", fontsize=5, color=colour)

    legend = [
        Line2D([], [], color=EDGE_COLOURS[k], ls="--" if k == "short_circuit" else "-", label=k.replace("_", " "))
        for k in EDGE_COLOURS
        if k in present
    ]
    if legend:
        ax.legend(handles=legend, loc="upper right", fontsize=6, frameon=False, bbox_to_anchor=(1.0, 1.0))
    if graph.notes:
        ax.text(0.0, 0.0, "; ".join(graph.notes), transform=ax.transAxes, fontsize=6, va="top")
    xs = [x for x, _ in pos.values()]
    ys = [y for _, y in pos.values()]
    ax.set_xlim(min(xs) - _BOX_W / 2 - 1.4, max(xs) + _BOX_W / 2 + 1.4)
    ax.set_ylim(min(ys) - _ROW, max(ys) + _ROW * 1.5)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(graph.title if title is None else title, fontsize=9)
    return ax


def draw_schematics(models: Iterable[nn.Module], titles: Iterable[str], **kw: Any) -> plt.Figure:
    """Side-by-side schematics (e.g. ResNet vs SCResNet); ``kw`` as in :func:`draw_schematic`."""
    models, titles = list(models), list(titles)
    graphs = [schematic_graph(m, level=kw.get("level", "layers"), max_blocks=kw.get("max_blocks", 9)) for m in models]
    fig, axes = plt.subplots(1, len(graphs), figsize=(5.0 * len(graphs), 8.0), squeeze=False)
    rest = {k: v for k, v in kw.items() if k not in ("level", "max_blocks")}
    for ax, graph, title in zip(axes[0], graphs, titles, strict=True):
        draw_schematic(graph, ax, title, **rest)
    fig.tight_layout()
    return fig
