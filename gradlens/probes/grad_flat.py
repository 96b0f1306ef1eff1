"""GradStats' torch route, on any device: gradients copied into zero-padded float64 buffers, reduced per block.

The route for GPU gradients, and on the CPU wherever the fused kernel (:mod:`gradlens.probes.grad_kernel`) cannot
be used (no C compiler, ``GRADLENS_KERNEL=0``, a tensor it does not read). It makes a fixed number of torch calls
per *window*, however many parameters there are (a GPU firing is a few dozen kernel launches, not a few per
parameter), and never reads a value back to the host on a GPU.

Layout, built once per set of gradient shapes and kept: the gradients are laid end to end in windows of at most
``WINDOW`` entries (256 MiB of float64, one buffer per device that the windows fill in turn; a larger gradient
has a window of its own), each padded with zeros to a whole number of ``BLOCK``-entry blocks (at least one), so a
window is a ``[blocks, BLOCK]`` matrix whose every block belongs to one gradient (row). Per window and firing:

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


def _host_side(device: torch.device) -> bool:
    """True when reading a value of a tensor on ``device`` costs no device synchronisation (the CPU)."""
    return device.type == "cpu"


def _blocks_of(numel: int) -> int:
    """Blocks a gradient of ``numel`` entries takes: at least one (a row without entries still has its PRESENT)."""
    return max(1, -(-numel // BLOCK))


class Window:
    """Gradients of ``rows`` (output rows) laid end to end in ``buffer`` (shared by the windows of one device:
    they are filled and reduced one after another), each padded to whole blocks.

    Args:
        rows: the output row of each gradient.
        shapes: each gradient's shape.
        buffer: a zeroed float64 buffer on the gradients' device with room for them all.
        shared: other windows use ``buffer`` too, so the padding of this one may hold their entries.
    """

    def __init__(self, rows: list[int], shapes: list[torch.Size], buffer: torch.Tensor, shared: bool) -> None:
        numels = [math.prod(shape) for shape in shapes]
        blocks = [_blocks_of(n) for n in numels]
        device = buffer.device
        self.rows = rows
        self.views = []
        offset = 0
        for shape, n, count in zip(shapes, numels, blocks, strict=True):
            self.views.append(buffer[offset : offset + n].view(shape))
            offset += count * BLOCK
        self.blocks = buffer[:offset].view(-1, BLOCK)
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
        # the last block of each row: where its padding lies, zeroed before each fill when the buffer is shared
        self.tails = (torch.cumsum(per_row, 0) - 1).to(device) if shared else None

    def fill(self, grads: list[torch.Tensor]) -> None:
        """Copy ``grads`` into their places (widened to float64); padding zero."""
        if self.tails is not None:
            self.blocks.index_fill_(0, self.tails, 0.0)
        torch._foreach_copy_(self.views, grads)

    def count(self, codes: torch.Tensor, width: int, zero_slot: int) -> torch.Tensor:
        """Per-block counts ``[blocks, width]`` of the slot codes ``[blocks, BLOCK]``, padding taken out of
        ``zero_slot`` (the slot that holds 0.0)."""
        per_block = torch.zeros((codes.shape[0], width), dtype=torch.int64, device=codes.device)
        per_block.scatter_add_(1, codes, self.ones.expand_as(codes))
        per_block[:, zero_slot] -= self.padding
        return per_block


class Layout:
    """The windows of one set of gradients (rows, shapes, devices), kept between firings while they match. The
    windows of a device share one buffer, as large as the largest of them (at most ``WINDOW`` entries unless one
    gradient is larger): the copy never holds more than that, whatever the model's size. With one window, padding
    entries are never written, so they stay zero; windows that share the buffer zero their rows' last blocks
    before each fill."""

    def __init__(self, rows: list[int], grads: list[torch.Tensor]) -> None:
        self.key = Layout.key_of(rows, grads)
        self.windows: list[Window] = []
        self.members: list[list[int]] = []  # per window, the positions in ``grads`` it holds
        groups: dict[torch.device, list[int]] = {}
        for position, g in enumerate(grads):
            groups.setdefault(g.device, []).append(position)
        for device, positions in groups.items():
            planned: list[list[int]] = [[]]
            filled = 0
            for position in positions:
                size = _blocks_of(grads[position].numel()) * BLOCK
                if planned[-1] and filled + size > WINDOW:
                    planned.append([])
                    filled = 0
                planned[-1].append(position)
                filled += size
            largest = max(sum(_blocks_of(grads[p].numel()) for p in members) for members in planned)
            buffer = torch.zeros(largest * BLOCK, dtype=torch.float64, device=device)
            for members in planned:
                shapes = [grads[p].shape for p in members]
                self.windows.append(Window([rows[p] for p in members], shapes, buffer, len(planned) > 1))
                self.members.append(members)

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
        window.fill([taken[p] for p in positions])
        _window_sums(window, sums, maxima, histogram, counts, slots)


def _window_sums(window: Window, sums: torch.Tensor, maxima: torch.Tensor, histogram: Histogram | None,
                 counts: torch.Tensor | None, slots: torch.Tensor | None) -> None:
    """Steps 2-4 of the module docstring for one filled window; the block partials are stacked in the column order
    of ``sums`` (Σg, Σ|g|, Σg², n, non-finite, NaN, present: ``grad_kernel.COLUMNS``)."""
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
