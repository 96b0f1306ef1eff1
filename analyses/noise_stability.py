"""Noise stability and dominant gradient flow of plain vs residual nets (document 004, section 5, appendix D).

Trains simplified plain/residual nets (depths ``simplified_depths``) and fully-fledged ``plain_v1_D`` /
``resnet_v1_D`` (``D = fledged_depth``) with probes on one fixed probe batch of test samples:

- simplified nets: ``LayerCushion`` at the last step (every layer, as the document: the two channel-doubling
  block convolutions of a ResNet with the identity part of their ID entries, document 004, eq. 1, i.e. the
  option-A shortcut), ``DominantFlow`` at the first and the last step, ``FinalGradHist`` (residual nets
  only) every ``hist_every`` steps of the first
  ``hist_epochs`` epochs, ``GradStats`` every ``grad_every`` steps;
- fully-fledged nets: ``InterlayerCushion`` of the ``block_index``-th block in the three BatchNorm readings
  (``ICUSHION_READINGS``: running statistics, statistics of the probe batch, of each sample alone) and
  ``DominantFlow`` at the first and the last step, and ``GradStats``.

Presets: ``paper`` is the document's CIFAR-10 setup. ``quick`` trains on the whole 8 000-image MNIST subset
2×2 average-pooled to 14×14 (as :mod:`analyses.simplified_training`), batch 32; the simplified nets with
the schedule of simplified_training's quick preset (6 epochs, 1 500 steps, learning rate /10 after epochs 4
and 5), the fully-fledged ones 3 epochs at constant η = 0.1, so the nets whose cushions and σ are measured
have learned: at 28×28 with batch 128 (96 steps) the simplified nets ended at 14–30 % test accuracy, and
with 750 steps at constant η = 0.01 the plain-20 collapsed and the residual-32 had not left the plateau.
``smoke`` uses the embedded 8×8 digits.

File layout: the training run (probes, scalars, checkpoint) is the sibling ``<key>.train.h5``; ``execute``
then copies what the figures read into a computed result at ``path`` (the file the runner tracks), with
arrays named ``<probe>/<quantity>`` (+ ``<probe>/steps`` and ``<probe>/layers``) and ``final/<scalar>``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from analyses.common import load_data, probe_batch, train_config, train_recorded
from gradlens.loader import load
from gradlens.models import create_model
from gradlens.probes import DominantFlow, FinalGradHist, GradStats, InterlayerCushion, LayerCushion
from gradlens.probes.base import Schedule
from gradlens.results import save_result

FINAL_SCALARS = ("epoch_train_loss", "test_loss", "test_acc")
#: InterlayerCushion probe name -> its BatchNorm reading (``bn_statistics`` of the metric).
ICUSHION_READINGS = {
    "interlayer_cushion": "running",
    "interlayer_cushion_batch": "batch",
    "interlayer_cushion_sample": "sample",
}


@dataclass(frozen=True)
class Config:
    """Sweep of document 004's noise-stability and dominant-flow measurements.

    Attributes:
        dataset, n_train, n_test: data (``n_*`` None: the whole set); the nets take the data's channels and
            image size.
        downsample: average-pooling factor of the images (1: as stored); quick scale buys SGD steps with it.
        simplified_depths: depths of the simplified nets (document: 20 and 32).
        fledged_depth: depth of the fully-fledged ResNet-v1 / plain net (document: 20).
        seeds: seeds of the initialisation and the mini-batch order.
        epochs_simplified, epochs_fledged: training epochs (document: 200 and 180).
        lr_simplified, lr_fledged: initial learning rates (document: 0.01 and 0.1).
        milestones_simplified, milestones_fledged: epochs where the learning rate is divided by 10.
        batch_size, momentum, weight_decay: SGD settings (document: 128, 0.9, 1e-4).
        probe_size: samples of the fixed probe batch.
        cushion_layer: the layer (1-based, stem convolution = 1) of the cushion histogram (document: 10).
        block_index: the block (1-based) of the interlayer cushion (document: 5th of 9).
        hist_epochs, hist_every: FinalGradHist fires every ``hist_every`` steps of the first ``hist_epochs``.
        grad_every: GradStats schedule.
    """

    dataset: str
    n_train: int | None
    n_test: int | None
    simplified_depths: tuple[int, ...]
    fledged_depth: int
    seeds: tuple[int, ...]
    epochs_simplified: int
    epochs_fledged: int
    probe_size: int
    cushion_layer: int
    block_index: int
    hist_epochs: int
    hist_every: int
    grad_every: int
    lr_simplified: float = 0.01
    lr_fledged: float = 0.1
    milestones_simplified: tuple[int, ...] = ()
    milestones_fledged: tuple[int, ...] = ()
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 1e-4
    downsample: int = 1

    @classmethod
    def smoke(cls) -> Config:
        return cls(
            dataset="digits", n_train=128, n_test=64, simplified_depths=(8, 11),
            fledged_depth=8, seeds=(0,), epochs_simplified=1, epochs_fledged=1, probe_size=8, cushion_layer=3,
            block_index=2, hist_epochs=1, hist_every=1, grad_every=1, batch_size=64,
        )

    @classmethod
    def quick(cls) -> Config:
        return cls(
            dataset="mnist", n_train=None, n_test=1000, simplified_depths=(20, 32),
            fledged_depth=20, seeds=(0,), epochs_simplified=6, epochs_fledged=3, probe_size=128, cushion_layer=10,
            block_index=5, hist_epochs=3, hist_every=16, grad_every=10, batch_size=32, downsample=2,
            milestones_simplified=(4, 5),
        )

    @classmethod
    def paper(cls) -> Config:
        return cls(
            dataset="cifar10", n_train=None, n_test=None, simplified_depths=(20, 32),
            fledged_depth=20, seeds=(0,), epochs_simplified=200, epochs_fledged=180, probe_size=256,
            cushion_layer=10, block_index=5, hist_epochs=4, hist_every=1, grad_every=50,
            milestones_simplified=(120, 160), milestones_fledged=(90, 135),
        )


def runs(config: Config) -> list[dict]:
    """Simplified plain/residual nets of every depth and the fully-fledged pair, per seed."""
    shared = {
        k: v
        for k, v in asdict(config).items()
        if k in ("dataset", "n_train", "n_test", "downsample", "batch_size", "momentum",
                 "weight_decay", "probe_size", "grad_every")
    }
    out = []
    for seed in config.seeds:
        for depth in config.simplified_depths:
            for kind in ("plain", "residual"):
                name = f"simplified_{'resnet' if kind == 'residual' else 'plain'}_{depth}"
                out.append({
                    "analysis": "noise_stability", "family": "simplified", "model": name, "kind": kind,
                    "depth": depth, "seed": seed, "epochs": config.epochs_simplified, "lr": config.lr_simplified,
                    "milestones": list(config.milestones_simplified), "cushion_layer": config.cushion_layer,
                    "hist_epochs": config.hist_epochs, "hist_every": config.hist_every, **shared,
                })
        for kind in ("plain", "residual"):
            name = f"{'resnet' if kind == 'residual' else 'plain'}_v1_{config.fledged_depth}"
            out.append({
                "analysis": "noise_stability", "family": "fledged", "model": name, "kind": kind,
                "depth": config.fledged_depth, "seed": seed, "epochs": config.epochs_fledged, "lr": config.lr_fledged,
                "milestones": list(config.milestones_fledged), "block_index": config.block_index, **shared,
            })
    return out


def execute(params: dict, path: Path, *, data_dir: str | None, resume: bool, progress: bool) -> None:
    """Train one net with its probes into ``<key>.train.h5``, then store what the figures read at ``path``."""
    data = load_data(params, data_dir)
    torch.manual_seed(params["seed"])
    channels, size = data.input_shape[0], data.input_shape[-1]
    model = create_model(params["model"], in_channels=channels, image_size=size, num_classes=data.num_classes)
    batch = probe_batch(data, params["probe_size"])
    config = train_config(params, weight_decay=params["weight_decay"], milestones=tuple(params["milestones"]))
    steps = config.epochs * -(-data.n_train // config.batch_size)
    first_last = Schedule.first_last(steps)
    spec = model.gradlens_spec()
    meta: dict = {}
    probes: list = [GradStats(every=params["grad_every"], params="weights")]
    if params["family"] == "simplified":
        meta["cushion_layer_name"] = spec.layers[params["cushion_layer"] - 1].name
        probes += [LayerCushion(every=[steps - 1]), DominantFlow(every=first_last)]
        if params["kind"] == "residual":
            hist_steps = min(steps, params["hist_epochs"] * -(-data.n_train // config.batch_size))
            probes.append(FinalGradHist(every=range(0, hist_steps, params["hist_every"])))
    else:
        meta["block_name"] = spec.blocks[params["block_index"] - 1]
        meta["n_blocks"] = len(spec.blocks)
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
    for probe, quantities in (
        ("layer_cushion", ("mu",)),
        ("dominant_flow", ("sigma",)),
        ("final_grad_hist", ("counts", "edges", "count", "mean", "std")),
        *((probe, ("mu",)) for probe in ICUSHION_READINGS),
    ):
        if probe not in run.probes:
            continue
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

