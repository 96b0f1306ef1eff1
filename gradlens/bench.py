"""Per-step overhead of GradStats beside the tools users would pick instead: ``python -m gradlens.bench``.

Every variant trains its own copy of the same model and optimizer on the same fixed batch. Variants alternate
in rounds inside one process (the order rotates each round) so that machine noise hits them alike; each round
gives a per-step time per variant, and the printed ratio is the median over rounds of (variant / bare) from
the same round. Timed steps are whole steps: ``zero_grad``, forward, backward, ``optimizer.step()`` and
whatever the variant adds (GradStats fires inside ``optimizer.step()`` and its HDF5 recorder is on, so
recording and the flush every 64 records are included).

Variants: ``bare``; ``gradstats`` (``GradStats()`` every step); ``gradstats+hist40`` (``GradStats(bins=40)``);
peers when installed, else a ``skipped: <why>`` line: ``lightning`` (``lightning.pytorch.utilities.grad_norm``
at every optimizer step, L2 norms only), ``tensorboard`` (``SummaryWriter.add_histogram`` of every gradient)
and ``wandb`` (``wandb.watch(log="gradients", log_freq=1)``, offline, files in a temporary folder, plus the
``run.log`` of the loss a user makes to commit each step). wandb hands its records to a background process,
whose work could land in the other variants' timings, so it alternates with ``bare`` in rounds of its own; so
does TensorBoard (tens of times a thin step), with a third as many rounds as the variants that have targets.

Cases (``--cases``): ``thin`` (thin MLP 784-50×30-10, batch 128, model ``thin_mlp_plain_30``), ``resnet20``
(ResNet-20 v1, 32×32, batch 128, ``resnet_v1_20``), ``mlp79m`` (784-512×300-10 ReLU MLP, 79 M parameters,
batch 128; plain SGD without momentum so that the six copies fit in memory). Each runs at every thread
count of ``--threads`` (default 1 and 2). The load average (1, 5, 15 min) is printed at the start and end of
every case: above 2.5 the machine was busy and the ratios are noisy.

Memory (``mlp79m`` only): peak resident set (``ru_maxrss``) of a fresh subprocess per variant (bare, a session
without probes, GradStats, GradStats with 40 bins) that builds the 79 M model and takes 4 steps. The target is
on what GradStats adds: the recorded run with GradStats minus the same recorded run without it must stay within
2 % of the gradients' bytes. The session's own cost (HDF5 library pages, file caches, the layer table) is
printed beside it, as every variant's difference to bare training (see :func:`memory` for the allocator).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from gradlens.models import create_model
from gradlens.probes import GradStats
from gradlens.session import attach

LOAD_NOISY = 2.5  # 1-minute load average above which a run on this machine is too noisy to trust
MEMORY_BUDGET = 0.02  # GradStats' peak-RSS increase over the session without it, as a fraction of the gradient bytes

# Per case: the largest ratio to the bare step accepted for the variants that have a target.
TARGETS = {
    "thin": {"gradstats": 1.05, "gradstats+hist40": 1.15},
    "resnet20": {"gradstats": 1.02, "gradstats+hist40": 1.05},
    "mlp79m": {"gradstats": 1.05},
}
LIGHTNING_MARGIN = 0.03  # GradStats' ratio may exceed Lightning's grad_norm ratio by this much


class Skipped(Exception):
    """A peer that cannot run here; the message says why."""


@dataclass
class Case:
    """One model and batch to time."""

    label: str
    build: Callable[[], nn.Module]
    batch: int
    rounds: int
    steps: int
    momentum: float = 0.9


def mlp79m() -> nn.Sequential:
    """784-512×300-10 ReLU MLP (300 hidden Linear layers of width 512, 78.9 M parameters), He-initialised.

    He init keeps activations O(1) through the 300 layers, so no value becomes subnormal (subnormal floats
    would slow every variant and say nothing about the probes).
    """
    layers: list[nn.Module] = [nn.Flatten()]
    width_in = 784
    for _ in range(300):
        layers += [nn.Linear(width_in, 512), nn.ReLU()]
        width_in = 512
    layers.append(nn.Linear(512, 10))
    for layer in layers:
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


CASES = {
    "thin": Case("thin MLP 784-50x30-10, batch 128", lambda: create_model("thin_mlp_plain_30"), 128, 100, 10),
    "resnet20": Case("ResNet-20 v1, 32x32, batch 128", lambda: create_model("resnet_v1_20"), 128, 45, 2),
    "mlp79m": Case("MLP 784-512x300-10 (79 M), batch 128", mlp79m, 128, 9, 1, momentum=0.0),
}


def _batch(model: nn.Module, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    if hasattr(model, "example_input"):
        x = model.example_input(batch, generator)
    else:
        x = torch.randn(batch, 784, generator=generator)
    return x, torch.randint(0, 10, (batch,), generator=generator)


@dataclass
class Runner:
    """One variant: its model copy, optimizer, step function and what to close at the end."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    x: torch.Tensor
    y: torch.Tensor
    after_step: Callable[[torch.Tensor], None] | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)
    firings: list[float] = field(default_factory=list)  # seconds of each GradStats firing (compute and record)

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.optimizer.step()
        if self.after_step is not None:
            self.after_step(loss)

    def close(self) -> None:
        for close in reversed(self.closers):
            close()


def _gradstats(runner: Runner, folder: str, **kwargs) -> None:
    try:
        probe = GradStats(**kwargs)
    except (TypeError, ValueError):  # a GradStats without bins=int: 40 equal bins over a fixed range
        probe = GradStats(bins=torch.linspace(-1e-2, 1e-2, kwargs["bins"] + 1).tolist())
    session = attach(runner.model, runner.optimizer, os.path.join(folder, f"{runner.name}.h5"), probes=[probe])
    runner.closers.append(session.close)
    fire = session._fire  # timed where it runs, inside optimizer.step(): a small interval, so little noise

    def timed_fire() -> None:
        start = time.perf_counter()
        fire()
        runner.firings.append(time.perf_counter() - start)

    session._fire = timed_fire


def _lightning(runner: Runner, folder: str) -> None:
    try:
        from lightning.pytorch.utilities import grad_norm
    except ImportError as error:
        raise Skipped(f"lightning is not installed ({error})") from None
    kept: dict = {}

    def hook(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        kept.update(grad_norm(runner.model, norm_type=2))  # what LightningModule.on_before_optimizer_step does

    runner.closers.append(runner.optimizer.register_step_pre_hook(hook).remove)


def _tensorboard(runner: Runner, folder: str) -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise Skipped(f"tensorboard is not installed ({error})") from None
    writer = SummaryWriter(os.path.join(folder, "tensorboard"))
    named = list(runner.model.named_parameters())
    counter = [0]

    def hook(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        for name, parameter in named:
            if parameter.grad is not None:
                writer.add_histogram(name, parameter.grad, counter[0])
        counter[0] += 1

    runner.closers.append(writer.close)
    runner.closers.append(runner.optimizer.register_step_pre_hook(hook).remove)


def _wandb(runner: Runner, folder: str) -> None:
    os.environ.update(WANDB_MODE="offline", WANDB_DIR=folder, WANDB_SILENT="true")
    try:
        import wandb
    except ImportError as error:
        raise Skipped(f"wandb is not installed ({error})") from None
    settings = wandb.Settings(mode="offline", silent=True, console="off", x_disable_stats=True, disable_git=True)
    run = wandb.init(project="gradlens-bench", dir=folder, settings=settings, reinit="finish_previous")
    wandb.watch(runner.model, log="gradients", log_freq=1)
    runner.after_step = lambda loss: run.log({"loss": float(loss.detach())})
    runner.closers.append(wandb.teardown)  # last: ends wandb's service process, which would busy later cases
    runner.closers.append(run.finish)
    runner.closers.append(lambda: wandb.unwatch(runner.model))


SETUPS: dict[str, Callable[[Runner, str], None]] = {
    "bare": lambda runner, folder: None,
    "session": lambda runner, folder: runner.closers.append(
        attach(runner.model, runner.optimizer, os.path.join(folder, "session.h5")).close
    ),
    "gradstats": _gradstats,
    "gradstats+hist40": lambda runner, folder: _gradstats(runner, folder, bins=40),
    "lightning": _lightning,
    "tensorboard": _tensorboard,
}
# The variants with targets and Lightning's cheap grad_norm share rounds; TensorBoard (tens of times a thin step)
# and wandb (a background process) alternate with bare in rounds of their own, a third as many, so the
# many rounds that the small ratios need stay affordable. "session" is for the memory figures only.
GROUPS = (["bare", "gradstats", "gradstats+hist40", "lightning"], ["bare", "tensorboard"], ["bare", "wandb"])
HEAVY_ROUNDS = 3  # the heavy peers' groups run rounds // HEAVY_ROUNDS rounds (at least 5)


def _verdict(value: float, target: float) -> str:
    return "ok" if value <= target else "MISSED"


def _load() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def _interleave(runners: list[Runner], rounds: int, steps: int) -> dict[str, list[tuple[float, float]]]:
    """Per-round (wall, CPU) seconds per step of each runner; the order rotates every round.

    Each runner's turn starts with one untimed step, then ``steps`` timed ones (see :func:`_round`).

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
            _round(runners[index % len(runners):] + runners[: index % len(runners)], steps, times)
    finally:
        if collecting:
            gc.enable()
    return times


def _round(runners: list[Runner], steps: int, times: dict[str, list[tuple[float, float]]]) -> None:
    """One turn of each runner, in this order. As in ``timeit``, the garbage collector runs between turns, not
    inside them: a full collection that lands in one variant's steps would cost it milliseconds that belong to
    every variant's garbage."""
    for runner in runners:
        gc.collect()
        # one untimed step first: the previous variant may have left the allocator with memory to map again
        # (TensorBoard's histograms of 79 M values do), which the first step after it pays
        runner.step()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            runner.step()
        times[runner.name].append(((time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps))


def _runners(group: list[str], base: nn.Module, case: Case, x: torch.Tensor, y: torch.Tensor, folder: str,
             bare: Runner | None, peers: bool) -> list[Runner]:
    """A runner per variant of ``group`` that starts here (``bare`` reused when given); skipped ones printed."""
    runners: list[Runner] = []
    for name in group:
        if name == "bare" and bare is not None:
            runners.append(bare)
            continue
        if not peers and name not in ("bare", "gradstats", "gradstats+hist40"):
            continue
        model = copy.deepcopy(base)  # bare too: every variant's tensors are allocated the same way
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=case.momentum)
        runner = Runner(name, model, optimizer, x, y)
        try:
            (SETUPS.get(name) or _wandb)(runner, folder)
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
    """Print one line per variant (and, for GradStats, the time of its firings: the mean includes the flushes,
    so the mean over the bare step is the firing's share of a step without the whole-step noise); returns
    {variant: (wall ratio, CPU ratio)} and the missed targets."""
    results, missed = {}, []
    for name, runs in times.items():
        wall = [t / b for (t, _), (b, _) in zip(runs, times["bare"], strict=True)]
        cpu = [t / b for (_, t), (_, b) in zip(runs, times["bare"], strict=True)]
        ratio, cpu_ratio = statistics.median(wall), statistics.median(cpu)
        results[name] = (ratio, cpu_ratio)
        target = TARGETS.get(key, {}).get(name)
        verdict = ""
        if target is not None:
            verdict = f"target <= {target:.2f}: wall {_verdict(ratio, target)}, cpu {_verdict(cpu_ratio, target)}"
            if ratio > target:
                missed.append(f"{case.label} {name}: wall {ratio:.3f} (cpu {cpu_ratio:.3f}) > {target:.2f}")
        print(
            f"  {name:<18} {1e3 * statistics.median(t for t, _ in runs):>10.2f} ms/step "
            f"wall {ratio:>7.3f}x [{min(wall):.3f}, {max(wall):.3f}]  cpu {cpu_ratio:>7.3f}x  {verdict}",
            flush=True,
        )
        if firings.get(name):
            median, mean = statistics.median(firings[name]), statistics.mean(firings[name])
            share = mean / statistics.median(t for t, _ in times["bare"])
            print(f"  {'':<18} its firing inside optimizer.step(): median {1e6 * median:.0f} us, mean "
                  f"{1e6 * mean:.0f} us = {100 * share:.2f} % of the bare step", flush=True)
    return results, missed


def run_case(key: str, case: Case, rounds: int | None, steps: int | None, peers: bool) -> list[str]:
    """Time every variant of one case; returns the lines that report a missed target."""
    rounds, steps = rounds or case.rounds, steps or case.steps
    torch.manual_seed(0)
    base = case.build()
    x, y = _batch(base, case.batch)
    n_params = sum(p.numel() for p in base.parameters() if p.requires_grad)
    tensors = sum(1 for p in base.parameters() if p.requires_grad)
    print(
        f"\n{case.label}: {n_params / 1e6:.2f} M trainable parameters in {tensors} tensors; "
        f"{rounds} rounds x {steps} steps; load average at start {_load()}",
        flush=True,
    )
    missed: list[str] = []
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        bare: Runner | None = None
        try:
            for group in GROUPS:
                runners = _runners(group, base, case, x, y, folder, bare, peers)
                bare = next((r for r in runners if r.name == "bare"), bare)
                try:
                    if len(runners) < 2:
                        continue
                    heavy = group is not GROUPS[0]
                    times = _interleave(runners, max(5, rounds // HEAVY_ROUNDS) if heavy else rounds, steps)
                finally:
                    for runner in runners:
                        if runner is not bare:
                            runner.close()
                if heavy:
                    note = " (its background process's CPU is not counted)" if "wandb" in group else ""
                    print(f"  -- {group[1]} in rounds of its own with bare{note}")
                group_results, group_missed = _report(key, case, times, {r.name: r.firings for r in runners})
                results.update(group_results)
                missed += group_missed
        finally:
            if bare is not None:
                bare.close()
    if "gradstats" in results and "lightning" in results:
        gap, cpu_gap = (results["gradstats"][k] - results["lightning"][k] for k in (0, 1))
        print(
            f"  gradstats - lightning: wall {gap:+.3f} {_verdict(gap, LIGHTNING_MARGIN)}, "
            f"cpu {cpu_gap:+.3f} {_verdict(cpu_gap, LIGHTNING_MARGIN)}  (target <= {LIGHTNING_MARGIN:.2f})"
        )
        if gap > LIGHTNING_MARGIN:
            missed.append(f"{case.label} gradstats - lightning: wall {gap:+.3f} (cpu {cpu_gap:+.3f}) > 0.03")
    busy = f"  (> {LOAD_NOISY}: busy machine, rerun)" if os.getloadavg()[0] > LOAD_NOISY else ""
    print(f"  load average at end {_load()}{busy}")
    return missed


def _memory_child(variant: str, steps: int) -> None:
    """Subprocess body: the 79 M MLP, ``steps`` steps with ``variant``; prints peak RSS in KiB as JSON."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = mlp79m()
    x, y = _batch(model, 128)
    runner = Runner(variant, model, torch.optim.SGD(model.parameters(), lr=1e-3), x, y)
    with tempfile.TemporaryDirectory() as folder:
        SETUPS[variant](runner, folder)
        for _ in range(steps):
            runner.step()
        runner.close()
    print(json.dumps({"variant": variant, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def memory(steps: int = 4) -> list[str]:
    """Peak RSS per variant on the 79 M MLP, each in a fresh subprocess; returns lines for missed targets.

    The subprocesses run with glibc's ``MALLOC_MMAP_THRESHOLD_`` fixed at 128 KiB: every block of 128 KiB or
    more is then mapped on allocation and unmapped on free, so the peak RSS measures what was alive at once.
    With the default (a threshold that grows to the largest freed block) freed gradients stay cached in the
    heap, and the peak moves by tens of MiB with the order of unrelated small allocations.
    """
    grad_bytes = sum(p.numel() * p.element_size() for p in mlp79m().parameters())
    print(
        f"\nmemory, 79 M MLP, {steps} steps per subprocess, MALLOC_MMAP_THRESHOLD_=131072: gradients "
        f"{grad_bytes / 2**20:.1f} MiB; load average at start {_load()}",
        flush=True,
    )
    peaks = {}
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    for variant in ("bare", "session", "gradstats", "gradstats+hist40"):
        out = subprocess.run(
            [sys.executable, "-m", "gradlens.bench", "--memory-child", variant, "--memory-steps", str(steps)],
            capture_output=True, text=True, check=True, env=environment,
        )
        peaks[variant] = 1024 * json.loads(out.stdout.strip().splitlines()[-1])["maxrss_kib"]
    missed = []
    for variant, peak in peaks.items():
        extra, probe = peak - peaks["bare"], peak - peaks["session"]
        line = (
            f"  {variant:<18} peak RSS {peak / 2**20:9.1f} MiB  vs bare {extra / 2**20:+7.1f} MiB "
            f"= {extra / grad_bytes:+7.2%} of the gradients; vs session without probes {probe / 2**20:+7.1f} MiB "
            f"= {probe / grad_bytes:+6.2%}"
        )
        if variant == "gradstats":
            ok = probe <= MEMORY_BUDGET * grad_bytes
            line += f"  target <= {MEMORY_BUDGET:.0%} vs session without probes: {'ok' if ok else 'MISSED'}"
            if not ok:
                missed.append(f"memory gradstats {probe / grad_bytes:+.2%} of the gradients > {MEMORY_BUDGET:.0%}")
        print(line, flush=True)
    print(f"  load average at end {_load()}")
    return missed


def main(argv: list[str] | None = None) -> int:
    """Print the overhead tables; returns 1 when a target was missed."""
    parser = argparse.ArgumentParser(prog="python -m gradlens.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="thin,resnet20,mlp79m", help="comma list of thin, resnet20, mlp79m")
    parser.add_argument("--threads", default="1,2", help="torch thread counts to run at (default 1,2)")
    parser.add_argument("--rounds", type=int,
                        help="alternating rounds (default per case: 100, 45, 9; the heavy peers a third, >= 5)")
    parser.add_argument("--steps", type=int, help="steps per round (default per case: 10, 2, 1)")
    parser.add_argument("--no-peers", action="store_true", help="time only bare and GradStats")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--memory-steps", type=int, default=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        _memory_child(args.memory_child, args.memory_steps)
        return 0
    keys = [key.strip() for key in args.cases.split(",") if key.strip()]
    unknown = [key for key in keys if key not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {sorted(CASES)}")
    threads = [int(t) for t in args.threads.split(",")]
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs; ratio = median over rounds of variant/bare per step, "
        "wall clock [min, max over rounds] and CPU time of this process; targets are judged on wall clock"
    )
    missed: list[str] = []
    if "mlp79m" in keys and not args.no_memory:
        missed += memory(args.memory_steps)
    for count in threads:
        torch.set_num_threads(count)
        print(f"\n===== {count} torch thread{'s' if count > 1 else ''} =====")
        for key in keys:
            missed += run_case(key, CASES[key], args.rounds, args.steps, not args.no_peers)
    print("\nall targets met" if not missed else "\nmissed:\n  " + "\n  ".join(missed))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
