"""Marker modules for the places where connections merge into the forward path.

Every skip of the zoo goes through one of these tiny modules, so a schematic (or a probe) can find the
connection types by ``isinstance`` on ``model.modules()`` and draw the edges:

* :class:`IdentitySkip`: additive identity skip ``fx + x`` (ResNet).
* :class:`GatedSkip`: highway carry ``T·H + (1 − T)·x``.
* :class:`ConcatSkip`: concatenative skip ``cat(x, s_1, ..., s_k)`` (dense block, document 003).
* :class:`LongSkip`: U-Net long skip, an encoder map concatenated into the decoder (document 001).
* ``VANSkip`` (phased-out skip ``fx + (1 − α)·x``, document 002) lives in :mod:`gradlens.models.van`.

Each marker records where its skipped input comes from: ``sources`` holds the dotted module names (as in
``model.named_modules()``) whose outputs are skipped from, set by the model builder; ``source`` is the first
of them (the only one for every marker except a multi-input :class:`ConcatSkip`). An empty name means the
model input. Markers with ``enabled`` can be switched off: a disabled skip contributes nothing (identity
skip: ``fx`` alone; concatenative/long skip: zeros of the same shape, so that the receiving layer keeps its
input width and the skip can be switched on again later, the "skip*" training of document 003).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class SkipMarker(nn.Module):
    """Base class of the connection markers: holds the names of the skipped-from modules.

    Args:
        source: dotted module name (or several, for a multi-input concatenation) whose output is the
            skipped input; ``""`` for the model input.
    """

    def __init__(self, source: str | Sequence[str] = "") -> None:
        super().__init__()
        self.sources: tuple[str, ...] = (source,) if isinstance(source, str) else tuple(source)

    @property
    def source(self) -> str:
        """The first (usually only) skipped-from module name."""
        return self.sources[0] if self.sources else ""

    @source.setter
    def source(self, value: str) -> None:
        self.sources = (value,)

    def extra_repr(self) -> str:
        return f"source={', '.join(self.sources)!r}"


class IdentitySkip(SkipMarker):
    """Additive identity skip: ``forward(x, fx) = fx + x`` (``fx`` alone when disabled).

    Args:
        source: module whose output is ``x``.
        enabled: whether the skip is present.
    """

    def __init__(self, source: str = "", enabled: bool = True) -> None:
        super().__init__(source)
        self.enabled = enabled

    def forward(self, x: torch.Tensor, fx: torch.Tensor) -> torch.Tensor:
        return fx + x if self.enabled else fx

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, enabled={self.enabled}"


class GatedSkip(SkipMarker):
    """Highway merge: ``forward(x, h, t) = t·h + (1 − t)·x`` with the transform gate ``t`` in (0, 1).

    The gate ``t = sigmoid(W_T x + b_T)`` is computed by the block (a layer of its own); this marker only
    merges, elementwise over tensors of one shape.

    Args:
        source: module whose output is ``x`` (the carried input).
    """

    def forward(self, x: torch.Tensor, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return t * h + (1 - t) * x


class ConcatSkip(SkipMarker):
    """Concatenative skip: ``forward(x, *skipped) = cat([x, *skipped], dim)``.

    ``x`` is the main-path input; ``skipped`` are the skipped inputs (already resized by the builder,
    e.g. max-pooled). When disabled, each skipped input is replaced by zeros of its shape, so the width of
    the result (and of the layer that consumes it) does not change.

    Args:
        dim: concatenation dimension (1: features of ``[B, N]`` or channels of ``[B, C, H, W]``).
        source: module names of the skipped inputs, in the order they are passed to ``forward``.
        enabled: whether the skipped inputs are passed through (False: zeros).
    """

    def __init__(self, dim: int = 1, source: str | Sequence[str] = "", enabled: bool = True) -> None:
        super().__init__(source)
        self.dim = dim
        self.enabled = enabled

    def forward(self, x: torch.Tensor, *skipped: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            skipped = tuple(torch.zeros_like(s) for s in skipped)
        return torch.cat([x, *skipped], dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, {super().extra_repr()}, enabled={self.enabled}"


class LongSkip(SkipMarker):
    """U-Net long skip: ``forward(decoder, encoder) = cat([decoder, encoder], dim)``.

    The encoder feature map is concatenated into the decoder at the same resolution (zeros when disabled).

    Args:
        dim: concatenation dimension (channels).
        source: module whose output is the encoder map.
        enabled: whether the encoder map is passed through (False: zeros).
    """

    def __init__(self, dim: int = 1, source: str = "", enabled: bool = True) -> None:
        super().__init__(source)
        self.dim = dim
        self.enabled = enabled

    def forward(self, decoder: torch.Tensor, encoder: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            encoder = torch.zeros_like(encoder)
        return torch.cat([decoder, encoder], dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, {super().extra_repr()}, enabled={self.enabled}"


def set_skips_enabled(
    model: nn.Module, enabled: bool, kinds: tuple[type[SkipMarker], ...] | None = None
) -> int:
    """Switch every switchable skip marker of ``model`` (optionally only those of ``kinds``) on or off.

    Returns:
        The number of markers switched.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, SkipMarker) and hasattr(module, "enabled"):
            if kinds is None or isinstance(module, kinds):
                module.enabled = enabled
                count += 1
    return count
