"""Compiled NHWC im2col (fastconv's "cython" backend).

``im2col`` unfolds every window of an already-checked NHWC array with the C
copy loop of ``fc_im2col.h`` (also used by the tiled im2col + GEMM
convolution); one task per output row ``(n, oh)``.  Rows run in chunks of
about ``interrupt_work`` copied elements, between which a pending signal
(Ctrl-C) is raised as ``KeyboardInterrupt``.
"""
from cpython.exc cimport PyErr_CheckSignals
from cython cimport floating
from cython.parallel cimport prange

from fastconv_c cimport fc_im2col_rows, fc_rows_per_chunk


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
    cdef Py_ssize_t K = KH * KW * C, rows = N * OH, r, start, stop, step
    if rows == 0 or OW == 0 or K == 0:
        return
    cdef const floating *px = &x[0, 0, 0, 0]
    cdef floating *py = &out[0, 0, 0, 0, 0, 0]
    if num_threads > rows:   # never more threads than rows
        num_threads = <int> rows
    if num_threads < 1:
        num_threads = 1
    step = fc_rows_per_chunk(rows, <double> OW * K, interrupt_work, num_threads)
    start = 0
    while start < rows:
        stop = min(start + step, rows)
        for r in prange(start, stop, nogil=True, num_threads=num_threads, schedule="dynamic",
                        chunksize=4):
            fc_im2col_rows(px, py + r * OW * K, sizeof(floating), H, W, C, KH, KW, SH, SW, DH,
                           DW, pad_top, pad_left, OH, OW, 1, r * OW, (r + 1) * OW, K)
        start = stop
        if start < rows:
            PyErr_CheckSignals()
