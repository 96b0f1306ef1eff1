"""Vanishing gradients through depth with and without skips (document 001, "the vanishing gradient problem",
"skip connections via addition / concatenation"; item sk-fig1).

One training run per (kind, seed): ``explainer_{plain|residual|dense}_{depth}`` (the same ReLU MLP with no
skips, additive identity skips, or DenseNet-style concatenative skips; PyTorch's default initialisation,
the setting in which the plain net's gradients vanish), :class:`~gradlens.probes.GradStats` at every step:
the per-layer weight-gradient norm ‖∂L/∂W^(ℓ)‖₂ at the first step (the initialised net) and over training.
The document has no experiment of its own; depth, width and schedule are this analysis's choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from analyses.common import load_data, run_device, train_config, train_recorded
from gradlens.models import create_model
from gradlens.probes import GradStats

KINDS = ("plain", "residual", "dense")


@dataclass(frozen=True)
class Config:
    """Data, depth, width, schedule, seeds."""

    dataset: str
    n_train: int | None
    n_test: int | None
    depth: int
    seeds: tuple[int, ...]
    epochs: int
    width: int = 64
    growth: int = 16
    batch_size: int = 64
    lr: float = 0.02
    momentum: float = 0.9

    @classmethod
    def smoke(cls) -> Config:
        return cls("digits", 256, 128, depth=8, seeds=(0,), epochs=1)

    @classmethod
    def quick(cls) -> Config:
        return cls("mnist", 2000, 1000, depth=30, seeds=(0, 1, 2), epochs=2)

    @classmethod
    def medium(cls) -> Config:
        """= quick: the sk items' gradient-flow comparison shows at quick."""
        return cls.quick()

    @classmethod
    def paper(cls) -> Config:
        return cls("mnist", None, None, depth=50, seeds=(0, 1, 2, 3, 4), epochs=10)


def runs(config: Config) -> list[dict]:
    """Every kind for every seed."""
    return [
        {
            "analysis": "skip_gradflow",
            "model": f"explainer_{kind}_{config.depth}",
            "kind": kind,
            "depth": config.depth,
            "seed": seed,
            "epochs": config.epochs,
            "dataset": config.dataset,
            "n_train": config.n_train,
            "n_test": config.n_test,
            "width": config.width,
            "growth": config.growth,
            "batch_size": config.batch_size,
            "lr": config.lr,
            "momentum": config.momentum,
        }
        for seed in config.seeds
        for kind in KINDS
    ]


def execute(params: dict, path: Path, *, data_dir: str | None, resume: bool, progress: bool) -> None:
    """Train one explainer MLP with GradStats at every step."""
    data = load_data(params, data_dir)
    options = {"input_shape": data.input_shape, "width": params["width"], "num_classes": data.num_classes}
    if params["kind"] == "dense":
        options["growth"] = params["growth"]
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
