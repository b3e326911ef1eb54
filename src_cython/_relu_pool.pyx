"""Compiled ReLU, NHWC max pooling and im2col (fastconv's "cython" backend).

Each ``def`` receives arrays already checked by :mod:`fastconv._ops`
(C-contiguous, one dtype, float32 or float64, shapes consistent) and an
explicit SIMD level (``FC_SIMD_*`` of ``fc_cpu.h``); the SIMD kernels are
C intrinsics in ``fc_relu.h``, ``fc_pool.h`` and ``fc_im2col.h``.  Work is
split over OpenMP threads with ``prange``: ReLU in fixed chunks of
``RELU_CHUNK`` elements, pooling and im2col by output rows ``(n, oh)``, handed
out dynamically so that a thread slowed by another process on its core does
not hold the others up (the machines this runs on are often shared).  Every
output element is computed by the same code whatever the thread count, so
results are bitwise identical for any ``num_threads``.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int fc_team_size(void) { return omp_get_num_threads(); }
    static int fc_thread_num(void) { return omp_get_thread_num(); }
    #else
    static int fc_team_size(void) { return 1; }
    static int fc_thread_num(void) { return 0; }
    #endif
    """
    int fc_team_size() nogil
    int fc_thread_num() nogil

cdef extern from "fc_relu.h" nogil:
    void fc_relu_f32(const float *x, float *y, Py_ssize_t n, int simd)
    void fc_relu_f64(const double *x, double *y, Py_ssize_t n, int simd)
    void fc_relu_f32_nt(const float *x, float *y, Py_ssize_t n, int simd, int stream)
    void fc_relu_f64_nt(const double *x, double *y, Py_ssize_t n, int simd, int stream)

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

#: elements per ReLU task (128 KiB of float32): large enough to hide the
#: scheduling cost, small enough to balance two threads on 1 MB tensors.
RELU_CHUNK = 32768
cdef Py_ssize_t _RELU_CHUNK = RELU_CHUNK
#: an out-of-place ReLU writing at least this many bytes uses non-temporal
#: stores (half the 32 MB L3: such an output would not stay cached anyway).
STREAM_BYTES = 16 << 20


def parallel_team_size(int num_threads):
    """Threads OpenMP actually starts for ``parallel(num_threads=num_threads)``.

    The kernels above open their regions the same way, so this tells whether
    a requested thread count is honoured (1 in a build without OpenMP).
    """
    cdef int size = 0
    cdef int *p = &size
    with nogil, parallel(num_threads=num_threads):
        if fc_thread_num() == 0:
            p[0] = fc_team_size()
    return size


def relu(const floating[::1] x,   # IN
         floating[::1] out,       # OUT (may be x itself)
         int num_threads, int simd_level, stream=None):
    """``out = max(x, 0)`` elementwise; NaN stays NaN, -inf becomes 0.

    ``x`` and ``out`` are flat views of the same length; ``out`` may be the
    same buffer as ``x`` (in place).  Chunks of ``RELU_CHUNK`` elements are
    spread over ``num_threads`` OpenMP threads (dynamic schedule).  Out of
    place, outputs of ``STREAM_BYTES`` or more are written with non-temporal
    stores (``stream=None``); ``stream=True/False`` forces the choice.
    """
    cdef Py_ssize_t n = x.shape[0]
    cdef Py_ssize_t n_chunks = (n + _RELU_CHUNK - 1) // _RELU_CHUNK
    cdef Py_ssize_t i, start, size
    if n == 0:
        return
    cdef const floating *px = &x[0]
    cdef floating *py = &out[0]
    cdef int nt = (n * <Py_ssize_t> sizeof(floating) >= STREAM_BYTES) if stream is None \
        else bool(stream)
    if n_chunks == 1 or num_threads == 1:
        with nogil:
            if floating is float:
                fc_relu_f32_nt(px, py, n, simd_level, nt)
            else:
                fc_relu_f64_nt(px, py, n, simd_level, nt)
        return
    for i in prange(n_chunks, nogil=True, num_threads=num_threads, schedule="dynamic"):
        start = i * _RELU_CHUNK
        size = n - start
        if size > _RELU_CHUNK:
            size = _RELU_CHUNK
        if floating is float:
            fc_relu_f32_nt(px + start, py + start, size, simd_level, nt)
        else:
            fc_relu_f64_nt(px + start, py + start, size, simd_level, nt)


def max_pool2d(const floating[:, :, :, ::1] x,   # IN  (N, H, W, C)
               floating[:, :, :, ::1] out,       # OUT (N, OH, OW, C)
               int KH, int KW, int SH, int SW, int DH, int DW, int pad_top, int pad_left,
               int num_threads, int simd_level):
    """NHWC max pooling; taps in the padding are skipped, NaN propagates.

    ``out[n, oh, ow, c] = max_{kh, kw} x[n, oh*SH - pad_top + kh*DH, ow*SW - pad_left + kw*DW, c]``
    over the taps inside the input.  One task per output row ``(n, oh)``.
    """
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t OH = out.shape[1], OW = out.shape[2]
    cdef Py_ssize_t rows = N * OH, r, n, oh
    if rows == 0 or OW == 0 or C == 0:
        return
    cdef const floating *px = &x[0, 0, 0, 0]
    cdef floating *py = &out[0, 0, 0, 0]
    for r in prange(rows, nogil=True, num_threads=num_threads, schedule="dynamic",
                    chunksize=4):
        n = r // OH
        oh = r % OH
        if floating is float:
            fc_maxpool_row_f32(px + n * H * W * C, py + r * OW * C, H, W, C, KH, KW, SH, SW,
                               DH, DW, pad_top, pad_left, OW, oh, simd_level)
        else:
            fc_maxpool_row_f64(px + n * H * W * C, py + r * OW * C, H, W, C, KH, KW, SH, SW,
                               DH, DW, pad_top, pad_left, OW, oh, simd_level)


def im2col(const floating[:, :, :, ::1] x,           # IN  (N, H, W, C)
           floating[:, :, :, :, :, ::1] out,         # OUT (N, OH, OW, KH, KW, C)
           int SH, int SW, int DH, int DW, int pad_top, int pad_left, int num_threads):
    """Unfold every window of ``x`` into ``out``; zeros where a tap leaves the input.

    ``out[n, oh, ow, kh, kw, c] = x[n, oh*SH - pad_top + kh*DH, ow*SW - pad_left + kw*DW, c]``.
    Contiguous runs of channels (whole kernel rows when ``DW == 1``) are
    copied with ``memcpy``; one task per output row ``(n, oh)``.
    """
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t OH = out.shape[1], OW = out.shape[2]
    cdef int KH = <int> out.shape[3], KW = <int> out.shape[4]
    cdef Py_ssize_t K = KH * KW * C, rows = N * OH, r
    if rows == 0 or OW == 0 or K == 0:
        return
    cdef const floating *px = &x[0, 0, 0, 0]
    cdef floating *py = &out[0, 0, 0, 0, 0, 0]
    for r in prange(rows, nogil=True, num_threads=num_threads, schedule="dynamic",
                    chunksize=4):
        fc_im2col_rows(px, py + r * OW * K, sizeof(floating), H, W, C, KH, KW, SH, SW, DH, DW,
                       pad_top, pad_left, OH, OW, 1, r * OW, (r + 1) * OW, K)
