"""yw-fig2: the document-003 CNN with max-pool + concatenation skips 1→4, 2→5, 4→7, 5→8 (Figure 2), drawn from
the schematic graphs of built ``concat_cnn_vanilla`` and ``concat_cnn_skip``."""

from __future__ import annotations

from pathlib import Path

from figures.base import FigureInputs, FigureOutput, save_figure
from figures.schematic_layout import fit_schematics
from gradlens.models.schematic import SchematicGraph

ID = "yw-fig2"
ANALYSES = ("schematics",)
NEEDS = {"schematics": ("graph/concat_cnn/0", "graph/concat_cnn/1")}
TRAINED_NETS = False  # a schematic drawn from built models: no training
CLAIM = (
    "A CNN for CIFAR-10; the skip version max-pools the tensors of layers 1, 2, 4, 5 (2×2) and concatenates "
    "them to layers 4, 5, 7, 8 (e.g. [16,16,32] onto [16,16,64] gives [16,16,96]) (document 003, Figure 2)."
)


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    (result,) = inputs.runs["schematics"]
    graphs = [SchematicGraph.from_json(str(result[f"graph/concat_cnn/{i}"])) for i in (0, 1)]
    fig = fit_schematics(graphs, ("(a) vanilla CNN", "(b) CNN with concatenation skips"))
    concat = sum(e.kind == "concat" for e in graphs[1].edges)
    caption = (
        "Schematics read off built concat_cnn_vanilla and concat_cnn_skip (CIFAR shape 3×32×32, 10 classes): "
        "blue edges the forward path, red edges the skips traced from a real forward pass: the tensor of layer "
        "1, 2, 4, 5 is 2×2 max-pooled (skip*_pool) and concatenated (concat) after layer 4, 5, 7, 8, whose "
        "convolution widths are read off the modules (e.g. layer5.conv takes 64 + 32 = 96 channels). The "
        "head (pool9 + fc) is our completion: the document does not describe it. No data, no training."
    )
    return FigureOutput(save_figure(fig, out_dir, ID), caption, {"concat skip edges": concat}, figure=fig)
