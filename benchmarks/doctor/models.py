"""Tiny models for the doctor's scenarios, each built from knobs (depth, width, activation, initialisation,
residual, normalisation); their module names (``hidden.1.fc``, ``hidden.1.act``, ``head``) are what findings name.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.05),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
}
GAINS = {"relu": math.sqrt(2), "leaky_relu": math.sqrt(2), "tanh": 5 / 3, "sigmoid": 1.0, "gelu": math.sqrt(2)}


def initialise(layer: nn.Module, init: str, gain: float, activation: str, bias: float) -> None:
    """``default`` (PyTorch's), ``kaiming`` or ``xavier`` weights times ``gain``; biases set to ``bias``.

    Kaiming here is the normal init with the activation's recommended gain (√2 for ReLU): it keeps the
    signal's power through depth, so ``gain`` > 1 multiplies it by gain² per layer.
    """
    if init == "kaiming":
        fan_in = layer.weight[0].numel()
        nn.init.normal_(layer.weight, std=GAINS[activation] / math.sqrt(fan_in))
    elif init == "xavier":
        nn.init.xavier_normal_(layer.weight, gain=GAINS[activation])
    with torch.no_grad():
        layer.weight.mul_(gain)
        if layer.bias is not None and init != "default":
            layer.bias.fill_(bias)
        elif layer.bias is not None and bias:
            layer.bias.add_(bias)


class Block(nn.Module):
    """Plain: ``act(norm(fc(x)))``; residual (pre-activation, He et al. 2016): ``x + fc(act(norm(x)))``; the
    LayerNorm is optional."""

    def __init__(self, width: int, activation: str, residual: bool, norm: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width) if norm else None
        self.act = ACTIVATIONS[activation]()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.residual:
            return x + self.fc(self.act(self.norm(x) if self.norm is not None else x))
        h = self.fc(x)
        return self.act(self.norm(h) if self.norm is not None else h)


class MLP(nn.Module):
    """stem (Linear in → width, activation), ``depth`` hidden blocks, head (width → classes)."""

    def __init__(self, inputs: int, classes: int, depth: int, width: int, activation: str, residual: bool,
                 norm: bool, unused: bool = False) -> None:
        super().__init__()
        self.stem = nn.Linear(inputs, width)
        self.stem_act = ACTIVATIONS[activation]()
        self.hidden = nn.ModuleList(Block(width, activation, residual, norm) for _ in range(depth))
        self.head = nn.Linear(width, classes)
        self.spare = nn.Linear(width, width) if unused else None  # defined, never used: no gradient

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem_act(self.stem(x.flatten(1)))
        for block in self.hidden:
            h = block(h)
        return self.head(h)


class ConvBN(nn.Module):
    """Conv–BN–ReLU ×2 (residual blocks when ``residual``), global average pool, linear head; 8×8 inputs; an unused
    1×1 convolution ``spare`` when ``unused``."""

    def __init__(self, classes: int, width: int = 16, blocks: int = 2, residual: bool = False,
                 unused: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(width)
        self.stem_act = nn.ReLU()
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"conv": nn.Conv2d(width, width, 3, padding=1), "bn": nn.BatchNorm2d(width),
                           "act": nn.ReLU()}) for _ in range(blocks))
        self.residual = residual
        self.head = nn.Linear(width, classes)
        self.spare = nn.Conv2d(width, width, 1) if unused else None  # defined, never used: no gradient

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem_act(self.stem_bn(self.stem(x)))
        for block in self.blocks:
            out = block["act"](block["bn"](block["conv"](h)))
            h = h + out if self.residual else out
        return self.head(h.mean(dim=(2, 3)))


class TinyTransformer(nn.Module):
    """Token embedding + position embedding, ``depth`` pre-norm encoder layers, mean pool, linear head."""

    def __init__(self, vocab: int, classes: int, length: int, width: int = 32, depth: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.randn(length, width) * 0.1)
        layer = nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=2 * width, dropout=0.0,
                                           batch_first=True, norm_first=True, activation=nn.GELU())
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(width, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.position
        return self.head(self.encoder(h).mean(dim=1))


class Generator(nn.Module):
    """noise (8) → 2-D points."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.fc0, self.act0, self.fc1 = nn.Linear(8, width), nn.ReLU(), nn.Linear(width, 2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc1(self.act0(self.fc0(z)))


class Discriminator(nn.Module):
    """2-D points → real/fake logit."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.fc0, self.act0, self.fc1 = nn.Linear(2, width), nn.LeakyReLU(0.2), nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc1(self.act0(self.fc0(x)))
