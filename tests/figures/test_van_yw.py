"""Documents 002 (VAN) and 003 (concatenative skips): every item plots what its HDF5 files hold, at smoke scale;
the skip* switch, the validation split, the α probe and the extra-item mechanism are right."""

from __future__ import annotations

import json

import h5py
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from analyses.concat_mlp import enable_skips_from_zero, validation_split
from analyses.optional_data import is_not_run
from analyses.van_common import AlphaProbe
from figures import van_fig1
from figures.catalogue import EXTRA_ITEMS, ITEMS
from figures.cli import list_items, select
from figures.gallery import STANDS_IN, shown_here
from figures.van_common import ALPHA_FLOOR, alpha_update_reading, lr_schedule, schedule_text
from figures.yw_common import CNN_NAMES, convergence_note
from gradlens import load
from gradlens.data import load_dataset
from gradlens.models import create_model
from gradlens.models.concat_mlp import ConcatMLP
from gradlens.results import load_result

VAN_IDS = ("van-fig1", "van-fig2", "van-fig3", "van-tab1", "van-extra-gradflow")
YW_IDS = ("yw-fig1", "yw-fig2", "yw-tab1", "yw-tab2", "yw-tab3", "yw-tab4", "yw-tab5", "yw-extra-gradflow")


@pytest.fixture(scope="module")
def outputs(smoke_figures):
    return smoke_figures(*VAN_IDS, *YW_IDS)


def stored(smoke_figures, analysis: str) -> list[tuple[dict, object]]:
    """(config, run or result) of every finished file of ``analysis``, read straight from disk."""
    found = []
    for path in sorted((smoke_figures.out / "runs" / analysis).glob("*.h5")):
        with h5py.File(path, "r") as file:
            kind = file.attrs.get("format")
        recorded = load_result(path) if kind == "gradlens-result" else load(path)
        found.append((recorded.meta["config"], recorded))
    return found


def final(run, name: str) -> float:
    frame = run.scalars()
    return float(frame.loc[frame["name"] == name, "value"].iloc[-1])


def test_every_item_wrote_non_empty_files(outputs):
    for item_id in (*VAN_IDS, *YW_IDS):
        assert outputs[item_id].files, item_id
        assert all(path.stat().st_size > 0 for path in outputs[item_id].files), item_id
        assert "smoke" in outputs[item_id].caption or item_id in ("yw-fig1", "yw-fig2")


def _assert_mean_final_accuracy(ax, runs) -> None:
    labels = {
        "Plain": "plain",
        "ResNet": "resnet",
        "Highway": "highway",
        "DiracNet": "dirac",
        "VAN": "van",
        "VAN (λ=0)": "van0",
    }
    assert len(ax.containers) == 6
    for container in ax.containers:
        variant = labels[container.get_label()]
        line = container.lines[0]
        for depth, plotted in zip(line.get_xdata(), line.get_ydata(), strict=True):
            accs = [final(r, "test_acc") for c, r in runs if c["variant"] == variant and c["depth"] == depth]
            assert plotted == pytest.approx(np.mean(accs), abs=1e-12)


def test_van_fig1_plots_mean_final_accuracy(outputs, smoke_figures):
    _assert_mean_final_accuracy(outputs["van-fig1"].figure.axes[0], stored(smoke_figures, "van_thin"))
    fashion = [(c, r) for c, r in stored(smoke_figures, "van_thin_fashion") if not is_not_run(r)]
    if fashion:  # Fashion-MNIST found (Debian's dataset-fashion-mnist): the right panel plots it the same way
        assert all(c["dataset"] == "fashion_mnist" for c, _ in fashion)
        _assert_mean_final_accuracy(outputs["van-fig1"].figure.axes[-1], fashion)
        numbers, caption = outputs["van-fig1"].numbers, outputs["van-fig1"].caption
        panels = [key.split(":")[0] for key in numbers if key.endswith(": collapsed (variant, depth)")]
        assert len(panels) == 2 and panels[1] == "fashion_mnist"
        for dataset in panels:  # the caption gives each panel's plain / VAN loss of accuracy
            prefix = f"{dataset} plain: best acc at depth<=10 minus acc at "
            deepest = next(key for key in numbers if key.startswith(prefix))[len(prefix):]
            lost = [numbers[f"{dataset} {v}: best acc at depth<=10 minus acc at {deepest}"] for v in ("plain", "van")]
            assert f"{dataset} {100 * lost[0]:.1f} / {100 * lost[1]:.1f} points (depth {deepest})" in caption
    else:  # no Fashion-MNIST here: the right panel says so instead of plotting
        texts = " ".join(t.get_text() for ax in outputs["van-fig1"].figure.axes[1:] for t in ax.texts)
        assert "not run" in texts


def test_van_fig1_names_a_collapse_and_breaks_the_axis_for_it():
    rows = [
        {"variant": variant, "depth": depth, "test_acc_mean": acc, "test_acc_sd": 0.042, "seeds": 2,
         "seed_accs": ((0, acc - 0.03), (1, acc + 0.03))}
        for variant, accs in {"plain": (0.95, 0.90), "highway": (0.97, 0.16), "van": (0.96, 0.93)}.items()
        for depth, acc in zip((10, 30), accs, strict=True)
    ]
    table = pd.DataFrame(rows)
    fallen = van_fig1.collapsed(table, 0.1)  # below 0.1 + 0.5 · (0.97 − 0.1) = 0.535
    assert list(zip(fallen["variant"], fallen["depth"], strict=True)) == [("highway", 30)]
    note = van_fig1.collapse_note(table, 0.1, "mnist")
    assert "Highway at 30 hidden layers: 16.0 % mean (seed 0 13.0 %, seed 1 19.0 %)" in note
    assert "Highway at 10 layers with 97.0 %" in note
    fig = plt.figure()
    try:
        upper, lower = van_fig1.accuracy_panel(fig, fig.add_gridspec(1, 1)[0], table, "mnist", 0.1)
        # the upper axis holds every other point with its error bar, the lower one the collapse and chance
        assert 0.16 + 0.042 < upper.get_ylim()[0] < 0.90 - 0.042 and upper.get_ylim()[1] > 0.97 + 0.042
        assert lower.get_ylim()[0] < 0.1 and 0.16 + 0.042 < lower.get_ylim()[1] < upper.get_ylim()[0]
        assert len(upper.containers) == len(lower.containers) == 3
        healthy = table[table["variant"] != "highway"]
        assert len(van_fig1.accuracy_panel(fig, fig.add_gridspec(1, 1)[0], healthy, "mnist", 0.1)) == 1
    finally:
        plt.close(fig)
    # no verdict when the panel's best net is itself near chance (smoke scale), nor without a collapse
    assert van_fig1.collapsed(table.assign(test_acc_mean=0.15 * table["test_acc_mean"]), 0.1).empty
    assert van_fig1.collapse_note(healthy, 0.1, "mnist") == ""


def test_van_fig2_accuracy_and_alpha_residual(outputs, smoke_figures):
    runs = stored(smoke_figures, "van_preact")
    left, right, alpha_ax = outputs["van-fig2"].figure.axes
    for container in left.containers:
        variant = {"ResNet": "resnet", "VAN": "van", "VAN (λ=0)": "van0", "Plain": "plain"}[container.get_label()]
        expected = [final(r, "test_acc") for c, r in runs if c["variant"] == variant]
        np.testing.assert_allclose(np.asarray(container.lines[0].get_ydata(), dtype=float), [np.mean(expected)])
    vans = sorted(((c["seed"], r) for c, r in runs if c["variant"] == "van"), key=lambda pair: pair[0])
    # every seed's α-residual, on a log axis that says so; values below the floor (0 included) drawn at it
    assert alpha_ax.get_yscale() == "log" and "log" in alpha_ax.get_ylabel()
    lines = alpha_ax.get_lines()
    assert [line.get_label().split(",")[1].split("(")[0].strip() for line in lines] == [f"seed {s}" for s, _ in vans]
    for line, (_, van) in zip(lines, vans, strict=True):
        steps, residual, _, _ = van.array("van_alpha", "residual")
        np.testing.assert_array_equal(line.get_ydata(), np.maximum(residual, ALPHA_FLOOR))
        assert residual[0] == 1.0  # α starts at 0: every skip fully present
        assert np.all((residual >= 0) & (residual <= 1))
    van = vans[0][1]
    test_err = [ln for ln in right.get_lines() if ln.get_label() == "VAN test"][0]
    frame = van.scalars()
    np.testing.assert_allclose(test_err.get_ydata(), 1 - frame.loc[frame["name"] == "test_acc", "value"].to_numpy())


def test_van_fig2_caption_gives_the_recorded_schedule_and_no_unfounded_explanation(outputs, smoke_figures):
    (first, van), *_ = [(c, r) for c, r in stored(smoke_figures, "van_preact") if c["variant"] == "van"]
    caption = outputs["van-fig2"].caption
    per_epoch = int(van.scalars().query("name == 'epoch'")["step"].iloc[0]) + 1
    assert schedule_text(first["train"], per_epoch) in caption
    assert "Best explanation" not in caption
    for seed in sorted({c["seed"] for c, _ in stored(smoke_figures, "van_preact") if c["variant"] == "van"}):
        assert f"seed {seed} (" in caption  # the α-residual of every seed, with its net's test accuracy


def test_learning_rate_schedule_from_the_recorded_milestones():
    train = {"lr": 0.1, "milestones": [2, 3], "gamma": 0.1, "epochs": 4}
    stretches = lr_schedule(train)
    assert [(a, b) for a, b, _ in stretches] == [(1, 2), (3, 3), (4, 4)]
    np.testing.assert_allclose([eta for *_, eta in stretches], [0.1, 0.01, 0.001])
    assert schedule_text(train, 250) == (
        "η = 0.1 for epochs 1–2 (steps 1–500), 0.01 for epoch 3 (steps 501–750), 0.001 for epoch 4 (steps 751–1000)"
    )
    assert lr_schedule({"lr": 0.01, "milestones": [], "gamma": 0.1, "epochs": 15}) == [(1, 15, 0.01)]
    # a milestone named twice multiplies twice (torch's MultiStepLR); one at or past the end changes nothing
    np.testing.assert_allclose([e for *_, e in lr_schedule({"lr": 1.0, "milestones": [1, 1, 9], "gamma": 0.5,
                                                            "epochs": 3})], [1.0, 0.25])


def test_van_fig1_names_the_alpha_update_reading(outputs, smoke_figures):
    (config, _), *_ = [(c, r) for c, r in stored(smoke_figures, "van_thin") if c["variant"] == "van"]
    caption = outputs["van-fig1"].caption
    assert alpha_update_reading(config) in caption
    assert f"s = {config['alpha_grad_scale']:g}" in alpha_update_reading(config)
    assert "summed over" in alpha_update_reading({**config, "alpha_grad_scale": 128.0})
    assert "batch-mean loss" in alpha_update_reading({**config, "alpha_grad_scale": 1.0})


def test_van_fig2_states_its_substitution_once_in_the_gallery(outputs):
    shown = shown_here(outputs["van-fig2"].caption)
    assert len([s for s in shown.split(". ") if STANDS_IN.search(s)]) == 1, shown
    assert "did not learn" not in shown


def test_van_tab1_errors_match_runs(outputs, smoke_figures):
    runs = stored(smoke_figures, "van_preact")
    table = outputs["van-tab1"].table
    for _, row in table.iterrows():
        variant = {"ResNet": "resnet", "VAN": "van", "VAN (λ=0)": "van0", "Plain": "plain"}[row["architecture"]]
        errors = [100 * (1 - final(r, "test_acc")) for c, r in runs if c["variant"] == variant]
        assert row["mean error %"] == pytest.approx(np.mean(errors))
        assert row["best error %"] == pytest.approx(min(errors))


def test_schematics_hold_the_documents_skips(outputs, smoke_figures):
    ((_, result),) = stored(smoke_figures, "schematics")
    edges = [
        sum(e["kind"] == "concat" for e in json.loads(str(result[f"graph/concat_mlp/{i}"]))["edges"]) for i in (0, 1)
    ]
    assert edges == [1, 3]  # 3 layers: 1 -> 3; 4 layers: 1 -> 3, 1 -> 4, 2 -> 4
    assert outputs["yw-fig2"].numbers["concat skip edges"] == 4  # 1 -> 4, 2 -> 5, 4 -> 7, 5 -> 8
    assert len(outputs["yw-fig1"].figure.axes) == 2


@pytest.mark.parametrize(
    ("item_id", "analysis"), [("yw-tab1", "concat_mlp"), ("yw-tab2", "concat_mlp"), ("yw-tab3", "concat_mlp_cifar")]
)
def test_mlp_tables_show_the_best_weight_decay(item_id, analysis, outputs, smoke_figures):
    runs = stored(smoke_figures, analysis)
    table = outputs[item_id].table.set_index("net")
    names = {"skip": "skip", "vanilla": "vanilla", "skipstar": "skip*"}
    for variant, name in names.items():
        if f"{name} (ours)" not in table.index:
            continue
        for layers in (3, 4):
            vals = {
                c["weight_decay"]: (100 * final(r, "test_acc"), 100 * final(r, "train_acc"))
                for c, r in runs
                if c["variant"] == variant and c["layers"] == layers
            }
            best = max(sorted(vals), key=lambda wd: vals[wd][0])  # ties: the smaller weight decay
            assert table.loc[f"{name} (ours)", f"val({layers}-l)"] == pytest.approx(vals[best][0])
            assert table.loc[f"{name} (ours)", f"train({layers}-l)"] == pytest.approx(vals[best][1])
            assert table.loc[f"{name} (ours)", f"weight decay ({layers}-l)"] == best


def test_yw_tab3_trains_the_cifar_widths_and_states_the_substitution(outputs, smoke_figures):
    runs = stored(smoke_figures, "concat_mlp_cifar")
    assert {c["model"] for c, _ in runs} >= {"concat_mlp_cifar_skip_3", "concat_mlp_cifar_vanilla_4"}
    assert {c["dataset"] for c, _ in runs} == {"digits"}
    caption = outputs["yw-tab3"].caption
    assert "digits (10 digit classes" in caption and "CIFAR-10" in caption and "512-256-[256]" in caption
    assert "EMNIST" in outputs["yw-tab1"].caption and "128-256-[256]" in outputs["yw-tab1"].caption


def test_cnn_tables_and_time_ratio(outputs, smoke_figures):
    runs = stored(smoke_figures, "concat_cnn")
    table = outputs["yw-tab4"].table.set_index("net")
    for variant in ("skip", "vanilla"):
        (run,) = [r for c, r in runs if c["variant"] == variant]
        assert table.loc[f"{variant} (ours)", "val"] == pytest.approx(100 * final(run, "test_acc"))
    ((_, timing),) = stored(smoke_figures, "concat_cnn_timing")
    seconds = timing["seconds_per_step"]
    assert seconds.shape == (2, 3) and np.all(seconds > 0)
    variants = [str(v) for v in timing["variants"]]
    ratio = np.median(seconds[:, variants.index("reinforced")]) / np.median(seconds[:, variants.index("skip")])
    # vanilla CNN on 1×8×8 digits: convs 1→32, 32→32 at 8×8, 32→64, 64→64 at 4×4, 64→128, 128→128 at 2×2, fc 128→10
    convs = [(64, 32, 1), (64, 32, 32), (16, 64, 32), (16, 64, 64), (4, 128, 64), (4, 128, 128)]
    expected_macs = sum(pixels * out * inp * 9 for pixels, out, inp in convs) + 10 * 128
    assert int(timing["forward_macs"][variants.index("vanilla")]) == expected_macs
    tab5 = outputs["yw-tab5"].table.set_index("net")
    assert tab5.loc["vanilla* (reinforced) (ours)", "time ratio to skip"] == pytest.approx(ratio)
    assert outputs["yw-tab5"].numbers["time ratio reinforced / skip (median s per step)"] == pytest.approx(ratio)


def test_cnn_captions_give_the_per_epoch_accuracies(outputs, smoke_figures):
    runs = stored(smoke_figures, "concat_cnn")
    for item_id, variants in (("yw-tab4", ("skip", "vanilla")), ("yw-tab5", ("reinforced", "skip", "vanilla"))):
        caption = outputs[item_id].caption
        for variant in variants:
            (run,) = [r for c, r in runs if c["variant"] == variant]
            assert f"{CNN_NAMES[variant]} {100 * final(run, 'test_acc'):.1f} % (" in caption, (item_id, variant)
        assert "With 1 epoch, whether the nets have levelled off cannot be read from these runs." in caption


def test_convergence_note_reads_the_plateau_and_the_last_epoch_off_the_accuracies():
    # the quick reading of issue 24.7: after epoch 1 vanilla at 18–32 %, skip at 93–95 %
    accs = {"skip": np.array([[93.0, 96.0, 97.0], [95.0, 97.0, 97.4]]),
            "vanilla": np.array([[18.0, 90.0, 95.5], [32.0, 92.0, 96.7]])}
    note = convergence_note(accs, "skip", "vanilla", chance=10.0)
    assert note.startswith("Validation accuracy after each epoch, mean over seeds (after epoch 1: range over "
                           "seeds): skip 94.0, 96.5, 97.2 % (93.0–95.0 %); vanilla 25.0, 91.0, 96.1 % (18.0–32.0 %).")
    # skip − vanilla = 97.2 − 96.1 = +1.1 points; vanilla gained 5.1 in its last epoch, skip 0.7
    assert "UNCONVERGED: in the last epoch (3) vanilla still gained +5.1 points, more than the +1.10-point" in note
    assert ("vanilla was still near the initial plateau after epoch 1 (18.0–32.0 %; skip 93.0–95.0 %): the "
            "difference mostly measures which net leaves the plateau first") in note
    levelled = {v: np.concatenate([a, a[:, -1:] + 0.01], axis=1) for v, a in accs.items()}
    calm = convergence_note(levelled, "skip", "vanilla", chance=10.0)
    assert "UNCONVERGED" not in calm and "every net gained less than the +1.10-point difference" in calm
    assert "near the initial plateau after epoch 1" in calm  # late, even if levelled off since
    early = {v: a[:, 1:] for v, a in accs.items()}  # both nets off the plateau after their first epoch
    assert "plateau" not in convergence_note(early, "skip", "vanilla", chance=10.0)


def test_extra_gradflow_figures_plot_the_recorded_norms(outputs, smoke_figures):
    runs = stored(smoke_figures, "van_thin")
    depth = max(c["depth"] for c, _ in runs)
    fig = outputs["van-extra-gradflow"].figure
    lines = {ln.get_label(): ln for ln in fig.axes[3].get_lines()}
    for variant, label in (("plain", "Plain"), ("van", "VAN"), ("resnet", "ResNet")):
        (run,) = [r for c, r in runs if c["variant"] == variant and c["depth"] == depth]
        with h5py.File(run.path, "r") as file:
            norm = file["probes/grad_stats/norm"][: int(file["probes/grad_stats/n_rows"][()])]
        np.testing.assert_allclose(lines[label].get_ydata(), np.nanmean(norm, axis=0))
    image = fig.axes[0].get_images()[0].get_array()
    (plain,) = [r for c, r in runs if c["variant"] == "plain" and c["depth"] == depth]
    np.testing.assert_array_equal(np.asarray(image), plain.array("grad_stats", "norm")[1].T)
    mlp = [
        r
        for c, r in stored(smoke_figures, "concat_mlp")
        if c["variant"] == "skip" and c["layers"] == 4 and c["weight_decay"] == 0.0
    ]
    skip_line = [ln for ln in outputs["yw-extra-gradflow"].figure.axes[0].get_lines() if ln.get_label() == "skip"][0]
    np.testing.assert_allclose(skip_line.get_ydata(), np.nanmean(mlp[0].array("grad_stats", "norm")[1], axis=0))


def test_extra_items_are_drawn_and_marked_but_not_listed(outputs, smoke_figures):
    extra = {item.id for item in EXTRA_ITEMS}
    assert {"van-extra-gradflow", "yw-extra-gradflow"} <= extra
    assert not extra & {item.id for item in ITEMS}
    assert not extra & {line.split()[0] for line in list_items()}
    assert set(select(["van-extra-gradflow"])) == {"van-extra-gradflow"}
    index = (smoke_figures.out / "index.html").read_text()
    assert "yw-extra-gradflow" in index and "extra: not in the document" in index


def test_skipstar_switch_keeps_the_function_and_then_learns():
    torch.manual_seed(0)
    model = ConcatMLP((5, 4, 3), (6,), 2, True, False, False).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(7, 6, dtype=torch.float64)
    for _ in range(2):  # stage one: momentum buffers exist for every weight
        optimizer.zero_grad()
        model(x).pow(2).sum().backward()
        optimizer.step()
    before = model(x)
    enable_skips_from_zero(model, optimizer)
    assert all(skip.enabled for skip in (model.concat3, model.concat4))
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    model.zero_grad()
    model(x).pow(2).sum().backward()
    assert model.fc4.weight.grad[:, 3:].abs().sum() > 0  # the new columns receive gradient


def test_validation_split_is_held_out_of_training():
    data = load_dataset("digits")
    split = validation_split(data, 100)
    assert split.n_test == 100 and split.n_train == data.n_train - 100

    # train and validation together are exactly the original training set (as a multiset): nothing shared
    def rows(x, y):
        return sorted(tuple(r) + (int(label),) for r, label in zip(x.flatten(1).tolist(), y.tolist(), strict=True))

    together = rows(torch.cat([split.x_train, split.x_test]), torch.cat([split.y_train, split.y_test]))
    assert together == rows(data.x_train, data.y_train)
    torch.testing.assert_close(split.x_test, validation_split(data, 100).x_test)  # a fixed split


def test_alpha_probe_matches_hand_computed_residual():
    model = create_model("thin_mlp_van_2", input_shape=(4,))
    with torch.no_grad():
        model.blocks[0].skip.alpha.copy_(torch.linspace(0, 1, 50))
        model.blocks[1].skip.alpha.fill_(0.5)

    class Ctx:
        pass

    ctx = Ctx()
    ctx.model = model
    values = AlphaProbe().compute(ctx)
    expected = (np.mean((1 - np.linspace(0, 1, 50)) ** 2) + 0.25) / 2
    assert float(values["residual"]) == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(values["alpha_mean"].numpy(), [0.5, 0.5], rtol=1e-6)


def test_van_fig2_says_when_the_plain_net_does_not_degrade():
    from figures.van_common import plain_degradation

    flat = {10: 0.9805, 26: 0.98}
    assert "98.05 % at 10, 98.00 % at 26" in plain_degradation(flat)
    degrading = {10: 0.977, 26: 0.936}
    assert plain_degradation(degrading) == ""
