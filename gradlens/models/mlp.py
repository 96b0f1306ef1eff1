"""Fully connected networks: the five-layer sigmoid FCN of document 000 and deep plain/residual MLPs.

* ``sigmoid_fcn_{depth}`` (document 000, section 5.2.1; the document uses depth 5): ``depth`` fully
  connected layers ``fc1 ... fc{depth}``, a sigmoid after every layer but the last (``act1 ...``), logits
  out. Document 000 does not state the widths; every hidden layer has ``width`` units (default 100), so that
  any two hidden layers have equal neuron counts, the precondition of a short circuit between them
  (SCFCN: from layer 4 to layer 2). Layer ``i`` (1-based, as in the document) is module ``fc{i}``;
  :meth:`SigmoidFCN.layer` returns it by index.
* ``mlp_plain_{depth}`` / ``mlp_resnet_{depth}``: a stem ``Linear(in, width) + ReLU``, ``depth`` hidden
  blocks and a linear head. Plain block ``y = relu(fc(x))``; residual block ``y = relu(x + fc(x))`` (an
  identity skip around exactly the layer ``fc``, ``LayerSpec.residual=True``). Default input: 8×8 digits
  flattened, ``(64,)``. Initialisation ``init``:

  - ``"torch"`` (default): PyTorch's ``nn.Linear`` default (weights U(±1/√fan_in), i.e. variance
    1/(3·fan_in), and uniform biases). The forward signal of the plain net shrinks layer by layer, and at
    depth 30 the weight gradients of the first blocks are about 1e-10 of the last blocks' (8×8 digits,
    batch 256, 3 seeds), while the residual net's stay within a factor of 5. This is the vanishing-gradient
    demonstration.
  - ``"he"``: Kaiming-normal weights (σ = √(2/fan_in)), zero biases; residual-branch weights are further
    scaled by 1/√depth so that the forward signal stays bounded (unscaled, every residual block doubles its
    second moment). He init is designed to keep plain ReLU nets balanced at initialisation: the first/last
    weight-gradient ratio of the plain depth-30 net is then about 1–2, i.e. no vanishing at initialisation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from gradlens.models.connections import IdentitySkip
from gradlens.models.registry import register_family
from gradlens.spec import LayerSpec, ModelSpec


class ZooModel(nn.Module):
    """Base of the fully connected / sequence models of the zoo: ``input_shape``, ``num_classes``, inputs.

    Subclasses set ``input_shape`` (one sample) and ``num_classes`` and implement ``gradlens_spec``.
    """

    input_shape: tuple[int, ...]
    num_classes: int

    def example_input(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal inputs ``[batch_size, *input_shape]`` in the model's dtype and device.

        Drawn from ``generator`` (on the CPU) when given, so that the global RNG is left alone.
        """
        first = next(self.parameters())
        sample = torch.randn(batch_size, *self.input_shape, generator=generator, dtype=first.dtype)
        return sample.to(first.device)

    def gradlens_spec(self) -> ModelSpec:
        """The layers, activations and blocks that probes measure."""
        raise NotImplementedError


def as_input_shape(input_shape: int | Sequence[int]) -> tuple[int, ...]:
    """``input_shape`` as a tuple (an int ``n`` means ``(n,)``); ``ValueError`` for non-positive sizes."""
    shape = (int(input_shape),) if isinstance(input_shape, int) else tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must be positive sizes, e.g. (64,) or (1, 28, 28); got {input_shape}")
    return shape


def check_positive(**values: int) -> None:
    """Raise ``ValueError`` naming the first of ``values`` that is below 1."""
    for key, value in values.items():
        if value < 1:
            raise ValueError(f"{key} must be >= 1, got {value!r}")


def check_depth_range(family: str, depth: int, low: int, high: int | None = None) -> None:
    """Raise ``ValueError`` when ``depth`` lies outside ``[low, high]`` (no upper bound when None)."""
    if depth < low or (high is not None and depth > high):
        valid = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{family}: depth {depth} is not valid; valid depths: {valid}")


INITS = ("torch", "he")


def check_init(init: str) -> None:
    """Raise ``ValueError`` unless ``init`` is one of :data:`INITS`."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; use one of {', '.join(INITS)}")


def init_linear_(layer: nn.Linear, init: str, scale: float = 1.0) -> nn.Linear:
    """Initialise ``layer`` in place by ``init`` (see :data:`INITS`); returns ``layer``.

    ``"torch"`` keeps PyTorch's default (and ignores ``scale``); ``"he"`` draws Kaiming-normal weights
    σ = scale·√(2/fan_in) and zero biases.
    """
    if init == "torch":
        return layer
    return he_init_(layer, scale)


def he_init_(layer: nn.Linear, scale: float = 1.0) -> nn.Linear:
    """Kaiming-normal weights (σ = scale·√(2/fan_in)) and zero bias, in place; returns ``layer``."""
    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    with torch.no_grad():
        layer.weight.mul_(scale)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class SigmoidFCN(ZooModel):
    """``depth`` sigmoid fully connected layers (document 000, section 5.2.1): ``fc1 ... fc{depth}``.

    ``x -> flatten -> fc1 -> act1 -> ... -> fc{depth-1} -> act{depth-1} -> fc{depth}`` (logits). PyTorch's
    default ``nn.Linear`` initialisation.
    """

    def __init__(self, depth: int, input_shape: tuple[int, ...], width: int, num_classes: int) -> None:
        super().__init__()
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.depth = depth
        self.flatten = nn.Flatten()
        widths = [math.prod(input_shape), *([width] * (depth - 1)), num_classes]
        for i in range(1, depth + 1):
            self.add_module(f"fc{i}", nn.Linear(widths[i - 1], widths[i]))
            if i < depth:
                self.add_module(f"act{i}", nn.Sigmoid())

    def layer(self, index: int) -> nn.Linear:
        """Fully connected layer ``index`` (1-based, as in document 000)."""
        if not 1 <= index <= self.depth:
            raise ValueError(f"layer index {index} is out of range; valid: 1..{self.depth}")
        return getattr(self, f"fc{index}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        for i in range(1, self.depth + 1):
            x = getattr(self, f"fc{i}")(x)
            if i < self.depth:
                x = getattr(self, f"act{i}")(x)
        return x

    def gradlens_spec(self) -> ModelSpec:
        hidden = tuple(f"act{i}" for i in range(1, self.depth))
        return ModelSpec(
            layers=tuple(LayerSpec(f"fc{i}") for i in range(1, self.depth + 1)),
            activations=hidden,
            final_activation=hidden[-1] if hidden else None,
            blocks=tuple(f"fc{i}" for i in range(1, self.depth + 1)),
        )


@register_family(
    "sigmoid_fcn_{depth}",
    params={"depth": int},
    examples=["sigmoid_fcn_5"],
    summary="fully connected sigmoid net fc1..fc{depth} (document 000, 5.2.1; depth 5 for MNIST)",
)
def sigmoid_fcn(
    depth: int, input_shape: int | Sequence[int] = (1, 28, 28), width: int = 100, num_classes: int = 10
) -> SigmoidFCN:
    """Build ``sigmoid_fcn_{depth}`` (``depth >= 2`` fully connected layers, ``width`` hidden units)."""
    check_depth_range("sigmoid_fcn", depth, 2)
    check_positive(width=width, num_classes=num_classes)
    return SigmoidFCN(depth, as_input_shape(input_shape), width, num_classes)


class MLPBlock(nn.Module):
    """Plain ``y = relu(fc(x))`` or residual ``y = relu(x + fc(x))`` block of ``width`` units."""

    def __init__(self, width: int, residual: bool, init: str, scale: float) -> None:
        super().__init__()
        self.fc = init_linear_(nn.Linear(width, width), init, scale)
        if residual:
            self.skip = IdentitySkip()
        self.relu = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x)
        if self.residual:
            out = self.skip(x, out)
        return self.relu(out)


class DeepMLP(ZooModel):
    """``stem (Linear + ReLU) -> blocks.0 ... blocks.{depth-1} -> head``; plain or residual blocks.

    Module names: ``flatten``, ``stem``, ``stem_relu``, ``blocks.{i}.fc``, ``blocks.{i}.skip`` (residual),
    ``blocks.{i}.relu`` (block output a^(i)), ``head``.
    """

    def __init__(
        self,
        depth: int,
        residual: bool,
        input_shape: tuple[int, ...],
        width: int,
        num_classes: int,
        init: str,
    ) -> None:
        super().__init__()
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.flatten = nn.Flatten()
        self.stem = init_linear_(nn.Linear(math.prod(input_shape), width), init)
        self.stem_relu = nn.ReLU()
        scale = 1 / math.sqrt(depth) if residual else 1.0
        self.blocks = nn.ModuleList(MLPBlock(width, residual, init, scale) for _ in range(depth))
        for i, block in enumerate(self.blocks):
            if residual:
                block.skip.source = f"blocks.{i - 1}.relu" if i else "stem_relu"
        self.head = nn.Linear(width, num_classes)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_relu(self.stem(self.flatten(x)))
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def gradlens_spec(self) -> ModelSpec:
        n = len(self.blocks)
        return ModelSpec(
            layers=(
                LayerSpec("stem"),
                *(LayerSpec(f"blocks.{i}.fc", residual=self.residual) for i in range(n)),
                LayerSpec("head"),
            ),
            activations=("stem_relu", *(f"blocks.{i}.relu" for i in range(n))),
            final_activation=f"blocks.{n - 1}.relu" if n else "stem_relu",
            blocks=tuple(f"blocks.{i}" for i in range(n)),
        )


@register_family(
    "mlp_{variant}_{depth}",
    params={"variant": "plain|resnet", "depth": int},
    examples=["mlp_plain_4", "mlp_resnet_4", "mlp_plain_20", "mlp_resnet_20"],
    summary="deep ReLU MLP, depth hidden blocks relu(fc(x)) or relu(x + fc(x))",
)
def deep_mlp(
    variant: str,
    depth: int,
    input_shape: int | Sequence[int] = (64,),
    width: int = 64,
    num_classes: int = 10,
    init: str = "torch",
) -> DeepMLP:
    """Build ``mlp_{plain|resnet}_{depth}`` (``depth >= 1`` hidden blocks of ``width`` units).

    Args:
        init: ``"torch"`` (default) or ``"he"``; see the module docstring.
    """
    check_depth_range(f"mlp_{variant}", depth, 1)
    check_positive(width=width, num_classes=num_classes)
    check_init(init)
    return DeepMLP(depth, variant == "resnet", as_input_shape(input_shape), width, num_classes, init)
