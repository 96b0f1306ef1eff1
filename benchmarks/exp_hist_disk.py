"""Bytes per parameter per record of GradStats' exponent histograms on disk, raw and with h5py's compressors.

Trains a model (default ``resnet_v1_20`` on a fixed batch of random 32×32 images, SGD with momentum, lr 0.05) for
``--steps`` steps with ``GradStats(exponents=True)`` recorded at every step, then writes the recorded
``exp_hist``/``exp_zero``/``exp_nonfinite`` (uint32) and, for scale, the five statistics (float64 as recorded today,
and float32) into fresh HDF5 files, chunked ``--chunk`` records deep, with each filter h5py ships: none, gzip
(levels 1 and 4, with and without the shuffle filter) and lzf (with shuffle). Prints bytes per parameter per
record for each, and the fraction of exponent buckets that are non-zero.

Run: ``python benchmarks/exp_hist_disk.py [--model resnet_v1_20] [--steps 256] [--chunk 64]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import h5py
import numpy as np
import torch
from torch import nn

import gradlens
from gradlens.models import create_model
from gradlens.probes import GradStats

FILTERS = {
    "none": {},
    "gzip 1": {"compression": "gzip", "compression_opts": 1},
    "gzip 1 + shuffle": {"compression": "gzip", "compression_opts": 1, "shuffle": True},
    "gzip 4 + shuffle": {"compression": "gzip", "compression_opts": 4, "shuffle": True},
    "lzf + shuffle": {"compression": "lzf", "shuffle": True},
}
EXPONENTS = ("exp_hist", "exp_zero", "exp_nonfinite")
STATISTICS = ("mean", "mean_abs", "norm", "max_abs", "nonfinite")


def record(path: str, model_name: str, steps: int) -> tuple[int, int]:
    """Train ``steps`` steps with the exponent histograms at every step; (parameter tensors, records)."""
    torch.manual_seed(0)
    model = create_model(model_name)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    x = model.example_input(128, generator) if hasattr(model, "example_input") else torch.randn(128, 784)
    y = torch.randint(0, 10, (128,), generator=generator)
    with gradlens.attach(model, optimizer, path, probes=[GradStats(exponents=True)], every=1, overwrite=True):
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    return sum(1 for p in model.parameters() if p.requires_grad), steps


def stored_bytes(arrays: dict[str, np.ndarray], chunk: int, options: dict, folder: str) -> int:
    """Bytes of the datasets holding ``arrays`` (their allocated storage, chunked ``chunk`` records deep)."""
    path = os.path.join(folder, "probe.h5")
    with h5py.File(path, "w") as file:
        total = 0
        for name, values in arrays.items():
            chunks = (min(chunk, len(values)), *values.shape[1:])
            dataset = file.create_dataset(name, data=values, chunks=chunks, fletcher32=True, **options)
            total += dataset.id.get_storage_size()
    return total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet_v1_20", help="registered model (default resnet_v1_20)")
    parser.add_argument("--steps", type=int, default=256, help="recorded steps (default 256)")
    parser.add_argument("--chunk", type=int, default=64, help="records per chunk (default 64)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "run.h5")
        params, steps = record(path, args.model, args.steps)
        run = gradlens.load(path)
        exponents = {name: run.array("grad_stats", name)[1] for name in EXPONENTS}
        stats64 = {name: run.array("grad_stats", name)[1] for name in STATISTICS}
        stats32 = {name: values.astype(np.float32) for name, values in stats64.items()}
        occupied = float((exponents["exp_hist"] > 0).mean())
        print(f"{args.model}: {params} parameter tensors, {steps} records (GradStats every step), chunks of "
              f"{args.chunk} records; {occupied:.1%} of the exponent buckets are non-zero")
        print(f"{'filter':<18} {'exponent histograms':>20} {'5 statistics f64':>17} {'5 statistics f32':>17}"
              "   (bytes per parameter per record)")
        for label, options in FILTERS.items():
            sizes = [stored_bytes(arrays, args.chunk, options, folder) / (params * steps)
                     for arrays in (exponents, stats64, stats32)]
            print(f"{label:<18} {sizes[0]:>20.1f} {sizes[1]:>17.1f} {sizes[2]:>17.1f}")


if __name__ == "__main__":
    main()
