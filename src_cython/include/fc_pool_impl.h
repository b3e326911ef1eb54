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

/* Pool one output row (n, oh) of an NHWC image: x points at image n
 * (H x W x C), y at the output row (OW x C). */
FC_ATTR static inline void FC_FN(fc_maxpool_row)(
        const FC_T *x, FC_T *y, ptrdiff_t H, ptrdiff_t W, ptrdiff_t C,
        int KH, int KW, int SH, int SW, int DH, int DW, int top, int left,
        ptrdiff_t OW, ptrdiff_t oh) {
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
