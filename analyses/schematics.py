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
    # document 004: simplified plain and residual nets (blocks: one depth-1 block of each)
    "simplified_blocks": [
        ("simplified_plain_8", {"in_channels": 1, "image_size": 28}, {"max_blocks": 2}),
        ("simplified_resnet_8", {"in_channels": 1, "image_size": 28}, {"max_blocks": 2}),
    ],
    "simplified_nets": [
        ("simplified_plain_20", {"in_channels": 1, "image_size": 28}, {"max_blocks": 9}),
        ("simplified_resnet_20", {"in_channels": 1, "image_size": 28}, {"max_blocks": 9}),
    ],
}


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
