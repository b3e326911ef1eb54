"""Compiled NHWC im2col (fastconv's "cython" backend).

``im2col`` unfolds every window of an already-checked NHWC array with the C
copy loop of ``fc_im2col.h`` (also used by the tiled im2col + GEMM
convolution); one task per output row ``(n, oh)``.  Rows run in chunks of
about ``interrupt_work`` copied elements, between which a pending signal
(Ctrl-C) is raised as ``KeyboardInterrupt``.
"""
from cpython.exc cimport PyErr_CheckSignals
from cpython.pycapsule cimport PyCapsule_GetPointer
from cython cimport floating
from libc.stdint cimport int64_t

from fastconv_c cimport fc_im2col_rows, fc_rows_per_chunk
from fc_parallel cimport RUN_CAPSULE_NAME, fc_run_fn

from . import _parallel

#: the process's thread pool (fc_parallel.h): tasks on the caller and persistent workers
cdef fc_run_fn _parallel_run = <fc_run_fn> PyCapsule_GetPointer(_parallel.RUN, RUN_CAPSULE_NAME)

#: output rows per task
cdef Py_ssize_t ROWS_PER_TASK = 4


ctypedef struct _rows_ctx:
    const void *px
    void *py
    Py_ssize_t start, stop, H, W, C, OH, OW, K
    int KH, KW, SH, SW, DH, DW, pad_top, pad_left
    size_t itemsize


cdef int _rows_task(void *p, int64_t task, int slot) noexcept nogil:
    """Output rows ``[start + 4 * task, ...)`` of an im2col call (a task of the pool)."""
    cdef _rows_ctx *c = <_rows_ctx *> p
    cdef Py_ssize_t first = c.start + task * ROWS_PER_TASK
    cdef Py_ssize_t last = min(first + ROWS_PER_TASK, c.stop)
    fc_im2col_rows(c.px, <char *> c.py + first * c.OW * c.K * c.itemsize, c.itemsize, c.H,
                   c.W, c.C, c.KH, c.KW, c.SH, c.SW, c.DH, c.DW, c.pad_top, c.pad_left, c.OH,
                   c.OW, 1, first * c.OW, last * c.OW, c.K)
    return 0


def im2col(const floating[:, :, :, ::1] x,           # IN  (N, H, W, C)
           floating[:, :, :, :, :, ::1] out,         # OUT (N, OH, OW, KH, KW, C)
           int SH, int SW, int DH, int DW, int pad_top, int pad_left, int num_threads,
           double interrupt_work=0):
    """Unfold every window of ``x`` into ``out``; zeros where a tap leaves the input.

    ``out[n, oh, ow, kh, kw, c] = x[n, oh*SH - pad_top + kh*DH, ow*SW - pad_left + kw*DW, c]``.
    Contiguous runs of channels (whole kernel rows when ``DW == 1``) are
    copied with ``memcpy``; one task per output row ``(n, oh)``.  Rows run in
    chunks of about ``interrupt_work`` elements (0: all at once); a pending
    signal is noticed between chunks (``out`` is then partly written).
    """
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t OH = out.shape[1], OW = out.shape[2]
    cdef int KH = <int> out.shape[3], KW = <int> out.shape[4]
    cdef Py_ssize_t K = KH * KW * C, rows = N * OH, start, stop, step
    if rows == 0 or OW == 0 or K == 0:
        return
    cdef const floating *px = &x[0, 0, 0, 0]
    cdef floating *py = &out[0, 0, 0, 0, 0, 0]
    if num_threads > rows:   # never more threads than rows
        num_threads = <int> rows
    if num_threads < 1:
        num_threads = 1
    step = fc_rows_per_chunk(rows, <double> OW * K, interrupt_work, num_threads)
    cdef _rows_ctx c
    c.px, c.py, c.itemsize = <const void *> px, <void *> py, sizeof(floating)
    c.H, c.W, c.C, c.OH, c.OW, c.K, c.KH, c.KW = H, W, C, OH, OW, K, KH, KW
    c.SH, c.SW, c.DH, c.DW, c.pad_top, c.pad_left = SH, SW, DH, DW, pad_top, pad_left
    start = 0
    while start < rows:
        stop = min(start + step, rows)
        c.start, c.stop = start, stop
        with nogil:
            _parallel_run(_rows_task, &c, (stop - start + ROWS_PER_TASK - 1) // ROWS_PER_TASK,
                          num_threads)
        start = stop
        if start < rows:
            PyErr_CheckSignals()
