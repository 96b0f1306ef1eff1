"""Residual network of depth ``8n + 2`` used by the VAN document (document 002, section 4.2), four variants.

A 3×3 stem convolution + BN + ReLU, four stages ("blocks" in the document) of ``n`` residual layers with
``width · (1, 2, 4, 8)`` channels (16, 32, 64, 128 by default; the document does not state the widths, we
follow He et al.'s CIFAR networks, whose 16-channel start doubles at every downsampling), 3×3 filters
with stride-2 downsampling at the beginning of stages 2, 3 and 4, global average pooling and a linear
classifier: ``1 + 8n + 1 = 8n + 2`` weight layers. Each residual layer has the residual function
``F = conv-BN-ReLU-conv-BN-ReLU`` (the document calls it the pre-activation function) and computes::

    plain:   x_{l+1} = F(x_l)
    resnet:  x_{l+1} = F(x_l) + x̃_l                 (IdentitySkip)
    van:     x_{l+1} = F(x_l) + (1 − α_l) · x̃_l      (VANSkip, α per channel, shape [C, 1, 1])

``x̃`` is ``x``, or at a downsampling layer the parameter-free option-A shortcut (``x[:, :, ::2, ::2]`` and
zero channels appended). ``van`` and ``van0`` (VAN(λ = 0)) are the same architecture; they differ only in
the optimiser-side update (:class:`gradlens.models.van.VANUpdate` with ``lambda_zero``). The model
carries the flag ``van_lambda_zero`` (True for ``van0``) so a training script can build the matching
update: ``VANUpdate(model, lr, lambda_zero=model.van_lambda_zero)``.

Module names: ``conv1``, ``bn1``, ``relu`` (stem), ``stage{1,2,3,4}.{i}`` (layers, ``i`` from 0) with
``conv1``, ``bn1``, ``relu1``, ``conv2``, ``bn2``, ``relu2``, for resnet/van also ``shortcut`` and ``skip``,
and ``out`` (an ``nn.Identity`` whose output is the layer output ``x_{l+1}`` in every variant); then
``pool``, ``flatten``, ``fc``.
"""

from __future__ import annotations

import torch
from torch import nn

from gradlens.models.connections import IdentitySkip
from gradlens.models.registry import register_family
from gradlens.models.resnet_v1 import ImageClassifier, ZeroPadShortcut, check_image_options
from gradlens.models.van import VANSkip
from gradlens.spec import LayerSpec, ModelSpec

VARIANTS: tuple[str, ...] = ("plain", "resnet", "van", "van0")


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class PreactLayer(nn.Module):
    """One residual layer ``[B, C_in, H, W] -> [B, C_out, H/s, W/s]`` of the chosen variant.

    Args:
        in_channels, out_channels, stride: shape of the layer.
        variant: ``"plain"``, ``"resnet"``, ``"van"`` or ``"van0"``.
        alpha_init: initial α of a VAN skip (document 002: 0).
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, variant: str, alpha_init: float
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.has_skip = variant != "plain"
        if self.has_skip:
            if stride == 1 and in_channels == out_channels:
                self.shortcut: nn.Module = nn.Identity()
            else:
                self.shortcut = ZeroPadShortcut(in_channels, out_channels, stride)
            if variant == "resnet":
                self.skip: nn.Module = IdentitySkip()
            else:
                self.skip = VANSkip((out_channels, 1, 1), alpha_init=alpha_init)
        self.out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fx = self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        if self.has_skip:
            fx = self.skip(self.shortcut(x), fx)
        return self.out(fx)


class PreactNet(ImageClassifier):
    """The ``8n + 2`` network of document 002, section 4.2 (see the module docstring).

    Attributes:
        depth: ``8n + 2``.
        variant: ``"plain"``, ``"resnet"``, ``"van"`` or ``"van0"``.
        van_lambda_zero: True for VAN(λ = 0) (``van0``); pass it to ``VANUpdate(lambda_zero=...)``.
        blocks: the ``4n`` residual layers in forward order.
    """

    def __init__(
        self,
        depth: int,
        *,
        variant: str,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        width: int = 16,
        alpha_init: float = 0.0,
    ) -> None:
        super().__init__()
        n = preact_layers_per_stage(depth)
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; use one of {', '.join(VARIANTS)}")
        check_image_options(num_classes, in_channels, image_size)
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.depth = depth
        self.variant = variant
        self.van_lambda_zero = variant == "van0"
        self.input_shape = (in_channels, image_size, image_size)
        self.num_classes = num_classes
        self.conv1 = _conv3x3(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        channels_in = width
        for s in range(1, 5):
            channels = width * 2 ** (s - 1)
            stage = nn.Sequential()
            for i in range(n):
                stride = 2 if s > 1 and i == 0 else 1
                stage.append(PreactLayer(channels_in, channels, stride, variant, alpha_init))
                channels_in = channels
            self.add_module(f"stage{s}", stage)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels_in, num_classes)
        self._block_names = [f"stage{s}.{i}" for s in range(1, 5) for i in range(n)]
        if variant != "plain":
            sources = ["relu", *(f"{b}.out" for b in self._block_names[:-1])]
            for source, block in zip(sources, self.blocks, strict=True):
                block.skip.source = source
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @property
    def blocks(self) -> list[PreactLayer]:
        """The ``4n`` residual layers in forward order."""
        return [self.get_submodule(name) for name in self._block_names]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, H, W] -> [B, num_classes]`` logits."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.stage4(self.stage3(self.stage2(self.stage1(x))))
        return self.fc(self.flatten(self.pool(x)))

    def gradlens_spec(self) -> ModelSpec:
        """Layers: stem conv, both convs of every residual layer, fc. Activations: stem and layer outputs.

        Final activation: the globally average-pooled last map (``pool``, ``[B, 8·width, 1, 1]``).
        """
        layers = [LayerSpec("conv1")]
        for name in self._block_names:
            layers += [LayerSpec(f"{name}.conv1"), LayerSpec(f"{name}.conv2")]
        layers.append(LayerSpec("fc"))
        return ModelSpec(
            layers=tuple(layers),
            activations=("relu", *(f"{name}.out" for name in self._block_names)),
            final_activation="pool",
            blocks=tuple(self._block_names),
        )


def preact_layers_per_stage(depth: int) -> int:
    """``n`` of depth ``8n + 2`` (``n >= 1``); ``ValueError`` naming the valid depths otherwise."""
    if depth < 10 or (depth - 2) % 8 != 0:
        raise ValueError(
            f"depth {depth} is not 8n+2; valid: 10, 18, 26, 34, 42, ... (document 002: 10 to 82)"
        )
    return (depth - 2) // 8


def build_preact(
    depth: int,
    *,
    variant: str,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    width: int = 16,
    alpha_init: float = 0.0,
) -> PreactNet:
    """Build the ``8n + 2`` network of document 002 in one of the variants plain, resnet, van, van0.

    Args:
        depth: ``8n + 2``, ``n >= 1`` (document 002: n in 1, ..., 10 on CIFAR-10).
        variant: ``"plain"``, ``"resnet"``, ``"van"`` or ``"van0"`` (VAN(λ = 0); same architecture as van).
        num_classes: 10 (CIFAR-10) or 100 (CIFAR-100).
        in_channels: input image channels.
        image_size: input height = width.
        width: channels of the stem and stage 1; stages 2, 3, 4 have 2, 4, 8 times as many.
        alpha_init: initial α of every VAN skip (document 002: 0).

    Raises:
        ValueError: bad depth, variant or options.
    """
    return PreactNet(
        depth,
        variant=variant,
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        width=width,
        alpha_init=alpha_init,
    )


@register_family(
    "preact_{variant}_{depth}",
    params={"variant": "|".join(VARIANTS), "depth": int},
    examples=["preact_plain_10", "preact_resnet_10", "preact_van_10", "preact_van0_10", "preact_van_18"],
    summary="document 002 CIFAR net, depth 8n+2, conv-BN-ReLU-conv-BN-ReLU layers: plain/resnet/van/van0",
)
def preact(variant: str, depth: int, **kw: object) -> PreactNet:
    """Registry builder for ``preact_{variant}_{depth}``; ``kw`` as in :func:`build_preact`."""
    return build_preact(depth, variant=variant, **kw)  # type: ignore[arg-type]
