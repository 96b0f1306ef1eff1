"""The interlayer cushion μ_{i,j}(x^i) = √n_i · ‖J x^i‖ / (‖J‖_F · ‖x^i‖) of a segment, per sample
(document 004, section 5; Arora et al., 2018): J x^i by forward mode (or from the rows of J in reverse mode),
‖J‖_F exact or by Hutchinson (:mod:`gradlens.metrics.cushion.jacobian`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from gradlens.metrics.cushion.jacobian import _exact_forward, _exact_reverse, _hutchinson
from gradlens.metrics.cushion.layer import _finite_or_nan
from gradlens.metrics.cushion.segment import (
    AUTODIFF,
    BN_STATISTICS,
    _check_segment,
    _forward_ad_missing,
    _segment_map,
    _segment_output,
    statistics_of_input,
)

#: Default of ``interlayer_cushion(method="auto")``: the exact route is used when the smaller side of the
#: per-sample Jacobian has at most this many elements (that many JVPs/VJPs, at most 4× the cost of the default
#: 64-probe Hutchinson estimate), else Hutchinson.
AUTO_EXACT_MAX = 256


class InterlayerCushion(NamedTuple):
    """Result of :func:`interlayer_cushion`; every field is ``[B]`` except ``method`` and ``autodiff``.

    Attributes:
        mu: μ_{i,j}(x^i) per sample.
        jx_norm: ‖J x^i‖.
        jac_fro: ‖J‖_F (exact, or the square root of the Hutchinson estimate of ‖J‖_F²).
        jac_fro_sq_se: standard error of the ‖J‖_F² estimate (0 for the exact route).
        method: ``"exact"`` or ``"hutchinson"``, the route actually taken.
        autodiff: ``"forward"`` or ``"reverse"``, the differentiation route actually taken.
    """

    mu: Tensor
    jx_norm: Tensor
    jac_fro: Tensor
    jac_fro_sq_se: Tensor
    method: str
    autodiff: str = "forward"


def check_interlayer_options(method: str, bn_statistics: str, autodiff: str) -> None:
    """ValueError naming the bad value and the choices, for the options of :func:`interlayer_cushion`."""
    if method not in ("exact", "hutchinson", "auto"):
        raise ValueError(f"method must be 'exact', 'hutchinson' or 'auto', got {method!r}")
    if bn_statistics not in BN_STATISTICS:
        raise ValueError(f"bn_statistics must be one of {BN_STATISTICS}, got {bn_statistics!r}")
    if autodiff not in AUTODIFF:
        raise ValueError(f"autodiff must be one of {AUTODIFF}, got {autodiff!r}")


def interlayer_cushion(
    f: Callable[[Tensor], Tensor],
    x: Tensor,
    method: str = "auto",
    *,
    chunk_size: int = 32,
    num_probes: int = 64,
    seed: int = 0,
    exact_max: int = AUTO_EXACT_MAX,
    bn_statistics: str = "running",
    autodiff: str = "auto",
) -> InterlayerCushion:
    """Per-sample interlayer cushion of a segment (document 004, section 5; Arora et al., 2018)::

        μ_{i,j}(x^i) = √n_i · ‖J x^i‖ / (‖J‖_F · ‖x^i‖)

    J = J^{i,j}_{x^i} is the Jacobian of the segment f (layer i to layer j) at one sample x^i, and n_i the
    size of the input x^i to layer i: the number of elements of one sample (C·H·W). J x^i is one forward-mode
    JVP with tangent x^i. ‖J‖_F is exact (:func:`jacobian_frobenius_sq`) or a Hutchinson estimate
    (:func:`jacobian_frobenius_sq_hutchinson`).

    **BatchNorm** (``bn_statistics``): which statistics a BatchNorm inside the segment normalises by.

    - ``"running"`` (default): the running statistics (eval mode). f acts on each sample separately; every
      BN is an affine map. BN in train mode is rejected.
    - ``"sample"``: the statistics of each sample alone (as training-mode BN on a batch of that one sample:
      per channel over the spatial positions). f still acts on each sample separately, and J is that
      sample's Jacobian. A block whose convolutions have no bias is then scale-invariant up to BN's ε:
      f(t x) = f(x), so J x = d/dt f(t x)|_{t=1} is ε-sized.
    - ``"batch"``: the statistics of the batch ``x`` itself (training-mode BN on the probe batch, running
      buffers neither read nor updated). The segment then maps the batch X = (x_1 .. x_B), not each sample:
      sample b's output depends on every sample. We read the document's definition on that batch map:
      ``J x^i`` is sample b's part of the JVP of the batch map along the batch itself, ``(J X)_b =
      d/dt f_b(t X)|_{t=1}`` (the batch seen by the block, scaled), and ``‖J‖_F`` is the Frobenius norm of
      sample b's row block ``∂f_b/∂X`` (columns of all samples; its off-diagonal blocks only carry the
      batch statistics, O(1/B) each); n_i and ‖x^i‖ stay those of sample b. Scaling the whole batch leaves
      a bias-free conv-BN block unchanged up to ε, so a plain conv-BN-ReLU-conv-BN-ReLU block has
      μ ∝ ε, while a residual block keeps J X ≈ D x (D the final ReLU's mask) and μ of order 0.1-1.

    In the readings from the input (``"batch"``, ``"sample"``) BN in train mode is allowed; dropout must be
    in eval mode in every reading. The BN modules' running buffers are hidden while measuring and put back.

    **Differentiation** (``autodiff``): ``"forward"`` takes J x as one forward-mode JVP (and ‖J‖_F over the
    smaller side); ``"reverse"`` uses reverse mode only: J x and the exact ‖J‖_F² both come from the rows
    of J, one VJP per output element (m per sample, B·m for ``"batch"``), so the result is exact whatever
    ``method`` asks; ``"auto"`` (default) tries forward mode and takes the reverse route when an operation
    has no forward-mode derivative (CPU flash attention ``_scaled_dot_product_flash_attention_for_cpu`` of
    SDPA attention, custom autograd functions without ``jvp``).

    Args:
        f: segment, e.g. a residual block module, ``[B, *in] -> [B, *out]`` (a tuple output: its first element).
        x: segment input x^i ``[B, *in]``.
        method: ``"exact"``, ``"hutchinson"`` or ``"auto"`` (default): exact when the number of products
            ``min(n_i, m)`` (times B for ``"batch"``) is at most ``exact_max``, else Hutchinson with
            ``num_probes`` probes (m = elements of one output sample).
        chunk_size: JVPs/VJPs per batched call (bounds memory).
        num_probes: Hutchinson probes k.
        seed: seed of the Hutchinson generator.
        exact_max: threshold of ``"auto"``.
        bn_statistics: ``"running"``, ``"sample"`` or ``"batch"`` (see above).
        autodiff: ``"auto"``, ``"forward"`` or ``"reverse"`` (see above).

    Returns:
        :class:`InterlayerCushion` with ``mu`` ``[B]`` (NaN where not finite) and its parts.
    """
    check_interlayer_options(method, bn_statistics, autodiff)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if x.dim() < 2:
        raise ValueError(f"x of shape {tuple(x.shape)} has no batch dim; pass [B, *sample_shape]")
    _check_segment(f, bn_statistics)
    coupled = bn_statistics == "batch"
    g = _segment_map(f, bn_statistics)
    x = x.detach()
    with statistics_of_input(f, bn_statistics):
        route = autodiff
        if route != "reverse":
            try:
                with torch.no_grad():
                    y, jx = _segment_output(g, x)
                route = "forward"
            except (NotImplementedError, RuntimeError) as error:
                if route == "forward" or not _forward_ad_missing(error):
                    raise
                route = "reverse"
        if route == "reverse":
            y, jx, fro_sq = _exact_reverse(g, x, coupled, chunk_size)
            method, se = "exact", torch.zeros_like(fro_sq)
        else:
            n, m = x[0].numel(), y[0].numel()
            if method == "auto":
                products = min(n, m) * (x.shape[0] if coupled else 1)
                method = "exact" if products <= exact_max else "hutchinson"
            if method == "exact":
                fro_sq = _exact_forward(g, x, y, coupled, chunk_size)
                se = torch.zeros_like(fro_sq)
            else:
                fro_sq, se = _hutchinson(g, x, coupled, num_probes, seed, chunk_size)
    jx_norm = jx.flatten(1).norm(dim=1)
    jac_fro = fro_sq.sqrt()
    n = x[0].numel()
    mu = math.sqrt(n) * jx_norm / (jac_fro * x.flatten(1).norm(dim=1))
    return InterlayerCushion(_finite_or_nan(mu), jx_norm, jac_fro, se, method, route)
