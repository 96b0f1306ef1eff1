"""Thin 50-unit MLPs of document 002, section 4.1: test accuracy vs depth for six architectures (Figure 1).

One run = one ``thin_mlp_{variant}_{depth}`` trained with SGD + momentum on one dataset and seed, with
GradStats (per-layer weight-gradient statistics), DominantFlow (σ per block) and, for VAN/VAN(λ = 0), the
α probe recorded (see :mod:`analyses.van_common`). The figures read the per-epoch ``test_acc`` scalar.

Document setup (``paper``): depths 1..30, 50 epochs, batch 128, η = 0.001, momentum 0.9, α init 0,
λ init −1, η′ = η/2, 10 runs, full MNIST and Fashion-MNIST. ``quick``: the 8 000/2 000 MNIST subset gives
63 steps per epoch instead of 469, so 15 epochs are 945 steps against the document's 23 450; the quick
preset therefore uses η = 0.01 (η′ = η/2 still) so that the shallow nets train to the accuracy range of
the document; every other setting is the document's. The Fashion-MNIST runs are a separate analysis
(:mod:`analyses.van_thin_fashion`) that is marked not run when the data is absent. ``medium`` = ``quick``
(the figure's claim shows at quick). Every preset reads eq. 7 with ``alpha_grad_scale`` = 128, the loss summed
over the document's batch (see :mod:`analyses.van_preact`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from analyses.common import run_device, train_config
from analyses.optional_data import load_or_mark
from analyses.van_common import train_variant
from gradlens.models import create_model

VARIANTS = ("plain", "resnet", "highway", "dirac", "van", "van0")


@dataclass(frozen=True)
class Config:
    """Sweep: variants × depths × seeds on one dataset, and the training settings."""

    dataset: str
    depths: tuple[int, ...]
    seeds: tuple[int, ...]
    epochs: int
    lr: float
    n_train: int | None = None
    n_test: int | None = None
    variants: tuple[str, ...] = VARIANTS
    batch_size: int = 128
    momentum: float = 0.9
    lambda_lr_ratio: float = 0.5
    lambda_init: float = -1.0
    grad_every: int = 8
    sigma_epochs: int | None = 5  # σ (DominantFlow) every 5 epochs and at the last step
    probe_batch: int = 64
    optional_data: bool = False
    # eq. 7 read with the loss summed over a batch of the document's 128 samples (∂C/∂α × 128; at a smaller batch
    # the batch mean × 128 estimates that sum): the one reading of eqs. 6–8 under which the skips go when the
    # learning rate drops, as document 002 reports (docs/figures.md, "VAN phase-out speed")
    alpha_grad_scale: float = 128.0

    @classmethod
    def smoke(cls) -> Config:
        return cls("digits", (1, 3), (0,), 1, 0.01, n_train=256, n_test=128, grad_every=2, probe_batch=16)

    @classmethod
    def quick(cls) -> Config:
        return cls("mnist", (1, 5, 10, 20, 30), (0, 1), 15, 0.01)

    @classmethod
    def medium(cls) -> Config:
        """= quick: van-fig1's claim (plain degrades with depth far more than VAN) already shows there."""
        return cls.quick()

    @classmethod
    def paper(cls) -> Config:
        return cls("mnist", tuple(range(1, 31)), tuple(range(10)), 50, 0.001, grad_every=50)


def runs(config: Config) -> list[dict]:
    """One run per variant × depth × seed."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("depths", "seeds", "variants")}
    return [
        {
            "analysis": "van_thin",
            **settings,
            "model": f"thin_mlp_{variant}_{depth}",
            "variant": variant,
            "depth": depth,
            "seed": seed,
        }
        for variant in config.variants
        for depth in config.depths
        for seed in config.seeds
    ]


def execute(params: dict, path: Path, *, data_dir: str | None, resume: bool, progress: bool) -> None:
    """Train one thin MLP (or write the not-run marker when optional data is absent)."""
    data = load_or_mark(params, path, data_dir)
    if data is None:
        return
    torch.manual_seed(params["seed"])
    model = create_model(params["model"], input_shape=data.input_shape, num_classes=data.num_classes)
    model.to(run_device(params))
    config = train_config(params, log_every=0)
    train_variant(params, path, model=model, data=data, config=config, resume=resume, progress=progress)
