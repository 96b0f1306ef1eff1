"""MLPs with dense (concatenative) skips between non-adjacent layers (document 003, section 2.1/2.2).

``concat_mlp_{data}_{variant}_{layers}``: ``layers`` = 3 or 4 weight layers ``fc1 ... fc{layers}`` with
ReLU after every hidden layer (``relu{j}``) and logits out of the last:

* ``emnist``: 784 → 128 → 256 → [256] → 26 (EMNIST letters, input ``(1, 28, 28)``);
* ``cifar``:  3072 → 512 → 256 → [256] → 10 (CIFAR-10, input ``(3, 32, 32)``);

(the bracketed layer is the optional third hidden layer of the 4-layer net).

Skips (``variant="skip"``): document 003 connects every pair of non-adjacent layers ``i < j − 1`` by "full
connections": every neuron of layer ``j`` is connected to every neuron of layer ``i``. So the
pre-activation of layer ``j`` is ``z_j = W_j a_{j−1} + Σ_i W_{i→j} a_i + b_j``, i.e. one linear layer
applied to the concatenation ``[a_{j−1}, a_{i_1}, a_{i_2}, ...]`` (sources in increasing ``i``): the skips
are concatenation followed by the layer's own linear map, which is the same as adding a full linear
connection per pair. The concatenation is a :class:`~gradlens.models.connections.ConcatSkip` named
``concat{j}`` that sits before ``fc{j}``. The layers are the hidden layers and the output layer (the
document numbers "layer 1, 2, 3 and the output layer"); with ``include_input=True`` the input counts as
layer 0 too, so it also feeds every layer from ``fc2`` on.

Switching skips off and on ("skip*": train the vanilla net, then enable the skips and train on):
``skips_enabled=False`` at construction, later ``model.set_skips_enabled(True)``. A disabled skip feeds
zeros of the same width, so ``fc{j}`` keeps its input width; with skips disabled the net computes exactly
the vanilla function given by the first ``n_{j−1}`` columns of each ``fc{j}.weight``. The skip columns then
receive zero gradient (weight decay still shrinks them).

``variant="vanilla"`` is the plain MLP (no ConcatSkip at all).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gradlens.models.connections import ConcatSkip, set_skips_enabled
from gradlens.models.mlp import ZooModel
from gradlens.models.registry import register_family
from gradlens.spec import LayerSpec, ModelSpec

DATASETS: dict[str, tuple[tuple[int, ...], tuple[int, int, int], int]] = {
    # data: (input shape, hidden widths (n_l1, n_l2, n_l3), classes n_out)
    "emnist": ((1, 28, 28), (128, 256, 256), 26),
    "cifar": ((3, 32, 32), (512, 256, 256), 10),
}
VALID_LAYERS = (3, 4)


class ConcatMLP(ZooModel):
    """MLP of document 003 with optional dense skips (see the module docstring).

    Attributes:
        widths: neuron counts ``(n_0 = input, n_1, ..., n_out)``.
        skip_sources: layer index ``j`` -> indices ``i`` of the layers skipped into layer ``j``.
    """

    def __init__(
        self,
        hidden: tuple[int, ...],
        input_shape: tuple[int, ...],
        num_classes: int,
        skips: bool,
        include_input: bool,
        skips_enabled: bool,
    ) -> None:
        super().__init__()
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.widths = (math.prod(input_shape), *hidden, num_classes)
        n_layers = len(self.widths) - 1
        first = 0 if include_input else 1
        self.skip_sources: dict[int, tuple[int, ...]] = {}
        if skips:
            for j in range(2, n_layers + 1):
                sources = tuple(range(first, j - 1))
                if sources:
                    self.skip_sources[j] = sources
        self.flatten = nn.Flatten()
        for j in range(1, n_layers + 1):
            sources = self.skip_sources.get(j, ())
            if sources:
                names = [self._output_name(i) for i in sources]
                self.add_module(f"concat{j}", ConcatSkip(dim=1, source=names, enabled=skips_enabled))
            in_features = self.widths[j - 1] + sum(self.widths[i] for i in sources)
            self.add_module(f"fc{j}", nn.Linear(in_features, self.widths[j]))
            if j < n_layers:
                self.add_module(f"relu{j}", nn.ReLU())
        self.n_layers = n_layers

    @staticmethod
    def _output_name(i: int) -> str:
        return f"relu{i}" if i else "flatten"

    def set_skips_enabled(self, enabled: bool) -> None:
        """Switch every skip of the net on or off (the second stage of "skip*" switches them on)."""
        set_skips_enabled(self, enabled, (ConcatSkip,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [self.flatten(x)]  # outputs[i] = a_i, [B, n_i]
        for j in range(1, self.n_layers + 1):
            inp = outputs[j - 1]
            if j in self.skip_sources:
                inp = getattr(self, f"concat{j}")(inp, *(outputs[i] for i in self.skip_sources[j]))
            z = getattr(self, f"fc{j}")(inp)
            outputs.append(getattr(self, f"relu{j}")(z) if j < self.n_layers else z)
        return outputs[-1]

    def gradlens_spec(self) -> ModelSpec:
        hidden = tuple(f"relu{j}" for j in range(1, self.n_layers))
        # A layer with skips does not map a_{j-1} to a_j alone, so only skip-free layers are blocks.
        blocks = tuple(f"fc{j}" for j in range(1, self.n_layers + 1) if j not in self.skip_sources)
        return ModelSpec(
            layers=tuple(LayerSpec(f"fc{j}") for j in range(1, self.n_layers + 1)),
            activations=hidden,
            final_activation=hidden[-1],
            blocks=blocks,
        )


@register_family(
    "concat_mlp_{data}_{variant}_{layers}",
    params={"data": "|".join(DATASETS), "variant": "skip|vanilla", "layers": int},
    examples=[f"concat_mlp_{d}_{v}_{n}" for d in DATASETS for v in ("skip", "vanilla") for n in VALID_LAYERS],
    summary="document 003 MLP 128-256-[256]-26 / 512-256-[256]-10, dense skips between non-adjacent layers",
)
def concat_mlp(
    data: str,
    variant: str,
    layers: int,
    include_input: bool = False,
    skips_enabled: bool = True,
) -> ConcatMLP:
    """Build ``concat_mlp_{emnist|cifar}_{skip|vanilla}_{3|4}``.

    Args:
        include_input: count the input as layer 0 of the dense skips.
        skips_enabled: start with the skips switched on (False for the first stage of "skip*").
    """
    if layers not in VALID_LAYERS:
        raise ValueError(f"concat_mlp: {layers} layers is not valid; valid: 3, 4 (document 003)")
    if variant == "vanilla" and (include_input or not skips_enabled):
        raise ValueError("include_input/skips_enabled only apply to the skip variant; drop them for vanilla")
    input_shape, hidden, num_classes = DATASETS[data]
    skips = variant == "skip"
    return ConcatMLP(hidden[: layers - 1], input_shape, num_classes, skips, include_input, skips_enabled)
