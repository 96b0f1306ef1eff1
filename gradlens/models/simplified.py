"""Simplified PlnNet / ResNet of document 004 (appendix A, Figures 4, 5) and the dominant-path net T′.

``L = 3N + 2`` layers: a 3×3 stem convolution (16 channels) + ReLU, three groups ``G_0, G_1, G_2`` of
``N`` depth-1 blocks with 16, 32, 64 channels (the first convolution of ``G_1`` and ``G_2`` has stride 2
and doubles the channels), an average pooling layer and a fully connected layer (soft-max in the loss).
All convolutions are 3×3 with bias. A block computes (document 004, section 2)::

    plain:     y = relu(conv(x))                 (Figure 5a)
    residual:  y = relu(x̃ + conv(x))             (Figure 5b)
    dominant:  y = relu(conv_T′(x))              (appendix D.3: kernels I + R_s, diagonal over channels)

where ``x̃`` is ``x`` itself, or for a channel-doubling block ``C -> 2C`` with stride 2,
``x[:, :, ::2, ::2]`` with ``C`` zero channels appended: exactly the map of a convolution whose kernel is
1 at the ID entries ``(c, c, centre)``, ``c < C`` (document 004, eq. 1, ``c ≤ min(C, D)``), so the
transform ``T`` of :mod:`gradlens.models.transforms` is exact on every block.

Average pooling: on 32×32 CIFAR inputs the last map is 8×8 and the document's 8×8 average pool is a
global average; we use ``AdaptiveAvgPool2d(1)`` (global average), which is that pool at 32×32 and adapts
to 28×28 MNIST inputs (last map 7×7) and other sizes.

Initialisers (document 004, eqs. 3, 4; ``S = C·U·V`` the fan-in of a ``D × C × U × V`` kernel, ``S`` = in
features for the fully connected layer; biases 0): KWI ``σ = √(2/S)`` (default of plain nets), HMWI
``σ = 1/S`` (default of residual and dominant nets).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from gradlens.models.connections import IdentitySkip
from gradlens.models.registry import register_family
from gradlens.models.resnet_v1 import ImageClassifier, ZeroPadShortcut, check_image_options
from gradlens.spec import LayerSpec, ModelSpec

GROUP_CHANNELS = (16, 32, 64)
Kind = Literal["plain", "residual", "dominant"]
Init = Literal["kwi", "hmwi"]
KINDS: tuple[str, ...] = ("plain", "residual", "dominant")
INITS: tuple[str, ...] = ("kwi", "hmwi")


def kwi_(weight: torch.Tensor) -> torch.Tensor:
    """Kaiming weight initialisation in place: ``N(0, σ²)``, ``σ = √(2/S)`` (document 004, eq. 3).

    Args:
        weight: ``[D, C, U, V]`` kernel (``S = C·U·V``) or ``[D, S]`` matrix.
    """
    fan_in = math.prod(weight.shape[1:])
    with torch.no_grad():
        return weight.normal_(0.0, math.sqrt(2.0 / fan_in))


def hmwi_(weight: torch.Tensor) -> torch.Tensor:
    """Hardt–Ma weight initialisation in place: ``N(0, σ²)``, ``σ = 1/S`` (document 004, eq. 4).

    Args:
        weight: ``[D, C, U, V]`` kernel (``S = C·U·V``) or ``[D, S]`` matrix.
    """
    fan_in = math.prod(weight.shape[1:])
    with torch.no_grad():
        return weight.normal_(0.0, 1.0 / fan_in)


def dominant_mask(out_channels: int, in_channels: int) -> torch.Tensor:
    """Channel mask ``M [D, C]`` of the dominant-path kernels T′ (document 004, appendix D.3).

    ``M[d, c] = 1`` iff ``d mod C == c``: the identity pattern for ``D = C`` (``T_s``), and for a
    channel-doubling kernel ``D = 2C`` (``T_r``) two stacked ``C × C`` diagonals (upper: ``d = c``,
    lower: ``d = c + C``).

    Raises:
        ValueError: ``D`` is not a multiple of ``C``.
    """
    if out_channels % in_channels != 0:
        raise ValueError(f"dominant kernels need out_channels a multiple of in_channels, got "
                         f"{out_channels} and {in_channels}")
    rows = torch.arange(out_channels)
    mask = torch.zeros(out_channels, in_channels)
    mask[rows, rows % in_channels] = 1.0
    return mask


def stacked_identity(out_channels: int, in_channels: int, kernel_size: int = 3) -> torch.Tensor:
    """The ``I`` of T′: ``[D, C, k, k]``, 1 at ``(d, d mod C, centre, centre)``, 0 elsewhere."""
    eye = torch.zeros(out_channels, in_channels, kernel_size, kernel_size)
    eye[:, :, kernel_size // 2, kernel_size // 2] = dominant_mask(out_channels, in_channels)
    return eye


class DiagonalConv2d(nn.Conv2d):
    """3×3 convolution whose kernel is restricted to the dominant paths (document 004, appendix D.3).

    The kernel ``weight [D, C, 3, 3]`` acts through ``weight * mask`` with the buffer
    ``mask [D, C, 1, 1]`` of :func:`dominant_mask`: output channel ``d`` reads input channel ``d mod C``
    only. Entries outside the mask are kept at 0 and get zero gradient, so the effective parameters are
    ``D·9`` weights (:attr:`num_free_weights`) instead of ``D·C·9``. The weight stores the full kernel
    ``T′ = I + R`` (the identity is part of the weight, as in the equivalent plain net).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__(in_channels, out_channels, 3, stride=stride, padding=1, bias=True)
        self.register_buffer("mask", dominant_mask(out_channels, in_channels)[:, :, None, None])
        with torch.no_grad():
            self.weight.mul_(self.mask)

    @property
    def num_free_weights(self) -> int:
        """Number of kernel entries on the dominant paths (``D·U·V``)."""
        return int(self.mask.sum().item()) * self.kernel_size[0] * self.kernel_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class SimplifiedBlock(nn.Module):
    """Depth-1 block ``[B, C, H, W] -> [B, D, H/s, W/s]``: ``relu(conv(x))`` or ``relu(x̃ + conv(x))``.

    Submodules: ``conv`` (``nn.Conv2d``, or :class:`DiagonalConv2d` for ``dominant``), for ``residual``
    also ``shortcut`` (identity or option-A zero-pad, parameter-free) and ``skip``
    (:class:`~gradlens.models.connections.IdentitySkip`), and ``relu`` (the block output a^(ℓ)).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, kind: Kind) -> None:
        super().__init__()
        self.kind = kind
        if kind == "dominant":
            self.conv: nn.Conv2d = DiagonalConv2d(in_channels, out_channels, stride)
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=True)
        if kind == "residual":
            if stride == 1 and in_channels == out_channels:
                self.shortcut: nn.Module = nn.Identity()
            else:
                self.shortcut = ZeroPadShortcut(in_channels, out_channels, stride)
            self.skip = IdentitySkip()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.kind == "residual":
            out = self.skip(self.shortcut(x), out)
        return self.relu(out)


class SimplifiedNet(ImageClassifier):
    """Simplified PlnNet / ResNet / dominant-path net of depth ``L = 3N + 2`` (see module docstring).

    Module names: ``conv``, ``relu`` (stem), ``group{0,1,2}.{i}`` (:class:`SimplifiedBlock`, ``i`` from
    0), ``pool``, ``flatten``, ``fc``. Plain, residual and dominant nets of one depth have the same
    parameter names and shapes, so state dicts move between them (:mod:`gradlens.models.transforms`).

    Attributes:
        depth: ``L = 3N + 2``.
        kind: ``"plain"``, ``"residual"`` or ``"dominant"``.
        blocks: the ``3N`` blocks in forward order.
    """

    def __init__(
        self,
        depth: int,
        *,
        kind: Kind,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        init: Init | None = None,
    ) -> None:
        super().__init__()
        n = simplified_blocks_per_group(depth)
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
        check_image_options(num_classes, in_channels, image_size)
        init = init if init is not None else ("kwi" if kind == "plain" else "hmwi")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; use one of {', '.join(INITS)}")
        self.depth = depth
        self.kind = kind
        self.init = init
        self.input_shape = (in_channels, image_size, image_size)
        self.num_classes = num_classes
        self.conv = nn.Conv2d(in_channels, GROUP_CHANNELS[0], 3, padding=1, bias=True)
        self.relu = nn.ReLU()
        width = GROUP_CHANNELS[0]
        for g, channels in enumerate(GROUP_CHANNELS):
            group = nn.Sequential()
            for i in range(n):
                stride = 2 if g > 0 and i == 0 else 1
                group.append(SimplifiedBlock(width, channels, stride, kind))
                width = channels
            self.add_module(f"group{g}", group)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(width, num_classes)
        self._block_names = [f"group{g}.{i}" for g in range(3) for i in range(n)]
        if kind == "residual":
            sources = ["relu", *(f"{b}.relu" for b in self._block_names[:-1])]
            for source, block in zip(sources, self.blocks, strict=True):
                block.skip.source = source
        self._initialise()

    @property
    def blocks(self) -> list[SimplifiedBlock]:
        """The ``3N`` blocks in forward order."""
        return [self.get_submodule(name) for name in self._block_names]

    def id_layer_names(self) -> list[str]:
        """Names of the ``3N`` block convolutions: the layers whose ID entries ``T`` changes."""
        return [f"{name}.conv" for name in self._block_names]

    def _initialise(self) -> None:
        draw = kwi_ if self.init == "kwi" else hmwi_
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                draw(module.weight)
                nn.init.zeros_(module.bias)
        if self.kind == "dominant":
            # T′ = I + R_s with R_s the diagonal (or stacked-diagonal) part of an HMWI/KWI kernel.
            with torch.no_grad():
                for block in self.blocks:
                    conv = block.conv
                    eye = stacked_identity(conv.out_channels, conv.in_channels)
                    conv.weight.mul_(conv.mask).add_(eye.to(conv.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, H, W] -> [B, num_classes]`` logits."""
        x = self.relu(self.conv(x))
        x = self.group2(self.group1(self.group0(x)))
        return self.fc(self.flatten(self.pool(x)))

    def gradlens_spec(self) -> ModelSpec:
        """Layers ``conv``, the block convs (``residual=True`` in the ResNet), ``fc``.

        Activations a^(ℓ): the ReLU outputs of the stem and every block. Final activation a^(L): the
        average-pooled last map ``[B, 64, 1, 1]``, one scalar per channel (document 004, appendix D.2:
        "64 final sub-activations in a^(L), which are the outputs of the average layer").
        """
        residual = self.kind == "residual"
        layers = (
            LayerSpec("conv"),
            *(LayerSpec(name, residual=residual) for name in self.id_layer_names()),
            LayerSpec("fc"),
        )
        return ModelSpec(
            layers=layers,
            activations=("relu", *(f"{name}.relu" for name in self._block_names)),
            final_activation="pool",
            blocks=tuple(self._block_names),
        )


def simplified_blocks_per_group(depth: int) -> int:
    """``N`` of depth ``L = 3N + 2`` (``N >= 1``); ``ValueError`` naming the valid depths otherwise."""
    if depth < 5 or (depth - 2) % 3 != 0:
        raise ValueError(
            f"depth {depth} is not 3N+2; valid: 5, 8, 11, 14, 17, 20, ... (document 004: 20, 32, 44)"
        )
    return (depth - 2) // 3


def build_simplified(
    depth: int,
    *,
    kind: Kind,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    init: Init | None = None,
) -> SimplifiedNet:
    """Build a simplified net of document 004.

    Args:
        depth: ``L = 3N + 2``, ``N >= 1``.
        kind: ``"plain"`` (PlnNet), ``"residual"`` (ResNet) or ``"dominant"`` (T′, appendix D.3).
        num_classes: outputs of the fully connected layer.
        in_channels: 3 for CIFAR, 1 for MNIST.
        image_size: input height = width (32 CIFAR, 28 MNIST).
        init: ``"kwi"`` or ``"hmwi"``; default KWI for plain, HMWI otherwise (document 004, appendix A).

    Raises:
        ValueError: bad depth, kind, init or image options.
    """
    return SimplifiedNet(
        depth, kind=kind, num_classes=num_classes, in_channels=in_channels, image_size=image_size, init=init
    )


@register_family(
    "simplified_plain_{depth}",
    params={"depth": int},
    examples=["simplified_plain_8", "simplified_plain_20"],
    summary="simplified PlnNet of document 004 (depth-1 blocks relu(conv x)), L = 3N+2, KWI",
)
def simplified_plain(depth: int, **kw: object) -> SimplifiedNet:
    """Registry builder for ``simplified_plain_{depth}``; ``kw`` as in :func:`build_simplified`."""
    return build_simplified(depth, kind="plain", **kw)  # type: ignore[arg-type]


@register_family(
    "simplified_resnet_{depth}",
    params={"depth": int},
    examples=["simplified_resnet_8", "simplified_resnet_20"],
    summary="simplified ResNet of document 004 (depth-1 blocks relu(x + conv x)), L = 3N+2, HMWI",
)
def simplified_resnet(depth: int, **kw: object) -> SimplifiedNet:
    """Registry builder for ``simplified_resnet_{depth}``; ``kw`` as in :func:`build_simplified`."""
    return build_simplified(depth, kind="residual", **kw)  # type: ignore[arg-type]


@register_family(
    "simplified_dominant_{depth}",
    params={"depth": int},
    examples=["simplified_dominant_8", "simplified_dominant_20"],
    summary="document 004 net with dominant-path kernels only (T′ = I + R_s, appendix D.3), L = 3N+2",
)
def simplified_dominant(depth: int, **kw: object) -> SimplifiedNet:
    """Registry builder for ``simplified_dominant_{depth}``; ``kw`` as in :func:`build_simplified`."""
    return build_simplified(depth, kind="dominant", **kw)  # type: ignore[arg-type]
