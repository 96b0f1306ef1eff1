"""GradStats' torch route, on any device: gradients copied into zero-padded float64 buffers, reduced per block.

The route for GPU gradients, and on the CPU wherever the fused kernel (:mod:`gradlens.probes.grad_kernel`) cannot
be used (no C compiler, ``GRADLENS_KERNEL=0``, a tensor it does not read). It makes a fixed number of torch calls
per *window*, however many parameters there are (a GPU firing is a few dozen kernel launches, not a few per
parameter), and never reads a value back to the host on a GPU.

Layout, built once per set of gradient shapes and kept: the gradients are laid end to end in windows of at most
``WINDOW`` entries (256 MiB of float64; a larger gradient has a window of its own), each padded with zeros to a
whole number of ``BLOCK``-entry blocks (at least one), so a window is a ``[blocks, BLOCK]`` matrix whose every
block belongs to one gradient (row). Per window and firing:

1. one ``torch._foreach_copy_`` of every gradient into its place, widened to float64 (exact for float32,
   bfloat16 and float16, so each value and its exponent are the ones stored);
2. per block b: Σg (``sum``), Σ|g| (``vector_norm`` 1), Σg² (``vector_norm`` 2, squared), m_b = max |g|
   (``vector_norm`` inf, NaN when the block holds a NaN), the non-finite count (from the exponent slots, else
   BLOCK − Σ isfinite; on the CPU skipped when every Σ|g| is finite);
3. per row: the block sums added with one ``index_add_``, the maxima taken with one ``scatter_reduce_`` (amax) of
   the m_b of blocks without a NaN; the NaN column counts the blocks that hold a NaN (> 0 exactly when the
   kernel's NaN count is), so max |g| is NaN there, as on every route;
4. histograms: a slot code per entry (:func:`gradlens.probes.grad_exponents.codes` from the float64 bits, or the
   linear bin, found as the kernel finds it), counted per block with ``scatter_add_``, added into rows with
   ``index_add_``; the padding zeros are taken back out of the slot that holds 0.

Padding zeros change no sum, no maximum (|g| >= 0) and no non-finite count. Every call is deterministic on CUDA
under ``torch.use_deterministic_algorithms(True)`` (``histc``, which raises there, and ``bincount``, which reads the
largest code back to the host, are not used).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from gradlens.probes import grad_exponents
from gradlens.probes.grad_kernel import Histogram

BLOCK = 1024  # entries per block: the per-block partial sums cost 7 float64 per 1024 entries
WINDOW = 1 << 25  # entries per buffer (256 MiB of float64): bounds the copy whatever the model's size
SUM, SUM_ABS, SUM_SQ, COUNT, NONFINITE, NAN, PRESENT = range(7)  # the columns of grad_kernel's sums


def _host_side(device: torch.device) -> bool:
    """True when reading a value of a tensor on ``device`` costs no device synchronisation (the CPU)."""
    return device.type == "cpu"


class Window:
    """One float64 buffer holding the gradients of ``rows`` (output rows) end to end, each padded to whole blocks.

    Args:
        rows: the output row of each gradient.
        shapes: each gradient's shape.
        device: where the buffer lives (the gradients' device).
    """

    def __init__(self, rows: list[int], shapes: list[torch.Size], device: torch.device) -> None:
        numels = [math.prod(shape) for shape in shapes]
        blocks = [max(1, -(-n // BLOCK)) for n in numels]
        self.rows = rows
        self.buffer = torch.zeros(sum(blocks) * BLOCK, dtype=torch.float64, device=device)
        self.views = []
        offset = 0
        for shape, n, count in zip(shapes, numels, blocks, strict=True):
            self.views.append(self.buffer[offset : offset + n].view(shape))
            offset += count * BLOCK
        self.blocks = self.buffer.view(-1, BLOCK)
        # per block: its output row, its real (not padding) entries, 1 on a row's first block (the PRESENT column)
        per_row = torch.tensor(blocks)
        self.block_rows = torch.repeat_interleave(torch.tensor(rows, dtype=torch.int64), per_row).to(device)
        starts = torch.cumsum(per_row, 0) - per_row
        position = torch.arange(int(per_row.sum())) - torch.repeat_interleave(starts, per_row)
        real = (torch.repeat_interleave(torch.tensor(numels), per_row) - position * BLOCK).clamp(0, BLOCK)
        self.real = real.double().to(device)
        self.padding = (BLOCK - real).to(device)
        self.first = (position == 0).double().to(device)
        self.ones = torch.ones((1, 1), dtype=torch.int64, device=device)

    def count(self, codes: torch.Tensor, width: int, zero_slot: int) -> torch.Tensor:
        """Per-block counts ``[blocks, width]`` of the slot codes ``[blocks, BLOCK]``, padding taken out of
        ``zero_slot`` (the slot that holds 0.0)."""
        per_block = torch.zeros((codes.shape[0], width), dtype=torch.int64, device=codes.device)
        per_block.scatter_add_(1, codes, self.ones.expand_as(codes))
        per_block[:, zero_slot] -= self.padding
        return per_block


class Layout:
    """The windows of one set of gradients (rows, shapes, devices), kept between firings while they match."""

    def __init__(self, rows: list[int], grads: list[torch.Tensor]) -> None:
        self.key = Layout.key_of(rows, grads)
        self.windows: list[Window] = []
        self.members: list[list[int]] = []  # per window, the positions in ``grads`` it holds
        groups: dict[torch.device, list[int]] = {}
        for position, g in enumerate(grads):
            groups.setdefault(g.device, []).append(position)
        for device, positions in groups.items():
            current: list[int] = []
            filled = 0
            for position in positions:
                size = max(1, -(-grads[position].numel() // BLOCK)) * BLOCK
                if current and filled + size > WINDOW:
                    self._add(current, rows, grads, device)
                    current, filled = [], 0
                current.append(position)
                filled += size
            if current:
                self._add(current, rows, grads, device)

    def _add(self, positions: list[int], rows: list[int], grads: list[torch.Tensor], device: torch.device) -> None:
        self.windows.append(Window([rows[p] for p in positions], [grads[p].shape for p in positions], device))
        self.members.append(positions)

    @staticmethod
    def key_of(rows: list[int], grads: list[torch.Tensor]) -> tuple:
        return tuple(rows), tuple(g.shape for g in grads), tuple(g.device for g in grads)


def flat_sums(
    grads: Sequence[torch.Tensor | None],
    rows: list[int],
    sums: torch.Tensor,
    maxima: torch.Tensor,
    histogram: Histogram | None,
    counts: torch.Tensor | None,
    slots: torch.Tensor | None,
    cache: dict,
) -> None:
    """Add the ``rows``' gradients' sums into ``sums`` [R, 7], their maxima into ``maxima`` [R] (both zeroed by the
    caller), their linear-bin counts into ``counts`` [R, K + 3] and their exponent slot counts into ``slots``
    [R, SLOTS] (when given). ``cache["flat"]`` keeps the :class:`Layout` between calls."""
    taken = [grads[row].detach() for row in rows]
    layout = cache.get("flat")
    if layout is None or layout.key != Layout.key_of(rows, taken):
        layout = cache["flat"] = Layout(rows, taken)
    for window, positions in zip(layout.windows, layout.members, strict=True):
        torch._foreach_copy_(window.views, [taken[p] for p in positions])
        _window_sums(window, sums, maxima, histogram, counts, slots)


def _window_sums(window: Window, sums: torch.Tensor, maxima: torch.Tensor, histogram: Histogram | None,
                 counts: torch.Tensor | None, slots: torch.Tensor | None) -> None:
    """Steps 2-4 of the module docstring for one filled window."""
    blocks, device = window.blocks, sums.device
    total = blocks.sum(1)
    absolute = torch.linalg.vector_norm(blocks, 1, dim=1)
    square = torch.linalg.vector_norm(blocks, 2, dim=1).square()
    top = torch.linalg.vector_norm(blocks, math.inf, dim=1)
    nan = torch.isnan(top)
    if slots is not None:
        per_block = window.count(grad_exponents.codes(blocks), grad_exponents.SLOTS, grad_exponents.ZERO)
        nonfinite = per_block[:, grad_exponents.NONFINITE].double()
        slots.index_add_(0, _placed(window.block_rows, device), _placed(per_block, device))
    elif _host_side(blocks.device) and bool(torch.isfinite(absolute).all()):
        nonfinite = torch.zeros_like(total)
    else:
        nonfinite = (BLOCK - torch.isfinite(blocks).sum(1)).double()
    part = torch.stack([total, absolute, square, window.real, nonfinite, nan.double(), window.first], 1)
    index = _placed(window.block_rows, device)
    sums.index_add_(0, index, _placed(part, device))
    maxima.scatter_reduce_(0, index, _placed(torch.where(nan, 0.0, top), device), "amax")
    if histogram is not None:
        per_block = window.count(_linear_slots(blocks, histogram), histogram.bins + 3, histogram.zero_slot)
        counts.index_add_(0, index, _placed(per_block, device))


def _linear_slots(values: torch.Tensor, histogram: Histogram) -> torch.Tensor:
    """The slot of every float64 entry (0 below the first edge, 1..K the bins, K + 1 above, K + 2 NaN), found as
    the kernel finds it: for uniform edges a guess at most one slot off, corrected against the slot bounds."""
    bins = histogram.bins
    bounds = histogram.slots_on(values.device)
    if histogram.uniform:
        guess = ((values - histogram.first) * histogram.scale + 1.0).clamp_(0, bins + 1)
        index = torch.where(torch.isnan(values), bins + 2, guess.floor()).long()
        index -= (values < bounds[index]).long()
        index += ((values >= bounds[index + 1]) & (index <= bins)).long()
        return index
    index = torch.bucketize(values, bounds[1 : bins + 2], right=True)
    return torch.where(torch.isnan(values), bins + 2, index)


def _placed(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``: moved only when a gradient lives on another device than the first one."""
    return tensor if tensor.device == device else tensor.to(device)
