"""Pre-activation CNNs of depth 8n + 2 (document 002, section 4.2): ResNet, VAN, VAN(λ = 0) and plain.

One run = one ``preact_{variant}_{depth}`` on one dataset and seed, recorded like :mod:`analyses.van_thin`
(GradStats, DominantFlow σ, and for VAN the α probe at every step); the per-epoch scalars give the
accuracy-vs-depth panels, the train/test error curves and Table 1, the α probe the α-residual curve.

Document setup (``paper``): CIFAR-10 with n ∈ {1, 2, 3, 4, 5, 6, 8, 10} and CIFAR-100 with n ∈ {1, 2, 3, 4},
165 epochs, η = 0.1 divided by 10 at epochs 82 and 125, momentum 0.9, batch 128, α init 0, λ init −1,
η′ = η/10, five runs. Not reproduced at any scale: the random-crop/flip augmentation (the trainer has
none) and the widths (the document does not state them; 16·(1, 2, 4, 8) as in He et al.). Weight decay
10⁻⁴ (not stated in the document; He et al.'s value).

``quick`` and ``medium`` train on ``fashion_mnist`` (a random 8 000 / 2 000 subset of the real set, 2×2
average-pooled to 14×14), which stands in for CIFAR-10 and CIFAR-100 (the captions say so). Until issue 24 the
stand-in was the repository's MNIST subset, on which the plain net reaches the data's ceiling at every depth
(medium: 98.05 → 98.00 % from 10 to 26 layers), so the document's premise, a plain net that loses accuracy with
depth and a VAN that should not, was absent and "VAN ≥ plain" compared two saturated nets. Fashion-MNIST is the
harder task (the quick thin nets of Figure 1 reach 82.5 % at 10 layers), with natural-object classes like
CIFAR's, and the same image size and budget as before, so only the task changed. As van-fig1's Fashion-MNIST
panel, these runs are ``optional_data`` below the paper scale: without Fashion-MNIST in the data folders
(Debian's ``dataset-fashion-mnist``, or ``--data-dir``) each leaves a not-run marker
(:mod:`analyses.optional_data`) and the items say so, instead of substituting another dataset.
``quick``: width 8, depths 10/18/26, batch 32, 4 epochs (1 000 steps) with η divided by 10 after epochs 2 and 3
(the document's milestones at the same fractions of training), two seeds. With 4 000 images at 28×28 and batch
128 (128 steps) the skip nets were still unstable at η = 0.1 when training ended (ResNet-26 55 % test accuracy),
which said nothing about VAN vs plain. ``medium``: the same data and width, the shallowest and deepest quick
depths (10, 26), at the document's batch 128 and schedule shape: 20 epochs (1 260 steps), η = 0.1 divided by 10
after epochs 10 and 15 (50 % and 76 % of training, as 82 and 125 of 165).

Every preset reads eq. 7 with ``alpha_grad_scale`` = 128 (∂C/∂α of the loss summed over the document's
128-sample batch): of the readings of eqs. 6–8, the only one under which the skips are removed when the learning
rate drops, as the document reports (docs/figures.md, "VAN phase-out speed").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from analyses.common import run_device, train_config
from analyses.optional_data import load_or_mark
from analyses.van_common import train_variant
from gradlens.models import create_model

VARIANTS = ("resnet", "van", "van0", "plain")


@dataclass(frozen=True)
class Config:
    """Sweep: datasets × variants × depths × seeds, and the training settings."""

    datasets: tuple[tuple[str, tuple[int, ...]], ...]  # (dataset, depths)
    seeds: tuple[int, ...]
    epochs: int
    milestones: tuple[int, ...]
    width: int
    n_train: int | None = None
    n_test: int | None = None
    downsample: int = 1
    variants: tuple[str, ...] = VARIANTS
    lr: float = 0.1
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lambda_lr_ratio: float = 0.1
    lambda_init: float = -1.0
    grad_every: int = 4
    sigma_epochs: int | None = 5  # σ (DominantFlow) every 5 epochs and at the last step
    probe_batch: int = 16
    optional_data: bool = False
    # eq. 7 read with the loss summed over a batch of the document's 128 samples (∂C/∂α × 128; at a smaller batch
    # the batch mean × 128 estimates that sum): the one reading of eqs. 6–8 under which the skips go when the
    # learning rate drops, as document 002 reports (docs/figures.md, "VAN phase-out speed")
    alpha_grad_scale: float = 128.0

    @classmethod
    def smoke(cls) -> Config:
        return cls((("digits", (10,)),), (0,), 2, (1,), 4, n_train=256, n_test=128, grad_every=1, probe_batch=8)

    @classmethod
    def quick(cls) -> Config:
        return cls((("fashion_mnist", (10, 18, 26)),), (0, 1), 4, (2, 3), 8, n_train=8000, n_test=2000,
                   batch_size=32, downsample=2, grad_every=16, optional_data=True)

    @classmethod
    def medium(cls) -> Config:
        # the document's batch 128 and η = 0.1 ÷10 at 50 % and 76 % of training (its epochs 82 and 125 of 165)
        return cls((("fashion_mnist", (10, 26)),), (0, 1), 20, (10, 15), 8, n_train=8000, n_test=2000, downsample=2,
                   grad_every=16, optional_data=True)

    @classmethod
    def paper(cls) -> Config:
        cifar10 = tuple(8 * n + 2 for n in (1, 2, 3, 4, 5, 6, 8, 10))
        cifar100 = tuple(8 * n + 2 for n in (1, 2, 3, 4))
        return cls(
            (("cifar10", cifar10), ("cifar100", cifar100)),
            tuple(range(5)),
            165,
            (82, 125),
            16,
            grad_every=100,
            probe_batch=32,
        )


def runs(config: Config) -> list[dict]:
    """One run per dataset × variant × depth × seed."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("datasets", "seeds", "variants")}
    return [
        {
            "analysis": "van_preact",
            **settings,
            "dataset": dataset,
            "model": f"preact_{variant}_{depth}",
            "variant": variant,
            "depth": depth,
            "seed": seed,
        }
        for dataset, depths in config.datasets
        for variant in config.variants
        for depth in depths
        for seed in config.seeds
    ]


def execute(params: dict, path: Path, *, data_dir: str | None, resume: bool, progress: bool) -> None:
    """Train one pre-activation net (or write the not-run marker when optional data is absent)."""
    data = load_or_mark(params, path, data_dir)
    if data is None:
        return
    channels, size, _ = data.input_shape
    torch.manual_seed(params["seed"])
    model = create_model(
        params["model"], in_channels=channels, image_size=size, num_classes=data.num_classes, width=params["width"]
    ).to(run_device(params))
    config = train_config(
        params, weight_decay=params["weight_decay"], milestones=tuple(params["milestones"]), log_every=0
    )
    train_variant(params, path, model=model, data=data, config=config, resume=resume, progress=progress)
