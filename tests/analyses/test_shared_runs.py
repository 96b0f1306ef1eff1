"""One configuration, one run: the simplified nets of document 004's noise-stability items (yt-fig3, yt-fig10,
yt-fig12) are the Table-1 runs of ``simplified_training``, trained once and read from one file by every item.

The issue this answers: simplified_plain_20 seed 0 reached 96.6 % in the training analysis and 8.7 % in the
noise-stability analysis, because ``noise_stability`` trained a second configuration of the same net (optimizer
weight decay instead of the penalty λ‖θ‖², a 1 000-image test subset that also reshuffled the training images, other
epochs, batch and schedule at smoke scale).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from analyses import simplified_training
from analyses.runner import plan
from figures.base import config, final_scalar
from figures.cli import figure_module, make_figures
from gradlens import load
from gradlens.train import load_checkpoint

NOISE_ITEMS = ("yt-fig3", "yt-fig10", "yt-fig12", "yt-tab-icushion")
SCALES = ("smoke", "quick", "medium", "paper")


def noise_item_specs(scale: str) -> list:
    """Every run the noise-stability items read at ``scale``."""
    return [spec for item in NOISE_ITEMS for analysis in figure_module(item).ANALYSES for spec in plan(analysis, scale)]


@pytest.mark.parametrize("scale", SCALES)
def test_every_simplified_net_of_the_noise_items_is_the_table_1_run(scale):
    training = {(s.params["model"], s.params["seed"]): s for s in plan("simplified_training", scale)}
    simplified = [s for s in noise_item_specs(scale) if s.params["model"].startswith("simplified_")]
    assert {s.params["kind"] for s in simplified} == {"plain", "residual"}
    assert len({s.params["depth"] for s in simplified}) == 2  # Figure 3: two depths (document: 20 and 32)
    for spec in simplified:
        table_1 = training[spec.params["model"], spec.params["seed"]]
        assert spec.analysis == "simplified_training" and spec.params == table_1.params
        assert spec.key == table_1.key and spec.path("root") == table_1.path("root")
        assert "noise" in spec.params  # the run records the noise-stability probes itself


@pytest.mark.parametrize("scale", SCALES)
def test_noise_stability_trains_only_the_fully_fledged_nets(scale):
    models = {s.params["model"] for s in plan("noise_stability", scale)}
    assert models and all(m.startswith(("plain_v1_", "resnet_v1_")) for m in models)


@pytest.mark.parametrize("scale", SCALES)
def test_only_the_runs_the_noise_items_read_carry_the_probes(scale):
    read = {s.key for s in plan("simplified_noise", scale)}
    for spec in plan("simplified_training", scale):
        assert ("noise" in spec.params) == (spec.key in read), spec.params["model"]


def test_medium_presets():
    training = simplified_training.Config.medium()
    assert (training.batch_size, training.epochs, training.downsample) == (128, 20, 2)
    assert (training.dataset, training.n_train, training.n_test) == ("mnist", None, None)
    assert training.depths == (20, 32, 44) and training.seeds == (0, 1)
    assert training.kinds == ("plain", "residual", "dominant") and training.milestones() == [12, 16]
    assert training.learning_rate("plain", 44) == 1e-3 and training.learning_rate("dominant", 44) == 5e-3
    fledged = plan("noise_stability", "medium")
    assert {(s.params["batch_size"], s.params["lr"], tuple(s.params["milestones"]), s.params["epochs"])
            for s in fledged} == {(128, 0.1, (6, 9), 12)}
    assert {(s.params["seed"], s.params["probe_size"], s.params["block_index"], s.params["downsample"])
            for s in fledged} == {(0, 128, 5, 2)}


def test_probes_do_not_change_training(tmp_path):
    """The noise probes (and their probe batch) leave the trained weights bit for bit as without them."""
    (params,) = [p for p in simplified_training.runs(simplified_training.Config.smoke())
                 if "noise" in p and p["kind"] == "residual" and p["depth"] == 5]
    bare = {k: v for k, v in params.items() if k != "noise"}
    for name, run in (("probed", params), ("bare", bare)):
        simplified_training.execute(run, tmp_path / f"{name}.h5", data_dir=None, resume=False, progress=False)
    probed, plain = (load_checkpoint(tmp_path / f"{name}.ckpt.pt").model for name in ("probed", "bare"))
    assert all(torch.equal(probed[k], plain[k]) for k in plain)
    assert {"layer_cushion", "dominant_flow", "final_grad_hist"} <= set(load(tmp_path / "probed.h5").probes)


def test_tab1_and_fig3_read_one_file_and_report_one_accuracy(tmp_path, monkeypatch):
    seen = {}
    for item in ("yt-tab1", "yt-fig3"):
        module = figure_module(item)

        def spy(inputs, out_dir, draw=module.draw, item=item):
            seen[item] = inputs
            return draw(inputs, out_dir)

        monkeypatch.setattr(module, "draw", spy)
    made = make_figures(["yt-tab1", "yt-fig3"], "smoke", tmp_path, progress=False)
    depth = min(config(r)["depth"] for r in seen["yt-fig3"].runs["simplified_noise"])
    table_1 = seen["yt-tab1"].one("simplified_training", kind="plain", depth=depth, seed=0)
    noise = seen["yt-fig3"].one("simplified_noise", kind="plain", depth=depth, seed=0)
    assert Path(table_1.path) == Path(noise.path)
    accuracy = final_scalar(table_1, "test_acc")
    assert made["yt-fig3"].numbers[f"test acc plain {depth}"] == accuracy
    # yt-tab1's E is the mean over seeds of 1 − test accuracy, seed 0's from that same file
    seeds = [final_scalar(r, "test_acc") for r in seen["yt-tab1"].of("simplified_training", kind="plain", depth=depth)]
    assert accuracy in seeds
    row = made["yt-tab1"].table.set_index(["network", "depth"]).loc["PlnNet", depth]
    assert row["E"] == pytest.approx(1 - sum(seeds) / len(seeds), rel=1e-12)
    # yt-fig3 added no run to yt-tab1's: every net was trained once
    files = [f for f in (tmp_path / "runs").rglob("*.h5") if not f.name.endswith(".weights.h5")]
    assert sorted(files) == sorted(s.path(tmp_path / "runs") for s in plan("simplified_training", "smoke"))
