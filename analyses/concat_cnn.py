"""Document 003's CNN (Figure 2, Tables 4 and 5): concat-skip vs vanilla vs reinforced vanilla.

One run = one ``concat_cnn_{skip|vanilla|reinforced}`` trained on one dataset and seed, with GradStats and
DominantFlow (σ) recorded. The per-epoch ``test_acc`` scalar is the accuracy on the held-out split (the
document's "val"); ``train_acc`` is the running accuracy over each epoch's mini-batches. The training-time
ratio of Table 5 is measured separately, with both nets interleaved, by :mod:`analyses.concat_cnn_timing`.

The document gives neither optimiser, batch size nor schedule; we use SGD, η = 0.01, momentum 0.9, no
weight decay, PyTorch's default initialisation. ``paper``: CIFAR-10 (its test set as the validation split),
batch 128, 30 epochs, 3 seeds. ``quick``: the whole MNIST subset (8 000 training images, 2 000 held-out;
1×28×28 input, so the maps are 28/14/7/3 pixels instead of 32/16/8/4) because CIFAR-10 is not here,
batch 32, 3 epochs (750 steps), 2 seeds. With batch 128 and 4 000 images (93 steps) the vanilla and
reinforced nets never left the initial loss plateau (12 % accuracy), so the table compared a training net
with non-training ones; at batch 32 the vanilla net leaves it during the first epoch (95.6 % after three).
``medium``: the whole subset at the paper preset's batch 128, 15 epochs (945 steps), 3 seeds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from analyses.common import load_data, probe_batch, run_device, train_config, train_recorded
from analyses.van_common import flow_probes
from gradlens.models import create_model

VARIANTS = ("skip", "vanilla", "reinforced")


@dataclass(frozen=True)
class Config:
    """Sweep: variants × seeds on one dataset, and the training settings."""

    dataset: str
    epochs: int
    seeds: tuple[int, ...] = (0,)
    variants: tuple[str, ...] = VARIANTS
    n_train: int | None = None
    n_test: int | None = None
    lr: float = 0.01
    momentum: float = 0.9
    batch_size: int = 128
    grad_every: int = 4
    sigma_epochs: int = 1
    probe_batch: int = 16

    @classmethod
    def smoke(cls) -> Config:
        return cls("digits", 1, n_train=128, n_test=64, grad_every=1, probe_batch=4)

    @classmethod
    def quick(cls) -> Config:
        return cls("mnist", 3, seeds=(0, 1), n_train=8000, n_test=2000, batch_size=32, grad_every=16, sigma_epochs=3,
                   probe_batch=8)

    @classmethod
    def medium(cls) -> Config:
        # the paper preset's batch 128 on the whole MNIST subset, 15 epochs (945 steps), 3 seeds
        return cls("mnist", 15, seeds=(0, 1, 2), n_train=8000, n_test=2000, grad_every=16, sigma_epochs=3,
                   probe_batch=8)

    @classmethod
    def paper(cls) -> Config:
        return cls("cifar10", 30, seeds=(0, 1, 2), grad_every=50, sigma_epochs=5, probe_batch=32)


def runs(config: Config) -> list[dict]:
    """One run per variant × seed."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("variants", "seeds")}
    return [
        {"analysis": "concat_cnn", **settings, "model": f"concat_cnn_{variant}", "variant": variant, "seed": seed}
        for variant in config.variants
        for seed in config.seeds
    ]


def execute(params: dict, path: Path, *, data_dir: str | None, resume: bool, progress: bool) -> None:
    """Train one CNN."""
    data = load_data(params, data_dir)
    channels, size, _ = data.input_shape
    torch.manual_seed(params["seed"])
    model = create_model(params["model"], in_channels=channels, image_size=size, num_classes=data.num_classes)
    model.to(run_device(params))
    config = train_config(params, log_every=0)
    steps_per_epoch = -(-data.n_train // config.batch_size)
    train_recorded(
        params,
        path,
        model=model,
        data=data,
        config=config,
        probes=flow_probes(steps_per_epoch, config.epochs, params["grad_every"], params["sigma_epochs"]),
        resume=resume,
        progress=progress,
        probe_batch=probe_batch(data, params["probe_batch"], seed=params["seed"]),
    )
