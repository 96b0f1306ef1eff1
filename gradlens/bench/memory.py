"""Peak memory of the 79 M MLP per variant, each in a fresh subprocess (``python -m gradlens.bench`` prints it)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile

import torch

from gradlens.bench.cases import fixed_batch, mlp79m
from gradlens.bench.timing import load
from gradlens.bench.variants import VARIANTS, Runner

MEMORY_BUDGET = 0.02  # GradStats' peak-RSS increase over the session without it, as a fraction of the gradient bytes
MEMORY_VARIANTS = ("bare", "session", "gradstats", "gradstats+hist40")


def memory_child(variant: str, steps: int) -> None:
    """Subprocess body: the 79 M MLP, ``steps`` steps with ``variant``; prints peak RSS in KiB as JSON."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = mlp79m()
    x, y = fixed_batch(model, 128)
    runner = Runner(variant, model, torch.optim.SGD(model.parameters(), lr=1e-3), x, y)
    with tempfile.TemporaryDirectory() as folder:
        VARIANTS[variant].setup(runner, folder)
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
        f"{grad_bytes / 2**20:.1f} MiB; load average at start {load()}",
        flush=True,
    )
    peaks = {}
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    for variant in MEMORY_VARIANTS:
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
    print(f"  load average at end {load()}")
    return missed
