"""Which views a probe gets: by its class (``meta["probes"]``) for the classes the report knows, else by the
axes of each quantity (see :mod:`gradlens.report.views`); and what is recorded but has no view."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gradlens.report.blocks import Stream, block_for
from gradlens.report.common import GRADIENT_CLASSES, frozen_parameters
from gradlens.report.views.drawing import Groups, Section, matched_probe, probe_keys
from gradlens.report.views.exponents import exponent_section
from gradlens.report.views.heatmap import heatmap_section
from gradlens.report.views.histograms import distribution_section, histogram_section
from gradlens.report.views.layers import overlay_section, profile_section, total_norm_section
from gradlens.report.views.scalars import series_section


def _declared(groups: Groups, key) -> tuple[str, str, dict]:
    """(probe names joined, class, quantities) of ``key`` from the first run that has it."""
    names = []
    quantities: dict = {}
    for runs in groups.values():
        for run in runs:
            probe = matched_probe(run, key)
            if probe is not None:
                names.append(probe)
                quantities = quantities or run.quantities(probe)
    return " / ".join(dict.fromkeys(names)), key[0], quantities


def _gradient_views(groups: Groups, key, heading: str, quantities: dict) -> tuple[list, set]:
    main = (
        "mean_abs"
        if "mean_abs" in quantities
        else next((n for n, q in quantities.items() if q.axes == ("layer",) and n != "nonfinite"), None)
    )
    sections = []
    drawn = {"nonfinite"}  # its -1 (no gradient) and >0 (NaN/Inf entries) are drawn as grey/red cells
    if main is not None:
        label = f"{main.replace('_', ' ')} of the gradient"
        sections += [
            overlay_section(groups, key, main, f"Runs overlaid: {heading}, per-layer {label}", label),
            profile_section(groups, key, main, f"{heading}: per-layer {label} at chosen steps", label),
            heatmap_section(groups, key, main, f"{heading}: layer × step heat-map", label),
        ]
        drawn.add(main)
    if "norm" in quantities:
        sections.append(total_norm_section(groups, key))
        drawn.add("norm")
    if "exp_hist" in quantities:
        sections.append(exponent_section(groups, key, f"{heading}: exponent histograms of the gradient per layer"))
        drawn |= {"exp_hist", "exp_zero", "exp_nonfinite"}
    frozen = sorted(
        {str(p.get("name")) for runs in groups.values() for run in runs for p in frozen_parameters(run) or []}
    )
    profiles = [section for section in sections if section is not None and section.kind == "profile"]
    if frozen and profiles:
        note = f" Frozen parameters (requires_grad False, not measured, not drawn): {', '.join(frozen)}."
        profiles[0].caption += note
    return sections, drawn


def _update_ratio_views(groups: Groups, key, heading: str, quantities: dict) -> tuple[list, set]:
    if "ratio" not in quantities:
        return [], set()
    label = "update-to-weight ratio ‖Δw‖/‖w‖"
    return [
        profile_section(groups, key, "ratio", f"{heading}: {label} per layer at chosen steps", label, log=True),
        heatmap_section(groups, key, "ratio", f"{heading}: {label}, layer × step", label),
    ], {"ratio"}


def _sigma_views(groups: Groups, key, heading: str, quantities: dict) -> tuple[list, set]:
    if "sigma" not in quantities:
        return [], set()
    label = "σ (fraction of channels with dominant flow)"
    return [
        profile_section(
            groups, key, "sigma", f"{heading}: σ per layer at chosen steps", label, log=False, ylim=(-0.02, 1.02)
        ),
        heatmap_section(groups, key, "sigma", f"{heading}: σ, layer × step", "σ", log=False),
    ], {"sigma", "nonfinite"}


def _cushion_views(groups: Groups, key, heading: str, quantities: dict) -> tuple[list, set]:
    if "mu" not in quantities:
        return [], set()
    return [distribution_section(groups, key, "mu", f"{heading}: cushion μ per layer over steps", "cushion μ")], {
        "mu",
        "nonfinite",
    }


# Known probe classes -> which of their quantities get which view. Everything else: generic, by axes.
CLASS_VIEWS: dict[str, Callable[[Groups, tuple, str, dict], tuple[list, set]]] = {
    "GradStats": _gradient_views,
    "UpdateRatio": _update_ratio_views,
    "DominantFlow": _sigma_views,
    "LayerCushion": _cushion_views,
    "InterlayerCushion": _cushion_views,
}


def generic_views(groups: Groups, key, heading: str, quantities: dict, skip: set) -> list[Section | None]:
    """Views for every quantity not in ``skip``, chosen by its axes alone (see the module docstring)."""
    sections: list[Section | None] = []
    scalars = []
    for name, q in quantities.items():
        if name in skip or q.axes == ("edge",):
            continue
        pretty = name.replace("_", " ")
        if q.axes == ():
            scalars.append(name)
        elif q.axes == ("layer",):
            sections.append(
                profile_section(groups, key, name, f"{heading}: {pretty} per layer at chosen steps", pretty)
            )
            sections.append(
                heatmap_section(
                    groups,
                    key,
                    name,
                    f"{heading}: {pretty}, layer × step",
                    pretty,
                    log=_all_positive(groups, key, name),
                )
            )
        elif q.axes[-1] == "bin" and len(q.axes) <= 2:
            sections.append(histogram_section(groups, key, name, f"{heading}: histogram {pretty}"))
        elif len(q.axes) == 2 and q.axes[0] == "layer":
            sections.append(distribution_section(groups, key, name, f"{heading}: {pretty} per layer", pretty))
        else:
            sections.append(None)
    if scalars:
        sections.append(series_section(groups, key, scalars, f"{heading}: per-record values"))
    return sections


def _all_positive(groups: Groups, key, quantity: str) -> bool:
    """Whether every finite value of ``quantity`` in every run is > 0 (read from blocks: their minima)."""
    for runs in groups.values():
        for run in runs:
            probe = matched_probe(run, key)
            if probe is not None and quantity in run.quantities(probe):
                stream = Stream(run, probe, quantity)
                low = np.asarray(stream.blocks(block_for(stream.count())).min, dtype=np.float64)
                finite = low[np.isfinite(low)]
                if finite.size == 0 or (finite <= 0).any():
                    return False
    return True


def not_drawn(quantities: dict, drawn: set) -> list[str]:
    """Quantities that no view covers (axes the report has no view for)."""
    out = []
    for name, q in quantities.items():
        if name in drawn or q.axes == ("edge",) or q.axes in ((), ("layer",)):
            continue
        if q.axes[-1] == "bin" or (len(q.axes) == 2 and q.axes[0] == "layer"):
            continue
        out.append(f"{name} {list(q.axes)}")
    return out


def probe_sections(groups: Groups) -> tuple[list[Section], list[str]]:
    """Sections for every probe of every run, and the quantities recorded but not drawn (with axes)."""
    runs = [run for group in groups.values() for run in group]
    sections: list[Section] = []
    undrawn: list[str] = []
    for key in probe_keys(runs):
        names, cls, quantities = _declared(groups, key)
        heading = f"{names} ({cls})" if cls != "?" else f"{names} (class not stored)"
        chosen, drawn = CLASS_VIEWS.get(cls, lambda *a: ([], set()))(groups, key, heading, quantities)
        if cls in GRADIENT_CLASSES:
            drawn |= {n for n in quantities if n.startswith("hist_") and quantities[n].axes in ((), ("layer",))}
        # Class views draw the main quantities; every other quantity still gets the view its axes call for,
        # except the statistics a class view already summarises (listed in the caption instead).
        summarised = {n for n, q in quantities.items() if q.axes in ((), ("layer",))} if chosen else set()
        rest = generic_views(groups, key, heading, quantities, drawn | summarised)
        found = [s for s in [*chosen, *rest] if s is not None]
        for section in found:
            section.probe = section.probe or names
        if not found:
            undrawn.append(f"{names} (no records committed yet)")
            continue
        if chosen and summarised - drawn:
            target = next((section for section in found if section.kind == "profile"), found[0])
            target.caption += (
                " Also recorded per layer (see `gradlens export`): " + ", ".join(sorted(summarised - drawn)) + "."
            )
        sections += found
        undrawn += [f"{names}/{item}" for item in not_drawn(quantities, drawn)]
    return sections, undrawn
