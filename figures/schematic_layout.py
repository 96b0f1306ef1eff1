"""Schematic figures at a legible size: every panel at its drawing's natural size, every text at least
:data:`MIN_FONT` points, every box label inside its box. Not a figure module.

``draw_schematic`` draws on an equal-aspect axes in data units meant as inches and writes its labels at fixed
point sizes, so a schematic squeezed into a figure of arbitrary size has tiny labels and, beside a taller
panel, large empty areas. :func:`fit_schematics` measures each drawing first, then places each panel at
``scale`` inches per data unit in a figure sized to hold them (columns of panels stacked top-down), raises
small fonts to :data:`MIN_FONT` and enlarges ``scale`` until the longest box label fits its box. Each panel is
cut to what it draws (``draw_schematic`` leaves wide margins for arcs and its legend) and its legend is put
beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from gradlens.models.schematic import SchematicGraph, draw_schematic

MIN_FONT = 9.0
"""Smallest font size (points, at the saved size) of any text of a schematic figure: 16 px at the 130 dpi of
the PNG files, the usual size of text on screen."""
TITLE_FONT = 11.0
TITLE_ROOM = 0.45  # inches above each panel for its title
SUPTITLE_ROOM = 0.35  # inches above the panels for the figure title
GAP = 0.3  # inches between columns and between stacked panels
MARGIN = 0.1  # inches around everything
FILL = 0.9  # the widest box label may take this fraction of its box's width
PAD = 0.08  # inches kept around a panel's content
LEGEND_GAP = 0.15  # inches between a panel and its legend


@dataclass
class Panel:
    """One schematic as measured at a scale: its content's data limits and its legend's size in inches."""

    xlim: tuple[float, float]
    ylim: tuple[float, float]
    legend_width: float
    scale: float

    @property
    def size(self) -> tuple[float, float]:
        """Width and height (inches) of the drawing, without its legend."""
        return (self.xlim[1] - self.xlim[0]) * self.scale, (self.ylim[1] - self.ylim[0]) * self.scale

    @property
    def width(self) -> float:
        """Width (inches) of the drawing and its legend beside it."""
        return self.size[0] + (self.legend_width + LEGEND_GAP if self.legend_width else 0.0)


def measure(graph: SchematicGraph, scale: float, **options: object) -> Panel:
    """Draw ``graph`` on a scratch figure at ``scale`` inches per data unit and measure what it covers: boxes,
    edges and labels (not the margins ``draw_schematic`` leaves around them, nor its legend)."""
    probe = plt.figure()
    try:
        ax = probe.add_axes((0, 0, 1, 1))
        draw_schematic(graph, ax=ax, **options)
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        probe.set_size_inches((x1 - x0) * scale, (y1 - y0) * scale)
        raise_small_fonts(probe)
        renderer = probe.canvas.get_renderer()
        drawn = [*ax.patches, *ax.lines, *(t for t in ax.texts if t.get_transform() == ax.transData)]
        content = Bbox.union([artist.get_window_extent(renderer) for artist in drawn])
        (cx0, cy0), (cx1, cy1) = ax.transData.inverted().transform(content.get_points())
        legend = ax.get_legend()
        legend_width = legend.get_window_extent(renderer).width / probe.dpi if legend else 0.0
    finally:
        plt.close(probe)
    pad = PAD / scale
    return Panel((cx0 - pad, cx1 + pad), (cy0 - pad, cy1 + pad), legend_width, scale)


def fit_schematics(
    graphs: Sequence[SchematicGraph],
    titles: Sequence[str],
    columns: Sequence[Sequence[int]] | None = None,
    *,
    suptitle: str | None = None,
    scale: float = 1.0,
    **options: object,
) -> plt.Figure:
    """One figure of schematics, panel ``i`` drawing ``graphs[i]`` titled ``titles[i]``.

    Each panel is cut to what it draws, its legend put beside it (right), and placed at ``scale`` inches per
    data unit; ``scale`` grows until the longest box label fits its box.

    Args:
        graphs, titles: the drawings and their panel titles.
        columns: panel indices per column, top to bottom (default: all panels side by side).
        suptitle: the figure's title, if any.
        scale: inches per data unit to start from.
        options: passed to ``draw_schematic`` (e.g. ``max_rows``).

    Returns:
        The figure; every text is at least :data:`MIN_FONT` points.
    """
    columns = [list(column) for column in columns] if columns else [[i] for i in range(len(graphs))]
    for _ in range(3):
        panels = [measure(graph, scale, **options) for graph in graphs]
        fig = _arrange(graphs, titles, columns, panels, suptitle, options)
        overflow = label_overflow(fig) / FILL
        if overflow <= 1.0:
            break
        plt.close(fig)
        scale *= overflow * 1.02
    return fig


def _arrange(graphs, titles, columns, panels, suptitle, options) -> plt.Figure:
    """Draw the measured panels, columns side by side, panels stacked top-down in a column."""
    widths = [max(panels[i].width for i in column) for column in columns]
    heights = [sum(panels[i].size[1] + TITLE_ROOM for i in column) + GAP * (len(column) - 1) for column in columns]
    top_room = SUPTITLE_ROOM if suptitle else 0.0
    fig_w = sum(widths) + GAP * (len(columns) - 1) + 2 * MARGIN
    fig_h = max(heights) + top_room + 2 * MARGIN
    fig = plt.figure(figsize=(fig_w, fig_h))
    left = MARGIN
    for column, width in zip(columns, widths, strict=True):
        top = fig_h - MARGIN - top_room
        for i in column:
            (w, h), panel = panels[i].size, panels[i]
            top -= TITLE_ROOM
            ax = fig.add_axes(((left + (width - panel.width) / 2) / fig_w, (top - h) / fig_h, w / fig_w, h / fig_h))
            draw_schematic(graphs[i], ax=ax, title=titles[i], **options)
            ax.set_xlim(panel.xlim)
            ax.set_ylim(panel.ylim)
            ax.title.set_fontsize(TITLE_FONT)
            if ax.get_legend():
                ax.get_legend().set_loc("upper left")
                ax.get_legend().set_bbox_to_anchor((1.0 + LEGEND_GAP / w, 1.0), transform=ax.transAxes)
            top -= h + GAP
        left += width + GAP
    if suptitle:
        fig.suptitle(suptitle, fontsize=12, y=1 - MARGIN / fig_h, va="top")
    raise_small_fonts(fig)
    return fig


def visible_texts(fig: plt.Figure) -> list[Text]:
    """Every visible, non-empty text of ``fig`` (titles, box labels, legend entries, notes, tick labels)."""
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and _shown(t)]


def _shown(text: Text) -> bool:
    """False for the texts of an axis that is switched off (``ax.axis('off')``)."""
    axes = text.axes
    if axes is None or axes.axison:
        return True
    return text not in (*axes.get_xticklabels(), *axes.get_yticklabels(), axes.xaxis.label, axes.yaxis.label,
                        axes.xaxis.offsetText, axes.yaxis.offsetText)


def raise_small_fonts(fig: plt.Figure, minimum: float = MIN_FONT) -> None:
    """Set every visible text of ``fig`` smaller than ``minimum`` points to ``minimum``."""
    for text in visible_texts(fig):
        if text.get_fontsize() < minimum:
            text.set_fontsize(minimum)


def label_overflow(fig: plt.Figure) -> float:
    """Largest ratio of a box label's width to the width of the box it is written in (0 without labels):
    at most 1 when every label fits inside its box."""
    renderer = fig.canvas.get_renderer()
    worst = 0.0
    for ax in fig.axes:
        nodes = [p for p in ax.patches if isinstance(p, FancyBboxPatch) and p.get_zorder() == 2]  # not the shading
        boxes = [p.get_window_extent(renderer) for p in nodes]
        for text in ax.texts:
            x, y = text.get_transform().transform(text.get_position())
            inside = [box for box in boxes if box.contains(x, y)]
            if inside:
                worst = max(worst, text.get_window_extent(renderer).width / min(b.width for b in inside))
    return worst
