"""A fused CPU kernel for GradStats: one read of each gradient gives all of its sums.

For every gradient g (n entries) the kernel makes one pass that accumulates, in float64 with 16 independent
lanes per 4096-entry block (so the compiler vectorises it and the rounding error stays ~1e-16 · Σ|g|):

    Σg,  Σ|g|,  Σg²,  max |g| over the non-NaN entries,

and, only when Σ|g| or Σg² came out non-finite, a second pass counts the NaN and ±Inf entries. With a
histogram it makes one more pass that sorts each entry into a slot (see ``_SOURCE``), with the bin edges
compared in float64, so a float32 entry lands in exactly the bin ``numpy.histogram`` gives it.

The torch route (``grad_stats._torch_sums``) needs 5-6 passes and a copy of the gradient to get the same sums
(``sum(dtype=float64)`` converts the whole tensor first), and on a thin MLP with 126 parameter tensors its
per-operation dispatch alone costs more than the 5 % overhead budget. The kernel is plain C (no torch
headers), compiled once per process with the system C compiler (``$CC``, else ``cc``/``gcc``; ~0.3 s at the
first firing) into a temporary folder and loaded with ``ctypes``. It runs on CPU tensors of float32, float64
and bfloat16 (float16 is converted to float32 first) and splits large inputs across ``torch.get_num_threads()``
POSIX threads. Anything else — no compiler, a failed build, a library whose self-check against torch
disagrees, ``GRADLENS_KERNEL=0`` in the environment, GPU tensors, DTensors — takes the torch route, which
computes the same quantities.
"""

from __future__ import annotations

import array
import ctypes
import math
import operator
import os
import shutil
import subprocess
import tempfile
import threading

import torch

from gradlens.probes import grad_reader

DTYPES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2}
ACCEPTS = (*DTYPES, torch.float16)  # float16 is converted to float32 before the call
COLUMNS = 7  # Σg, Σ|g|, Σg², n, non-finite count, NaN count, present (1 where the row has a gradient)
THREADED_ENTRIES = 1 << 20  # below this many entries in all, one thread does everything

_SOURCE = r"""
#include <math.h>
#include <pthread.h>
#include <stdint.h>

#define LANES 16
#define BLOCK 4096
#define CHUNK 1024

static inline float bf16(uint16_t h) { union { uint32_t u; float f; } c; c.u = (uint32_t)h << 16; return c.f; }
#define SAME(x) (x)

/* row[0..6] = Σv, Σ|v|, Σv², n, #non-finite, #NaN, 1; *top = max |v| over non-NaN v (0 when none). */
#define SUMS(LOAD)                                                                                  \
    double total[3] = {0.0, 0.0, 0.0}, top = 0.0;                                                   \
    int64_t i = 0;                                                                                  \
    while (i < n) {                                                                                 \
        int64_t stop = n - i < BLOCK ? n : i + BLOCK;                                               \
        double s[LANES] = {0}, a[LANES] = {0}, q[LANES] = {0}, m[LANES] = {0};                      \
        for (; i + LANES <= stop; i += LANES)                                                       \
            for (int k = 0; k < LANES; k++) {                                                       \
                double v = (double)LOAD(p[i + k]), w = fabs(v);                                     \
                s[k] += v; a[k] += w; q[k] += v * v; m[k] = w > m[k] ? w : m[k];                    \
            }                                                                                       \
        for (; i < stop; i++) {                                                                     \
            double v = (double)LOAD(p[i]), w = fabs(v);                                             \
            s[0] += v; a[0] += w; q[0] += v * v; m[0] = w > m[0] ? w : m[0];                        \
        }                                                                                           \
        for (int k = 0; k < LANES; k++) {                                                           \
            total[0] += s[k]; total[1] += a[k]; total[2] += q[k]; top = m[k] > top ? m[k] : top;    \
        }                                                                                           \
    }                                                                                               \
    int64_t nan = 0, inf = 0;                                                                       \
    if (!isfinite(total[1]) || !isfinite(total[2]))                                                 \
        for (int64_t j = 0; j < n; j++) {                                                           \
            double v = (double)LOAD(p[j]);                                                          \
            nan += v != v; inf += fabs(v) == INFINITY;                                              \
        }                                                                                           \
    row[0] = total[0]; row[1] = total[1]; row[2] = total[2]; row[3] = (double)n;                    \
    row[4] = (double)(nan + inf); row[5] = (double)nan; row[6] = 1.0; *maximum = top;

/* Histogram slots: 0 below e_0 (-Inf too), j = 1..K the bin [e_{j-1}, e_j) (the last one closed),
   K + 1 above e_K (+Inf too), K + 2 NaN. ep[j] is the smallest value of slot j: ep[0] = -Inf,
   ep[j] = e_{j-1} for j = 1..K, ep[K+1] = the double after e_K, ep[K+2] = ep[K+3] = +Inf. With uniform
   edges a guess from (v - e_0) * K / (e_K - e_0) is at most one slot off and is corrected against ep. */
#define HIST(LOAD)                                                                                  \
    int32_t slots[CHUNK];                                                                           \
    double last = K + 1;                                                                            \
    for (int64_t i = 0; i < n; i += CHUNK) {                                                        \
        int64_t size = n - i < CHUNK ? n - i : CHUNK;                                               \
        if (uniform) {                                                                              \
            for (int64_t k = 0; k < size; k++) {                                                    \
                double v = (double)LOAD(p[i + k]);                                                  \
                double g = (v - e0) * scale + 1.0;                                                  \
                g = g < 0.0 ? 0.0 : g;                                                              \
                g = g > last ? last : g;                                                            \
                g = v == v ? g : last + 1.0;                                                        \
                int32_t j = (int32_t)g;                                                             \
                j -= v < ep[j];                                                                     \
                j += (v >= ep[j + 1]) & (j <= K);                                                   \
                slots[k] = j;                                                                       \
            }                                                                                       \
        } else {                                                                                    \
            for (int64_t k = 0; k < size; k++) {                                                    \
                double v = (double)LOAD(p[i + k]);                                                  \
                int32_t lo = 0, hi = K + 1;                                                         \
                while (lo < hi) {                                                                   \
                    int32_t mid = (lo + hi + 1) / 2;                                                \
                    if (v >= ep[mid]) lo = mid; else hi = mid - 1;                                  \
                }                                                                                   \
                slots[k] = v == v ? lo : K + 2;                                                     \
            }                                                                                       \
        }                                                                                           \
        for (int64_t k = 0; k < size; k++) counts[slots[k]]++;                                      \
    }

#define ARGS int64_t n, double* row, double* maximum
#define HARGS int64_t n, int32_t K, const double* ep, int32_t uniform, double e0, double scale, int64_t* counts
static void sums_f32(const float* p, ARGS) { SUMS(SAME) }
static void sums_f64(const double* p, ARGS) { SUMS(SAME) }
static void sums_bf16(const uint16_t* p, ARGS) { SUMS(bf16) }
static void hist_f32(const float* p, HARGS) { HIST(SAME) }
static void hist_f64(const double* p, HARGS) { HIST(SAME) }
static void hist_bf16(const uint16_t* p, HARGS) { HIST(bf16) }

typedef struct {
    int64_t first, stop; const int64_t *ptrs, *numels, *rows, *dtypes;
    double *sums, *maxima; int32_t K; const double* ep; int32_t uniform; double e0, scale; int64_t* counts;
} Job;

static void* run(void* arg) {
    const Job* b = (const Job*)arg;
    for (int64_t t = b->first; t < b->stop; t++) {
        const void* p = (const void*)b->ptrs[t];
        int64_t n = b->numels[t], r = b->rows[t], dtype = b->dtypes[t];
        double* row = b->sums + 7 * r;
        if (dtype == 0) sums_f32((const float*)p, n, row, b->maxima + r);
        else if (dtype == 1) sums_f64((const double*)p, n, row, b->maxima + r);
        else sums_bf16((const uint16_t*)p, n, row, b->maxima + r);
        if (b->K > 0) {
            int64_t* c = b->counts + (int64_t)(b->K + 3) * r;
            if (dtype == 0) hist_f32((const float*)p, n, b->K, b->ep, b->uniform, b->e0, b->scale, c);
            else if (dtype == 1) hist_f64((const double*)p, n, b->K, b->ep, b->uniform, b->e0, b->scale, c);
            else hist_bf16((const uint16_t*)p, n, b->K, b->ep, b->uniform, b->e0, b->scale, c);
        }
    }
    return 0;
}

/* Tensors t = 0..T-1 (dtypes[t]: 0 float32, 1 float64, 2 bfloat16; contiguous) fill row rows[t] of sums [R, 7],
   maxima [R] and, when K > 0, counts [R, K + 3] (zeroed by the caller). bounds[0..threads] splits the
   tensors between POSIX threads (one thread when threads == 1 or a thread cannot start). */
void gradlens_grad_sums(int64_t T, const int64_t* ptrs, const int64_t* numels, const int64_t* rows,
                        const int64_t* dtypes,
                        double* sums, double* maxima, int32_t K, const double* ep, int32_t uniform, double e0,
                        double scale, int64_t* counts, int32_t threads, const int64_t* bounds) {
    Job jobs[64];
    pthread_t ids[64];
    int started[64] = {0};
    if (threads < 1) threads = 1;
    if (threads > 64) threads = 64;
    for (int w = 0; w < threads; w++) {
        Job job = {bounds[w], bounds[w + 1], ptrs, numels, rows, dtypes, sums, maxima, K, ep, uniform, e0, scale,
                   counts};
        jobs[w] = job;
    }
    for (int w = 1; w < threads; w++) started[w] = pthread_create(&ids[w], 0, run, &jobs[w]) == 0;
    run(&jobs[0]);
    for (int w = 1; w < threads; w++) {
        if (started[w]) pthread_join(ids[w], 0);
        else run(&jobs[w]);
    }
    (void)T;
}

/* statistics [5, R] from sums [R, 7] and maxima [R]: mean, mean |g|, norm, max |g| (NaN where a NaN was
   counted), non-finite count; NaN statistics and non-finite -1 in rows without a gradient. */
void gradlens_finalize(int64_t R, const double* sums, const double* maxima, double* out) {
    for (int64_t r = 0; r < R; r++) {
        const double* s = sums + 7 * r;
        int present = s[6] > 0;
        out[r] = present ? s[0] / s[3] : NAN;
        out[R + r] = present ? s[1] / s[3] : NAN;
        out[2 * R + r] = present ? sqrt(s[2]) : NAN;
        out[3 * R + r] = present ? (s[5] > 0 ? NAN : maxima[r]) : NAN;
        out[4 * R + r] = present ? s[4] : -1.0;
    }
}

/* gradlens_grad_sums over every row, then gradlens_finalize into out: one call per firing. */
void gradlens_grad_stats(int64_t T, const int64_t* ptrs, const int64_t* numels, const int64_t* rows,
                         const int64_t* dtypes, double* sums, double* maxima, int32_t K, const double* ep,
                         int32_t uniform, double e0, double scale, int64_t* counts, int32_t threads,
                         const int64_t* bounds, double* out) {
    gradlens_grad_sums(T, ptrs, numels, rows, dtypes, sums, maxima, K, ep, uniform, e0, scale, counts, threads,
                       bounds);
    gradlens_finalize(T, sums, maxima, out);
}
"""

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
                         ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p]
    library.gradlens_grad_stats.restype = None
    library.gradlens_grad_stats.argtypes = [*function.argtypes, ctypes.c_void_p]
    library.gradlens_finalize.restype = None
    library.gradlens_finalize.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    return library if _self_check(library) else None


def _self_check(library: ctypes.CDLL) -> bool:
    """The kernel gives the exact known sums, maximum and slots of two small tensors."""
    special = torch.tensor([-2, -1, -0.5, -0.25, 0, 0.5, 1, 1.5, math.nan, math.inf, -math.inf, 0.9999])
    plain = torch.arange(-50, 51, dtype=torch.float32) / 8  # Σ 0, Σ|v| 318.75, Σv² 1341.40625, max 6.25
    sums, maxima = torch.zeros(2, COLUMNS, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    counts = torch.zeros(2, 7, dtype=torch.int64)
    histogram = Histogram(torch.linspace(-1, 1, 5, dtype=torch.float64))
    batch = Batch()
    batch.add(0, special)
    batch.add(1, plain)
    _call_batch(library, batch, sums, maxima, histogram, counts, threads=2)
    return (
        math.isnan(sums[0, 0]) and sums[0, 3:].tolist() == [12, 3, 1, 1] and maxima.tolist() == [math.inf, 6.25]
        and sums[1].tolist() == [0, 318.75, 1341.40625, 101, 0, 0, 1]
        and counts.tolist() == [[2, 1, 2, 1, 3, 2, 1], [42, 4, 4, 4, 5, 42, 0]]
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
    parameter has a contiguous CPU gradient of a kernel dtype). Sizes, rows, dtype codes and the split between
    threads are kept; a firing checks that the gradients still match (plain tensors, same dtypes and sizes,
    contiguous, not lazily negated, on the CPU) and passes only their new addresses: no per-gradient Python
    beyond those checks.
    """

    def __init__(self, grads: list[torch.Tensor]) -> None:
        self.size = len(grads)
        self.types = [torch.Tensor] * self.size
        self.dtypes = [g.dtype for g in grads]
        self.numels = [g.numel() for g in grads]
        self.device = [True] * self.size
        self._arrays = [array.array("q", values) for values in
                        (self.numels, range(self.size), [DTYPES[d] for d in self.dtypes])]
        self._addresses = [values.buffer_info()[0] for values in self._arrays]
        self.entries = sum(self.numels)
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

    @classmethod
    def build(cls, grads: list[torch.Tensor | None]) -> Plan | None:
        """A plan for ``grads``, or None when one of them is not something the kernel reads as it is."""
        for g in grads:
            if (type(g) is not torch.Tensor or not g.is_cpu or g.dtype not in DTYPES or not g.is_contiguous()
                    or g.is_neg()):
                return None
        return cls(grads) if grads else None

    def read(self, parameters: list[torch.Tensor]) -> array.array | None:
        """The addresses of the ``parameters``' gradients, read in one C++ call (:mod:`grad_reader`); None when
        that reader is not loaded (yet) or a gradient no longer matches the plan (then use :meth:`pointers`)."""
        reader = grad_reader.loaded()
        if reader is None or reader(parameters, self.size, self._addresses[0], self._addresses[2],
                                    self._read.buffer_info()[0]) != self.size:
            return None
        return self._read

    def pointers(self, grads: list[torch.Tensor | None]) -> array.array | None:
        """The gradients' addresses, or None when they no longer match the plan."""
        if (
            len(grads) != self.size
            or list(map(type, grads)) != self.types
            or list(map(_IS_CPU, grads)) != self.device
            or list(map(_DTYPE, grads)) != self.dtypes
            or list(map(torch.Tensor.numel, grads)) != self.numels
            or not all(map(torch.Tensor.is_contiguous, grads))
            or any(map(torch.Tensor.is_neg, grads))  # a lazily negated view holds -g in memory
        ):
            return None
        return array.array("q", map(torch.Tensor.data_ptr, grads))

    def run(self, pointers: array.array, histogram: Histogram | None = None,
            counts: torch.Tensor | None = None) -> torch.Tensor:
        """One call: every row's sums into ``self.buffers`` (and slot counts into ``counts``, zeroed by the caller),
        then the statistics, returned as a fresh float64 [5, rows] tensor (``grad_stats.finalize``'s formulas)."""
        threads = _threads(self.entries)
        if threads not in self._bounds:
            self._bounds[threads] = array.array("q", _bounds(self.numels, threads))
        out = torch.empty((5, self.size), dtype=torch.float64)
        sums, maxima = self.buffers
        bounds = self._bounds[threads]
        library().gradlens_grad_stats(
            self.size, pointers.buffer_info()[0], *self._addresses, sums.data_ptr(), maxima.data_ptr(),
            *_histogram_arguments(histogram, counts), len(bounds) - 1, bounds.buffer_info()[0], out.data_ptr(),
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
              counts: torch.Tensor | None = None) -> None:
    """Fill the rows of ``batch`` in ``sums`` ([R, 7] float64), ``maxima`` ([R]) and ``counts`` ([R, K + 3] int64).

    ``counts`` must be zeroed; ``library()`` must not be None. Large batches are split between threads.
    """
    _call_batch(library(), batch, sums, maxima, histogram, counts, _threads(sum(batch.numels)))


def _call_batch(library: ctypes.CDLL, batch: Batch, sums: torch.Tensor, maxima: torch.Tensor,
                histogram: Histogram | None, counts: torch.Tensor | None, threads: int) -> None:
    """One kernel call over the rows of ``batch``, split between ``threads``."""
    arrays = [array.array("q", values) for values in (batch.pointers, batch.numels, batch.rows, batch.dtypes)]
    bounds = array.array("q", _bounds(batch.numels, threads))
    library.gradlens_grad_sums(
        len(batch.rows), *(values.buffer_info()[0] for values in arrays), sums.data_ptr(), maxima.data_ptr(),
        *_histogram_arguments(histogram, counts), len(bounds) - 1, bounds.buffer_info()[0],
    )
