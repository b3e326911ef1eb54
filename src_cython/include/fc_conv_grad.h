/* Native filter gradients of a 2-D convolution on NHWC arrays: work items and dispatch.
 *
 *   dw[kh, kw, c, o] = sum_{n, oh, ow} x[n, oh*SH + kh*DH - top, ow*SW + kw*DW - left, g*Cg + c]
 *                                      * dy[n, oh, ow, o],        g = o / Og
 * with every position outside the input reading as zero.  Two kinds, each instantiated
 * for float32/float64 at three SIMD levels (AVX-512, AVX2+FMA, portable C) from the
 * template fc_conv_grad_impl.h, written against the SIMD vocabulary (fc_simd_*.h):
 *
 *   FC_GRAD_DEPTHWISE  groups == C == O (Cg == Og == 1): dw[kh, kw, 0, c] is a dot
 *                      product of channel c of x and dy; vectors run ACROSS channels
 *                      (contiguous in NHWC), two sets of FC_GRAD_NV accumulators (even and
 *                      odd output columns) per tap.
 *   FC_GRAD_DENSE      groups == 1 and few input channels: vectors run across the output
 *                      channels of dy, each input value broadcast; the accumulators of a
 *                      group of taps for a block of channels stay in registers over the
 *                      whole piece (fc_grad_tile_plan), so each dy vector is loaded once
 *                      per group.
 *
 * The output rows (n, oh) are cut into pieces of a fixed number of rows (chosen from
 * the shapes only); an item is one piece and one block of FC_GRAD_NV vectors of output
 * channels, and writes the piece's partial sums part[piece][kh][kw][c][o] of its block.
 * fc_grad_reduce then adds the pieces in piece order.  Within an item the order of
 * every sum is fixed (output rows in order, each row's even and odd columns summed
 * apart then added), so the result is bitwise identical for any thread count.
 *
 * Borders cost no branch in the inner loop: per (row, kh) the input row is checked
 * once, and per kw the range of output columns whose tap lies inside the row is
 * computed once.
 */
#ifndef FASTCONV_FC_CONV_GRAD_H
#define FASTCONV_FC_CONV_GRAD_H

#include <stddef.h>
#include "fc_cpu.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define FC_GRAD_X86 1
#else
#define FC_GRAD_X86 0
#endif

#define FC_GRAD_DEPTHWISE 0
#define FC_GRAD_DENSE 1
/* vectors of output channels per item (times two accumulator sets) */
#define FC_GRAD_NV 4

typedef struct {
    const void *x;        /* (N, H, W, C) */
    const void *dy;       /* (N, OH, OW, O) */
    void *part;           /* (pieces, KH, KW, Cg, O) */
    ptrdiff_t H, W, C, OH, OW, O;
    int KH, KW, SH, SW, DH, DW, top, left;
    ptrdiff_t rows;       /* N * OH */
    ptrdiff_t piece_rows; /* output rows per piece (the last piece may have fewer) */
    ptrdiff_t blocks;     /* blocks of output channels per piece */
} fc_grad_args;

typedef void (*fc_grad_fn)(const fc_grad_args *a, ptrdiff_t item);

/* Dense items: blocks of two vectors of output channels (a last block of one vector
 * when their count is odd), each with the taps KH*KW*C cut into groups of at most
 * FC_GRAD_TILE_G2 (two-vector blocks) or FC_GRAD_TILE_G1 (one-vector blocks) taps, so
 * that the accumulators (group size times vectors) stay in 16 registers. */
#define FC_GRAD_TILE_G2 6
#define FC_GRAD_TILE_G1 12
typedef struct {
    ptrdiff_t taps, nb2, n2, n1, per_piece;   /* n2, n1: tap groups per block */
    int g2, g1;                               /* taps per group */
} fc_grad_tiling;

/* Taps per group for blocks of `ov` vectors: the fewest estimated cycles per output
 * position over all groups (each group at least the latency of its accumulator chains,
 * plus a fixed cost per pass), ties to the larger group. */
static inline int fc_grad_group(ptrdiff_t taps, int ov, int gmax) {
    int best = 1;
    ptrdiff_t best_cost = -1;
    for (int g = gmax; g >= 1; g--) {
        const ptrdiff_t groups = (taps + g - 1) / g;
        const ptrdiff_t fma = (ptrdiff_t)ov * g;           /* half cycles per position */
        const ptrdiff_t cost = groups * ((fma > 8 ? fma : 8) + 2);
        if (best_cost < 0 || cost < best_cost) { best = g; best_cost = cost; }
    }
    return best;
}

static inline void fc_grad_tile_plan(const fc_grad_args *a, int lanes, fc_grad_tiling *tl) {
    const ptrdiff_t nvec = (a->O + lanes - 1) / lanes;
    tl->taps = (ptrdiff_t)a->KH * a->KW * a->C;
    tl->nb2 = nvec / 2;
    tl->g2 = fc_grad_group(tl->taps, 2, FC_GRAD_TILE_G2);
    tl->g1 = fc_grad_group(tl->taps, 1, FC_GRAD_TILE_G1);
    tl->n2 = (tl->taps + tl->g2 - 1) / tl->g2;
    tl->n1 = (tl->taps + tl->g1 - 1) / tl->g1;
    tl->per_piece = tl->nb2 * tl->n2 + (nvec % 2) * tl->n1;
}

/* Work items per piece of kind `kind` (FC_GRAD_DENSE: fc_grad_tile_plan's). */
static inline ptrdiff_t fc_grad_items_per_piece(const fc_grad_args *a, int kind, int lanes) {
    if (kind == FC_GRAD_DENSE) {
        fc_grad_tiling tl;
        fc_grad_tile_plan(a, lanes, &tl);
        return tl.per_piece;
    }
    const ptrdiff_t block = (ptrdiff_t)FC_GRAD_NV * lanes;
    return (a->O + block - 1) / block;
}

/* Output columns [*lo, *hi) whose tap kw lies inside the input row. */
static inline void fc_grad_cols(const fc_grad_args *a, int kw, ptrdiff_t *lo, ptrdiff_t *hi) {
    const ptrdiff_t off = (ptrdiff_t)kw * a->DW - a->left;   /* iw = ow * SW + off */
    const ptrdiff_t l = off >= 0 ? 0 : (-off + a->SW - 1) / a->SW;
    ptrdiff_t h = a->W - 1 - off < 0 ? 0 : (a->W - 1 - off) / a->SW + 1;
    if (h > a->OW) h = a->OW;
    *lo = l;
    *hi = h > l ? h : l;
}

#define FC_GRAD_CAT_(a, b) a##b
#define FC_GRAD_CAT(a, b) FC_GRAD_CAT_(a, b)

/* ---- portable C ---- */
#define FC_SUFFIX _f32_gen
#define FC_DOUBLE 0
#define FC_T float
#define FC_LEVEL_GENERIC 1
#include "fc_conv_grad_impl.h"
#define FC_SUFFIX _f64_gen
#define FC_DOUBLE 1
#define FC_T double
#define FC_LEVEL_GENERIC 1
#include "fc_conv_grad_impl.h"

#if FC_GRAD_X86
/* ---- AVX-512 ---- */
#define FC_SUFFIX _f32_avx512
#define FC_DOUBLE 0
#define FC_T float
#define FC_LEVEL_AVX512 1
#include "fc_conv_grad_impl.h"
#define FC_SUFFIX _f64_avx512
#define FC_DOUBLE 1
#define FC_T double
#define FC_LEVEL_AVX512 1
#include "fc_conv_grad_impl.h"
/* ---- AVX2 + FMA ---- */
#define FC_SUFFIX _f32_avx2
#define FC_DOUBLE 0
#define FC_T float
#define FC_LEVEL_AVX2 1
#include "fc_conv_grad_impl.h"
#define FC_SUFFIX _f64_avx2
#define FC_DOUBLE 1
#define FC_T double
#define FC_LEVEL_AVX2 1
#include "fc_conv_grad_impl.h"
#endif

/* Lanes of one vector of the given level and dtype (the channel block is FC_GRAD_NV of them). */
static inline int fc_grad_lanes(int level, int is_double) {
#if FC_GRAD_X86
    if (level >= FC_SIMD_AVX512) return is_double ? 8 : 16;
    if (level >= FC_SIMD_AVX2) return is_double ? 4 : 8;
#endif
    (void)is_double; (void)level;
    return 1;
}

/* The item kernel of `kind` for the dtype and SIMD level (chosen once per call). */
static inline fc_grad_fn fc_grad_pick(int kind, int is_double, int level) {
#if FC_GRAD_X86
    if (level >= FC_SIMD_AVX512) {
        if (kind == FC_GRAD_DEPTHWISE)
            return is_double ? fc_grad_dw_f64_avx512 : fc_grad_dw_f32_avx512;
        return is_double ? fc_grad_dense_f64_avx512 : fc_grad_dense_f32_avx512;
    }
    if (level >= FC_SIMD_AVX2) {
        if (kind == FC_GRAD_DEPTHWISE)
            return is_double ? fc_grad_dw_f64_avx2 : fc_grad_dw_f32_avx2;
        return is_double ? fc_grad_dense_f64_avx2 : fc_grad_dense_f32_avx2;
    }
#endif
    (void)level;
    if (kind == FC_GRAD_DEPTHWISE) return is_double ? fc_grad_dw_f64_gen : fc_grad_dw_f32_gen;
    return is_double ? fc_grad_dense_f64_gen : fc_grad_dense_f32_gen;
}

/* out[e] = part[0][e] + part[1][e] + ... (piece order) for e in [e0, e1). */
static inline void fc_grad_reduce_f32(const float *part, float *out, ptrdiff_t pieces,
                                      ptrdiff_t size, ptrdiff_t e0, ptrdiff_t e1) {
    for (ptrdiff_t e = e0; e < e1; e++) {
        float s = part[e];
        for (ptrdiff_t p = 1; p < pieces; p++) s += part[p * size + e];
        out[e] = s;
    }
}

static inline void fc_grad_reduce_f64(const double *part, double *out, ptrdiff_t pieces,
                                      ptrdiff_t size, ptrdiff_t e0, ptrdiff_t e1) {
    for (ptrdiff_t e = e0; e < e1; e++) {
        double s = part[e];
        for (ptrdiff_t p = 1; p < pieces; p++) s += part[p * size + e];
        out[e] = s;
    }
}

#endif
