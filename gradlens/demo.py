"""``gradlens demo``: plain vs residual gradient flow on real handwritten digits, in about a minute.

Trains ``mlp_plain_{depth}`` and ``mlp_resnet_{depth}`` (same widths, same initial draws, same mini-batches)
on scikit-learn's embedded 8×8 digits with GradStats at every optimizer step, then writes
``plain.h5``, ``residual.h5`` and ``report.html`` comparing them.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch

from gradlens.data import load_dataset
from gradlens.models import create_model
from gradlens.probes import GradStats
from gradlens.report import write_report
from gradlens.session import attach
from gradlens.train import TrainConfig, check_device_name, device_name, make_optimizer, resolve_device, train

VARIANTS = {"plain": "mlp_plain_{depth}", "residual": "mlp_resnet_{depth}"}


@dataclass(frozen=True)
class DemoConfig:
    """The demo's setup (stored in both run files).

    Attributes:
        depth: hidden blocks of each MLP.
        width: units per hidden layer.
        epochs: training epochs.
        batch_size: mini-batch size.
        lr: SGD learning rate (momentum 0.9); higher rates make the 30-block residual net diverge.
        seed: seed of the initial weights and of the mini-batch order.
        init: weight initialisation of both nets: PyTorch's default ``"torch"`` (what most users get), or
            ``"he"`` (which keeps a plain ReLU net's gradients balanced at initialisation).
        device: where both nets train: ``auto`` (the GPU when there is one), ``cpu``, ``cuda`` or ``cuda:K``.
    """

    depth: int = 30
    width: int = 64
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.005
    seed: int = 0
    init: str = "torch"
    device: str = "auto"

    def __post_init__(self) -> None:
        check_device_name(self.device)
        if self.depth < 2:
            raise ValueError(f"demo depth must be >= 2 to show gradient flow through depth, got {self.depth}")
        if self.epochs < 1:
            raise ValueError(f"demo epochs must be >= 1, got {self.epochs}")


def run_demo(
    config: DemoConfig, out_dir: str = "gradlens-demo", force: bool = False, progress: bool = True
) -> str:
    """Train both nets, record them, and write the comparison report; returns the report's path."""
    paths = {variant: os.path.join(out_dir, f"{variant}.h5") for variant in VARIANTS}
    report_path = os.path.join(out_dir, "report.html")
    existing = [p for p in [*paths.values(), report_path] if os.path.exists(p)]
    if existing and not force:
        raise FileExistsError(f"{existing[0]} exists; pass --force to replace the earlier demo or --out DIR")
    os.makedirs(out_dir, exist_ok=True)
    data = load_dataset("digits")
    # the learning rate drops tenfold for the last 30% of the epochs, so the final state is not dominated
    # by the noise of the largest steps
    train_config = TrainConfig(
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        momentum=0.9,
        milestones=(max(1, round(0.7 * config.epochs)),),
        seed=config.seed,
        device=str(resolve_device(config.device)),
    )
    for variant, template in VARIANTS.items():
        name = template.format(depth=config.depth)
        torch.manual_seed(config.seed)
        model = create_model(
            name, input_shape=data.input_shape, width=config.width, num_classes=data.num_classes
        ).to(train_config.device)
        optimizer = make_optimizer(model, train_config)
        meta = {
            **asdict(config),
            "label": f"{variant} ({name})",
            "model": name,
            "dataset": data.source,
            "scale": "demo",
            "train": train_config.to_dict(),
            "device_name": device_name(train_config.device),
        }
        with attach(
            model, optimizer, paths[variant], probes=[GradStats(params="weights")], meta=meta, overwrite=force
        ) as session:
            train(
                model,
                data,
                train_config,
                session=session,
                optimizer=optimizer,
                progress=progress,
                description=variant,
            )
    from gradlens.loader import load

    title = (
        f"gradlens demo: plain vs residual MLP, {config.depth} blocks of width {config.width}, "
        f"{config.init} init, {data.source}; {config.epochs} epochs, SGD lr {config.lr}, seed {config.seed}"
    )
    return write_report([load(paths["plain"]), load(paths["residual"])], report_path, title=title)
