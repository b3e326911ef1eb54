/* Direct 2-D convolution on NHWC activations: work items and dispatch.
 *
 * out[n, oh, ow, o] = bias[o] + sum_{kh, kw, c} x[n, oh*SH - pt + kh*DH, ow*SW - pl + kw*DW, g*Cg + c]
 *                                              * w[kh, kw, c, o],        g = o / Og
 * with every position outside the input reading as zero.
 *
 * Three kernels, each instantiated for float32/float64 at three SIMD levels
 * (AVX-512, AVX2+FMA, portable C) from one template, fc_conv_direct_impl.h,
 * written against the SIMD vocabulary of fc_simd_<isa>.h with the register tile of
 * each ISA as a parameter (see "Register tiles" below):
 *
 *   FC_KIND_GENERAL   register-blocked tile of UR output pixels x NV vectors of
 *                     output channels (6 x 4 zmm = 24 accumulators for 64 float32
 *                     channels on AVX-512; 3 x 4 ymm = 12 on AVX2, twice per 64
 *                     channels before the next pixels), inner loop kh -> kw -> c: one broadcast
 *                     input value per pixel, NV weight vectors, UR*NV FMAs.  This is
 *                     the loop nest of oneDNN's jit_avx512_common_conv_kernel and of
 *                     Zhang et al., "High Performance Zero-Memory Overhead Direct
 *                     Convolutions", ICML 2018.  Filters are read as HWIO when each
 *                     group's Og is a multiple of the vector width, otherwise from a
 *                     buffer packed once per call as [groups][Og/OB][KH][KW][Cg][OB]
 *                     with a zero-padded tail block (packing is done by the caller).
 *   FC_KIND_DEPTHWISE Cg == 1, Og (the channel multiplier M) < 16: vectors run ACROSS
 *                     channels, which are contiguous in NHWC; UR pixels x NV vectors
 *                     per tile, every block of channels of a pixel tile in turn;
 *                     for M > 1 the input vector is gathered (channel o reads o / M).
 *   FC_KIND_WIDTH     C == O == 1 and SW == 1 (single-channel filter): vectors run
 *                     ACROSS the output width, each tap broadcast against unaligned
 *                     row loads, as OpenCV's filter2D does.
 *
 * Outputs too large for the cache (fc_conv_args.stream, set by the caller when every
 * full output vector is aligned, or half-vector aligned: then each vector is streamed
 * as two halves) are written with non-temporal stores and a fence at
 * the end of each work item: by the depthwise kernel and by the general kernel's
 * unrolled 3x3 windows of 1 or 3 input channels (every other window stores plainly).
 *
 * Borders never cost a branch in the hot loop: per output row the valid kh range is
 * computed once, and each row is split into an interior (all kw valid, full tiles) and
 * border pixels, which run the same vectorized kernel with their own kw range (general
 * kind: one tile per border column, its pixels taken down the rows of the work item;
 * depthwise: one pixel at a time).  A work item is RG output rows (n, oh .. oh+RG-1)
 * of one output-channel block (general kind) or one whole output row (depthwise and
 * width kinds).  General items are ordered row-major (n, oh, g, b) when all the
 * filters fit in L2 together, and block-major (g, b, n, oh) otherwise, so that
 * consecutive items (and each thread's static share) reuse one block of filters from
 * L2 instead of cycling through all.  How pixels are grouped into tiles never changes
 * a pixel's reduction order (input-channel chunk -> kh -> kw -> c, the chunks fixed by
 * the filter size alone), so every output element is reduced in a fixed order and
 * results are bitwise identical for any thread count.
 */
#ifndef FASTCONV_FC_CONV_DIRECT_H
#define FASTCONV_FC_CONV_DIRECT_H

#include <stddef.h>
#include <string.h>
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define FC_HAVE_X86 1
#else
#define FC_HAVE_X86 0
#endif

#define FC_KIND_GENERAL 0
#define FC_KIND_DEPTHWISE 1
#define FC_KIND_WIDTH 2

typedef struct {
    const void *x;     /* (N, H, W, C) */
    const void *w;     /* HWIO (KH, KW, Cg, O), or packed [groups][nb][KH][KW][Cg][OB] */
    const void *bias;  /* (O,) or NULL */
    void *out;         /* (N, OH, OW, O) */
    ptrdiff_t N, H, W, C, OH, OW, O;   /* sizes and every offset: 64-bit */
    int KH, KW, Cg, Og, groups;        /* checked to fit in int by the caller */
    int SH, SW, DH, DW, pt, pl;
    int relu;
    int kind;          /* FC_KIND_* */
    int level;         /* 0 generic, 1 AVX2, 2 AVX-512 */
    int is_double;
    int packed;        /* 1 when w is the packed buffer */
    int OB;            /* output channels per block (general and depthwise kinds) */
    int nb;            /* blocks per group */
    int block_major;   /* general kind: items ordered (g, b, n, rows) instead of (n, rows, g, b) */
    int RG;            /* general kind: output rows per work item */
    int CC;            /* general kind: input channels per chunk (Cg: no chunking) */
    int stream;        /* 1: full output vectors are stored non-temporally (the caller
                          checks that every one is vector-aligned); 2: the same as two
                          half-vector streams each (every one half-vector-aligned) */
} fc_conv_args;

/* Sizes and offsets are 64-bit on every 64-bit platform: an axis of 2**31 or more
 * elements must not wrap around. */
#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(((fc_conv_args *)0)->W) == sizeof(ptrdiff_t), "fc_conv_args sizes are ptrdiff_t");
#endif

/* sizeof of a size field of fc_conv_args (a test checks it is 8 on 64-bit builds). */
static inline int fc_conv_size_bytes(void) { return (int)sizeof(((fc_conv_args *)0)->W); }

/* A stop flag shared by the threads of one call: set by the thread that notices a
 * pending signal, read by every thread before each work item (atomic, so the read is
 * never hoisted out of the loop). */
static inline int fc_flag_get(const int *flag) { return __atomic_load_n(flag, __ATOMIC_RELAXED); }
static inline void fc_flag_set(int *flag) { __atomic_store_n(flag, 1, __ATOMIC_RELAXED); }

/* Floor division that is right for negative numerators (d > 0). */
static inline ptrdiff_t fc_floordiv(ptrdiff_t a, ptrdiff_t d) {
    ptrdiff_t q = a / d;
    return (q * d > a) ? q - 1 : q;
}

/* Valid tap range [lo, hi) with lo <= hi for one axis: taps k with
 * 0 <= i0 + k*D < size, 0 <= k < K. */
static inline void fc_tap_range(ptrdiff_t i0, int D, int K, ptrdiff_t size, int *lo, int *hi) {
    ptrdiff_t l = i0 < 0 ? (-i0 + D - 1) / D : 0;
    ptrdiff_t h = fc_floordiv(size - 1 - i0, D) + 1;
    if (h > K) h = K;
    if (l > K) l = K;
    if (h < l) h = l;
    *lo = (int)l;
    *hi = (int)h;
}

/* Interior output range [a, b) of one axis: outputs whose every tap is inside. */
static inline void fc_interior(int pad, int S, int D, int K, ptrdiff_t size,
                               ptrdiff_t out_size, ptrdiff_t *a, ptrdiff_t *b) {
    ptrdiff_t lo = ((ptrdiff_t)pad + S - 1) / S;
    ptrdiff_t num = size - 1 + pad - (ptrdiff_t)(K - 1) * D;
    ptrdiff_t hi = num < 0 ? 0 : num / S + 1;
    if (lo > out_size) lo = out_size;
    if (hi > out_size) hi = out_size;
    if (hi < lo) hi = lo;
    *a = lo;
    *b = hi;
}

#define FC_GEN_NVMAX 8  /* "vectors" of one scalar in the portable kernel */
#define FC_CAT_(a, b) a##b
#define FC_CAT(a, b) FC_CAT_(a, b)

/* Register tiles of each ISA (the template's parameters, see fc_conv_direct_impl.h):
 *
 *   AVX-512 (32 zmm): general 6 px x 4 vectors (24 accumulators; 8 x 3, 12 x 2 and
 *     12 x 1 for narrower blocks), blocks of 4 vectors (64 float32 channels);
 *     depthwise 4 px x up to 4 vectors.
 *   AVX2 + FMA (16 ymm): 3 px x 4 vectors (12 accumulators, 3 broadcasts held),
 *     4 x 3, 6 x 2, 12 x 1 for narrower blocks.  The unrolled 3x3 windows of 1 or 3
 *     input channels take blocks of 8 vectors (64 float32 channels), each tile's
 *     pixels finished for the whole block (two 3 x 4 tiles) before the next pixels.
 *     Other windows take blocks of 2 vectors (6 x 2 tiles), one block after the
 *     other over a work item's rows: their filters are larger than L1, and a pixel
 *     burst over all 64 channels would read every filter from L2 (and GCC spills
 *     the 3 x 4 tile in a loop over the input channels).  These narrow blocks run by
 *     a function of their own with only their tile shapes (fc_tile_any_plain, plain
 *     stores), where the 6 x 2 tile keeps its 12 accumulators and 6 pixel offsets in
 *     registers.  Depthwise 6 px x 2 vectors (12 accumulators).
 *   portable C: 4 px x up to 8 scalars. */
#define FC_TILE_UR_AVX512(nv) ((nv) == 4 ? 6 : (nv) == 3 ? 8 : 12)
#define FC_TILE_UR_AVX2(nv) ((nv) >= 4 ? 3 : (nv) == 3 ? 4 : (nv) == 2 ? 6 : 12)
#define FC_SUB_NV_AVX2(ur) ((ur) <= 3 ? 4 : (ur) == 4 ? 3 : (ur) <= 6 ? 2 : 1)

/* ---- portable C, float32 and float64 ---- */
/* (GCC cannot see that the runtime-sized tile loops only read what they wrote) */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#define FC_SUFFIX _f32_gen
#define FC_DOUBLE 0
#define FC_T float
#define FC_LEVEL_GENERIC 1
#define FC_SIMD_HEADER "fc_simd_generic.h"
#define FC_NVMAX FC_GEN_NVMAX
#define FC_TILE_NV FC_GEN_NVMAX
#define FC_UR_FULL(nv) 4
#define FC_UR_SPEC(nv) 4
#define FC_SUB_NV(ur) FC_GEN_NVMAX
#define FC_URMAX 4
#define FC_DW_UR 4
#define FC_PLAIN_NV FC_GEN_NVMAX
#include "fc_conv_direct_impl.h"
#define FC_SUFFIX _f64_gen
#define FC_DOUBLE 1
#define FC_T double
#define FC_LEVEL_GENERIC 1
#define FC_SIMD_HEADER "fc_simd_generic.h"
#define FC_NVMAX FC_GEN_NVMAX
#define FC_TILE_NV FC_GEN_NVMAX
#define FC_UR_FULL(nv) 4
#define FC_UR_SPEC(nv) 4
#define FC_SUB_NV(ur) FC_GEN_NVMAX
#define FC_URMAX 4
#define FC_DW_UR 4
#define FC_PLAIN_NV FC_GEN_NVMAX
#include "fc_conv_direct_impl.h"
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#if FC_HAVE_X86
/* ---- AVX-512 ---- */
#define FC_SUFFIX _f32_avx512
#define FC_DOUBLE 0
#define FC_T float
#define FC_SIMD_HEADER "fc_simd_avx512.h"
#define FC_NVMAX 4
#define FC_TILE_NV 4
#define FC_UR_FULL(nv) FC_TILE_UR_AVX512(nv)
#define FC_UR_SPEC(nv) FC_TILE_UR_AVX512(nv)
#define FC_SUB_NV(ur) 4
#define FC_URMAX 12
#define FC_TILE_CASES FC_CASES12(1) FC_CASES12(2) FC_CASES8(3) FC_CASES6(4)
#define FC_DW_UR 4
#define FC_DW_CASES FC_CASES4(1) FC_CASES4(2) FC_CASES4(3) FC_CASES4(4)
#define FC_PLAIN_NV 4
#define FC_PLAIN_CASES FC_TILE_CASES
#include "fc_conv_direct_impl.h"
#define FC_SUFFIX _f64_avx512
#define FC_DOUBLE 1
#define FC_T double
#define FC_SIMD_HEADER "fc_simd_avx512.h"
#define FC_NVMAX 4
#define FC_TILE_NV 4
#define FC_UR_FULL(nv) FC_TILE_UR_AVX512(nv)
#define FC_UR_SPEC(nv) FC_TILE_UR_AVX512(nv)
#define FC_SUB_NV(ur) 4
#define FC_URMAX 12
#define FC_TILE_CASES FC_CASES12(1) FC_CASES12(2) FC_CASES8(3) FC_CASES6(4)
#define FC_DW_UR 4
#define FC_DW_CASES FC_CASES4(1) FC_CASES4(2) FC_CASES4(3) FC_CASES4(4)
#define FC_PLAIN_NV 4
#define FC_PLAIN_CASES FC_TILE_CASES
#include "fc_conv_direct_impl.h"
/* ---- AVX2 + FMA ---- */
#define FC_AVX2_TILE_CASES                                                              \
    FC_CASES12(1) FC_CASES6(2) FC_CASES4(3) FC_CASES3(4) FC_CASES3(5) FC_CASES3(6)      \
    FC_CASES3(7) FC_CASES3(8)
#define FC_SUFFIX _f32_avx2
#define FC_DOUBLE 0
#define FC_T float
#define FC_SIMD_HEADER "fc_simd_avx2.h"
#define FC_NVMAX 4
#define FC_TILE_NV 4
#define FC_UR_FULL(nv) FC_TILE_UR_AVX2(nv)
#define FC_UR_SPEC(nv) FC_TILE_UR_AVX2(nv)
#define FC_SUB_NV(ur) FC_SUB_NV_AVX2(ur)
#define FC_URMAX 12
#define FC_TILE_CASES FC_AVX2_TILE_CASES
#define FC_DW_UR 6
#define FC_DW_CASES FC_CASES6(1) FC_CASES6(2)
#define FC_PLAIN_NV 2
#define FC_PLAIN_CASES FC_CASES12(1) FC_CASES6(2)
#include "fc_conv_direct_impl.h"
#define FC_SUFFIX _f64_avx2
#define FC_DOUBLE 1
#define FC_T double
#define FC_SIMD_HEADER "fc_simd_avx2.h"
#define FC_NVMAX 4
#define FC_TILE_NV 4
#define FC_UR_FULL(nv) FC_TILE_UR_AVX2(nv)
#define FC_UR_SPEC(nv) FC_TILE_UR_AVX2(nv)
#define FC_SUB_NV(ur) FC_SUB_NV_AVX2(ur)
#define FC_URMAX 12
#define FC_TILE_CASES FC_AVX2_TILE_CASES
#define FC_DW_UR 6
#define FC_DW_CASES FC_CASES6(1) FC_CASES6(2)
#define FC_PLAIN_NV 2
#define FC_PLAIN_CASES FC_CASES12(1) FC_CASES6(2)
#include "fc_conv_direct_impl.h"
#endif

/* Pack HWIO filters w (KH, KW, Cg, O) of elements of `size` bytes into
 * packed[groups][nb][KH][KW][Cg][OB]: block b of group g holds output channels
 * g*Og + b*OB ... + OB - 1, zero-filled past Og. */
static inline void fc_pack_filters(const void *w, void *packed, size_t size, int KH, int KW,
                                   int Cg, ptrdiff_t O, int groups, int OB, int nb) {
    const ptrdiff_t Og = O / groups;
    const char *src = (const char *)w;
    char *dst = (char *)packed;
    for (int g = 0; g < groups; g++)
        for (int b = 0; b < nb; b++) {
            const ptrdiff_t o0 = g * Og + (ptrdiff_t)b * OB;
            const int ob = (Og - (ptrdiff_t)b * OB) < OB ? (int)(Og - (ptrdiff_t)b * OB) : OB;
            for (ptrdiff_t t = 0; t < (ptrdiff_t)KH * KW * Cg; t++) {
                memcpy(dst, src + (t * O + o0) * size, (size_t)ob * size);
                if (ob < OB) memset(dst + (size_t)ob * size, 0, (size_t)(OB - ob) * size);
                dst += (size_t)OB * size;
            }
        }
}

/* Output channels per block of the general kernel at a level for a KH x KW window of
 * Cg input channels (AVX-512: 4 vectors; AVX2: 8 vectors, run as register tiles of 4,
 * for the unrolled 3x3 windows of 1 or 3 channels, else 2), and of the depthwise
 * kernel. */
static inline int fc_conv_block_channels(int level, int is_double, int KH, int KW, int Cg) {
#if FC_HAVE_X86
    if (level >= 2) return is_double ? 32 : 64;
    if (level == 1) {
        if (KH == 3 && KW == 3 && (Cg == 1 || Cg == 3)) return is_double ? 32 : 64;
        return is_double ? 8 : 16;
    }
#endif
    (void)level; (void)is_double; (void)KH; (void)KW; (void)Cg;
    return FC_GEN_NVMAX;
}

static inline int fc_conv_dw_block_channels(int level, int is_double) {
#if FC_HAVE_X86
    if (level >= 2) return is_double ? 32 : 64;
    if (level == 1) return is_double ? 8 : 16;
#endif
    (void)level; (void)is_double;
    return FC_GEN_NVMAX;
}

static inline int fc_conv_vector_lanes(int level, int is_double) {
#if FC_HAVE_X86
    if (level >= 2) return is_double ? 8 : 16;
    if (level == 1) return is_double ? 4 : 8;
#endif
    (void)level; (void)is_double;
    return 1;
}

/* Number of independent work items of a call. */
static inline ptrdiff_t fc_conv_direct_items(const fc_conv_args *a) {
    ptrdiff_t rows = (ptrdiff_t)a->N * a->OH;
    if (a->kind != FC_KIND_GENERAL) return rows;   /* width and depthwise: whole rows */
    return (ptrdiff_t)a->N * ((a->OH + a->RG - 1) / a->RG) * a->groups * a->nb;
}

/* The work-item kernel for the args' SIMD level and dtype: chosen once per call. */
typedef void (*fc_conv_item_fn)(const fc_conv_args *a, ptrdiff_t item);

static inline fc_conv_item_fn fc_conv_direct_kernel(const fc_conv_args *a) {
#if FC_HAVE_X86
    if (a->level >= 2) return a->is_double ? fc_conv_item_f64_avx512 : fc_conv_item_f32_avx512;
    if (a->level == 1) return a->is_double ? fc_conv_item_f64_avx2 : fc_conv_item_f32_avx2;
#endif
    return a->is_double ? fc_conv_item_f64_gen : fc_conv_item_f32_gen;
}

/* Run work item `item` (see fc_conv_direct_items) at the args' SIMD level and dtype. */
static inline void fc_conv_direct_item(const fc_conv_args *a, ptrdiff_t item) {
    fc_conv_direct_kernel(a)(a, item);
}

#endif
