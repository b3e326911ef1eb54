/* Template body of the NHWC max-pool row kernel; included by fc_pool.h once
 * per (dtype, SIMD level) with these macros defined (no include guard on
 * purpose):
 *   FC_T          element type                FC_V     vector type
 *   FC_M          NaN-mask type               FC_L     lanes per vector
 *   FC_ATTR       target attribute or empty   FC_FN(n) n with the suffix appended
 *   FC_LD(p)      unaligned load              FC_ST(p, v) unaligned store
 *   FC_MAX(a, b)  lane-wise maximum (NaN handled separately)
 *   FC_UNORD(a,b) mask of lanes where a or b is NaN
 *   FC_MOR(a, b)  mask union                  FC_MZERO empty mask
 *   FC_FIX(v, m)  v with the lanes in m set to NaN
 */

/* channels below which a row takes the narrow path: the vector width, or on
 * the portable path what 16 bytes hold (with more channels its strided picks
 * cost more than the per-channel loops of the wide path) */
#define FC_NARROW_C (FC_L > 1 ? (ptrdiff_t)FC_L : (ptrdiff_t)(16 / sizeof(FC_T)))
/* NaN-propagating maximum of two vectors (a NaN lane gives the canonical NaN) */
#define FC_NMAX(a, b) FC_FIX(FC_MAX((a), (b)), FC_UNORD((a), (b)))
/* the same for scalars: MAXPS's choice (first operand when greater) on non-NaN */
#define FC_NMAX1(a, b) ((((a) != (a)) | ((b) != (b))) ? (FC_T)NAN : ((a) > (b) ? (a) : (b)))

/* Narrow-channel path (C below the vector width), vectorized along W.  The
 * output row is done in segments of output columns whose input columns fit
 * FC_POOL_NARROW_BUF elements of scratch t, flat over (column, channel):
 *   1. t = maximum over the valid window rows of those input columns --
 *      contiguous runs of W*C elements, so whole vectors; columns outside the
 *      input hold -inf, which a real value or NaN always beats, so padding is
 *      never picked (an all-padding window gives -inf, as the wide path);
 *   2. in place, t[j] = maximum over kw of t[j + kw*DW*C] (contiguous again);
 *   3. the output picks t at each window's first column (every SW-th column).
 * NaN propagates through every step (FC_NMAX).  The caller checks that one
 * window's span fits half the scratch row (fc_maxpool_narrow_fits). */
FC_ATTR static inline void FC_FN(fc_maxpool_row_narrow)(
        const FC_T *x, FC_T *y, ptrdiff_t H, ptrdiff_t W, ptrdiff_t C,
        int KH, int KW, int SH, int SW, int DH, int DW, int top, int left,
        ptrdiff_t OW, ptrdiff_t oh) {
    FC_T t[FC_POOL_NARROW_BUF];
    const ptrdiff_t reach = ((ptrdiff_t)(KW - 1) * DW + 1) * C;  /* one window's span */
    const ptrdiff_t h0 = oh * SH - top;
    const int kh_lo = fc_first_tap(h0, DH);
    const int kh_hi = fc_end_tap(h0, DH, KH, H);
    if (kh_hi <= kh_lo) {  /* only padding rows: nothing to pick */
        for (ptrdiff_t i = 0; i < OW * C; i++) y[i] = -(FC_T)INFINITY;
        return;
    }
    const ptrdiff_t sh = (ptrdiff_t)DH * W * C, sw = (ptrdiff_t)DW * C;
    const ptrdiff_t sc = (ptrdiff_t)SW * C;
    const ptrdiff_t seg = (FC_POOL_NARROW_BUF - reach) / sc + 1;  /* output columns */
    const FC_T *row0 = x + (h0 + (ptrdiff_t)kh_lo * DH) * W * C;
    for (ptrdiff_t o0 = 0; o0 < OW; o0 += seg) {
        const ptrdiff_t no = (OW - o0 < seg) ? OW - o0 : seg;
        const ptrdiff_t c0 = o0 * SW - left;               /* first input column read */
        const ptrdiff_t ncol = (no - 1) * SW + (ptrdiff_t)(KW - 1) * DW + 1;
        const ptrdiff_t n = ncol * C;
        ptrdiff_t v0 = c0 < 0 ? -c0 : 0, v1 = W - c0;      /* valid columns [v0, v1) */
        if (v0 > ncol) v0 = ncol;
        if (v1 > ncol) v1 = ncol;
        if (v1 < v0) v1 = v0;
        for (ptrdiff_t i = 0; i < v0 * C; i++) t[i] = -(FC_T)INFINITY;
        for (ptrdiff_t i = v1 * C; i < n; i++) t[i] = -(FC_T)INFINITY;
        /* 1. vertical maximum over the valid rows */
        const FC_T *src = row0 + (c0 + v0) * C;
        FC_T *tv = t + v0 * C;
        const ptrdiff_t len = (v1 - v0) * C;
        const ptrdiff_t m = (no - 1) * sc + C;  /* window starts needed */
        ptrdiff_t j = 0;
#if FC_L == 1
        /* portable path: one pass per tap over the whole run, so that each inner
         * loop is contiguous and independent (the compiler vectorizes it); the
         * horizontal maximum goes to a second row, u */
        FC_T u[FC_POOL_NARROW_BUF];
        for (j = 0; j < len; j++) tv[j] = src[j];
        for (int kh = kh_lo + 1; kh < kh_hi; kh++) {
            const FC_T *rk = src + (kh - kh_lo) * sh;
            for (j = 0; j < len; j++) tv[j] = FC_NMAX1(tv[j], rk[j]);
        }
        for (j = 0; j < m; j++) u[j] = t[j];
        for (int kw = 1; kw < KW; kw++) {
            const FC_T *tk = t + kw * sw;
            for (j = 0; j < m; j++) u[j] = FC_NMAX1(u[j], tk[j]);
        }
        FC_T *yo = y + o0 * C;
        if (sc == C) {
            for (ptrdiff_t i = 0; i < no * C; i++) yo[i] = u[i];
        } else {
            for (ptrdiff_t o = 0; o < no; o++)
                for (ptrdiff_t c = 0; c < C; c++) yo[o * C + c] = u[o * sc + c];
        }
#else
        for (; j + FC_L <= len; j += FC_L) {
            FC_V a = FC_LD(src + j);
            for (int kh = kh_lo + 1; kh < kh_hi; kh++) {
                FC_V v = FC_LD(src + (kh - kh_lo) * sh + j);
                a = FC_NMAX(a, v);
            }
            FC_ST(tv + j, a);
        }
        for (; j < len; j++) {
            FC_T a = src[j];
            for (int kh = kh_lo + 1; kh < kh_hi; kh++) {
                FC_T v = src[(kh - kh_lo) * sh + j];
                a = FC_NMAX1(a, v);
            }
            tv[j] = a;
        }
        /* 2. horizontal maximum over the window's columns, in place (every
         * read of a step is at or after the element it writes) */
        if (KW > 1) {
            j = 0;
            for (; j + FC_L <= m; j += FC_L) {
                FC_V a = FC_LD(t + j);
                for (int kw = 1; kw < KW; kw++) {
                    FC_V v = FC_LD(t + j + kw * sw);
                    a = FC_NMAX(a, v);
                }
                FC_ST(t + j, a);
            }
            for (; j < m; j++) {
                FC_T a = t[j];
                for (int kw = 1; kw < KW; kw++) {
                    FC_T v = t[j + kw * sw];
                    a = FC_NMAX1(a, v);
                }
                t[j] = a;
            }
        }
        /* 3. one pick per output element */
        FC_T *yo = y + o0 * C;
        if (sc == C) {
            for (ptrdiff_t i = 0; i < no * C; i++) yo[i] = t[i];
        } else {
            for (ptrdiff_t o = 0; o < no; o++)
                for (ptrdiff_t c = 0; c < C; c++) yo[o * C + c] = t[o * sc + c];
        }
#endif
    }
}
#undef FC_NMAX
#undef FC_NMAX1

/* Pool one output row (n, oh) of an NHWC image: x points at image n
 * (H x W x C), y at the output row (OW x C). */
FC_ATTR static inline void FC_FN(fc_maxpool_row)(
        const FC_T *x, FC_T *y, ptrdiff_t H, ptrdiff_t W, ptrdiff_t C,
        int KH, int KW, int SH, int SW, int DH, int DW, int top, int left,
        ptrdiff_t OW, ptrdiff_t oh) {
    if (fc_maxpool_narrow_fits(C, C < FC_NARROW_C, KW, SW, DW)) {
        FC_FN(fc_maxpool_row_narrow)(x, y, H, W, C, KH, KW, SH, SW, DH, DW, top, left, OW, oh);
        return;
    }
    const ptrdiff_t CV = C - C % FC_L;  /* channels covered by whole vectors */
    const ptrdiff_t h0 = oh * SH - top;
    const int kh_lo = fc_first_tap(h0, DH);
    const int kh_hi = fc_end_tap(h0, DH, KH, H);
    for (ptrdiff_t ow = 0; ow < OW; ow++) {
        const ptrdiff_t w0 = ow * SW - left;
        const int kw_lo = fc_first_tap(w0, DW);
        const int kw_hi = fc_end_tap(w0, DW, KW, W);
        FC_T *yp = y + ow * C;
        if (kh_hi <= kh_lo || kw_hi <= kw_lo) {  /* only padding: nothing to pick */
            for (ptrdiff_t c = 0; c < C; c++) yp[c] = -(FC_T)INFINITY;
            continue;
        }
        const FC_T *base = x + ((h0 + (ptrdiff_t)kh_lo * DH) * W + w0 + (ptrdiff_t)kw_lo * DW) * C;
        const ptrdiff_t sh = (ptrdiff_t)DH * W * C, sw = (ptrdiff_t)DW * C;
        if (kh_hi - kh_lo == 2 && kw_hi - kw_lo == 2) {
            /* full 2x2 window (the common 2x2/2 pool): 4 loads, 3 max, 2 NaN tests */
            const FC_T *p00 = base, *p01 = base + sw, *p10 = base + sh, *p11 = base + sh + sw;
            ptrdiff_t c = 0;
            for (; c < CV; c += FC_L) {
                FC_V a = FC_LD(p00 + c), b = FC_LD(p01 + c);
                FC_V d = FC_LD(p10 + c), e = FC_LD(p11 + c);
                FC_M m = FC_MOR(FC_UNORD(a, b), FC_UNORD(d, e));
                FC_ST(yp + c, FC_FIX(FC_MAX(FC_MAX(a, b), FC_MAX(d, e)), m));
            }
            for (; c < C; c++) {
                FC_T acc = p00[c], v;
                v = p01[c]; if (v > acc || v != v) acc = v;
                v = p10[c]; if (acc == acc && (v > acc || v != v)) acc = v;
                v = p11[c]; if (acc == acc && (v > acc || v != v)) acc = v;
                yp[c] = acc;
            }
            continue;
        }
#if FC_L == 1
        /* portable path: accumulate in the output row, tap by tap, so the
         * inner loop runs over contiguous channels (auto-vectorizable) */
        for (ptrdiff_t c = 0; c < C; c++) yp[c] = base[c];
        for (int kh = kh_lo; kh < kh_hi; kh++) {
            for (int kw = kw_lo; kw < kw_hi; kw++) {
                const FC_T *tap = base + (kh - kh_lo) * sh + (kw - kw_lo) * sw;
                for (ptrdiff_t c = 0; c < C; c++) {
                    FC_T v = tap[c], m = yp[c];
                    yp[c] = (m == m && (v > m || v != v)) ? v : m;
                }
            }
        }
        continue;
#endif
        ptrdiff_t c = 0;
        /* four channel vectors at once: four independent max chains */
        for (; c + 4 * FC_L <= CV; c += 4 * FC_L) {
            FC_V a0 = FC_LD(base + c), a1 = FC_LD(base + c + FC_L);
            FC_V a2 = FC_LD(base + c + 2 * FC_L), a3 = FC_LD(base + c + 3 * FC_L);
            FC_M m0 = FC_UNORD(a0, a0), m1 = FC_UNORD(a1, a1);
            FC_M m2 = FC_UNORD(a2, a2), m3 = FC_UNORD(a3, a3);
            for (int kh = kh_lo; kh < kh_hi; kh++) {
                const FC_T *row = base + (kh - kh_lo) * sh + c;
                for (int kw = kw_lo; kw < kw_hi; kw++) {
                    const FC_T *p = row + (kw - kw_lo) * sw;
                    FC_V v0 = FC_LD(p), v1 = FC_LD(p + FC_L);
                    FC_V v2 = FC_LD(p + 2 * FC_L), v3 = FC_LD(p + 3 * FC_L);
                    m0 = FC_MOR(m0, FC_UNORD(v0, v0));
                    m1 = FC_MOR(m1, FC_UNORD(v1, v1));
                    m2 = FC_MOR(m2, FC_UNORD(v2, v2));
                    m3 = FC_MOR(m3, FC_UNORD(v3, v3));
                    a0 = FC_MAX(a0, v0);
                    a1 = FC_MAX(a1, v1);
                    a2 = FC_MAX(a2, v2);
                    a3 = FC_MAX(a3, v3);
                }
            }
            FC_ST(yp + c, FC_FIX(a0, m0));
            FC_ST(yp + c + FC_L, FC_FIX(a1, m1));
            FC_ST(yp + c + 2 * FC_L, FC_FIX(a2, m2));
            FC_ST(yp + c + 3 * FC_L, FC_FIX(a3, m3));
        }
        for (; c < CV; c += FC_L) {
            FC_V acc = FC_LD(base + c);
            FC_M m = FC_UNORD(acc, acc);
            for (int kh = kh_lo; kh < kh_hi; kh++) {
                const FC_T *row = base + (kh - kh_lo) * sh + c;
                for (int kw = kw_lo; kw < kw_hi; kw++) {
                    FC_V v = FC_LD(row + (kw - kw_lo) * sw);
                    m = FC_MOR(m, FC_UNORD(v, v));
                    acc = FC_MAX(acc, v);
                }
            }
            FC_ST(yp + c, FC_FIX(acc, m));
        }
        for (; c < C; c++) {
            FC_T acc = base[c];
            for (int kh = kh_lo; kh < kh_hi; kh++) {
                const FC_T *row = base + (kh - kh_lo) * sh + c;
                for (int kw = kw_lo; kw < kw_hi; kw++) {
                    FC_T v = row[(kw - kw_lo) * sw];
                    if (acc == acc && (v > acc || v != v)) acc = v;
                }
            }
            yp[c] = acc;
        }
    }
}
#undef FC_NARROW_C
