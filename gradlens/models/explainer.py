"""Networks of the skip-connection explainer (document 001): plain/additive/dense nets, dense block, U-Net.

* ``explainer_{kind}_{depth}`` (sk-fig1, vanishing gradients through depth): the same ReLU MLP of
  ``depth`` hidden layers (``width`` units; 8×8 digits by default, PyTorch default init) with

  - ``plain``: ``y = relu(fc(x))`` and ``residual``: ``y = relu(x + fc(x))`` (the
    :class:`~gradlens.models.mlp.DeepMLP` of ``mlp_plain``/``mlp_resnet``, module names ``blocks.{i}.fc``);
  - ``dense``: :class:`DenseMLP`, each layer fed the concatenation of the stem output and all earlier
    layer outputs (DenseNet-style, ``growth`` units per layer), the head fed all of them.

* ``dense_block_{layers}`` (sk-fig2): a small CNN around one :class:`DenseBlock` of ``layers``
  BN-ReLU-conv3×3 layers (growth ``growth`` channels each): stem conv → dense block → BN-ReLU → global
  average pool → linear. Input ``(1, 8, 8)`` by default.
* ``unet_small`` (sk-fig2): a two-level U-Net with long skips (:class:`~gradlens.models.connections.LongSkip`,
  encoder map concatenated into the decoder). The network computes a per-pixel ``num_classes``-channel map
  (:meth:`UNetSmall.segment`, ``[B, num_classes, H, W]``); ``forward`` averages it over the pixels to
  logits ``[B, num_classes]`` so that it is a classifier like every other zoo model. Up-sampling is nearest
  ×2 followed by a 3×3 convolution ("up-convolution" of Ronneberger et al.), so every weight layer is an
  ``nn.Conv2d``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from gradlens.models.connections import ConcatSkip, LongSkip
from gradlens.models.mlp import (
    DeepMLP,
    ZooModel,
    as_input_shape,
    check_depth_range,
    check_positive,
)
from gradlens.models.registry import register_family
from gradlens.spec import LayerSpec, ModelSpec


class DenseLayer(nn.Module):
    """``relu(fc(cat([x_newest, *x_older])))``: one layer of :class:`DenseMLP` (``growth`` units out).

    ``sources`` names the modules whose outputs are the inputs, oldest first; the first layer has one
    input and no ``concat``.
    """

    def __init__(self, in_features: int, growth: int, sources: Sequence[str]) -> None:
        super().__init__()
        self.concat = ConcatSkip(dim=1, source=list(sources[:-1])) if len(sources) > 1 else None
        self.fc = nn.Linear(in_features, growth)
        self.relu = nn.ReLU()

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        x = self.concat(features[-1], *features[:-1]) if self.concat is not None else features[-1]
        return self.relu(self.fc(x))


class DenseMLP(ZooModel):
    """Densely connected MLP: ``stem`` (Linear + ReLU, ``width``) → ``layers.{i}`` → ``head``.

    Layer ``i`` maps the concatenation of the stem output and the outputs of layers ``0 .. i−1``
    (``width + i·growth`` features) to ``growth`` features; ``head_concat`` concatenates all of them for the
    linear ``head``. Feature order: the newest output first, then the stem output, layer 0, layer 1, ...
    """

    def __init__(
        self, depth: int, input_shape: tuple[int, ...], width: int, growth: int, num_classes: int
    ) -> None:
        super().__init__()
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.flatten = nn.Flatten()
        self.stem = nn.Linear(math.prod(input_shape), width)
        self.stem_relu = nn.ReLU()
        names = ["stem_relu"]
        self.layers = nn.ModuleList()
        for i in range(depth):
            self.layers.append(DenseLayer(width + i * growth, growth, names))
            names.append(f"layers.{i}.relu")
        self.head_concat = ConcatSkip(dim=1, source=names[:-1])
        self.head = nn.Linear(width + depth * growth, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [self.stem_relu(self.stem(self.flatten(x)))]
        for layer in self.layers:
            features.append(layer(*features))
        return self.head(self.head_concat(features[-1], *features[:-1]))

    def gradlens_spec(self) -> ModelSpec:
        n = len(self.layers)
        return ModelSpec(
            layers=(LayerSpec("stem"), *(LayerSpec(f"layers.{i}.fc") for i in range(n)), LayerSpec("head")),
            activations=("stem_relu", *(f"layers.{i}.relu" for i in range(n))),
            final_activation="head_concat",
            blocks=(),
        )


@register_family(
    "explainer_{kind}_{depth}",
    params={"kind": "plain|residual|dense", "depth": int},
    examples=["explainer_plain_10", "explainer_residual_10", "explainer_dense_10"],
    summary="deep ReLU MLP with no / additive / concatenative skips (document 001, sk-fig1)",
)
def explainer_mlp(
    kind: str,
    depth: int,
    input_shape: int | Sequence[int] = (64,),
    width: int = 64,
    growth: int = 16,
    num_classes: int = 10,
) -> nn.Module:
    """Build ``explainer_{plain|residual|dense}_{depth}`` (``depth >= 1`` hidden layers).

    Args:
        growth: units per dense layer (``dense`` only).
    """
    check_depth_range(f"explainer_{kind}", depth, 1)
    check_positive(width=width, growth=growth, num_classes=num_classes)
    shape = as_input_shape(input_shape)
    if kind == "dense":
        return DenseMLP(depth, shape, width, growth, num_classes)
    return DeepMLP(depth, kind == "residual", shape, width, num_classes, init="torch")


class DenseConvLayer(nn.Module):
    """``conv(relu(bn(cat([x_newest, *x_older]))))``: one BN-ReLU-conv3×3 layer of a dense block.

    ``sources`` names the modules whose outputs are the inputs, oldest first; the first layer has one
    input and no ``concat``.
    """

    def __init__(self, in_channels: int, growth: int, sources: Sequence[str]) -> None:
        super().__init__()
        self.concat = ConcatSkip(dim=1, source=list(sources[:-1])) if len(sources) > 1 else None
        self.bn = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(in_channels, growth, 3, padding=1, bias=False)

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        x = self.concat(features[-1], *features[:-1]) if self.concat is not None else features[-1]
        return self.conv(self.relu(self.bn(x)))


class DenseBlock(nn.Module):
    """DenseNet block ``[B, C, H, W] -> [B, C + L·k, H, W]``: ``L`` layers, growth ``k`` channels each.

    Layer ``i`` sees the block input and the outputs of layers ``0 .. i−1``; the block returns all of them
    concatenated (``out_concat``). Channel order (as :class:`ConcatSkip` puts the main input first): the
    newest layer's output, then the block input, layer 0, layer 1, ...

    Args:
        prefix: dotted name of this block inside its model, for the ``source`` names of the markers.
    """

    def __init__(self, in_channels: int, layers: int, growth: int, prefix: str, input_name: str) -> None:
        super().__init__()
        names = [input_name]
        self.layers = nn.ModuleList()
        for i in range(layers):
            self.layers.append(DenseConvLayer(in_channels + i * growth, growth, names))
            names.append(f"{prefix}.layers.{i}.conv")
        self.out_concat = ConcatSkip(dim=1, source=names[:-1])
        self.out_channels = in_channels + layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(*features))
        return self.out_concat(features[-1], *features[:-1])


class DenseBlockNet(ZooModel):
    """``stem`` conv3×3 → ``block`` (:class:`DenseBlock`) → ``out_bn`` → ``out_relu`` → pool → ``fc``."""

    def __init__(
        self, layers: int, input_shape: tuple[int, ...], stem_channels: int, growth: int, num_classes: int
    ) -> None:
        super().__init__()
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.stem = nn.Conv2d(input_shape[0], stem_channels, 3, padding=1, bias=False)
        self.block = DenseBlock(stem_channels, layers, growth, "block", "stem")
        self.out_bn = nn.BatchNorm2d(self.block.out_channels)
        self.out_relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(self.block.out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.out_relu(self.out_bn(self.block(self.stem(x))))
        return self.fc(self.flatten(self.pool(x)))

    def gradlens_spec(self) -> ModelSpec:
        convs = tuple(f"block.layers.{i}.conv" for i in range(len(self.block.layers)))
        return ModelSpec(
            layers=(LayerSpec("stem"), *(LayerSpec(c) for c in convs), LayerSpec("fc")),
            activations=convs,
            final_activation="out_relu",
            blocks=("block",),
        )


def check_image_shape(input_shape: tuple[int, ...], multiple: int = 1) -> None:
    """``ValueError`` unless ``input_shape`` is ``(C, H, W)`` with ``H``, ``W`` divisible by ``multiple``."""
    if len(input_shape) != 3 or input_shape[1] % multiple or input_shape[2] % multiple:
        raise ValueError(
            f"input_shape must be (C, H, W) with H and W divisible by {multiple}, got {input_shape}"
        )


@register_family(
    "dense_block_{layers}",
    params={"layers": int},
    examples=["dense_block_4"],
    summary="small CNN around one DenseNet block of BN-ReLU-conv layers (document 001, sk-fig2)",
)
def dense_block_net(
    layers: int,
    input_shape: Sequence[int] = (1, 8, 8),
    stem_channels: int = 16,
    growth: int = 8,
    num_classes: int = 10,
) -> DenseBlockNet:
    """Build ``dense_block_{layers}`` (``layers >= 1``)."""
    check_depth_range("dense_block", layers, 1)
    check_positive(stem_channels=stem_channels, growth=growth, num_classes=num_classes)
    shape = as_input_shape(input_shape)
    check_image_shape(shape)
    return DenseBlockNet(layers, shape, stem_channels, growth, num_classes)


class DoubleConv(nn.Module):
    """``relu2(conv2(relu1(conv1(x))))``, 3×3 convolutions, padding 1: ``[B, C_in, H, W] -> [B, C, H, W]``."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(self.conv2(self.relu1(self.conv1(x))))


class UpConv(nn.Module):
    """Nearest ×2 up-sampling then a 3×3 convolution: ``[B, C_in, H, W] -> [B, C, 2H, 2W]``."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = nn.Conv2d(in_channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.up(x))


class UNetSmall(ZooModel):
    """Two-level U-Net with long skips (see the module docstring); ``c`` = ``channels``.

    ``enc1`` (c, H) → ``pool1`` → ``enc2`` (2c, H/2) → ``pool2`` → ``bottleneck`` (4c, H/4) → ``up2`` (2c)
    → ``skip2`` (cat ``enc2``) → ``dec2`` (2c) → ``up1`` (c) → ``skip1`` (cat ``enc1``) → ``dec1`` (c) →
    ``seg`` (1×1 conv, ``num_classes``) → ``pool`` → logits.

    Attributes:
        output_shape: ``(num_classes,)``, the shape of one sample of ``forward``.
        map_shape: ``(num_classes, H, W)``, the shape of one sample of :meth:`segment`.
    """

    def __init__(self, input_shape: tuple[int, ...], channels: int, num_classes: int) -> None:
        super().__init__()
        c = channels
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.output_shape = (num_classes,)
        self.map_shape = (num_classes, *input_shape[1:])
        self.enc1 = DoubleConv(input_shape[0], c)
        self.pool1 = nn.MaxPool2d(2)
        self.enc2 = DoubleConv(c, 2 * c)
        self.pool2 = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(2 * c, 4 * c)
        self.up2 = UpConv(4 * c, 2 * c)
        self.skip2 = LongSkip(dim=1, source="enc2")
        self.dec2 = DoubleConv(4 * c, 2 * c)
        self.up1 = UpConv(2 * c, c)
        self.skip1 = LongSkip(dim=1, source="enc1")
        self.dec1 = DoubleConv(2 * c, c)
        self.seg = nn.Conv2d(c, num_classes, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel class scores ``[B, num_classes, H, W]``."""
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool1(e1))
        b = self.bottleneck(self.pool2(e2))
        d2 = self.dec2(self.skip2(self.up2(b), e2))
        d1 = self.dec1(self.skip1(self.up1(d2), e1))
        return self.seg(d1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.pool(self.segment(x)))

    def gradlens_spec(self) -> ModelSpec:
        stages = ("enc1", "enc2", "bottleneck", "dec2", "dec1")
        layers: list[str] = []
        for stage in stages:
            if stage.startswith("dec"):
                layers.append(f"up{stage[-1]}.conv")
            layers += [f"{stage}.conv1", f"{stage}.conv2"]
        return ModelSpec(
            layers=(*(LayerSpec(n) for n in layers), LayerSpec("seg")),
            activations=tuple(f"{s}.relu2" for s in stages),
            final_activation="dec1.relu2",
            blocks=stages,
        )


@register_family(
    "unet_small",
    examples=["unet_small"],
    summary="two-level U-Net with long (concatenative) skips, map pooled to logits (document 001, sk-fig2)",
)
def unet_small(
    input_shape: Sequence[int] = (1, 28, 28), channels: int = 8, num_classes: int = 10
) -> UNetSmall:
    """Build ``unet_small`` (``H`` and ``W`` of ``input_shape`` divisible by 4)."""
    check_positive(channels=channels, num_classes=num_classes)
    shape = as_input_shape(input_shape)
    check_image_shape(shape, 4)
    return UNetSmall(shape, channels, num_classes)
