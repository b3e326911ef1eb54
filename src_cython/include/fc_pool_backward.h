/* NHWC max pooling with the argmax, and its backward (scatter-add), per dtype.
 *
 * fc_maxpool_argmax_row_*: one output row (n, oh) of max pooling that also
 * records, for each output, the per-image flat index (h*W + w)*C + c of the
 * first maximum in window order (row by row, then column by column).  Taps in
 * the padding are skipped; a NaN counts as larger than any number, and the
 * first NaN wins (the output is that NaN, as the forward max pool propagates
 * it).  A window with no tap inside the input gives -inf and index -1.  The
 * loops run over contiguous channels with
 * branch-free selects, so the compiler vectorizes them.
 *
 * fc_maxpool_scatter_*: grad[idx[i] - base] += dy[i] for i in [i0, i1), in
 * index order; entries whose index lies outside [base, base + size) are
 * skipped and counted (the return value).  Callers run one call per image, so
 * no two threads write the same element.
 */
#ifndef FASTCONV_FC_POOL_BACKWARD_H
#define FASTCONV_FC_POOL_BACKWARD_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include "fc_cpu.h"
#include "fc_window.h"

#define FC_ARGMAX_ROW_DEFINE(T, NAME, ATTR)                                                  \
ATTR static inline void NAME(                                                                \
        const T *x, T *y, int64_t *idx, ptrdiff_t H, ptrdiff_t W, ptrdiff_t C,              \
        int KH, int KW, int SH, int SW, int DH, int DW, int top, int left,                  \
        ptrdiff_t OW, ptrdiff_t oh) {                                                        \
    const ptrdiff_t h0 = oh * SH - top;                                                      \
    const int kh_lo = fc_first_tap(h0, DH), kh_hi = fc_end_tap(h0, DH, KH, H);              \
    for (ptrdiff_t ow = 0; ow < OW; ow++) {                                                  \
        const ptrdiff_t w0 = ow * SW - left;                                                 \
        const int kw_lo = fc_first_tap(w0, DW), kw_hi = fc_end_tap(w0, DW, KW, W);          \
        T *yp = y + ow * C;                                                                  \
        int64_t *ip = idx + ow * C;                                                          \
        if (kh_hi <= kh_lo || kw_hi <= kw_lo) {                                              \
            for (ptrdiff_t c = 0; c < C; c++) { yp[c] = -(T)INFINITY; ip[c] = -1; }         \
            continue;                                                                        \
        }                                                                                    \
        int first = 1;                                                                       \
        for (int kh = kh_lo; kh < kh_hi; kh++) {                                             \
            const ptrdiff_t ih = h0 + (ptrdiff_t)kh * DH;                                    \
            for (int kw = kw_lo; kw < kw_hi; kw++) {                                         \
                const ptrdiff_t iw = w0 + (ptrdiff_t)kw * DW;                                \
                const int64_t at = (int64_t)(ih * W + iw) * C;                               \
                const T *tap = x + at;                                                       \
                if (first) {                                                                 \
                    for (ptrdiff_t c = 0; c < C; c++) { yp[c] = tap[c]; ip[c] = at + c; }    \
                    first = 0;                                                               \
                    continue;                                                                \
                }                                                                            \
                for (ptrdiff_t c = 0; c < C; c++) {                                          \
                    const T v = tap[c], m = yp[c];                                           \
                    const int take = (m == m) & ((v > m) | (v != v));                        \
                    yp[c] = take ? v : m;                                                    \
                    ip[c] = take ? at + c : ip[c];                                           \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
    }                                                                                        \
}

#define FC_POOL_SCATTER_DEFINE(T, SUFFIX)                                                    \
static inline ptrdiff_t fc_maxpool_scatter_##SUFFIX(                                         \
        const T *dy, const int64_t *index, T *grad, ptrdiff_t i0, ptrdiff_t i1,             \
        int64_t base, int64_t size) {                                                        \
    ptrdiff_t bad = 0;                                                                       \
    for (ptrdiff_t i = i0; i < i1; i++) {                                                    \
        const int64_t j = index[i] - base;                                                   \
        if (j < 0 || j >= size) { bad++; continue; }                                         \
        grad[j] += dy[i];                                                                    \
    }                                                                                        \
    return bad;                                                                              \
}

/* The argmax row per dtype and SIMD level: the same C, compiled for AVX-512 and
 * AVX2 with target attributes (no -march), where the compiler vectorizes the
 * float compare and the int64 select together; the caller passes the level. */
FC_ARGMAX_ROW_DEFINE(float, fc_maxpool_argmax_row_f32_generic, )
FC_ARGMAX_ROW_DEFINE(double, fc_maxpool_argmax_row_f64_generic, )
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FC_ARGMAX_X86 1
FC_ARGMAX_ROW_DEFINE(float, fc_maxpool_argmax_row_f32_avx2, __attribute__((target("avx2,fma"))))
FC_ARGMAX_ROW_DEFINE(double, fc_maxpool_argmax_row_f64_avx2, __attribute__((target("avx2,fma"))))
FC_ARGMAX_ROW_DEFINE(float, fc_maxpool_argmax_row_f32_avx512,
                     __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma"))))
FC_ARGMAX_ROW_DEFINE(double, fc_maxpool_argmax_row_f64_avx512,
                     __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma"))))
#else
#define FC_ARGMAX_X86 0
#endif
#undef FC_ARGMAX_ROW_DEFINE

#define FC_ARGMAX_ARGS(T) const T *x, T *y, int64_t *idx, ptrdiff_t H, ptrdiff_t W, \
    ptrdiff_t C, int KH, int KW, int SH, int SW, int DH, int DW, int top, int left, \
    ptrdiff_t OW, ptrdiff_t oh, int simd
#define FC_ARGMAX_PASS x, y, idx, H, W, C, KH, KW, SH, SW, DH, DW, top, left, OW, oh

/* One output row (n, oh) with its argmax; dispatch on the SIMD level (FC_SIMD_*). */
static inline void fc_maxpool_argmax_row_f32(FC_ARGMAX_ARGS(float)) {
#if FC_ARGMAX_X86
    if (simd >= FC_SIMD_AVX512) { fc_maxpool_argmax_row_f32_avx512(FC_ARGMAX_PASS); return; }
    if (simd >= FC_SIMD_AVX2) { fc_maxpool_argmax_row_f32_avx2(FC_ARGMAX_PASS); return; }
#endif
    fc_maxpool_argmax_row_f32_generic(FC_ARGMAX_PASS);
}

static inline void fc_maxpool_argmax_row_f64(FC_ARGMAX_ARGS(double)) {
#if FC_ARGMAX_X86
    if (simd >= FC_SIMD_AVX512) { fc_maxpool_argmax_row_f64_avx512(FC_ARGMAX_PASS); return; }
    if (simd >= FC_SIMD_AVX2) { fc_maxpool_argmax_row_f64_avx2(FC_ARGMAX_PASS); return; }
#endif
    fc_maxpool_argmax_row_f64_generic(FC_ARGMAX_PASS);
}
#undef FC_ARGMAX_ARGS
#undef FC_ARGMAX_PASS

FC_POOL_SCATTER_DEFINE(float, f32)
FC_POOL_SCATTER_DEFINE(double, f64)
#undef FC_POOL_SCATTER_DEFINE

#endif
