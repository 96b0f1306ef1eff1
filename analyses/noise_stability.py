"""Noise stability and dominant gradient flow of fully-fledged plain vs residual nets (document 004, section 5 and
appendix D.4.2): the interlayer cushion of yt-tab-icushion and panel (b) of Figure 12.

Trains ``plain_v1_D`` / ``resnet_v1_D`` (``D = depth``, BatchNorm, optimizer weight decay) with probes on one fixed
probe batch of test samples (:func:`analyses.common.probe_batch`, a local generator: training is not changed):
``InterlayerCushion`` of the ``block_index``-th block in the three BatchNorm readings (``ICUSHION_READINGS``:
running statistics, statistics of the probe batch, of each sample alone) and ``DominantFlow`` (σ^(ℓ), eq. 13) at
the first and the last step, and ``GradStats``.

The simplified plain/residual nets of the noise-stability items (Figure 3, Figure 10, Figure 12(a)) are not trained
here: they are the Table-1 runs of :mod:`analyses.simplified_training`, which record those probes themselves, read
through :mod:`analyses.simplified_noise`. A run's parameters keep ``"family": "fledged"`` (the key of the files
made when this analysis also trained the simplified nets).

Presets: ``paper`` is the document's setup (Figure 12: "fully-fledged networks are trained for ... 180 epochs
with initial learning rate ... 0.1"; CIFAR-10, batch 128, depth 20, learning rate /10 after epochs 90 and 135,
probe batch 256). ``medium``: the whole 8 000 / 2 000 MNIST subset 2×2 average-pooled to 14×14 (as
:mod:`analyses.simplified_training`), batch 128, η = 0.1 divided by 10 at 50 % and 75 % of 12 epochs (after
epochs 6 and 9, the document's 90 and 135 of 180), 756 steps, probe batch 128. ``quick``: the same images (1 000
test images), batch 32, 3 epochs at constant η = 0.1 (750 steps), so the nets whose cushions and σ are measured
have learned. ``smoke`` uses the embedded 8×8 digits and depth 8.

File layout: the training run (probes, scalars, checkpoint) is the sibling ``<key>.train.h5``; ``execute``
then copies what the figures read into a computed result at ``path`` (the file the runner tracks), with
arrays named ``<probe>/<quantity>`` (+ ``<probe>/steps`` and ``<probe>/layers``) and ``final/<scalar>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from analyses.common import load_data, probe_batch, run_device, train_config, train_recorded
from gradlens.loader import load
from gradlens.models import create_model
from gradlens.probes import DominantFlow, GradStats, InterlayerCushion
from gradlens.probes.base import Schedule
from gradlens.results import save_result

FINAL_SCALARS = ("epoch_train_loss", "test_loss", "test_acc")
#: InterlayerCushion probe name -> its BatchNorm reading (``bn_statistics`` of the metric).
ICUSHION_READINGS = {
    "interlayer_cushion": "running",
    "interlayer_cushion_batch": "batch",
    "interlayer_cushion_sample": "sample",
}
KIND_MODELS = {"plain": "plain_v1_{}", "residual": "resnet_v1_{}"}


@dataclass(frozen=True)
class Config:
    """Sweep of document 004's fully-fledged noise-stability and dominant-flow measurements.

    Attributes:
        dataset, n_train, n_test: data (``n_*`` None: the whole set); the nets take the data's channels and
            image size.
        downsample: average-pooling factor of the images (1: as stored).
        depth: depth of the fully-fledged ResNet-v1 / plain net (document: 20).
        seeds: seeds of the initialisation and the mini-batch order.
        epochs: training epochs (document: 180).
        lr: initial learning rate (document: 0.1).
        milestones: epochs where the learning rate is divided by 10.
        batch_size, momentum, weight_decay: SGD settings (document: 128, 0.9, 1e-4); the decay is the optimizer's.
        probe_size: samples of the fixed probe batch.
        block_index: the block (1-based) of the interlayer cushion (document: 5th of 9).
        grad_every: GradStats schedule.
    """

    dataset: str
    n_train: int | None
    n_test: int | None
    depth: int
    seeds: tuple[int, ...]
    epochs: int
    probe_size: int
    block_index: int
    grad_every: int
    lr: float = 0.1
    milestones: tuple[int, ...] = ()
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 1e-4
    downsample: int = 1

    @classmethod
    def smoke(cls) -> Config:
        return cls(dataset="digits", n_train=128, n_test=64, depth=8, seeds=(0,), epochs=1, probe_size=8,
                   block_index=2, grad_every=1, batch_size=64)

    @classmethod
    def quick(cls) -> Config:
        return cls(dataset="mnist", n_train=None, n_test=1000, depth=20, seeds=(0,), epochs=3, probe_size=128,
                   block_index=5, grad_every=10, batch_size=32, downsample=2)

    @classmethod
    def medium(cls) -> Config:
        # η /10 at 50 % and 75 % of the epochs: the document's 90 and 135 of 180
        return cls(dataset="mnist", n_train=None, n_test=None, depth=20, seeds=(0,), epochs=12, probe_size=128,
                   block_index=5, grad_every=10, downsample=2, milestones=(6, 9))

    @classmethod
    def paper(cls) -> Config:
        return cls(dataset="cifar10", n_train=None, n_test=None, depth=20, seeds=(0,), epochs=180, probe_size=256,
                   block_index=5, grad_every=50, milestones=(90, 135))


def runs(config: Config) -> list[dict]:
    """The fully-fledged plain and residual net, per seed."""
    return [
        {
            "analysis": "noise_stability", "family": "fledged", "model": KIND_MODELS[kind].format(config.depth),
            "kind": kind, "depth": config.depth, "seed": seed, "epochs": config.epochs, "lr": config.lr,
            "milestones": list(config.milestones), "block_index": config.block_index, "dataset": config.dataset,
            "n_train": config.n_train, "n_test": config.n_test, "downsample": config.downsample,
            "batch_size": config.batch_size, "momentum": config.momentum, "weight_decay": config.weight_decay,
            "probe_size": config.probe_size, "grad_every": config.grad_every,
        }
        for seed in config.seeds
        for kind in ("plain", "residual")
    ]


def execute(params: dict, path: Path, *, data_dir: str | None, resume: bool, progress: bool) -> None:
    """Train one fully-fledged net with its probes into ``<key>.train.h5``, then store what the figures read at
    ``path``."""
    data = load_data(params, data_dir)
    torch.manual_seed(params["seed"])
    channels, size = data.input_shape[0], data.input_shape[-1]
    model = create_model(params["model"], in_channels=channels, image_size=size, num_classes=data.num_classes)
    model.to(run_device(params))
    batch = probe_batch(data, params["probe_size"])
    config = train_config(params, weight_decay=params["weight_decay"], milestones=tuple(params["milestones"]))
    steps = config.epochs * -(-data.n_train // config.batch_size)
    first_last = Schedule.first_last(steps)
    spec = model.gradlens_spec()
    meta = {"block_name": spec.blocks[params["block_index"] - 1], "n_blocks": len(spec.blocks)}
    probes: list = [GradStats(every=params["grad_every"], params="weights")]
    probes += [
        InterlayerCushion(every=first_last, blocks=[meta["block_name"]], bn_statistics=reading, name=probe)
        for probe, reading in ICUSHION_READINGS.items()
    ]
    probes.append(DominantFlow(every=first_last))
    train_path = path.with_name(path.stem + ".train.h5")
    train_recorded(
        params, train_path, model=model, data=data, config=config, probes=probes, resume=resume,
        progress=progress, probe_batch=batch, extra_meta=meta,
    )
    run = load(train_path)
    arrays: dict[str, np.ndarray] = {}
    for probe, quantities in (("dominant_flow", ("sigma",)), *((probe, ("mu",)) for probe in ICUSHION_READINGS)):
        for quantity in quantities:
            recorded_steps, values, _, labels = run.array(probe, quantity)
            arrays[f"{probe}/{quantity}"] = values
        arrays[f"{probe}/steps"] = recorded_steps
        if "layer" in labels:
            arrays[f"{probe}/layers"] = np.array(labels["layer"])
    scalars = run.scalars()
    for name in FINAL_SCALARS:
        arrays[f"final/{name}"] = np.array(scalars.loc[scalars["name"] == name, "value"].iloc[-1])
    full_meta = {**run.meta.get("config", run.meta), **meta, "train_file": train_path.name}
    save_result(path, {"config": {**params, **{k: v for k, v in full_meta.items() if k not in params}}}, arrays,
                overwrite=True)

