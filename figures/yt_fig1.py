"""yt-fig1: the simplified plain block and residual block (document 004, Figures 1 and 5), drawn from the
schematic graphs of built simplified nets (one block of each group shown, the rest folded)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from figures.base import FigureInputs, FigureOutput, save_figure
from gradlens.models.schematic import SchematicGraph, draw_schematic

ID = "yt-fig1"
ANALYSES = ("schematics",)
NEEDS = {"schematics": ("graph/simplified_blocks/0", "graph/simplified_blocks/1")}
CLAIM = (
    "A plain block computes y = f(p(x)); the residual block adds an identity connection, y = f(x + p(x)), "
    "with f = ReLU and p a single 3×3 convolution in the simplified nets (document 004, Figures 1 and 5)."
)


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    (result,) = inputs.runs["schematics"]
    graphs = [SchematicGraph.from_json(str(result[f"graph/simplified_blocks/{i}"])) for i in (0, 1)]
    fig, axes = plt.subplots(1, 2, figsize=(9, 7))
    for ax, graph, title in zip(axes, graphs, ("(a) simplified plain net", "(b) simplified residual net"), strict=True):
        draw_schematic(graph, ax=ax, title=title)
    caption = (
        "Schematics read off built simplified_plain_8 and simplified_resnet_8 (MNIST-shaped input 1×28×28): "
        "each box is a layer of the module, blue edges the forward pass, arcs the identity skips traced from "
        "a real forward; each depth-1 block is conv3×3 → (+ identity) → ReLU. No data, no training."
    )
    return FigureOutput(
        save_figure(fig, out_dir, ID),
        caption,
        {"nodes (plain, residual)": f"{len(graphs[0].nodes)}, {len(graphs[1].nodes)}"},
        figure=fig,
    )
