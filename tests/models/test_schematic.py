"""Schematics read off built models: every registered model draws; known models have known edges."""

from __future__ import annotations

import importlib
import pkgutil

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import gradlens.models  # noqa: E402
from gradlens.models import create_model, list_models  # noqa: E402
from gradlens.models.connections import SkipMarker  # noqa: E402
from gradlens.models.schematic import draw_schematic, schematic_graph  # noqa: E402

# Register every family of the zoo (what gradlens.models' __init__ does once all modules are listed there).
for _info in pkgutil.iter_modules(gradlens.models.__path__):
    importlib.import_module(f"gradlens.models.{_info.name}")

MARKER_KINDS = {"IdentitySkip": "skip", "VANSkip": "van", "GatedSkip": "gated", "ConcatSkip": "concat"}
MARKER_KINDS["LongSkip"] = "long"


@pytest.mark.parametrize("name", list_models())
def test_every_model_draws_its_layers_and_skips(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name)
    graph = schematic_graph(model)
    nodes = {n.name for n in graph.nodes}
    assert all(e.src in nodes and e.dst in nodes for e in graph.edges)
    collapsed = any(n.kind == "collapsed" for n in graph.nodes)
    if not collapsed:
        # every declared weight layer is a box, every enabled marker receives an edge of its kind
        assert set(model.gradlens_spec().layer_names()) <= nodes
        for marker_name, marker in model.named_modules():
            if isinstance(marker, SkipMarker) and getattr(marker, "enabled", True):
                kind = MARKER_KINDS[type(marker).__name__]
                assert any(e.dst == marker_name and e.kind == kind for e in graph.edges), marker_name
    # every box except the input is reached by a forward path from something
    assert all(
        any(e.dst == n.name for e in graph.edges) for n in graph.nodes if n.kind not in ("input", "embedding")
    )
    ax = draw_schematic(graph)
    assert len(ax.patches) >= len(graph.nodes)
    plt.close(ax.figure)


def test_scresnet_edges() -> None:
    graph = schematic_graph(create_model("scresnet_v1_20"))
    skips = graph.edge_set("skip")
    assert {
        ("conv1", "stage1.0.skip"),
        ("stage1.0.skip", "stage1.1.skip"),
        ("stage1.2.skip", "stage2.0.skip"),
    } <= skips
    assert len(skips) == 9
    assert ("stage1.0.conv1", "stage1.0.conv2") in graph.edge_set("forward")
    assert ("stage1.0.skip", "stage1.1.conv1") in graph.edge_set("forward")
    sc = graph.edge_set("short_circuit")
    assert len(sc) == 6
    assert {("stage1.2.conv2", "stage1.0.conv2"), ("stage3.2.conv2", "stage3.1.conv2")} <= sc
    assert graph.node("stage2.0.conv1").label == "Conv3×3 16→32 /2"
    assert graph.node("stage2.0.conv1").stage == "stage2"
    assert schematic_graph(create_model("resnet_v1_20")).edge_set("short_circuit") == set()


def test_sc_switched_off_is_noted_and_fcn_edges() -> None:
    model = create_model("scfcn_5")
    graph = schematic_graph(model)
    assert graph.edge_set("short_circuit") == {("fc4", "fc2")}
    assert graph.edge_set("forward") == {
        ("input", "fc1"),
        ("fc1", "fc2"),
        ("fc2", "fc3"),
        ("fc3", "fc4"),
        ("fc4", "fc5"),
    }
    model.short_circuits.enabled = False
    assert schematic_graph(model).notes == ["short circuits switched off"]


def test_long_concat_and_dense_edges() -> None:
    unet = schematic_graph(create_model("unet_small"))
    assert unet.edge_set("long") == {("enc2.conv2", "skip2"), ("enc1.conv2", "skip1")}
    cnn = schematic_graph(create_model("concat_cnn_skip"))
    # document 003, Figure 2: layer 1 -> max-pool -> concat into layer 4's input
    assert ("layer1.conv", "skip4_pool") in cnn.edge_set("forward")
    assert ("skip4_pool", "skip4") in cnn.edge_set("concat")
    assert ("skip4", "layer5.conv") in cnn.edge_set("forward")
    dense = schematic_graph(create_model("dense_block_4"))
    assert {
        ("stem", "block.layers.3.concat"),
        ("block.layers.1.conv", "block.layers.3.concat"),
    } <= dense.edge_set("concat")


def test_encoder_attention_ops_and_block_level() -> None:
    graph = schematic_graph(create_model("scencoder_2"))
    forward = graph.edge_set("forward")
    assert {("blocks.0.q", "blocks.0.matmul"), ("blocks.0.k", "blocks.0.matmul")} <= forward
    assert {("blocks.0.matmul", "blocks.0.matmul#2"), ("blocks.0.v", "blocks.0.matmul#2")} <= forward
    assert {("embed", "add"), ("pos_embed", "add"), ("add", "blocks.0.q")} <= forward
    blocks = schematic_graph(create_model("scencoder_8"), level="blocks")
    assert blocks.edge_set("short_circuit") == {("blocks.7", "blocks.3")}
    assert ("blocks.2", "blocks.3") in blocks.edge_set("forward")
    assert ("blocks.2", "blocks.3") in blocks.edge_set("skip")


def test_deep_stages_collapse_and_recording_leaves_model_alone() -> None:
    model = create_model("resnet_v1_110", image_size=8)
    model.train()
    bn = model.stage1[0].bn1
    before = bn.running_mean.clone(), bn.num_batches_tracked.clone()
    rng = torch.get_rng_state()
    graph = schematic_graph(model, max_blocks=4)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.num_batches_tracked, before[1])
    assert model.training and all(m.training for m in model.modules())
    collapsed = [n.name for n in graph.nodes if n.kind == "collapsed"]
    assert collapsed == ["~stage1.3-stage1.16", "~stage2.3-stage2.16", "~stage3.3-stage3.16"]
    assert ("stage1.2.skip", "~stage1.3-stage1.16") in graph.edge_set("skip")
    assert ("~stage1.3-stage1.16", "stage1.17.skip") in graph.edge_set("skip")
    assert len(graph.nodes) < 60
    with pytest.raises(ValueError, match="level 'stages' is unknown"):
        schematic_graph(model, level="stages")
