"""The exponent histogram of a gradient: which power-of-two bucket each entry falls in, read off its float bits.

For an entry g with g finite and non-zero, let e = floor(log2 |g|) (the exponent of g as stored: a float32,
float64 or bfloat16 value's exponent field minus its bias; float16 is widened to float32 first, which is exact).
Its *magnitude bucket* is

    m = 0                 for |g| < 2^-64              (``(0, 2^-64)``; float32/bfloat16 subnormals land here)
    m = e + 65            for 2^-64 <= |g| < 2^16      (``[2^e, 2^(e+1))``, m = 1 .. 80)
    m = 81                for |g| >= 2^16              (``[2^16, inf)``)

and its *slot* in a row of ``SLOTS`` = 166 counts is ``82 · s + m`` with s = 0 for negative and 1 for positive g,
``ZERO`` = 164 for ±0 and ``NONFINITE`` = 165 for NaN and ±Inf. Every entry is counted once, so a row's counts
sum to the gradient's number of entries.

Why 2^-64 .. 2^16. Above: float16 (mixed precision) cannot hold 2^16 at all (its largest value is 65 504), and a
gradient entry beyond 65 536 is an explosion whatever its exact size. Below: an SGD step lr·g with lr <= 1 and
|g| < 2^-64 cannot change a float32 weight of magnitude >= 2^-40 (half its spacing is >= 2^-64), so below 2^-64 a
gradient has vanished for every practical weight; yet the range still spans the 20 decades between a healthy
layer (~1e-3) and the vanishing layers of a 100-layer plain net. 80 buckets per sign keep a record at 664 bytes
per parameter before compression (see :mod:`gradlens.probes.grad_stats` for the cost on disk).

Recorded as ``exp_hist`` ``[layer, sign, exponent]`` (``sign`` labels ``negative``, ``positive``; ``exponent``
labels the |g| interval of each bucket, ``(0, 2^-64)``, ``[2^-64, 2^-63)``, ..., ``[2^16, inf)``), ``exp_zero``
and ``exp_nonfinite`` ``[layer]``. The C kernel (:mod:`gradlens.probes.grad_kernel`) and the torch route
(:func:`codes`, on any device) compute the same slots.
"""

from __future__ import annotations

import torch

LOWEST = -64  # the smallest power-of-two edge: |g| < 2^LOWEST is the bucket (0, 2^-64)
HIGHEST = 16  # the largest: |g| >= 2^HIGHEST is the bucket [2^16, inf)
MAGNITUDES = HIGHEST - LOWEST + 2  # 82 magnitude buckets per sign
SIGNS = ("negative", "positive")
ZERO = 2 * MAGNITUDES  # 164: ±0
NONFINITE = ZERO + 1  # 165: NaN, +Inf, -Inf
SLOTS = NONFINITE + 1  # 166 counts per row

# float64 bit fields: sign 1, exponent 11 (bias 1023), mantissa 52
_EXPONENT_MASK = 0x7FF
_MAGNITUDE_MASK = (1 << 63) - 1


def exponent_labels() -> list[str]:
    """The |g| interval of each magnitude bucket: ``(0, 2^-64)``, ``[2^-64, 2^-63)``, ..., ``[2^16, inf)``."""
    middle = [f"[2^{e}, 2^{e + 1})" for e in range(LOWEST, HIGHEST)]
    return [f"(0, 2^{LOWEST})", *middle, f"[2^{HIGHEST}, inf)"]


def codes(values: torch.Tensor) -> torch.Tensor:
    """The slot (0 .. ``SLOTS`` - 1, int64) of every entry of a float64 tensor, from its bits; any device.

    Callers widen float32, bfloat16 and float16 to float64 first: exact, so the exponent is the one stored.
    """
    if values.dtype != torch.float64:
        raise TypeError(f"grad_exponents.codes takes float64 values (widen first, exactly), got {values.dtype}")
    bits = values.view(torch.int64)
    field = (bits >> 52) & _EXPONENT_MASK  # the biased exponent; 0 for zeros and subnormals
    magnitude = (field - (1023 + LOWEST - 1)).clamp_(0, MAGNITUDES - 1)
    slot = torch.where(bits < 0, magnitude, magnitude + MAGNITUDES)
    slot = torch.where((bits & _MAGNITUDE_MASK) == 0, ZERO, slot)
    return torch.where(field == _EXPONENT_MASK, NONFINITE, slot)


def split(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """The recorded quantities from slot counts ``[R, SLOTS]``: ``exp_hist`` ``[R, 2, MAGNITUDES]`` (a view),
    ``exp_zero`` and ``exp_nonfinite`` ``[R]``."""
    rows = counts.shape[0]
    return {
        "exp_hist": counts[:, :ZERO].view(rows, len(SIGNS), MAGNITUDES),
        "exp_zero": counts[:, ZERO],
        "exp_nonfinite": counts[:, NONFINITE],
    }
