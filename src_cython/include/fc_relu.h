/* ReLU, y = max(x, 0), over a contiguous run of floats or doubles.
 *
 * NaN semantics: MAXPS/MAXPD return their SECOND operand when either operand
 * is NaN (Intel SDM, "MAXPS"), so the kernels compute max(0, x) with x
 * second: NaN stays NaN and -inf becomes 0, as tf.nn.relu and torch.relu do.
 * The portable path writes the same rule as a comparison, (0 > v) ? 0 : v.
 *
 * Each SIMD path is a static inline function carrying a GCC target attribute,
 * so the module is built without -march and the caller picks the path at run
 * time from fc_cpu_simd_level() (see fc_cpu.h).  x may equal y (in place).
 */
#ifndef FASTCONV_FC_RELU_H
#define FASTCONV_FC_RELU_H

#include <stddef.h>
#include <stdint.h>
#include "fc_cpu.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define FC_HAVE_X86 1
#define FC_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define FC_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define FC_HAVE_X86 0
#endif

static inline void fc_relu_f32_generic(const float *x, float *y, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) {
        float v = x[i];
        y[i] = (0.0f > v) ? 0.0f : v;
    }
}

static inline void fc_relu_f64_generic(const double *x, double *y, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) {
        double v = x[i];
        y[i] = (0.0 > v) ? 0.0 : v;
    }
}

#if FC_HAVE_X86
FC_TARGET_AVX512 static inline void fc_relu_f32_avx512(const float *x, float *y, ptrdiff_t n) {
    const __m512 z = _mm512_setzero_ps();
    ptrdiff_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + i + 16);
        __m512 c = _mm512_loadu_ps(x + i + 32), d = _mm512_loadu_ps(x + i + 48);
        _mm512_storeu_ps(y + i, _mm512_max_ps(z, a));
        _mm512_storeu_ps(y + i + 16, _mm512_max_ps(z, b));
        _mm512_storeu_ps(y + i + 32, _mm512_max_ps(z, c));
        _mm512_storeu_ps(y + i + 48, _mm512_max_ps(z, d));
    }
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_max_ps(z, _mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(y + i, m, _mm512_max_ps(z, _mm512_maskz_loadu_ps(m, x + i)));
    }
}

FC_TARGET_AVX512 static inline void fc_relu_f64_avx512(const double *x, double *y, ptrdiff_t n) {
    const __m512d z = _mm512_setzero_pd();
    ptrdiff_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512d a = _mm512_loadu_pd(x + i), b = _mm512_loadu_pd(x + i + 8);
        __m512d c = _mm512_loadu_pd(x + i + 16), d = _mm512_loadu_pd(x + i + 24);
        _mm512_storeu_pd(y + i, _mm512_max_pd(z, a));
        _mm512_storeu_pd(y + i + 8, _mm512_max_pd(z, b));
        _mm512_storeu_pd(y + i + 16, _mm512_max_pd(z, c));
        _mm512_storeu_pd(y + i + 24, _mm512_max_pd(z, d));
    }
    for (; i + 8 <= n; i += 8)
        _mm512_storeu_pd(y + i, _mm512_max_pd(z, _mm512_loadu_pd(x + i)));
    if (i < n) {
        __mmask8 m = (__mmask8)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_pd(y + i, m, _mm512_max_pd(z, _mm512_maskz_loadu_pd(m, x + i)));
    }
}

FC_TARGET_AVX2 static inline void fc_relu_f32_avx2(const float *x, float *y, ptrdiff_t n) {
    const __m256 z = _mm256_setzero_ps();
    ptrdiff_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
        __m256 c = _mm256_loadu_ps(x + i + 16), d = _mm256_loadu_ps(x + i + 24);
        _mm256_storeu_ps(y + i, _mm256_max_ps(z, a));
        _mm256_storeu_ps(y + i + 8, _mm256_max_ps(z, b));
        _mm256_storeu_ps(y + i + 16, _mm256_max_ps(z, c));
        _mm256_storeu_ps(y + i + 24, _mm256_max_ps(z, d));
    }
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_max_ps(z, _mm256_loadu_ps(x + i)));
    fc_relu_f32_generic(x + i, y + i, n - i);
}

FC_TARGET_AVX2 static inline void fc_relu_f64_avx2(const double *x, double *y, ptrdiff_t n) {
    const __m256d z = _mm256_setzero_pd();
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256d a = _mm256_loadu_pd(x + i), b = _mm256_loadu_pd(x + i + 4);
        __m256d c = _mm256_loadu_pd(x + i + 8), d = _mm256_loadu_pd(x + i + 12);
        _mm256_storeu_pd(y + i, _mm256_max_pd(z, a));
        _mm256_storeu_pd(y + i + 4, _mm256_max_pd(z, b));
        _mm256_storeu_pd(y + i + 8, _mm256_max_pd(z, c));
        _mm256_storeu_pd(y + i + 12, _mm256_max_pd(z, d));
    }
    for (; i + 4 <= n; i += 4)
        _mm256_storeu_pd(y + i, _mm256_max_pd(z, _mm256_loadu_pd(x + i)));
    fc_relu_f64_generic(x + i, y + i, n - i);
}

/* Streaming variants for a large out-of-place ReLU: non-temporal stores
 * write y without first reading its cache lines (no read-for-ownership), so
 * the memory traffic drops from 3 to 2 passes.  They need 64/32-byte aligned
 * addresses: a masked or scalar head reaches the alignment first.  Only worth
 * it when y does not stay in cache anyway (the caller decides, from the size of
 * the last-level cache). */
FC_TARGET_AVX512 static inline void fc_relu_f32_avx512_stream(const float *x, float *y,
                                                             ptrdiff_t n) {
    const __m512 z = _mm512_setzero_ps();
    ptrdiff_t head = (ptrdiff_t)(((64 - ((uintptr_t)y & 63)) & 63) / sizeof(float));
    if (((uintptr_t)y & 3) || head >= n) { fc_relu_f32_avx512(x, y, n); return; }
    if (head) fc_relu_f32_avx512(x, y, head);
    ptrdiff_t i = head;
    for (; i + 16 <= n; i += 16)
        _mm512_stream_ps(y + i, _mm512_max_ps(z, _mm512_loadu_ps(x + i)));
    _mm_sfence();
    if (i < n) fc_relu_f32_avx512(x + i, y + i, n - i);
}

FC_TARGET_AVX512 static inline void fc_relu_f64_avx512_stream(const double *x, double *y,
                                                             ptrdiff_t n) {
    const __m512d z = _mm512_setzero_pd();
    ptrdiff_t head = (ptrdiff_t)(((64 - ((uintptr_t)y & 63)) & 63) / sizeof(double));
    if (((uintptr_t)y & 7) || head >= n) { fc_relu_f64_avx512(x, y, n); return; }
    if (head) fc_relu_f64_avx512(x, y, head);
    ptrdiff_t i = head;
    for (; i + 8 <= n; i += 8)
        _mm512_stream_pd(y + i, _mm512_max_pd(z, _mm512_loadu_pd(x + i)));
    _mm_sfence();
    if (i < n) fc_relu_f64_avx512(x + i, y + i, n - i);
}

FC_TARGET_AVX2 static inline void fc_relu_f32_avx2_stream(const float *x, float *y, ptrdiff_t n) {
    const __m256 z = _mm256_setzero_ps();
    ptrdiff_t head = (ptrdiff_t)(((32 - ((uintptr_t)y & 31)) & 31) / sizeof(float));
    if (((uintptr_t)y & 3) || head >= n) { fc_relu_f32_avx2(x, y, n); return; }
    if (head) fc_relu_f32_generic(x, y, head);
    ptrdiff_t i = head;
    for (; i + 8 <= n; i += 8)
        _mm256_stream_ps(y + i, _mm256_max_ps(z, _mm256_loadu_ps(x + i)));
    _mm_sfence();
    if (i < n) fc_relu_f32_generic(x + i, y + i, n - i);
}

FC_TARGET_AVX2 static inline void fc_relu_f64_avx2_stream(const double *x, double *y, ptrdiff_t n) {
    const __m256d z = _mm256_setzero_pd();
    ptrdiff_t head = (ptrdiff_t)(((32 - ((uintptr_t)y & 31)) & 31) / sizeof(double));
    if (((uintptr_t)y & 7) || head >= n) { fc_relu_f64_avx2(x, y, n); return; }
    if (head) fc_relu_f64_generic(x, y, head);
    ptrdiff_t i = head;
    for (; i + 4 <= n; i += 4)
        _mm256_stream_pd(y + i, _mm256_max_pd(z, _mm256_loadu_pd(x + i)));
    _mm_sfence();
    if (i < n) fc_relu_f64_generic(x + i, y + i, n - i);
}
#endif

/* Dispatch on the SIMD level chosen by the caller (FC_SIMD_*); with
 * `stream` (out of place only) the SIMD paths use non-temporal stores. */
static inline void fc_relu_f32_nt(const float *x, float *y, ptrdiff_t n, int simd, int stream);
static inline void fc_relu_f64_nt(const double *x, double *y, ptrdiff_t n, int simd, int stream);
static inline void fc_relu_f32(const float *x, float *y, ptrdiff_t n, int simd) {
#if FC_HAVE_X86
    if (simd >= FC_SIMD_AVX512) { fc_relu_f32_avx512(x, y, n); return; }
    if (simd >= FC_SIMD_AVX2) { fc_relu_f32_avx2(x, y, n); return; }
#endif
    fc_relu_f32_generic(x, y, n);
}

static inline void fc_relu_f64(const double *x, double *y, ptrdiff_t n, int simd) {
#if FC_HAVE_X86
    if (simd >= FC_SIMD_AVX512) { fc_relu_f64_avx512(x, y, n); return; }
    if (simd >= FC_SIMD_AVX2) { fc_relu_f64_avx2(x, y, n); return; }
#endif
    fc_relu_f64_generic(x, y, n);
}

static inline void fc_relu_f32_nt(const float *x, float *y, ptrdiff_t n, int simd, int stream) {
#if FC_HAVE_X86
    if (stream && x != y) {
        if (simd >= FC_SIMD_AVX512) { fc_relu_f32_avx512_stream(x, y, n); return; }
        if (simd >= FC_SIMD_AVX2) { fc_relu_f32_avx2_stream(x, y, n); return; }
    }
#endif
    fc_relu_f32(x, y, n, simd);
}

static inline void fc_relu_f64_nt(const double *x, double *y, ptrdiff_t n, int simd, int stream) {
#if FC_HAVE_X86
    if (stream && x != y) {
        if (simd >= FC_SIMD_AVX512) { fc_relu_f64_avx512_stream(x, y, n); return; }
        if (simd >= FC_SIMD_AVX2) { fc_relu_f64_avx2_stream(x, y, n); return; }
    }
#endif
    fc_relu_f64(x, y, n, simd);
}

/* out[r, o] = relu?(out[r, o] + bias[o]) for rows r < rows of a row-major
 * (rows x O) block with leading dimension ldo; bias may be NULL. */
static inline void fc_bias_relu_f32(float *out, ptrdiff_t rows, ptrdiff_t O, ptrdiff_t ldo,
                                    const float *bias, int relu, int simd) {
    for (ptrdiff_t r = 0; r < rows; r++) {
        float *row = out + r * ldo;
        if (bias)
            for (ptrdiff_t o = 0; o < O; o++) row[o] += bias[o];
        if (relu) fc_relu_f32(row, row, O, simd);
    }
}

static inline void fc_bias_relu_f64(double *out, ptrdiff_t rows, ptrdiff_t O, ptrdiff_t ldo,
                                    const double *bias, int relu, int simd) {
    for (ptrdiff_t r = 0; r < rows; r++) {
        double *row = out + r * ldo;
        if (bias)
            for (ptrdiff_t o = 0; o < O; o++) row[o] += bias[o];
        if (relu) fc_relu_f64(row, row, O, simd);
    }
}

#endif
