"""Dominant gradient flow σ^(ℓ) and the final-activation gradient histogram (document 004, appendix D).

Index letters: ``B`` samples, ``D_L`` channels of the final activation a^(L) (index j), ``C_ℓ`` channels of an
intermediate activation a^(ℓ) (index i), ``P`` positions of one channel's feature map (index p; P = 1 for
MLP activations ``[B, C_ℓ]``; P = T token positions for a sequence model's ``[B, T, H]``).

The channel (feature) axis of every activation is explicit (``feature_dims``, ``final_feature_dim``): dim 1
for convolutional feature maps ``[B, C, *spatial]``, the last dim for Linear-produced and sequence
activations ``[B, T, H]`` (the probe resolves it from the model spec, :func:`gradlens.spec.feature_dim`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

#: Default cotangent chunk of :func:`dominant_flow`: as many cotangents per batched VJP as keep
#: ``chunk × (elements of all activations of the batch)`` at or below this many elements (at least 1).
CHUNK_ELEMENTS = 2**25


class DominantFlow(NamedTuple):
    """Result of :func:`dominant_flow`.

    Attributes:
        sigma: σ^(ℓ) per layer averaged over the samples of the batch, ``[n_layers]``.
        sigma_per_sample: σ^(ℓ) per sample, ``[B, n_layers]``.
        r: per layer, the per-channel ratios r_i^(ℓ) per sample, each ``[B, C_ℓ]``.
    """

    sigma: Tensor
    sigma_per_sample: Tensor
    r: list[Tensor]


def _final_gradient(final: Tensor, grad_final: Tensor | None, loss: Tensor | None) -> Tensor:
    if (grad_final is None) == (loss is None):
        raise ValueError("pass exactly one of grad_final (∂L/∂a^(L), shaped like final) and loss (a scalar)")
    if grad_final is not None:
        if grad_final.shape != final.shape:
            raise ValueError(
                f"grad_final has shape {tuple(grad_final.shape)} but final activation a^(L) has shape "
                f"{tuple(final.shape)}; pass ∂L/∂a^(L) of the same shape"
            )
        return grad_final.detach()
    if loss.numel() != 1:
        raise ValueError(f"loss has shape {tuple(loss.shape)}; pass a scalar loss (e.g. the batch mean)")
    (grad,) = torch.autograd.grad(loss, final, retain_graph=True, allow_unused=True)
    if grad is None:
        raise ValueError(
            f"the loss does not depend on the final activation a^(L) of shape {tuple(final.shape)}; pass the "
            f"a^(L) tensor of the same forward pass that produced the loss"
        )
    return grad


def _axis(dim: int, tensor: Tensor, what: str) -> int:
    """``dim`` as a non-negative index of a non-batch axis of ``tensor``."""
    if not -tensor.dim() <= dim < tensor.dim() or dim % tensor.dim() == 0:
        raise ValueError(
            f"feature axis {dim} of {what} of shape {tuple(tensor.shape)} is not a non-batch dim; pass 1 "
            f"(channels first, conv maps) or -1 (features last, [B, T, H])"
        )
    return dim % tensor.dim()


def _check_shapes(final: Tensor, activations: Sequence[Tensor], dims: Sequence[int], final_dim: int) -> None:
    if final.dim() < 2 or not final.requires_grad:
        raise ValueError(
            f"final activation a^(L) of shape {tuple(final.shape)} must be [B, D_L, ...] and part of an "
            f"autograd graph (requires_grad=True); run the forward pass with gradients enabled"
        )
    batch, channels = final.shape[0], final.shape[final_dim]
    for index, (act, dim) in enumerate(zip(activations, dims, strict=True)):
        if not act.requires_grad:
            raise ValueError(
                f"activation {index} of shape {tuple(act.shape)} is not in an autograd graph; pass the "
                f"activations of the forward pass of a^(L), run with gradients enabled"
            )
        if act.dim() < 2 or act.shape[0] != batch:
            raise ValueError(
                f"activation {index} has shape {tuple(act.shape)}; expected [B={batch}, C, ...] like a^(L) "
                f"{tuple(final.shape)}"
            )
        if act.shape[dim] > channels:
            raise ValueError(
                f"activation {index} has {act.shape[dim]} channels but a^(L) has only D_L={channels}: channel "
                f"i of a^(ℓ) pairs with channel i of a^(L), so C_ℓ <= D_L is required; drop this activation"
            )


def ratio_terms(diagonal: Tensor, off_diagonal: Tensor) -> Tensor:
    """Terms |Θ_iip| / |Σ_{j≠i} Θ_ijp| of eq. 5 with the conventions of :func:`dominant_flow`.

    ``0/0 := 0`` (no gradient reaches the position, so no dominant flow), ``x/0 := inf`` for x > 0, NaN stays
    NaN. Both arguments share one shape; the result has it too.
    """
    numerator, denominator = diagonal.abs(), off_diagonal.abs()
    terms = numerator / denominator
    return torch.where((numerator == 0) & (denominator == 0), torch.zeros_like(terms), terms)


def sigma_from_ratios(r: Tensor) -> Tensor:
    """Eq. 13: σ = (1/|r|) Σ_i 1[r_i > 1] over the last dim of ``r`` ``[..., C]``; NaN if any r_i is NaN."""
    sigma = (r > 1).to(r.dtype).mean(dim=-1)
    return torch.where(torch.isnan(r).any(dim=-1), torch.full_like(sigma, float("nan")), sigma)


def dominant_flow(
    final: Tensor,
    activations: Sequence[Tensor],
    grad_final: Tensor | None = None,
    *,
    loss: Tensor | None = None,
    chunk_size: int | None = None,
    feature_dims: Sequence[int] | None = None,
    final_feature_dim: int = 1,
) -> DominantFlow:
    """Fraction σ^(ℓ) of channels with a dominant gradient flow, for all layers from one batched VJP.

    Document 004, appendix D.2/D.4.2, eqs. 5, 6 and 13, per sample::

        Θ_ijp^(ℓ) = ∂a_j^(L)/∂a_ip^(ℓ) · ∂L/∂a_j^(L)
        r_i^(ℓ)   = (1/P) Σ_p |Θ_iip^(ℓ)| / |Σ_{j≠i} Θ_ijp^(ℓ)|        (i = 1..C_ℓ, j = 1..D_L)
        σ^(ℓ)     = (1/C_ℓ) Σ_i 1[r_i^(ℓ) > 1]

    then σ^(ℓ) is averaged over the samples of the batch. In the document each final sub-activation a_j^(L)
    is a scalar: the output of the global average pool after the last ReLU. ``final`` may be that pooled
    a^(L) ``[B, D_L]`` or the feature map before the pool ``[B, D_L, H, W]``: the cotangent of channel j is
    ``e_j ⊙ ∂L/∂a^(L)`` over all of its positions q, and Σ_q ∂a_jq/∂a_ip · ∂L/∂a_jq equals Θ_ijp of the
    pooled a_j^(L) whenever the loss sees a^(L) only through the pool, so both give the same σ.

    **Sequence models** (``[B, T, H]`` activations, ``feature_dims = -1``): the channel i is hidden unit i
    and its sub-activation a_i^(ℓ) collects that unit at every token position p of the sample (P = T), as
    a convolutional channel collects its map's positions; r_i^(ℓ) is the mean over the T positions, σ^(ℓ)
    the fraction of the H hidden units with r_i > 1. A final activation ``[B, T, H]`` pairs unit j with
    the cotangent ``e_j ⊙ ∂L/∂a^(L)`` over all T positions, exactly as the pre-pool map above. Positions that
    receive no gradient at all (padding tokens masked out of attention when the loss reads only [CLS]) give
    0/0 := 0 terms and lower r_i, as dead ReLU positions do; leave padding out of the probe batch.

    Channel i of a^(ℓ) is compared with channel i of a^(L) (the sub-activation path P_i of appendix D.2).
    A layer with fewer channels than a^(L) (16 or 32 against 64 in the document's groups G_0, G_1) has
    r^(ℓ) of size C_ℓ (the document's "vector r^(ℓ) of size C^l"): its paths are channels i < C_ℓ, while the
    denominator still sums over every other final channel j ≠ i, j < D_L. C_ℓ > D_L is rejected.

    Conventions for one term of the mean over p: ``0/0 := 0`` (no gradient reaches a_ip, as for a dead ReLU:
    that position shows no dominant flow; this is why σ → 0 as p → 0 in the document's Figure 11e), and
    ``x/0 := inf`` for x > 0 (all the gradient flows along the path; then r_i = inf > 1). Non-finite inputs
    give NaN ratios, and σ of a sample is NaN if any of its r_i is NaN.

    Implementation: ``torch.autograd.grad(..., is_grads_batched=True)`` with the D_L cotangents
    ``e_j ⊙ ∂L/∂a^(L)`` returns Θ for every layer at once; the diagonal j = i is taken out and the rest summed
    over j (no subtraction, so no cancellation). ``chunk_size`` cotangents go per call; the default keeps
    ``chunk_size × Σ_ℓ numel(a^(ℓ))`` at or below :data:`CHUNK_ELEMENTS` (very large batched tensors make the
    VJP memory-bound on CPU: on a depth-20 net, batch 32, 32×32, all 64 cotangents at once ran 2.6× slower
    than 64 ordinary backward passes, chunks of 5-8 about 1.1-1.2×).

    Args:
        final: a^(L) ``[B, D_L]`` or ``[B, D_L, *spatial]``, in the autograd graph of the activations.
        activations: a^(ℓ) per layer, each ``[B, C_ℓ, *spatial]`` or ``[B, C_ℓ]``, with C_ℓ <= D_L.
        grad_final: ∂L/∂a^(L), shaped like ``final``. Give this or ``loss``.
        loss: scalar loss of the same forward pass; ∂L/∂a^(L) is then taken from it (graph kept).
        chunk_size: cotangents per batched VJP (memory ≈ chunk_size × the activations); default: see above.
        feature_dims: channel axis of each activation (default: 1 for all, channels first).
        final_feature_dim: channel axis of a^(L) (default 1).

    Returns:
        :class:`DominantFlow` with ``sigma`` ``[n_layers]``, ``sigma_per_sample`` ``[B, n_layers]`` and
        ``r`` (a list of ``[B, C_ℓ]``).
    """
    if feature_dims is None:
        feature_dims = [1] * len(activations)
    if len(feature_dims) != len(activations):
        raise ValueError(
            f"feature_dims has {len(feature_dims)} entries for {len(activations)} activations; give one per activation"
        )
    final_dim = _axis(final_feature_dim, final, "a^(L)")
    dims = [_axis(d, act, f"activation {k}") for k, (act, d) in enumerate(zip(activations, feature_dims, strict=True))]
    _check_shapes(final, activations, dims, final_dim)
    grad = _final_gradient(final, grad_final, loss)
    grad_first = grad.movedim(final_dim, 1)  # [B, D_L, ...]: channel j of a^(L) at dim 1
    batch, channels = final.shape[0], final.shape[final_dim]
    per_cotangent = sum(act.numel() for act in activations)
    chunk = max(1, min(channels, CHUNK_ELEMENTS // max(1, per_cotangent))) if chunk_size is None else chunk_size
    if chunk < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    shapes = [(act.shape[d], act[0].numel() // act.shape[d]) for act, d in zip(activations, dims, strict=True)]
    diagonal = [grad.new_zeros(batch, c, p) for c, p in shapes]
    off_diagonal = [grad.new_zeros(batch, c, p) for c, p in shapes]
    for start in range(0, channels, chunk):
        stop = min(channels, start + chunk)
        js = torch.arange(start, stop, device=grad.device)
        cotangents = grad_first.new_zeros(stop - start, *grad_first.shape)
        cotangents[torch.arange(stop - start), :, js] = grad_first[:, js].transpose(0, 1)
        cotangents = cotangents.movedim(2, final_dim + 1)  # back to the layout of a^(L)
        thetas = torch.autograd.grad(
            final, list(activations), cotangents, retain_graph=True, is_grads_batched=True, allow_unused=True
        )
        for index, ((c, p), dim, theta) in enumerate(zip(shapes, dims, thetas, strict=True)):
            if theta is None:
                raise ValueError(
                    f"a^(L) of shape {tuple(final.shape)} does not depend on activation {index} of shape "
                    f"{tuple(activations[index].shape)}; pass activations of the forward pass of a^(L)"
                )
            theta = theta.detach().movedim(dim + 1, 2).reshape(stop - start, batch, c, p)  # [j, b, i, p]
            own = js[js < c]  # final channels j in this chunk that have a path i = j in this layer
            if own.numel():
                diagonal[index][:, own] = theta[own - start, :, own].transpose(0, 1)
                theta[own - start, :, own] = 0
            off_diagonal[index] += theta.sum(dim=0)
    r = [ratio_terms(d, o).mean(dim=-1) for d, o in zip(diagonal, off_diagonal, strict=True)]
    per_sample = torch.stack([sigma_from_ratios(ri) for ri in r], dim=1)
    return DominantFlow(per_sample.mean(dim=0), per_sample, r)


class GradientHistogram(NamedTuple):
    """Result of :func:`final_grad_histogram`.

    Attributes:
        counts: values per bin ``[n_bins]`` (bins ``[e_k, e_{k+1})``, the last one closed, as
            ``numpy.histogram``).
        below: finite values below the first edge.
        above: finite values above the last edge.
        nonfinite: NaN/inf values (left out of every statistic).
        count: finite values.
        mean: mean of the finite values.
        std: standard deviation of the finite values (ddof 0).
    """

    counts: Tensor
    below: Tensor
    above: Tensor
    nonfinite: Tensor
    count: Tensor
    mean: Tensor
    std: Tensor


def final_grad_histogram(grad_final: Tensor, edges: Tensor) -> GradientHistogram:
    """Histogram, mean and sd of the entries of ∂L/∂a^(L) (document 004, appendix D.4.1, Figure 10).

    Fixed bin edges make histograms of different steps addable; ``count``, ``mean`` and ``std`` let a reader
    pool moments over steps exactly.

    Args:
        grad_final: ∂L/∂a^(L), any shape (all entries are pooled).
        edges: increasing bin edges ``[n_bins + 1]``.

    Returns:
        :class:`GradientHistogram`.
    """
    if edges.dim() != 1 or edges.numel() < 2 or not bool((edges[1:] > edges[:-1]).all()):
        raise ValueError(
            f"edges of shape {tuple(edges.shape)} must be a 1-d strictly increasing tensor of >= 2 edges"
        )
    values = grad_final.detach().flatten()
    finite = values[torch.isfinite(values)]
    edges = edges.to(finite)
    n_bins = edges.numel() - 1
    inside = (finite >= edges[0]) & (finite <= edges[-1])
    index = torch.bucketize(finite[inside], edges, right=True) - 1
    counts = torch.bincount(index.clamp(max=n_bins - 1), minlength=n_bins)
    count = torch.tensor(finite.numel(), device=values.device)
    return GradientHistogram(
        counts=counts,
        below=(finite < edges[0]).sum(),
        above=(finite > edges[-1]).sum(),
        nonfinite=torch.tensor(values.numel() - finite.numel(), device=values.device),
        count=count,
        mean=finite.mean(),
        std=finite.std(correction=0),
    )
