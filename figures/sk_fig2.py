"""sk-fig2: residual block (addition), dense block (concatenation) and a small U-Net (long skips), drawn
from built models (document 001)."""

from __future__ import annotations

from pathlib import Path

from figures.base import FigureInputs, FigureOutput, save_figure
from figures.schematic_layout import fit_schematics
from gradlens.models.schematic import SchematicGraph

ID = "sk-fig2"
ANALYSES = ("schematics",)
NEEDS = {"schematics": ("graph/sk_blocks/0", "graph/sk_blocks/1", "graph/sk_blocks/2")}
TRAINED_NETS = False  # a schematic drawn from built models: no training
CLAIM = (
    "Skips come in two kinds: addition (ResNet: y = F(x) + x) and concatenation (DenseNet: every layer reads "
    "all earlier feature maps); U-Nets use long concatenative skips from the encoder to the decoder "
    "(document 001)."
)
TITLES = ("(a) residual MLP: additive skips", "(b) dense block: concatenation", "(c) U-Net: long skips")


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    (result,) = inputs.runs["schematics"]
    graphs = [SchematicGraph.from_json(str(result[f"graph/sk_blocks/{i}"])) for i in range(3)]
    fig = fit_schematics(graphs, TITLES, columns=[[0, 1], [2]])  # (a) above (b), beside the taller U-Net
    counts = {kind: sum(len(g.edge_set(kind)) for g in graphs) for kind in ("skip", "concat", "long")}
    caption = (
        "Drawn from built explainer_residual_3 (identity skips, red arcs), dense_block_4 (concatenative skips, "
        "crimson) and unet_small (long encoder→decoder skips, purple); blue: forward edges. Edges traced from a "
        f"real forward pass: {counts['skip']} additive, {counts['concat']} concatenative, {counts['long']} long "
        "skip edges. No data, no training."
    )
    return FigureOutput(save_figure(fig, out_dir, ID), caption, counts, figure=fig)
