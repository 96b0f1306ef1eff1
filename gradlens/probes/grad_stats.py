"""GradStats: statistics of every trainable parameter's gradient at every optimizer step it fires.

Coverage (``params``):

- ``"all"`` (default): one row per trainable parameter (``requires_grad`` when the session was attached), in
  registration order, labelled by its qualified name without wrapper prefixes
  (``encoder.layer.0.attention.self.query.weight``, see :mod:`gradlens.naming`): embeddings, norms, biases and
  ``nn.MultiheadAttention.in_proj_weight`` included.
- ``"weights"``: one row per layer weight of the session's layers (``nn.Linear``/``nn.Conv*d`` and registered
  types, in forward order), labelled by the layer's module name: what the document analyses record.

For a row with gradient g (n entries), one record holds

- ``mean``      = (1/n) Σ g        — the signed "mean gradient" of document 000 (SCNet, Figs. 5–6)
- ``mean_abs``  = (1/n) Σ |g|
- ``norm``      = ‖g‖₂
- ``max_abs``   = max |g|
- ``nonfinite`` = number of NaN/±Inf entries (the other statistics are then non-finite too: recorded as
  they are, never raised)
- ``hist``, ``hist_below``, ``hist_above`` (with ``bins``): counts of g per bin, and of entries below the
  first edge / above the last edge (±Inf included there; NaN in neither). Bins are ``[e_i, e_{i+1})``, the
  last one closed, as in ``numpy.histogram``. ``hist_edges`` holds the edges at every record.

A row whose parameter has no gradient at a firing (``.grad is None``) records NaN statistics,
``nonfinite = -1`` and histogram counts -1.

``bins=K`` (an int) means K equal bins over ``[-R, R]``, where R is fixed at the first firing that sees a
finite non-zero gradient: the largest finite |g| over all covered parameters, rounded up to one significant
digit (0.0347 -> 0.04, 3 -> 3, 0.12 -> 0.2). Until then ``hist_edges`` is NaN and the counts are -1.

How it is computed: per-row *local sums* first — Σg, Σ|g|, Σg², n, the non-finite and NaN counts (float64), max|g|
over the non-NaN entries and the histogram slot counts — then, when the session's context has a ``reducer``
(sharded gradients, :mod:`gradlens.distributed`), one ``reducer.sum_`` of all sums and counts packed into one
tensor and one ``reducer.max_`` of the maxima, and last the *finalize* step above (mean = Σg/n, mean_abs = Σ|g|/n,
norm = √Σg², max_abs = NaN where a NaN was counted). Gradients of float16/bfloat16 are accumulated in float32 or
wider, Σg always in float64.

Cost: on CPU tensors one fused pass per gradient (:mod:`gradlens.probes.grad_kernel`; a second pass counts
NaN/Inf only where a sum came out non-finite, a third sorts entries into histogram bins), about one read of
every gradient — e.g. 0.02 s for the 79 M gradients of a 512 × 300 MLP, 0.1 ms for the 126 tensors of a thin
MLP. When every gradient fits the kept plan, their addresses are read in one C++ call
(:mod:`gradlens.probes.grad_reader`, built once per machine in the background and cached), not through ``p.grad``
in Python. Elsewhere (GPU, DTensor shards without a kernel, no C compiler) the torch route stacks gradients of one size
into packs and reduces each pack with a few torch calls. Statistics stay on the gradients' device until the
recorder's flush: after the first firing no call synchronises the host with the device (with ``bins=K`` the
first firing reads R once).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import torch

from gradlens.probes import grad_kernel
from gradlens.probes.base import GRADS, Probe, Quantity, Schedule, check_coverage, covered_parameters
from gradlens.probes.grad_kernel import Histogram

STATISTICS = ("mean", "mean_abs", "norm", "max_abs", "nonfinite")


def round_up_one_digit(value: float) -> float:
    """The smallest number with one significant digit that is >= ``value`` (> 0): 0.0347 -> 0.04."""
    exponent = math.floor(math.log10(value))
    unit = 10.0**exponent
    top = math.ceil(value / unit * (1 - 1e-12)) * unit
    return top if top >= value else top + unit


class GradStats(Probe):
    """Gradient statistics per parameter: mean, mean |g|, L2 norm, max |g|, non-finite count, histogram.

    Args:
        every: schedule (None: the session default).
        bins: optional histogram: fixed increasing edges (e.g. ``numpy.linspace(-1e-2, 1e-2, 41)``) or an int K
            (K equal bins over ±R, R fixed at the first firing; see the module docstring).
        params: ``"all"`` (every trainable parameter, by qualified name) or ``"weights"`` (the session's layer
            weights, by layer module name).
        name: the HDF5 group name (default ``"grad_stats"``).
    """

    needs = frozenset({GRADS})
    fresh_values = True  # every compute returns new tensors (the bin edges are replaced, never changed in place)

    def __init__(
        self,
        every: int | Iterable[int] | Schedule | None = None,
        bins: int | Sequence[float] | None = None,
        params: str = "all",
        name: str = "grad_stats",
    ) -> None:
        super().__init__(every)
        self.name = name
        check_coverage("GradStats", params)
        self.params = params
        self.uses_layers = params == "weights"
        self.n_bins: int | None = None
        self.edges: torch.Tensor | None = None
        if isinstance(bins, numbers.Integral) and not isinstance(bins, bool):
            if int(bins) < 1:
                raise ValueError(f"GradStats bins={bins!r}: an int number of bins must be >= 1")
            self.n_bins = int(bins)
        elif bins is not None:
            try:
                self.edges = torch.as_tensor([float(b) for b in bins], dtype=torch.float64)
            except TypeError:
                raise TypeError(
                    f"GradStats bins must be an int (number of bins) or a sequence of edges, got {bins!r}"
                ) from None
            if self.edges.numel() < 2 or not bool((self.edges.diff() > 0).all()):
                raise ValueError(f"GradStats bins must be at least two increasing edges, got {list(bins)}")
            self.n_bins = self.edges.numel() - 1
        self._prepared: Histogram | None = None  # the edges prepared for counting, built at the first firing
        self._cache: tuple | None = None  # (context, covered parameters)
        self._index_cache: dict = {}  # the torch route's row indices on the device

    def _covered(self, ctx) -> list[tuple[str, torch.Tensor]]:
        return covered_parameters(ctx, self.params)

    def quantities(self, ctx) -> dict[str, Quantity]:
        names = [label for label, _ in self._covered(ctx)]
        n = len(names)
        per_row = {"layer": names}
        out = {q: Quantity((n,), ("layer",), per_row, "int32" if q == "nonfinite" else "float32") for q in STATISTICS}
        if self.n_bins is not None:
            out["hist"] = Quantity((n, self.n_bins), ("layer", "bin"), per_row, dtype="int64")
            out["hist_below"] = Quantity((n,), ("layer",), per_row, dtype="int64")
            out["hist_above"] = Quantity((n,), ("layer",), per_row, dtype="int64")
            out["hist_edges"] = Quantity((self.n_bins + 1,), ("edge",))
        return out

    def compute(self, ctx) -> dict[str, torch.Tensor]:
        reducer = getattr(ctx, "reducer", None)
        parameters = self._parameters(ctx)
        grads = None  # read in Python only where needed: the one-call route reads the addresses itself
        if reducer is not None:  # this rank's part of each gradient (a shard under FSDP2)
            grads = [None if p.grad is None else reducer.local(p.grad)[0] for p in parameters]
        elif self.n_bins is not None and self._prepared is None:  # the histogram range is fixed from them
            grads = [p.grad for p in parameters]
        histogram = self._histogram(grads, reducer)
        planned = None
        if reducer is None:  # the common case: one kernel call does everything
            planned = read_statistics(parameters, histogram, self._index_cache)
            if planned is None:
                grads = [p.grad for p in parameters] if grads is None else grads
                planned = planned_statistics(grads, histogram, self._index_cache)
        if planned is not None:
            values, sums, counts = planned
            out = dict(zip(STATISTICS, values.unbind(0), strict=True))
            if self.n_bins is not None:
                out.update(self._hist_values(sums, counts))
            return out
        sums, maxima, counts = local_sums(grads, histogram, self._index_cache)
        if reducer is not None:
            packed = sums.reshape(-1) if counts is None else torch.cat([sums.reshape(-1), counts.double().reshape(-1)])
            reducer.sum_(packed, "GradStats sums")
            reducer.max_(maxima, "GradStats max|g|")
            sums = packed[: sums.numel()].view_as(sums)
            if counts is not None:
                counts = packed[sums.numel() :].view_as(counts)
        out = finalize(sums, maxima)
        if self.n_bins is not None:
            out.update(self._hist_values(sums, counts))
        return out

    def _parameters(self, ctx) -> list[torch.Tensor]:
        """The covered parameters, looked up once per context (the session's parameter list is fixed)."""
        if self._cache is None or self._cache[0] is not ctx:
            self._cache = (ctx, [parameter for _, parameter in self._covered(ctx)])
        return self._cache[1]

    def _histogram(self, grads: list[torch.Tensor | None], reducer) -> Histogram | None:
        """The prepared bin edges; with ``bins=K``, R is fixed here at the first firing with a finite |g| > 0."""
        if self.n_bins is None:
            return None
        if self.edges is None:
            largest = largest_finite(grads)
            if reducer is not None:
                reducer.max_(largest, "GradStats histogram range")
            if float(largest) > 0.0:  # a host read, at the first firing(s) only
                bound = round_up_one_digit(float(largest))
                self.edges = torch.linspace(-bound, bound, self.n_bins + 1, dtype=torch.float64)
        if self.edges is not None and self._prepared is None:
            self._prepared = Histogram(self.edges)
        return self._prepared

    def _hist_values(self, sums: torch.Tensor, counts: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """hist, hist_below, hist_above (-1 in rows without a gradient, or before the range is fixed), edges."""
        rows, bins = sums.shape[0], self.n_bins
        if counts is None:
            full = torch.full((rows, bins + 3), -1, dtype=torch.int64, device=sums.device)
            edges = torch.full((bins + 1,), math.nan, dtype=torch.float64)
        else:
            present = (sums[:, PRESENT] > 0).unsqueeze(1)
            full = torch.where(present, counts.to(torch.int64), -1)
            edges = self.edges
        return {
            "hist": full[:, 1 : bins + 1],
            "hist_below": full[:, 0],
            "hist_above": full[:, bins + 1],
            "hist_edges": edges,
        }


# Columns of the local sums: one float64 row per covered parameter, summed over ranks in one call.
SUM, SUM_ABS, SUM_SQ, COUNT, NONFINITE, NAN, PRESENT = range(grad_kernel.COLUMNS)
SMALL = 1 << 16  # torch route: gradients with fewer entries are stacked with others of their size ...
PACK = 1 << 18  # ... into packs of at most this many entries (a bounded copy, never one of the whole model)
HALF = (torch.float16, torch.bfloat16)


def local_sums(
    grads: Sequence[torch.Tensor | None], histogram: Histogram | None = None, cache: dict | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-row sums of each gradient: ``sums`` [R, 7] float64 (columns SUM .. PRESENT), ``maxima`` [R] float64
    (max |g| over the non-NaN entries, 0 for none) and, with a histogram, ``counts`` [R, K + 3] int64 (slot 0
    below the first edge, 1..K the bins, K + 1 above the last edge, K + 2 NaN). Rows whose gradient is None stay
    0 (PRESENT = 0). Everything is allocated on the first gradient's device. ``cache`` keeps the torch route's
    row-index tensors on the device between calls (a fresh copy to a GPU would wait for its queued work).
    """
    present = [g for g in grads if g is not None]
    device = present[0].device if present else torch.device("cpu")
    rows = len(grads)
    sums = torch.zeros((rows, grad_kernel.COLUMNS), dtype=torch.float64, device=device)
    maxima = torch.zeros(rows, dtype=torch.float64, device=device)
    counts = None if histogram is None else torch.zeros((rows, histogram.bins + 3), dtype=torch.int64, device=device)
    batch = grad_kernel.Batch() if device.type == "cpu" and grad_kernel.library() is not None else None
    rest: list[int] = []
    for row, g in enumerate(grads):
        if g is None:
            continue
        if batch is None or type(g) is not torch.Tensor or not g.is_cpu or not batch.add(row, g):
            rest.append(row)
    if batch is not None and batch.rows:
        grad_kernel.grad_sums(batch, sums, maxima, histogram, counts)
    if rest:
        _torch_sums(grads, rest, sums, maxima, histogram, counts, {} if cache is None else cache)
    return sums, maxima, counts


def read_statistics(
    parameters: list[torch.Tensor], histogram: Histogram | None, cache: dict
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
    """:func:`planned_statistics` of the ``parameters``' gradients through the kept plan, their addresses read in
    one C++ call (:mod:`~gradlens.probes.grad_reader`), without a Python object per gradient; None when there is
    no plan yet, the reader is not loaded (yet) or a gradient does not fit the plan."""
    plan = cache.get("plan")
    pointers = None if plan is None else plan.read(parameters)
    return None if pointers is None else _run_plan(plan, pointers, histogram)


def planned_statistics(
    grads: Sequence[torch.Tensor | None], histogram: Histogram | None, cache: dict
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
    """The common case in one kernel call: (statistics [5, R] in ``STATISTICS`` order, sums, counts), equal to
    :func:`local_sums` then :func:`finalize`; None when the kernel cannot read every gradient as it is (then
    take that route). ``cache["plan"]`` keeps the :class:`~gradlens.probes.grad_kernel.Plan` between firings;
    ``sums`` and ``counts`` are its buffers, overwritten at the next call.
    """
    plan = cache.get("plan")
    pointers = None if plan is None else plan.pointers(grads)
    if pointers is None:
        if grad_kernel.library() is None:
            return None
        plan = cache["plan"] = grad_kernel.Plan.build(grads)
        pointers = None if plan is None else plan.pointers(grads)
        if pointers is None:
            return None
    return _run_plan(plan, pointers, histogram)


def _run_plan(plan: grad_kernel.Plan, pointers, histogram: Histogram | None) -> tuple:
    counts = None if histogram is None else plan.counts(histogram.bins + 3)
    return plan.run(pointers, histogram, counts), plan.buffers[0], counts


def finalize(sums: torch.Tensor, maxima: torch.Tensor) -> dict[str, torch.Tensor]:
    """The statistics from (reduced) sums: mean = Σg/n, mean_abs = Σ|g|/n, norm = √Σg², max_abs, nonfinite.

    max_abs is NaN where a NaN was counted; rows without a gradient get NaN statistics and nonfinite = -1.
    On the CPU the kernel's ``finalize`` computes the same formulas in one call.
    """
    if sums.device.type == "cpu" and grad_kernel.library() is not None and sums.is_contiguous():
        return dict(zip(STATISTICS, grad_kernel.finalize(sums, maxima.contiguous()), strict=True))
    n = sums[:, COUNT]
    nan = torch.full((), math.nan, dtype=torch.float64, device=sums.device)  # made on the device: no copy to it
    values = torch.stack(
        [
            sums[:, SUM] / n,
            sums[:, SUM_ABS] / n,
            sums[:, SUM_SQ].sqrt(),
            torch.where(sums[:, NAN] > 0, nan, maxima),
            sums[:, NONFINITE],
        ]
    )
    missing = torch.full((len(STATISTICS), 1), math.nan, dtype=torch.float64, device=sums.device)
    missing[STATISTICS.index("nonfinite")] = -1.0
    values = torch.where(sums[:, PRESENT] > 0, values, missing)
    return dict(zip(STATISTICS, values, strict=True))


def largest_finite(grads: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """max |g| over the finite entries of all gradients, a float64 tensor of shape [1] (0 when there are none)."""
    present = [g for g in grads if g is not None and g.numel()]
    device = present[0].device if present else torch.device("cpu")
    largest = torch.zeros((), dtype=torch.float64, device=device)
    for g in present:
        finite = g.detach().abs().nan_to_num(nan=0.0, posinf=0.0)  # NaN and Inf count as 0 here
        largest = torch.maximum(largest, finite.max().to(device=device, dtype=torch.float64))
    return largest.reshape(1)


def _host_side(device: torch.device) -> bool:
    """True when reading a value of a tensor on ``device`` costs no device synchronisation (the CPU)."""
    return device.type == "cpu"


def _placed(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``: moved only when a gradient lives on another device than the first one."""
    return tensor if tensor.device == device else tensor.to(device)


def _packs(grads: Sequence[torch.Tensor | None], rows: list[int]) -> list[list[int]]:
    """Rows reduced together: a large gradient alone, smaller ones of one size/dtype/device stacked."""
    packs: list[list[int]] = []
    groups: dict[tuple, list[int]] = {}
    for row in rows:
        g = grads[row]
        n = g.numel()
        if n >= SMALL:
            packs.append([row])
            continue
        key = (n, g.dtype, g.device)
        members = groups.setdefault(key, [])
        members.append(row)
        if (len(members) + 1) * max(n, 1) > PACK:
            packs.append(groups.pop(key))
    return packs + list(groups.values())


def _torch_sums(
    grads: Sequence[torch.Tensor | None],
    rows: list[int],
    sums: torch.Tensor,
    maxima: torch.Tensor,
    histogram: Histogram | None,
    counts: torch.Tensor | None,
    cache: dict,
) -> None:
    """The torch route of :func:`local_sums` for ``rows``: a few reductions per pack, no host synchronisation."""
    for pack in _packs(grads, rows):
        members = [grads[row].detach() for row in pack]
        block = members[0].reshape(1, -1) if len(members) == 1 else torch.stack([g.reshape(-1) for g in members])
        if block.dtype in HALF:
            block = block.float()
        m, n = block.shape
        key = (tuple(pack), sums.device)
        if key not in cache:
            cache[key] = torch.tensor(pack, device=sums.device)
        index = cache[key]
        ones = torch.ones(m, dtype=torch.float64, device=block.device)
        if n == 0:
            part = torch.zeros((m, sums.shape[1]), dtype=torch.float64, device=block.device)
            part[:, PRESENT] = 1.0
            sums.index_copy_(0, index, _placed(part, sums.device))
            continue
        magnitudes = block.abs()
        part = torch.stack(
            [
                block.sum(1, dtype=torch.float64),
                magnitudes.sum(1).double(),
                torch.linalg.vector_norm(block, 2, dim=1).double().square(),
                ones * n,
                ones * 0,
                ones * 0,
                ones,
            ],
            1,
        )
        if not _host_side(block.device) or not bool(torch.isfinite(part[:, SUM_ABS : SUM_SQ + 1]).all()):
            part[:, NONFINITE] = (~torch.isfinite(block)).sum(1).double()
            part[:, NAN] = torch.isnan(block).sum(1).double()
        top = magnitudes.nan_to_num(nan=0.0, posinf=math.inf).amax(1).double()
        sums.index_copy_(0, index, _placed(part, sums.device))
        maxima.index_copy_(0, index, _placed(top, sums.device))
        if histogram is not None:
            counts.index_copy_(0, index, _placed(_torch_histogram(block, histogram), sums.device))


def _torch_histogram(block: torch.Tensor, histogram: Histogram) -> torch.Tensor:
    """Slot counts [m, K + 3] of the rows of ``block`` (see :func:`local_sums`), compared in float64."""
    values = block.double()
    bins = histogram.bins
    slots = histogram.slots_on(values.device)
    if histogram.uniform:  # a guess at most one slot off, corrected against the slot bounds
        guess = ((values - histogram.first) * histogram.scale + 1.0).clamp_(0, bins + 1)
        index = torch.where(torch.isnan(values), bins + 2, guess.floor()).long()
        index -= (values < slots[index]).long()
        index += ((values >= slots[index + 1]) & (index <= bins)).long()
    else:
        index = torch.bucketize(values, slots[1 : bins + 2], right=True)
        index = torch.where(torch.isnan(values), bins + 2, index)
    width = bins + 3
    index += torch.arange(block.shape[0], device=values.device).unsqueeze(1) * width
    total = block.shape[0] * width
    # histc with integer-valued float64 input counts exactly and, unlike bincount, needs no device sync
    return torch.histc(index.double(), bins=total, min=0, max=total).to(torch.int64).reshape(-1, width)
