/* Template body of fastconv's native filter-gradient kernels (see fc_conv_grad.h).
 *
 * Included once per (dtype, SIMD level) with FC_SUFFIX, FC_T, FC_DOUBLE and one of
 * FC_LEVEL_GENERIC / FC_LEVEL_AVX2 / FC_LEVEL_AVX512 defined; it defines
 * fc_grad_dw<FC_SUFFIX>() and fc_grad_dense<FC_SUFFIX>() and #undefs everything it was
 * given.  The vector operations come from the SIMD vocabulary (fc_simd_*.h).
 */
#if defined(FC_LEVEL_AVX512)
#include "fc_simd_avx512.h"
#elif defined(FC_LEVEL_AVX2)
#include "fc_simd_avx2.h"
#else
#include "fc_simd_generic.h"
#endif

#define FN(name) FC_GRAD_CAT(name, FC_SUFFIX)
#define NV FC_GRAD_NV
#define FC_GRAD_UNROLL _Pragma("GCC unroll 4")

/* acc[j] (+ bcc[j]) += xv(j) * dy[j], over `cnt` output columns; xv, x stepping xs and dy
 * stepping ds per column; even columns go to acc, odd ones to bcc.  FULL > 0: the block is
 * FULL vectors (a constant, so that the accumulators stay in registers), loaded and stored
 * with LD / ST (whole vectors, or the first `last` lanes of a block of one vector);
 * FULL == 0: nv vectors whose last holds `last` lanes. */
#define FC_GRAD_BODY(XV, XSTEP, FULL, LD, ST)                                          \
    do {                                                                              \
        FCV acc[NV], bcc[NV];                                                         \
        FC_GRAD_UNROLL for (int j = 0; j < NV; j++) { acc[j] = FCV_ZERO(); bcc[j] = FCV_ZERO(); } \
        ptrdiff_t k = 0;                                                              \
        if (FULL) {                                                                   \
            for (; k + 1 < cnt; k += 2) {                                             \
                FC_GRAD_UNROLL for (int j = 0; j < (FULL); j++)                       \
                    acc[j] = FCV_FMA(XV(xp, j, LD), LD(dp + j * FCV_L), acc[j]);      \
                FC_GRAD_UNROLL for (int j = 0; j < (FULL); j++)                       \
                    bcc[j] = FCV_FMA(XV(xp + (XSTEP), j, LD), LD(dp + ds + j * FCV_L), bcc[j]); \
                xp += 2 * (XSTEP);                                                    \
                dp += 2 * ds;                                                         \
            }                                                                         \
            if (k < cnt) {                                                            \
                FC_GRAD_UNROLL for (int j = 0; j < (FULL); j++)                       \
                    acc[j] = FCV_FMA(XV(xp, j, LD), LD(dp + j * FCV_L), acc[j]);      \
            }                                                                         \
            FC_GRAD_UNROLL for (int j = 0; j < (FULL); j++)                           \
                ST(pt + j * FCV_L, FCV_ADD(LD(pt + j * FCV_L), FCV_ADD(acc[j], bcc[j]))); \
        } else {                                                                      \
            for (; k + 1 < cnt; k += 2) {                                             \
                for (int j = 0; j < nv; j++) {                                        \
                    const int m = j + 1 < nv ? FCV_L : last;                          \
                    acc[j] = FCV_FMA(XVN(xp, j, m), FCV_LOADN(dp + j * FCV_L, m), acc[j]); \
                    bcc[j] = FCV_FMA(XVN(xp + (XSTEP), j, m),                         \
                                     FCV_LOADN(dp + ds + j * FCV_L, m), bcc[j]);      \
                }                                                                     \
                xp += 2 * (XSTEP);                                                    \
                dp += 2 * ds;                                                         \
            }                                                                         \
            if (k < cnt) {                                                            \
                for (int j = 0; j < nv; j++) {                                        \
                    const int m = j + 1 < nv ? FCV_L : last;                          \
                    acc[j] = FCV_FMA(XVN(xp, j, m), FCV_LOADN(dp + j * FCV_L, m), acc[j]); \
                }                                                                     \
            }                                                                         \
            for (int j = 0; j < nv; j++) {                                            \
                const int m = j + 1 < nv ? FCV_L : last;                              \
                FCV_STOREN(pt + j * FCV_L,                                            \
                           FCV_ADD(FCV_LOADN(pt + j * FCV_L, m), FCV_ADD(acc[j], bcc[j])), m); \
            }                                                                         \
        }                                                                             \
    } while (0)

#define FC_LD_FULL(p) FCV_LOAD(p)
#define FC_ST_FULL(p, v) FCV_STORE((p), (v))
#define FC_LD_LAST(p) FCV_LOADN((p), last)
#define FC_ST_LAST(p, v) FCV_STOREN((p), (v), last)
/* full: whole vectors in the block (1..NV), -1 for a block of one partial vector, 0 otherwise */
#define FC_GRAD_DISPATCH(XV, XSTEP)                                                    \
    switch (full) {                                                                   \
    case 4: FC_GRAD_BODY(XV, XSTEP, 4, FC_LD_FULL, FC_ST_FULL); break;                \
    case 3: FC_GRAD_BODY(XV, XSTEP, 3, FC_LD_FULL, FC_ST_FULL); break;                \
    case 2: FC_GRAD_BODY(XV, XSTEP, 2, FC_LD_FULL, FC_ST_FULL); break;                \
    case 1: FC_GRAD_BODY(XV, XSTEP, 1, FC_LD_FULL, FC_ST_FULL); break;                \
    case -1: FC_GRAD_BODY(XV, XSTEP, 1, FC_LD_LAST, FC_ST_LAST); break;               \
    default: FC_GRAD_BODY(XV, XSTEP, 0, FC_LD_FULL, FC_ST_FULL); break;               \
    }

/* Depthwise (C == O, one channel per group): x's channel is the output channel. */
static FC_ATTR void FN(fc_grad_dw)(const fc_grad_args *a, ptrdiff_t item) {
    const FC_T *x = (const FC_T *)a->x, *dy = (const FC_T *)a->dy;
    const ptrdiff_t H = a->H, W = a->W, C = a->C, OH = a->OH, OW = a->OW;
    const int KH = a->KH, KW = a->KW, T = KH * KW;
    const ptrdiff_t piece = item / a->blocks, blk = item % a->blocks;
    const ptrdiff_t o0 = blk * NV * FCV_L;
    const ptrdiff_t no = C - o0 < NV * FCV_L ? C - o0 : NV * FCV_L;
    /* whole vectors in the block (0: a partial last vector) */
    const int full = no % FCV_L == 0 ? (int)(no / FCV_L) : no < FCV_L ? -1 : 0;
    const int nv = (int)((no + FCV_L - 1) / FCV_L), last = (int)(no - (ptrdiff_t)(nv - 1) * FCV_L);
    const ptrdiff_t r0 = piece * a->piece_rows;
    const ptrdiff_t r1 = r0 + a->piece_rows < a->rows ? r0 + a->piece_rows : a->rows;
    FC_T *part = (FC_T *)a->part + piece * (ptrdiff_t)T * C;
    const ptrdiff_t xs = (ptrdiff_t)a->SW * C, ds = C;
    (void)nv; (void)last;
    for (int t = 0; t < T; t++)
        for (ptrdiff_t i = 0; i < no; i++) part[t * C + o0 + i] = 0;
#define XV(p, j, LD) LD((p) + (j) * FCV_L)
#define XVN(p, j, m) FCV_LOADN((p) + (j) * FCV_L, (m))
    for (ptrdiff_t r = r0; r < r1; r++) {
        const ptrdiff_t n = r / OH, oh = r % OH;
        const FC_T *drow = dy + r * OW * C + o0;
        for (int kh = 0; kh < KH; kh++) {
            const ptrdiff_t ih = oh * a->SH + (ptrdiff_t)kh * a->DH - a->top;
            if (ih < 0 || ih >= H) continue;
            const FC_T *xrow = x + (n * H + ih) * W * C + o0;
            for (int kw = 0; kw < KW; kw++) {
                ptrdiff_t lo, hi;
                fc_grad_cols(a, kw, &lo, &hi);
                const ptrdiff_t cnt = hi - lo;
                if (cnt <= 0) continue;
                const FC_T *xp = xrow + (lo * a->SW + (ptrdiff_t)kw * a->DW - a->left) * C;
                const FC_T *dp = drow + lo * C;
                FC_T *pt = part + (ptrdiff_t)(kh * KW + kw) * C + o0;
                FC_GRAD_DISPATCH(XV, xs);
            }
        }
    }
#undef XV
#undef XVN
}

/* Dense (one group, few input channels): each input value broadcast against dy's
 * output-channel vectors. */
static FC_ATTR void FN(fc_grad_dense)(const fc_grad_args *a, ptrdiff_t item) {
    const FC_T *x = (const FC_T *)a->x, *dy = (const FC_T *)a->dy;
    const ptrdiff_t H = a->H, W = a->W, C = a->C, OH = a->OH, OW = a->OW, O = a->O;
    const int KH = a->KH, KW = a->KW, T = KH * KW;
    const ptrdiff_t piece = item / a->blocks, blk = item % a->blocks;
    const ptrdiff_t o0 = blk * NV * FCV_L;
    const ptrdiff_t no = O - o0 < NV * FCV_L ? O - o0 : NV * FCV_L;
    /* whole vectors in the block (0: a partial last vector) */
    const int full = no % FCV_L == 0 ? (int)(no / FCV_L) : no < FCV_L ? -1 : 0;
    const int nv = (int)((no + FCV_L - 1) / FCV_L), last = (int)(no - (ptrdiff_t)(nv - 1) * FCV_L);
    const ptrdiff_t r0 = piece * a->piece_rows;
    const ptrdiff_t r1 = r0 + a->piece_rows < a->rows ? r0 + a->piece_rows : a->rows;
    FC_T *part = (FC_T *)a->part + piece * (ptrdiff_t)T * C * O;
    const ptrdiff_t xs = (ptrdiff_t)a->SW * C, ds = O;
    (void)nv; (void)last;
    for (ptrdiff_t t = 0; t < (ptrdiff_t)T * C; t++)
        for (ptrdiff_t i = 0; i < no; i++) part[t * O + o0 + i] = 0;
#define XV(p, j, LD) FCV_SET1(*(p))
#define XVN(p, j, m) FCV_SET1(*(p))
    for (ptrdiff_t r = r0; r < r1; r++) {
        const ptrdiff_t n = r / OH, oh = r % OH;
        const FC_T *drow = dy + r * OW * O + o0;
        for (int kh = 0; kh < KH; kh++) {
            const ptrdiff_t ih = oh * a->SH + (ptrdiff_t)kh * a->DH - a->top;
            if (ih < 0 || ih >= H) continue;
            const FC_T *xrow = x + (n * H + ih) * W * C;
            for (int kw = 0; kw < KW; kw++) {
                ptrdiff_t lo, hi;
                fc_grad_cols(a, kw, &lo, &hi);
                const ptrdiff_t cnt = hi - lo;
                if (cnt <= 0) continue;
                for (ptrdiff_t c = 0; c < C; c++) {
                    const FC_T *xp = xrow + (lo * a->SW + (ptrdiff_t)kw * a->DW - a->left) * C + c;
                    const FC_T *dp = drow + lo * O;
                    FC_T *pt = part + ((ptrdiff_t)(kh * KW + kw) * C + c) * O + o0;
                    FC_GRAD_DISPATCH(XV, xs);
                }
            }
        }
    }
#undef XV
#undef XVN
}

#undef FC_GRAD_BODY
#undef FC_GRAD_DISPATCH
#undef FC_LD_FULL
#undef FC_ST_FULL
#undef FC_LD_LAST
#undef FC_ST_LAST
#undef FC_GRAD_UNROLL
#undef NV
#undef FN
#include "fc_simd_undef.h"
#undef FC_SUFFIX
#undef FC_T
#undef FC_DOUBLE
#undef FC_LEVEL_GENERIC
#undef FC_LEVEL_AVX2
#undef FC_LEVEL_AVX512
