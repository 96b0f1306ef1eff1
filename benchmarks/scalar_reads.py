"""Reading one logged scalar of a long run (issue 23.3): its own table (schema 5) vs a scan of every name's rows.

A ``Recorder`` logs ``--names`` scalars (default 10) at each of ``--steps`` steps (default 10^5), no probes; the
file is then copied, and the copy's ``/scalars/by_name`` removed (what a schema 4 file holds: the loader scans
the long-format ``/scalars`` table for the name). Each read below runs ``--repeats`` times on each file,
interleaved (machines here are noisy), and the table gives the median CPU seconds per read and the ratio:

- ``scalar(all)``: ``run.scalar("m0")`` (every record of one name);
- ``scalar(range 1000)``: ``run.scalar("m0", start=S // 2, stop=S // 2 + 1000)``;
- ``scalar_summary``: ``run.scalar_summary("m0", points=2000)`` (what a report or ``watch`` reads).

Run: ``python benchmarks/scalar_reads.py [--steps 100000] [--names 10] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from gradlens.loader import load
from gradlens.recorder import Recorder
from gradlens.schema import BY_NAME

LAYERS = [{"name": "fc", "kind": "Linear", "shape": [1, 1], "params": 1}]


def record(path: Path, steps: int, names: int) -> None:
    rng = np.random.default_rng(0)
    with Recorder(path, meta={}) as recorder:
        recorder.start(LAYERS, {})
        for step in range(steps):
            recorder.log_scalars(step, **{f"m{k}": float(v) for k, v in enumerate(rng.standard_normal(names))})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--names", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="scalar-reads-"))
    try:
        own, scan = folder / "v5.h5", folder / "v4.h5"
        record(own, args.steps, args.names)
        shutil.copy(own, scan)
        with h5py.File(scan, "r+") as file:
            del file[BY_NAME]
            file.attrs["schema_version"] = 4
        middle = args.steps // 2
        reads = {
            "scalar(all)": lambda run: run.scalar("m0"),
            "scalar(range 1000)": lambda run: run.scalar("m0", start=middle, stop=middle + 1000),
            "scalar_summary": lambda run: run.scalar_summary("m0", points=2000),
        }
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.repeats):
            for label, read in reads.items():
                for kind, path in (("own table", own), ("scan", scan)):
                    run = load(path)
                    start = time.process_time()
                    read(run)
                    times.setdefault((label, kind), []).append(time.process_time() - start)
        print(f"{args.steps} steps x {args.names} scalars, load {os.getloadavg()[0]:.1f}; median CPU s of "
              f"{args.repeats} interleaved reads")
        print("| read | own table (v5) | scan (v4) | scan / own |\n|---|---|---|---|")
        for label in reads:
            a, b = (statistics.median(times[(label, kind)]) for kind in ("own table", "scan"))
            print(f"| {label} | {a:.4f} | {b:.4f} | {b / a:.1f}x |")
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
