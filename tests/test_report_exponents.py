"""GradStats' exponent histograms drawn per layer over training (issue 23.1, report side): the drawn matrices are
the recorded counts summed per block of records, read every stride-th record beyond a budget (and said so);
buckets on a log2|g| axis; a row without gradient grey; zeros and non-finite counts in their own panel."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_rgba
from synthetic_runs import RunData, grad_probe, healthy_grads, write_run
from test_report_legibility import rendered_text_px

import gradlens
from gradlens.probes.base import Quantity
from gradlens.report import build
from gradlens.report.views import exponents
from gradlens.report.views.drawing import MIN_TEXT_PX, NO_GRAD_COLOUR
from gradlens.report.views.exponents import bucket_edges, chosen_layers, exponent_blocks

LAYERS = ["fc0.weight", "fc1.weight", "fc2.weight"]
LABELS = ["(0, 2^-64)", *[f"[2^{e}, 2^{e + 1})" for e in range(-64, 16)], "[2^16, inf)"]
N = 100


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def exponent_run(path, seed=0):
    """Three layers: fc0 around 2^-30 (vanishing), fc1 around 2^-8, fc2 around 2^-8 without gradient for the
    first 10 records; random zeros and a few non-finite entries."""
    rng = np.random.default_rng(seed)
    hist = np.zeros((N, len(LAYERS), 2, len(LABELS)), dtype=np.int64)
    for layer, centre in enumerate((-30, -8, -8)):
        bucket = centre + 65
        hist[:, layer, :, bucket - 2 : bucket + 3] = rng.integers(0, 50, (N, 2, 5))
    zero = rng.integers(0, 5, (N, len(LAYERS)))
    nonfinite = np.zeros((N, len(LAYERS)), dtype=np.int64)
    nonfinite[70, 1] = 3
    hist[:10, 2] = 0
    zero[:10, 2] = 0
    per_layer = {"layer": LAYERS}
    extra = {
        "exp_hist": (
            Quantity(
                (3, 2, len(LABELS)),
                ("layer", "sign", "exponent"),
                {**per_layer, "sign": ["negative", "positive"], "exponent": LABELS},
                dtype="uint32",
            ),
            hist,
        ),
        "exp_zero": (Quantity((3,), ("layer",), per_layer, dtype="uint32"), zero),
        "exp_nonfinite": (Quantity((3,), ("layer",), per_layer, dtype="uint32"), nonfinite),
    }
    steps = list(range(0, 2 * N, 2))
    grads = healthy_grads(layers=LAYERS, steps=steps)
    probe = grad_probe(grads, name="grad_exponents", layers=LAYERS, steps=steps, extra=extra)
    return gradlens.load(write_run(path, RunData([probe], label=f"run{seed}"))), np.array(steps), hist, zero, nonfinite


def summed(values, block, stride=1):
    """Brute force: every stride-th record, summed per block of ``block`` records."""
    index = np.arange(0, len(values), stride)
    return np.stack([values[index[index // block == k]].sum(axis=0) for k in np.unique(index // block)])


def test_layers_drawn_are_weights_spread_first_to_last():
    names = [f"l{i}.{kind}" for i in range(20) for kind in ("weight", "bias")]
    picked = chosen_layers(names, 4)
    assert [names[i] for i in picked] == ["l0.weight", "l6.weight", "l13.weight", "l19.weight"]
    assert chosen_layers(["a", "b", "c"], 8) == [0, 1, 2]


def test_bucket_edges_read_log2_of_g():
    edges = bucket_edges(LABELS)
    assert edges[0] == -65 and edges[1] == -64 and edges[-1] == 17 and len(edges) == len(LABELS) + 1
    with pytest.raises(ValueError, match="exponent labels name no bucket"):
        bucket_edges(["a", "b"])


def test_blocks_are_the_recorded_counts_summed(tmp_path, monkeypatch):
    run, steps, hist, zero, nonfinite = exponent_run(tmp_path / "e.h5")
    monkeypatch.setattr(exponents, "MAX_EXP_ROWS", 10)
    blocks = exponent_blocks(run, "grad_exponents")
    assert (blocks.block, blocks.stride, blocks.records) == (10, 1, N)
    np.testing.assert_array_equal(blocks.counts, summed(hist, 10))
    np.testing.assert_array_equal(blocks.zero, summed(zero, 10))
    np.testing.assert_array_equal(blocks.nonfinite, summed(nonfinite, 10))
    np.testing.assert_array_equal(blocks.first_steps, steps[::10])
    np.testing.assert_array_equal(blocks.last_steps, steps[9::10])
    assert blocks.no_grad[:, 2].tolist() == [True] + [False] * 9 and not blocks.no_grad[:, :2].any()
    # beyond the budget: every stride-th record, blocks a multiple of the stride
    monkeypatch.setattr(exponents, "MAX_EXP_VALUES", 3 * 2 * len(LABELS) * 25)  # 25 records' worth
    blocks = exponent_blocks(run, "grad_exponents")
    assert (blocks.stride, blocks.block) == (4, 12)
    np.testing.assert_array_equal(blocks.counts, summed(hist, 12, 4))
    np.testing.assert_array_equal(blocks.first_steps, steps[::12])


def test_report_draws_the_exponent_view(tmp_path, monkeypatch):
    monkeypatch.setattr(exponents, "MAX_EXP_ROWS", 10)
    run = exponent_run(tmp_path / "e.h5")[0]
    _, _, hist, zero, _ = exponent_run(tmp_path / "f.h5")
    report = build([run])
    (section,) = [s for s in report.sections if s.kind == "exponents"]
    drawn = section.data["run0"]["layers"]
    np.testing.assert_array_equal(drawn["fc1.weight"]["positive"], summed(hist[:, 1, 1], 10))
    np.testing.assert_array_equal(drawn["fc0.weight"]["negative"], summed(hist[:, 0, 0], 10))
    np.testing.assert_array_equal(drawn["fc2.weight"]["zero"], summed(zero[:, 2], 10))
    assert "Each row is the sum of the counts of every record in its block" in section.caption
    assert "each row is the sum of the counts over a block of 10 consecutive records (20 steps" in section.caption
    assert "3 of 3 parameters" in section.caption and "fc2.weight: 1 of 10 rows" in section.caption
    assert not any("exp_" in item for item in report.undrawn)
    # the vanishing layer's mass sits 22 buckets (6.6 decades) left of the healthy one's
    centre = [
        (drawn[name]["positive"].sum(0) * section.data["run0"]["edges"][:-1]).sum() / drawn[name]["positive"].sum()
        for name in ("fc0.weight", "fc1.weight")
    ]
    assert centre[1] - centre[0] == pytest.approx(22, abs=0.5)
    # the row without gradient is grey where fc2's panel is drawn (first block: steps 0..18)
    fig = section.figure
    fig.canvas.draw()
    panel = next(ax for ax in fig.axes if ax.get_title() == "fc2.weight: g > 0")
    image = np.asarray(fig.canvas.buffer_rgba()) / 255.0
    px, py = panel.transData.transform((-8.5, 8))
    np.testing.assert_allclose(image[image.shape[0] - 1 - int(py), int(px)], to_rgba(NO_GRAD_COLOUR), atol=0.02)
    assert {ax.get_xscale() for ax in fig.axes} == {"linear"}
    assert [ax.get_xlabel() for ax in fig.axes if ax.get_xlabel()][:2] == ["log2 |g| (linear scale)"] * 2


def test_compare_draws_each_run_side_by_side(tmp_path):
    runs = [exponent_run(tmp_path / f"{k}.h5", seed=k)[0] for k in range(2)]
    (section,) = [s for s in build(runs).sections if s.kind == "exponents"]
    assert list(section.data) == ["run0", "run1"]
    assert "run0: 3 of 3 parameters, spread from first to last (weights)" in section.caption
    assert "run1: 3 of 3 parameters" in section.caption
    small = [(round(px, 1), text) for px, text in rendered_text_px(section) if px < MIN_TEXT_PX]
    assert small == []  # as the page shows it
