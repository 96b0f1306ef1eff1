"""Thin MLP family of the VAN document (document 002, section 4.1): ``thin_mlp_{variant}_{depth}``.

``x -> flatten -> stem (Linear, 50 units) -> blocks.0 ... blocks.{l-1} -> out_bn -> out_relu -> head``
(logits; the softmax is in the loss). ``l = depth`` hidden layers/blocks of ``width = 50`` units, each with
the pre-activation residual function ``F(x) = fc(relu(bn(x)))`` ("batch-normalisation followed by ReLU and a
linear projection") merged with its input ``x`` by the variant:

* ``plain``:   ``y = F(x)``;
* ``resnet``:  ``y = F(x) + x`` (:class:`~gradlens.models.connections.IdentitySkip`);
* ``highway``: ``y = T·F(x) + (1 − T)·x`` with the transform gate ``T = sigmoid(gate(x))``, ``gate`` a
  linear layer of ``x`` whose bias starts at −1 (Srivastava et al. recommend a negative gate bias, which
  starts the blocks towards carrying ``x``) (:class:`~gradlens.models.connections.GatedSkip`);
* ``dirac``:   ``y = F(x)`` with ``fc`` a :class:`DiracLinear`: weight ``Ŵ = diag(a) + diag(b)·W̄``,
  ``W̄`` the rows of ``W`` normalised to unit norm, ``a`` initialised to 1 and ``b`` to 0.1 (DiracNets,
  Zagoruyko & Komodakis 2017, for a fully connected layer: the identity plays the Dirac delta);
* ``van``:     ``y = F(x) + (1 − α)·x`` with per-neuron α (:class:`~gradlens.models.van.VANSkip`, α = 0 at
  start), trained by :class:`~gradlens.models.van.VANUpdate` (λ init −1);
* ``van0``:    the same network for VAN(λ = 0); ``model.lambda_zero`` is True, so build the update as
  ``VANUpdate(model, lr, lambda_zero=model.lambda_zero)``.

Linear weights use Kaiming-normal init with zero biases (document 002 does not state the MLP init).
Module names: ``stem``, ``blocks.{i}.bn``, ``blocks.{i}.relu``, ``blocks.{i}.fc``, ``blocks.{i}.gate`` and
``blocks.{i}.gate_act`` (highway), ``blocks.{i}.skip`` (resnet, highway, van, van0), ``out_bn``, ``out_relu``,
``head``. Valid depths: 1..30 (the document's range).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gradlens.models.connections import GatedSkip, IdentitySkip
from gradlens.models.mlp import ZooModel, as_input_shape, check_depth_range, check_positive, he_init_
from gradlens.models.registry import register_family
from gradlens.models.van import VANSkip
from gradlens.spec import LayerSpec, ModelSpec

VARIANTS = ("plain", "resnet", "highway", "dirac", "van", "van0")
MAX_DEPTH = 30


class DiracLinear(nn.Linear):
    """Square linear layer with DiracNet weights ``Ŵ = diag(a) + diag(b)·W̄`` (``y = Ŵx + bias``).

    ``W̄_{ij} = W_{ij} / ‖W_{i,:}‖₂``: each row of the free weight ``W`` (``self.weight``, ``[n, n]``) is
    normalised. ``a`` (``identity_scale``, ``[n]``) and ``b`` (``weight_scale``, ``[n]``) are trained.
    ``self.weight`` is the free parameter ``W``; :meth:`effective_weight` gives ``Ŵ``.
    """

    def __init__(self, features: int, identity_init: float = 1.0, weight_init: float = 0.1) -> None:
        super().__init__(features, features)
        self.identity_scale = nn.Parameter(torch.full((features,), float(identity_init)))
        self.weight_scale = nn.Parameter(torch.full((features,), float(weight_init)))

    def effective_weight(self) -> torch.Tensor:
        """``Ŵ = diag(a) + diag(b)·W̄``, shape ``[n, n]``."""
        normalised = F.normalize(self.weight, dim=1)
        return torch.diag(self.identity_scale) + self.weight_scale[:, None] * normalised

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


class ThinBlock(nn.Module):
    """One hidden block ``[B, n] -> [B, n]`` of a thin MLP; see the module docstring for the variants."""

    def __init__(self, variant: str, width: int, source: str) -> None:
        super().__init__()
        self.variant = variant
        self.bn = nn.BatchNorm1d(width)
        self.relu = nn.ReLU()
        self.fc = DiracLinear(width) if variant == "dirac" else nn.Linear(width, width)
        he_init_(self.fc)
        if variant == "highway":
            self.gate = he_init_(nn.Linear(width, width))
            nn.init.constant_(self.gate.bias, -1.0)
            self.gate_act = nn.Sigmoid()
            self.skip = GatedSkip(source)
        elif variant == "resnet":
            self.skip = IdentitySkip(source)
        elif variant in ("van", "van0"):
            self.skip = VANSkip((width,), source)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fx = self.fc(self.relu(self.bn(x)))
        if self.variant == "highway":
            return self.skip(x, fx, self.gate_act(self.gate(x)))
        if self.variant in ("resnet", "van", "van0"):
            return self.skip(x, fx)
        return fx


class ThinMLP(ZooModel):
    """Thin MLP of document 002, section 4.1 (see the module docstring).

    Attributes:
        variant: one of :data:`VARIANTS`.
        lambda_zero: True for ``van0`` (VAN(λ = 0)), else False.
    """

    def __init__(
        self, variant: str, depth: int, input_shape: tuple[int, ...], width: int, num_classes: int
    ) -> None:
        super().__init__()
        self.variant = variant
        self.lambda_zero = variant == "van0"
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.flatten = nn.Flatten()
        self.stem = he_init_(nn.Linear(math.prod(input_shape), width))
        self.blocks = nn.ModuleList(
            ThinBlock(variant, width, f"blocks.{i - 1}" if i else "stem") for i in range(depth)
        )
        self.out_bn = nn.BatchNorm1d(width)
        self.out_relu = nn.ReLU()
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.flatten(x))
        for block in self.blocks:
            x = block(x)
        return self.head(self.out_relu(self.out_bn(x)))

    def gradlens_spec(self) -> ModelSpec:
        layers = [LayerSpec("stem")]
        for i in range(len(self.blocks)):
            layers.append(LayerSpec(f"blocks.{i}.fc"))
            if self.variant == "highway":
                layers.append(LayerSpec(f"blocks.{i}.gate"))
        layers.append(LayerSpec("head"))
        blocks = tuple(f"blocks.{i}" for i in range(len(self.blocks)))
        return ModelSpec(layers=tuple(layers), activations=blocks, final_activation="out_relu", blocks=blocks)


@register_family(
    "thin_mlp_{variant}_{depth}",
    params={"variant": "|".join(VARIANTS), "depth": int},
    examples=[f"thin_mlp_{v}_{d}" for v in VARIANTS for d in (1, 5)],
    summary="thin 50-unit MLP, depth hidden BN-ReLU-linear blocks (document 002, 4.1)",
)
def thin_mlp(
    variant: str,
    depth: int,
    input_shape: int | Sequence[int] = (1, 28, 28),
    width: int = 50,
    num_classes: int = 10,
) -> ThinMLP:
    """Build ``thin_mlp_{variant}_{depth}``; ``input_shape=(64,)`` (or ``(1, 8, 8)``) for 8×8 digits."""
    check_depth_range(f"thin_mlp_{variant}", depth, 1, MAX_DEPTH)
    check_positive(width=width, num_classes=num_classes)
    return ThinMLP(variant, depth, as_input_shape(input_shape), width, num_classes)
