"""sc-fig1: a sigmoid FCN with forward (blue), backpropagation (orange) and short-circuit (green) flows, drawn
from the built SCFCN (document 000, Figure 1)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from figures.base import FigureInputs, FigureOutput, save_figure
from gradlens.models.schematic import SchematicGraph, draw_schematic

ID = "sc-fig1"
ANALYSES = ("schematics",)
NEEDS = {"schematics": ("graph/sc_fcn/0",)}
TRAINED_NETS = False  # a schematic drawn from built models: no training
CLAIM = (
    "A short circuit is a backward-only connection: the forward (blue) and backpropagation (orange) flows are "
    "those of the plain net, and the green short circuit carries the sensitivity of a rear layer straight to "
    "a front layer (document 000, Figure 1: from the third layer to the first)."
)


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    (result,) = inputs.runs["schematics"]
    graph = SchematicGraph.from_json(str(result["graph/sc_fcn/0"]))
    fig, ax = plt.subplots(figsize=(7, 5))
    draw_schematic(graph, ax=ax, backward=True, title="SCFCN: sigmoid FCN, short circuit fc4 → fc2")
    circuits = sorted(graph.edge_set("short_circuit"))
    caption = (
        "Drawn from the built scfcn_5 (5-layer sigmoid FCN, 784-100-100-100-100-10): blue forward flow, orange "
        f"backpropagation, green short circuit(s) {', '.join(f'{r} → {f}' for r, f in circuits)} read off "
        "model.short_circuits. The document's Figure 1 shows the same idea on a 3-layer net (layer 3 → layer 1); "
        "the built net is the SCFCN the document trains (section 5.2.1). No data, no training."
    )
    return FigureOutput(save_figure(fig, out_dir, ID), caption, {"short circuits": circuits}, figure=fig)
