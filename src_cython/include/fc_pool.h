/* NHWC max pooling, vectorized across channels, one output row per call.
 *
 * out[n, oh, ow, c] = max over the window taps inside the input of
 *   x[n, oh*SH - top + kh*DH, ow*SW - left + kw*DW, c].
 * Taps in the padding are skipped (the valid kh/kw range is computed once per
 * row/column), so padding is never picked.  NaN propagates: the lane-wise
 * maximum is paired with an "unordered" comparison mask that marks every
 * lane that met a NaN, and those lanes are written as NaN at the end -- MAXPS
 * alone would drop a NaN held in its first operand (Intel SDM, "MAXPS").
 * A full 2x2 window takes a branch-free path (4 loads, 3 max).  With fewer
 * channels than a vector holds, a row is instead vectorized along W (the
 * narrow path of fc_pool_impl.h: a vertical then a horizontal maximum over
 * contiguous runs of the row), with the same NaN rule.
 *
 * The kernel body lives in fc_pool_impl.h and is instantiated per dtype and
 * SIMD level (AVX-512, AVX2+FMA, portable C) with GCC target attributes; the
 * caller picks the level at run time (fc_cpu.h).
 */
#ifndef FASTCONV_FC_POOL_H
#define FASTCONV_FC_POOL_H

#include <math.h>
#include <stddef.h>
#include "fc_cpu.h"
#include "fc_window.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define FC_POOL_X86 1
#else
#define FC_POOL_X86 0
#endif

/* Elements of the narrow path's scratch row (on the stack, per output row). */
#define FC_POOL_NARROW_BUF 2048

/* Whether a row with C channels (`narrow`: C below the path's threshold)
 * takes the narrow path: one window's span must fit half the scratch row, and
 * windows must touch or overlap (SW <= KW*DW), else the vertical pass would
 * read columns no window uses. */
static inline int fc_maxpool_narrow_fits(ptrdiff_t C, int narrow, int KW, int SW, int DW) {
    return narrow && C > 0 && ((ptrdiff_t)(KW - 1) * DW + 1) * C <= FC_POOL_NARROW_BUF / 2 &&
           (ptrdiff_t)SW <= (ptrdiff_t)KW * DW;
}


/* ---- portable C: a "vector" of one lane ---- */
#define FC_ATTR
#define FC_L 1
#define FC_M int
#define FC_MOR(a, b) ((a) | (b))
#define FC_UNORD(a, b) (((a) != (a)) | ((b) != (b)))
#define FC_MAX(a, b) ((b) > (a) ? (b) : (a))

#define FC_T float
#define FC_V float
#define FC_FN(n) n##_f32_generic
#define FC_LD(p) (*(p))
#define FC_ST(p, v) (*(p) = (v))
#define FC_FIX(v, m) ((m) ? NAN : (v))
#include "fc_pool_impl.h"
#undef FC_T
#undef FC_V
#undef FC_FN

#define FC_T double
#define FC_V double
#define FC_FN(n) n##_f64_generic
#include "fc_pool_impl.h"
#undef FC_T
#undef FC_V
#undef FC_FN
#undef FC_LD
#undef FC_ST
#undef FC_FIX
#undef FC_ATTR
#undef FC_L
#undef FC_M
#undef FC_MOR
#undef FC_UNORD
#undef FC_MAX

#if FC_POOL_X86
/* ---- AVX-512: masks in k registers ---- */
#define FC_ATTR __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define FC_MOR(a, b) ((a) | (b))
#define FC_MZERO 0

#define FC_T float
#define FC_V __m512
#define FC_M __mmask16
#define FC_L 16
#define FC_FN(n) n##_f32_avx512
#define FC_LD(p) _mm512_loadu_ps(p)
#define FC_ST(p, v) _mm512_storeu_ps((p), (v))
#define FC_MAX(a, b) _mm512_max_ps((a), (b))
#define FC_UNORD(a, b) _mm512_cmp_ps_mask((a), (b), _CMP_UNORD_Q)
#define FC_FIX(v, m) _mm512_mask_mov_ps((v), (m), _mm512_set1_ps(NAN))
#include "fc_pool_impl.h"
#undef FC_T
#undef FC_V
#undef FC_M
#undef FC_L
#undef FC_FN
#undef FC_LD
#undef FC_ST
#undef FC_MAX
#undef FC_UNORD
#undef FC_FIX

#define FC_T double
#define FC_V __m512d
#define FC_M __mmask8
#define FC_L 8
#define FC_FN(n) n##_f64_avx512
#define FC_LD(p) _mm512_loadu_pd(p)
#define FC_ST(p, v) _mm512_storeu_pd((p), (v))
#define FC_MAX(a, b) _mm512_max_pd((a), (b))
#define FC_UNORD(a, b) _mm512_cmp_pd_mask((a), (b), _CMP_UNORD_Q)
#define FC_FIX(v, m) _mm512_mask_mov_pd((v), (m), _mm512_set1_pd(NAN))
#include "fc_pool_impl.h"
#undef FC_T
#undef FC_V
#undef FC_M
#undef FC_L
#undef FC_FN
#undef FC_LD
#undef FC_ST
#undef FC_MAX
#undef FC_UNORD
#undef FC_FIX
#undef FC_ATTR
#undef FC_MOR
#undef FC_MZERO

/* ---- AVX2: masks as all-ones vector lanes ---- */
#define FC_ATTR __attribute__((target("avx2,fma")))

#define FC_T float
#define FC_V __m256
#define FC_M __m256
#define FC_L 8
#define FC_FN(n) n##_f32_avx2
#define FC_LD(p) _mm256_loadu_ps(p)
#define FC_ST(p, v) _mm256_storeu_ps((p), (v))
#define FC_MAX(a, b) _mm256_max_ps((a), (b))
#define FC_UNORD(a, b) _mm256_cmp_ps((a), (b), _CMP_UNORD_Q)
#define FC_MOR(a, b) _mm256_or_ps((a), (b))
#define FC_FIX(v, m) _mm256_blendv_ps((v), _mm256_set1_ps(NAN), (m))
#include "fc_pool_impl.h"
#undef FC_T
#undef FC_V
#undef FC_M
#undef FC_L
#undef FC_FN
#undef FC_LD
#undef FC_ST
#undef FC_MAX
#undef FC_UNORD
#undef FC_MOR
#undef FC_FIX

#define FC_T double
#define FC_V __m256d
#define FC_M __m256d
#define FC_L 4
#define FC_FN(n) n##_f64_avx2
#define FC_LD(p) _mm256_loadu_pd(p)
#define FC_ST(p, v) _mm256_storeu_pd((p), (v))
#define FC_MAX(a, b) _mm256_max_pd((a), (b))
#define FC_UNORD(a, b) _mm256_cmp_pd((a), (b), _CMP_UNORD_Q)
#define FC_MOR(a, b) _mm256_or_pd((a), (b))
#define FC_FIX(v, m) _mm256_blendv_pd((v), _mm256_set1_pd(NAN), (m))
#include "fc_pool_impl.h"
#undef FC_T
#undef FC_V
#undef FC_M
#undef FC_L
#undef FC_FN
#undef FC_LD
#undef FC_ST
#undef FC_MAX
#undef FC_UNORD
#undef FC_MOR
#undef FC_FIX
#undef FC_ATTR
#endif

#define FC_POOL_ARGS const void *x, void *y, ptrdiff_t H, ptrdiff_t W, ptrdiff_t C, \
    int KH, int KW, int SH, int SW, int DH, int DW, int top, int left, ptrdiff_t OW, ptrdiff_t oh
#define FC_POOL_PASS H, W, C, KH, KW, SH, SW, DH, DW, top, left, OW, oh

/* Pool output row oh of one image; dispatch on the SIMD level (FC_SIMD_*). */
static inline void fc_maxpool_row_f32(FC_POOL_ARGS, int simd) {
#if FC_POOL_X86
    if (simd >= FC_SIMD_AVX512) {
        fc_maxpool_row_f32_avx512((const float *)x, (float *)y, FC_POOL_PASS); return;
    }
    if (simd >= FC_SIMD_AVX2) {
        fc_maxpool_row_f32_avx2((const float *)x, (float *)y, FC_POOL_PASS); return;
    }
#endif
    fc_maxpool_row_f32_generic((const float *)x, (float *)y, FC_POOL_PASS);
}

static inline void fc_maxpool_row_f64(FC_POOL_ARGS, int simd) {
#if FC_POOL_X86
    if (simd >= FC_SIMD_AVX512) {
        fc_maxpool_row_f64_avx512((const double *)x, (double *)y, FC_POOL_PASS); return;
    }
    if (simd >= FC_SIMD_AVX2) {
        fc_maxpool_row_f64_avx2((const double *)x, (double *)y, FC_POOL_PASS); return;
    }
#endif
    fc_maxpool_row_f64_generic((const double *)x, (double *)y, FC_POOL_PASS);
}

#endif
