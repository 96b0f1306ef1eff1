"""Documents 002 (VAN) and 003 (concatenative skips): every item plots what its HDF5 files hold, at smoke scale;
the skip* switch, the validation split, the α probe and the extra-item mechanism are right."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from analyses.concat_mlp import enable_skips_from_zero, validation_split
from analyses.optional_data import is_not_run
from analyses.van_common import AlphaProbe
from figures.catalogue import EXTRA_ITEMS, ITEMS
from figures.cli import list_items, select
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
        _assert_mean_final_accuracy(outputs["van-fig1"].figure.axes[1], fashion)
    else:  # no Fashion-MNIST here: the right panel says so instead of plotting
        texts = " ".join(t.get_text() for t in outputs["van-fig1"].figure.axes[1].texts)
        assert "not run" in texts


def test_van_fig2_accuracy_and_alpha_residual(outputs, smoke_figures):
    runs = stored(smoke_figures, "van_preact")
    left, right, alpha_ax = outputs["van-fig2"].figure.axes
    for container in left.containers:
        variant = {"ResNet": "resnet", "VAN": "van", "VAN (λ=0)": "van0", "Plain": "plain"}[container.get_label()]
        expected = [final(r, "test_acc") for c, r in runs if c["variant"] == variant]
        np.testing.assert_allclose(np.asarray(container.lines[0].get_ydata(), dtype=float), [np.mean(expected)])
    (van,) = [r for c, r in runs if c["variant"] == "van"]
    steps, residual, _, _ = van.array("van_alpha", "residual")
    (line,) = alpha_ax.get_lines()
    np.testing.assert_array_equal(line.get_ydata(), residual)
    assert residual[0] == 1.0  # α starts at 0: every skip fully present
    assert np.all((residual >= 0) & (residual <= 1))
    test_err = [ln for ln in right.get_lines() if ln.get_label() == "VAN test"][0]
    frame = van.scalars()
    np.testing.assert_allclose(test_err.get_ydata(), 1 - frame.loc[frame["name"] == "test_acc", "value"].to_numpy())


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
    from figures.van_fig2 import plain_degradation

    flat = {10: 0.9805, 26: 0.98}
    assert "98.05 % at 10, 98.00 % at 26" in plain_degradation(flat)
    degrading = {10: 0.977, 26: 0.936}
    assert plain_degradation(degrading) == ""
