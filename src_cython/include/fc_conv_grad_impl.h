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
#define FC_TILE_UNROLL _Pragma("GCC unroll 16")

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

/* Dense (one group, few input channels), register-tiled over taps: an item owns one
 * block of OV (2 or 1) vectors of output channels and one group of G taps
 * t = (kh*KW + kw)*C + c; it walks the piece's output positions once, loading each dy
 * vector once and adding it, times the broadcast input value of each tap, into G*OV
 * accumulators held in registers for the whole piece.  Per (tap, channel) the sum runs
 * over the positions in order, skipping taps outside the input, so it is fixed by the
 * shapes.  Slots past the last tap of the last group read tap t0's value and are not
 * stored.  Columns whose taps all lie inside the input row (and rows whose taps all lie
 * inside the image) take a loop without bounds checks. */
#define FC_TILE_LD(p, P, L1) ((P) && (L1) ? FCV_LOADN((p), last) : FCV_LOAD(p))
#define FC_TILE_ACC(XVAL, OV, t)                                                       \
    do {                                                                              \
        const FCV b_ = FCV_SET1(XVAL);                                                \
        a0[t] = FCV_FMA(b_, d0, a0[t]);                                               \
        if ((OV) > 1) a1[t] = FCV_FMA(b_, d1, a1[t]);                                 \
    } while (0)
#define FC_TILE_DEF(OV, G, P)                                                          \
static FC_ATTR void FN(fc_grad_tile_##OV##_##G##_##P)(                                 \
        const fc_grad_args *a, FC_T *pt, ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t o0,     \
        int t0, int nt, int last, ptrdiff_t lo, ptrdiff_t hi) {                        \
    const FC_T *x = (const FC_T *)a->x, *dy = (const FC_T *)a->dy;                     \
    const ptrdiff_t H = a->H, W = a->W, C = a->C, OH = a->OH, OW = a->OW, O = a->O;    \
    const ptrdiff_t xs = (ptrdiff_t)a->SW * C;                                        \
    const int KW = a->KW;                                                             \
    /* rows whose taps all lie inside the image: ih0 + kmin >= 0, ih0 + kmax < H */    \
    const ptrdiff_t kmin = -(ptrdiff_t)a->top, kmax = (ptrdiff_t)(a->KH - 1) * a->DH - a->top; \
    FCV a0[G], a1[G];                                                                 \
    ptrdiff_t off[G], kwo[G], kho[G];                                                 \
    FC_TILE_UNROLL for (int t = 0; t < (G); t++) {                                    \
        const int tt = t0 + (t < nt ? t : 0);                                         \
        const int kh = tt / (KW * (int)C), kw = (tt / (int)C) % KW, c = tt % (int)C;  \
        a0[t] = FCV_ZERO(); a1[t] = FCV_ZERO();                                       \
        kho[t] = (ptrdiff_t)kh * a->DH - a->top;                                      \
        kwo[t] = (ptrdiff_t)kw * a->DW - a->left;                                     \
        off[t] = (kho[t] * W + kwo[t]) * C + c;                                       \
    }                                                                                 \
    ptrdiff_t n = r0 / OH, oh = r0 % OH;                                              \
    for (ptrdiff_t r = r0; r < r1; r++) {                                             \
        const FC_T *dp = dy + r * OW * O + o0;                                        \
        const ptrdiff_t ih0 = oh * a->SH, rb = (n * H + ih0) * W * C;                 \
        const int all = ih0 + kmin >= 0 && ih0 + kmax < H;                            \
        const ptrdiff_t fl = all ? lo : OW, fh = all ? hi : OW;                       \
        for (ptrdiff_t ow = 0; ow < OW; ow++) {                                       \
            if (ow == fl) {                                                           \
                const FC_T *xb = x + rb + ow * xs;                                    \
                const FC_T *d_ = dp + ow * O;                                         \
                for (; ow < fh; ow++, xb += xs, d_ += O) {                            \
                    const FCV d0 = FC_TILE_LD(d_, P, (OV) == 1);                      \
                    const FCV d1 = (OV) > 1 ? FC_TILE_LD(d_ + FCV_L, P, 1) : d0;      \
                    FC_TILE_UNROLL for (int t = 0; t < (G); t++)                      \
                        FC_TILE_ACC(xb[off[t]], OV, t);                               \
                }                                                                     \
                if (ow >= OW) break;                                                  \
            }                                                                         \
            const FC_T *d_ = dp + ow * O;                                             \
            const FCV d0 = FC_TILE_LD(d_, P, (OV) == 1);                              \
            const FCV d1 = (OV) > 1 ? FC_TILE_LD(d_ + FCV_L, P, 1) : d0;              \
            FC_TILE_UNROLL for (int t = 0; t < (G); t++) {                            \
                const ptrdiff_t ih = ih0 + kho[t], iw = ow * a->SW + kwo[t];          \
                if (ih >= 0 && ih < H && iw >= 0 && iw < W)                           \
                    FC_TILE_ACC(x[rb + off[t] + ow * xs], OV, t);                     \
            }                                                                         \
        }                                                                             \
        if (++oh == OH) { oh = 0; n++; }                                              \
    }                                                                                 \
    for (int t = 0; t < nt; t++) {                                                    \
        FC_T *q = pt + (ptrdiff_t)(t0 + t) * O + o0;                                  \
        if ((OV) == 1) {                                                              \
            if (P) FCV_STOREN(q, a0[t], last); else FCV_STORE(q, a0[t]);              \
        } else {                                                                      \
            FCV_STORE(q, a0[t]);                                                      \
            if (P) FCV_STOREN(q + FCV_L, a1[t], last); else FCV_STORE(q + FCV_L, a1[t]); \
        }                                                                             \
    }                                                                                 \
}
#define FC_TILE_DEF2(OV, G) FC_TILE_DEF(OV, G, 0) FC_TILE_DEF(OV, G, 1)
FC_TILE_DEF2(2, 1) FC_TILE_DEF2(2, 2) FC_TILE_DEF2(2, 3) FC_TILE_DEF2(2, 4)
FC_TILE_DEF2(2, 5) FC_TILE_DEF2(2, 6)
FC_TILE_DEF2(1, 1) FC_TILE_DEF2(1, 2) FC_TILE_DEF2(1, 3) FC_TILE_DEF2(1, 4)
FC_TILE_DEF2(1, 5) FC_TILE_DEF2(1, 6) FC_TILE_DEF2(1, 7) FC_TILE_DEF2(1, 8)
FC_TILE_DEF2(1, 9) FC_TILE_DEF2(1, 10) FC_TILE_DEF2(1, 11) FC_TILE_DEF2(1, 12)

typedef void (*FN(fc_grad_tile_fn))(const fc_grad_args *, FC_T *, ptrdiff_t, ptrdiff_t,
                                     ptrdiff_t, int, int, int, ptrdiff_t, ptrdiff_t);
#define FC_TILE_PAIR(OV, G) {FN(fc_grad_tile_##OV##_##G##_0), FN(fc_grad_tile_##OV##_##G##_1)}
static const FN(fc_grad_tile_fn) FN(fc_grad_tiles2)[FC_GRAD_TILE_G2 + 1][2] = {
    {0, 0}, FC_TILE_PAIR(2, 1), FC_TILE_PAIR(2, 2), FC_TILE_PAIR(2, 3), FC_TILE_PAIR(2, 4),
    FC_TILE_PAIR(2, 5), FC_TILE_PAIR(2, 6)};
static const FN(fc_grad_tile_fn) FN(fc_grad_tiles1)[FC_GRAD_TILE_G1 + 1][2] = {
    {0, 0}, FC_TILE_PAIR(1, 1), FC_TILE_PAIR(1, 2), FC_TILE_PAIR(1, 3), FC_TILE_PAIR(1, 4),
    FC_TILE_PAIR(1, 5), FC_TILE_PAIR(1, 6), FC_TILE_PAIR(1, 7), FC_TILE_PAIR(1, 8),
    FC_TILE_PAIR(1, 9), FC_TILE_PAIR(1, 10), FC_TILE_PAIR(1, 11), FC_TILE_PAIR(1, 12)};

static FC_ATTR void FN(fc_grad_dense)(const fc_grad_args *a, ptrdiff_t item) {
    fc_grad_tiling tl;
    fc_grad_tile_plan(a, FCV_L, &tl);
    const ptrdiff_t piece = item / tl.per_piece, k = item % tl.per_piece;
    const ptrdiff_t r0 = piece * a->piece_rows;
    const ptrdiff_t r1 = r0 + a->piece_rows < a->rows ? r0 + a->piece_rows : a->rows;
    FC_T *pt = (FC_T *)a->part + piece * tl.taps * a->O;
    ptrdiff_t o0, grp;
    int ov, g;
    if (k < tl.nb2 * tl.n2) {
        ov = 2; g = tl.g2; o0 = (k / tl.n2) * 2 * FCV_L; grp = k % tl.n2;
    } else {
        ov = 1; g = tl.g1; o0 = tl.nb2 * 2 * FCV_L; grp = k - tl.nb2 * tl.n2;
    }
    const int part = o0 + (ptrdiff_t)ov * FCV_L > a->O;
    const int last = (int)(a->O - (o0 + (ptrdiff_t)(ov - 1) * FCV_L));
    const int t0 = (int)(grp * g);
    const int nt = tl.taps - t0 < g ? (int)(tl.taps - t0) : g;
    ptrdiff_t lo, hi, l1, h0;
    fc_grad_cols(a, 0, &lo, &h0);
    fc_grad_cols(a, a->KW - 1, &l1, &hi);
    if (hi < lo) hi = lo;
    const FN(fc_grad_tile_fn) fn = ov == 2 ? FN(fc_grad_tiles2)[g][part] : FN(fc_grad_tiles1)[g][part];
    fn(a, pt, r0, r1, o0, t0, nt, last, lo, hi);
}

#undef FC_TILE_LD
#undef FC_TILE_ACC
#undef FC_TILE_DEF
#undef FC_TILE_DEF2
#undef FC_TILE_PAIR

#undef FC_GRAD_BODY
#undef FC_GRAD_DISPATCH
#undef FC_LD_FULL
#undef FC_ST_FULL
#undef FC_LD_LAST
#undef FC_ST_LAST
#undef FC_GRAD_UNROLL
#undef FC_TILE_UNROLL
#undef NV
#undef FN
#include "fc_simd_undef.h"
#undef FC_SUFFIX
#undef FC_T
#undef FC_DOUBLE
#undef FC_LEVEL_GENERIC
#undef FC_LEVEL_AVX2
#undef FC_LEVEL_AVX512
