"""The models and batches the overhead benchmark times (``--cases``), with each one's rounds and steps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from gradlens.models import create_model


@dataclass
class Case:
    """One model and batch to time."""

    label: str
    build: Callable[[], nn.Module]
    batch: int
    rounds: int
    steps: int
    momentum: float = 0.9


def mlp79m() -> nn.Sequential:
    """784-512×300-10 ReLU MLP (300 hidden Linear layers of width 512, 78.9 M parameters), He-initialised.

    He init keeps activations O(1) through the 300 layers, so no value becomes subnormal (subnormal floats
    would slow every variant and say nothing about the probes).
    """
    layers: list[nn.Module] = [nn.Flatten()]
    width_in = 784
    for _ in range(300):
        layers += [nn.Linear(width_in, 512), nn.ReLU()]
        width_in = 512
    layers.append(nn.Linear(512, 10))
    for layer in layers:
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


CASES = {
    "thin": Case("thin MLP 784-50x30-10, batch 128", lambda: create_model("thin_mlp_plain_30"), 128, 100, 10),
    "resnet20": Case("ResNet-20 v1, 32x32, batch 128", lambda: create_model("resnet_v1_20"), 128, 45, 2),
    "mlp79m": Case("MLP 784-512x300-10 (79 M), batch 128", mlp79m, 128, 9, 1, momentum=0.0),
}


def fixed_batch(model: nn.Module, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch every step of every variant trains on: the model's example input (else 784 features), 10 classes."""
    generator = torch.Generator().manual_seed(0)
    if hasattr(model, "example_input"):
        x = model.example_input(batch, generator)
    else:
        x = torch.randn(batch, 784, generator=generator)
    return x, torch.randint(0, 10, (batch,), generator=generator)
