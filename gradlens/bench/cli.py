"""The command line of ``python -m gradlens.bench``: which cases, threads, rounds and variants to time."""

from __future__ import annotations

import argparse
import os

import torch

from gradlens.bench.cases import CASES
from gradlens.bench.memory import memory, memory_child
from gradlens.bench.timing import run_case
from gradlens.bench.variants import VARIANTS

DESCRIPTION = "Per-step overhead of GradStats beside the tools users would pick instead."


def main(argv: list[str] | None = None) -> int:
    """Print the overhead tables; returns 1 when a target was missed."""
    parser = argparse.ArgumentParser(prog="python -m gradlens.bench", description=DESCRIPTION)
    parser.add_argument("--cases", default="thin,resnet20,mlp79m", help="comma list of thin, resnet20, mlp79m")
    parser.add_argument("--threads", default="1,2", help="torch thread counts to run at (default 1,2)")
    parser.add_argument("--rounds", type=int,
                        help="alternating rounds (default per case: 100, 45, 9; the heavy peers a third, >= 5)")
    parser.add_argument("--steps", type=int, help="steps per round (default per case: 10, 2, 1)")
    parser.add_argument("--variants", help=f"comma list of variants to time beside bare (default: all of "
                                           f"{', '.join(n for n in VARIANTS if VARIANTS[n].group)})")
    parser.add_argument("--no-peers", action="store_true", help="time only bare and the gradlens variants")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--memory-steps", type=int, default=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child, args.memory_steps)
        return 0
    keys = [key.strip() for key in args.cases.split(",") if key.strip()]
    unknown = [key for key in keys if key not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {sorted(CASES)}")
    variants = None
    if args.variants:
        variants = [name.strip() for name in args.variants.split(",") if name.strip()]
        unknown = [name for name in variants if name not in VARIANTS or not VARIANTS[name].group]
        if unknown:
            parser.error(f"unknown variants {unknown}; choose from {[n for n in VARIANTS if VARIANTS[n].group]}")
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
            missed += run_case(key, CASES[key], args.rounds, args.steps, not args.no_peers, variants)
    print("\nall targets met" if not missed else "\nmissed:\n  " + "\n  ".join(missed))
    return 1 if missed else 0
