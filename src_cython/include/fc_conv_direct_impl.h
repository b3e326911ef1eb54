/* Template body of fastconv's direct convolution kernels (see fc_conv_direct.h).
 *
 * Written once against the SIMD vocabulary (fc_simd_avx512.h, fc_simd_avx2.h,
 * fc_simd_generic.h: FCV vectors of FCV_L lanes, FCV_LOAD/STORE/LOADN/STOREN/STREAM,
 * FCV_SET1, FCV_FMA, ...) and included once per (dtype, ISA) with these defined:
 *
 *   FC_SUFFIX, FC_T, FC_DOUBLE   name suffix and element type
 *   FC_SIMD_HEADER               the vocabulary header of the ISA
 *   FC_LEVEL_GENERIC             (portable C only) no constant-shape tile switch
 *   FC_NVMAX                     the most vectors of any tile (array bound)
 *   FC_TILE_NV                   vectors of output channels per register tile; a
 *                                block of output channels (fc_conv_block_channels)
 *                                wider than that is finished for each tile's pixels,
 *                                FC_TILE_NV vectors at a time, before the next pixels
 *   FC_UR_FULL(nv), FC_URMAX     pixels per tile of nv (<= FC_TILE_NV) vectors, and
 *                                the largest pixel count of any tile
 *   FC_UR_SPEC(nv)               the same for the unrolled 3x3 windows of 1 or 3
 *                                input channels
 *   FC_SUB_NV(ur)                vectors per register tile of ur pixels: a block of
 *                                more vectors runs as several tiles (<= FC_TILE_NV)
 *   FC_TILE_CASES                FC_CASE(ur, block vectors) for every tile shape of the
 *                                general kernel, each compiled with constant sizes
 *   FC_DW_UR, FC_DW_CASES        pixels per depthwise tile, and its FC_CASE list
 *   FC_PLAIN_NV, FC_PLAIN_CASES  the most vectors of a block that fc_tile_any_plain
 *                                runs (every window but the unrolled 3x3 ones), and
 *                                its FC_CASE list
 *
 * It defines fc_conv_item<FC_SUFFIX>() and #undefs everything it was given.
 */
#define FN(name) FC_CAT(name, FC_SUFFIX)
#define FC_UNROLL _Pragma("GCC unroll 16")

#include FC_SIMD_HEADER


#define FC_CASES3(NV) FC_CASE(1, NV) FC_CASE(2, NV) FC_CASE(3, NV)
#define FC_CASES4(NV) FC_CASES3(NV) FC_CASE(4, NV)
#define FC_CASES6(NV) FC_CASES4(NV) FC_CASE(5, NV) FC_CASE(6, NV)
#define FC_CASES8(NV) FC_CASES6(NV) FC_CASE(7, NV) FC_CASE(8, NV)
#define FC_CASES12(NV) FC_CASES8(NV) FC_CASE(9, NV) FC_CASE(10, NV) FC_CASE(11, NV) FC_CASE(12, NV)

/* A value the compiler must treat as unknown from here on: the bias vectors and the
 * tail mask are then made at each tile's store, instead of being hoisted out of the
 * strip loop, where they would hold registers through every tile's FMA loop (and
 * force an accumulator spill in a 12-accumulator AVX2 tile). */
#if defined(__GNUC__)
#define FC_OPAQUE(p) __asm__("" : "+r"(p))
#else
#define FC_OPAQUE(p) ((void)0)
#endif

/* Bias, ReLU and store of one tile of ur pixels x nv vectors (last vector: tail lanes);
 * full vectors are streamed (non-temporal) when `stream` is set: 1 when every full
 * vector of the output is FCV_BYTES-aligned, 2 (two half-vector streams each) when
 * they are only FCV_BYTES / 2-aligned, as NumPy's own large arrays are (16 bytes past
 * a page), so that a caller's out= of np.empty streams too. */
#define FC_STORE_TILE(acc, ur, nv)                                                        \
    do {                                                                                  \
        FCV bv_[FC_NVMAX];                                                                \
        const FC_T *bp_ = bias;                                                           \
        int tl_ = tail;   /* the bias and the tail mask are made here, not hoisted */      \
        FC_OPAQUE(bp_);   /* out of a strip's tile loop (where they would hold       */    \
        FC_OPAQUE(tl_);   /* registers through every tile's FMA loop)                */    \
        FC_UNROLL for (int v_ = 0; v_ < (nv); v_++)                                      \
            bv_[v_] = bias == NULL ? FCV_ZERO()                                           \
                      : (v_ == (nv) - 1 ? FCV_LOADN(bp_ + v_ * FCV_L, tl_)                \
                                        : FCV_LOAD(bp_ + v_ * FCV_L));                    \
        FC_UNROLL for (int p_ = 0; p_ < (ur); p_++) {                                    \
            FC_T *o_ = op + p_ * os_p;                                                    \
            FC_UNROLL for (int v_ = 0; v_ < (nv); v_++) {                                \
                FCV r_ = FCV_ADD(acc[p_][v_], bv_[v_]);                                   \
                if (relu) r_ = FCV_RELU(r_);                                              \
                if (v_ == (nv) - 1 && tl_ != FCV_L) FCV_STOREN(o_ + v_ * FCV_L, r_, tl_);   \
                else if (stream == 1) FCV_STREAM(o_ + v_ * FCV_L, r_);                    \
                else if (stream) FCV_STREAM_HALF(o_ + v_ * FCV_L, r_);                    \
                else FCV_STORE(o_ + v_ * FCV_L, r_);                                      \
            }                                                                             \
        }                                                                                 \
    } while (0)

/* General tile: ur output pixels (input stride xs_p) x nv vectors of output channels.
 * xp: input at the first valid (kh, kw) of pixel 0, channel 0 of the group;
 * wp: filters at that (kh, kw), c = 0, first channel of the block; ws_c is the
 * distance between consecutive input channels in the filters. */
static inline __attribute__((always_inline)) FC_ATTR void FN(fc_tile)(
    const FC_T *xp, ptrdiff_t xs_p, ptrdiff_t xs_kh, ptrdiff_t xs_kw,
    const FC_T *wp, ptrdiff_t ws_c, ptrdiff_t ws_kw, ptrdiff_t ws_kh,
    int nkh, int nkw, int Cg, const FC_T *bias, FC_T *op, ptrdiff_t os_p,
    int tail, int relu, int first, int stream, const int ur, const int nv)
{
    FCV acc[FC_URMAX][FC_NVMAX];
    if (ur < 1 || ur > FC_URMAX || nv < 1 || nv > FC_NVMAX) return;
    if (first) {
        FC_UNROLL for (int p = 0; p < ur; p++)
            FC_UNROLL for (int v = 0; v < nv; v++) acc[p][v] = FCV_ZERO();
    } else {   /* continue the partial sums of the previous channel chunk */
        FC_UNROLL for (int p = 0; p < ur; p++) {
            FC_UNROLL for (int v = 0; v < nv - 1; v++) acc[p][v] = FCV_LOAD(op + p * os_p + v * FCV_L);
            acc[p][nv - 1] = FCV_LOADN(op + p * os_p + (nv - 1) * FCV_L, tail);
        }
    }
    for (int kh = 0; kh < nkh; kh++) {
        for (int kw = 0; kw < nkw; kw++) {
            const FC_T *xc = xp + kh * xs_kh + kw * xs_kw;
            const FC_T *wc = wp + kh * ws_kh + kw * ws_kw;
            for (int c = 0; c < Cg; c++) {
                if (ur < nv) {
                    /* few pixels, many vectors (3 x 4 on 16 registers): the ur
                     * broadcasts stay in registers, each weight vector is used once */
                    FCV xb[FC_URMAX];
                    FC_UNROLL for (int p = 0; p < ur; p++) xb[p] = FCV_SET1(xc[p * xs_p]);
                    FC_UNROLL for (int v = 0; v < nv; v++) {
                        const FCV wv = FCV_LOAD(wc + v * FCV_L);
                        FC_UNROLL for (int p = 0; p < ur; p++) acc[p][v] = FCV_FMA(xb[p], wv, acc[p][v]);
                    }
                } else {
                    FCV wv[FC_NVMAX];
                    FC_UNROLL for (int v = 0; v < nv; v++) wv[v] = FCV_LOAD(wc + v * FCV_L);
                    FC_UNROLL for (int p = 0; p < ur; p++) {
                        FCV xb = FCV_SET1(xc[p * xs_p]);
                        FC_UNROLL for (int v = 0; v < nv; v++) acc[p][v] = FCV_FMA(xb, wv[v], acc[p][v]);
                    }
                }
                xc += 1;
                wc += ws_c;
            }
        }
    }
    FC_STORE_TILE(acc, ur, nv);
}

/* A strip of ntiles tiles of ur pixels x nv (<= FC_TILE_NV) vectors for every window
 * but the unrolled 3x3 ones of 1 or 3 input channels (their own function below): tile t
 * at xp + t * xs_t (input) and op + t * os_t (output), plain stores.  A function of its
 * own with only these few tile shapes, so that the register allocator keeps all the
 * accumulators and the pixel offsets of the channel loop in registers (in one function
 * with the wide blocks' shapes, GCC spilled one accumulator of the 6 x 2 AVX2 tile and
 * every pixel offset, halving its speed). */
static __attribute__((noinline)) FC_ATTR void FN(fc_tile_any_plain)(
    const FC_T *xp, ptrdiff_t xs_p, ptrdiff_t xs_kh, ptrdiff_t xs_kw,
    const FC_T *wp, ptrdiff_t ws_c, ptrdiff_t ws_kw, ptrdiff_t ws_kh,
    int nkh, int nkw, int Cg, const FC_T *bias, FC_T *op, ptrdiff_t os_p,
    int tail, int relu, int first, int ur, int nv, ptrdiff_t ntiles, ptrdiff_t xs_t,
    ptrdiff_t os_t)
{
#if defined(FC_LEVEL_GENERIC)
    for (ptrdiff_t t = 0; t < ntiles; t++)
        FN(fc_tile)(xp + t * xs_t, xs_p, xs_kh, xs_kw, wp, ws_c, ws_kw, ws_kh, nkh, nkw, Cg,
                    bias, op + t * os_t, os_p, tail, relu, first, 0, ur, nv);
#else
    switch (nv * 16 + ur) {
#define FC_CASE(U, NV)                                                                   \
    case (NV) * 16 + (U):                                                                \
        for (ptrdiff_t t_ = 0; t_ < ntiles; t_++)                                        \
            FN(fc_tile)(xp + t_ * xs_t, xs_p, xs_kh, xs_kw, wp, ws_c, ws_kw, ws_kh, nkh,  \
                        nkw, Cg, bias, op + t_ * os_t, os_p, tail, relu, first, 0, U, NV); \
        break;
        FC_PLAIN_CASES
#undef FC_CASE
    default:
        break;
    }
#endif
}

/* A strip of ntiles tiles of ur pixels x nv vectors (the whole block), tile t at
 * xp + t * xs_t (input) and op + t * os_t (output), all run by one tile specialised
 * for constant (ur, nv) (its accumulators live in registers): one call per row strip,
 * not per tile.  A block wider than a register tile (nv > FC_TILE_NV) is finished
 * for each tile's pixels, FC_TILE_NV vectors at a time, before the next pixels: the
 * input the tiles broadcast and the output lines they write stay in L1. */
static __attribute__((noinline)) FC_ATTR void FN(fc_tile_any)(
    const FC_T *xp, ptrdiff_t xs_p, ptrdiff_t xs_kh, ptrdiff_t xs_kw,
    const FC_T *wp, ptrdiff_t ws_c, ptrdiff_t ws_kw, ptrdiff_t ws_kh,
    int nkh, int nkw, int Cg, const FC_T *bias, FC_T *op, ptrdiff_t os_p,
    int tail, int relu, int first, int stream, int ur, int nv, ptrdiff_t ntiles,
    ptrdiff_t xs_t, ptrdiff_t os_t)
{
#if defined(FC_LEVEL_GENERIC)
    for (ptrdiff_t t = 0; t < ntiles; t++)
        FN(fc_tile)(xp + t * xs_t, xs_p, xs_kh, xs_kw, wp, ws_c, ws_kw, ws_kh, nkh, nkw, Cg,
                    bias, op + t * os_t, os_p, tail, relu, first, stream, ur, nv);
#else
    /* the 3x3 windows of 1 and 3 input channels with constant trip counts: the
     * compiler unrolls their 9 or 27 steps (same reduction order as the loop).
     * Sub-tiles of a block: FC_TILE_NV whole vectors each, the last one the rest
     * (with the tail lanes). */
#define FC_SNV(U, NV) (FC_SUB_NV(U) < (NV) ? FC_SUB_NV(U) : (NV))
#define FC_NSUB(U, NV) (((NV) + FC_SNV(U, NV) - 1) / FC_SNV(U, NV))
#define FC_LAST_NV(U, NV) ((NV) - (FC_NSUB(U, NV) - 1) * FC_SNV(U, NV))
#define FC_STRIP(U, NV, NKH, NKW, CG)                                                    \
    do for (ptrdiff_t t_ = 0; t_ < ntiles; t_++) {                                       \
        for (int s_ = 0; s_ < FC_NSUB(U, NV) - 1; s_++) {                                \
            const ptrdiff_t v0_ = (ptrdiff_t)s_ * FC_SNV(U, NV) * FCV_L;                 \
            FN(fc_tile)(xp + t_ * xs_t, xs_p, xs_kh, xs_kw, wp + v0_, ws_c, ws_kw, ws_kh, \
                        NKH, NKW, CG, bias == NULL ? NULL : bias + v0_,                  \
                        op + t_ * os_t + v0_, os_p, FCV_L, relu, first, stream, U,       \
                        FC_SNV(U, NV));                                                  \
        }                                                                                \
        const ptrdiff_t vl_ = (ptrdiff_t)(FC_NSUB(U, NV) - 1) * FC_SNV(U, NV) * FCV_L;   \
        FN(fc_tile)(xp + t_ * xs_t, xs_p, xs_kh, xs_kw, wp + vl_, ws_c, ws_kw, ws_kh,     \
                    NKH, NKW, CG, bias == NULL ? NULL : bias + vl_, op + t_ * os_t + vl_, \
                    os_p, tail, relu, first, stream, U, FC_LAST_NV(U, NV));              \
    } while (0)
    switch (nv * 16 + ur) {
#define FC_CASE(U, NV)                                                                   \
    case (NV) * 16 + (U):                                                                \
        if ((U) <= FC_UR_SPEC((NV) < FC_TILE_NV ? (NV) : FC_TILE_NV) &&                  \
            nkh == 3 && nkw == 3 && Cg == 1)                                             \
            FC_STRIP(U, NV, 3, 3, 1);                                                    \
        else if ((U) <= FC_UR_SPEC((NV) < FC_TILE_NV ? (NV) : FC_TILE_NV) &&             \
                 nkh == 3 && nkw == 3 && Cg == 3)                                        \
            FC_STRIP(U, NV, 3, 3, 3);                                                    \
        else                                                                             \
            FC_STRIP(U, NV, nkh, nkw, Cg);                                               \
        break;
        FC_TILE_CASES
#undef FC_CASE
#undef FC_STRIP
#undef FC_SNV
#undef FC_NSUB
#undef FC_LAST_NV
    default:
        break;
    }
#endif
}

/* Input channels [c0, c0 + cc) of output rows [oh0, oh1) of image n, output-channel
 * block b of group g.  first: start from zero (else add to the partial sums in out);
 * last: add the bias and apply ReLU at the store.
 *
 * Border pixels (the columns whose kw range is cut by the padding) cannot join the
 * row's tiles, so a border column is run down the rows instead: consecutive rows with
 * the same kh range form one tile whose "pixels" are one row apart (input stride
 * SH * W * C, output stride OW * O).  One pixel at a time, each weight vector would
 * serve a single FMA and the border would run at a fraction of the FMA rate.  The
 * interior of each row is run as full tiles plus one narrower vectorized tile.  Every
 * pixel's reduction order (kh -> kw -> c) is the same however the pixels are grouped. */
static FC_ATTR void FN(fc_rows_general_part)(const fc_conv_args *a, ptrdiff_t n, ptrdiff_t oh0,
                                             ptrdiff_t oh1, int g, int b, int c0, int cc,
                                             int first, int last)
{
    const ptrdiff_t H = a->H, W = a->W, C = a->C, O = a->O, OH = a->OH, OW = a->OW;
    const int KH = a->KH, KW = a->KW, Cg = a->Cg, Og = a->Og, OB = a->OB, nb = a->nb;
    const int ob = (Og - b * OB) < OB ? (Og - b * OB) : OB;
    const int nv = (ob + FCV_L - 1) / FCV_L;
    const int tail = ob - (nv - 1) * FCV_L;
    /* the unrolled 3x3 windows of 1 or 3 input channels may take their own tile shape */
    const int spec = KH == 3 && KW == 3 && (cc == 1 || cc == 3);
    const int ur = spec ? FC_UR_SPEC(nv < FC_TILE_NV ? nv : FC_TILE_NV)
                        : FC_UR_FULL(nv < FC_TILE_NV ? nv : FC_TILE_NV);
    /* wide: by fc_tile_any (blocks of more than FC_PLAIN_NV vectors, and the unrolled
     * windows); the rest by fc_tile_any_plain, with plain stores */
    const int wide = spec || nv > FC_PLAIN_NV;
    const int stream = wide ? a->stream : 0;   /* 0, 1 or 2 (see FC_STORE_TILE) */

    const FC_T *w = (const FC_T *)a->w;
    ptrdiff_t ws_c;
    if (a->packed) {
        w += ((ptrdiff_t)g * nb + b) * (ptrdiff_t)KH * KW * Cg * OB;
        ws_c = OB;
    } else {
        w += (ptrdiff_t)g * Og + (ptrdiff_t)b * OB;
        ws_c = O;
    }
    const ptrdiff_t ws_kw = Cg * ws_c, ws_kh = KW * ws_kw;
    w += c0 * ws_c;

    const ptrdiff_t xs_p = a->SW * C, xs_kh = a->DH * W * C, xs_kw = a->DW * C;
    const ptrdiff_t xs_row = a->SH * W * C, os_row = OW * O;
    /* first channel of the chunk in image n; row and column offsets added below */
    const FC_T *ximg = (const FC_T *)a->x + n * H * W * C + g * (ptrdiff_t)Cg + c0;
    const ptrdiff_t o0 = (ptrdiff_t)g * Og + (ptrdiff_t)b * OB;
    FC_T *oimg = (FC_T *)a->out + n * OH * OW * O + o0;
    const FC_T *bias = (a->bias == NULL || !last) ? NULL : (const FC_T *)a->bias + o0;
    const int relu = last ? a->relu : 0;

    /* a strip of tiles, by fc_tile_any or fc_tile_any_plain */
#define FC_TILES(XP, XSP, WP, NKW, OP, OSP, UR, NT, XST, OST)                             \
    do {                                                                                  \
        if (wide)                                                                         \
            FN(fc_tile_any)((XP), (XSP), xs_kh, xs_kw, (WP), ws_c, ws_kw, ws_kh, nkh, (NKW), \
                            cc, bias, (OP), (OSP), tail, relu, first, stream, (UR), nv,    \
                            (NT), (XST), (OST));                                          \
        else                                                                              \
            FN(fc_tile_any_plain)((XP), (XSP), xs_kh, xs_kw, (WP), ws_c, ws_kw, ws_kh, nkh, \
                                  (NKW), cc, bias, (OP), (OSP), tail, relu, first, (UR), nv, \
                                  (NT), (XST), (OST));                                    \
    } while (0)
    ptrdiff_t ow_a, ow_b;
    fc_interior(a->pl, a->SW, a->DW, KW, W, OW, &ow_a, &ow_b);
    for (ptrdiff_t oh = oh0; oh < oh1;) {
        /* rows [oh, oh_end) share the kh range of row oh */
        const ptrdiff_t ih0 = oh * a->SH - a->pt;
        int kh_lo, kh_hi;
        fc_tap_range(ih0, a->DH, KH, H, &kh_lo, &kh_hi);
        const int nkh = kh_hi - kh_lo;
        ptrdiff_t oh_end = oh + 1;
        while (oh_end < oh1 && oh_end - oh < ur) {
            int lo, hi;
            fc_tap_range(oh_end * a->SH - a->pt, a->DH, KH, H, &lo, &hi);
            if (lo != kh_lo || hi != kh_hi) break;
            oh_end++;
        }
        const int nrows = (int)(oh_end - oh);
        /* input row of the first valid kh (rows of pure padding read nothing) */
        const FC_T *xrow = nkh > 0 ? ximg + (ih0 + (ptrdiff_t)kh_lo * a->DH) * W * C : ximg;
        const FC_T *wrow = w + kh_lo * ws_kh;
        /* border columns: one tile of nrows pixels per column, each its own kw range */
        for (ptrdiff_t ow = 0; ow < OW; ow++) {
            if (ow == ow_a) ow = ow_b;
            if (ow >= OW) break;
            const ptrdiff_t iw0 = (ptrdiff_t)ow * a->SW - a->pl;
            int kw_lo, kw_hi;
            fc_tap_range(iw0, a->DW, KW, W, &kw_lo, &kw_hi);
            const int nkw = kw_hi - kw_lo;
            const ptrdiff_t xoff = (nkw > 0 && nkh > 0) ? (iw0 + (ptrdiff_t)kw_lo * a->DW) * C : 0;
            FC_TILES(xrow + xoff, nkh > 0 ? xs_row : 0, wrow + kw_lo * ws_kw, nkw,
                     oimg + oh * os_row + ow * O, os_row, nrows, 1, 0, 0);
        }
        for (ptrdiff_t r = oh; r < oh_end; r++) {
            const FC_T *xr = nkh > 0 ? xrow + (r - oh) * xs_row : xrow;
            FC_T *orow = oimg + r * os_row;
            const ptrdiff_t ntiles = (ow_b - ow_a) / ur;
            ptrdiff_t ow = ow_a;
            if (ntiles > 0)   /* the row's full tiles: one strip */
                FC_TILES(xr + ((ptrdiff_t)ow * a->SW - a->pl) * C, xs_p, wrow, KW, orow + ow * O,
                         O, ur, ntiles, ur * xs_p, (ptrdiff_t)ur * O);
            ow += ntiles * ur;
            if (ow < ow_b)
                FC_TILES(xr + ((ptrdiff_t)ow * a->SW - a->pl) * C, xs_p, wrow, KW, orow + ow * O,
                         O, (int)(ow_b - ow), 1, 0, 0);
        }
        oh = oh_end;
    }
}
#undef FC_TILES

/* One work item of the general kind: output rows [oh0, oh0 + RG) of image n, output
 * channel block b of group g.  With input-channel chunks of CC < Cg, each chunk of
 * filters is applied to every row of the item before the next, so it is reused from
 * L2 over RG rows; the chunk order is fixed, hence so is every reduction order. */
static FC_ATTR void FN(fc_row_general)(const fc_conv_args *a, ptrdiff_t item)
{
    const ptrdiff_t OHG = (a->OH + a->RG - 1) / a->RG;   /* row groups per image */
    const int nb = a->nb;
    int b, g;
    ptrdiff_t q, n;
    if (a->block_major) {   /* item = ((g * nb + b) * N + n) * OHG + q */
        ptrdiff_t r = item / OHG;
        q = item % OHG;
        n = r % a->N;
        r /= a->N;
        b = (int)(r % nb);
        g = (int)(r / nb);
    } else {                /* item = ((n * OHG + q) * groups + g) * nb + b */
        ptrdiff_t r = item / nb;
        b = (int)(item % nb);
        g = (int)(r % a->groups);
        r /= a->groups;
        q = r % OHG;
        n = r / OHG;
    }
    const ptrdiff_t oh0 = q * a->RG;
    const ptrdiff_t oh1 = (oh0 + a->RG) < a->OH ? oh0 + a->RG : a->OH;
    const int Cg = a->Cg, CC = a->CC;
    for (int c0 = 0; c0 < Cg; c0 += CC) {
        const int cc = (Cg - c0) < CC ? Cg - c0 : CC;
        FN(fc_rows_general_part)(a, n, oh0, oh1, g, b, c0, cc, c0 == 0, c0 + cc == Cg);
    }
}

/* Depthwise tile (one input channel per output channel): ur pixels x nv channel
 * vectors; every tap loads the input vector of each pixel and FMAs it with the
 * tap's weight vector.  The last vector touches only `tail` lanes. */
static inline __attribute__((always_inline)) FC_ATTR void FN(fc_dw_tile)(
    const FC_T *xp, ptrdiff_t xs_p, ptrdiff_t xs_kh, ptrdiff_t xs_kw,
    const FC_T *wp, ptrdiff_t ws_kw, ptrdiff_t ws_kh, int nkh, int nkw,
    const FC_T *bias, FC_T *op, ptrdiff_t os_p, int tail, int relu, int stream, const int ur,
    const int nv)
{
    FCV acc[FC_URMAX][FC_NVMAX];
    if (ur < 1 || ur > FC_URMAX || nv < 1 || nv > FC_NVMAX) return;
    FC_UNROLL for (int p = 0; p < ur; p++)
        FC_UNROLL for (int v = 0; v < nv; v++) acc[p][v] = FCV_ZERO();
    if (tail == FCV_L) {   /* whole vectors: plain loads */
        for (int kh = 0; kh < nkh; kh++) {
            for (int kw = 0; kw < nkw; kw++) {
                const FC_T *xc = xp + kh * xs_kh + kw * xs_kw;
                const FC_T *wc = wp + kh * ws_kh + kw * ws_kw;
                FCV wv[FC_NVMAX];
                FC_UNROLL for (int v = 0; v < nv; v++) wv[v] = FCV_LOAD(wc + v * FCV_L);
                FC_UNROLL for (int p = 0; p < ur; p++)
                    FC_UNROLL for (int v = 0; v < nv; v++)
                        acc[p][v] = FCV_FMA(FCV_LOAD(xc + p * xs_p + v * FCV_L), wv[v], acc[p][v]);
            }
        }
    } else {
        for (int kh = 0; kh < nkh; kh++) {
            for (int kw = 0; kw < nkw; kw++) {
                const FC_T *xc = xp + kh * xs_kh + kw * xs_kw;
                const FC_T *wc = wp + kh * ws_kh + kw * ws_kw;
                FCV wv[FC_NVMAX];
                FC_UNROLL for (int v = 0; v < nv - 1; v++) wv[v] = FCV_LOAD(wc + v * FCV_L);
                wv[nv - 1] = FCV_LOADN(wc + (nv - 1) * FCV_L, tail);
                FC_UNROLL for (int p = 0; p < ur; p++) {
                    FC_UNROLL for (int v = 0; v < nv - 1; v++)
                        acc[p][v] = FCV_FMA(FCV_LOAD(xc + p * xs_p + v * FCV_L), wv[v], acc[p][v]);
                    acc[p][nv - 1] = FCV_FMA(FCV_LOADN(xc + p * xs_p + (nv - 1) * FCV_L, tail),
                                             wv[nv - 1], acc[p][nv - 1]);
                }
            }
        }
    }
    FC_STORE_TILE(acc, ur, nv);
}

/* nblk consecutive channel blocks (each nv vectors, the last vector `tail` lanes) of
 * ur depthwise pixels, block j at xp, wp, bias and op + j * bs: one call per pixel
 * tile for all the full blocks of the channels. */
static __attribute__((noinline)) FC_ATTR void FN(fc_dw_tile_any)(
    const FC_T *xp, ptrdiff_t xs_p, ptrdiff_t xs_kh, ptrdiff_t xs_kw,
    const FC_T *wp, ptrdiff_t ws_kw, ptrdiff_t ws_kh, int nkh, int nkw,
    const FC_T *bias, FC_T *op, ptrdiff_t os_p, int tail, int relu, int stream, int ur, int nv,
    ptrdiff_t nblk, ptrdiff_t bs)
{
#if defined(FC_LEVEL_GENERIC)
    for (ptrdiff_t j = 0; j < nblk; j++)
        FN(fc_dw_tile)(xp + j * bs, xs_p, xs_kh, xs_kw, wp + j * bs, ws_kw, ws_kh, nkh, nkw,
                       bias == NULL ? NULL : bias + j * bs, op + j * bs, os_p, tail, relu,
                       stream, ur, nv);
#else
    switch (nv * 16 + ur) {
#define FC_CASE(U, NV)                                                                     \
    case (NV) * 16 + (U):                                                                  \
        for (ptrdiff_t j_ = 0; j_ < nblk; j_++)                                            \
            FN(fc_dw_tile)(xp + j_ * bs, xs_p, xs_kh, xs_kw, wp + j_ * bs, ws_kw, ws_kh, nkh, \
                           nkw, bias == NULL ? NULL : bias + j_ * bs, op + j_ * bs, os_p,   \
                           tail, relu, stream, U, NV);                                      \
        break;
        FC_DW_CASES
#undef FC_CASE
    default:
        break;
    }
#endif
}

/* Depthwise tile with a channel multiplier M > 1: output channel o reads input
 * channel o / M, so each input vector is gathered with the lane indices idx[v]
 * (relative to the block's first input channel; lanes past the tail point at 0). */
static inline __attribute__((always_inline)) FC_ATTR void FN(fc_dwm_tile)(
    const FC_T *xp, ptrdiff_t xs_p, ptrdiff_t xs_kh, ptrdiff_t xs_kw,
    const FC_T *wp, ptrdiff_t ws_kw, ptrdiff_t ws_kh, int nkh, int nkw, const int *idx,
    const FC_T *bias, FC_T *op, ptrdiff_t os_p, int tail, int relu, int stream, const int ur,
    const int nv)
{
    FCV acc[FC_URMAX][FC_NVMAX];
    FCI iv[FC_NVMAX];
    if (ur < 1 || ur > FC_URMAX || nv < 1 || nv > FC_NVMAX) return;
    FC_UNROLL for (int v = 0; v < nv; v++) iv[v] = FCI_LOAD(idx + v * FCV_L);
    FC_UNROLL for (int p = 0; p < ur; p++)
        FC_UNROLL for (int v = 0; v < nv; v++) acc[p][v] = FCV_ZERO();
    for (int kh = 0; kh < nkh; kh++) {
        for (int kw = 0; kw < nkw; kw++) {
            const FC_T *xc = xp + kh * xs_kh + kw * xs_kw;
            const FC_T *wc = wp + kh * ws_kh + kw * ws_kw;
            FCV wv[FC_NVMAX];
            FC_UNROLL for (int v = 0; v < nv - 1; v++) wv[v] = FCV_LOAD(wc + v * FCV_L);
            wv[nv - 1] = FCV_LOADN(wc + (nv - 1) * FCV_L, tail);
            FC_UNROLL for (int p = 0; p < ur; p++)
                FC_UNROLL for (int v = 0; v < nv; v++)
                    acc[p][v] = FCV_FMA(FCV_GATHER(xc + p * xs_p, iv[v]), wv[v], acc[p][v]);
        }
    }
    FC_STORE_TILE(acc, ur, nv);
}

static __attribute__((noinline)) FC_ATTR void FN(fc_dwm_tile_any)(
    const FC_T *xp, ptrdiff_t xs_p, ptrdiff_t xs_kh, ptrdiff_t xs_kw,
    const FC_T *wp, ptrdiff_t ws_kw, ptrdiff_t ws_kh, int nkh, int nkw, const int *idx,
    const FC_T *bias, FC_T *op, ptrdiff_t os_p, int tail, int relu, int stream, int ur,
    int nv)
{
#if defined(FC_LEVEL_GENERIC)
    FN(fc_dwm_tile)(xp, xs_p, xs_kh, xs_kw, wp, ws_kw, ws_kh, nkh, nkw, idx, bias, op, os_p,
                    tail, relu, stream, ur, nv);
#else
    switch (nv * 16 + ur) {
#define FC_CASE(U, NV)                                                                     \
    case (NV) * 16 + (U):                                                                  \
        FN(fc_dwm_tile)(xp, xs_p, xs_kh, xs_kw, wp, ws_kw, ws_kh, nkh, nkw, idx, bias, op,  \
                        os_p, tail, relu, stream, U, NV);                                  \
        break;
        FC_DW_CASES
#undef FC_CASE
    default:
        break;
    }
#endif
}

/* ur output pixels starting at column ow (input offset xoff within the row, taps
 * kw_lo .. kw_lo + nkw - 1) of a depthwise convolution, for every block of OB output
 * channels in turn, so that the pixels' channels are walked contiguously. */
static inline __attribute__((always_inline)) FC_ATTR void FN(fc_dw_pixels)(
    const fc_conv_args *a, const FC_T *xrow, const FC_T *wrow, FC_T *orow, ptrdiff_t xoff,
    ptrdiff_t ow, int kw_lo, int nkh, int nkw, int ur)
{
    const ptrdiff_t C = a->C, O = a->O, W = a->W;
    const int OB = a->OB, M = a->Og, KW = a->KW;
    const ptrdiff_t xs_p = a->SW * C, xs_kh = a->DH * W * C, xs_kw = a->DW * C;
    const ptrdiff_t ws_kw = O, ws_kh = KW * O;
    const int relu = a->relu, stream = a->stream;
    int idx[FC_NVMAX * FCV_L];
    ptrdiff_t o_start = 0;
    if (M == 1 && O >= OB) {   /* every full block: one call */
        o_start = (O / OB) * OB;
        FN(fc_dw_tile_any)(xrow + xoff, xs_p, xs_kh, xs_kw, wrow + kw_lo * ws_kw, ws_kw, ws_kh,
                           nkh, nkw, (const FC_T *)a->bias, orow + ow * O, O, FCV_L, relu,
                           stream, ur, OB / FCV_L, O / OB, OB);
    }
    for (ptrdiff_t o0 = o_start; o0 < O; o0 += OB) {
        const int ob = (O - o0) < OB ? (int)(O - o0) : OB;
        const int nv = (ob + FCV_L - 1) / FCV_L;
        const int tail = ob - (nv - 1) * FCV_L;
        const ptrdiff_t c0 = o0 / M;   /* first input channel of the block */
        const FC_T *bias = a->bias == NULL ? NULL : (const FC_T *)a->bias + o0;
        const FC_T *xp = xrow + xoff + c0;
        const FC_T *wp = wrow + o0 + kw_lo * ws_kw;
        FC_T *op = orow + ow * O + o0;
        if (M == 1) {
            FN(fc_dw_tile_any)(xp, xs_p, xs_kh, xs_kw, wp, ws_kw, ws_kh, nkh, nkw, bias, op, O,
                               tail, relu, stream, ur, nv, 1, 0);
        } else {
            for (int j = 0; j < nv * FCV_L; j++)
                idx[j] = j < ob ? (int)((o0 + j) / M - c0) : 0;
            FN(fc_dwm_tile_any)(xp, xs_p, xs_kh, xs_kw, wp, ws_kw, ws_kh, nkh, nkw, idx, bias,
                                op, O, tail, relu, stream, ur, nv);
        }
    }
}

/* One output row (n, oh) of a depthwise convolution: Cg == 1, groups == C,
 * O == C * M (filters HWIO (KH, KW, 1, O)). */
static FC_ATTR void FN(fc_row_depthwise)(const fc_conv_args *a, ptrdiff_t item)
{
    const ptrdiff_t H = a->H, W = a->W, C = a->C, O = a->O, OH = a->OH, OW = a->OW;
    const int KH = a->KH, KW = a->KW;
    const ptrdiff_t oh = item % OH, n = item / OH;
    const ptrdiff_t ih0 = oh * a->SH - a->pt;
    int kh_lo, kh_hi;
    fc_tap_range(ih0, a->DH, KH, H, &kh_lo, &kh_hi);
    const int nkh = kh_hi - kh_lo;
    const FC_T *xrow = (const FC_T *)a->x;
    if (nkh > 0) xrow += ((n * H + ih0 + (ptrdiff_t)kh_lo * a->DH) * W) * C;
    const FC_T *wrow = (const FC_T *)a->w + kh_lo * KW * O;
    FC_T *orow = (FC_T *)a->out + ((n * OH + oh) * OW) * O;

    ptrdiff_t ow_a, ow_b;
    fc_interior(a->pl, a->SW, a->DW, KW, W, OW, &ow_a, &ow_b);
    for (ptrdiff_t ow = 0; ow < OW; ow++) {
        if (ow == ow_a) ow = ow_b;
        if (ow >= OW) break;
        const ptrdiff_t iw0 = (ptrdiff_t)ow * a->SW - a->pl;
        int kw_lo, kw_hi;
        fc_tap_range(iw0, a->DW, KW, W, &kw_lo, &kw_hi);
        const int nkw = kw_hi - kw_lo;
        const ptrdiff_t xoff = (nkw > 0 && nkh > 0) ? (iw0 + (ptrdiff_t)kw_lo * a->DW) * C : 0;
        FN(fc_dw_pixels)(a, xrow, wrow, orow, xoff, ow, kw_lo, nkh, nkw, 1);
    }
    ptrdiff_t ow = ow_a;
    for (; ow + FC_DW_UR <= ow_b; ow += FC_DW_UR)
        FN(fc_dw_pixels)(a, xrow, wrow, orow, ((ptrdiff_t)ow * a->SW - a->pl) * C, ow, 0, nkh,
                         KW, FC_DW_UR);
    if (ow < ow_b)
        FN(fc_dw_pixels)(a, xrow, wrow, orow, ((ptrdiff_t)ow * a->SW - a->pl) * C, ow, 0, nkh,
                         KW, (int)(ow_b - ow));
}

/* One output row of a single-channel filter (C == O == 1, SW == 1), vectorized
 * across the output width: each tap's weight is broadcast and FMAed with
 * unaligned loads of consecutive input pixels (the filter2D scheme). */
static FC_ATTR void FN(fc_row_width)(const fc_conv_args *a, ptrdiff_t item)
{
    const ptrdiff_t H = a->H, W = a->W, OH = a->OH, OW = a->OW;
    const int KH = a->KH, KW = a->KW, DW = a->DW;
    const ptrdiff_t oh = item % OH, n = item / OH;
    const ptrdiff_t ih0 = oh * a->SH - a->pt;
    int kh_lo, kh_hi;
    fc_tap_range(ih0, a->DH, KH, H, &kh_lo, &kh_hi);
    const int nkh = kh_hi - kh_lo;
    const ptrdiff_t xs_kh = a->DH * W;
    const FC_T *xrow = (const FC_T *)a->x;
    if (nkh > 0) xrow += (n * H + ih0 + (ptrdiff_t)kh_lo * a->DH) * W;
    const FC_T *wrow = (const FC_T *)a->w + kh_lo * KW;
    FC_T *orow = (FC_T *)a->out + (n * OH + oh) * OW;
    const FC_T b0 = a->bias == NULL ? (FC_T)0 : *(const FC_T *)a->bias;
    const int relu = a->relu;
    const int pl = a->pl;

    ptrdiff_t ow_a, ow_b;
    fc_interior(pl, 1, DW, KW, W, OW, &ow_a, &ow_b);
    for (ptrdiff_t ow = 0; ow < OW; ow++) {
        if (ow == ow_a) ow = ow_b;
        if (ow >= OW) break;
        const ptrdiff_t iw0 = ow - pl;
        int kw_lo, kw_hi;
        fc_tap_range(iw0, DW, KW, W, &kw_lo, &kw_hi);
        FC_T s = 0;
        for (int kh = 0; kh < nkh; kh++)
            for (int kw = kw_lo; kw < kw_hi; kw++)
                s += xrow[kh * xs_kh + iw0 + (ptrdiff_t)kw * DW] * wrow[kh * KW + kw];
        s += b0;
        if (relu) s = s < 0 ? (FC_T)0 : s;
        orow[ow] = s;
    }
    const FCV bv = FCV_SET1(b0);
    ptrdiff_t ow = ow_a;
    for (; ow + 4 * FCV_L <= ow_b; ow += 4 * FCV_L) {
        FCV acc0 = FCV_ZERO(), acc1 = FCV_ZERO(), acc2 = FCV_ZERO(), acc3 = FCV_ZERO();
        for (int kh = 0; kh < nkh; kh++) {
            const FC_T *xk = xrow + kh * xs_kh + (ow - pl);
            for (int kw = 0; kw < KW; kw++) {
                const FCV wv = FCV_SET1(wrow[kh * KW + kw]);
                const FC_T *xs = xk + (ptrdiff_t)kw * DW;
                acc0 = FCV_FMA(FCV_LOAD(xs), wv, acc0);
                acc1 = FCV_FMA(FCV_LOAD(xs + FCV_L), wv, acc1);
                acc2 = FCV_FMA(FCV_LOAD(xs + 2 * FCV_L), wv, acc2);
                acc3 = FCV_FMA(FCV_LOAD(xs + 3 * FCV_L), wv, acc3);
            }
        }
        acc0 = FCV_ADD(acc0, bv);
        acc1 = FCV_ADD(acc1, bv);
        acc2 = FCV_ADD(acc2, bv);
        acc3 = FCV_ADD(acc3, bv);
        if (relu) {
            acc0 = FCV_RELU(acc0);
            acc1 = FCV_RELU(acc1);
            acc2 = FCV_RELU(acc2);
            acc3 = FCV_RELU(acc3);
        }
        FCV_STORE(orow + ow, acc0);
        FCV_STORE(orow + ow + FCV_L, acc1);
        FCV_STORE(orow + ow + 2 * FCV_L, acc2);
        FCV_STORE(orow + ow + 3 * FCV_L, acc3);
    }
    for (; ow < ow_b; ow += FCV_L) {
        const int cnt = (ow_b - ow) < FCV_L ? (int)(ow_b - ow) : FCV_L;
        FCV acc = FCV_ZERO();
        for (int kh = 0; kh < nkh; kh++) {
            const FC_T *xk = xrow + kh * xs_kh + (ow - pl);
            for (int kw = 0; kw < KW; kw++)
                acc = FCV_FMA(FCV_LOADN(xk + (ptrdiff_t)kw * DW, cnt), FCV_SET1(wrow[kh * KW + kw]),
                              acc);
        }
        acc = FCV_ADD(acc, bv);
        if (relu) acc = FCV_RELU(acc);
        FCV_STOREN(orow + ow, acc, cnt);
    }
}

static void FN(fc_conv_item)(const fc_conv_args *a, ptrdiff_t item)
{
    if (a->kind == FC_KIND_WIDTH) FN(fc_row_width)(a, item);
    else if (a->kind == FC_KIND_DEPTHWISE) FN(fc_row_depthwise)(a, item);
    else FN(fc_row_general)(a, item);
    if (a->stream) FCV_SFENCE();   /* streamed lines visible before the item counts as done */
}

#undef FN
#undef FC_UNROLL
#undef FC_NVMAX
#undef FC_TILE_NV
#undef FC_UR_FULL
#undef FC_UR_SPEC
#undef FC_SUB_NV
#undef FC_URMAX
#undef FC_TILE_CASES
#undef FC_PLAIN_CASES
#undef FC_PLAIN_NV
#undef FC_DW_UR
#undef FC_DW_CASES
#undef FC_CASES3
#undef FC_CASES4
#undef FC_CASES6
#undef FC_CASES8
#undef FC_CASES12
#undef FC_STORE_TILE
#undef FC_OPAQUE
#undef FC_SIMD_HEADER
#undef FC_SUFFIX
#undef FC_T
#undef FC_DOUBLE
#undef FC_LEVEL_GENERIC
#include "fc_simd_undef.h"
