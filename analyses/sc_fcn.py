"""Five-layer sigmoid FCN vs SCFCN (short circuit from layer 4 to layer 2) on MNIST (document 000, 5.2.1,
Figure 5).

One training run per (model, seed): ``sigmoid_fcn_5`` and ``scfcn_5`` (same initial weights for the same
seed, SC weight ``sc_weight``), :class:`~gradlens.probes.GradStats` at every step: the per-layer mean
gradient (signed ``mean`` and ``mean_abs``) of Figure 5. The document gives no widths, optimiser or
schedule for this experiment; the zoo's width 100 and plain SGD are used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from analyses.common import load_data, run_device, train_config, train_recorded
from gradlens.models import create_model
from gradlens.probes import GradStats

MODELS = ("sigmoid_fcn_5", "scfcn_5")


@dataclass(frozen=True)
class Config:
    """Data, schedule and seeds."""

    dataset: str
    n_train: int | None
    n_test: int | None
    seeds: tuple[int, ...]
    epochs: int
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.0
    width: int = 100
    sc_weight: float = 0.2

    @classmethod
    def smoke(cls) -> Config:
        return cls("digits", 512, 128, seeds=(0,), epochs=1)

    @classmethod
    def quick(cls) -> Config:
        return cls("mnist", None, None, seeds=(0, 1, 2), epochs=2)

    @classmethod
    def medium(cls) -> Config:
        """= quick: the fully-connected short-circuit items show at quick."""
        return cls.quick()

    @classmethod
    def paper(cls) -> Config:
        return cls("mnist", None, None, seeds=(0, 1, 2, 3, 4), epochs=20)


def runs(config: Config) -> list[dict]:
    """Both models for every seed."""
    return [
        {
            "analysis": "sc_fcn",
            "model": model,
            "sc": model == "scfcn_5",
            "seed": seed,
            "epochs": config.epochs,
            "dataset": config.dataset,
            "n_train": config.n_train,
            "n_test": config.n_test,
            "batch_size": config.batch_size,
            "lr": config.lr,
            "momentum": config.momentum,
            "width": config.width,
            "sc_weight": config.sc_weight,
        }
        for seed in config.seeds
        for model in MODELS
    ]


def execute(params: dict, path: Path, *, data_dir: str | None, resume: bool, progress: bool) -> None:
    """Train one FCN/SCFCN with GradStats at every step."""
    data = load_data(params, data_dir)
    options = {"input_shape": data.input_shape, "width": params["width"], "num_classes": data.num_classes}
    if params["sc"]:
        options["sc_weight"] = params["sc_weight"]
    torch.manual_seed(params["seed"])
    model = create_model(params["model"], **options).to(run_device(params))
    config = train_config(params)
    train_recorded(
        params,
        path,
        model=model,
        data=data,
        config=config,
        probes=[GradStats(every=1, params="weights")],
        resume=resume,
        progress=progress,
    )
