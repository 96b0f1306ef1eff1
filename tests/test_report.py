"""The report draws every probe and scalar of a file, whatever their names, with the file's values: views are
chosen by probe class and quantity axes; non-finite values, missing gradients and frozen parameters are said;
compare averages seeds and aligns runs by layer name; the page is one self-contained HTML file."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.collections import PolyCollection, QuadMesh
from matplotlib.colors import LogNorm
from synthetic_runs import LAYERS, STEPS, ProbeData, RunData, grad_probe, healthy_grads, healthy_scalars, write_run
from torch import nn

import gradlens
from gradlens.probes import DominantFlow, FinalGradHist, GradStats, LayerCushion
from gradlens.probes.base import Quantity
from gradlens.report import build, chosen_steps, missing_lines, short_names, write_report
from gradlens.report.views import scalar_panels


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def sections_of(report, kind, probe=None):
    return [s for s in report.sections if s.kind == kind and (probe is None or s.probe == probe)]


def line_data(ax, label):
    (line,) = [line for line in ax.get_lines() if line.get_label() == label]
    return line.get_xdata(), line.get_ydata()


def test_gradient_statistics_of_any_name_profile_and_heatmap_equal_the_file(tmp_path):
    grads = healthy_grads()
    run = gradlens.load(write_run(tmp_path / "r.h5", RunData([grad_probe(grads, name="grads_every_step")])))
    report = build([run])
    (profile,) = sections_of(report, "profile")
    ax = profile.figure.axes[0]
    picked = chosen_steps(STEPS)
    assert picked == [0, 2, 11, 39]  # log-spaced over 40 steps
    for step in picked:
        x, y = line_data(ax, f"step {step}")
        np.testing.assert_array_equal(x, np.arange(len(LAYERS)))
        np.testing.assert_array_equal(y, grads["mean_abs"][step])
    assert [t.get_text() for t in ax.get_xticklabels()] == LAYERS  # layers by name, forward order
    (heatmap,) = sections_of(report, "heatmap")
    mesh = next(c for c in heatmap.figure.axes[0].collections if isinstance(c, QuadMesh))
    np.testing.assert_allclose(mesh.get_array().reshape(len(LAYERS), len(STEPS)), grads["mean_abs"].T)
    assert isinstance(mesh.norm, LogNorm) and mesh.norm.vmin == grads["mean_abs"].min()  # log colour scale
    (norm,) = [s for s in report.sections if s.title == "Global gradient norm"]
    _, y = line_data(norm.figure.axes[0], "r")
    np.testing.assert_allclose(y, np.sqrt((grads["norm"] ** 2).sum(axis=1)))
    # integer step ticks on every step axis
    for axis in (heatmap.figure.axes[0].xaxis, norm.figure.axes[0].xaxis):
        assert axis.get_major_locator()._integer


def test_every_probe_of_a_real_session_is_drawn(tmp_path):
    torch.manual_seed(0)
    model = gradlens_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    probes = [
        GradStats(name="g", bins=np.linspace(-0.05, 0.05, 11)),
        LayerCushion(every=2, name="cush"),
        DominantFlow(every=2, name="flow"),
        FinalGradHist(every=2, bins=8, name="fin"),
    ]
    path = tmp_path / "real.h5"
    with gradlens.attach(model, optimizer, path, probes=probes, probe_batch=(x[:8], y[:8])) as session:
        for _ in range(5):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            session.log(loss=loss.item(), my_metric=float(loss.item() ** 2))
    run = gradlens.load(path)
    report = build([run])
    drawn = {s.probe for s in report.sections}
    assert {"g", "cush", "flow", "fin"} <= drawn and report.undrawn == ["flow/r ['layer', 'sample', 'channel']"]
    # cushions: the box medians are the medians of the stored per-sample μ
    (box,) = sections_of(report, "distribution", "cush")
    steps, mu, _, labels = run.array("cush", "mu")
    panel = box.data["real"]
    for step in panel["steps"]:
        row = mu[list(steps).index(step)]
        for layer, values in zip(labels["layer"], panel["values"][step], strict=True):
            np.testing.assert_array_equal(values, row[labels["layer"].index(layer)])
    medians = [
        line.get_ydata()[0]
        for line in box.figure.axes[0].get_lines()
        if len(line.get_xdata()) == 2 and line.get_xdata()[0] != line.get_xdata()[1] and line.get_color() != "black"
    ]
    assert medians[: len(labels["layer"])] == pytest.approx(np.median(mu[0], axis=1))
    # σ per layer at chosen steps (linear scale, 0..1)
    (sigma,) = sections_of(report, "profile", "flow")
    steps, values, _, _ = run.array("flow", "sigma")
    for step in sigma.data["real"]["steps"]:
        _, y = line_data(sigma.figure.axes[0], f"step {step}")
        np.testing.assert_array_equal(y, values[list(steps).index(step)])
    # histograms: the final-gradient histogram ridges are the stored counts; GradStats' hist per layer
    (final,) = sections_of(report, "histogram", "fin")
    steps, counts, _, _ = run.array("fin", "counts")
    np.testing.assert_array_equal(final.data["real"]["counts"], counts)
    ridges = [p for p in final.figure.axes[0].patches]
    assert len(ridges) == len(steps)
    (hist,) = sections_of(report, "histogram", "g")
    steps, counts, _, labels = run.array("g", "hist")
    first = labels["layer"][0]
    np.testing.assert_array_equal(hist.data[first]["counts"], counts[:, 0, :])
    # every scalar, whatever its name
    (scalars,) = sections_of(report, "scalars")
    logged = run.scalars()
    np.testing.assert_array_equal(
        scalars.data[("my_metric", "real", "my_metric")]["values"],
        logged.query("name == 'my_metric'")["value"].to_numpy(),
    )


def gradlens_model():
    from gradlens.models import create_model

    return create_model("mlp_plain_3", input_shape=(1, 8, 8), width=16, num_classes=10)


def test_unknown_probe_class_is_drawn_by_its_axes(tmp_path):
    rng = np.random.default_rng(1)
    steps = [0, 5, 10]
    quantities = {
        "level": Quantity((3,), ("layer",), {"layer": ["a", "b", "c"]}),
        "spread": Quantity((3, 7), ("layer", "sample"), {"layer": ["a", "b", "c"]}),
        "counts": Quantity((4,), ("bin",), dtype="int64"),
        "edges": Quantity((5,), ("edge",)),
        "total": Quantity((), ()),
    }
    values = {
        "level": rng.uniform(1, 2, (3, 3)),
        "spread": rng.uniform(1, 2, (3, 3, 7)),
        "counts": rng.integers(0, 9, (3, 4)),
        "edges": np.tile(np.linspace(-1, 1, 5), (3, 1)),
        "total": np.array([1.0, 2.0, 4.0]),
    }
    probe = ProbeData("mystery", "SomethingNew", quantities, steps, values)
    run = gradlens.load(write_run(tmp_path / "m.h5", RunData([probe])))
    report = build([run])
    kinds = sorted(s.kind for s in report.sections)
    assert kinds == ["distribution", "heatmap", "histogram", "profile", "series"]
    (series,) = sections_of(report, "series")
    _, y = line_data(series.figure.axes[0], "m")
    np.testing.assert_array_equal(y, values["total"])
    (profile,) = sections_of(report, "profile")
    np.testing.assert_array_equal(line_data(profile.figure.axes[0], "step 5")[1], values["level"][1])
    (hist,) = sections_of(report, "histogram")
    stairs = hist.figure.axes[0].patches
    assert len(stairs) == 3
    drawn = stairs[1].get_data()
    np.testing.assert_array_equal(drawn.edges, values["edges"][1])
    scale = values["counts"].max()
    np.testing.assert_allclose(drawn.values, values["counts"][1] / scale * 1.6 + 1)


def test_many_steps_histogram_is_a_heatmap(tmp_path):
    steps = list(range(30))
    counts = np.arange(30 * 4).reshape(30, 4) % 7
    probe = ProbeData(
        "h",
        "Hist",
        {"counts": Quantity((4,), ("bin",), dtype="int64"), "edges": Quantity((5,), ("edge",))},
        steps,
        {"counts": counts, "edges": np.tile(np.linspace(0, 1, 5), (30, 1))},
    )
    report = build([gradlens.load(write_run(tmp_path / "h.h5", RunData([probe])))])
    (hist,) = sections_of(report, "histogram")
    mesh = next(c for c in hist.figure.axes[0].collections if isinstance(c, QuadMesh))
    drawn = np.ma.getdata(mesh.get_array()).reshape(4, 30)
    mask = np.ma.getmaskarray(mesh.get_array()).reshape(4, 30)
    np.testing.assert_array_equal(drawn[~mask], counts.T[~mask])
    assert (mask == (counts.T == 0)).all()  # empty bins blank


def test_scalar_panels_group_by_name():
    names = ["train_loss", "acc", "lr", "val_loss", "top1_accuracy", "grad_scale"]
    assert scalar_panels(names) == {
        "loss": ["train_loss", "val_loss"],
        "accuracy": ["acc", "top1_accuracy"],
        "lr": ["lr"],
        "grad_scale": ["grad_scale"],
    }


def test_nan_run_is_marked_not_silently_cut(tmp_path):
    grads = healthy_grads()
    for q in ("mean", "mean_abs", "norm", "max_abs"):
        grads[q][3:, :] = np.nan
    grads["nonfinite"][3:, :] = 16
    scalars = [(s, "loss", 2.0 if s < 3 else float("nan")) for s in range(10)]
    run = gradlens.load(write_run(tmp_path / "nan.h5", RunData([grad_probe(grads)], scalars)))
    report = build([run])
    (profile,) = sections_of(report, "profile")
    assert {2, 3} <= set(profile.data["nan"]["steps"])  # the last finite step and the first non-finite one
    ax = profile.figure.axes[0]
    label = f"step 3 ({len(LAYERS)} non-finite: ×)"
    assert np.isnan(line_data(ax, label)[1]).all()
    crosses = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert len(crosses[0].get_xdata()) == len(LAYERS)
    assert "non-finite values from step 3" in profile.caption
    (heatmap,) = sections_of(report, "heatmap")
    assert heatmap.data["nan"]["nonfinite"][3:].all() and not heatmap.data["nan"]["nonfinite"][:3].any()
    red = [c for c in heatmap.figure.axes[0].collections if isinstance(c, QuadMesh)][1]
    assert (~np.ma.getmaskarray(red.get_array())).sum() == (len(STEPS) - 3) * len(LAYERS)
    assert "from step 3" in heatmap.caption
    (scalars,) = sections_of(report, "scalars")
    ax = scalars.figure.axes[0]
    bands = [p for p in ax.patches if p.get_label() == "_nonfinite"]
    (band,) = bands
    assert (band.get_x(), band.get_x() + band.get_width()) == (2.5, 9.5)
    assert "loss not finite at steps 3–9 (red band)" in scalars.caption
    lines = missing_lines(run)
    assert "first non-finite record: step 3, fc0.weight, grads_every_step/mean = nan (drawn red from there on)" in lines
    assert "first non-finite scalar: step 3, loss, scalar = nan" in lines


def test_frozen_and_gradient_less_layers_are_listed_with_the_reason(tmp_path):
    grads = healthy_grads()
    for q in ("mean", "mean_abs", "norm", "max_abs"):
        grads[q][:, 1] = np.nan
    grads["nonfinite"][:, 1] = -1
    parameters = [
        {"name": "emb.weight", "module": "emb", "kind": "weight", "shape": [5, 4], "numel": 20, "trainable": False}
    ]
    run = gradlens.load(write_run(tmp_path / "f.h5", RunData([grad_probe(grads)], parameters=parameters)))
    lines = missing_lines(run)
    assert "frozen parameters (requires_grad False, not trained, not measured): emb.weight" in lines
    assert any(
        line.startswith("without a gradient in grads_every_step (.grad was None")
        and "fc1.weight (40 of 40 records)" in line
        for line in lines
    )
    assert "non-finite values: none recorded" in lines  # a missing gradient is not a NaN
    report = build([run])
    (profile,) = sections_of(report, "profile")
    assert "Frozen parameters (requires_grad False, not measured, not drawn): emb.weight." in profile.caption
    hollow = [line for line in profile.figure.axes[0].get_lines() if line.get_label() == "_no_gradient"]
    assert all(list(line.get_xdata()) == [1] for line in hollow) and len(hollow) == 4  # fc1 at each step
    (heatmap,) = sections_of(report, "heatmap")
    assert "no gradient (.grad was None) in 1 layers at some step" in heatmap.caption
    assert [t.get_text() for t in heatmap.figure.axes[0].get_yticklabels()] == LAYERS  # one numbering
    # files without meta["parameters"] say so
    plain = gradlens.load(write_run(tmp_path / "p.h5", RunData([grad_probe(healthy_grads())])))
    assert "frozen parameters: not listed in this file (it has no meta['parameters'])" in missing_lines(plain)


def test_short_names_keep_the_distinguishing_tail():
    names = [f"bert.encoder.layer.{i}.attention.self.{p}.weight" for i in range(2) for p in ("query", "key")]
    names += ["bert.encoder.layer.0.intermediate.dense.weight", "classifier.weight"]
    short = short_names(names)
    assert short[0] == "enc.l0.attn.self.query.weight"
    assert short[3] == "enc.l1.attn.self.key.weight"
    assert short[4] == "enc.l0.inter.dense.weight" and short[5] == "cls.weight"  # "bert." shared: dropped
    assert len(set(short)) == len(names) and all(len(s) <= 30 for s in short)
    assert short_names(["fc0", "fc1"]) == ["fc0", "fc1"]


def test_compare_seeds_mean_and_band_aligned_by_layer_name(tmp_path):
    a1, a2 = healthy_grads(seed=1), healthy_grads(seed=2)
    b = healthy_grads(seed=3)
    reordered = LAYERS[::-1]  # run B stores its layers in another order: aligned by name
    b_values = {q: v[:, ::-1] for q, v in b.items()}
    runs = [
        gradlens.load(write_run(tmp_path / "a1.h5", RunData([grad_probe(a1)], healthy_scalars(), label="A"))),
        gradlens.load(write_run(tmp_path / "a2.h5", RunData([grad_probe(a2)], healthy_scalars(), label="A"))),
        gradlens.load(
            write_run(
                tmp_path / "b.h5", RunData([grad_probe(b_values, layers=reordered)], healthy_scalars(), label="B")
            )
        ),
    ]
    report = build(runs)
    (profile,) = sections_of(report, "profile")
    ax_a, ax_b = profile.figure.axes[:2]
    assert ax_a.get_title() == "A (mean of 2 runs, band min–max)"
    _, y = line_data(ax_a, "step 39")
    np.testing.assert_allclose(y, (a1["mean_abs"][39] + a2["mean_abs"][39]) / 2)
    bands = [c for c in ax_a.collections if isinstance(c, PolyCollection)]
    top = bands[-1].get_paths()[0].vertices[:, 1]
    assert np.isclose(top, np.maximum(a1["mean_abs"][39], a2["mean_abs"][39])[0]).any()
    np.testing.assert_array_equal(line_data(ax_b, "step 39")[1], b["mean_abs"][39])  # in LAYERS order
    assert [t.get_text() for t in ax_b.get_xticklabels()] == LAYERS
    (overlay,) = sections_of(report, "overlay")
    assert overlay.title.startswith("Runs overlaid")
    _, y = line_data(overlay.figure.axes[0], "A (mean of 2 runs, band min–max)")
    np.testing.assert_allclose(y, (a1["mean_abs"].mean(axis=0) + a2["mean_abs"].mean(axis=0)) / 2)
    _, y = line_data(overlay.figure.axes[0], "B")
    np.testing.assert_allclose(y, b["mean_abs"].mean(axis=0))
    (scalars,) = sections_of(report, "scalars")
    assert ("loss", "A", "loss") in scalars.data and ("loss", "B", "loss") in scalars.data
    loss = [value for _, name, value in healthy_scalars() if name == "loss"]
    np.testing.assert_allclose(scalars.data[("loss", "A", "loss")]["values"], loss)  # two equal seeds


def test_page_is_self_contained_with_findings_first(tmp_path):
    grads = healthy_grads()
    grads["mean_abs"] = grads["mean_abs"] * 10.0 ** np.linspace(-8, 0, len(LAYERS))
    run = gradlens.load(write_run(tmp_path / "v.h5", RunData([grad_probe(grads)], healthy_scalars())))
    out = write_report([run], tmp_path / "v.html")
    page = open(out, encoding="utf-8").read()
    assert page.index("<h2>Diagnosis</h2>") < page.index("<img")
    assert "severe</span> vanishing gradients" in page
    assert not re.search(r"(src|href)=['\"](http|//|file:)", page)
    assert page.count("data:image/png;base64,") == len(build([run]).sections)


def test_watch_refresh_tag_and_banner(tmp_path):
    run = gradlens.load(write_run(tmp_path / "w.h5", RunData([grad_probe(healthy_grads())])))
    page = open(write_report([run], tmp_path / "w.html", refresh=7, banner="live: x"), encoding="utf-8").read()
    assert "<meta http-equiv='refresh' content='7'>" in page and "<p class='banner'>live: x</p>" in page
