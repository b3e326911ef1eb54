/* ReLU, y = max(x, 0), and its gradient, over contiguous runs of floats or doubles.
 *
 * NaN semantics: MAXPS/MAXPD return their SECOND operand when either operand
 * is NaN (Intel SDM, "MAXPS"), so the kernels compute max(0, x) with x
 * second (FCV_RELU): NaN stays NaN and -inf becomes 0, as tf.nn.relu and
 * torch.relu do; the portable path writes the same rule as a comparison.
 * The gradient passes dy where the value is > 0 (an ordered compare: a NaN
 * value gives 0), as TensorFlow's ReluGrad and PyTorch's threshold_backward.
 *
 * One body (fc_relu_impl.h) written against the SIMD vocabulary is compiled
 * per SIMD level, each variant carrying its GCC target attribute, so the
 * module is built without -march and the caller picks the level at run time
 * from fc_cpu_simd_level() (see fc_cpu.h).  Outputs may equal an input.
 */
#ifndef FASTCONV_FC_RELU_H
#define FASTCONV_FC_RELU_H

#include <stddef.h>
#include <stdint.h>
#include "fc_cpu.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define FC_HAVE_X86 1
#else
#define FC_HAVE_X86 0
#endif

/* The kernels of fc_relu_impl.h, once per dtype and SIMD level. */
#define FC_FN(name) name##_f32_generic
#define FC_DOUBLE 0
#define FC_T float
#include "fc_simd_generic.h"
#include "fc_relu_impl.h"
#include "fc_simd_undef.h"
#undef FC_FN
#undef FC_DOUBLE
#undef FC_T
#define FC_FN(name) name##_f64_generic
#define FC_DOUBLE 1
#define FC_T double
#include "fc_simd_generic.h"
#include "fc_relu_impl.h"
#include "fc_simd_undef.h"
#undef FC_FN
#undef FC_DOUBLE
#undef FC_T
#if FC_HAVE_X86
#define FC_FN(name) name##_f32_avx2
#define FC_DOUBLE 0
#define FC_T float
#include "fc_simd_avx2.h"
#include "fc_relu_impl.h"
#include "fc_simd_undef.h"
#undef FC_FN
#undef FC_DOUBLE
#undef FC_T
#define FC_FN(name) name##_f64_avx2
#define FC_DOUBLE 1
#define FC_T double
#include "fc_simd_avx2.h"
#include "fc_relu_impl.h"
#include "fc_simd_undef.h"
#undef FC_FN
#undef FC_DOUBLE
#undef FC_T
#define FC_FN(name) name##_f32_avx512
#define FC_DOUBLE 0
#define FC_T float
#include "fc_simd_avx512.h"
#include "fc_relu_impl.h"
#include "fc_simd_undef.h"
#undef FC_FN
#undef FC_DOUBLE
#undef FC_T
#define FC_FN(name) name##_f64_avx512
#define FC_DOUBLE 1
#define FC_T double
#include "fc_simd_avx512.h"
#include "fc_relu_impl.h"
#include "fc_simd_undef.h"
#undef FC_FN
#undef FC_DOUBLE
#undef FC_T
#endif

/* Dispatch on the SIMD level chosen by the caller (FC_SIMD_*).  `stream` asks for
 * non-temporal stores (honoured out of place only, and not by the portable path). */
#if FC_HAVE_X86
#define FC_RELU_DISPATCH(SUFFIX, CALL)                                                  \
    if (simd >= FC_SIMD_AVX512) { CALL(SUFFIX##_avx512); return; }                      \
    if (simd >= FC_SIMD_AVX2) { CALL(SUFFIX##_avx2); return; }                          \
    CALL(SUFFIX##_generic)
#else
#define FC_RELU_DISPATCH(SUFFIX, CALL) CALL(SUFFIX##_generic)
#endif

#define FC_RELU_CALL(V) fc_relu_run_##V(x, y, n, stream && x != y)
static inline void fc_relu_f32_nt(const float *x, float *y, ptrdiff_t n, int simd, int stream) {
    FC_RELU_DISPATCH(f32, FC_RELU_CALL);
}
static inline void fc_relu_f64_nt(const double *x, double *y, ptrdiff_t n, int simd, int stream) {
    FC_RELU_DISPATCH(f64, FC_RELU_CALL);
}
#undef FC_RELU_CALL
static inline void fc_relu_f32(const float *x, float *y, ptrdiff_t n, int simd) {
    fc_relu_f32_nt(x, y, n, simd, 0);
}
static inline void fc_relu_f64(const double *x, double *y, ptrdiff_t n, int simd) {
    fc_relu_f64_nt(x, y, n, simd, 0);
}

/* dx = dy where f > 0, else +0 (the ReLU's gradient; f its input or output, NaN f
 * gives 0); dx may be dy or f.  `stream` as for fc_relu_f32_nt. */
#define FC_RELU_GRAD_CALL(V) fc_relu_grad_run_##V(f, dy, dx, n, stream && dx != dy && dx != f)
static inline void fc_relu_grad_f32(const float *f, const float *dy, float *dx, ptrdiff_t n,
                                    int simd, int stream) {
    FC_RELU_DISPATCH(f32, FC_RELU_GRAD_CALL);
}
static inline void fc_relu_grad_f64(const double *f, const double *dy, double *dx, ptrdiff_t n,
                                    int simd, int stream) {
    FC_RELU_DISPATCH(f64, FC_RELU_GRAD_CALL);
}
#undef FC_RELU_GRAD_CALL
#undef FC_RELU_DISPATCH

/* out[r, o] = relu?(out[r, o] + bias[o]) for rows r < rows of a row-major
 * (rows x O) block with leading dimension ldo; bias may be NULL. */
static inline void fc_bias_relu_f32(float *out, ptrdiff_t rows, ptrdiff_t O, ptrdiff_t ldo,
                                    const float *bias, int relu, int simd) {
    for (ptrdiff_t r = 0; r < rows; r++) {
        float *row = out + r * ldo;
        if (bias)
            for (ptrdiff_t o = 0; o < O; o++) row[o] += bias[o];
        if (relu) fc_relu_f32(row, row, O, simd);
    }
}

static inline void fc_bias_relu_f64(double *out, ptrdiff_t rows, ptrdiff_t O, ptrdiff_t ldo,
                                    const double *bias, int relu, int simd) {
    for (ptrdiff_t r = 0; r < rows; r++) {
        double *row = out + r * ldo;
        if (bias)
            for (ptrdiff_t o = 0; o < O; o++) row[o] += bias[o];
        if (relu) fc_relu_f64(row, row, O, simd);
    }
}

#endif
