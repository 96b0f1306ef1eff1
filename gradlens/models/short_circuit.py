"""Short circuits: backward-only connections from a rear layer to front layers (document 000, SCNet).

Document 000 (section 3, Algorithm 1) writes a feed-forward net as ``Z^{l+1} = W^l a^l``,
``a^{l+1} = f(Z^{l+1})`` with sensitivities ``δ^l = ∂J/∂Z^l``. A short circuit from a rear layer to a
front layer ``l`` leaves the forward pass alone and changes the front layer's weight gradient (eq. 13,
with the SC weight ``w`` of section 5.4)::

    ∂J/∂W^l = (δ^{l+1} + w·δ_sc) a^{lᵀ}          (summed over the samples of the mini-batch)

In module terms (how this module names things): the *front* is an ``nn.Linear``/``nn.Conv{1,2,3}d`` whose
output is ``Z^{l+1} = W^l a^l``; ``δ^{l+1}`` is the gradient w.r.t. that output. The *rear* is any module;
``δ_sc`` is the gradient w.r.t. the rear module's output (for a weight layer: its pre-activation output,
the document's ``δ^{sc}``). Both outputs must have the same shape (the document's "same neurons"
precondition) and the front must come before the rear (``i < sc``).

Two modes:

* ``"weight_only"`` (default; Algorithm 1 literally): only the front's weight and bias gradients change,
  ``∂J/∂W^l = (δ^{l+1} + w·δ_sc) a^{lᵀ}``, ``∂J/∂b^l = δ^{l+1} + w·δ_sc``. The sensitivity handed further
  down, ``∂J/∂a^l = W^{lᵀ} δ^{l+1}``, is the plain one, so no layer below the front sees ``δ_sc``.
* ``"propagate"``: ``δ̃^{l+1} = δ^{l+1} + w·δ_sc`` replaces ``δ^{l+1}`` everywhere: in the weight and bias
  gradients and in the sensitivity that flows on, ``∂J/∂a^l = W^{lᵀ} δ̃^{l+1}``. This is a backward-only
  edge with Jacobian ``w·I`` from the rear output to the front output: every layer below the front gets
  the extra sensitivity too.

``δ_sc`` is the gradient arriving at the rear module's output (including what "propagate" short circuits
further down the net have added to it, excluding what short circuits with this module as *front* add).

Mechanism (one forward hook per involved module; every handle is kept and removed by
:meth:`ShortCircuits.remove`):

* rear: the hook registers a tensor hook on the module's output that stores its incoming gradient
  ``δ_sc`` in a per-forward *slot*; the output tensor itself is returned unchanged.
* front: the hook returns its output ``Z`` passed through :class:`_FrontInject`, an autograd Function whose
  forward is a copy (bit-identical values) and whose backward adds the short-circuit terms: in
  ``"weight_only"`` mode it returns the extra weight/bias gradients ``w·δ_sc a^{lᵀ}`` (computed with
  ``torch.nn.grad.conv*d_weight`` or a matmul; the ordinary path supplies ``δ^{l+1} a^{lᵀ}`` and autograd
  sums the two) and passes ``δ^{l+1}`` on unchanged; in ``"propagate"`` mode it passes ``δ^{l+1} + w·δ_sc``
  on to ``Z`` (and so to the weight, the bias and the input).

The rear runs after the front in the forward pass, so its tensor hook fires before the front's backward:
the slot is full when the front needs it. A rear whose output does not reach the loss contributes zero.
Slots live with the autograd graph (several forwards before one backward are fine). The Function's
backward is first-order only (no double backward through a front layer).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from gradlens.models.mlp import sigmoid_fcn
from gradlens.models.registry import register_family
from gradlens.models.resnet_v1 import build_resnet_v1
from gradlens.models.transformer import encoder

MODES = ("weight_only", "propagate")
_CONV_WEIGHT_GRAD = {
    nn.Conv1d: torch.nn.grad.conv1d_weight,
    nn.Conv2d: torch.nn.grad.conv2d_weight,
    nn.Conv3d: torch.nn.grad.conv3d_weight,
}


@dataclass(frozen=True)
class ShortCircuit:
    """One short circuit: the rear module's output sensitivity is added to the front layer's (eq. 13).

    Args:
        front: dotted name of the front layer (``nn.Linear`` or ``nn.Conv{1,2,3}d``) whose gradient changes.
        rear: dotted name of the rear module whose output sensitivity ``δ_sc`` is short-circuited.
        weight: the SC weight ``w`` (document 000, section 5.4: default 0.2).
        mode: ``"weight_only"`` (Algorithm 1) or ``"propagate"``; see the module docstring.
    """

    front: str
    rear: str
    weight: float = 0.2
    mode: str = "weight_only"

    def __post_init__(self) -> None:
        if self.front == self.rear:
            raise ValueError(
                f"short circuit front and rear are the same module {self.front!r}; use two layers"
            )
        if self.mode not in MODES:
            raise ValueError(f"short circuit mode {self.mode!r} is unknown; use one of {MODES}")
        if not math.isfinite(self.weight):
            raise ValueError(f"short circuit weight must be finite, got {self.weight!r}")


class _Slot:
    """One forward pass of one short circuit: the front output shape, then the rear's ``δ_sc``."""

    __slots__ = ("circuit", "front_shape", "delta", "consumed")

    def __init__(self, circuit: ShortCircuit, front_shape: torch.Size) -> None:
        self.circuit = circuit
        self.front_shape = front_shape
        self.delta: torch.Tensor | None = None
        self.consumed = False


def _weight_grad(
    module: nn.Module, a: torch.Tensor, delta: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``W`` and ``b`` of a Linear/Conv layer with input ``a`` for output sensitivity ``delta``.

    Linear: ``a [..., I]``, ``delta [..., O]`` -> ``Σ delta aᵀ [O, I]`` and ``Σ delta [O]`` over all
    leading dimensions. Conv: ``a [B, C, *S]``, ``delta [B, O, *S']`` -> ``[O, C/groups, *K]`` and ``[O]``.
    """
    if isinstance(module, nn.Linear):
        d2 = delta.reshape(-1, delta.shape[-1])
        return d2.T @ a.reshape(-1, a.shape[-1]), d2.sum(0)
    grad_fn = _CONV_WEIGHT_GRAD[type(module)]
    grad_w = grad_fn(
        a, module.weight.shape, delta, module.stride, module.padding, module.dilation, module.groups
    )
    return grad_w, delta.sum(dim=[0, *range(2, delta.dim())])


class _FrontInject(torch.autograd.Function):
    """Identity on the front output ``Z`` whose backward adds the short-circuit terms (see module doc)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        z: torch.Tensor,
        a: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        module: nn.Module,
        slots: tuple[_Slot, ...],
    ) -> torch.Tensor:
        ctx.save_for_backward(a)
        ctx.module = module
        ctx.slots = slots
        ctx.has_bias = bias is not None
        return z.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (a,) = ctx.saved_tensors
        extra_weight: torch.Tensor | None = None
        extra_flow: torch.Tensor | None = None
        for slot in ctx.slots:
            slot.consumed = True
            if slot.delta is None:  # the rear output did not reach the loss: δ_sc = 0
                continue
            term = slot.circuit.weight * slot.delta
            slot.delta = None
            if slot.circuit.mode == "propagate":
                extra_flow = term if extra_flow is None else extra_flow + term
            else:
                extra_weight = term if extra_weight is None else extra_weight + term
        grad_z = grad if extra_flow is None else grad + extra_flow
        grad_w = grad_b = None
        if extra_weight is not None:
            grad_w, grad_b = _weight_grad(ctx.module, a, extra_weight)
            if not ctx.has_bias:
                grad_b = None
        return grad_z, None, grad_w, grad_b, None, None


def _check_front_type(name: str, module: nn.Module) -> None:
    # Exact types: a subclass (e.g. a re-parametrised weight) may compute something other than W a + b.
    if type(module) is nn.Linear:
        return
    if type(module) in _CONV_WEIGHT_GRAD:
        if isinstance(module.padding, str) or module.padding_mode != "zeros":
            raise ValueError(
                f"short circuit front {name!r} uses padding={module.padding!r}, "
                f"padding_mode={module.padding_mode!r}; only integer zero padding is supported"
            )
        return
    raise ValueError(
        f"short circuit front {name!r} is a {type(module).__name__}; the front must be exactly an nn.Linear "
        f"or nn.Conv1d/2d/3d computing W a + b (the layer whose weight gradient eq. 13 changes)"
    )


def _static_width(module: nn.Module) -> tuple[str, int] | None:
    if isinstance(module, nn.Linear):
        return "features", module.out_features
    if isinstance(module, nn.modules.conv._ConvNd):
        return "channels", module.out_channels
    return None


class ShortCircuits:
    """A set of short circuits installed on one model: listable, drawable, switchable off, removable.

    Example::

        scs = ShortCircuits([ShortCircuit("fc2", "fc4", weight=0.2)]).install(model)
        model.short_circuits is scs      # True while installed
        scs.enabled = False              # plain backprop again (hooks stay, do nothing)
        scs.remove()                     # hooks gone, model exactly as before

    Args:
        circuits: the short circuits; pairs (front, rear) must be unique.
    """

    def __init__(self, circuits: Iterable[ShortCircuit]) -> None:
        self._circuits = tuple(circuits)
        seen: set[tuple[str, str]] = set()
        for sc in self._circuits:
            if (sc.front, sc.rear) in seen:
                raise ValueError(f"short circuit {sc.front!r} <- {sc.rear!r} is listed twice; list it once")
            seen.add((sc.front, sc.rear))
        self.enabled = True
        self._model: nn.Module | None = None
        self._handles: list[RemovableHandle] = []
        self._pending: dict[ShortCircuit, _Slot] = {}

    def list(self) -> list[ShortCircuit]:
        """The short circuits, in the order given."""
        return list(self._circuits)

    def __iter__(self) -> Iterator[ShortCircuit]:
        return iter(self._circuits)

    def __len__(self) -> int:
        return len(self._circuits)

    def __repr__(self) -> str:
        body = ", ".join(f"{sc.front}<-{sc.rear} (w={sc.weight}, {sc.mode})" for sc in self._circuits)
        return f"ShortCircuits([{body}], enabled={self.enabled}, installed={self.installed})"

    @property
    def installed(self) -> bool:
        """Whether the set is installed on a model."""
        return self._model is not None

    def fronts(self) -> list[str]:
        """Front layer names, unique, in the order of first appearance."""
        return list(dict.fromkeys(sc.front for sc in self._circuits))

    def rears(self) -> list[str]:
        """Rear module names, unique, in the order of first appearance."""
        return list(dict.fromkeys(sc.rear for sc in self._circuits))

    def install(self, model: nn.Module) -> ShortCircuits:
        """Check the preconditions, hook the front and rear modules, set ``model.short_circuits = self``.

        Checked here: both names exist, the front is a Linear/Conv layer, the front is registered before
        the rear (the zoo's forward order), and Linear/Conv widths agree. The full output shapes are
        compared at every forward (they depend on the input) with a ``ValueError`` naming both.

        Raises:
            ValueError: a precondition fails, the set is already installed, or ``model`` already carries
                short circuits.
        """
        if self._model is not None:
            raise ValueError("this ShortCircuits set is already installed; call remove() first")
        if getattr(model, "short_circuits", None) is not None:
            raise ValueError("the model already has short circuits; call model.short_circuits.remove() first")
        order = {name: i for i, (name, _) in enumerate(model.named_modules())}
        modules = dict(model.named_modules())
        for sc in self._circuits:
            for role, name in (("front", sc.front), ("rear", sc.rear)):
                if name not in order:
                    raise ValueError(
                        f"short circuit {role} {name!r} is not a module of {type(model).__name__}; "
                        f"use a name from model.named_modules()"
                    )
            _check_front_type(sc.front, modules[sc.front])
            if order[sc.front] >= order[sc.rear]:
                raise ValueError(
                    f"short circuit front {sc.front!r} does not come before rear {sc.rear!r}; "
                    f"the front index must be smaller than the rear index (swap them)"
                )
            front_w, rear_w = _static_width(modules[sc.front]), _static_width(modules[sc.rear])
            if front_w is not None and rear_w is not None and front_w != rear_w:
                raise ValueError(
                    f"short circuit {sc.front!r} <- {sc.rear!r} joins layers of different shapes: front "
                    f"output has {front_w[1]} {front_w[0]}, rear output {rear_w[1]} {rear_w[0]}; "
                    f"pick layers with the same output shape"
                )
        by_module: dict[str, tuple[list[ShortCircuit], list[ShortCircuit]]] = {}
        for sc in self._circuits:
            by_module.setdefault(sc.front, ([], []))[0].append(sc)
            by_module.setdefault(sc.rear, ([], []))[1].append(sc)
        for name, (as_front, as_rear) in by_module.items():
            hook = self._make_hook(tuple(as_front), tuple(as_rear))
            self._handles.append(modules[name].register_forward_hook(hook))
        self._model = model
        model.short_circuits = self
        return self

    def remove(self) -> None:
        """Remove every hook and ``model.short_circuits``; the model is exactly the plain backbone again.

        Calling it on a set that is not installed does nothing.
        """
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._pending.clear()
        if self._model is not None and getattr(self._model, "short_circuits", None) is self:
            del self._model.short_circuits
        self._model = None

    def _make_hook(self, as_front: tuple[ShortCircuit, ...], as_rear: tuple[ShortCircuit, ...]) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
            if not self.enabled or not torch.is_grad_enabled() or not output.requires_grad:
                return None
            result = output
            if as_front:
                slots = tuple(_Slot(sc, output.shape) for sc in as_front)
                for slot in slots:
                    self._pending[slot.circuit] = slot
                bias = getattr(module, "bias", None)
                result = _FrontInject.apply(output, args[0], module.weight, bias, module, slots)
            if as_rear:
                self._attach_rear(as_rear, result)
            return result if as_front else None

        return hook

    def _attach_rear(self, circuits: tuple[ShortCircuit, ...], output: torch.Tensor) -> None:
        slots = []
        for sc in circuits:
            slot = self._pending.pop(sc, None)
            if slot is None:  # the front did not run in grad mode during this forward
                continue
            if slot.front_shape != output.shape:
                raise ValueError(
                    f"short circuit {sc.front!r} <- {sc.rear!r} joins outputs of different shapes: front "
                    f"{sc.front!r} {tuple(slot.front_shape)}, rear {sc.rear!r} {tuple(output.shape)}; "
                    f"pick layers with the same output shape"
                )
            slots.append(slot)
        if not slots:
            return

        def store(grad: torch.Tensor) -> None:
            for slot in slots:
                if slot.consumed:
                    raise RuntimeError(
                        f"the sensitivity of rear {slot.circuit.rear!r} arrived after the backward of front "
                        f"{slot.circuit.front!r}; the rear must lie downstream of the front in the graph"
                    )
                slot.delta = grad

        output.register_hook(store)


def select_fronts(candidates: Sequence[str], rear: str, k: int) -> list[str]:
    """Front layers of the rear layer by Algorithm 1's rule ``mod(l, k) == 0 and l < sc``.

    ``l`` and ``sc`` are 1-based positions in ``candidates`` (the layers of the stretch the short
    circuits may span, in forward order); ``sc`` is the position of ``rear``.

    Example: ``select_fronts(["c1", ..., "c6"], "c6", 2) == ["c2", "c4"]``.

    Raises:
        ValueError: ``k < 1`` or ``rear`` not among the candidates.
    """
    if k < 1:
        raise ValueError(f"skip gap k must be >= 1, got {k}")
    if rear not in candidates:
        raise ValueError(f"rear layer {rear!r} is not among the candidate layers {list(candidates)}")
    sc = list(candidates).index(rear) + 1
    return [name for l, name in enumerate(candidates, start=1) if l % k == 0 and l < sc]


def gap_short_circuits(
    candidates: Sequence[str],
    rears: Sequence[str],
    k: int,
    *,
    weight: float = 0.2,
    mode: str = "weight_only",
) -> ShortCircuits:
    """Short circuits from each rear to the fronts :func:`select_fronts` picks (several rears: multiple SC).

    Raises:
        ValueError: the rule selects no front at all (say which rears and ``k``).
    """
    circuits = [
        ShortCircuit(front, rear, weight, mode)
        for rear in rears
        for front in select_fronts(candidates, rear, k)
    ]
    if not circuits:
        raise ValueError(
            f"the rule mod(l, {k}) == 0 and l < sc selects no front layer for rears {list(rears)} among "
            f"{len(candidates)} candidates; use a smaller gap k or a later rear"
        )
    return ShortCircuits(circuits)


# --------------------------------------------------------------------------------------------------------
# Registered SC models. Each is its backbone (same modules, same gradlens_spec()) with a ShortCircuits set
# installed and exposed as ``model.short_circuits``. SC options are keyword arguments prefixed ``sc_``;
# the others go to the backbone builder.


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
