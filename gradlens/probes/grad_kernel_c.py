"""The C source of GradStats' fused CPU kernel (:mod:`gradlens.probes.grad_kernel` compiles and calls it).

Three entry points, called through ``ctypes``:

- ``gradlens_grad_sums``: per gradient, Σg, Σ|g|, Σg², n, the non-finite and NaN counts and max |g| (one pass,
  float64 lanes), the exponent slot counts of :mod:`gradlens.probes.grad_exponents` (in the same pass, block by
  block) and optional linear-bin counts (one more pass); rows split between POSIX threads;
- ``gradlens_finalize``: the statistics (mean, mean |g|, norm, max |g|, non-finite) from those sums;
- ``gradlens_grad_stats``: both in one call.
"""

SOURCE = r"""
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define LANES 16
#define BLOCK 4096
#define CHUNK 1024
#define MAGS 82                  /* grad_exponents.MAGNITUDES */
#define SLOTS (2 * MAGS + 2)     /* grad_exponents.SLOTS: 82 negative, 82 positive, zero, non-finite */
#define FLUSH_BLOCKS (1 << 18)   /* uint32 sub-histograms go to int64 every 2^30 entries, long before they wrap */

static inline float bf16(uint16_t h) { union { uint32_t u; float f; } c; c.u = (uint32_t)h << 16; return c.f; }
#define SAME(x) (x)

/* Exponent slots (see grad_exponents): 82 s + m for finite non-zero g (s = 0 negative, 1 positive; m = 0 below
   2^-64, e + 65 for 2^e <= |g| < 2^(e+1) with -64 <= e < 16, 81 from 2^16), 164 for ±0, 165 for NaN/±Inf. */
static inline int slot_bits32(uint32_t u) {
    int field = (int)((u >> 23) & 0xFF);
    int m = field - (127 - 65);
    m = m < 0 ? 0 : (m > MAGS - 1 ? MAGS - 1 : m);
    int slot = (u >> 31) ? m : m + MAGS;
    slot = (u << 1) == 0 ? 2 * MAGS : slot;
    return field == 0xFF ? 2 * MAGS + 1 : slot;
}
static inline int slot_f32(float x) { union { float f; uint32_t u; } c; c.f = x; return slot_bits32(c.u); }
static inline int slot_bf16(uint16_t h) { return slot_bits32((uint32_t)h << 16); }
static inline int slot_f64(double x) {
    union { double f; uint64_t u; } c; c.f = x;
    int field = (int)((c.u >> 52) & 0x7FF);
    int m = field - (1023 - 65);
    m = m < 0 ? 0 : (m > MAGS - 1 ? MAGS - 1 : m);
    int slot = (c.u >> 63) ? m : m + MAGS;
    slot = (c.u << 1) == 0 ? 2 * MAGS : slot;
    return field == 0x7FF ? 2 * MAGS + 1 : slot;
}

static void flush_slots(uint32_t (*h)[SLOTS], int64_t* out) {
    for (int s = 0; s < SLOTS; s++) out[s] += (int64_t)h[0][s] + h[1][s] + h[2][s] + h[3][s];
    memset(h, 0, 4 * SLOTS * sizeof(uint32_t));
}

/* row[0..6] = Σv, Σ|v|, Σv², n, #non-finite, #NaN, 1; *maximum = max |v| over non-NaN v (0 when none); with
   slots != 0, the exponent slot counts of the entries are added to slots[0..SLOTS-1]. Each block of BLOCK entries
   is summed with LANES independent lanes (vectorised), then, while it is still in cache, sorted into exponent
   slots: codes first (vectorised), counts next into four sub-histograms (consecutive equal slots do not wait on
   each other's increments). */
#define ROW(NAME, T, LOAD, SLOT)                                                                    \
static void NAME(const T* p, int64_t n, double* row, double* maximum, int64_t* slots) {             \
    double total[3] = {0.0, 0.0, 0.0}, top = 0.0;                                                   \
    uint32_t h[4][SLOTS];                                                                           \
    uint8_t code[BLOCK];                                                                            \
    int64_t blocks = 0;                                                                             \
    if (slots) memset(h, 0, sizeof h);                                                              \
    int64_t i = 0;                                                                                  \
    while (i < n) {                                                                                 \
        int64_t start = i, stop = n - i < BLOCK ? n : i + BLOCK;                                    \
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
        if (slots) {                                                                                \
            int64_t size = stop - start, j = 0;                                                     \
            for (int64_t k = 0; k < size; k++) code[k] = (uint8_t)SLOT(p[start + k]);               \
            for (; j + 4 <= size; j += 4) {                                                         \
                h[0][code[j]]++; h[1][code[j + 1]]++; h[2][code[j + 2]]++; h[3][code[j + 3]]++;     \
            }                                                                                       \
            for (; j < size; j++) h[0][code[j]]++;                                                  \
            if (++blocks == FLUSH_BLOCKS) { flush_slots(h, slots); blocks = 0; }                    \
        }                                                                                           \
    }                                                                                               \
    if (slots) flush_slots(h, slots);                                                               \
    int64_t nan = 0, inf = 0;                                                                       \
    if (!isfinite(total[1]) || !isfinite(total[2]))                                                 \
        for (int64_t j = 0; j < n; j++) {                                                           \
            double v = (double)LOAD(p[j]);                                                          \
            nan += v != v; inf += fabs(v) == INFINITY;                                              \
        }                                                                                           \
    row[0] = total[0]; row[1] = total[1]; row[2] = total[2]; row[3] = (double)n;                    \
    row[4] = (double)(nan + inf); row[5] = (double)nan; row[6] = 1.0; *maximum = top;               \
}

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

#define HARGS int64_t n, int32_t K, const double* ep, int32_t uniform, double e0, double scale, int64_t* counts
ROW(sums_f32, float, SAME, slot_f32)
ROW(sums_f64, double, SAME, slot_f64)
ROW(sums_bf16, uint16_t, bf16, slot_bf16)
static void hist_f32(const float* p, HARGS) { HIST(SAME) }
static void hist_f64(const double* p, HARGS) { HIST(SAME) }
static void hist_bf16(const uint16_t* p, HARGS) { HIST(bf16) }

typedef struct {
    int64_t first, stop; const int64_t *ptrs, *numels, *rows, *dtypes;
    double *sums, *maxima; int32_t K; const double* ep; int32_t uniform; double e0, scale; int64_t *counts, *slots;
} Job;

static void* run(void* arg) {
    const Job* b = (const Job*)arg;
    for (int64_t t = b->first; t < b->stop; t++) {
        const void* p = (const void*)b->ptrs[t];
        int64_t n = b->numels[t], r = b->rows[t], dtype = b->dtypes[t];
        double* row = b->sums + 7 * r;
        int64_t* slots = b->slots ? b->slots + (int64_t)SLOTS * r : 0;
        if (dtype < 0) {  /* a row without a gradient: PRESENT = 0, every sum 0 */
            for (int c = 0; c < 7; c++) row[c] = 0.0;
            b->maxima[r] = 0.0;
            continue;
        }
        if (dtype == 0) sums_f32((const float*)p, n, row, b->maxima + r, slots);
        else if (dtype == 1) sums_f64((const double*)p, n, row, b->maxima + r, slots);
        else sums_bf16((const uint16_t*)p, n, row, b->maxima + r, slots);
        if (b->K > 0) {
            int64_t* c = b->counts + (int64_t)(b->K + 3) * r;
            if (dtype == 0) hist_f32((const float*)p, n, b->K, b->ep, b->uniform, b->e0, b->scale, c);
            else if (dtype == 1) hist_f64((const double*)p, n, b->K, b->ep, b->uniform, b->e0, b->scale, c);
            else hist_bf16((const uint16_t*)p, n, b->K, b->ep, b->uniform, b->e0, b->scale, c);
        }
    }
    return 0;
}

/* Tensors t = 0..T-1 (dtypes[t]: 0 float32, 1 float64, 2 bfloat16, -1 no gradient; contiguous) fill row rows[t] of
   sums [R, 7], maxima [R], when K > 0 counts [R, K + 3], and when slots is not NULL the exponent slot counts
   slots [R, SLOTS] (counts and slots zeroed by the caller). bounds[0..threads] splits the tensors between POSIX
   threads (one thread when threads == 1 or a thread cannot start). */
void gradlens_grad_sums(int64_t T, const int64_t* ptrs, const int64_t* numels, const int64_t* rows,
                        const int64_t* dtypes,
                        double* sums, double* maxima, int32_t K, const double* ep, int32_t uniform, double e0,
                        double scale, int64_t* counts, int64_t* slots, int32_t threads, const int64_t* bounds) {
    Job jobs[64];
    pthread_t ids[64];
    int started[64] = {0};
    if (threads < 1) threads = 1;
    if (threads > 64) threads = 64;
    for (int w = 0; w < threads; w++) {
        Job job = {bounds[w], bounds[w + 1], ptrs, numels, rows, dtypes, sums, maxima, K, ep, uniform, e0, scale,
                   counts, slots};
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
                         int32_t uniform, double e0, double scale, int64_t* counts, int64_t* slots, int32_t threads,
                         const int64_t* bounds, double* out) {
    gradlens_grad_sums(T, ptrs, numels, rows, dtypes, sums, maxima, K, ep, uniform, e0, scale, counts, slots,
                       threads, bounds);
    gradlens_finalize(T, sums, maxima, out);
}
"""
