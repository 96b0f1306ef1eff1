"""A fused CPU kernel for GradStats: one read of each gradient gives all of its sums and exponent counts.

For every gradient g (n entries) the kernel makes one pass that accumulates, in float64 with 16 independent
lanes per 4096-entry block (so the compiler vectorises it and the rounding error stays ~1e-16 · Σ|g|):

    Σg,  Σ|g|,  Σg²,  max |g| over the non-NaN entries,

and, with exponent histograms, sorts each block, while it is still in the cache, into the 166 exponent slots of
:mod:`gradlens.probes.grad_exponents` by the bits of each value (exponent field, sign, zero, non-finite: no
comparison with edges, no range). Only when Σ|g| or Σg² came out non-finite, a second pass counts the NaN and ±Inf
entries. With linear bins it makes one more pass that sorts each entry into a bin (see ``_SOURCE``), with the
edges compared in float64, so a float32 entry lands in exactly the bin ``numpy.histogram`` gives it.

The torch route (:mod:`gradlens.probes.grad_flat`) copies every gradient into a float64 buffer and needs 5-10
passes over it; on a thin MLP with 126 parameter tensors its per-operation dispatch alone costs more than the
5 % overhead budget. The kernel is plain C (no torch headers), compiled once per process with the system C
compiler (``$CC``, else ``cc``/``gcc``; ~0.3 s at the first firing) into a temporary folder and loaded with
``ctypes``. It runs on CPU tensors of float32, float64 and bfloat16 (float16 is converted to float32 first,
which is exact) and splits large inputs across ``torch.get_num_threads()`` POSIX threads. Anything else — no
compiler, a failed build, a library whose self-check disagrees with known values, ``GRADLENS_KERNEL=0`` in the
environment, GPU tensors, DTensors — takes the torch route, which computes the same quantities.
"""

from __future__ import annotations

import array
import bisect
import ctypes
import math
import operator
import os
import shutil
import subprocess
import tempfile
import threading

import torch

from gradlens.probes import grad_exponents, grad_reader
from gradlens.probes.grad_kernel_c import SOURCE as _SOURCE

DTYPES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2}
ACCEPTS = (*DTYPES, torch.float16)  # float16 is converted to float32 before the call
COLUMNS = 7  # Σg, Σ|g|, Σg², n, non-finite count, NaN count, present (1 where the row has a gradient)
THREADED_ENTRIES = 1 << 20  # below this many entries in all, one thread does everything


_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_tried = False


def _build() -> ctypes.CDLL | None:
    """Compile ``_SOURCE`` into a temporary folder and load it; None when that is not possible here."""
    if os.environ.get("GRADLENS_KERNEL", "1") == "0":
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        return None
    folder = tempfile.mkdtemp(prefix="gradlens-kernel-")
    try:
        source, target = os.path.join(folder, "grad_sums.c"), os.path.join(folder, "grad_sums.so")
        with open(source, "w") as handle:
            handle.write(_SOURCE)
        for flags in (["-O3", "-march=native"], ["-O3"]):  # -march=native is unknown to some compilers
            command = [compiler, *flags, "-shared", "-fPIC", "-pthread", "-o", target, source]
            try:
                subprocess.run(command, check=True, capture_output=True, timeout=120)
                break
            except (OSError, subprocess.SubprocessError):
                continue
        else:
            return None
        library = ctypes.CDLL(target)  # stays mapped after the file is removed
    except OSError:
        return None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    function = library.gradlens_grad_sums
    function.restype = None
    function.argtypes = [ctypes.c_int64, *[ctypes.c_void_p] * 4, ctypes.c_void_p, ctypes.c_void_p,
                         ctypes.c_int32, ctypes.c_void_p, ctypes.c_int32, ctypes.c_double, ctypes.c_double,
                         ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p]
    library.gradlens_grad_stats.restype = None
    library.gradlens_grad_stats.argtypes = [*function.argtypes, ctypes.c_void_p]
    library.gradlens_finalize.restype = None
    library.gradlens_finalize.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    return library if _self_check(library) else None


def reference_slot(value: float) -> int:
    """The exponent slot of one value (:mod:`~gradlens.probes.grad_exponents`) from ``math.frexp``, not from bits:
    the kernel's self-check compares against it."""
    if math.isnan(value) or math.isinf(value):
        return grad_exponents.NONFINITE
    if value == 0:
        return grad_exponents.ZERO
    exponent = math.frexp(abs(value))[1] - 1  # |value| = mantissa · 2^(exponent + 1), 0.5 <= mantissa < 1
    magnitude = min(max(exponent - grad_exponents.LOWEST + 1, 0), grad_exponents.MAGNITUDES - 1)
    return magnitude + (grad_exponents.MAGNITUDES if value > 0 else 0)


def _self_check(library: ctypes.CDLL) -> bool:
    """The kernel gives the exact known sums, maximum, bins and exponent slots of three small tensors."""
    special = torch.tensor([-2, -1, -0.5, -0.25, 0, 0.5, 1, 1.5, math.nan, math.inf, -math.inf, 0.9999])
    plain = torch.arange(-50, 51, dtype=torch.float32) / 8  # Σ 0, Σ|v| 318.75, Σv² 1341.40625, max 6.25
    edges = torch.tensor([-0.0, 2.0**-70, 1e-30, 2.0**-64, 2.0**15, 2.0**16, 1e300], dtype=torch.float64)
    sums, maxima = torch.zeros(3, COLUMNS, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    counts = torch.zeros(3, 7, dtype=torch.int64)
    slots = torch.zeros(3, grad_exponents.SLOTS, dtype=torch.int64)
    histogram = Histogram(torch.linspace(-1, 1, 5, dtype=torch.float64))
    batch = Batch()
    for row, values in enumerate((special, plain, edges)):
        batch.add(row, values)
    _call_batch(library, batch, sums, maxima, histogram, counts, slots, threads=2)
    expected_slots = torch.zeros_like(slots)
    for row, values in enumerate((special, plain, edges)):
        for value in values.tolist():
            expected_slots[row, reference_slot(value)] += 1
    return (
        math.isnan(sums[0, 0]) and sums[0, 3:].tolist() == [12, 3, 1, 1] and maxima[:2].tolist() == [math.inf, 6.25]
        and sums[1].tolist() == [0, 318.75, 1341.40625, 101, 0, 0, 1]
        and counts[:2].tolist() == [[2, 1, 2, 1, 3, 2, 1], [42, 4, 4, 4, 5, 42, 0]]
        and torch.equal(slots, expected_slots)
    )


def library() -> ctypes.CDLL | None:
    """The loaded kernel, built at the first call in this process; None when it cannot be used here."""
    global _library, _tried
    if not _tried:
        with _lock:
            if not _tried:
                try:
                    _library = _build()
                except Exception:  # a kernel that cannot be built must never stop training
                    _library = None
                _tried = True
    return _library


class Histogram:
    """Bin edges prepared for counting: the slot table ``slots`` (``ep`` in ``_SOURCE``) and, for uniform edges,
    the scale of the first guess (``(v - e_0) · scale + 1``, at most one slot off).

    Args:
        edges: increasing float64 bin edges ``e_0 < ... < e_K`` (CPU).
    """

    def __init__(self, edges: torch.Tensor) -> None:
        values = [float(e) for e in edges.tolist()]
        self.bins = len(values) - 1
        self.first = values[0]
        width = (values[-1] - values[0]) / self.bins
        self.scale = 1.0 / width
        # uniform when every edge sits within a thousandth of a bin of the evenly spaced one
        self.uniform = all(abs(e - (values[0] + i * width)) <= 1e-3 * width for i, e in enumerate(values))
        self.slots = torch.tensor(
            [-math.inf, *values[:-1], math.nextafter(values[-1], math.inf), math.inf, math.inf], dtype=torch.float64
        )
        # the slot that holds 0.0 (the torch route's zero padding is taken back out of it)
        self.zero_slot = bisect.bisect_right(self.slots.tolist()[: self.bins + 2], 0.0) - 1
        self._placed = {self.slots.device: self.slots}

    def slots_on(self, device: torch.device) -> torch.Tensor:
        """``slots`` on ``device``, copied there once."""
        if device not in self._placed:
            self._placed[device] = self.slots.to(device)
        return self._placed[device]


def _bounds(numels: list[int], threads: int) -> list[int]:
    """Split consecutive tensors between ``threads`` so that each gets about the same number of entries."""
    bounds = [0]
    if threads > 1 and len(numels) > 1:
        running, share = 0, sum(numels) / min(threads, len(numels))
        for index, n in enumerate(numels[:-1]):
            running += n
            if running >= share * len(bounds) and len(bounds) < threads:
                bounds.append(index + 1)
    bounds.append(len(numels))
    return bounds


def _histogram_arguments(histogram: Histogram | None, counts: torch.Tensor | None) -> tuple:
    """The kernel's K, ep, uniform, e0, scale, counts arguments (K = 0: no histogram)."""
    if histogram is None:
        return 0, None, 0, 0.0, 0.0, None
    return (histogram.bins, histogram.slots.data_ptr(), int(histogram.uniform), histogram.first, histogram.scale,
            counts.data_ptr())


def _address(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _threads(entries: int) -> int:
    """Threads for a call that reads ``entries`` gradient entries in all."""
    return torch.get_num_threads() if entries >= THREADED_ENTRIES else 1


class Batch:
    """The gradients one kernel call reads: their addresses, sizes, output rows and dtype codes."""

    def __init__(self) -> None:
        self.pointers: list[int] = []
        self.numels: list[int] = []
        self.rows: list[int] = []
        self.dtypes: list[int] = []
        self.keep: list[torch.Tensor] = []  # converted copies stay alive until the call returns

    def add(self, row: int, grad: torch.Tensor) -> bool:
        """Take ``grad`` (a CPU tensor) for ``row``; False when the kernel cannot read it (the torch route will)."""
        code = DTYPES.get(grad.dtype)
        if code is None or not grad.is_contiguous() or grad.is_neg():
            if grad.dtype not in ACCEPTS:
                return False
            # float16 -> float32 is exact: every value, and so its exponent slot, is kept
            grad = grad.float() if grad.dtype == torch.float16 else grad.resolve_neg().contiguous()
            code = DTYPES[grad.dtype]
            self.keep.append(grad)
        self.pointers.append(grad.data_ptr())
        self.numels.append(grad.numel())
        self.rows.append(row)
        self.dtypes.append(code)
        return True


class Plan:
    """A fixed list of gradients that the kernel reads whole at every firing (the common case: every covered
    parameter has a contiguous CPU gradient of a kernel dtype, or none at all). Sizes, rows, dtype codes (-1 for a
    parameter without a gradient) and the split between threads are kept; a firing checks that the gradients
    still match (plain tensors, same dtypes and sizes, contiguous, not lazily negated, on the CPU; None where None
    was) and passes only their new addresses: no per-gradient Python beyond those checks.
    """

    def __init__(self, grads: list[torch.Tensor | None]) -> None:
        self.size = len(grads)
        self.types = list(map(type, grads))
        self.present = [row for row, g in enumerate(grads) if g is not None]
        present = [grads[row] for row in self.present]
        self._pick = operator.itemgetter(*self.present) if len(self.present) > 1 else None
        self.dtypes = [g.dtype for g in present]
        self.numels = [g.numel() for g in present]
        self.device = [True] * len(present)
        numels, codes = [0] * self.size, [-1] * self.size
        for row, g in zip(self.present, present, strict=True):
            numels[row], codes[row] = g.numel(), DTYPES[g.dtype]
        self._all_numels = numels
        self._arrays = [array.array("q", values) for values in (numels, range(self.size), codes)]
        self._addresses = [values.buffer_info()[0] for values in self._arrays]
        self.entries = sum(numels)
        self._bounds: dict[int, array.array] = {}
        self.buffers = (torch.empty((self.size, COLUMNS), dtype=torch.float64),
                        torch.empty(self.size, dtype=torch.float64))
        self._counts: torch.Tensor | None = None
        self._read = array.array("q", bytes(8 * self.size))  # the addresses grad_reader writes
        grad_reader.start()

    def counts(self, width: int) -> torch.Tensor:
        """A zeroed int64 [rows, width] buffer for histogram slot counts, reused between firings."""
        if self._counts is None or self._counts.shape[1] != width:
            self._counts = torch.zeros((self.size, width), dtype=torch.int64)
        else:
            self._counts.zero_()
        return self._counts

    @staticmethod
    def misfit(grads: list[torch.Tensor | None]) -> int | None:
        """The index of the first gradient the kernel cannot read as it is (a GPU tensor, a subclass, float16, a
        strided or lazily negated layout), or None when a plan fits them all (None gradients fit)."""
        for index, g in enumerate(grads):
            if g is not None and (type(g) is not torch.Tensor or not g.is_cpu or g.dtype not in DTYPES
                                  or not g.is_contiguous() or g.is_neg()):
                return index
        return None

    @classmethod
    def build(cls, grads: list[torch.Tensor | None]) -> Plan | None:
        """A plan for ``grads``, or None when one of them is not something the kernel reads as it is."""
        return cls(grads) if grads and cls.misfit(grads) is None else None

    def read(self, parameters: list[torch.Tensor]) -> array.array | None:
        """The addresses of the ``parameters``' gradients, read in one C++ call (:mod:`grad_reader`); None when
        that reader is not loaded (yet) or a gradient no longer matches the plan (then use :meth:`pointers`)."""
        reader = grad_reader.loaded()
        if reader is None or reader(parameters, self.size, self._addresses[0], self._addresses[2],
                                    self._read.buffer_info()[0]) != self.size:
            return None
        return self._read

    def pointers(self, grads: list[torch.Tensor | None]) -> array.array | None:
        """The gradients' addresses (0 where there is none), or None when they no longer match the plan."""
        if len(grads) != self.size or list(map(type, grads)) != self.types:
            return None
        if len(self.present) == self.size:
            present = grads
        else:
            present = [grads[row] for row in self.present] if self._pick is None else self._pick(grads)
        if (
            list(map(_IS_CPU, present)) != self.device
            or list(map(_DTYPE, present)) != self.dtypes
            or list(map(torch.Tensor.numel, present)) != self.numels
            or not all(map(torch.Tensor.is_contiguous, present))
            or any(map(torch.Tensor.is_neg, present))  # a lazily negated view holds -g in memory
        ):
            return None
        if len(self.present) == self.size:
            return array.array("q", map(torch.Tensor.data_ptr, grads))
        addresses = array.array("q", bytes(8 * self.size))
        for row, address in zip(self.present, map(torch.Tensor.data_ptr, present), strict=True):
            addresses[row] = address
        return addresses

    def run(self, pointers: array.array, histogram: Histogram | None = None, counts: torch.Tensor | None = None,
            slots: torch.Tensor | None = None) -> torch.Tensor:
        """One call: every row's sums into ``self.buffers`` (slot counts into ``counts`` and exponent slot counts
        into ``slots``, both zeroed by the caller), then the statistics, returned as a fresh float64 [5, rows]
        tensor (``grad_stats.finalize``'s formulas)."""
        threads = _threads(self.entries)
        if threads not in self._bounds:
            self._bounds[threads] = array.array("q", _bounds(self._all_numels, threads))
        out = torch.empty((5, self.size), dtype=torch.float64)
        sums, maxima = self.buffers
        bounds = self._bounds[threads]
        library().gradlens_grad_stats(
            self.size, pointers.buffer_info()[0], *self._addresses, sums.data_ptr(), maxima.data_ptr(),
            *_histogram_arguments(histogram, counts), _address(slots), len(bounds) - 1, bounds.buffer_info()[0],
            out.data_ptr(),
        )
        return out


_IS_CPU = operator.attrgetter("is_cpu")
_DTYPE = operator.attrgetter("dtype")


def finalize(sums: torch.Tensor, maxima: torch.Tensor) -> torch.Tensor:
    """``grad_stats.finalize`` in one call for contiguous CPU float64 ``sums``/``maxima``: the [5, R] statistics."""
    out = torch.empty((5, sums.shape[0]), dtype=torch.float64)
    library().gradlens_finalize(sums.shape[0], sums.data_ptr(), maxima.data_ptr(), out.data_ptr())
    return out


def grad_sums(batch: Batch, sums: torch.Tensor, maxima: torch.Tensor, histogram: Histogram | None = None,
              counts: torch.Tensor | None = None, slots: torch.Tensor | None = None) -> None:
    """Fill the rows of ``batch`` in ``sums`` ([R, 7] float64), ``maxima`` ([R]), ``counts`` ([R, K + 3] int64) and
    ``slots`` ([R, grad_exponents.SLOTS] int64, the exponent slot counts).

    ``counts`` and ``slots`` must be zeroed; ``library()`` must not be None. Large batches are split between threads.
    """
    _call_batch(library(), batch, sums, maxima, histogram, counts, slots, _threads(sum(batch.numels)))


def _call_batch(library: ctypes.CDLL, batch: Batch, sums: torch.Tensor, maxima: torch.Tensor,
                histogram: Histogram | None, counts: torch.Tensor | None, slots: torch.Tensor | None,
                threads: int) -> None:
    """One kernel call over the rows of ``batch``, split between ``threads``."""
    arrays = [array.array("q", values) for values in (batch.pointers, batch.numels, batch.rows, batch.dtypes)]
    bounds = array.array("q", _bounds(batch.numels, threads))
    library.gradlens_grad_sums(
        len(batch.rows), *(values.buffer_info()[0] for values in arrays), sums.data_ptr(), maxima.data_ptr(),
        *_histogram_arguments(histogram, counts), _address(slots), len(bounds) - 1, bounds.buffer_info()[0],
    )
