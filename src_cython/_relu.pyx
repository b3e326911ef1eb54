"""Compiled ReLU (fastconv's "cython" backend).

``relu`` receives flat arrays already checked by :mod:`fastconv._ops`
(C-contiguous, one dtype, float32 or float64) and an explicit SIMD level
(``FC_SIMD_*`` of ``fc_cpu.h``); the SIMD kernels are C intrinsics in
``fc_relu.h``.  A small call runs on the calling thread without entering a
parallel region; a larger one is split over OpenMP threads in fixed chunks,
handed out dynamically so that a thread slowed by another process on its core
does not hold the others up.  A long call runs in pieces between which a
pending signal (Ctrl-C) is noticed.  Every element is computed by the same
code whatever the thread count, so results are bitwise identical for any
``num_threads``.
"""
from cpython.exc cimport PyErr_CheckSignals
from cython cimport floating
from cython.parallel cimport prange

from fastconv_c cimport fc_relu_f32_nt, fc_relu_f64_nt


def relu(const floating[::1] x,   # IN
         floating[::1] out,       # OUT (may be x itself)
         int num_threads, int simd_level, Py_ssize_t chunk, Py_ssize_t stream_bytes,
         stream=None, Py_ssize_t single_thread_elements=0, Py_ssize_t interrupt_elements=0):
    """``out = max(x, 0)`` elementwise; NaN stays NaN, -inf becomes 0.

    ``x`` and ``out`` are flat views of the same length; ``out`` may be the
    same buffer as ``x`` (in place).  Below ``single_thread_elements``
    elements the call runs on one thread with no parallel region; otherwise
    chunks of ``chunk`` elements are spread over ``num_threads`` OpenMP
    threads (dynamic schedule).  Pieces of about ``interrupt_elements``
    elements (whole chunks; 0: all at once) run one after the other, and a
    pending signal is noticed between them (``KeyboardInterrupt`` leaves
    ``out`` partly written).  Out of place, outputs of ``stream_bytes`` or
    more are written with non-temporal stores (``stream=None``);
    ``stream=True/False`` forces the choice.
    """
    cdef Py_ssize_t n = x.shape[0]
    if chunk < 1:
        chunk = 1
    cdef Py_ssize_t n_chunks = (n + chunk - 1) // chunk
    cdef Py_ssize_t start, stop, step
    if n == 0:
        return
    cdef const floating *px = &x[0]
    cdef floating *py = &out[0]
    cdef int nt = (n * <Py_ssize_t> sizeof(floating) >= stream_bytes) if stream is None \
        else bool(stream)
    if n < single_thread_elements:
        num_threads = 1
    if num_threads > n_chunks:   # never more threads than chunks
        num_threads = <int> n_chunks
    if num_threads < 1:
        num_threads = 1
    step = n
    if interrupt_elements > 0:
        step = max(interrupt_elements // chunk, 1) * chunk
    start = 0
    while start < n:
        stop = min(start + step, n)
        with nogil:
            _relu_range(px, py, start, stop, chunk, num_threads, simd_level, nt)
        start = stop
        if start < n:
            PyErr_CheckSignals()


cdef void _relu_range(const floating *px, floating *py, Py_ssize_t start, Py_ssize_t stop,
                      Py_ssize_t chunk, int num_threads, int simd_level,
                      int nt) noexcept nogil:
    """Elements ``[start, stop)``; ``start`` is a multiple of ``chunk``."""
    cdef Py_ssize_t i, first, size, n_chunks
    if num_threads <= 1:   # the calling thread alone: no parallel region
        if floating is float:
            fc_relu_f32_nt(px + start, py + start, stop - start, simd_level, nt)
        else:
            fc_relu_f64_nt(px + start, py + start, stop - start, simd_level, nt)
        return
    n_chunks = (stop - start + chunk - 1) // chunk
    for i in prange(n_chunks, num_threads=num_threads, schedule="dynamic"):
        first = start + i * chunk
        size = stop - first
        if size > chunk:
            size = chunk
        if floating is float:
            fc_relu_f32_nt(px + first, py + first, size, simd_level, nt)
        else:
            fc_relu_f64_nt(px + first, py + first, size, simd_level, nt)
