"""The doctor's cost: load + diagnose of a long synthetic run (10⁴ steps × 150 parameters, GradStats and
UpdateRatio at every step, the loss logged), and the time of one live check at 150 parameters."""

from __future__ import annotations

import time

import numpy as np

from gradlens.probes.base import Quantity
from gradlens.recorder import Recorder

GRADIENT_QUANTITIES = ("mean", "mean_abs", "norm", "max_abs", "nonfinite")
RATIO_QUANTITIES = ("update_norm", "weight_norm", "ratio")


def _labels(parameters: int) -> list[str]:
    return [f"blocks.{i // 2}.fc.{'weight' if i % 2 == 0 else 'bias'}" for i in range(parameters)]


def _records(step: int, parameters: int, rng: np.random.Generator) -> tuple[dict, dict]:
    mean_abs = 1e-2 * (1 + 0.1 * rng.standard_normal(parameters))
    grads = {"mean": 0.1 * mean_abs, "mean_abs": mean_abs, "norm": 30 * mean_abs, "max_abs": 5 * mean_abs,
             "nonfinite": np.zeros(parameters)}
    weight = np.full(parameters, 5.0)
    update = weight * 1e-3 * (1 + 0.1 * rng.standard_normal(parameters))
    return grads, {"update_norm": update, "weight_norm": weight, "ratio": update / weight}


def write_long_run(path: str, steps: int = 10_000, parameters: int = 150) -> None:
    """A healthy run of ``steps`` records of ``parameters`` parameters, written through the Recorder."""
    rng = np.random.default_rng(0)
    labels = _labels(parameters)
    meta = {"probes": [{"name": "grad_stats", "class": "GradStats"}, {"name": "update_ratio", "class": "UpdateRatio"}],
            "parameters": [{"name": n, "module": n.rsplit(".", 1)[0], "kind": "linear",
                            "shape": [64, 64] if n.endswith("weight") else [64], "numel": 4096 if n.endswith("weight")
                            else 64, "trainable": True, "in_optimizer": True} for n in labels],
            "num_classes": 10}
    layer = {"layer": labels}
    quantities = {"grad_stats": {q: Quantity((parameters,), ("layer",), layer, "float32") for q in GRADIENT_QUANTITIES},
                  "update_ratio": {q: Quantity((parameters,), ("layer",), layer, "float32") for q in RATIO_QUANTITIES}}
    layers = [{"name": f"blocks.{i}.fc", "kind": "linear", "shape": [64, 64], "params": 4160}
              for i in range(parameters // 2)]
    recorder = Recorder(path, meta=meta, mode="overwrite", flush_every=4096, flush_seconds=3600)
    recorder.start(layers, quantities)
    for step in range(steps):
        grads, ratios = _records(step, parameters, rng)
        recorder.record("grad_stats", step, {q: v.astype(np.float32) for q, v in grads.items()})
        recorder.record("update_ratio", step, {q: v.astype(np.float32) for q, v in ratios.items()})
        recorder.log_scalars(step, loss=2.3 * np.exp(-step / 2000) + 0.1 + 0.05 * rng.standard_normal())
    recorder.close()


def diagnose_seconds(path: str, repeats: int = 3) -> tuple[float, float]:
    """Best (wall, CPU) seconds of ``load(path)`` + ``diagnose`` over ``repeats``: on a shared machine the wall
    time includes waiting for a core; the CPU time is the work itself."""
    import gradlens
    from gradlens.doctor import diagnose

    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        diagnose(gradlens.load(path))
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def live_check_microseconds(parameters: int = 150, steps: int = 2000) -> tuple[float, float, float]:
    """(median wall, 99th-percentile wall, mean CPU) µs of ``LiveDoctor.check`` after each of ``steps`` observed
    steps (the second half: full buffers)."""
    from gradlens.doctor import LiveDoctor

    rng = np.random.default_rng(1)
    labels = _labels(parameters)
    live = LiveDoctor({"probes": [{"name": "grad_stats", "class": "GradStats"},
                                  {"name": "update_ratio", "class": "UpdateRatio"}], "num_classes": 10})
    times, cpu = [], 0.0
    for step in range(steps):
        grads, ratios = _records(step, parameters, rng)
        live.observe(step, "grad_stats", grads, labels)
        live.observe(step, "update_ratio", ratios, labels)
        live.observe_scalars(step, {"loss": 2.3 * np.exp(-step / 500) + 0.1})
        started, clock = time.perf_counter(), time.process_time()
        live.check(step)
        times.append(time.perf_counter() - started)
        if step >= steps // 2:
            cpu += time.process_time() - clock
    tail = np.asarray(times[steps // 2:]) * 1e6
    return float(np.median(tail)), float(np.percentile(tail, 99)), cpu / (steps - steps // 2) * 1e6
