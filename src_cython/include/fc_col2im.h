/* col2im for NHWC images: the adjoint of fc_im2col_rows (groups == 1).
 *
 * cols is (N, OH, OW, KH, KW, C); every entry is added back to the pixel
 * im2col read it from:
 *   out[n, oh*SH - top + kh*DH, ow*SW - left + kw*DW, c] += cols[n, oh, ow, kh, kw, c]
 * and entries that fall in the padding are dropped.
 *
 * The work is one input row (n, h) per call: the row gathers every (oh, kh)
 * with oh*SH + kh*DH - top == h, so no two calls write the same element and a
 * parallel loop over rows needs no atomics.  Within a row an element receives
 * its terms in (kh, kw) order, whatever the thread count: results are
 * bitwise identical for any number of threads (and equal to the NumPy
 * reference's tap-by-tap sum when out starts at zero).
 */
#ifndef FASTCONV_FC_COL2IM_H
#define FASTCONV_FC_COL2IM_H

#include <stddef.h>

#define FC_COL2IM_DEFINE(T, SUFFIX)                                                          \
/* Add the contributions of cols to row h of image n of out (out += ...). */              \
static inline void fc_col2im_row_##SUFFIX(                                                   \
        const T *cols, T *out, ptrdiff_t H, ptrdiff_t W, ptrdiff_t C, int KH, int KW,       \
        int SH, int SW, int DH, int DW, int top, int left, ptrdiff_t OH, ptrdiff_t OW,      \
        ptrdiff_t n, ptrdiff_t h) {                                                          \
    const ptrdiff_t K = (ptrdiff_t)KH * KW * C;                                              \
    T *orow = out + ((size_t)n * H + h) * W * C;                                             \
    for (int kh = 0; kh < KH; kh++) {                                                        \
        const ptrdiff_t t = h + top - (ptrdiff_t)kh * DH;                                    \
        if (t < 0) break;                                                                    \
        if (t % SH) continue;                                                                \
        const ptrdiff_t oh = t / SH;                                                         \
        if (oh >= OH) continue;                                                              \
        const T *crow = cols + ((size_t)n * OH + oh) * OW * K;                               \
        for (int kw = 0; kw < KW; kw++) {                                                    \
            const ptrdiff_t off = (ptrdiff_t)kw * DW - left;                                 \
            const ptrdiff_t last = W - 1 - off;                                              \
            if (last < 0) break;                                                             \
            ptrdiff_t lo = off < 0 ? (-off + SW - 1) / SW : 0;                               \
            ptrdiff_t hi = last / SW + 1;                                                    \
            if (hi > OW) hi = OW;                                                            \
            for (ptrdiff_t ow = lo; ow < hi; ow++) {                                         \
                const T *src = crow + (size_t)ow * K + ((size_t)kh * KW + kw) * C;           \
                T *dst = orow + (size_t)(ow * SW + off) * C;                                 \
                for (ptrdiff_t c = 0; c < C; c++) dst[c] += src[c];                          \
            }                                                                                \
        }                                                                                    \
    }                                                                                        \
}

FC_COL2IM_DEFINE(float, f32)
FC_COL2IM_DEFINE(double, f64)
#undef FC_COL2IM_DEFINE

#endif
