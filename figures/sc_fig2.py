"""sc-fig2: ResNet-20 vs SCResNet-20 schematics, short circuits inside each stage in green (document 000,
Figure 2)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from figures.base import FigureInputs, FigureOutput, save_figure
from gradlens.models.schematic import SchematicGraph, draw_schematic

ID = "sc-fig2"
ANALYSES = ("schematics",)
NEEDS = {"schematics": ("graph/sc_resnets/0", "graph/sc_resnets/1")}
TRAINED_NETS = False  # a schematic drawn from built models: no training
CLAIM = (
    "SCResNet is the unchanged ResNet backbone plus backward-only short circuits from rear layers to front "
    "layers across residual blocks (document 000, Figure 2)."
)


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    (result,) = inputs.runs["schematics"]
    graphs = [SchematicGraph.from_json(str(result[f"graph/sc_resnets/{i}"])) for i in (0, 1)]
    fig, axes = plt.subplots(2, 1, figsize=(13, 13))
    for ax, graph, title in zip(axes, graphs, ("(a) ResNet-20", "(b) SCResNet-20"), strict=True):
        draw_schematic(graph, ax=ax, title=title, max_rows=40)
    circuits = sorted(graphs[1].edge_set("short_circuit"))
    caption = (
        "Drawn from built resnet_v1_20 and scresnet_v1_20 (1×28×28 input): blue forward edges, red identity "
        "skips, green dashed arcs the short circuits (rear → front, the direction the sensitivity travels): "
        f"{', '.join(f'{r} → {f}' for r, f in circuits)} (gap 2, one rear per stage). No data, no training."
    )
    numbers = {"short circuits": len(circuits), "nodes": len(graphs[1].nodes)}
    return FigureOutput(save_figure(fig, out_dir, ID), caption, numbers, figure=fig)
