# Every C entry point of fastconv's compiled kernels, declared once.
#
# The kernels are static inline C functions in src_cython/include/; each .pyx
# cimports what it calls from here ("from fastconv_c cimport ...").  The
# headers carry the documentation of each function.

cdef extern from "fc_cpu.h" nogil:
    int FC_SIMD_GENERIC
    int FC_SIMD_AVX2
    int FC_SIMD_AVX512
    int fc_openmp_enabled()
    int fc_cpu_simd_level()
    int fc_team_size()
    int fc_thread_num()

cdef extern from "fc_window.h" nogil:
    Py_ssize_t fc_rows_per_chunk(Py_ssize_t rows, double row_work, double work, int team)

cdef extern from "fc_relu.h" nogil:
    void fc_relu_f32_nt(const float *x, float *y, Py_ssize_t n, int simd, int stream)
    void fc_relu_f64_nt(const double *x, double *y, Py_ssize_t n, int simd, int stream)
    void fc_relu_grad_f32(const float *f, const float *dy, float *dx, Py_ssize_t n, int simd,
                          int stream)
    void fc_relu_grad_f64(const double *f, const double *dy, double *dx, Py_ssize_t n,
                          int simd, int stream)
    void fc_bias_relu_f32(float *out, Py_ssize_t rows, Py_ssize_t O, Py_ssize_t ldo,
                          const float *bias, int relu, int simd)
    void fc_bias_relu_f64(double *out, Py_ssize_t rows, Py_ssize_t O, Py_ssize_t ldo,
                          const double *bias, int relu, int simd)

cdef extern from "fc_pool.h" nogil:
    void fc_maxpool_row_f32(const void *x, void *y, Py_ssize_t H, Py_ssize_t W, Py_ssize_t C,
                            int KH, int KW, int SH, int SW, int DH, int DW, int top, int left,
                            Py_ssize_t OW, Py_ssize_t oh, int simd)
    void fc_maxpool_row_f64(const void *x, void *y, Py_ssize_t H, Py_ssize_t W, Py_ssize_t C,
                            int KH, int KW, int SH, int SW, int DH, int DW, int top, int left,
                            Py_ssize_t OW, Py_ssize_t oh, int simd)

cdef extern from "fc_im2col.h" nogil:
    void fc_im2col_rows(const void *x, void *col, size_t es, Py_ssize_t H, Py_ssize_t W,
                        Py_ssize_t C, int KH, int KW, int SH, int SW, int DH, int DW,
                        int top, int left, Py_ssize_t OH, Py_ssize_t OW, int groups,
                        Py_ssize_t p0, Py_ssize_t p1, Py_ssize_t ldcol)

cdef extern from "fc_conv_direct.h" nogil:
    ctypedef struct fc_conv_args:
        const void *x
        const void *w
        const void *bias
        void *out
        Py_ssize_t N, H, W, C, OH, OW, O
        int KH, KW, Cg, Og, groups
        int SH, SW, DH, DW, pt, pl
        int relu
        int kind
        int level
        int is_double
        int packed
        int OB
        int nb
        int block_major
        int RG
        int CC
        int stream
    ctypedef void (*fc_conv_item_fn)(const fc_conv_args *a, Py_ssize_t item) noexcept nogil
    int FC_KIND_GENERAL
    int FC_KIND_DEPTHWISE
    int FC_KIND_WIDTH
    Py_ssize_t fc_conv_direct_items(const fc_conv_args *a)
    void fc_conv_direct_item(const fc_conv_args *a, Py_ssize_t item)
    fc_conv_item_fn fc_conv_direct_kernel(const fc_conv_args *a)
    int fc_conv_block_channels(int level, int is_double, int KH, int KW, int Cg)
    int fc_conv_dw_block_channels(int level, int is_double)
    int fc_conv_vector_lanes(int level, int is_double)
    void fc_pack_filters(const void *w, void *packed, size_t size, int KH, int KW, int Cg,
                         Py_ssize_t O, int groups, int OB, int nb)
    int fc_conv_size_bytes()
    int fc_flag_get(const int *flag)
    void fc_flag_set(int *flag)

from libc.stdint cimport int64_t

cdef extern from "fc_col2im.h" nogil:
    void fc_col2im_row_f32(const float *cols, float *out, Py_ssize_t H, Py_ssize_t W,
                           Py_ssize_t C, int KH, int KW, int SH, int SW, int DH, int DW,
                           int top, int left, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t n,
                           Py_ssize_t h)
    void fc_col2im_row_f64(const double *cols, double *out, Py_ssize_t H, Py_ssize_t W,
                           Py_ssize_t C, int KH, int KW, int SH, int SW, int DH, int DW,
                           int top, int left, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t n,
                           Py_ssize_t h)

cdef extern from "fc_pool_backward.h" nogil:
    void fc_maxpool_argmax_row_f32(const float *x, float *y, int64_t *idx, Py_ssize_t H,
                                   Py_ssize_t W, Py_ssize_t C, int KH, int KW, int SH, int SW,
                                   int DH, int DW, int top, int left, Py_ssize_t OW,
                                   Py_ssize_t oh, int simd)
    void fc_maxpool_argmax_row_f64(const double *x, double *y, int64_t *idx, Py_ssize_t H,
                                   Py_ssize_t W, Py_ssize_t C, int KH, int KW, int SH, int SW,
                                   int DH, int DW, int top, int left, Py_ssize_t OW,
                                   Py_ssize_t oh, int simd)
    Py_ssize_t fc_maxpool_scatter_f32(const float *dy, const int64_t *index, float *grad,
                                      Py_ssize_t i0, Py_ssize_t i1, int64_t base,
                                      int64_t size)
    Py_ssize_t fc_maxpool_scatter_f64(const double *dy, const int64_t *index, double *grad,
                                      Py_ssize_t i0, Py_ssize_t i1, int64_t base,
                                      int64_t size)
