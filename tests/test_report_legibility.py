"""What a reader of a report or compare page can tell apart and read: "no gradient" and "exactly zero" in
different colours with a legend entry each, one axis type per figure named in its label, and no text under
9 px as the page shows the pictures (PNG at the page's resolution, scaled down by the browser when wider than
the page)."""

from __future__ import annotations

import io
import re

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.text import Text
from synthetic_runs import LAYERS, STEPS, RunData, grad_probe, healthy_grads, healthy_scalars, write_run

import gradlens
from gradlens.probes.base import Quantity
from gradlens.report import build
from gradlens.report.page import STYLE, png_bytes
from gradlens.report.views.drawing import (
    MIN_TEXT_PX,
    NO_GRAD_COLOUR,
    PAGE_WIDTH_PX,
    PNG_DPI,
    ZERO_COLOUR,
    is_colorbar,
)

NO_GRAD, ZERO = 1, 2  # LAYERS[1] never gets a gradient, LAYERS[2] gets an all-zero one
STEP_AXES = ("optimizer step", "step", "layer (input → output)", "")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def states_run(path, label=None, layers=LAYERS, decaying_loss=False) -> str:
    """A GradStats run where one layer has no gradient and one an exactly-zero gradient, with histograms."""
    grads = healthy_grads(layers=layers)
    for q in ("mean", "mean_abs", "norm", "max_abs"):
        grads[q][:, NO_GRAD] = np.nan
        grads[q][:, ZERO] = 0.0
    grads["nonfinite"][:, NO_GRAD] = -1
    bins = 6
    hist = np.zeros((len(STEPS), len(layers), bins))
    hist[:, :, 2:4] = 8
    hist[:, NO_GRAD, :] = -1  # GradStats: counts -1 where .grad was None
    hist[:, ZERO, :] = 0
    hist[:, ZERO, 3] = 16  # every entry 0.0 lands in the bin [0, e)
    extra = {
        "hist": (Quantity((len(layers), bins), ("layer", "bin"), {"layer": list(layers)}, dtype="int64"), hist),
        "hist_edges": (Quantity((bins + 1,), ("edge",)), np.tile(np.linspace(-0.03, 0.03, bins + 1), (len(STEPS), 1))),
    }
    scalars = healthy_scalars()
    if decaying_loss:  # four decades: the loss panel goes on a log axis, accuracy stays linear
        scalars = [(s, n, v * 10.0 ** (-s / 10) if n == "loss" else v) for s, n, v in scalars]
    return write_run(path, RunData([grad_probe(grads, layers=layers, extra=extra)], scalars, label=label))


def pixel(fig, ax, x, y) -> np.ndarray:
    """The RGBA (0..1) that ``fig`` rendered at data point (x, y) of ``ax``."""
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba()) / 255.0
    px, py = ax.transData.transform((x, y))
    return image[image.shape[0] - 1 - int(round(py)), int(round(px))]


def test_no_gradient_and_exact_zero_are_drawn_in_different_colours_with_legend_entries(tmp_path):
    run = gradlens.load(states_run(tmp_path / "s.h5"))
    report = build([run])
    assert to_rgba(NO_GRAD_COLOUR) != to_rgba(ZERO_COLOUR)
    # heat-map: the rendered cells of the two layers have the two colours; the legend names both
    (heatmap,) = [s for s in report.sections if s.kind == "heatmap"]
    fig, ax = heatmap.figure, heatmap.figure.axes[0]
    np.testing.assert_allclose(pixel(fig, ax, STEPS[5], NO_GRAD), to_rgba(NO_GRAD_COLOUR), atol=0.02)
    np.testing.assert_allclose(pixel(fig, ax, STEPS[5], ZERO), to_rgba(ZERO_COLOUR), atol=0.02)
    legend = {t.get_text(): h for t, h in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles, strict=True)}
    assert to_rgba(legend["no gradient (.grad was None)"].get_facecolor()) == to_rgba(NO_GRAD_COLOUR)
    assert to_rgba(legend["exactly 0"].get_facecolor()) == to_rgba(ZERO_COLOUR)
    assert "no gradient (.grad was None) in grey" in heatmap.caption and "exactly 0 in blue" in heatmap.caption
    # profile: a grey ○ under the layer without gradient and a blue ▽ under the zero layer, at every step drawn
    (profile,) = [s for s in report.sections if s.kind == "profile"]
    ax = profile.figure.axes[0]
    marks = {line.get_label(): line for line in ax.get_lines() if line.get_label() in ("_no_gradient", "_zero")}
    assert list(marks["_no_gradient"].get_xdata()) == [NO_GRAD] and list(marks["_zero"].get_xdata()) == [ZERO]
    assert to_rgba(marks["_no_gradient"].get_color()) == to_rgba(NO_GRAD_COLOUR)
    assert to_rgba(marks["_zero"].get_color()) == to_rgba(ZERO_COLOUR)
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "no gradient (.grad was None)" in texts and "exactly 0" in texts
    assert ax.get_yscale() == "log"  # zeros are marked, not a reason to give up the log axis
    _, y = next((line.get_xdata(), line.get_ydata()) for line in ax.get_lines() if line.get_label() == "step 0")
    assert np.isnan(y[ZERO]) and np.isnan(y[NO_GRAD])  # no line dives to the axis floor
    # histogram of the layer without gradient: grey (not -1 counts), its counts left out of "below/above"
    (hist,) = [s for s in report.sections if s.kind == "histogram"]
    panel = next(a for a in hist.figure.axes if a.get_title() == LAYERS[NO_GRAD])
    np.testing.assert_allclose(pixel(hist.figure, panel, STEPS[5], 0.005), to_rgba(NO_GRAD_COLOUR), atol=0.02)
    assert "no gradient (.grad was None) at 40 steps (grey)" in hist.caption
    assert "below the bins" not in hist.caption  # no hist_below recorded: nothing said, nothing summed from -1


def test_every_figure_has_one_axis_type_named_in_its_labels(tmp_path):
    runs = [
        gradlens.load(states_run(tmp_path / "a.h5", label="A", decaying_loss=True)),
        gradlens.load(states_run(tmp_path / "b.h5", label="B", decaying_loss=True)),
    ]
    report = build(runs)
    loss = [s for s in report.sections if s.kind == "scalars" and "loss" in {k[0] for k in s.data}]
    assert len(loss) == 1 and loss[0].figure.axes[0].get_yscale() == "log"
    accuracy = [s for s in report.sections if s.kind == "scalars" and ("accuracy", "A", "val_acc") in s.data]
    assert accuracy[0].figure.axes[0].get_yscale() == "linear"  # in another figure than the log loss
    checked = 0
    for section in report.sections:
        panels = [ax for ax in section.figure.axes if ax.get_visible() and not is_colorbar(ax)]
        assert len({ax.get_yscale() for ax in panels}) == 1, section.title  # no log panel beside a linear one
        assert {ax.get_xscale() for ax in panels} == {"linear"}, section.title  # steps, layers, bin values
        labelled = [(ax.get_ylabel(), ax.get_yscale()) for ax in section.figure.axes if ax.get_visible()]
        labelled += [(ax.get_xlabel(), ax.get_xscale()) for ax in panels]
        for label, scale in labelled:
            if label in STEP_AXES:
                continue
            assert label.endswith(f"({scale} scale)"), (section.title, label, scale)
            checked += 1
    assert checked >= len(report.sections)


def rendered_text_px(section) -> list[tuple[float, str]]:
    """(height in CSS px on the page, text) of every visible text of the section's figure: points × dpi / 72,
    times the browser's shrink factor when the PNG is wider than the page's content column."""
    texts = [t for t in section.figure.findobj(Text) if t.get_visible() and t.get_text().strip()]
    sizes = [(t.get_fontsize(), t.get_text()) for t in texts]
    width = matplotlib.image.imread(io.BytesIO(png_bytes(section.figure))).shape[1]
    shrink = min(1.0, PAGE_WIDTH_PX / width)
    return [(size * PNG_DPI / 72 * shrink, text) for size, text in sizes]


@pytest.mark.parametrize("layers", [6, 60])
def test_compare_text_is_at_least_9_px_as_rendered(tmp_path, layers):
    names = [f"encoder.block.{i}.attention.weight" for i in range(layers)]
    runs = [
        gradlens.load(states_run(tmp_path / f"{label}{seed}.h5", label=label, layers=names, decaying_loss=True))
        for label in ("A", "B", "C")
        for seed in (0, 1)
    ]
    assert f"max-width:{PAGE_WIDTH_PX}px" in STYLE
    for section in build(runs).sections:
        small = [(round(px, 1), text) for px, text in rendered_text_px(section) if px < MIN_TEXT_PX]
        assert small == [], section.title
    assert MIN_TEXT_PX >= 9


def test_single_report_text_is_at_least_9_px_as_rendered(tmp_path):
    run = gradlens.load(states_run(tmp_path / "one.h5", decaying_loss=True))
    for section in build([run]).sections:
        assert min(px for px, _ in rendered_text_px(section)) >= MIN_TEXT_PX, section.title


def test_layer_ticks_thin_out_instead_of_shrinking(tmp_path):
    names = [f"l{i}.weight" for i in range(300)]
    run = gradlens.load(states_run(tmp_path / "wide.h5", layers=names))
    (heatmap,) = [s for s in build([run]).sections if s.kind == "heatmap"]
    ticks = [t for t in heatmap.figure.axes[0].get_yticklabels() if t.get_text()]
    assert 10 <= len(ticks) < 300 and re.fullmatch(r"l0\.weight", ticks[0].get_text())
    stride = int(ticks[1].get_text().split(".")[0][1:])
    assert [t.get_text() for t in ticks] == [f"l{i}.weight" for i in range(0, 300, stride)]
