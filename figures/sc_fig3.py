"""sc-fig3: transformer encoder vs SC encoder (the SCBERT pattern: short circuits across encoder blocks),
drawn from built models (document 000, Figure 3)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from figures.base import FigureInputs, FigureOutput, save_figure
from gradlens.models.schematic import SchematicGraph, draw_schematic

ID = "sc-fig3"
ANALYSES = ("schematics",)
NEEDS = {"schematics": ("graph/sc_encoders/0", "graph/sc_encoders/1")}
TRAINED_NETS = False  # a schematic drawn from built models: no training
CLAIM = (
    "SCBERT extends BERT's in-block residual shortcuts with short circuits that carry the sensitivity across "
    "encoder blocks (document 000, Figure 3)."
)


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    (result,) = inputs.runs["schematics"]
    graphs = [SchematicGraph.from_json(str(result[f"graph/sc_encoders/{i}"])) for i in (0, 1)]
    fig, axes = plt.subplots(1, 2, figsize=(13, 7))
    titles = ("(a) encoder_8 (BERT stand-in)", "(b) scencoder_8 (SCBERT stand-in, k = 4)")
    for ax, graph, title in zip(axes, graphs, titles, strict=True):
        draw_schematic(graph, ax=ax, title=title)
    circuits = sorted(graphs[1].edge_set("short_circuit"))
    caption = (
        "Drawn from built encoder_8 and scencoder_8 (8 pre-LN encoder blocks, each drawn as one box; red arcs: "
        "the residual skips, green: short circuits "
        f"{', '.join(f'{r} → {f}' for r, f in circuits)}, i.e. from the last block's fc2 to block 4's fc2, gap "
        "k = 4 as in the document). Stand-in for BERT: a small encoder, not a pretrained BERT. No data."
    )
    return FigureOutput(save_figure(fig, out_dir, ID), caption, {"short circuits": circuits}, figure=fig)
