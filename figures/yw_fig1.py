"""yw-fig1: the document-003 MLP 128-256-[256]-26 with dense skips between every non-adjacent pair (Figure 1),
drawn from the schematic graphs of built ``concat_mlp_emnist_skip_3`` and ``concat_mlp_emnist_skip_4``."""

from __future__ import annotations

from pathlib import Path

from figures.base import FigureInputs, FigureOutput, save_figure
from figures.schematic_layout import fit_schematics
from gradlens.models.schematic import SchematicGraph

ID = "yw-fig1"
ANALYSES = ("schematics",)
NEEDS = {"schematics": ("graph/concat_mlp/0", "graph/concat_mlp/1")}
TRAINED_NETS = False  # a schematic drawn from built models: no training
CLAIM = (
    "An MLP 784-128-256-[256]-26 with ReLU after each layer; the skip version connects every pair of "
    "non-adjacent layers i, j fully (red): layer j also reads every neuron of layer i (document 003, Figure 1)."
)


def draw(inputs: FigureInputs, out_dir: Path) -> FigureOutput:
    (result,) = inputs.runs["schematics"]
    graphs = [SchematicGraph.from_json(str(result[f"graph/concat_mlp/{i}"])) for i in (0, 1)]
    fig = fit_schematics(graphs, ("(a) 3-layer net with dense skips", "(b) 4-layer net (optional layer fc3 kept)"))
    concat = [sum(e.kind == "concat" for e in g.edges) for g in graphs]
    caption = (
        "Schematics read off built concat_mlp_emnist_skip_3 and concat_mlp_emnist_skip_4 (EMNIST-letters shape: "
        "1×28×28 input, 26 classes). Each box is a module; blue edges the forward path, red edges the skipped "
        "activations traced from a real forward pass into the concatenation that feeds a later layer's linear "
        "map (concatenation then one linear map = one full connection per skipped layer). ReLU boxes are "
        "folded into their layer. No data, no training."
    )
    return FigureOutput(
        save_figure(fig, out_dir, ID),
        caption,
        {"skip edges (3-layer, 4-layer)": f"{concat[0]}, {concat[1]}"},
        figure=fig,
    )
