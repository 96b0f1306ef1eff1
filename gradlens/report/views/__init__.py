"""The views of a report: one function per kind of record, chosen by probe class and quantity axes.

``probe_sections(groups)`` draws every probe of the runs; ``scalar_sections(groups)`` every scalar logged
with ``session.log``. ``groups`` maps a run label to the runs carrying it (seeds): each panel draws the mean
over a group's runs and, with several runs, a band from their minimum to their maximum, aligned by layer
name and step. Nothing here depends on a probe's *name*: views are chosen by the probe's class
(``meta["probes"]``) and, for classes the report does not know, by the axes of each quantity:

| axes | view |
|---|---|
| ``("layer",)`` | per-layer profile at chosen steps and a layer × step heat-map |
| ``("layer", "sample")`` (and any ``("layer", X)``) | per-layer distributions (box plots) at chosen steps |
| ``("bin",)``, ``("layer", "bin")`` + an ``("edge",)`` quantity | ridges (≤ 12 steps) or a step × bin heat-map |
| ``()`` | the value over steps |

One module per view kind: :mod:`.layers` (profiles, overlays, heat-maps, the global norm),
:mod:`.histograms` (box plots, histograms), :mod:`.scalars` (values over steps), :mod:`.findings` (the page's
text: the doctor's findings, what is not shown and why); :mod:`.probes` chooses the views of each probe and
:mod:`.drawing` holds what they share.

Non-finite values are never dropped silently: heat-map cells are red, profile layers get a red ×, curves a
red band over the steps, and every caption says where. Cells of layers without a gradient are grey.
"""

from gradlens.report.views.drawing import (
    MAX_HIST_LAYERS,
    MAX_LAYER_TICKS,
    MAX_RIDGES,
    MIN_TEXT_PX,
    NO_GRAD_COLOUR,
    NONFINITE_COLOUR,
    PAGE_WIDTH_PX,
    PNG_DPI,
    ZERO_COLOUR,
    Groups,
    Section,
    mark_nonfinite_steps,
    probe_keys,
)
from gradlens.report.views.findings import findings_html, missing_html, missing_lines
from gradlens.report.views.heatmap import heatmap_section
from gradlens.report.views.histograms import distribution_section, histogram_section
from gradlens.report.views.layers import overlay_section, profile_section, total_norm_section
from gradlens.report.views.probes import CLASS_VIEWS, generic_views, not_drawn, probe_sections
from gradlens.report.views.scalars import scalar_panels, scalar_sections, series_section

__all__ = [
    "CLASS_VIEWS",
    "MAX_HIST_LAYERS",
    "MAX_LAYER_TICKS",
    "MAX_RIDGES",
    "MIN_TEXT_PX",
    "NONFINITE_COLOUR",
    "NO_GRAD_COLOUR",
    "PAGE_WIDTH_PX",
    "PNG_DPI",
    "ZERO_COLOUR",
    "Groups",
    "Section",
    "distribution_section",
    "findings_html",
    "generic_views",
    "heatmap_section",
    "histogram_section",
    "mark_nonfinite_steps",
    "missing_html",
    "missing_lines",
    "not_drawn",
    "overlay_section",
    "probe_keys",
    "probe_sections",
    "profile_section",
    "scalar_panels",
    "scalar_sections",
    "series_section",
    "total_norm_section",
]
