"""What the rules read: one :class:`Evidence` per run, filled from a recorded file (:func:`from_run`) or from
the live stream of records (:class:`gradlens.doctor.live.LiveDoctor`), so one rule code serves both.

This is the doctor's only data-access seam: rules never open files. Per-layer records are
:class:`LayerSeries` ``values[N, L]`` (float64) with ``missing[N, L]`` marking cells that have no value by design
(GradStats ``nonfinite == -1``: the parameter had no ``.grad``; an UpdateRatio ratio over a zero weight norm).
Which probe feeds what: the first probe of class ``GradStats`` recording ``mean_abs`` or ``norm`` (gradients),
the first ``UpdateRatio`` probe (``ratio``, ``update_norm``, ``weight_norm``), the first probe recording
``dead_fraction`` per layer (activations, the ``activation_stats`` contract), ``DominantFlow``/cushion probes
(``science``).

**Long runs.** A probe with more than ``FULL_RECORDS`` records is read as block summaries
(:meth:`gradlens.loader.Run.summary`, ``SUMMARY_POINTS`` points: blocks of 32 records or more), never record by
record, so the doctor's cost does not grow with the run. Each block becomes one row whose step is its first
record's and whose value is the block statistic of ``BLOCK_STATISTIC`` (the one that keeps what the rules test
exact: the largest norm for sizes and spikes, so a gradient that is exactly zero over a block reads 0, and a
count of non-finite entries > 0 whenever one record had one); a block holding a non-finite value reads
non-finite (the summary's mean is), and the first ``EXACT_BLOCKS`` such blocks are read again record by record
and put back in place, so the first non-finite step and layer are exact. Record counts in the rules' thresholds
then count blocks (each of ≥ 32 records), which only makes them stricter.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from gradlens.loader.summary import summary_block
from gradlens.schema import SUMMARY_BLOCKS

GRADIENT_CLASSES = ("GradStats",)
RATIO_CLASSES = ("UpdateRatio",)
SCIENCE = {"DominantFlow": ("sigma",), "LayerCushion": ("min",), "InterlayerCushion": ("min",)}
GRADIENT_QUANTITIES = ("mean_abs", "norm", "max_abs", "nonfinite")
RATIO_QUANTITIES = ("ratio", "update_norm", "weight_norm")
ACTIVATION_QUANTITIES = ("dead_fraction", "saturated_fraction", "mean", "std")
NO_GRADIENT = -1.0  # GradStats' nonfinite value of a parameter that had no .grad at a firing
SUMMARY_POINTS = 250  # long probes are read as at least this many blocks: 10^4 records -> blocks of 32, 10^5 -> 128
FULL_RECORDS = SUMMARY_BLOCKS[0] * SUMMARY_POINTS  # longer probes are read as blocks (from here they compress)
EXACT_BLOCKS = 64  # the first blocks holding non-finite values, read again record by record
# the block statistic that stands for a block's records, per quantity (mean: the typical value; max: the largest
# value is what a rule tests, e.g. a size bound, an exactly-zero gradient, a count of non-finite entries)
BLOCK_STATISTIC = {"norm": "max", "max_abs": "max", "nonfinite": "max", "weight_norm": "max"}


@dataclass
class LayerSeries:
    """One per-layer quantity: ``values[step, layer]`` and the cells that have no value by design.

    Attributes:
        steps: recorded steps ``[N]`` (int64, increasing).
        layers: labels ``[L]`` in forward order.
        values: ``[N, L]`` float64.
        missing: ``[N, L]`` bool, True where the cell has no value by design (no gradient, ratio over 0).
    """

    steps: np.ndarray
    layers: list[str]
    values: np.ndarray
    missing: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.steps = np.asarray(self.steps, dtype=np.int64)
        self.values = np.asarray(self.values, dtype=np.float64).reshape(len(self.steps), len(self.layers))
        if self.missing is None:
            self.missing = np.zeros(self.values.shape, dtype=bool)

    @property
    def nonfinite(self) -> np.ndarray:
        """``[N, L]`` bool: NaN/±Inf cells that are not missing by design."""
        return ~np.isfinite(self.values) & ~self.missing

    def __len__(self) -> int:
        return len(self.steps)


@dataclass
class Scalar:
    """One logged scalar: ``steps[N]`` and ``values[N]`` in logging order."""

    steps: np.ndarray
    values: np.ndarray


class Event(NamedTuple):
    """One run event (``Run.events()`` row)."""

    step: int
    kind: str
    source: str
    message: str


@dataclass
class Writer:
    """Who writes a run whose status is ``running``: whether the lock's holder is alive, and who it was.

    Attributes:
        alive: True when a process holds the run's lock, False when the lock file is left by a writer that is
            gone (killed), None when there is no lock file to tell (a copied file, another machine).
        holder: the lock file's details (pid, host, time), when there is one.
    """

    alive: bool | None
    holder: dict | None = None


@dataclass
class Evidence:
    """Everything the rules may read about one run.

    Attributes:
        path, label: the run file and its short label ("" for a live run).
        meta: the run metadata (``config``, ``parameters``, ``probes``, ``clipping``, ``num_classes``, ...).
        layers: the layer table rows (name, kind, shape, params, ...), forward order.
        probes: probe name -> class.
        grads, grad_probe: gradient statistics by quantity (``mean_abs``, ``norm``, ``max_abs``,
            ``nonfinite``), and the probe they come from (None: none recorded).
        ratios, ratio_probe: UpdateRatio quantities by name.
        activations, activation_probe: activation statistics by quantity.
        science: ``(probe class, quantity)`` -> series, for σ and cushions.
        scalars: name -> :class:`Scalar`.
        events: run events, or None when they cannot be read.
        status: ``running``/``finished``/``failed``/``interrupted`` (None for a live run).
        writer: for a ``running`` file, whether its writer lives.
        last_flush, now: unix times of the last committed flush and of the diagnosis.
        loss: the scalar the user named as the training loss (None: guessed from names).
        num_classes: the class count the user stated (None: from meta or the last layer).
        live: True while training (the live engine): rules about the finished run are not applied.
        memo: per-step values a rule may keep between live checks (a record never changes once observed).
        block: records per row of the probe read in the coarsest blocks (1: every record; a long run: its
            summary block).
    """

    path: str = ""
    label: str = ""
    meta: dict = field(default_factory=dict)
    layers: list[dict] = field(default_factory=list)
    probes: dict[str, str] = field(default_factory=dict)
    grads: dict[str, LayerSeries] = field(default_factory=dict)
    grad_probe: str | None = None
    ratios: dict[str, LayerSeries] = field(default_factory=dict)
    ratio_probe: str | None = None
    activations: dict[str, LayerSeries] = field(default_factory=dict)
    activation_probe: str | None = None
    science: dict[tuple[str, str], LayerSeries] = field(default_factory=dict)
    scalars: dict[str, Scalar] = field(default_factory=dict)
    events: list[Event] | None = field(default_factory=list)
    status: str | None = None
    writer: Writer | None = None
    last_flush: float | None = None
    now: float | None = None
    loss: str | None = None
    num_classes: int | None = None
    live: bool = False
    memo: dict = field(default_factory=dict, repr=False)
    block: int = 1
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def parameters(self) -> list[dict] | None:
        """``meta["parameters"]`` (name, shape, numel, trainable, in_optimizer, ...), None when not stored."""
        parameters = self.meta.get("parameters")
        return [p for p in parameters if isinstance(p, dict)] if isinstance(parameters, list) else None

    @property
    def activation_kinds(self) -> dict[str, str]:
        """Activation label -> kind (``relu``, ``tanh``, ...) from ``meta["probes"]["activation_stats"]``."""
        probes = self.meta.get("probes")
        entry = None
        if isinstance(probes, Mapping):
            entry = probes.get(self.activation_probe or "activation_stats")
        elif isinstance(probes, list):
            entry = next((p for p in probes if isinstance(p, dict) and p.get("name") == self.activation_probe), None)
        kinds = entry.get("kinds") if isinstance(entry, Mapping) else None
        return {str(k): str(v) for k, v in kinds.items()} if isinstance(kinds, Mapping) else {}

    def setting(self, key: str) -> object:
        """A run setting: ``meta[key]``, else ``meta["config"][key]`` (where the integrations store ``clipping`` and
        ``accumulation_steps``, and users put ``num_classes``); None when neither has it."""
        if key in self.meta:
            return self.meta[key]
        config = self.meta.get("config")
        return config.get(key) if isinstance(config, Mapping) else None

    def skipped_steps(self) -> set[int]:
        """Steps the AMP gradient scaler skipped (``step_skipped`` events): their gradients overflowed."""
        return {e.step for e in self.events or () if e.kind == "step_skipped"}

    def global_norm(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(steps, G)``, G(t) = √(Σ_ℓ ‖g_ℓ(t)‖²) over the recorded parameters (a missing gradient counts 0);
        NaN where a norm is not finite and at steps the AMP scaler skipped. None without GradStats norm."""
        if "global_norm" not in self._cache:
            norm = self.grads.get("norm")
            found = None
            if norm is not None and len(norm):
                values = np.where(norm.missing, 0.0, norm.values)
                total = np.sqrt((np.where(np.isfinite(values), values, 0.0) ** 2).sum(axis=1))
                bad = norm.nonfinite.any(axis=1) | np.isin(norm.steps, list(self.skipped_steps()))
                found = (norm.steps, np.where(bad, np.nan, total))
            self._cache["global_norm"] = found
        return self._cache["global_norm"]

    def last_step(self) -> int | None:
        """The largest step of any record, scalar or event (None when nothing is recorded)."""
        ends = [int(s.steps[-1]) for s in (*self.grads.values(), *self.ratios.values(), *self.activations.values())
                if len(s)]
        ends += [int(s.steps.max()) for s in self.scalars.values() if len(s.steps)]
        ends += [e.step for e in self.events or ()]
        return max(ends) if ends else None

    def first_step(self) -> int:
        """The smallest recorded step (0 when nothing is recorded)."""
        starts = [int(s.steps[0]) for s in (*self.grads.values(), *self.ratios.values()) if len(s)]
        starts += [int(s.steps.min()) for s in self.scalars.values() if len(s.steps)]
        return min(starts) if starts else 0


def probe_classes(meta: dict) -> dict[str, str]:
    """Probe name -> class from ``meta["probes"]`` (a list of {name, class, ...})."""
    entries = meta.get("probes", [])
    if isinstance(entries, Mapping):
        entries = [{"name": k, **v} if isinstance(v, Mapping) else {"name": k} for k, v in entries.items()]
    return {str(e["name"]): str(e.get("class", "?")) for e in entries or [] if isinstance(e, Mapping) and "name" in e}


def _read(run, probe: str, quantity: str, stop: int | None) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    declared = run.quantities(probe).get(quantity)
    if declared is None or tuple(declared.axes) != ("layer",):
        return None
    steps, values, _, labels = run.array(probe, quantity, stop=stop)
    layers = list(labels.get("layer", [str(i) for i in range(values.shape[1])]))
    return np.asarray(steps), np.asarray(values, dtype=np.float64), layers


def _summarised(run, probe: str, quantity: str, stop: int | None) -> tuple | None:
    """:func:`_read` of a long run: one row per block (its first step, the ``BLOCK_STATISTIC`` of its records;
    non-finite where one record was)."""
    declared = run.quantities(probe).get(quantity)
    if declared is None or tuple(declared.axes) != ("layer",):
        return None
    summary = run.summary(probe, quantity, points=SUMMARY_POINTS, stop=stop)
    mean = np.asarray(summary.mean, dtype=np.float64)
    chosen = np.asarray(getattr(summary, BLOCK_STATISTIC.get(quantity, "mean")), dtype=np.float64)
    values = np.where(np.isfinite(mean), chosen, mean)
    labels = run.quantities(probe)[quantity].labels
    layers = list(labels.get("layer", [str(i) for i in range(values.shape[1])]))
    return np.asarray(summary.first_step), values, layers, np.asarray(summary.last_step)


def _exact_blocks(run, probe: str, read: dict, missing: np.ndarray | None, excused: set[int]) -> dict:
    """Blocks holding a non-finite value (or a non-finite count > 0) put back as their records, in place, in step
    order until one holds a non-finite cell at a step the AMP scaler did not skip (at most ``EXACT_BLOCKS``):
    the first non-finite step and layer of a long run are exact, and the scaler's overflows stay excused."""
    present = {name: got for name, got in read.items() if got is not None}
    if not present:
        return read
    first, last = next(iter(present.values()))[0], next(iter(present.values()))[3]
    bad = np.zeros(len(first), dtype=bool)
    for name, (_, values, _, _) in present.items():
        cells = ~np.isfinite(values) | (values > 0 if name == "nonfinite" else False)
        if missing is not None and missing.shape == cells.shape:
            cells &= ~missing
        bad |= cells.any(axis=1)
    exact: dict[int, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for block in np.flatnonzero(bad)[:EXACT_BLOCKS].tolist():
        exact[block] = {}
        for name in present:
            steps, values, _, _ = run.array(probe, name, start=int(first[block]), stop=int(last[block]) + 1)
            exact[block][name] = (np.asarray(steps), np.asarray(values, dtype=np.float64))
        steps, values = next(iter(exact[block].values()))
        if (~np.isfinite(values[~np.isin(steps, list(excused))])).any():
            break  # the first non-finite record the scaler did not excuse: the later blocks do not matter
    out = {}
    for name, got in read.items():
        if got is None or not exact:
            out[name] = None if got is None else got[:3]
            continue
        steps, values, cut = [], [], 0
        for block, records in exact.items():
            steps += [got[0][cut:block], records[name][0]]
            values += [got[1][cut:block], records[name][1]]
            cut = block + 1
        out[name] = (np.concatenate([*steps, got[0][cut:]]), np.concatenate([*values, got[1][cut:]]), got[2])
    return out


def read_block(records: int) -> int:
    """Records per row the doctor reads of a probe of ``records`` records: 1 up to ``FULL_RECORDS``, else the
    block of its summary (:func:`_summarised`)."""
    return 1 if records <= FULL_RECORDS else summary_block((0, records), SUMMARY_POINTS)


def _series(run, probe: str, names: tuple[str, ...], missing_from=None, excused: set[int] = frozenset()
            ) -> dict[str, LayerSeries]:
    out: dict[str, LayerSeries] = {}
    span = run.span(probe)  # every quantity up to the same step: a file still being written grows meanwhile
    stop = None if span is None else int(span[1]) + 1
    if read_block(run.n_records(probe)) > 1:
        read = {name: _summarised(run, probe, name, stop) for name in names}
        read = _exact_blocks(run, probe, read, None if missing_from is None else missing_from(read), excused)
    else:
        read = {name: _read(run, probe, name, stop) for name in names}
    missing = None if missing_from is None else missing_from(read)
    for name, got in read.items():
        if got is not None:
            steps, values, layers = got
            cells = missing if missing is not None and missing.shape == values.shape else None
            out[name] = LayerSeries(steps, layers, values, cells)
    return out


def _no_gradient(read: dict) -> np.ndarray | None:
    got = read.get("nonfinite")
    return None if got is None else got[1] == NO_GRADIENT


def _zero_weight(read: dict) -> np.ndarray | None:
    got = read.get("weight_norm")
    return None if got is None else got[1] == 0


def _scalar(run, name: str) -> Scalar:
    """One logged scalar as the loss rules read it: every value up to ``FULL_RECORDS`` of them; beyond, every k-th
    value (k = ⌈n / ``FULL_RECORDS``⌉: single values keep their noise, so the rules' medians and standard errors
    stay what they estimate), its last value, and the values of its first ``EXACT_BLOCKS`` summary blocks that
    hold a non-finite one, each at its own step (the first NaN stays exact). Costs at most ``FULL_RECORDS``
    values plus those blocks, whatever the run's length."""
    count = run.n_scalar_records(name)
    if count <= FULL_RECORDS:
        steps, values = run.scalar(name)
        return Scalar(np.asarray(steps, np.int64), np.asarray(values, np.float64))
    summary = run.scalar_summary(name, points=SUMMARY_POINTS)
    parts = [run.scalar(name, stride=-(-count // FULL_RECORDS))]
    parts.append((summary.last_step[-1:], summary.last[-1:]))
    for block in np.flatnonzero(~np.isfinite(summary.mean))[:EXACT_BLOCKS].tolist():
        steps, values = run.scalar(name, start=int(summary.first_step[block]), stop=int(summary.last_step[block]) + 1)
        bad = ~np.isfinite(values)
        parts.append((steps[bad], values[bad]))
    steps = np.concatenate([np.asarray(p[0], np.int64) for p in parts])
    values = np.concatenate([np.asarray(p[1], np.float64) for p in parts])
    steps, first = np.unique(steps, return_index=True)  # a value read twice is one value
    return Scalar(steps, values[first])


def _scalars(run) -> dict[str, Scalar]:
    """Every logged scalar, each read alone (its own records, not every name's: :func:`_scalar`)."""
    return {name: _scalar(run, name) for name in run.scalar_names()}


def _events(run) -> list[Event] | None:
    reader = getattr(run, "events", None)
    if reader is None:
        return None
    frame = reader()
    return [Event(int(s), str(k), str(src), str(m)) for s, k, src, m in
            zip(frame["step"], frame["kind"], frame["source"], frame["message"], strict=True)]


def _writer(path: str) -> Writer:
    from gradlens.lock import read_holder, writer

    holder = read_holder(path)
    live = writer(path)
    if live is not None:
        return Writer(True, live or holder)
    return Writer(False if holder is not None else None, holder)


def run_label(run) -> str:
    """A short label: the run's ``label`` in its config, else the file name without extension."""
    config = run.meta.get("config") if isinstance(run.meta.get("config"), dict) else {}
    return str(config.get("label") or os.path.splitext(os.path.basename(str(run.path)))[0])


def from_run(run, *, loss: str | None = None, num_classes: int | None = None, now: float | None = None) -> Evidence:
    """Read what the rules need from a recorded run (:class:`gradlens.loader.Run`), once per quantity."""
    meta = dict(run.meta)
    classes = probe_classes(meta)
    evidence = Evidence(
        path=str(run.path),
        label=run_label(run),
        meta=meta,
        layers=run.layers.to_dict("records") if len(run.layers) else [],
        probes={p: classes.get(p, "?") for p in run.probes},
        loss=loss,
        num_classes=num_classes,
        now=time.time() if now is None else now,
    )
    evidence.events = _events(run)

    def series(probe: str, *args) -> dict[str, LayerSeries]:
        """:func:`_series`, noting in ``evidence.block`` the coarsest block read."""
        evidence.block = max(evidence.block, read_block(run.n_records(probe)))
        return _series(run, probe, *args)

    for probe in run.probes:
        cls, quantities = evidence.probes[probe], run.quantities(probe)
        if evidence.grad_probe is None and cls in GRADIENT_CLASSES and {"mean_abs", "norm"} & set(quantities):
            evidence.grad_probe = probe
            evidence.grads = series(probe, GRADIENT_QUANTITIES, _no_gradient, evidence.skipped_steps())
        elif evidence.ratio_probe is None and cls in RATIO_CLASSES and "ratio" in quantities:
            evidence.ratio_probe = probe
            evidence.ratios = series(probe, RATIO_QUANTITIES, _zero_weight)
        elif evidence.activation_probe is None and "dead_fraction" in quantities:
            evidence.activation_probe = probe
            evidence.activations = series(probe, ACTIVATION_QUANTITIES)
        for quantity in SCIENCE.get(cls, ()):
            if (cls, quantity) not in evidence.science and quantity in quantities:
                evidence.science[(cls, quantity)] = series(probe, (quantity,)).get(quantity)
    evidence.science = {k: v for k, v in evidence.science.items() if v is not None}
    evidence.scalars = _scalars(run)
    evidence.status = run.status
    evidence.last_flush = run.last_flush
    if evidence.status == "running":
        evidence.writer = _writer(run.path)
    return evidence
