"""Schematic graphs of built models, stored in HDF5 so schematic figures never build a model.

Each entry of ``MODELS`` is a named drawing: the registry names and keyword options of the models, and the
level of detail. ``execute`` builds each model, reads its graph with
:func:`gradlens.models.schematic.schematic_graph` (edges traced from a real forward pass, short circuits from
``model.short_circuits``) and stores the graphs as JSON arrays ``graph/<drawing>/<i>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gradlens.models import create_model
from gradlens.models.schematic import schematic_graph
from gradlens.results import save_result

# drawing name -> list of (model name, create_model keywords, schematic_graph keywords). One section per
# document; a figure draws one drawing (several models side by side).
MODELS: dict[str, list[tuple[str, dict, dict]]] = {
    # document 004 (CIFAR-shaped input 3×32×32, as in its Figure 4): "simplified_blocks" are the depth-5 nets
    # (one depth-1 block per group, so every block is drawn in full), "simplified_nets" the depth-20 nets
    "simplified_blocks": [
        ("simplified_plain_5", {"in_channels": 3, "image_size": 32}, {"max_blocks": None}),
        ("simplified_resnet_5", {"in_channels": 3, "image_size": 32}, {"max_blocks": None}),
    ],
    "simplified_nets": [
        ("simplified_plain_20", {"in_channels": 3, "image_size": 32}, {"max_blocks": None}),
        ("simplified_resnet_20", {"in_channels": 3, "image_size": 32}, {"max_blocks": None}),
    ],
    # document 003: the EMNIST MLP (3- and 4-layer, dense skips) and the CIFAR-10 CNN (vanilla, concat skips)
    "concat_mlp": [
        ("concat_mlp_emnist_skip_3", {}, {"max_blocks": None}),
        ("concat_mlp_emnist_skip_4", {}, {"max_blocks": None}),
    ],
    "concat_cnn": [
        ("concat_cnn_vanilla", {}, {"max_blocks": None}),
        ("concat_cnn_skip", {}, {"max_blocks": None}),
    ],
    # document 000 (SCNet): SCFCN (short circuit fc4 -> fc2), ResNet-20 vs SCResNet-20, encoder vs SC encoder
    "sc_fcn": [
        ("scfcn_5", {}, {}),
    ],
    "sc_resnets": [
        ("resnet_v1_20", {"in_channels": 1, "image_size": 28}, {"max_blocks": 3}),
        ("scresnet_v1_20", {"in_channels": 1, "image_size": 28}, {"max_blocks": 3}),
    ],
    "sc_encoders": [
        ("encoder_8", {}, {"level": "blocks"}),
        ("scencoder_8", {"sc_gap": 4}, {"level": "blocks"}),
    ],
    # document 001 (skip explainer): residual block (addition), dense block (concatenation), U-Net long skips
    "sk_blocks": [
        ("explainer_residual_3", {}, {}),
        ("dense_block_4", {}, {}),
        ("unet_small", {}, {}),
    ],
}

USES_DEVICE = False  # model graphs, no computation on a device: never asks for a GPU (analyses.run_spec.uses_device)


@dataclass(frozen=True)
class Config:
    """Which drawings to store (schematics do not depend on scale: every preset stores all)."""

    drawings: tuple[str, ...] = tuple(MODELS)

    @classmethod
    def smoke(cls) -> Config:
        return cls()

    @classmethod
    def quick(cls) -> Config:
        return cls()

    @classmethod
    def medium(cls) -> Config:
        """= quick: the schematics are read off the built models (no training)."""
        return cls.quick()

    @classmethod
    def paper(cls) -> Config:
        return cls()


def runs(config: Config) -> list[dict]:
    """One result holding every drawing; the models of each drawing are part of the run's key."""
    return [{"analysis": "schematics", "drawings": {d: MODELS[d] for d in config.drawings}, "seed": 0}]


def execute(params: dict, path: Path, *, data_dir: str | None, resume: bool, progress: bool) -> None:
    """Build every model of every drawing and store its schematic graph."""
    arrays: dict[str, np.ndarray] = {}
    for drawing, models in params["drawings"].items():
        for index, (name, options, graph_options) in enumerate(models):
            torch.manual_seed(0)
            graph = schematic_graph(create_model(name, **options), **graph_options)
            graph.title = name
            arrays[f"graph/{drawing}/{index}"] = np.array(graph.to_json())
    save_result(path, {"config": params}, arrays, overwrite=True)
