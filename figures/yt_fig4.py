"""yt-fig4: the whole simplified plain and residual architectures of depth 20 (document 004, Figure 4)."""

from __future__ import annotations

from pathlib import Path

from figures.base import FigureInputs, FigureOutput, describe, save_figure
from figures.schematic_layout import fit_schematics
from gradlens.models.schematic import SchematicGraph

ID = "yt-fig4"
ANALYSES = ("schematics",)
NEEDS = {"schematics": ("graph/simplified_nets/0", "graph/simplified_nets/1")}
TRAINED_NETS = False  # a schematic drawn from built models: no training
CLAIM = (
    "Plain and residual nets of L = 3N + 2 layers: conv + ReLU, three groups G16, G32, G64 of N depth-1 "
    "blocks (the first block of G32 and G64 halves the size and doubles the channels), average pooling and a "
    "fully connected layer; both nets have the same weights (document 004, Figure 4)."
)


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    (result,) = inputs.runs["schematics"]
    graphs = [SchematicGraph.from_json(str(result[f"graph/simplified_nets/{i}"])) for i in (0, 1)]
    fig = fit_schematics(graphs, ("(a) simplified plain net, L = 20", "(b) simplified residual net, L = 20"),
                         columns=[[0, 1]], suptitle="Simplified architectures of depth 20 (document 004, Figure 4)",
                         max_rows=40)
    convs = [sum(n.kind == "conv" for n in g.nodes) for g in graphs]
    caption = (
        "Read off built simplified_plain_20 and simplified_resnet_20 (N = 6 blocks per group; CIFAR-shaped "
        "input 3×32×32 as in the document): one column per group (G16, G32, G64 shaded), every weight layer a "
        "box, blue edges the traced forward pass, red arcs the identity skips into the ⊕ nodes; ReLUs are "
        f"functional (not boxes). Both nets have {convs[0]} convolutions + fc = {convs[0] + 1} weight layers. "
        f"No data, no training; {describe([result], inputs.scale)}"
    )
    numbers = {"conv layers (plain, residual)": f"{convs[0]}, {convs[1]}",
               "skip edges (residual)": sum(e.kind == "skip" for e in graphs[1].edges)}
    return FigureOutput(save_figure(fig, out_dir, ID), caption, numbers, figure=fig)
