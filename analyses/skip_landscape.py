"""Loss landscapes with and without skip connections at equal depth (document 001, last section, after Li et
al. 2018; item sk-fig3).

Per (kind, seed): train ``mlp_{plain|resnet}_{depth}`` (the same ReLU MLP without / with identity skips,
He initialisation so that the plain net trains at all) with :class:`~gradlens.probes.GradStats`, then
evaluate the 2-D landscape ``L(θ + α·δ + β·η)`` around the trained weights along two filter-normalised
random directions (:func:`gradlens.landscape.loss_landscape`, ``resolution``² grid over ``[−span, span]²``,
on the first ``landscape_samples`` test samples).

Files: the training run is ``<key>.train.h5`` (with its checkpoint ``<key>.train.ckpt.pt``) next to the
run's file ``<key>.h5``, which is the computed landscape (a result: arrays ``alphas``, ``betas``, ``loss``,
``accuracy``, ``center_loss``, ``final_test_acc``). The landscape is written last, so the runner sees the
run finished only when both exist; a finished training run is reused, an unfinished one resumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from analyses.common import load_data, run_device, train_config, train_recorded
from analyses.runner import status
from gradlens.landscape import loss_landscape
from gradlens.loader import load
from gradlens.models import create_model
from gradlens.probes import GradStats
from gradlens.results import save_result
from gradlens.train import load_checkpoint

KINDS = ("plain", "resnet")


@dataclass(frozen=True)
class Config:
    """Data, depth, schedule, grid, seeds."""

    dataset: str
    n_train: int | None
    n_test: int | None
    depth: int
    seeds: tuple[int, ...]
    epochs: int
    resolution: int
    landscape_samples: int
    span: float = 1.0
    width: int = 64
    batch_size: int = 64
    lr: float = 0.02
    momentum: float = 0.9

    @classmethod
    def smoke(cls) -> Config:
        return cls("digits", 256, 128, depth=6, seeds=(0,), epochs=1, resolution=5, landscape_samples=64)

    @classmethod
    def quick(cls) -> Config:
        return cls("mnist", 4000, 1000, depth=20, seeds=(0,), epochs=3, resolution=31, landscape_samples=500)

    @classmethod
    def medium(cls) -> Config:
        """= quick: the sk items' loss landscapes show at quick."""
        return cls.quick()

    @classmethod
    def paper(cls) -> Config:
        return cls("mnist", None, None, depth=56, seeds=(0, 1), epochs=20, resolution=51, landscape_samples=2000)


def runs(config: Config) -> list[dict]:
    """Plain and residual net for every seed."""
    return [
        {
            "analysis": "skip_landscape",
            "model": f"mlp_{kind}_{config.depth}",
            "kind": kind,
            "depth": config.depth,
            "seed": seed,
            "epochs": config.epochs,
            "dataset": config.dataset,
            "n_train": config.n_train,
            "n_test": config.n_test,
            "width": config.width,
            "init": "he",
            "batch_size": config.batch_size,
            "lr": config.lr,
            "momentum": config.momentum,
            "resolution": config.resolution,
            "span": config.span,
            "landscape_samples": config.landscape_samples,
        }
        for seed in config.seeds
        for kind in KINDS
    ]


def execute(params: dict, path: Path, *, data_dir: str | None, resume: bool, progress: bool) -> None:
    """Train (or reuse the finished training run), then compute and store the landscape at ``path``."""
    data = load_data(params, data_dir)
    torch.manual_seed(params["seed"])
    model = create_model(
        params["model"],
        input_shape=data.input_shape,
        width=params["width"],
        init=params["init"],
        num_classes=data.num_classes,
    ).to(run_device(params))
    train_path = path.with_name(path.stem + ".train.h5")
    checkpoint = train_path.with_suffix(".ckpt.pt")
    if status(train_path) == "finished" and checkpoint.exists():
        model.load_state_dict(load_checkpoint(checkpoint).model)
    else:
        config = train_config(params)
        train_recorded(
            params,
            train_path,
            model=model,
            data=data,
            config=config,
            probes=[GradStats(every=1, params="weights")],
            resume=resume and train_path.exists(),
            progress=progress,
        )
    scalars = load(train_path).scalars()
    final_acc = scalars[scalars["name"] == "test_acc"]["value"].to_numpy()[-1]
    land = loss_landscape(
        model,
        data.x_test,
        data.y_test,
        resolution=params["resolution"],
        span=params["span"],
        batch_size=params["landscape_samples"],
        max_batches=1,
        seed=params["seed"],
    )
    arrays = {
        "alphas": land.alphas,
        "betas": land.betas,
        "loss": land.loss,
        "accuracy": land.accuracy,
        "center_loss": np.array(land.center_loss),
        "final_test_acc": np.array(final_acc),
    }
    meta = {"config": {**params, "data_source": data.source}, "samples": land.samples, "training_run": train_path.name}
    save_result(path, meta, arrays, overwrite=True)
