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

from gradlens.loader import Run

# Probe classes whose per-layer records are statistics of parameter gradients (contract 4 of the plan).
GRADIENT_CLASSES = ("GradStats",)
RATIO_CLASSES = ("UpdateRatio",)  # records ratio = update_norm / weight_norm per parameter (contract 5)
NO_GRADIENT = -1.0  # GradStats' nonfinite value of a parameter that had no .grad at a firing

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
    """One per-layer quantity of one probe: ``values[step, layer]`` with what each cell means.

    Attributes:
        steps: recorded steps ``[N]``.
        layers: layer (parameter) names ``[L]`` in forward order.
        values: ``[N, L]`` float64.
        no_grad: ``[N, L]`` bool, True where the layer had no gradient at that firing (GradStats
            ``nonfinite == -1``); those cells are NaN by design, not non-finite values.
        undefined: ``[N, L]`` bool, True where a ratio has a zero denominator (UpdateRatio ``ratio`` with
            ``weight_norm == 0``, e.g. a zero-initialised bias): ±Inf/NaN by definition, not a defect.
    """

    steps: np.ndarray
    layers: list[str]
    values: np.ndarray
    no_grad: np.ndarray = field(default=None)  # type: ignore[assignment]
    undefined: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.no_grad is None:
            self.no_grad = np.zeros(self.values.shape, dtype=bool)
        if self.undefined is None:
            self.undefined = np.zeros(self.values.shape, dtype=bool)

    @property
    def missing(self) -> np.ndarray:
        """``[N, L]`` bool: cells with no value by design (no gradient, or a ratio over a zero norm)."""
        return self.no_grad | self.undefined

    @property
    def nonfinite(self) -> np.ndarray:
        """``[N, L]`` bool: non-finite values that are not explained by a missing gradient or a zero norm."""
        return ~np.isfinite(self.values) & ~self.missing


def layer_array(run: Run, probe: str, quantity: str) -> LayerArray:
    """The ``("layer",)`` quantity ``quantity`` of ``probe`` as a :class:`LayerArray`.

    Cells whose ``nonfinite`` is -1 are flagged ``no_grad``; UpdateRatio ratios over a zero weight norm are
    flagged ``undefined``.
    """
    steps, values, axes, labels = run.array(probe, quantity)
    if axes != ("step", "layer"):
        raise ValueError(f"{probe}/{quantity} has axes {axes}, not ('step', 'layer')")
    layers = list(labels.get("layer", [str(i) for i in range(values.shape[1])]))
    no_grad = np.zeros(values.shape, dtype=bool)
    quantities = run.quantities(probe)
    if "nonfinite" in quantities and quantities["nonfinite"].axes == ("layer",):
        flag_steps, flags, _, _ = run.array(probe, "nonfinite")
        if len(flag_steps) == len(steps):
            no_grad = np.asarray(flags, dtype=np.float64) == NO_GRADIENT
    undefined = np.zeros(values.shape, dtype=bool)
    if probe_class(run, probe) in RATIO_CLASSES and quantity == "ratio" and "weight_norm" in quantities:
        norm_steps, norms, _, _ = run.array(probe, "weight_norm")
        if len(norm_steps) == len(steps):
            undefined = np.asarray(norms, dtype=np.float64) == 0
    return LayerArray(np.asarray(steps, dtype=np.int64), layers, np.asarray(values, np.float64), no_grad, undefined)


def align(
    arrays: Sequence[LayerArray], layers: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Stack runs' arrays aligned by layer name and step: ``(steps [N], layers [L], values [R, N, L])``.

    Layers are ``layers`` when given, else the union in the first run's forward order (layers only later
    runs have are appended); steps are those every run recorded. A layer a run lacks is NaN in that run.
    """
    layers = list(layers) if layers is not None else list(dict.fromkeys(n for a in arrays for n in a.layers))
    steps = sorted(set.intersection(*(set(array.steps.tolist()) for array in arrays)))
    stacked = np.full((len(arrays), len(steps), len(layers)), np.nan)
    for r, array in enumerate(arrays):
        rows = np.searchsorted(array.steps, steps) if steps else np.zeros(0, int)
        position = {name: i for i, name in enumerate(array.layers)}
        for j, name in enumerate(layers):
            if name in position:
                stacked[r, :, j] = array.values[rows, position[name]]
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


def first_nonfinite(run: Run) -> tuple[NonFinite | None, NonFinite | None]:
    """The first non-finite probe record and the first non-finite scalar (each None when there is none).

    A probe cell counts when its value is NaN/Inf without being a missing gradient, or when a probe's
    ``nonfinite`` count is positive (the gradient had NaN/Inf entries). Ties at one step go to the first
    probe in declaration order, then the first layer in forward order.
    """
    best: NonFinite | None = None
    for probe in run.probes:
        for name, quantity in run.quantities(probe).items():
            if quantity.axes != ("layer",):
                continue
            array = layer_array(run, probe, name)
            bad = array.nonfinite | ((array.values > 0) if name == "nonfinite" else False)
            if not bad.any():
                continue
            n, layer = np.argwhere(bad)[0]
            found = NonFinite(int(array.steps[n]), array.layers[layer], f"{probe}/{name}", array.values[n, layer])
            if best is None or found.step < best.step:
                best = found
    scalars = run.scalars()
    bad = scalars[~np.isfinite(scalars["value"].to_numpy())]
    scalar = None
    if len(bad):
        row = bad.iloc[0]
        scalar = NonFinite(int(row["step"]), str(row["name"]), "scalar", float(row["value"]))
    return best, scalar


def events(run: Run):
    """``run.events()`` (step, kind, source, message) when the loader provides it, else None."""
    reader = getattr(run, "events", None)
    if reader is None:
        return None
    return reader()


def last_step(run: Run) -> int | None:
    """The largest step of any probe record or logged scalar (None when nothing is recorded)."""
    ends = []
    for probe in run.probes:
        quantities = run.quantities(probe)
        if quantities:
            steps = run.array(probe, next(iter(quantities)))[0]
            if len(steps):
                ends.append(int(np.max(steps)))
    scalars = run.scalars()
    if len(scalars):
        ends.append(int(scalars["step"].max()))
    return max(ends) if ends else None


def edges_for(quantities: dict, quantity: str) -> str | None:
    """The ``("edge",)`` quantity that belongs to histogram ``quantity`` (``hist``→``hist_edges``)."""
    edges = [name for name, q in quantities.items() if q.axes == ("edge",)]
    for name in edges:
        if name in (f"{quantity}_edges", "edges") or name.startswith(quantity):
            return name
    return edges[0] if len(edges) == 1 else None
