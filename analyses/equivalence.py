"""Equivalent training of equivalently initialised nets (document 004, section 4.1, appendix B): Table 2,
Figure 6.

For each (depth, seed), two training runs in float64 on the CPU, from the same HMWI draw ``r_0`` and on the
same mini-batches:

- ``residual``: ``simplified_resnet_{d}`` from ``r_0`` with the penalty λ‖r‖²;
- ``plain``: the plain net with ``p_0 = T(r_0)`` (:func:`~gradlens.models.transforms.equivalent_plain`) and
  the penalty λ‖T⁻¹(p)‖² (:func:`~gradlens.models.transforms.decay_penalty`, ``kind="t_inverse"``).

In exact arithmetic the two runs have equal losses, costs and errors at every step; the recorded per-step
``train_loss`` of the two files differs by rounding only. Both record GradStats at every step and the
trainer's epoch scalars (``epoch_train_loss``, ``cost``, ``test_acc``). Learning rate 1e-2 for every depth
(document's Table 2), /10 at 60 % and 80 % of the epochs, λ = 1e-4, momentum 0.9.

The two runs of a pair must be made with the same number of torch threads (the runner gives every worker
the same) so that their reductions round alike apart from what the architectures themselves change.

Presets: ``paper`` is the document's CIFAR-10 setup (depths 20/32/44, 200 epochs, batch 128);
``quick`` uses 192 training / 128 test images of the 10k real-MNIST subset, batch 16, 10 epochs (120 steps;
learning rate /10 after epochs 6 and 8), one seed (float64 convolutions are several times slower than float32
on a CPU). At depth 20 the first loss difference appears at step 45 and 12 of the 120 steps differ, by one
float64 ulp of the loss (4.4e-16); with 60 steps none did; those nets stay at chance (the HMWI plateau), so
``medium`` trains ones that learn: 2 048 / 512 images 2×2 average-pooled to 14×14, depth 20, the document's
batch 128, 40 epochs (640 steps). ``smoke`` uses the embedded 8×8 digits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from analyses.common import load_data, run_device, train_config, train_recorded
from analyses.simplified_training import initial_metrics
from gradlens.models import create_model
from gradlens.models.transforms import decay_penalty, equivalent_plain
from gradlens.probes import GradStats

PENALTIES = {"residual": "l2", "plain": "t_inverse"}


@dataclass(frozen=True)
class Config:
    """Pairs of equivalently initialised nets (see the module docstring)."""

    dataset: str
    n_train: int | None
    n_test: int | None
    depths: tuple[int, ...]
    seeds: tuple[int, ...]
    epochs: int
    figure_depth: int
    batch_size: int = 128
    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestone_fractions: tuple[float, ...] = (0.6, 0.8)
    downsample: int = 1

    @classmethod
    def smoke(cls) -> Config:
        return cls("digits", 96, 64, depths=(5, 8), seeds=(0,), epochs=2, figure_depth=5, batch_size=32)

    @classmethod
    def quick(cls) -> Config:
        return cls("mnist", 192, 128, depths=(20, 32, 44), seeds=(0,), epochs=10, figure_depth=20, batch_size=16)

    @classmethod
    def medium(cls) -> Config:
        # nets that train: 2 048 images at 14×14, the document's batch 128, 40 epochs (640 steps), depth 20
        return cls("mnist", 2048, 512, depths=(20,), seeds=(0,), epochs=40, figure_depth=20, downsample=2)

    @classmethod
    def paper(cls) -> Config:
        return cls("cifar10", None, None, depths=(20, 32, 44), seeds=(0,), epochs=200, figure_depth=20)


def runs(config: Config) -> list[dict]:
    """depths × seeds × (plain, residual)."""
    return [
        {
            "analysis": "equivalence",
            "model": f"simplified_{'resnet' if kind == 'residual' else 'plain'}_{depth}",
            "kind": kind,
            "depth": depth,
            "seed": seed,
            "figure": depth == config.figure_depth,
            "epochs": config.epochs,
            "dataset": config.dataset,
            "n_train": config.n_train,
            "n_test": config.n_test,
            "batch_size": config.batch_size,
            "lr": config.lr,
            "momentum": config.momentum,
            "weight_decay": config.weight_decay,
            "milestones": [round(f * config.epochs) for f in config.milestone_fractions],
            "dtype": "float64",
            **({"downsample": config.downsample} if config.downsample != 1 else {}),
        }
        for depth in config.depths
        for seed in config.seeds
        for kind in ("plain", "residual")
    ]


def execute(params: dict, path: Path, *, data_dir: str | None, resume: bool, progress: bool) -> None:
    """Train the plain (p_0 = T(r_0), λ‖T⁻¹(p)‖²) or the residual (r_0, λ‖r‖²) net of one pair."""
    data = load_data(params, data_dir)
    options = {"in_channels": data.input_shape[0], "image_size": data.input_shape[-1],
               "num_classes": data.num_classes}
    torch.manual_seed(params["seed"])
    model = create_model(f"simplified_resnet_{params['depth']}", **options).to(run_device(params), torch.float64)
    if params["kind"] == "plain":
        model = equivalent_plain(model)
    config = train_config(params, milestones=tuple(params["milestones"]), dtype=params["dtype"])
    lam, kind = params["weight_decay"], PENALTIES[params["kind"]]

    def penalty(net: nn.Module) -> torch.Tensor:
        return lam * decay_penalty(net, kind)

    train_recorded(
        params,
        path,
        model=model,
        data=data,
        config=config,
        probes=[GradStats(every=1, params="weights")],
        resume=resume,
        progress=progress,
        penalty=penalty,
        extra_meta=initial_metrics(model, data, penalty),
    )
