"""Synthetic run files written through gradlens.recorder.Recorder, each with exactly the defect a test names.

``healthy_grads()`` returns per-layer gradient statistics of a well-behaved run (six layers, 40 steps, all
layers within a factor 2 of each other, no spikes); tests modify a copy to plant one defect, then
``write_run`` stores it through the real recorder, so the files follow whatever the recorder writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gradlens.probes.base import Quantity
from gradlens.recorder import Recorder

LAYERS = [f"fc{i}.weight" for i in range(6)]
STEPS = list(range(40))
STATISTICS = ("mean", "mean_abs", "norm", "max_abs", "nonfinite")


@dataclass
class ProbeData:
    """One probe's records: name, class (stored in meta["probes"]), quantities and per-step values."""

    name: str
    cls: str
    quantities: dict[str, Quantity]
    steps: list[int]
    values: dict[str, np.ndarray]  # quantity -> [N, *shape]


@dataclass
class RunData:
    probes: list[ProbeData] = field(default_factory=list)
    scalars: list[tuple[int, str, float]] = field(default_factory=list)
    parameters: list[dict] | None = None
    events: list[tuple[int, str, str, str]] = field(default_factory=list)
    label: str | None = None
    meta: dict = field(default_factory=dict)  # further meta keys (num_classes, clipping, ...)
    layers: list[dict] | None = None  # the layer table (default: one [4, 4] linear layer per probe label)


def healthy_grads(layers=LAYERS, steps=STEPS, seed: int = 0) -> dict[str, np.ndarray]:
    """GradStats-like statistics ``[N, L]``: mean |g| ≈ 1e-2 (×1..2 across layers, 10 % noise)."""
    rng = np.random.default_rng(seed)
    n, size = len(steps), len(layers)
    mean_abs = 1e-2 * np.linspace(1.0, 2.0, size)[None, :] * (1 + 0.1 * rng.standard_normal((n, size)))
    return {
        "mean": 0.1 * mean_abs,
        "mean_abs": mean_abs,
        "norm": 30 * mean_abs,
        "max_abs": 5 * mean_abs,
        "nonfinite": np.zeros((n, size)),
    }


def grad_probe(
    values: dict[str, np.ndarray],
    name: str = "grads_every_step",
    layers=LAYERS,
    steps=STEPS,
    extra: dict[str, tuple[Quantity, np.ndarray]] | None = None,
) -> ProbeData:
    quantities = {q: Quantity((len(layers),), ("layer",), {"layer": list(layers)}) for q in values}
    values = dict(values)
    for q, (quantity, array) in (extra or {}).items():
        quantities[q] = quantity
        values[q] = array
    return ProbeData(name, "GradStats", quantities, list(steps), values)


def healthy_scalars(steps=STEPS) -> list[tuple[int, str, float]]:
    rows = []
    for step in steps:
        rows.append((step, "loss", 2.3 * np.exp(-step / 15) + 0.1))
        if step % 10 == 9:
            rows.append((step, "val_acc", 0.5 + step / 100))
    return rows


def write_run(path, data: RunData) -> str:
    """Store ``data`` with the real Recorder; returns the path."""
    meta = {
        "config": {"label": data.label} if data.label else {},
        "probes": [{"name": p.name, "class": p.cls, "schedule": "synthetic"} for p in data.probes],
    }
    if data.parameters is not None:
        meta["parameters"] = data.parameters
    meta.update(data.meta)
    layer_names = list(
        dict.fromkeys(
            label.rsplit(".", 1)[0]
            for p in data.probes
            for q in p.quantities.values()
            for label in q.labels.get("layer", [])
        )
    ) or ["fc0"]
    layers = data.layers or [{"name": name, "kind": "linear", "shape": [4, 4], "params": 16} for name in layer_names]
    recorder = Recorder(path, meta=meta, flush_every=10_000, flush_seconds=3600)
    recorder.start(layers, {p.name: p.quantities for p in data.probes})
    all_steps = sorted(
        {s for p in data.probes for s in p.steps} | {s for s, _, _ in data.scalars} | {s for s, *_ in data.events}
    )
    for step in all_steps:
        for probe in data.probes:
            if step in probe.steps:
                k = probe.steps.index(step)
                recorder.record(probe.name, step, {q: np.asarray(v[k]) for q, v in probe.values.items()})
        for s, name, value in data.scalars:
            if s == step:
                recorder.log_scalars(step, **{name: value})
        for s, kind, source, message in data.events:
            if s == step:
                recorder.log_event(step, kind, source, message)
    recorder.close()
    return str(path)
