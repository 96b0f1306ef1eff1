"""ResNet-v1 for CIFAR (He et al. 2016, section 4.2) and its fully-fledged plain counterpart.

Depth ``6n + 2``: a 3×3 stem convolution (16 channels) + BN + ReLU, three stages of ``n`` basic blocks
with 16, 32 and 64 channels (stride 2 in the first block of stages 2 and 3), global average pooling and a
linear classifier. A basic block computes::

    out = relu(bn2(conv2(relu1(bn1(conv1(x))))) + shortcut(x))

The shortcut is *option A* of He et al.: parameter-free; the identity where shapes agree, and where a
block halves the resolution and doubles the channels, ``x[:, :, ::2, ::2]`` followed by zero channels
appended after the ``C`` input channels (``C -> 2C``). The plain counterpart has exactly the same layers
with the identity removed (no shortcut, no skip marker). Depth 20 has 0.27M parameters, depth 56 0.85M.

Module names (short circuits and probes use them): ``conv1``, ``bn1``, ``relu`` (stem),
``stage{1,2,3}.{i}`` (basic blocks, ``i`` from 0), each with ``conv1``, ``bn1``, ``relu1``, ``conv2``,
``bn2``, ``shortcut`` and ``skip`` (residual only; :class:`~gradlens.models.connections.IdentitySkip`,
``source`` = the previous block's ``relu``) and ``relu`` (the block output), then ``pool``, ``flatten``,
``fc``. The final activation a^(L) is the output of ``pool`` (the features the classifier reads).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gradlens.models.connections import IdentitySkip
from gradlens.models.registry import register_family
from gradlens.spec import LayerSpec, ModelSpec

STAGE_CHANNELS = (16, 32, 64)


class ImageClassifier(nn.Module):
    """Base of the image models of the zoo: ``input_shape``, ``num_classes`` and ``example_input``.

    Subclasses set ``input_shape`` (one sample, ``(C, H, W)``) and ``num_classes``.
    """

    input_shape: tuple[int, ...]
    num_classes: int

    def example_input(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal images ``[batch_size, *input_shape]`` in the model's dtype and device.

        Drawn from ``generator`` (on the CPU) when given, so that the global RNG is left alone.
        """
        first = next(self.parameters())
        sample = torch.randn(batch_size, *self.input_shape, generator=generator, dtype=first.dtype)
        return sample.to(first.device)


def check_image_options(num_classes: int, in_channels: int, image_size: int, min_size: int = 1) -> None:
    """Raise ``ValueError`` for a non-positive class count, channel count or too small image size."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if image_size < min_size:
        raise ValueError(f"image_size must be >= {min_size}, got {image_size}")


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut ``[B, C, H, W] -> [B, C_out, ⌈H/s⌉, ⌈W/s⌉]``: subsample, append zero channels.

    Parameter-free. Channel ``c < C`` of the output is ``x[:, c, ::s, ::s]``; channels ``C ... C_out - 1``
    are zero.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"option-A shortcut cannot shrink channels ({in_channels} -> {out_channels})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}, stride={self.stride}"


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 conv + BN layers; ``relu(F(x) + shortcut(x))`` (residual) or ``relu(F(x))`` (plain).

    Shapes: ``[B, C_in, H, W] -> [B, C_out, H / stride, W / stride]``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, plain: bool) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.plain = plain
        if not plain:
            if stride == 1 and in_channels == out_channels:
                self.shortcut: nn.Module = nn.Identity()
            else:
                self.shortcut = ZeroPadShortcut(in_channels, out_channels, stride)
            self.skip = IdentitySkip()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        if not self.plain:
            out = self.skip(self.shortcut(x), out)
        return self.relu(out)


class ResNetV1(ImageClassifier):
    """ResNet-v1 / plain network for CIFAR of depth ``6n + 2``; see the module docstring.

    Attributes:
        depth: ``6n + 2``.
        plain: True for the plain counterpart (identity removed).
        blocks: the ``3n`` basic blocks in forward order.
    """

    def __init__(
        self, depth: int, *, plain: bool, num_classes: int, in_channels: int, image_size: int
    ) -> None:
        super().__init__()
        n = resnet_v1_blocks_per_stage(depth)
        check_image_options(num_classes, in_channels, image_size)
        self.depth = depth
        self.plain = plain
        self.input_shape = (in_channels, image_size, image_size)
        self.num_classes = num_classes
        self.conv1 = _conv3x3(in_channels, STAGE_CHANNELS[0])
        self.bn1 = nn.BatchNorm2d(STAGE_CHANNELS[0])
        self.relu = nn.ReLU()
        width = STAGE_CHANNELS[0]
        for s, channels in enumerate(STAGE_CHANNELS, start=1):
            stage = nn.Sequential()
            for i in range(n):
                stride = 2 if s > 1 and i == 0 else 1
                stage.append(BasicBlock(width, channels, stride, plain=plain))
                width = channels
            self.add_module(f"stage{s}", stage)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(width, num_classes)
        self._block_names = [f"stage{s}.{i}" for s in range(1, 4) for i in range(n)]
        if not plain:
            sources = ["relu", *(f"{b}.relu" for b in self._block_names[:-1])]
            for source, block in zip(sources, self.blocks, strict=True):
                block.skip.source = source
        self._init_weights()

    @property
    def blocks(self) -> list[BasicBlock]:
        """The basic blocks in forward order."""
        return [self.get_submodule(name) for name in self._block_names]

    def _init_weights(self) -> None:
        # He et al. initialise convolutions with N(0, 2 / fan_out) (their reference [13]); BN starts at
        # the identity. The classifier keeps PyTorch's default.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, H, W] -> [B, num_classes]`` logits."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.fc(self.flatten(self.pool(x)))

    def gradlens_spec(self) -> ModelSpec:
        """Layers: stem conv, the two convs of every block, fc. Activations: stem and block outputs.

        The final activation a^(L) is the globally average-pooled last map ``[B, 64, 1, 1]`` (``pool``),
        one scalar per channel as in document 004, appendix D.2.

        No layer is ``residual`` in the ``LayerSpec`` sense: the identity skips around two layers
        (the whole block), which ``blocks`` exposes for interlayer cushions.
        """
        layers = [LayerSpec("conv1")]
        for name in self._block_names:
            layers += [LayerSpec(f"{name}.conv1"), LayerSpec(f"{name}.conv2")]
        layers.append(LayerSpec("fc"))
        activations = ("relu", *(f"{name}.relu" for name in self._block_names))
        return ModelSpec(
            layers=tuple(layers),
            activations=activations,
            final_activation="pool",
            blocks=tuple(self._block_names),
        )


def resnet_v1_blocks_per_stage(depth: int) -> int:
    """``n`` of depth ``6n + 2`` (``n >= 1``); ``ValueError`` naming the valid depths otherwise."""
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(
            f"depth {depth} is not 6n+2; valid: 8, 14, 20, 26, 32, ... (He et al.: 20, 32, 44, 56, 110, 1202)"
        )
    return (depth - 2) // 6


def build_resnet_v1(
    depth: int, *, plain: bool = False, num_classes: int = 10, in_channels: int = 3, image_size: int = 32
) -> ResNetV1:
    """Build ResNet-v1 (``plain=False``) or its plain counterpart of depth ``6n + 2``.

    Args:
        depth: ``6n + 2`` with ``n >= 1`` (20, 32, 44, 56, 110, 1202 in He et al.).
        plain: remove the identity shortcuts (same layers otherwise).
        num_classes: classifier outputs.
        in_channels: input image channels (3 for CIFAR, 1 for MNIST).
        image_size: input height = width (global average pooling adapts to any size).

    Raises:
        ValueError: depth not of the form ``6n + 2``, or non-positive options.
    """
    return ResNetV1(
        depth, plain=plain, num_classes=num_classes, in_channels=in_channels, image_size=image_size
    )


@register_family(
    "resnet_v1_{depth}",
    params={"depth": int},
    examples=["resnet_v1_8", "resnet_v1_20"],
    summary="ResNet-v1 for CIFAR (He et al. 2016), depth 6n+2, BN, option-A zero-pad shortcuts",
)
def resnet_v1(depth: int, **kw: int) -> ResNetV1:
    """Registry builder for ``resnet_v1_{depth}``; ``kw`` as in :func:`build_resnet_v1`."""
    return build_resnet_v1(depth, **kw)


@register_family(
    "plain_v1_{depth}",
    params={"depth": int},
    examples=["plain_v1_8", "plain_v1_20"],
    summary="plain counterpart of ResNet-v1 (same layers, identity shortcuts removed), depth 6n+2",
)
def plain_v1(depth: int, **kw: int) -> ResNetV1:
    """Registry builder for ``plain_v1_{depth}``; ``kw`` as in :func:`build_resnet_v1`."""
    return build_resnet_v1(depth, plain=True, **kw)
