"""The CNN of document 003 (Figure 2) with max-pool + concatenation skips, its vanilla and reinforced twins.

Document 003 gives the architecture through its shapes (section 2.3): layer 1 outputs ``[32, 32, 32]``
(H, W, C); its skip to layer 4 is 2×2 max-pooled to ``[16, 16, 32]`` and concatenated to layer 4's
``[16, 16, 64]``, giving ``[16, 16, 96]``; the reinforced vanilla CNN widens layers 4, 5 to 96 and 7, 8
to 224 channels, which fixes every other width: layers 1, 2 have 32 channels at full resolution, layer 3
is a 2×2 max-pool, layers 4, 5 have 64 channels, layer 6 is a 2×2 max-pool, layers 7, 8 have 128
channels, and the skips are ``1 -> 4``, ``2 -> 5``, ``4 -> 7``, ``5 -> 8`` (layer ``k``'s tensor is its ReLU
output, with its own skip concatenated when it receives one: 96 channels for layers 4, 5 and
``128 + 96 = 224`` for 7, 8). The text does not describe the head; we use a 2×2 max-pool (layer 9) and
one fully connected layer to the classes. All convolutions are 3×3, stride 1, padding 1, with ReLU.

Variants (``concat_cnn_{variant}``):

* ``skip``: the skips above, each a :class:`~gradlens.models.connections.ConcatSkip` (``skip{k}``, its
  ``source`` the skipped-from module) after a 2×2 max-pool of the skipped tensor (``skip{k}_pool``).
* ``vanilla``: no skips (widths 32, 32, 64, 64, 128, 128).
* ``reinforced``: no skips, layers 4, 5 widened to 96 and 7, 8 to 224 (document 003, Table 5).

Two-stage "skip*" training (document 003, section 2.1: train with the skips disabled, then enable them
and keep training): the document does not say how the disabled skips were realised. Here a disabled
``ConcatSkip`` concatenates zeros of the skipped tensor's shape, so every layer that receives a
concatenation has its final input width from the start; while the skips are off, the weights reading the
zero channels get zero gradient and the network computes exactly a vanilla CNN (the other weights play
the vanilla roles). :meth:`ConcatCNN.set_skips_enabled` switches them; ``skips_enabled=False`` at
construction starts stage one.
"""

from __future__ import annotations

import torch
from torch import nn

from gradlens.models.connections import ConcatSkip, set_skips_enabled
from gradlens.models.registry import register_family
from gradlens.models.resnet_v1 import ImageClassifier, check_image_options
from gradlens.spec import LayerSpec, ModelSpec

VARIANTS: tuple[str, ...] = ("skip", "vanilla", "reinforced")
CONV_LAYERS = (1, 2, 4, 5, 7, 8)
# layer -> layer whose tensor it receives by a skip (document 003, Figure 2).
SKIPS = {4: 1, 5: 2, 7: 4, 8: 5}
WIDTHS = {1: 32, 2: 32, 4: 64, 5: 64, 7: 128, 8: 128}
REINFORCED_WIDTHS = {**WIDTHS, 4: 96, 5: 96, 7: 224, 8: 224}


class ConvReLU(nn.Module):
    """One convolutional layer of the CNN: ``relu(conv(x))``, 3×3, padding 1 (``conv``, ``relu``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))


class ConcatCNN(ImageClassifier):
    """Document 003's CNN in the ``skip``, ``vanilla`` or ``reinforced`` variant (see module docstring).

    Module names, in forward order: ``layer1``, ``layer2``, ``pool3``, ``layer4``, [``skip4_pool``,
    ``skip4``], ``layer5``, [``skip5_pool``, ``skip5``], ``pool6``, ``layer7``, [``skip7_pool``, ``skip7``],
    ``layer8``, [``skip8_pool``, ``skip8``], ``pool9``, ``flatten``, ``fc``; each ``layer{k}`` has ``conv``
    and ``relu``.

    Attributes:
        variant: ``"skip"``, ``"vanilla"`` or ``"reinforced"``.
        blocks: the six convolutional layers (``layer{k}`` modules).
    """

    def __init__(
        self,
        *,
        variant: str,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        skips_enabled: bool = True,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; use one of {', '.join(VARIANTS)}")
        # Three 2×2 max-pools (layers 3, 6, 9) need at least 8 pixels.
        check_image_options(num_classes, in_channels, image_size, min_size=8)
        self.variant = variant
        self.input_shape = (in_channels, image_size, image_size)
        self.num_classes = num_classes
        widths = REINFORCED_WIDTHS if variant == "reinforced" else WIDTHS
        # Channels of layer k's tensor (its ReLU output, plus its concatenated skip in the skip variant).
        tensor_width: dict[int, int] = {0: in_channels}
        previous = 0
        size = image_size
        for k in range(1, 10):
            if k in (3, 6, 9):
                self.add_module(f"pool{k}", nn.MaxPool2d(2))
                tensor_width[k] = tensor_width[previous]
                size //= 2
            else:
                self.add_module(f"layer{k}", ConvReLU(tensor_width[previous], widths[k]))
                tensor_width[k] = widths[k]
                if variant == "skip" and k in SKIPS:
                    source = SKIPS[k]
                    self.add_module(f"skip{k}_pool", nn.MaxPool2d(2))
                    skip = ConcatSkip(dim=1, source=self._tensor_name(source), enabled=skips_enabled)
                    self.add_module(f"skip{k}", skip)
                    tensor_width[k] += tensor_width[source]
            previous = k
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(tensor_width[9] * size * size, num_classes)

    def _tensor_name(self, k: int) -> str:
        """Module whose output is layer ``k``'s tensor."""
        return f"skip{k}" if self.variant == "skip" and k in SKIPS else f"layer{k}"

    @property
    def blocks(self) -> list[ConvReLU]:
        """The six convolutional layers in forward order."""
        return [self.get_submodule(f"layer{k}") for k in CONV_LAYERS]

    def set_skips_enabled(self, enabled: bool) -> None:
        """Switch the concatenation skips on or off (skip* training); ``ValueError`` without skips."""
        if set_skips_enabled(self, enabled, (ConcatSkip,)) == 0:
            raise ValueError(f"concat_cnn_{self.variant} has no skips to switch; use concat_cnn_skip")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, H, W] -> [B, num_classes]`` logits."""
        tensors = {0: x}
        for k in range(1, 10):
            if k in (3, 6, 9):
                tensors[k] = self.get_submodule(f"pool{k}")(tensors[k - 1])
                continue
            out = self.get_submodule(f"layer{k}")(tensors[k - 1])
            if self.variant == "skip" and k in SKIPS:
                skipped = self.get_submodule(f"skip{k}_pool")(tensors[SKIPS[k]])
                out = self.get_submodule(f"skip{k}")(out, skipped)
            tensors[k] = out
        return self.fc(self.flatten(tensors[9]))

    def gradlens_spec(self) -> ModelSpec:
        """Layers: the six convs and fc. Activations: their ReLU outputs. Final: ``pool9`` (head input).

        Blocks: the ``layer{k}`` modules (``x -> relu(conv(x))``); the concatenations are not blocks.
        """
        return ModelSpec(
            layers=(*(LayerSpec(f"layer{k}.conv") for k in CONV_LAYERS), LayerSpec("fc")),
            activations=tuple(f"layer{k}.relu" for k in CONV_LAYERS),
            final_activation="pool9",
            blocks=tuple(f"layer{k}" for k in CONV_LAYERS),
        )


def build_concat_cnn(
    variant: str,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    skips_enabled: bool = True,
) -> ConcatCNN:
    """Build document 003's CNN.

    Args:
        variant: ``"skip"`` (concatenation skips 1→4, 2→5, 4→7, 5→8), ``"vanilla"`` or ``"reinforced"``.
        num_classes: classifier outputs (10 for CIFAR-10).
        in_channels: 3 for CIFAR, 1 for MNIST-like data.
        image_size: input height = width (32 CIFAR, 28 MNIST; at least 8).
        skips_enabled: initial state of the skips (False: stage one of skip* training).

    Raises:
        ValueError: unknown variant, bad options, or ``skips_enabled=False`` without skips.
    """
    if not skips_enabled and variant != "skip":
        raise ValueError(f"skips_enabled=False needs variant 'skip', got {variant!r}")
    return ConcatCNN(
        variant=variant,
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        skips_enabled=skips_enabled,
    )


@register_family(
    "concat_cnn_{variant}",
    params={"variant": "|".join(VARIANTS)},
    examples=["concat_cnn_skip", "concat_cnn_vanilla", "concat_cnn_reinforced"],
    summary="document 003 CNN (Figure 2): max-pool + concat skips 1→4, 2→5, 4→7, 5→8; vanilla; reinforced",
)
def concat_cnn(variant: str, **kw: object) -> ConcatCNN:
    """Registry builder for ``concat_cnn_{variant}``; ``kw`` as in :func:`build_concat_cnn`."""
    return build_concat_cnn(variant, **kw)  # type: ignore[arg-type]
