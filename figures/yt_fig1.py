"""yt-fig1: the simplified plain block and residual block (document 004, Figures 1 and 5), read off built
depth-5 simplified nets (one depth-1 block per group, so every block is drawn in full)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt

from figures.base import FigureInputs, FigureOutput, describe, save_figure
from gradlens.models.schematic import SchematicGraph, draw_schematic

ID = "yt-fig1"
ANALYSES = ("schematics",)
NEEDS = {"schematics": ("graph/simplified_blocks/0", "graph/simplified_blocks/1")}
TRAINED_NETS = False  # a schematic drawn from built models: no training
CLAIM = (
    "A plain block computes y = f(p(x)); the residual block adds an identity connection, y = f(x + p(x)), "
    "with f = ReLU and p a single 3×3 convolution in the simplified nets (document 004, Figures 1 and 5)."
)


def draw_stacked(graphs: Sequence[SchematicGraph], titles: Sequence[str], **options: object) -> plt.Figure:
    """Schematics one above the other, each axes at the drawing's natural size (1 data unit = 1 inch).

    ``draw_schematic`` writes box labels at a fixed point size on an equal-aspect axes, so the labels are
    legible only when the axes is as large as its data range: a first pass measures each range, a second
    draws on a figure sized to fit them all.
    """
    spans = []
    for graph in graphs:
        probe, ax = plt.subplots()
        draw_schematic(graph, ax=ax, **options)
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        spans.append((x1 - x0, y1 - y0))
        plt.close(probe)
    width, height = max(w for w, _ in spans) + 0.4, sum(h for _, h in spans) + 0.7 * len(spans) + 0.5
    fig, axes = plt.subplots(
        len(graphs), 1, figsize=(width, height), height_ratios=[h for _, h in spans], squeeze=False
    )
    for ax, graph, title in zip(axes[:, 0], graphs, titles, strict=True):
        draw_schematic(graph, ax=ax, title=title, **options)
        ax.title.set_fontsize(11)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.8 / height, hspace=0.7 / (height / len(graphs)))
    return fig


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    (result,) = inputs.runs["schematics"]
    graphs = [SchematicGraph.from_json(str(result[f"graph/simplified_blocks/{i}"])) for i in (0, 1)]
    fig = draw_stacked(
        graphs,
        ("(a) plain blocks: y = relu(conv(x))", "(b) residual blocks: y = relu(x + conv(x))"),
        max_rows=40,
    )
    fig.suptitle("Simplified depth-1 blocks (document 004, Figures 1 and 5), in depth-5 nets", fontsize=12)
    caption = (
        "Read off built simplified_plain_5 and simplified_resnet_5 (L = 3N + 2 with N = 1: stem, one depth-1 "
        "block per group G16/G32/G64 — shaded per group —, pool, fc; CIFAR-shaped input 3×32×32 as in the "
        "document). Boxes are the weight layers, blue edges the forward pass traced from a real forward, red "
        "arcs the identity skips into the ⊕ nodes; every block ends in a ReLU (functional, not a box). In the "
        "channel-doubling blocks (/2) the identity is the option-A shortcut (subsample, zero channels appended). "
        f"No data, no training; {describe([result], inputs.scale)}"
    )
    numbers = {"boxes (plain, residual)": f"{len(graphs[0].nodes)}, {len(graphs[1].nodes)}",
               "skip edges (residual)": sum(e.kind == "skip" for e in graphs[1].edges)}
    return FigureOutput(save_figure(fig, out_dir, ID), caption, numbers, figure=fig)
