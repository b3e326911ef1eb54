"""Compiled NHWC max pooling (fastconv's "cython" backend).

``max_pool2d`` receives arrays already checked by :mod:`fastconv._ops` and an
explicit SIMD level; the SIMD kernels are C intrinsics in ``fc_pool.h``.  A
small call runs on the calling thread without entering a parallel region; a
larger one hands chunks of output rows ``(n, oh)`` out dynamically, their size
set by the shape alone.  Every output element is computed by the same code
whatever the thread count, so results are bitwise identical for any
``num_threads``.
"""
from cpython.exc cimport PyErr_CheckSignals
from cpython.pycapsule cimport PyCapsule_GetPointer
from cython cimport floating
from libc.stdint cimport int64_t

from fastconv_c cimport fc_maxpool_row_f32, fc_maxpool_row_f64
from fc_parallel cimport RUN_CAPSULE_NAME, fc_run_fn

from . import _parallel

#: the process's thread pool (fc_parallel.h): tasks on the caller and persistent workers
cdef fc_run_fn _parallel_run = <fc_run_fn> PyCapsule_GetPointer(_parallel.RUN, RUN_CAPSULE_NAME)


def max_pool2d(const floating[:, :, :, ::1] x,   # IN  (N, H, W, C)
               floating[:, :, :, ::1] out,       # OUT (N, OH, OW, C)
               int KH, int KW, int SH, int SW, int DH, int DW, int pad_top, int pad_left,
               int num_threads, int simd_level, Py_ssize_t interrupt_work=0,
               Py_ssize_t single_thread_work=0, Py_ssize_t chunk_work=0):
    """NHWC max pooling; taps in the padding are skipped, NaN propagates.

    ``out[n, oh, ow, c] = max_{kh, kw} x[n, oh*SH - pad_top + kh*DH, ow*SW - pad_left + kw*DW, c]``
    over the taps inside the input.  Below ``single_thread_work`` compares
    (output elements times the window's taps inside the input) the call runs
    on one thread with no parallel region; otherwise tasks of whole output
    rows ``(n, oh)``, at least ``chunk_work`` compares each, are handed out
    dynamically.  Rows run in pieces of about ``interrupt_work`` compares
    (0: all at once); a pending signal (Ctrl-C) is noticed between them.
    """
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t OH = out.shape[1], OW = out.shape[2]
    cdef Py_ssize_t rows = N * OH, start, stop, step
    if rows == 0 or OW == 0 or C == 0:
        return
    cdef const floating *px = &x[0, 0, 0, 0]
    cdef floating *py = &out[0, 0, 0, 0]
    # compares of one output row: the window's taps inside the input (never more
    # than the input has)
    cdef Py_ssize_t row_work = max(OW * C * min(KH, H) * min(KW, W), 1)
    if <double>rows * row_work < single_thread_work:
        num_threads = 1
    # rows per dynamically scheduled task: from the shape only
    cdef Py_ssize_t chunk = 1
    if chunk_work > row_work:
        chunk = min(chunk_work // row_work, max(rows // 8, 1))
    if num_threads > rows:   # never more threads than rows
        num_threads = <int> rows
    if num_threads < 1:
        num_threads = 1
    step = rows
    if interrupt_work > 0:
        step = interrupt_work // row_work
        step = max(step // (num_threads * chunk), 1) * num_threads * chunk
    start = 0
    while start < rows:
        stop = min(start + step, rows)
        with nogil:
            _pool_rows(px, py, start, stop, H, W, C, KH, KW, SH, SW, DH, DW, pad_top,
                       pad_left, OH, OW, num_threads, simd_level, chunk)
        start = stop
        if start < rows:
            PyErr_CheckSignals()


cdef void _pool_rows(const floating *px, floating *py, Py_ssize_t start, Py_ssize_t stop,
                     Py_ssize_t H, Py_ssize_t W, Py_ssize_t C, int KH, int KW, int SH, int SW,
                     int DH, int DW, int pad_top, int pad_left, Py_ssize_t OH, Py_ssize_t OW,
                     int num_threads, int simd_level, Py_ssize_t chunk) noexcept nogil:
    """Output rows ``[start, stop)`` (index ``n * OH + oh``), on fastconv's thread pool when
    ``num_threads > 1`` (tasks of ``chunk`` rows), else on the calling thread alone."""
    cdef Py_ssize_t r
    if num_threads <= 1:
        for r in range(start, stop):
            _pool_row(px, py, r, H, W, C, KH, KW, SH, SW, DH, DW, pad_top, pad_left, OH, OW,
                      simd_level)
        return
    cdef _rows_ctx c
    c.px, c.py, c.is_double = <const void *> px, <void *> py, floating is double
    c.start, c.stop, c.chunk, c.H, c.W, c.C, c.OH, c.OW = start, stop, chunk, H, W, C, OH, OW
    c.KH, c.KW, c.SH, c.SW, c.DH, c.DW = KH, KW, SH, SW, DH, DW
    c.pad_top, c.pad_left, c.simd_level = pad_top, pad_left, simd_level
    _parallel_run(_rows_task, &c, (stop - start + chunk - 1) // chunk, num_threads)


ctypedef struct _rows_ctx:
    const void *px
    void *py
    Py_ssize_t start, stop, chunk, H, W, C, OH, OW
    int KH, KW, SH, SW, DH, DW, pad_top, pad_left, simd_level, is_double


cdef int _rows_task(void *p, int64_t task, int slot) noexcept nogil:
    """Rows ``[start + task * chunk, ...)`` of a ``_pool_rows`` call (a task of the pool)."""
    cdef _rows_ctx *c = <_rows_ctx *> p
    cdef Py_ssize_t r, first = c.start + task * c.chunk
    cdef Py_ssize_t last = first + c.chunk
    if last > c.stop:
        last = c.stop
    for r in range(first, last):
        if c.is_double:
            _pool_row(<const double *> c.px, <double *> c.py, r, c.H, c.W, c.C, c.KH, c.KW,
                      c.SH, c.SW, c.DH, c.DW, c.pad_top, c.pad_left, c.OH, c.OW, c.simd_level)
        else:
            _pool_row(<const float *> c.px, <float *> c.py, r, c.H, c.W, c.C, c.KH, c.KW,
                      c.SH, c.SW, c.DH, c.DW, c.pad_top, c.pad_left, c.OH, c.OW, c.simd_level)
    return 0


cdef inline void _pool_row(const floating *px, floating *py, Py_ssize_t r, Py_ssize_t H,
                           Py_ssize_t W, Py_ssize_t C, int KH, int KW, int SH, int SW, int DH,
                           int DW, int pad_top, int pad_left, Py_ssize_t OH, Py_ssize_t OW,
                           int simd_level) noexcept nogil:
    """Output row ``r = n * OH + oh``."""
    cdef Py_ssize_t n = r // OH, oh = r % OH
    if floating is float:
        fc_maxpool_row_f32(px + n * H * W * C, py + r * OW * C, H, W, C, KH, KW, SH, SW,
                           DH, DW, pad_top, pad_left, OW, oh, simd_level)
    else:
        fc_maxpool_row_f64(px + n * H * W * C, py + r * OW * C, H, W, C, KH, KW, SH, SW,
                           DH, DW, pad_top, pad_left, OW, oh, simd_level)
