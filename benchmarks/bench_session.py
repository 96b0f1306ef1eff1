"""What a session costs per training step: skipped steps, ActivationStats, the live doctor's checks.

    python benchmarks/bench_session.py [--cases thin,resnet20] [--rounds N] [--steps N] [--threads 1]

Every variant trains its own copy of the same model (same batch, SGD with momentum) and the variants alternate in
rounds inside one process, the order rotating each round (as ``gradlens.bench``); each round gives a per-step
time per variant, and the printed figures are medians over rounds of the per-round difference to ``bare`` (µs per
step) and ratio to it (and the mean CPU difference, which counts a firing that lands in one turn of ten, as
``grad100``'s does). A turn is ``--steps`` consecutive steps (10 for the thin MLP: exactly one step of every 10
per turn). CPU time (``time.process_time``) is printed beside wall time: on a shared machine the
process waits for a core, which wall time counts and CPU time does not.

Variants:
- ``bare``: no gradlens;
- ``skipped``: a session with ``GradStats(every=[0])``: every timed step is one where no probe is due, so its
  difference to ``bare`` is the session's cost of a skipped step (issue 23.2: ~0);
- ``grad100``: ``GradStats(every=100)``, the schedule of issue 23.2, firings included;
- ``act10`` / ``act1``: ``ActivationStats(every=10)`` / ``(every=1)`` (issue 21.2: <= 5 % at every 10th step);
- ``grad10`` / ``live``: ``GradStats(every=10)`` without and with the live doctor checking every 10 steps (only
  when the doctor package provides ``LiveDoctor``); the CPU time of each check is printed too.

The load average is printed at the start and the end of each case: above 2.5 the machine was busy.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import torch
from torch import nn

from gradlens.models import create_model
from gradlens.probes import ActivationStats, GradStats
from gradlens.session import attach

CASES: dict[str, tuple[str, Callable[[], nn.Module], int]] = {
    "thin": ("thin MLP 784-50x30-10 (BN, ReLU modules), batch 128", lambda: create_model("thin_mlp_plain_30"), 10),
    "resnet20": ("ResNet-20 v1, 32x32, batch 128", lambda: create_model("resnet_v1_20"), 2),
}


def _variants(folder: str) -> dict[str, Callable[[nn.Module, torch.optim.Optimizer], object | None]]:
    def session(name: str, probes: list, **kwargs: object):
        return lambda model, optimizer: attach(model, optimizer, os.path.join(folder, f"{name}.h5"), probes, **kwargs)

    variants = {
        "bare": lambda model, optimizer: None,
        "skipped": session("skipped", [GradStats(every=[0])]),
        "grad100": session("grad100", [GradStats(every=100)]),
        "act10": session("act10", [ActivationStats(every=10)]),
        "act1": session("act1", [ActivationStats(every=1)]),
    }
    try:
        from gradlens.doctor import LiveDoctor  # noqa: F401
    except ImportError:
        return variants
    variants["grad10"] = session("grad10", [GradStats(every=10)])
    variants["live"] = _timed_checks(session("live", [GradStats(every=10)], live=10))
    return variants


CHECKS: list[float] = []  # CPU seconds of each live check


def _timed_checks(setup: Callable) -> Callable:
    def timed(model: nn.Module, optimizer: torch.optim.Optimizer):
        session = setup(model, optimizer)
        check = session._live_check

        def timed_check():
            start = time.process_time()
            try:
                return check()
            finally:
                CHECKS.append(time.process_time() - start)

        session._live_check = timed_check
        return session

    return timed


class Runner:
    """One variant: its model, optimizer and session."""

    def __init__(self, name: str, base: nn.Module, x: torch.Tensor, y: torch.Tensor, setup: Callable) -> None:
        self.name, self.x, self.y = name, x, y
        self.model = copy.deepcopy(base)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)
        self.session = setup(self.model, self.optimizer)

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(self.model(self.x), self.y).backward()
        self.optimizer.step()

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


def _batch(model: nn.Module, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = model.example_input(batch, generator) if hasattr(model, "example_input") else torch.randn(batch, 784)
    return x, torch.randint(0, 10, (batch,), generator=generator)


def run_case(key: str, rounds: int, steps: int | None, only: list[str] | None) -> None:
    label, build, default_steps = CASES[key]
    steps = steps or default_steps
    torch.manual_seed(0)
    base = build()
    x, y = _batch(base, 128)
    print(f"\n{label}: {rounds} rounds x {steps} steps, {torch.get_num_threads()} thread(s), "
          f"load {'/'.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        variants = _variants(folder)
        names = [n for n in variants if only is None or n in only or n == "bare"]
        runners = [Runner(name, base, x, y, variants[name]) for name in names]
        for runner in runners:  # warm-up: the first step discovers layers, creates the file, builds kernels
            for _ in range(3):
                runner.step()
        times: dict[str, list[tuple[float, float]]] = {r.name: [] for r in runners}
        gc.disable()
        try:
            for index in range(rounds):
                for runner in runners[index % len(runners):] + runners[: index % len(runners)]:
                    gc.collect()  # no untimed step: a turn of 10 steps holds exactly one step of every 10
                    wall, cpu = time.perf_counter(), time.process_time()
                    for _ in range(steps):
                        runner.step()
                    times[runner.name].append(
                        ((time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps)
                    )
        finally:
            gc.enable()
            for runner in runners:
                runner.close()
    bare = times["bare"]
    for name, runs in times.items():
        wall = [a / b for (a, _), (b, _) in zip(runs, bare, strict=True)]
        cpu = [a / b for (_, a), (_, b) in zip(runs, bare, strict=True)]
        extra_wall = [1e6 * (a - b) for (a, _), (b, _) in zip(runs, bare, strict=True)]
        extra_cpu = [1e6 * (a - b) for (_, a), (_, b) in zip(runs, bare, strict=True)]
        print(
            f"  {name:<8} {1e3 * statistics.median(t for t, _ in runs):8.3f} ms/step  "
            f"wall {statistics.median(wall):6.3f}x ({statistics.median(extra_wall):+8.1f} us)  "
            f"cpu {statistics.median(cpu):6.3f}x ({statistics.median(extra_cpu):+8.1f} us; "
            f"mean {statistics.mean(extra_cpu):+8.1f} us)",
            flush=True,
        )
    if CHECKS:
        print(f"  live checks: {len(CHECKS)}, CPU per check median {1e6 * statistics.median(CHECKS):.0f} us "
              f"(max {1e6 * max(CHECKS):.0f} us)", flush=True)
        CHECKS.clear()
    print(f"  load at the end {'/'.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="thin,resnet20")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per turn (default per case)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", default=None, help="comma-separated variants (bare is always run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    only = None if args.only is None else args.only.split(",")
    for key in args.cases.split(","):
        run_case(key, args.rounds, args.steps, only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
