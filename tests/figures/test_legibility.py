"""What a reader of the documents sees: no text on text, no legend on a bar, axes that fit their data,
schematics at a readable size, gallery headings that say what is drawn, tables that carry their caption."""

from __future__ import annotations

import html
import itertools
import re
from pathlib import Path

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.patches import FancyBboxPatch, Rectangle

from figures.base import FigureOutput, save_table
from figures.catalogue import ITEMS
from figures.gallery import drawn_depths, shown_here, write_gallery
from figures.sc_common import accuracy_limits, grouped_bars
from figures.schematic_layout import MIN_FONT, label_overflow, visible_texts
from figures.yt_fig6 import y_scale

BARS = ("sc-fig7", "sc-fig8", "sc-fig9")
SCHEMATICS = ("yw-fig1", "yw-fig2", "sk-fig2", "yt-fig4")
IDS = ("sc-fig6", *BARS, "yt-fig6", *SCHEMATICS, "sc-tab2")
DPI = 130  # figures.base.save_figure
ROW_INCHES = 0.34  # gradlens.models.schematic._ROW: the box pitch at 1 inch per data unit


@pytest.fixture(scope="module")
def made(smoke_figures):
    """The items at smoke scale and the gallery written with them (read now: other tests rewrite it)."""
    outputs = smoke_figures(*IDS)
    return outputs, (smoke_figures.out / "index.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def outputs(made):
    """The outputs, each figure on a fresh Agg canvas (``gradlens figures`` closes them, which drops theirs)."""
    for output in made[0].values():
        if output.figure is not None:
            FigureCanvasAgg(output.figure)
    return made[0]


def overlaps(a, b, tolerance: float = 1.0) -> bool:
    """Whether two display boxes share more than ``tolerance`` pixels in both directions."""
    return min(a.x1, b.x1) - max(a.x0, b.x0) > tolerance and min(a.y1, b.y1) - max(a.y0, b.y0) > tolerance


def axes_texts(ax) -> list:
    """The texts a reader reads around and in one axes: title, axis labels, offset texts, tick labels, notes."""
    (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
    ticks = [t for t in ax.get_xticklabels() if x0 <= t.get_position()[0] <= x1]  # the ticks drawn
    ticks += [t for t in ax.get_yticklabels() if y0 <= t.get_position()[1] <= y1]
    texts = [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, ax.xaxis.offsetText,
             ax.yaxis.offsetText, *ticks, *ax.texts]
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def overlapping_texts(fig) -> list[tuple[str, str]]:
    """Pairs of visible texts of ``fig`` (every axes, and the figure title) whose boxes overlap."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for ax in fig.axes for t in axes_texts(ax)]
    if fig._suptitle is not None:
        texts.append(fig._suptitle)
    boxes = [(t, t.get_window_extent(renderer)) for t in texts]
    return [(a.get_text(), b.get_text()) for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if overlaps(ba, bb)]


# ---------------------------------------------------------------------------------------- 1. sc-fig6 titles


def test_sc_fig6_titles_and_labels_do_not_overlap(outputs):
    fig = outputs["sc-fig6"].figure
    assert overlapping_texts(fig) == []
    assert all(ax.title.get_fontsize() >= 8 for ax in fig.axes)


def test_overlap_check_sees_a_title_on_a_label():
    fig, ax = plt.subplots()
    ax.set_title("a title")
    ax.text(0.5, 1.0, "stage 1", transform=ax.transAxes, ha="center", va="bottom")
    try:
        assert overlapping_texts(fig) == [("a title", "stage 1")]
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------- 2. + 3. sc-fig7/8/9 legends and axes


@pytest.mark.parametrize("item", BARS)
def test_accuracy_bar_legend_covers_no_bar(outputs, item):
    fig = outputs[item].figure
    fig.canvas.draw()
    (ax,) = fig.axes
    legend = ax.get_legend().get_window_extent()
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert bars
    assert not [bar for bar in bars if overlaps(legend, bar.get_window_extent())]
    assert not overlaps(legend, ax.get_window_extent())  # outside the plotting area altogether


@pytest.mark.parametrize("item", BARS)
def test_accuracy_axis_is_never_negative(outputs, item):
    (ax,) = outputs[item].figure.axes
    bottom, top = ax.get_ylim()
    heights = [p.get_height() for p in ax.patches if isinstance(p, Rectangle) and np.isfinite(p.get_height())]
    assert 0 <= bottom <= min(heights) and max(heights) <= top
    assert "accuracy" in ax.get_ylabel() and (bottom == 0 or "not 0" in ax.get_ylabel())


def test_accuracy_limits_clamp_at_zero_and_hundred():
    assert accuracy_limits(-12.0, 35.0) == (0.0, pytest.approx(35 + 0.15 * 47))  # error bar below 0
    assert accuracy_limits(2.0, 15.0)[0] == 0.0  # zooming would cut little: from 0
    bottom, top = accuracy_limits(90.0, 99.5)
    assert 88 < bottom < 90 and top == 100.0
    assert accuracy_limits(91.0, 101.0)[1] == 101.0  # an error bar above 100 stays visible


def test_bars_of_low_accuracies_with_wide_spread_start_at_zero():
    fig, ax = plt.subplots()
    try:
        grouped_bars(ax, ["depth 20"], {"a": [[4.0, 36.0]], "b": [[11.0, 13.0]]}, "test accuracy (%)")
        assert ax.get_ylim()[0] == 0.0 and ax.get_ylabel() == "test accuracy (%)"
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------- 4. yt-fig6 y scale


def test_y_scale_is_log_only_over_a_decade():
    assert y_scale(np.array([2.22, 2.30, 2.36])) == "linear"
    assert y_scale(np.array([0.02, 0.5, 2.3])) == "log"
    assert y_scale(np.array([np.nan, np.nan])) == "linear"
    assert y_scale(np.array([1e-16, np.nan, 3e-14])) == "log"


def test_yt_fig6_narrow_loss_range_is_linear(outputs):
    left, right = outputs["yt-fig6"].figure.axes
    losses = np.concatenate([line.get_ydata() for line in left.get_lines()])
    assert losses.max() < 10 * losses.min()  # the smoke losses span less than a decade
    assert left.get_yscale() == "linear"
    assert right.get_ylim()[0] >= 0 or right.get_yscale() == "log"  # an absolute difference


# ------------------------------------------------------------------------------------------ 5. schematics


def node_boxes(ax) -> list[FancyBboxPatch]:
    return [p for p in ax.patches if isinstance(p, FancyBboxPatch) and p.get_zorder() == 2]


@pytest.mark.parametrize("item", SCHEMATICS)
def test_schematic_text_is_readable_and_fits(outputs, item):
    output = outputs[item]
    fig = output.figure
    fig.canvas.draw()
    sizes = [t.get_fontsize() for t in visible_texts(fig)]
    assert min(sizes) >= MIN_FONT >= 8
    assert label_overflow(fig) <= 1.0  # every box label inside its box
    rows = 0
    for ax in fig.axes:
        (y0, y1), inches = ax.get_ylim(), ax.get_window_extent().height / fig.dpi
        assert inches / (y1 - y0) >= 0.99  # at least 1 inch per data unit: box rows 0.34 in apart
        rows = max(rows, len({round(p.get_y(), 3) for p in node_boxes(ax)}))
        legend = ax.get_legend()
        if legend is not None:
            assert not [p for p in node_boxes(ax) if overlaps(legend.get_window_extent(), p.get_window_extent())]
    png = next(path for path in output.files if path.suffix == ".png")
    height = matplotlib.image.imread(png).shape[0]
    assert height >= rows * ROW_INCHES * DPI  # every box row at its natural pitch in the saved picture


# ------------------------------------------------------------------------------------------ 6. the gallery


def section(index: str, item_id: str) -> str:
    start = index.index(f"<h3 id='{item_id}'>")
    end = index.find("<h3 ", start + 1)
    return index[start:end if end > 0 else len(index)]


def test_gallery_headings_mark_the_document_and_say_what_is_drawn(made):
    outputs, index = made
    titles = {item.id: item.title for item in ITEMS}
    for item_id in IDS:
        text = section(index, item_id)
        heading = text[: text.index("</h3>")]
        assert f"document:</span> {html.escape(titles[item_id])}" in heading, item_id
        shown = shown_here(outputs[item_id].caption, drawn_depths(outputs[item_id]))
        assert f"<b>Shown here:</b> {html.escape(shown)}" in text, item_id
    sc_fig6 = section(index, "sc-fig6")
    depths = drawn_depths(outputs["sc-fig6"])
    assert depths and f"depth{'s' if len(depths) > 1 else ''} drawn: {', '.join(map(str, depths))}" in sc_fig6
    if 56 not in depths:
        assert "in place of the document&#x27;s 56" in sc_fig6
    assert "data: " in section(index, "sc-fig7") and "no data" in section(index, "yw-fig1")


def test_gallery_heading_of_a_substituted_dataset(tmp_path):
    caption = ("Accuracy vs depth. MNIST stands in for CIFAR-10 at this scale. data: MNIST: IDX files in /data: "
               "train-images.gz; scale: quick; seeds: 0, 1; epochs: 3.")
    fig, ax = plt.subplots()
    ax.set_title("ResNet, depth 26")
    try:
        write_gallery(tmp_path, {"van-fig2": FigureOutput([], caption, figure=fig)}, {}, "quick", selected={"van-fig2"})
    finally:
        plt.close(fig)
    text = section((tmp_path / "index.html").read_text(encoding="utf-8"), "van-fig2")
    assert "document:</span> left: CIFAR-10 test accuracy" in text
    assert ("<b>Shown here:</b> depth drawn: 26. data: MNIST; scale: quick; seeds: 0, 1; epochs: 3. "
            "MNIST stands in for CIFAR-10 at this scale.") in text


def test_shown_here_reads_the_describe_clause():
    assert shown_here("Loss. data: digits: sklearn; MNIST: IDX (average-pooled 28→14); scale: smoke; seeds: 0.") == (
        "data: digits, MNIST (average-pooled 28→14); scale: smoke; seeds: 0."
    )
    # a source naming how it was identified, with '; ' inside its brackets, is one source (issue 24.7: the gallery
    # showed "data: MNIST, not the official files]")
    mnist = ("MNIST: IDX files in /data/mnist-10k: train-images-idx3-ubyte.gz [identified by folder name 'mnist-10k' "
             "and content (train: digits, 100.0% of images fit a 20×20 box); not the official files]")
    assert shown_here(f"Accuracy. data: {mnist}; scale: quick; seeds: 0, 1; epochs: 15.") == (
        "data: MNIST; scale: quick; seeds: 0, 1; epochs: 15."
    )
    assert shown_here(f"Accuracy. data: {mnist}; digits: sklearn; scale: quick; seeds: 0.") == (
        "data: MNIST, digits; scale: quick; seeds: 0."
    )
    assert shown_here("Schematic. No data, no training.") == "no data (drawn from built models)."
    assert shown_here("Nothing said here.") == ""


# --------------------------------------------------------------------------------------------- 7. tables


def test_table_files_carry_caption_and_provenance(outputs):
    output = outputs["sc-tab2"]
    markdown, csv = output.files
    text = markdown.read_text(encoding="utf-8")
    assert text.startswith(output.caption + "\n\n")
    (line,) = [line for line in text.splitlines() if line.startswith("Provenance: sc-tab2;")]
    assert all(part in line for part in ("scale: smoke", "seeds: ", "data: ", "read: sc_resnet", "gradlens ", "UTC"))
    comments = [line for line in csv.read_text(encoding="utf-8").splitlines() if line.startswith("#")]
    assert comments == [f"# {output.caption}", f"# {line}"]
    pd.testing.assert_frame_equal(pd.read_csv(csv, comment="#"), output.table, check_dtype=False)


def test_save_table_without_caption_writes_the_bare_table(tmp_path):
    table = pd.DataFrame({"depth": [20, 56], "acc (%)": [91.25, np.nan], "model": ["ResNet", "SCResNet"]})
    markdown, csv = save_table(table, tmp_path, "x-tab")
    assert markdown.read_text().startswith("| depth | acc (%) | model |")
    assert not csv.read_text().startswith("#")
    markdown, csv = save_table(table, tmp_path, "x-tab", "Two lines\nof caption.")
    assert csv.read_text().startswith("# Two lines\n# of caption.\n# Provenance: x-tab; gradlens ")
    pd.testing.assert_frame_equal(pd.read_csv(csv, comment="#"), table)


def test_every_table_module_passes_its_caption():
    for path in sorted(Path(__file__).resolve().parents[2].joinpath("figures").glob("*.py")):
        for call in re.findall(r"save_table\(([^)]*)\)", path.read_text(encoding="utf-8")):
            if "table: pd.DataFrame" not in call:  # not the definition
                assert "caption" in call, f"{path.name}: save_table({call}) without the caption"
