"""One group's per-layer quantity as cells ``[step, layer]`` with the state of each cell (no gradient, a
ratio over a zero norm, exactly 0, non-finite), aligned by layer name across runs: what the per-layer views
(:mod:`.layers`, :mod:`.heatmap`) draw, so that both show the same states in the same colours."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from gradlens.loader import Run
from gradlens.report.blocks import resolution
from gradlens.report.common import LayerArray, align
from gradlens.report.views.drawing import (
    NO_GRAD_COLOUR,
    NO_GRAD_LABEL,
    NONFINITE_COLOUR,
    NONFINITE_LABEL,
    UNDEFINED_LABEL,
    ZERO_COLOUR,
    ZERO_LABEL,
    band,
    quiet_mean,
)


@dataclass
class Cells:
    """One group's per-layer quantity aligned by layer name and step, with the state of every cell.

    Attributes:
        runs: the group's runs (seeds).
        steps: steps every run recorded ``[N]``.
        layers: layer names ``[L]`` (the figure's common order).
        stacked: ``[R, N, L]`` values per run.
        mean: ``[N, L]`` mean over runs (non-finite where any run is).
        nonfinite: ``[N, L]`` non-finite in some run (not explained by a missing value).
        no_grad: ``[N, L]`` no gradient in every run.
        undefined: ``[N, L]`` a ratio over a zero norm in every run.
        last_steps: ``[N]`` the last step of each point (a block of ``block`` records; ``steps`` for records).
        low, high: ``[N, L]`` the smallest minimum and the largest maximum over runs of each point.
        block: records per point (1: every record).
    """

    runs: list[Run]
    steps: np.ndarray
    layers: list[str]
    stacked: np.ndarray
    mean: np.ndarray
    nonfinite: np.ndarray
    no_grad: np.ndarray
    undefined: np.ndarray
    last_steps: np.ndarray
    low: np.ndarray
    high: np.ndarray
    block: int = 1

    def resolution(self, what: str = "point", stats: str = "min / mean / max") -> str:
        """The caption's sentence on what one point stands for ("" for single records)."""
        return resolution(self.block, self.steps, self.last_steps, what, stats)

    @property
    def zero(self) -> np.ndarray:
        """``[N, L]``: the mean over runs is exactly 0 (every run recorded 0)."""
        return (self.mean == 0) & ~self.nonfinite

    def masks(self, log: bool) -> dict[str, np.ndarray]:
        """State label -> ``[N, L]`` cells in that state; exact zeros are a state only on a log axis."""
        masks = {NO_GRAD_LABEL: self.no_grad, UNDEFINED_LABEL: self.undefined & ~self.no_grad}
        if log:
            masks[ZERO_LABEL] = self.zero
        masks[NONFINITE_LABEL] = self.nonfinite
        return masks


def group_cells(found: dict, order: Sequence[str]) -> dict[str, Cells]:
    """:class:`Cells` per group of ``found`` (:func:`group_arrays`), all in the layer order ``order``."""
    out = {}
    for label, (runs, arrays) in found.items():
        steps, layers, stacked = align(arrays, order)
        low, high = align(arrays, order, "low")[2], align(arrays, order, "high")[2]
        first = arrays[0]
        last_steps = first.last_steps[np.searchsorted(first.steps, steps)] if len(steps) else steps
        masks = {
            w: np.stack([aligned_mask(a, steps, layers, w) for a in arrays])
            for w in ("nonfinite", "no_grad", "undefined")
        }
        out[label] = Cells(
            runs,
            steps,
            layers,
            stacked,
            quiet_mean(stacked),
            masks["nonfinite"].any(axis=0),
            masks["no_grad"].all(axis=0),
            masks["undefined"].all(axis=0),
            last_steps,
            band(low)[0],
            band(high)[1],
            first.block,
        )
    return out


def present_states(cells: Iterable[Cells], log: bool) -> dict[str, str]:
    """State label -> colour, for the states some cell of ``cells`` is in (legend and caption order)."""
    colours = {
        NO_GRAD_LABEL: NO_GRAD_COLOUR,
        UNDEFINED_LABEL: NO_GRAD_COLOUR,
        ZERO_LABEL: ZERO_COLOUR,
        NONFINITE_LABEL: NONFINITE_COLOUR,
    }
    cells = list(cells)
    return {
        label: colours[label]
        for label in colours
        if any(c.masks(log).get(label, np.zeros(1, bool)).any() for c in cells)
    }


def wants_log(values: Iterable[np.ndarray]) -> bool:
    """A log axis when every finite value that is not exactly 0 is positive and there is one (zeros are marked)."""
    drawn = np.concatenate([np.ravel(v)[np.isfinite(np.ravel(v))] for v in values] + [np.zeros(0)])
    drawn = drawn[drawn != 0]
    return bool(drawn.size and (drawn > 0).all())


def layer_order(found) -> list[str]:
    """Every layer of every group, in the first run's forward order: all panels share one numbering."""
    return list(dict.fromkeys(name for _, arrays in found.values() for array in arrays for name in array.layers))


def aligned_mask(array: LayerArray, steps: np.ndarray, layers: list[str], which: str) -> np.ndarray:
    """``array``'s mask ``which`` (``nonfinite``, ``no_grad``, ``undefined``) on ``steps`` × ``layers``;
    False for a layer the array lacks."""
    mask = getattr(array, which)
    out = np.zeros((len(steps), len(layers)), dtype=bool)
    rows = np.searchsorted(array.steps, steps)
    position = {name: i for i, name in enumerate(array.layers)}
    for j, name in enumerate(layers):
        if name in position:
            out[:, j] = mask[rows, position[name]]
    return out
