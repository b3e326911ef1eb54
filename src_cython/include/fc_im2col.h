/* im2col for NHWC input: one row of the column matrix per output pixel.
 *
 * Row p = (n*OH + oh)*OW + ow holds the window of output pixel (n, oh, ow),
 * its columns ordered (g, kh, kw, c') for group g and channel c' < Cg = C/groups:
 *   col[p, ((g*KH + kh)*KW + kw)*Cg + c'] =
 *       x[n, oh*SH - top + kh*DH, ow*SW - left + kw*DW, g*Cg + c']
 * and 0 where the tap is outside the input.  With groups == 1 this is the
 * usual (kh, kw, c) order; grouping the columns by g makes each group's
 * K = KH*KW*Cg columns one contiguous slice, so a grouped convolution is one
 * GEMM per group on that slice (Chellapilla et al., 2006, "High Performance
 * Convolutional Neural Networks for Document Processing", for im2col + GEMM).
 *
 * The copy is dtype-agnostic (element size `es` in bytes): NHWC keeps the C
 * channels of a pixel contiguous, and with DW == 1 and groups == 1 a whole
 * kernel row (KW*C elements) is one memcpy.
 */
#ifndef FASTCONV_FC_IM2COL_H
#define FASTCONV_FC_IM2COL_H

#include <stddef.h>
#include <string.h>
#include "fc_window.h"

/* Write the rows of output pixels p0 <= p < p1 to col + (p - p0)*ldcol
 * (ldcol in elements, >= KH*KW*C). x is the whole (N, H, W, C) input. */
static inline void fc_im2col_rows(const void *x_, void *col_, size_t es,
                                  ptrdiff_t H, ptrdiff_t W, ptrdiff_t C,
                                  int KH, int KW, int SH, int SW, int DH, int DW,
                                  int top, int left, ptrdiff_t OH, ptrdiff_t OW, int groups,
                                  ptrdiff_t p0, ptrdiff_t p1, ptrdiff_t ldcol) {
    const char *x = (const char *)x_;
    char *col = (char *)col_;
    const ptrdiff_t Cg = C / groups;
    const size_t row_bytes = (size_t)KW * C * es;  /* one kernel row, groups == 1 */
    for (ptrdiff_t p = p0; p < p1; p++) {
        const ptrdiff_t n = p / (OH * OW), r = p % (OH * OW), oh = r / OW, ow = r % OW;
        const ptrdiff_t h0 = oh * SH - top, w0 = ow * SW - left;
        const int kh_lo = fc_first_tap(h0, DH), kh_hi = fc_end_tap(h0, DH, KH, H);
        const int kw_lo = fc_first_tap(w0, DW), kw_hi = fc_end_tap(w0, DW, KW, W);
        char *dst = col + (size_t)(p - p0) * ldcol * es;
        const char *img = x + (size_t)n * H * W * C * es;
        if (groups == 1) {
            for (int kh = 0; kh < KH; kh++) {
                char *d = dst + (size_t)kh * row_bytes;
                if (kh < kh_lo || kh >= kh_hi || kw_lo >= kw_hi) {
                    memset(d, 0, row_bytes);
                    continue;
                }
                const char *src = img + ((size_t)(h0 + (ptrdiff_t)kh * DH) * W) * C * es;
                if (DW == 1) {
                    size_t before = (size_t)kw_lo * C * es;
                    size_t inside = (size_t)(kw_hi - kw_lo) * C * es;
                    if (before) memset(d, 0, before);
                    memcpy(d + before, src + (size_t)(w0 + kw_lo) * C * es, inside);
                    if (before + inside < row_bytes)
                        memset(d + before + inside, 0, row_bytes - before - inside);
                } else {
                    for (int kw = 0; kw < KW; kw++) {
                        char *dk = d + (size_t)kw * C * es;
                        if (kw < kw_lo || kw >= kw_hi)
                            memset(dk, 0, (size_t)C * es);
                        else
                            memcpy(dk, src + (size_t)(w0 + (ptrdiff_t)kw * DW) * C * es,
                                   (size_t)C * es);
                    }
                }
            }
            continue;
        }
        const size_t cg_bytes = (size_t)Cg * es;
        for (int kh = 0; kh < KH; kh++) {
            const int hin = kh >= kh_lo && kh < kh_hi;
            const char *src = img + ((size_t)(h0 + (ptrdiff_t)kh * DH) * W) * C * es;
            for (int kw = 0; kw < KW; kw++) {
                const int in = hin && kw >= kw_lo && kw < kw_hi;
                const char *s = src + (size_t)(w0 + (ptrdiff_t)kw * DW) * C * es;
                for (int g = 0; g < groups; g++) {
                    char *d = dst + (((size_t)g * KH + kh) * KW + kw) * cg_bytes;
                    if (in)
                        memcpy(d, s + (size_t)g * cg_bytes, cg_bytes);
                    else
                        memset(d, 0, cg_bytes);
                }
            }
        }
    }
}

#endif
