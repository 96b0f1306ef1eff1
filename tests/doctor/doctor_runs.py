"""Synthetic runs for the doctor's tests, written through the real Recorder (tests/synthetic_runs.py): a healthy
GradStats run plus what a rule needs planted (activation statistics of the ``activation_stats`` contract,
update ratios, clip scalars, parameter metadata with ``in_optimizer``, a class count)."""

from __future__ import annotations

import numpy as np
from synthetic_runs import LAYERS, STEPS, ProbeData, RunData, grad_probe, healthy_grads, healthy_scalars, write_run

import gradlens
from gradlens.probes.base import Quantity

ACTIVATIONS = ["act0", "act1", "act2"]


def layer_quantities(names, labels) -> dict[str, Quantity]:
    return {q: Quantity((len(labels),), ("layer",), {"layer": list(labels)}) for q in names}


def activation_probe(dead=None, saturated=None, labels=ACTIVATIONS, steps=STEPS) -> ProbeData:
    """The ``activation_stats`` contract: dead/saturated fractions ``[N, L]`` (zeros by default), mean, std."""
    shape = (len(steps), len(labels))
    values = {
        "dead_fraction": np.zeros(shape) if dead is None else np.asarray(dead, float),
        "saturated_fraction": np.zeros(shape) if saturated is None else np.asarray(saturated, float),
        "mean": np.full(shape, 0.4),
        "std": np.full(shape, 0.6),
    }
    return ProbeData("activation_stats", "ActivationStats", layer_quantities(values, labels), list(steps), values)


def ratio_probe(ratio, update=None, labels=LAYERS, steps=STEPS) -> ProbeData:
    ratio = np.asarray(ratio, float)
    values = {"update_norm": ratio * 2 if update is None else np.asarray(update, float),
              "weight_norm": np.full_like(ratio, 2.0), "ratio": ratio}
    return ProbeData("upd", "UpdateRatio", layer_quantities(values, labels), list(steps), values)


def parameters(frozen=(), outside=(), names=LAYERS, shape=(4, 4)) -> list[dict]:
    """``meta["parameters"]`` rows (module = name without ``.weight``, kind linear, 16 values each)."""
    return [{"name": n, "module": n.rsplit(".", 1)[0], "kind": "linear", "shape": list(shape),
             "numel": int(np.prod(shape)), "trainable": n not in frozen, "in_optimizer": n not in outside}
            for n in names]


def write(tmp_path, name="run", grads=None, probes=(), scalars=None, meta_probes=None, **changes):
    """A run with GradStats (healthy unless ``grads``), extra probes, the loss (healthy unless ``scalars``)."""
    data = RunData(probes=[grad_probe(healthy_grads() if grads is None else grads), *probes],
                   scalars=healthy_scalars() if scalars is None else scalars)
    for key, value in changes.items():
        setattr(data, key, value)
    return write_run(tmp_path / f"{name}.h5", data)


def load(path):
    return gradlens.load(path)


def by_rule(findings, rule):
    return [f for f in findings if f.rule == rule]


def loud(findings):
    """Warnings and severe findings (a healthy run has none)."""
    return [f for f in findings if f.severity != "info"]


__all__ = ["ACTIVATIONS", "LAYERS", "STEPS", "activation_probe", "by_rule", "healthy_grads", "healthy_scalars",
           "layer_quantities", "load", "loud", "parameters", "probes_meta", "ratio_probe", "write"]


def probes_meta(probes, kinds: dict[str, str]) -> list[dict]:
    """``meta["probes"]`` for ``probes`` with GradStats first and the activation kinds on ``activation_stats``."""
    entries = [{"name": "grads_every_step", "class": "GradStats", "schedule": "synthetic"}]
    for p in probes:
        entry = {"name": p.name, "class": p.cls, "schedule": "synthetic"}
        if p.name == "activation_stats":
            entry["kinds"] = kinds
        entries.append(entry)
    return entries
