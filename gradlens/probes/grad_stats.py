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
- ``exp_hist`` ``[layer, sign, exponent]``, ``exp_zero``, ``exp_nonfinite`` (with ``exponents=True``): the
  exponent histogram of :mod:`gradlens.probes.grad_exponents` — per sign (``negative``, ``positive``) the count of
  entries with 2^e <= |g| < 2^(e+1) for each e from -64 to 15, below 2^-64 and from 2^16 on (82 buckets, each
  labelled by its |g| interval), the count of ±0 and of NaN/±Inf. No range to choose: every layer's gradients
  land in their own buckets, whatever decade they live in. Counts are uint32 (uint64 when a parameter has 2^32
  entries or more) and sum to n.

A row whose parameter has no gradient at a firing (``.grad is None``) records NaN statistics,
``nonfinite = -1``, linear-histogram counts -1 and exponent counts 0.

``bins=K`` (an int) means K equal bins over ``[-R, R]``, where R is fixed at the first firing that sees a
finite non-zero gradient: the largest finite |g| over all covered parameters, rounded up to one significant
digit (0.0347 -> 0.04, 3 -> 3, 0.12 -> 0.2). Until then ``hist_edges`` is NaN and the counts are -1.

Exponent histograms are off by default, for their cost on disk, not in time. Computing them is one more pass over
each block of a gradient while it is in the cache (about 70 µs more per firing on the thin MLP's 0.12 M entries,
150 µs on ResNet-20's 0.27 M). A record, though, is 664 bytes per parameter (166 uint32 counts), 16.6× the five
statistics' 40; about 90 % of the buckets are empty, so HDF5's gzip with the shuffle filter brings it to 20-24 bytes
(lzf with shuffle: 33), where the statistics take 12.6 as compressed float32 (ResNet-20, 59 tensors, 256 records
at every step, ``benchmarks/exp_hist_disk.py``). At every step they would make a compressed run 2.6 times as
large, and the recorder's flush of 84 kB of counts per thin-MLP record costs more than their computation. A
distribution of exponents moves slowly, so record it on a schedule of its own, as a second probe (a probe records
all its quantities at each firing, so one probe cannot hold two schedules)::

    GradStats()                                                     # the statistics at every step
    GradStats(name="grad_exponents", exponents=True, every=Schedule.log_spaced(8) | Schedule.every(500))

How it is computed: per-row *local sums* first — Σg, Σ|g|, Σg², n, the non-finite and NaN counts (float64), max|g|
and the histogram slot counts — then, when the session's context has a ``reducer`` (sharded gradients,
:mod:`gradlens.distributed`), one ``reducer.sum_`` of all sums and counts (linear and exponent) packed into one
tensor and one ``reducer.max_`` of the maxima, and last the *finalize* step above (mean = Σg/n, mean_abs = Σ|g|/n,
norm = √Σg², max_abs = NaN where a NaN was counted). Every sum is accumulated in float64.

Cost: on CPU tensors one fused pass per gradient (:mod:`gradlens.probes.grad_kernel`; a second pass counts
NaN/Inf only where a sum came out non-finite, a third sorts entries into linear bins), about one read of
every gradient — e.g. 0.02 s for the 79 M gradients of a 512 × 300 MLP, 0.1 ms for the 126 tensors of a thin
MLP. When every gradient fits the kept plan (parameters without a gradient included), their addresses are read in
one C++ call (:mod:`gradlens.probes.grad_reader`, built once per machine in the background and cached), not
through ``p.grad`` in Python; a gradient that never fits a plan (float16, a GPU tensor, a subclass) is remembered,
so the plan is not searched for again at every firing. Elsewhere (GPU, DTensor shards without a kernel, no C
compiler) the torch route (:mod:`gradlens.probes.grad_flat`) copies the gradients into zero-padded float64 windows
and reduces them with a fixed number of torch calls per window, whatever the number of parameters. Statistics stay
on the gradients' device until the recorder's flush: after the first firing no call synchronises the host with the
device (with ``bins=K`` the first firing reads R once).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import torch

from gradlens.probes import grad_exponents, grad_flat, grad_kernel
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
    """Gradient statistics per parameter: mean, mean |g|, L2 norm, max |g|, non-finite count, histograms.

    Args:
        every: schedule (None: the session default).
        bins: optional linear histogram: fixed increasing edges (e.g. ``numpy.linspace(-1e-2, 1e-2, 41)``) or an
            int K (K equal bins over ±R, R fixed at the first firing; see the module docstring).
        exponents: record the exponent histograms ``exp_hist``, ``exp_zero``, ``exp_nonfinite`` (see the module
            docstring; 664 bytes per parameter per record before compression).
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
        exponents: bool = False,
        params: str = "all",
        name: str = "grad_stats",
    ) -> None:
        super().__init__(every)
        self.name = name
        check_coverage("GradStats", params)
        if not isinstance(exponents, bool):
            raise TypeError(f"GradStats exponents must be True or False, got {exponents!r}")
        self.exponents = exponents
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
        self._index_cache: dict = {}  # the kept plan of the kernel, the torch route's layout on the device

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
        if self.exponents:
            # a count never exceeds the parameter's size: uint32 unless a parameter has 2^32 entries or more
            largest = max((p.numel() for p in self._parameters(ctx)), default=0)
            dtype = "uint32" if largest < 2**32 else "uint64"
            labels = {**per_row, "sign": list(grad_exponents.SIGNS), "exponent": grad_exponents.exponent_labels()}
            shape = (n, len(grad_exponents.SIGNS), grad_exponents.MAGNITUDES)
            out["exp_hist"] = Quantity(shape, ("layer", "sign", "exponent"), labels, dtype=dtype)
            out["exp_zero"] = Quantity((n,), ("layer",), per_row, dtype=dtype)
            out["exp_nonfinite"] = Quantity((n,), ("layer",), per_row, dtype=dtype)
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
        cache = self._index_cache
        if reducer is None:  # the common case: one kernel call does everything
            planned = read_statistics(parameters, histogram, self.exponents, cache)
            if planned is None:
                grads = [p.grad for p in parameters] if grads is None else grads
                planned = planned_statistics(grads, histogram, self.exponents, cache)
            if planned is not None:
                values, sums, counts, slots = planned
                return self._values(dict(zip(STATISTICS, values.unbind(0), strict=True)), sums, counts, slots)
        sums, maxima, counts, slots = local_sums(grads, histogram, self.exponents, cache)
        if reducer is not None:  # sums and counts of all ranks in one collective (exact below 2^53), maxima in one
            parts = [sums.reshape(-1)] + [c.double().reshape(-1) for c in (counts, slots) if c is not None]
            packed = torch.cat(parts) if len(parts) > 1 else parts[0]
            reducer.sum_(packed, "GradStats sums")
            reducer.max_(maxima, "GradStats max|g|")
            reduced = iter(packed.split([part.numel() for part in parts]))
            sums = next(reduced).view_as(sums)
            counts = None if counts is None else next(reduced).view_as(counts)
            slots = None if slots is None else next(reduced).view_as(slots).to(torch.int64)
        return self._values(finalize(sums, maxima), sums, counts, slots)

    def _values(self, out: dict[str, torch.Tensor], sums: torch.Tensor, counts: torch.Tensor | None,
                slots: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The statistics ``out`` plus the histograms that are on."""
        if self.n_bins is not None:
            out.update(self._hist_values(sums, counts))
        if self.exponents:
            out.update(grad_exponents.split(slots))
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


def local_sums(
    grads: Sequence[torch.Tensor | None],
    histogram: Histogram | None = None,
    exponents: bool = False,
    cache: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Per-row sums of each gradient: ``sums`` [R, 7] float64 (columns SUM .. PRESENT), ``maxima`` [R] float64
    (max |g|; where the row holds a NaN it is not used: max_abs is NaN), with a histogram ``counts`` [R, K + 3]
    int64 (slot 0 below the first edge, 1..K the bins, K + 1 above the last edge, K + 2 NaN) and with
    ``exponents`` the exponent slot counts ``slots`` [R, grad_exponents.SLOTS] int64. Rows whose gradient is None
    stay 0 (PRESENT = 0). Everything is allocated on the first gradient's device: CPU gradients the fused kernel
    reads go to it, the others to the torch route (:mod:`gradlens.probes.grad_flat`), whose layout ``cache`` keeps
    between calls (a fresh copy of its index tensors to a GPU would wait for the GPU's queued work).
    """
    present = [g for g in grads if g is not None]
    device = present[0].device if present else torch.device("cpu")
    rows = len(grads)
    sums = torch.zeros((rows, grad_kernel.COLUMNS), dtype=torch.float64, device=device)
    maxima = torch.zeros(rows, dtype=torch.float64, device=device)
    counts = None if histogram is None else torch.zeros((rows, histogram.bins + 3), dtype=torch.int64, device=device)
    slots = torch.zeros((rows, grad_exponents.SLOTS), dtype=torch.int64, device=device) if exponents else None
    batch = grad_kernel.Batch() if device.type == "cpu" and grad_kernel.library() is not None else None
    rest: list[int] = []
    for row, g in enumerate(grads):
        if g is None:
            continue
        if batch is None or type(g) is not torch.Tensor or not g.is_cpu or not batch.add(row, g):
            rest.append(row)
    if batch is not None and batch.rows:
        grad_kernel.grad_sums(batch, sums, maxima, histogram, counts, slots)
    if rest:
        grad_flat.flat_sums(grads, rest, sums, maxima, histogram, counts, slots, {} if cache is None else cache)
    return sums, maxima, counts, slots


Planned = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]


def read_statistics(
    parameters: list[torch.Tensor], histogram: Histogram | None, exponents: bool, cache: dict
) -> Planned | None:
    """:func:`planned_statistics` of the ``parameters``' gradients through the kept plan, their addresses read in
    one C++ call (:mod:`~gradlens.probes.grad_reader`), without a Python object per gradient; None when there is
    no plan yet, the reader is not loaded (yet) or a gradient does not fit the plan."""
    plan = cache.get("plan")
    pointers = None if plan is None else plan.read(parameters)
    return None if pointers is None else _run_plan(plan, pointers, histogram, exponents)


def planned_statistics(
    grads: Sequence[torch.Tensor | None], histogram: Histogram | None, exponents: bool, cache: dict
) -> Planned | None:
    """The common case in one kernel call: (statistics [5, R] in ``STATISTICS`` order, sums, counts, slots), equal
    to :func:`local_sums` then :func:`finalize`; None when the kernel cannot read every gradient as it is (then
    take that route). ``cache["plan"]`` keeps the :class:`~gradlens.probes.grad_kernel.Plan` between firings;
    ``sums`` and ``counts`` are its buffers, overwritten at the next call (``slots`` is new at every call).

    A gradient that does not fit a plan (a float16 or GPU tensor, a subclass, a strided layout) is remembered in
    ``cache["misfit"]`` with what made it misfit; while that gradient is still of that kind, no plan is built
    again (a check of one gradient instead of all of them at every firing).
    """
    plan = cache.get("plan")
    pointers = None if plan is None else plan.pointers(grads)
    if pointers is None:
        if grad_kernel.library() is None or _still_misfit(grads, cache.get("misfit")):
            return None
        index = grad_kernel.Plan.misfit(grads)
        if index is not None:
            cache["plan"], cache["misfit"] = None, (len(grads), index, _kind(grads[index]))
            return None
        plan = cache["plan"] = grad_kernel.Plan.build(grads)
        pointers = None if plan is None else plan.pointers(grads)
        if pointers is None:
            return None
    return _run_plan(plan, pointers, histogram, exponents)


def _kind(grad: torch.Tensor) -> tuple:
    """What decides whether the kernel reads ``grad`` as it is."""
    return type(grad), grad.device, grad.dtype, grad.is_contiguous(), grad.is_neg()


def _still_misfit(grads: Sequence[torch.Tensor | None], misfit: tuple | None) -> bool:
    if misfit is None:
        return False
    size, index, kind = misfit
    return len(grads) == size and grads[index] is not None and _kind(grads[index]) == kind


def _run_plan(plan: grad_kernel.Plan, pointers, histogram: Histogram | None, exponents: bool) -> Planned:
    counts = None if histogram is None else plan.counts(histogram.bins + 3)
    slots = torch.zeros((plan.size, grad_exponents.SLOTS), dtype=torch.int64) if exponents else None
    return plan.run(pointers, histogram, counts, slots), plan.buffers[0], counts, slots


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
