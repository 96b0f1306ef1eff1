"""Whole-run overhead of the science probes scheduled every 64 steps on a ResNet-20-shaped training run.

Two identical ``resnet_v1_20`` models (32×32 inputs, batch 128) train on the same fixed batch; one has a
session with GradStats, LayerCushion, InterlayerCushion, DominantFlow and FinalGradHist every 64 steps on a
fixed probe batch. They alternate in blocks of 64 steps (each probed block holds exactly one firing of every
probe); the whole-run overhead is total probed time / total bare time, printed with the per-block ratios.
Target (issue 3): ≤ 1.10×. The per-firing cost grows with the probe batch (DominantFlow alone costs D_L = 64
backward passes of it), so the default probe batch is 8; ``--probe-batch 16`` shows the larger one.

Run: ``python benchmarks/bench_probes.py [--blocks N] [--probe-batch B]``.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time

import torch
from torch import nn

from gradlens.models import create_model
from gradlens.probes import DominantFlow, FinalGradHist, GradStats, InterlayerCushion, LayerCushion
from gradlens.session import attach

EVERY = 64


def _load() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    """Print per-block times and the overhead ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=3, help="alternating blocks of 64 steps each (default 3)")
    parser.add_argument("--batch", type=int, default=128, help="training batch (default 128)")
    parser.add_argument("--probe-batch", type=int, default=8, help="probe batch (default 8)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bare = create_model("resnet_v1_20")
    probed = copy.deepcopy(bare)
    generator = torch.Generator().manual_seed(0)
    x = bare.example_input(args.batch, generator)
    y = torch.randint(0, 10, (args.batch,), generator=generator)
    probe_batch = (bare.example_input(args.probe_batch, generator), torch.randint(0, 10, (args.probe_batch,)))
    optimizers = {
        "bare": torch.optim.SGD(bare.parameters(), lr=0.01, momentum=0.9),
        "probed": torch.optim.SGD(probed.parameters(), lr=0.01, momentum=0.9),
    }
    models = {"bare": bare, "probed": probed}

    def block(label: str) -> float:
        model, optimizer = models[label], optimizers[label]
        start = time.perf_counter()
        for _ in range(EVERY):
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        return time.perf_counter() - start

    probes = [
        GradStats(every=EVERY),
        LayerCushion(every=EVERY),
        InterlayerCushion(every=EVERY),
        DominantFlow(every=EVERY),
        FinalGradHist(every=EVERY),
    ]
    times: dict[str, list[float]] = {"bare": [], "probed": []}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; resnet_v1_20, batch {args.batch}, "
          f"probe batch {args.probe_batch}, probes every {EVERY} steps: {', '.join(type(p).__name__ for p in probes)}; "
          f"load average at start {_load()}")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "bench.h5")
        with attach(probed, optimizers["probed"], path, probes=probes, probe_batch=probe_batch):
            for index in range(args.blocks):
                for label in ("bare", "probed") if index % 2 == 0 else ("probed", "bare"):
                    times[label].append(block(label))
                print(f"block {index}: bare {times['bare'][-1]:.2f} s, probed {times['probed'][-1]:.2f} s", flush=True)
    ratio = sum(times["probed"]) / sum(times["bare"])
    paired = [p / b for p, b in zip(times["probed"], times["bare"], strict=True)]
    print(f"per-block ratios: {', '.join(f'{r:.3f}' for r in paired)} (median {statistics.median(paired):.3f})")
    print(f"whole-run overhead ({args.blocks} blocks of {EVERY} steps each): {ratio:.3f}x  (target <= 1.10x)  "
          f"{'ok' if ratio <= 1.10 else 'MISSED'}; load average at end {_load()}")


if __name__ == "__main__":
    main()
