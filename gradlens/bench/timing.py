"""Interleaved timing of the benchmark's variants on one case, and the printed lines of its table."""

from __future__ import annotations

import copy
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from torch import nn

from gradlens.bench.cases import Case, fixed_batch
from gradlens.bench.variants import LIGHTNING_MARGIN, TARGETS, VARIANTS, Runner, Skipped, groups

LOAD_NOISY = 2.5  # 1-minute load average above which a run on this machine is too noisy to trust
HEAVY_ROUNDS = 3  # groups with a peer run rounds // HEAVY_ROUNDS rounds (at least 5)


def verdict(value: float, target: float) -> str:
    return "ok" if value <= target else "MISSED"


def load() -> str:
    """The load average over 1, 5 and 15 minutes."""
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def interleave(runners: list[Runner], rounds: int, steps: int,
               sync: Callable[[], None] | None = None) -> dict[str, list[tuple[float, float]]]:
    """Per-round (wall, CPU) seconds per step of each runner; the order rotates every round.

    Each runner's turn starts with one untimed step, then ``steps`` timed ones (see :func:`_round`). ``sync``
    (e.g. ``torch.cuda.synchronize``) waits for a device's queued work before the clock starts and before it stops.

    CPU time (``time.process_time``: every thread of this process) does not count the time the process waits
    for a core, so on a busy machine its ratios stay meaningful where wall-clock ratios do not.
    """
    times: dict[str, list[tuple[float, float]]] = {r.name: [] for r in runners}
    for runner in runners:  # warm-up: first-step setup (layer discovery, file creation, lazy imports)
        for _ in range(2):
            runner.step()
        runner.firings.clear()  # the first firing builds the kernel and the plan: not a per-step cost
    collecting = gc.isenabled()
    gc.disable()
    try:
        for index in range(rounds):
            _round(runners[index % len(runners):] + runners[: index % len(runners)], steps, times, sync)
    finally:
        if collecting:
            gc.enable()
    return times


def _round(runners: list[Runner], steps: int, times: dict[str, list[tuple[float, float]]],
           sync: Callable[[], None] | None = None) -> None:
    """One turn of each runner, in this order. As in ``timeit``, the garbage collector runs between turns, not
    inside them: a full collection that lands in one variant's steps would cost it milliseconds that belong to
    every variant's garbage."""
    for runner in runners:
        gc.collect()
        # one untimed step first: the previous variant may have left the allocator with memory to map again
        # (TensorBoard's histograms of 79 M values do), which the first step after it pays
        runner.step()
        if sync is not None:
            sync()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            runner.step()
        if sync is not None:
            sync()
        times[runner.name].append(((time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps))


def _runners(group: list[str], base: nn.Module, case: Case, x: torch.Tensor, y: torch.Tensor, folder: str,
             bare: Runner | None, peers: bool) -> list[Runner]:
    """A runner per variant of ``group`` that starts here (``bare`` reused when given); skipped ones printed."""
    runners: list[Runner] = []
    for name in group:
        if name == "bare" and bare is not None:
            runners.append(bare)
            continue
        if not peers and VARIANTS[name].peer:
            continue
        model = copy.deepcopy(base)  # bare too: every variant's tensors are allocated the same way
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=case.momentum)
        runner = Runner(name, model, optimizer, x, y)
        try:
            VARIANTS[name].setup(runner, folder)
        except Skipped as reason:
            print(f"  {name:<18} skipped: {reason}")
            continue
        except Exception as error:  # a peer that fails to start is reported, not fatal
            print(f"  {name:<18} skipped: {type(error).__name__}: {str(error).splitlines()[0]}")
            runner.close()
            continue
        runners.append(runner)
    return runners


def _report(key: str, case: Case, times: dict[str, list[tuple[float, float]]],
            firings: dict[str, list[float]]) -> tuple[dict, list[str]]:
    """Print one line per variant (and, for probes, the time of their firings: the mean includes the flushes,
    so the mean over the bare step is the firing's share of a step without the whole-step noise); returns
    {variant: (wall ratio, CPU ratio)} and the missed targets."""
    results, missed = {}, []
    for name, runs in times.items():
        wall = [t / b for (t, _), (b, _) in zip(runs, times["bare"], strict=True)]
        cpu = [t / b for (_, t), (_, b) in zip(runs, times["bare"], strict=True)]
        ratio, cpu_ratio = statistics.median(wall), statistics.median(cpu)
        results[name] = (ratio, cpu_ratio)
        target = TARGETS.get(key, {}).get(name)
        note = ""
        if target is not None:
            note = f"target <= {target:.2f}: wall {verdict(ratio, target)}, cpu {verdict(cpu_ratio, target)}"
            if ratio > target:
                missed.append(f"{case.label} {name}: wall {ratio:.3f} (cpu {cpu_ratio:.3f}) > {target:.2f}")
        print(
            f"  {name:<18} {1e3 * statistics.median(t for t, _ in runs):>10.2f} ms/step "
            f"wall {ratio:>7.3f}x [{min(wall):.3f}, {max(wall):.3f}]  cpu {cpu_ratio:>7.3f}x  {note}",
            flush=True,
        )
        if firings.get(name):
            median, mean = statistics.median(firings[name]), statistics.mean(firings[name])
            share = mean / statistics.median(t for t, _ in times["bare"])
            print(f"  {'':<18} its firing inside optimizer.step(): median {1e6 * median:.0f} us, mean "
                  f"{1e6 * mean:.0f} us = {100 * share:.2f} % of the bare step", flush=True)
    return results, missed


def group_shape(group: list[str], rounds: int, steps: int) -> tuple[int, int]:
    """(rounds, steps per round) of one group of variants (``group[0]`` is ``bare``).

    Steps per round: ``steps`` rounded up to a whole number of the group's largest schedule period (a probe every
    10 steps then fires exactly once per 10 timed steps, whatever the phase). Rounds: as many as keep the timed
    steps of the case's ``rounds`` x ``steps`` (at least 5); a group with a peer (slow, or with a background
    process) gets a third of them (:data:`HEAVY_ROUNDS`).
    """
    period = max(VARIANTS[name].period for name in group)
    group_steps = -(-steps // period) * period
    group_rounds = max(5, -(-rounds * steps // group_steps))
    if any(VARIANTS[name].peer for name in group[1:]):
        group_rounds = max(5, group_rounds // HEAVY_ROUNDS)
    return group_rounds, group_steps


def run_case(key: str, case: Case, rounds: int | None, steps: int | None, peers: bool,
             variants: list[str] | None = None) -> list[str]:
    """Time every variant (or those named) of one case; returns the lines that report a missed target."""
    rounds, steps = rounds or case.rounds, steps or case.steps
    torch.manual_seed(0)
    base = case.build()
    x, y = fixed_batch(base, case.batch)
    n_params = sum(p.numel() for p in base.parameters() if p.requires_grad)
    tensors = sum(1 for p in base.parameters() if p.requires_grad)
    print(
        f"\n{case.label}: {n_params / 1e6:.2f} M trainable parameters in {tensors} tensors; "
        f"{rounds} rounds x {steps} steps; load average at start {load()}",
        flush=True,
    )
    missed: list[str] = []
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        bare: Runner | None = None
        try:
            for index, group in enumerate(groups(variants)):
                runners = _runners(group, base, case, x, y, folder, bare, peers)
                bare = next((r for r in runners if r.name == "bare"), bare)
                group_rounds, group_steps = group_shape(group, rounds, steps)
                try:
                    if len(runners) < 2:
                        continue
                    times = interleave(runners, group_rounds, group_steps)
                finally:
                    for runner in runners:
                        if runner is not bare:
                            runner.close()
                if index > 0:
                    note = " (its background process's CPU is not counted)" if "wandb" in group else ""
                    print(f"  -- {', '.join(r.name for r in runners[1:])} in rounds of their own with bare: "
                          f"{group_rounds} rounds x {group_steps} steps{note}")
                group_results, group_missed = _report(key, case, times, {r.name: r.firings for r in runners})
                results.update(group_results)
                missed += group_missed
        finally:
            if bare is not None:
                bare.close()
    if "gradstats" in results and "lightning" in results:
        gap, cpu_gap = (results["gradstats"][k] - results["lightning"][k] for k in (0, 1))
        print(
            f"  gradstats - lightning: wall {gap:+.3f} {verdict(gap, LIGHTNING_MARGIN)}, "
            f"cpu {cpu_gap:+.3f} {verdict(cpu_gap, LIGHTNING_MARGIN)}  (target <= {LIGHTNING_MARGIN:.2f})"
        )
        if gap > LIGHTNING_MARGIN:
            missed.append(f"{case.label} gradstats - lightning: wall {gap:+.3f} (cpu {cpu_gap:+.3f}) > 0.03")
    busy = f"  (> {LOAD_NOISY}: busy machine, rerun)" if os.getloadavg()[0] > LOAD_NOISY else ""
    print(f"  load average at end {load()}{busy}")
    return missed
