"""Whole-run overhead of the science probes scheduled every 64 steps on a ResNet-20-shaped training run.

Two identical ``resnet_v1_20`` models (32×32 inputs, batch 128) train on the same fixed batch; one has a
session with GradStats, LayerCushion, InterlayerCushion, DominantFlow and FinalGradHist every 64 steps on a
fixed probe batch. They alternate in blocks of 64 steps (each probed block holds exactly one firing of every
probe; the order of the pair alternates from block to block); the whole-run overhead is total probed time / total
bare time, printed with the per-block ratios. Target (issue 3): ≤ 1.10×. The per-firing cost grows with the probe
batch (DominantFlow alone costs D_L = 64 backward passes of it), so the default probe batch is 8;
``--probe-batch 16`` shows the larger one. One untimed block of each model comes first: the first firing builds
the kernels and plans, the first steps allocate (a cost of the first block only, not of every 64 steps).

How many blocks: the whole-run ratio is Σ probed / Σ bare over the blocks, so its noise falls as 1/√blocks; each
run prints the per-block standard deviation and the resulting 95 % band of the whole-run ratio.

Run: ``python benchmarks/bench_probes.py [--blocks N] [--probe-batch B] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from torch import nn

from gradlens.models import create_model
from gradlens.probes import DominantFlow, FinalGradHist, GradStats, InterlayerCushion, LayerCushion
from gradlens.session import attach

EVERY = 64
BLOCKS = 12
TARGET = 1.10


def _load() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def measure(blocks: int = BLOCKS, batch: int = 128, probe_batch: int = 8, device: str = "cpu",
            model: str = "resnet_v1_20", every: int = EVERY) -> float:
    """Print per-block times and the whole-run overhead ratio (probed / bare) of ``blocks`` block pairs; return it."""
    torch.manual_seed(0)
    bare = create_model(model).to(device)
    probed = copy.deepcopy(bare)
    generator = torch.Generator().manual_seed(0)
    x = bare.example_input(batch, generator).to(device)
    y = torch.randint(0, 10, (batch,), generator=generator).to(device)
    probe_inputs = (bare.example_input(probe_batch, generator).to(device),
                    torch.randint(0, 10, (probe_batch,), generator=generator).to(device))
    optimizers = {
        "bare": torch.optim.SGD(bare.parameters(), lr=0.01, momentum=0.9),
        "probed": torch.optim.SGD(probed.parameters(), lr=0.01, momentum=0.9),
    }
    models = {"bare": bare, "probed": probed}
    sync: Callable[[], None] = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)

    cpu: dict[str, list[float]] = {"bare": [], "probed": []}

    def block(label: str) -> float:
        """Wall seconds of one block of ``every`` steps (its CPU seconds go to ``cpu``)."""
        network, optimizer = models[label], optimizers[label]
        sync()
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(every):
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(network(x), y).backward()
            optimizer.step()
        sync()
        cpu[label].append(time.process_time() - start_cpu)
        return time.perf_counter() - start

    probes = [
        GradStats(every=every),
        LayerCushion(every=every),
        InterlayerCushion(every=every),
        DominantFlow(every=every),
        FinalGradHist(every=every),
    ]
    times: dict[str, list[float]] = {"bare": [], "probed": []}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}; {model}, batch {batch}, "
          f"probe batch {probe_batch}, probes every {every} steps: {', '.join(type(p).__name__ for p in probes)}; "
          f"load average at start {_load()}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "bench.h5")
        with attach(probed, optimizers["probed"], path, probes=probes, probe_batch=probe_inputs):
            warm = {label: block(label) for label in ("bare", "probed")}  # untimed: first firing, allocations
            print(f"warm-up block (not counted): bare {warm['bare']:.2f} s, probed {warm['probed']:.2f} s")
            for values in cpu.values():
                values.clear()
            for index in range(blocks):
                for label in ("bare", "probed") if index % 2 == 0 else ("probed", "bare"):
                    times[label].append(block(label))
                print(f"block {index}: bare {times['bare'][-1]:.2f} s, probed {times['probed'][-1]:.2f} s", flush=True)
    ratio = sum(times["probed"]) / sum(times["bare"])
    paired = [p / b for p, b in zip(times["probed"], times["bare"], strict=True)]
    spread = ""
    if len(paired) > 1:
        sd = statistics.stdev(paired)
        spread = f", sd {sd:.3f}: the whole-run ratio is within ±{2 * sd / math.sqrt(len(paired)):.3f} at 95 %"
    cpu_paired = [p / b for p, b in zip(cpu["probed"], cpu["bare"], strict=True)]
    print(f"per-block ratios: {', '.join(f'{r:.3f}' for r in paired)} (median {statistics.median(paired):.3f}"
          f"{spread}); CPU time: {', '.join(f'{r:.3f}' for r in cpu_paired)}")
    cpu_ratio = sum(cpu["probed"]) / sum(cpu["bare"])  # CPU time of this process: blind to a busy machine's waits
    print(f"whole-run overhead ({blocks} blocks of {every} steps each): {ratio:.3f}x  (target <= {TARGET:.2f}x)  "
          f"{'ok' if ratio <= TARGET else 'MISSED'}; CPU time {cpu_ratio:.3f}x; load average at end {_load()}")
    return ratio


def main(argv: list[str] | None = None) -> None:
    """Print per-block times and the overhead ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=BLOCKS, help=f"alternating blocks of 64 steps (default {BLOCKS})")
    parser.add_argument("--batch", type=int, default=128, help="training batch (default 128)")
    parser.add_argument("--probe-batch", type=int, default=8, help="probe batch (default 8)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's default)")
    parser.add_argument("--device", default="cpu", help="device to train on (default cpu)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    measure(args.blocks, args.batch, args.probe_batch, args.device)


if __name__ == "__main__":
    main()
