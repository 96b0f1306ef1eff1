"""What every view of a report needs: run labels, probe classes, layer names, aligned arrays, gaps.

Nothing here draws. Views (``gradlens.report.views``) and the doctor (``gradlens.doctor``) read a run only
through these helpers, so both see the same numbers: per-layer arrays ``[step, layer]`` aligned by layer
*name* across runs, the layers that had no gradient (GradStats ``nonfinite == -1``), the frozen parameters
(``meta["parameters"]`` with ``trainable`` false) and the first non-finite value of the run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gradlens.loader import Run, Summary, summarise
from gradlens.report.blocks import Stream, block_for

# Probe classes whose per-layer records are statistics of parameter gradients (contract 4 of the plan).
GRADIENT_CLASSES = ("GradStats",)
RATIO_CLASSES = ("UpdateRatio",)  # records ratio = update_norm / weight_norm per parameter (contract 5)
NO_GRADIENT = -1.0  # GradStats' nonfinite value of a parameter that had no .grad at a firing
# Blocks per stream when searching the first non-finite value: a coarse look, then the records of one block.
FIND_POINTS = 64

# Long module-name words and their short forms (transformer names: encoder.layer.0.attention.self.query).
ABBREVIATIONS = {
    "encoder": "enc",
    "decoder": "dec",
    "attention": "attn",
    "intermediate": "inter",
    "embeddings": "emb",
    "embedding": "emb",
    "output": "out",
    "transformer": "tf",
    "blocks": "b",
    "block": "b",
    "layers": "l",
    "layer": "l",
    "classifier": "cls",
    "LayerNorm": "ln",
    "layer_norm": "ln",
    "dense": "dense",
}


def run_label(run: Run) -> str:
    """A short label: the run's ``label`` in its config, else the file name without extension."""
    return str(run.meta.get("config", {}).get("label") or os.path.splitext(os.path.basename(run.path))[0])


def describe(run: Run) -> str:
    """One line stating what the run is: model, dataset, scale, seed, epochs (from its stored config)."""
    config = run.meta.get("config", {})
    parts = [f"{key}={config[key]}" for key in ("model", "dataset", "scale", "seed", "epochs") if key in config]
    model = run.meta.get("model", {})
    if model:
        parts.append(
            f"{model.get('class', '?')} with {model.get('parameters', '?')} parameters ({model.get('dtype', '?')})"
        )
    return f"{run_label(run)}: " + (", ".join(parts) or "no configuration stored")


def probe_class(run: Run, probe: str) -> str:
    """The class that recorded ``probe`` (``meta["probes"]``), or ``"?"`` when the file does not say."""
    for entry in run.meta.get("probes", []) or []:
        if isinstance(entry, dict) and entry.get("name") == probe:
            return str(entry.get("class", "?"))
    return "?"


def probe_schedule(run: Run, probe: str) -> str:
    """The schedule description of ``probe`` stored in ``meta["probes"]`` ("" when absent)."""
    for entry in run.meta.get("probes", []) or []:
        if isinstance(entry, dict) and entry.get("name") == probe:
            return str(entry.get("schedule", ""))
    return ""


def probes_of_class(run: Run, classes: Sequence[str]) -> list[str]:
    """Names of the run's probes recorded by one of ``classes``, in declaration order."""
    return [probe for probe in run.probes if probe_class(run, probe) in classes]


def _abbreviate_words(name: str) -> str:
    parts = name.split(".")
    out: list[str] = []
    index = 0
    while index < len(parts):
        word = ABBREVIATIONS.get(parts[index], parts[index])
        # "layer.0" -> "l0": a container word followed by its index
        if index + 1 < len(parts) and parts[index + 1].isdigit() and parts[index] in ABBREVIATIONS:
            out.append(f"{word}{parts[index + 1]}")
            index += 2
            continue
        out.append(word)
        index += 1
    return ".".join(out)


def short_names(names: Sequence[str], width: int = 30) -> list[str]:
    """Labels for long (transformer) parameter names that keep what tells them apart.

    Only when some name is longer than ``width``: common words are shortened in every name
    (``encoder.layer.0.attention`` → ``enc.l0.attn``), a first component shared by most names (the model's
    root, ``bert.``) is dropped from all of them, a label still longer than ``width`` loses leading
    components while the labels stay distinct (the distinguishing tail, ``enc.l0.attn.self.query.weight``),
    and is cut in the middle with ``…`` as a last resort. Distinct names always get distinct labels (else the
    full names are returned).
    """
    names = [str(n) for n in names]
    if all(len(n) <= width for n in names):
        return names
    labels = [_abbreviate_words(n) for n in names]
    roots = [label.split(".", 1)[0] for label in labels if "." in label]
    if roots:
        root = max(set(roots), key=roots.count)
        if roots.count(root) > len(labels) / 2:
            labels = [label[len(root) + 1 :] if label.startswith(root + ".") else label for label in labels]
    for i, label in enumerate(labels):
        parts = label.split(".")
        while len(".".join(parts)) > width and len(parts) > 1:
            candidate = ".".join(parts[1:])
            others = [other for j, other in enumerate(labels) if j != i]
            if any(other == candidate or other.endswith("." + candidate) for other in others):
                break
            parts = parts[1:]
        label = ".".join(parts)
        if len(label) > width:
            keep = width - 1
            label = label[: keep // 2] + "…" + label[-(keep - keep // 2) :]
        labels[i] = label
    return labels if len(set(labels)) == len(set(names)) else names


def chosen_steps(steps: Sequence[int], count: int = 4, include: Sequence[int] = ()) -> list[int]:
    """``count`` recorded steps spread log-uniformly from the first to the last (always both ends).

    Steps in ``include`` that were recorded are added (the report adds the first non-finite step and the
    one before it, so a profile never silently ends where values stop being finite).
    """
    steps = sorted(set(int(s) for s in steps))
    if not steps:
        return []
    picked = set(steps) if len(steps) <= count else set()
    if len(steps) > count:
        span = steps[-1] - steps[0]
        targets = np.unique(np.round(np.geomspace(1, span + 1, count) - 1).astype(int) + steps[0])
        picked = {min(steps, key=lambda s, t=t: abs(s - t)) for t in targets} | {steps[0], steps[-1]}
    recorded = set(steps)
    return sorted(picked | {int(s) for s in include if int(s) in recorded})


@dataclass
class LayerArray:
    """One per-layer quantity of one probe: ``values[point, layer]`` with what each cell means.

    A point is one record (``block`` 1) or a block of ``block`` consecutive records
    (:mod:`gradlens.report.blocks`): then ``values`` is the block's mean, ``low``/``high`` its min and max.

    Attributes:
        steps: the step of each point's first record ``[N]``.
        layers: layer (parameter) names ``[L]`` in forward order.
        values: ``[N, L]`` float64.
        no_grad: ``[N, L]`` bool, True where the layer had no gradient at a record of the point (GradStats
            ``nonfinite == -1``) and no record of it had NaN/Inf entries; its value is NaN by design.
        undefined: ``[N, L]`` bool, True where a ratio has a zero denominator at a record of the point
            (UpdateRatio ``ratio`` with ``weight_norm == 0``, e.g. a zero-initialised bias).
        last_steps: the step of each point's last record ``[N]`` (``steps`` for single records).
        low, high: ``[N, L]`` the points' min and max (``values`` for single records).
        block: records per point (1: every record).
    """

    steps: np.ndarray
    layers: list[str]
    values: np.ndarray
    no_grad: np.ndarray = field(default=None)  # type: ignore[assignment]
    undefined: np.ndarray = field(default=None)  # type: ignore[assignment]
    last_steps: np.ndarray = field(default=None)  # type: ignore[assignment]
    low: np.ndarray = field(default=None)  # type: ignore[assignment]
    high: np.ndarray = field(default=None)  # type: ignore[assignment]
    block: int = 1

    def __post_init__(self) -> None:
        if self.no_grad is None:
            self.no_grad = np.zeros(self.values.shape, dtype=bool)
        if self.undefined is None:
            self.undefined = np.zeros(self.values.shape, dtype=bool)
        if self.last_steps is None:
            self.last_steps = self.steps
        if self.low is None:
            self.low = self.values
        if self.high is None:
            self.high = self.values

    @property
    def missing(self) -> np.ndarray:
        """``[N, L]`` bool: cells with no value by design (no gradient, or a ratio over a zero norm)."""
        return self.no_grad | self.undefined

    @property
    def nonfinite(self) -> np.ndarray:
        """``[N, L]`` bool: non-finite values that are not explained by a missing gradient or a zero norm."""
        return ~np.isfinite(self.values) & ~self.missing


def _points(run: Run, probe: str, quantity: str, block: int, steps) -> Summary:
    """``quantity``'s blocks of ``block`` records, or (``steps`` given) its records at those steps."""
    if steps is None:
        return Stream(run, probe, quantity).blocks(block)
    parts = [run.array(probe, quantity, start=int(s), stop=int(s) + 1)[:2] for s in steps]
    found = np.concatenate([p[0] for p in parts]).astype(np.int64) if parts else np.zeros(0, np.int64)
    values = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0,) + run.quantities(probe)[quantity].shape)
    return summarise(found, values, 0, 1)


def layer_array(run: Run, probe: str, quantity: str, block: int = 1, steps=None) -> LayerArray:
    """The ``("layer",)`` quantity ``quantity`` of ``probe`` as a :class:`LayerArray`: every record (``block``
    1), blocks of ``block`` records (:class:`gradlens.report.blocks.Stream`), or the records at ``steps``.

    Cells where a record's ``nonfinite`` is -1 (and none is > 0) are flagged ``no_grad``; UpdateRatio ratios
    where a record's weight norm is 0 are flagged ``undefined``.
    """
    _, _, axes, labels = run.array(probe, quantity, stop=-1)  # no record: axes and layer labels
    if axes != ("step", "layer"):
        raise ValueError(f"{probe}/{quantity} has axes {axes[1:]}, not ('layer',)")
    points = _points(run, probe, quantity, block, steps)
    shape = points.mean.shape
    layers = list(labels.get("layer", [str(i) for i in range(shape[1])]))
    quantities = run.quantities(probe)
    no_grad = np.zeros(shape, dtype=bool)
    if quantity != "nonfinite" and "nonfinite" in quantities and quantities["nonfinite"].axes == ("layer",):
        flags = _points(run, probe, "nonfinite", block, steps)
        if flags.mean.shape == shape:
            no_grad = (np.asarray(flags.min, np.float64) == NO_GRADIENT) & (np.asarray(flags.max, np.float64) <= 0)
    elif quantity == "nonfinite":
        no_grad = (np.asarray(points.min, np.float64) == NO_GRADIENT) & (np.asarray(points.max, np.float64) <= 0)
    undefined = np.zeros(shape, dtype=bool)
    if probe_class(run, probe) in RATIO_CLASSES and quantity == "ratio" and "weight_norm" in quantities:
        norms = _points(run, probe, "weight_norm", block, steps)
        if norms.mean.shape == shape:
            undefined = np.asarray(norms.min, np.float64) == 0
    return LayerArray(
        points.first_step,
        layers,
        np.asarray(points.mean, np.float64),
        no_grad,
        undefined,
        points.last_step,
        np.asarray(points.min, np.float64),
        np.asarray(points.max, np.float64),
        block,
    )


def align(
    arrays: Sequence[LayerArray], layers: Sequence[str] | None = None, what: str = "values"
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Stack runs' arrays aligned by layer name and step: ``(steps [N], layers [L], values [R, N, L])``.

    Layers are ``layers`` when given, else the union in the first run's forward order (layers only later
    runs have are appended); steps are those every run recorded. A layer a run lacks is NaN in that run.
    ``what`` stacks another field of the arrays (``low``, ``high``).
    """
    layers = list(layers) if layers is not None else list(dict.fromkeys(n for a in arrays for n in a.layers))
    steps = sorted(set.intersection(*(set(array.steps.tolist()) for array in arrays)))
    stacked = np.full((len(arrays), len(steps), len(layers)), np.nan)
    for r, array in enumerate(arrays):
        rows = np.searchsorted(array.steps, steps) if steps else np.zeros(0, int)
        position = {name: i for i, name in enumerate(array.layers)}
        values = getattr(array, what)
        for j, name in enumerate(layers):
            if name in position:
                stacked[r, :, j] = values[rows, position[name]]
    return np.asarray(steps, dtype=np.int64), layers, stacked


def frozen_parameters(run: Run) -> list[dict] | None:
    """Parameters stored with ``trainable`` false (``meta["parameters"]``); None when the file lists none."""
    parameters = run.meta.get("parameters")
    if not isinstance(parameters, list):
        return None
    return [p for p in parameters if isinstance(p, dict) and p.get("trainable") is False]


@dataclass(frozen=True)
class NonFinite:
    """Where a run first recorded a non-finite value.

    Attributes:
        step: the optimizer step.
        where: the layer (parameter) name, or the scalar's name.
        quantity: ``probe/quantity`` or ``scalar``.
        value: what was recorded (NaN, ±Inf, or a non-finite-entry count).
    """

    step: int
    where: str
    quantity: str
    value: float

    def __str__(self) -> str:
        return f"step {self.step}, {self.where}, {self.quantity} = {self.value:g}"


def _first_bad(array: LayerArray, counts: bool) -> tuple[int, int] | None:
    """(point, layer) of the first bad cell: non-finite, or (``counts``) a positive NaN/Inf-entry count."""
    bad = array.nonfinite | ((array.high > 0) if counts else False)
    if not bad.any():
        return None
    n, layer = np.argwhere(bad)[0]
    return int(n), int(layer)


@dataclass(frozen=True)
class FirstBad:
    """The first bad cell of a per-layer quantity, found in a :class:`LayerArray` of blocks and located
    exactly in the records of its block.

    Attributes:
        records: the records read (every record of the first bad block, or the array itself for records).
        row, layer: the bad cell in ``records``.
        before: the step of the record before it (None for the run's first record).
    """

    records: LayerArray
    row: int
    layer: int
    before: int | None

    @property
    def step(self) -> int:
        return int(self.records.steps[self.row])


def first_bad(run: Run, probe: str, quantity: str, coarse: LayerArray, counts: bool = False) -> FirstBad | None:
    """The first non-finite cell (with ``counts``: or positive count) of ``quantity`` whose points ``coarse``
    holds: its block's records are read to find its exact step and layer."""
    found = _first_bad(coarse, counts)
    if found is None:
        return None
    k, layer = found
    if coarse.block == 1:
        return FirstBad(coarse, k, layer, int(coarse.steps[k - 1]) if k else None)
    steps = run.steps(probe, start=int(coarse.steps[k]), stop=int(coarse.last_steps[k]) + 1)
    records = layer_array(run, probe, quantity, steps=steps)
    row, layer = _first_bad(records, counts) or (0, layer)
    before = int(records.steps[row - 1]) if row else (int(coarse.last_steps[k - 1]) if k else None)
    return FirstBad(records, row, layer, before)


def first_nonfinite(run: Run) -> tuple[NonFinite | None, NonFinite | None]:
    """The first non-finite probe record and the first non-finite scalar (each None when there is none).

    A probe cell counts when its value is NaN/Inf without being a missing gradient, or when a probe's
    ``nonfinite`` count is positive (the gradient had NaN/Inf entries). Ties at one step go to the first
    probe in declaration order, then the first layer in forward order. The search reads at most
    ``FIND_POINTS`` blocks per stream (:mod:`gradlens.report.blocks`), then the records of the first block that
    holds a non-finite value.
    """
    best: NonFinite | None = None
    for probe in run.probes:
        records = run.n_records(probe)
        if not records:  # declared, nothing committed yet (a live run)
            continue
        block = block_for(records, FIND_POINTS)
        for name, quantity in run.quantities(probe).items():
            if quantity.axes != ("layer",):
                continue
            bad = first_bad(run, probe, name, layer_array(run, probe, name, block), counts=name == "nonfinite")
            if bad is not None and (best is None or bad.step < best.step):
                value = float(bad.records.values[bad.row, bad.layer])
                best = NonFinite(bad.step, bad.records.layers[bad.layer], f"{probe}/{name}", value)
    scalar = None
    for name in run.scalar_names():
        stream = Stream(run, None, name)
        summary = stream.blocks(block_for(stream.count(), FIND_POINTS))
        bad = np.flatnonzero(~np.isfinite(summary.mean))
        if not len(bad):
            continue
        k = int(bad[0])
        steps, values = run.scalar(name, start=int(summary.first_step[k]), stop=int(summary.last_step[k]) + 1)
        i = int(np.flatnonzero(~np.isfinite(values))[0])
        if scalar is None or int(steps[i]) < scalar.step:
            scalar = NonFinite(int(steps[i]), name, "scalar", float(values[i]))
    return best, scalar


def events(run: Run):
    """``run.events()`` (step, kind, source, message) when the loader provides it, else None."""
    reader = getattr(run, "events", None)
    if reader is None:
        return None
    return reader()


def last_step(run: Run) -> int | None:
    """The largest step of any probe record or logged scalar (None when nothing is recorded): counters and
    each scalar's last stored block only, whatever the run's length."""
    ends = [span[1] for probe in run.probes if (span := run.span(probe)) is not None]
    for name in run.scalar_names():
        summary = run.scalar_summary(name, points=1)
        if len(summary.last_step):
            ends.append(int(summary.last_step[-1]))
    return max(ends) if ends else None


def edges_for(quantities: dict, quantity: str) -> str | None:
    """The ``("edge",)`` quantity that belongs to histogram ``quantity`` (``hist``→``hist_edges``)."""
    edges = [name for name, q in quantities.items() if q.axes == ("edge",)]
    for name in edges:
        if name in (f"{quantity}_edges", "edges") or name.startswith(quantity):
            return name
    return edges[0] if len(edges) == 1 else None
