"""Untrained or collapsed nets are never shown as evidence silently: every item whose claim is about trained
nets declares ``TRAINED_NETS = True`` and passes the runs it shows to ``figures.base.chance_check``, whose text
names every net near chance, by model and seed, in the caption."""

from __future__ import annotations

import inspect
from pathlib import Path

import h5py
import numpy as np
import pytest

from figures.base import CHANCE_MARGIN, chance_check, open_recorded
from figures.cli import implemented, make_figures
from gradlens import load
from gradlens.results import save_result

# Analyses that train no net: only these may back an item with TRAINED_NETS = False ...
NO_TRAINING = {"schematics", "trivial_case", "phi_curve"}
# ... apart from these items, whose claim is about initialised nets (named here with the reason).
NOT_ABOUT_TRAINED = {"sk-fig1": "gradient flow through the initialised nets (first step)"}

MODULES = implemented()
TRAINED = sorted(i for i, m in MODULES.items() if getattr(m, "TRAINED_NETS", False))


@pytest.mark.parametrize("item_id", sorted(MODULES))
def test_every_item_declares_whether_its_claim_is_about_trained_nets(item_id: str) -> None:
    module = MODULES[item_id]
    assert isinstance(getattr(module, "TRAINED_NETS", None), bool), f"{item_id} lacks TRAINED_NETS = True/False"
    if not module.TRAINED_NETS:
        trains = set(module.ANALYSES) - NO_TRAINING
        assert not trains or item_id in NOT_ABOUT_TRAINED, (
            f"{item_id} reads the training analyses {sorted(trains)} but says TRAINED_NETS = False"
        )
    else:
        # The check is in the drawing code: the module itself or the shared drawing function it calls.
        sources = [inspect.getsource(module)]
        sources += [inspect.getsource(inspect.getmodule(v)) for v in vars(module).values()
                    if inspect.isfunction(v) and v.__module__.startswith("figures.")]
        assert any("chance_check(" in s for s in sources), f"{item_id}: draw never calls chance_check"


def _result(path: Path, acc: float | None, **config: object) -> object:
    arrays = {"final/test_acc": np.array(acc)} if acc is not None else {"other": np.zeros(1)}
    save_result(path, {"config": {"dataset": "mnist", **config}}, arrays)
    return open_recorded(path)


def test_chance_check_names_each_net_near_chance_per_seed(tmp_path: Path) -> None:
    # Brute force: near chance iff acc < 1/K + margin·(1 − 1/K): 0.19 for K = 10, 0.109 for 100, 0.55 for 2.
    cases = [
        ("plain_20", 0, 0.087, {}, True),  # collapsed to one class (below chance)
        ("plain_20", 1, 0.1899, {}, True),
        ("resnet_20", 0, 0.1901, {}, False),
        ("resnet_20", 1, 0.966, {}, False),
        ("wide_100", 0, 0.1089, {"dataset": "cifar100"}, True),
        ("wide_100", 1, 0.1091, {"dataset": "cifar100"}, False),
        ("encoder", 0, 0.5499, {"num_classes": 2}, True),
        ("encoder", 1, 0.5501, {"num_classes": 2}, False),
    ]
    runs = []
    for i, (model, seed, acc, extra, near) in enumerate(cases):
        runs.append(_result(tmp_path / f"{i}.h5", acc, model=model, seed=seed, **extra))
        k = extra.get("num_classes") or (100 if extra.get("dataset") == "cifar100" else 10)
        assert near == (acc < 1 / k + CHANCE_MARGIN * (1 - 1 / k))
    unchecked = _result(tmp_path / "none.h5", None, model="schematic", seed=3)
    check = chance_check([*runs, runs[0], unchecked])  # runs[0] shown twice: counted once
    assert check.checked == 8 and len(check.near) == 4
    assert [(n, s) for n, s, *_ in check.near] == [("plain_20", 0), ("plain_20", 1), ("wide_100", 0), ("encoder", 0)]
    text = check.text
    assert text.startswith("NEAR CHANCE (did not train): 4 of 8 nets end with test accuracy within 10 % of the way")
    assert "plain_20 on mnist, seeds 0 (8.7 %), 1 (19.0 %)" in text
    assert "wide_100 on cifar100, seed 0 (10.9 %)" in text and "encoder on mnist, seed 0 (55.0 %)" in text
    assert "resnet_20" not in text and "chance (1 %, 10 %, 50 %)" in text
    assert "Not checked against chance (no test accuracy recorded): schematic seed 3." in text
    numbers: dict[str, object] = {}
    caption = check.annotate("The figure shows X.", numbers)
    assert caption.startswith("NEAR CHANCE") and caption.endswith("The figure shows X.")
    assert numbers == {"nets near chance": 4}
    trained = chance_check(runs[2:4])
    assert trained.near == [] and trained.annotate("Caption.", numbers) == (
        "Caption. All 2 nets trained (final test accuracy above chance + 10 % of the way to 100 %; lowest 19.0 %, "
        "resnet_20 seed 0)."
    )
    assert numbers == {"nets near chance": 0}


@pytest.fixture(scope="module")
def trained_outputs(smoke_figures):
    """item -> its smoke output, drawn on first use (one item at a time: one item's failure stays its own)."""

    class Outputs(dict):
        def __missing__(self, item_id: str):
            failed: dict[str, str] = {}
            drawn = make_figures([item_id], "smoke", smoke_figures.out, progress=False, failed=failed)
            assert item_id in drawn, f"{item_id} was not drawn: {failed.get(item_id)}"
            self[item_id] = drawn[item_id]
            return self[item_id]

    return Outputs()


@pytest.mark.parametrize("item_id", TRAINED)
def test_trained_item_reports_its_nets_against_chance(trained_outputs, item_id: str) -> None:
    output = trained_outputs[item_id]
    near = output.numbers["nets near chance"]
    assert isinstance(near, int) and near >= 0
    if near:
        assert output.caption.startswith("NEAR CHANCE (did not train): ")
    else:
        assert "nets trained (final test accuracy above chance" in output.caption


def _final_acc_from_disk(path: Path) -> float:
    """The last test_acc scalar, read with the loader (not through figures.base)."""
    frame = load(path).scalars()
    return float(frame.loc[frame["name"] == "test_acc", "value"].to_numpy()[-1])


@pytest.mark.parametrize(("item_id", "analysis"), [("yt-tab2", "equivalence"), ("sc-fig5", "sc_fcn")])
def test_near_chance_runs_are_named_in_the_caption(trained_outputs, smoke_figures, item_id, analysis) -> None:
    """Both items show every run of their analysis: each near-chance run on disk is named with its seed."""
    expected = 0
    for path in sorted((smoke_figures.out / "runs" / analysis).glob("*.h5")):
        with h5py.File(path, "r") as file:
            if file.attrs.get("format") == "gradlens-result":
                continue
        run = load(path)
        config = run.meta["config"]
        acc = _final_acc_from_disk(path)
        if acc < 0.1 + CHANCE_MARGIN * 0.9:  # 10 classes
            expected += 1
            assert f"{config['model']} on {config['dataset']}, seed" in trained_outputs[item_id].caption
            assert f"{100 * acc:.1f} %" in trained_outputs[item_id].caption
    assert trained_outputs[item_id].numbers["nets near chance"] == expected
