"""Compiled ReLU (fastconv's "cython" backend).

``relu`` receives flat arrays already checked by :mod:`fastconv._ops`
(C-contiguous, one dtype, float32 or float64) and an explicit SIMD level
(``FC_SIMD_*`` of ``fc_cpu.h``); the SIMD kernels are C intrinsics in
``fc_relu.h``.  Work is split over OpenMP threads in fixed chunks, handed out
dynamically so that a thread slowed by another process on its core does not
hold the others up.  Every element is computed by the same code whatever the
thread count, so results are bitwise identical for any ``num_threads``.
"""
from cython cimport floating
from cython.parallel cimport prange

from fastconv_c cimport fc_relu_f32_nt, fc_relu_f64_nt


def relu(const floating[::1] x,   # IN
         floating[::1] out,       # OUT (may be x itself)
         int num_threads, int simd_level, Py_ssize_t chunk, Py_ssize_t stream_bytes,
         stream=None):
    """``out = max(x, 0)`` elementwise; NaN stays NaN, -inf becomes 0.

    ``x`` and ``out`` are flat views of the same length; ``out`` may be the
    same buffer as ``x`` (in place).  Chunks of ``chunk`` elements are
    spread over ``num_threads`` OpenMP threads (dynamic schedule).  Out of
    place, outputs of ``stream_bytes`` or more are written with non-temporal
    stores (``stream=None``); ``stream=True/False`` forces the choice.
    """
    cdef Py_ssize_t n = x.shape[0]
    cdef Py_ssize_t n_chunks = (n + chunk - 1) // chunk
    cdef Py_ssize_t i, start, size
    if n == 0:
        return
    cdef const floating *px = &x[0]
    cdef floating *py = &out[0]
    cdef int nt = (n * <Py_ssize_t> sizeof(floating) >= stream_bytes) if stream is None \
        else bool(stream)
    if num_threads > n_chunks:   # never more threads than chunks
        num_threads = <int> n_chunks
    if num_threads <= 1:
        with nogil:
            if floating is float:
                fc_relu_f32_nt(px, py, n, simd_level, nt)
            else:
                fc_relu_f64_nt(px, py, n, simd_level, nt)
        return
    for i in prange(n_chunks, nogil=True, num_threads=num_threads, schedule="dynamic"):
        start = i * chunk
        size = n - start
        if size > chunk:
            size = chunk
        if floating is float:
            fc_relu_f32_nt(px + start, py + start, size, simd_level, nt)
        else:
            fc_relu_f64_nt(px + start, py + start, size, simd_level, nt)
