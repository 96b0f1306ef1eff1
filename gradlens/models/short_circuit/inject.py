"""The backward of a short circuit's front layer: an identity on its output whose backward adds the
short-circuit terms (document 000, eq. 13), and the weight and bias gradients of a Linear/Conv layer.

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

from typing import Any

import torch
from torch import nn

from gradlens.models.short_circuit.circuit import ShortCircuit

_CONV_WEIGHT_GRAD = {
    nn.Conv1d: torch.nn.grad.conv1d_weight,
    nn.Conv2d: torch.nn.grad.conv2d_weight,
    nn.Conv3d: torch.nn.grad.conv3d_weight,
}


class _Slot:
    """One forward pass of one short circuit: the front output shape, then the rear's ``δ_sc``."""

    __slots__ = ("circuit", "front_shape", "delta", "consumed")

    def __init__(self, circuit: ShortCircuit, front_shape: torch.Size) -> None:
        self.circuit = circuit
        self.front_shape = front_shape
        self.delta: torch.Tensor | None = None
        self.consumed = False


def _weight_grad(module: nn.Module, a: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``W`` and ``b`` of a Linear/Conv layer with input ``a`` for output sensitivity ``delta``.

    Linear: ``a [..., I]``, ``delta [..., O]`` -> ``Σ delta aᵀ [O, I]`` and ``Σ delta [O]`` over all
    leading dimensions. Conv: ``a [B, C, *S]``, ``delta [B, O, *S']`` -> ``[O, C/groups, *K]`` and ``[O]``.
    """
    if isinstance(module, nn.Linear):
        d2 = delta.reshape(-1, delta.shape[-1])
        return d2.T @ a.reshape(-1, a.shape[-1]), d2.sum(0)
    grad_fn = _CONV_WEIGHT_GRAD[type(module)]
    grad_w = grad_fn(a, module.weight.shape, delta, module.stride, module.padding, module.dilation, module.groups)
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
