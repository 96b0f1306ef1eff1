"""The registered SC models of document 000. Each is its backbone (same modules, same ``gradlens_spec()``) with
a :class:`~gradlens.models.short_circuit.circuit_set.ShortCircuits` set installed and exposed as
``model.short_circuits``. SC options are keyword arguments prefixed ``sc_``; the others go to the backbone builder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from gradlens.models.mlp import sigmoid_fcn
from gradlens.models.registry import register_family
from gradlens.models.resnet_v1 import build_resnet_v1
from gradlens.models.short_circuit.circuit import ShortCircuit
from gradlens.models.short_circuit.circuit_set import ShortCircuits, gap_short_circuits
from gradlens.models.transformer import encoder


@register_family(
    "scfcn_5",
    examples=["scfcn_5"],
    summary="SCFCN (document 000, 5.2.1): sigmoid_fcn_5 with a short circuit from fc4 to fc2",
)
def scfcn_5(*, sc_weight: float = 0.2, sc_mode: str = "weight_only", **kw: Any) -> nn.Module:
    """``sigmoid_fcn_5`` with the short circuit "from the fourth layer to the second layer".

    Front ``fc2`` (its weight gradient gets ``w·δ_sc``), rear ``fc4`` (``δ_sc``: the gradient w.r.t. the
    pre-activation output of ``fc4``). This is also what Algorithm 1's rule gives for rear ``fc4`` with
    gap ``k = 2`` over ``fc1 ... fc5``. ``kw`` go to the backbone.
    """
    model = sigmoid_fcn(5, **kw)
    ShortCircuits([ShortCircuit("fc2", "fc4", sc_weight, sc_mode)]).install(model)
    return model


@register_family(
    "scresnet_v1_{depth}",
    params={"depth": int},
    examples=["scresnet_v1_14", "scresnet_v1_20"],
    summary="SCResNet (document 000): ResNet-v1 with short circuits within each stage, gap k = 2",
)
def scresnet_v1(
    depth: int,
    *,
    sc_weight: float = 0.2,
    sc_gap: int = 2,
    sc_mode: str = "weight_only",
    sc_stages: Sequence[int] = (1, 2, 3),
    sc_rears: str = "stage_end",
    **kw: Any,
) -> nn.Module:
    """ResNet-v1 of depth ``6n + 2`` with short circuits inside the stages (where all shapes agree).

    The candidates of stage ``s`` are its ``2n`` convolutions ``stage{s}.{i}.conv{1,2}`` in forward order
    (all outputs ``[B, C_s, H_s, W_s]``); fronts follow Algorithm 1's ``mod(l, k) == 0 and l < sc``.
    ``sc_rears="stage_end"`` (single SC per stage): the rear is the stage's last convolution, so for
    ResNet-20 and ``k = 2`` the 2nd and 4th layers of each stage are enhanced (document 000, 5.2.2).
    ``sc_rears="every_block"`` (multiple SC, section 5.3): every block's second convolution is a rear.

    Args:
        depth: ``6n + 2``.
        sc_weight: SC weight ``w``.
        sc_gap: skip gap ``k``.
        sc_mode: ``"weight_only"`` or ``"propagate"``.
        sc_stages: stages (1, 2, 3) that get short circuits.
        sc_rears: ``"stage_end"`` or ``"every_block"``.
        **kw: backbone options (``num_classes``, ``in_channels``, ``image_size``).

    Raises:
        ValueError: invalid depth (names the valid depths), stage or rear option, or no front selected.
    """
    model = build_resnet_v1(depth, **kw)
    if sc_rears not in ("stage_end", "every_block"):
        raise ValueError(f"sc_rears {sc_rears!r} is unknown; use 'stage_end' or 'every_block'")
    bad = [s for s in sc_stages if s not in (1, 2, 3)]
    if bad or not sc_stages:
        raise ValueError(f"sc_stages {tuple(sc_stages)!r} must be a non-empty subset of (1, 2, 3)")
    n = (depth - 2) // 6
    circuits: list[ShortCircuit] = []
    for s in sc_stages:
        candidates = [f"stage{s}.{i}.conv{j}" for i in range(n) for j in (1, 2)]
        rears = candidates[1::2] if sc_rears == "every_block" else candidates[-1:]
        circuits += gap_short_circuits(candidates, rears, sc_gap, weight=sc_weight, mode=sc_mode).list()
    ShortCircuits(circuits).install(model)
    return model


@register_family(
    "scencoder_{depth}",
    params={"depth": int},
    examples=["scencoder_2", "scencoder_8"],
    summary="SCBERT substitute (document 000): encoder_{depth} with short circuits across blocks, gap k = 4",
)
def scencoder(
    depth: int,
    *,
    sc_weight: float = 0.2,
    sc_gap: int | None = None,
    sc_mode: str = "weight_only",
    sc_layer: str = "fc2",
    **kw: Any,
) -> nn.Module:
    """Transformer encoder stack with short circuits across blocks (the SCBERT idea, document 000, 3.4).

    The candidates are the layer ``sc_layer`` of every block, ``blocks.{i}.{sc_layer}`` (default ``fc2``,
    the feed-forward output projection, ``[B, T, d_model]`` like the block itself), 1-based by block;
    the rear is the last block's, the fronts follow ``mod(l, k) == 0 and l < sc``. The document uses
    ``k = 4`` (BERT-base, 12 blocks: fronts 4 and 8); the default here is ``k = min(4, max(1, depth // 2))``
    so that shallow stacks still get a short circuit (depth 2: ``k = 1``, front ``blocks.0``).

    Args:
        depth: number of encoder blocks (``>= 2``).
        sc_weight: SC weight ``w``.
        sc_gap: skip gap ``k`` (None: the default above).
        sc_mode: ``"weight_only"`` or ``"propagate"``.
        sc_layer: which layer of each block: ``q``, ``k``, ``v``, ``proj`` or ``fc2``.
        **kw: backbone options of ``encoder_{depth}``.

    Raises:
        ValueError: depth below 2 or an invalid backbone option, an unknown ``sc_layer``, or no front.
    """
    if sc_layer not in ("q", "k", "v", "proj", "fc2"):
        raise ValueError(f"sc_layer {sc_layer!r} is unknown; use one of q, k, v, proj, fc2 (d_model outputs)")
    if depth < 2:
        raise ValueError(f"depth {depth} leaves no block before the rear; valid depths: 2, 3, 4, ...")
    model = encoder(depth, **kw)
    k = min(4, max(1, depth // 2)) if sc_gap is None else sc_gap
    candidates = [f"blocks.{i}.{sc_layer}" for i in range(depth)]
    gap_short_circuits(candidates, candidates[-1:], k, weight=sc_weight, mode=sc_mode).install(model)
    return model
