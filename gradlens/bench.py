"""Overhead of GradStats recorded at every step vs the bare training step: ``python -m gradlens.bench``.

Two identical models and optimizers train on the same fixed batch; one has a gradlens session with
GradStats firing at every ``optimizer.step()`` and writing to HDF5. Steps of the two alternate in short
rounds so that machine noise hits both alike; the ratio of median step times is printed. Targets (issue 2):
≤ 1.15× for the thin 30-layer MLP (784-50…-10, batch 128), ≤ 1.05× for the ResNet-20-shaped CNN (32×32).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from torch import nn

from gradlens.models import create_model
from gradlens.probes import GradStats
from gradlens.session import attach


def _step_fn(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> Callable:
    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


def measure(name: str, model: nn.Module, batch: int, rounds: int, steps_per_round: int) -> dict:
    """Median step time bare vs with GradStats every step; returns a dict with both and their ratio."""
    generator = torch.Generator().manual_seed(0)
    x = model.example_input(batch, generator)
    y = torch.randint(0, model.num_classes, (batch,), generator=generator)
    bare_model, probed_model = model, copy.deepcopy(model)
    bare_opt = torch.optim.SGD(bare_model.parameters(), lr=1e-3, momentum=0.9)
    probed_opt = torch.optim.SGD(probed_model.parameters(), lr=1e-3, momentum=0.9)
    bare, probed = _step_fn(bare_model, bare_opt, x, y), _step_fn(probed_model, probed_opt, x, y)
    times: dict[str, list[float]] = {"bare": [], "gradstats": []}
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "bench.h5")
        with attach(probed_model, probed_opt, path, probes=[GradStats()], every=1):
            for _ in range(3):  # warm-up, includes the session's first-step setup
                bare()
                probed()
            for _ in range(rounds):
                for label, step in (("bare", bare), ("gradstats", probed)):
                    start = time.perf_counter()
                    for _ in range(steps_per_round):
                        step()
                    times[label].append((time.perf_counter() - start) / steps_per_round)
    bare_t, probed_t = statistics.median(times["bare"]), statistics.median(times["gradstats"])
    return {"name": name, "bare_ms": 1e3 * bare_t, "gradstats_ms": 1e3 * probed_t, "ratio": probed_t / bare_t}


CASES = {
    "thin MLP 784-50x30-10, batch 128": ("thin_mlp_plain_30", {}, 128, 1.15),
    "ResNet-20-shaped CNN, 32x32, batch 128": ("resnet_v1_20", {}, 128, 1.05),
}


def main(argv: list[str] | None = None) -> None:
    """Print the overhead table."""
    parser = argparse.ArgumentParser(prog="python -m gradlens.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="alternating rounds (default 15)")
    parser.add_argument("--steps", type=int, default=8, help="steps per round (default 8)")
    args = parser.parse_args(argv)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"rounds={args.rounds}, steps={args.steps}"
    )
    print(f"{'case':<42} {'bare ms':>9} {'+GradStats ms':>14} {'ratio':>7} {'target':>7}")
    for label, (name, kw, batch, target) in CASES.items():
        torch.manual_seed(0)
        result = measure(label, create_model(name, **kw), batch, args.rounds, args.steps)
        verdict = "ok" if result["ratio"] <= target else "MISSED"
        print(
            f"{label:<42} {result['bare_ms']:>9.2f} {result['gradstats_ms']:>14.2f} "
            f"{result['ratio']:>7.3f} {'≤' + str(target):>7} {verdict}"
        )


if __name__ == "__main__":
    main()
