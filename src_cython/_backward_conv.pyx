"""Compiled filter gradients of a 2-D convolution (the "cython" backend's ``_backward_conv``).

Arrays arrive already checked by the backend driver (C-contiguous NHWC, one
float dtype).  Computes::

    dw[kh, kw, c, o] = sum_{n, oh, ow} x[n, oh*SH + kh*DH - top, ow*SW + kw*DW - left, g*Cg + c]
                                       * dy[n, oh, ow, o]

for two kinds (``fc_conv_grad.h``): depthwise (``groups == C == O``, vectors
across channels) and dense with few input channels (``groups == 1``, vectors
across output channels).  Three layers: :func:`conv2d_filter_grad` (holds the
GIL: shapes, the kernel pointer for the SIMD level, chunks between which a
pending signal is raised as ``KeyboardInterrupt``), the loop over work
items on fastconv's thread pool (one piece of output rows and one block of
output channels each -- and for the dense kind one group of taps -- writing
that piece's partial sums), and the ``noexcept nogil`` C item kernels.  The
pieces are fixed by ``piece_rows`` (chosen from the shapes) and summed in
piece order, so the result is bitwise identical for any ``num_threads``.
"""
from cpython.exc cimport PyErr_CheckSignals
from cpython.pycapsule cimport PyCapsule_GetPointer
from cython cimport floating
from libc.stdint cimport int64_t

from fastconv_c cimport fc_rows_per_chunk
from fc_parallel cimport RUN_CAPSULE_NAME, fc_run_fn

from . import _parallel

#: the process's thread pool (fc_parallel.h): tasks on the caller and persistent workers
cdef fc_run_fn _parallel_run = <fc_run_fn> PyCapsule_GetPointer(_parallel.RUN, RUN_CAPSULE_NAME)


cdef extern from "fc_conv_grad.h" nogil:
    int FC_GRAD_DEPTHWISE
    int FC_GRAD_DENSE
    int FC_GRAD_NV
    ctypedef struct fc_grad_args:
        const void *x
        const void *dy
        void *part
        Py_ssize_t H, W, C, OH, OW, O
        int KH, KW, SH, SW, DH, DW, top, left
        Py_ssize_t rows, piece_rows, blocks
    ctypedef void (*fc_grad_fn)(const fc_grad_args *a, Py_ssize_t item) noexcept nogil
    int fc_grad_lanes(int level, int is_double)
    Py_ssize_t fc_grad_items_per_piece(const fc_grad_args *a, int kind, int lanes)
    fc_grad_fn fc_grad_pick(int kind, int is_double, int level)
    void fc_grad_reduce_f32(const float *part, float *out, Py_ssize_t pieces, Py_ssize_t size,
                            Py_ssize_t e0, Py_ssize_t e1)
    void fc_grad_reduce_f64(const double *part, double *out, Py_ssize_t pieces,
                            Py_ssize_t size, Py_ssize_t e0, Py_ssize_t e1)


KINDS = {"depthwise": FC_GRAD_DEPTHWISE, "dense": FC_GRAD_DENSE}
#: elements of the output per reduction task
cdef Py_ssize_t REDUCE_BLOCK = 4096


def channel_block(int simd_level, bint is_double):
    """Output channels per depthwise work item at this SIMD level and dtype.

    A dense item holds at most two vectors of output channels (``fc_grad_tile_plan``).
    """
    return FC_GRAD_NV * fc_grad_lanes(simd_level, is_double)


def part_size(kind, Py_ssize_t C, Py_ssize_t O, int KH, int KW):
    """Elements of one piece's partial sums."""
    return <Py_ssize_t> KH * KW * (1 if kind == "depthwise" else C) * O


cdef void _items(const fc_grad_args *a, fc_grad_fn fn, Py_ssize_t i0, Py_ssize_t i1,
                 int num_threads) noexcept nogil:
    cdef Py_ssize_t i
    if num_threads <= 1:
        for i in range(i0, i1):
            fn(a, i)
        return
    cdef _items_ctx c
    c.a, c.fn, c.i0 = a, fn, i0
    _parallel_run(_items_task, &c, i1 - i0, num_threads)


ctypedef struct _items_ctx:
    const fc_grad_args *a
    fc_grad_fn fn
    Py_ssize_t i0


cdef int _items_task(void *p, int64_t task, int slot) noexcept nogil:
    """Item ``i0 + task`` of an ``_items`` call (a task of the pool)."""
    cdef _items_ctx *c = <_items_ctx *> p
    c.fn(c.a, c.i0 + task)
    return 0


ctypedef struct _reduce_ctx:
    const void *part
    void *out
    Py_ssize_t pieces, size
    int is_double


cdef int _reduce_task(void *p, int64_t task, int slot) noexcept nogil:
    """Block ``task`` of ``REDUCE_BLOCK`` output elements of a ``_reduce`` call."""
    cdef _reduce_ctx *c = <_reduce_ctx *> p
    cdef Py_ssize_t e0 = task * REDUCE_BLOCK
    cdef Py_ssize_t e1 = min(e0 + REDUCE_BLOCK, c.size)
    if c.is_double:
        fc_grad_reduce_f64(<const double *> c.part, <double *> c.out, c.pieces, c.size, e0, e1)
    else:
        fc_grad_reduce_f32(<const float *> c.part, <float *> c.out, c.pieces, c.size, e0, e1)
    return 0


cdef void _reduce(const floating *part, floating *out, Py_ssize_t pieces, Py_ssize_t size,
                  int num_threads) noexcept nogil:
    cdef Py_ssize_t blocks = (size + REDUCE_BLOCK - 1) // REDUCE_BLOCK
    if num_threads <= 1 or blocks <= 1:   # no parallel region for a small sum
        if floating is float:
            fc_grad_reduce_f32(part, out, pieces, size, 0, size)
        else:
            fc_grad_reduce_f64(part, out, pieces, size, 0, size)
        return
    cdef _reduce_ctx c
    c.part, c.out, c.pieces, c.size, c.is_double = <const void *> part, <void *> out, pieces, \
        size, floating is double
    _parallel_run(_reduce_task, &c, blocks, num_threads)


def conv2d_filter_grad(kind, const floating[:, :, :, ::1] x,      # IN  (N, H, W, C)
                       const floating[:, :, :, ::1] dy,           # IN  (N, OH, OW, O)
                       floating[:, :, :, ::1] out,                # OUT (KH, KW, Cg, O)
                       floating[::1] part,                        # scratch, pieces * part_size
                       int SH, int SW, int DH, int DW, int top, int left,
                       Py_ssize_t piece_rows, int num_threads, int simd_level,
                       double interrupt_work=0):
    """``out = dL/dw`` of kind ``'depthwise'`` or ``'dense'`` (see the module docstring).

    ``piece_rows`` output rows ``(n, oh)`` per piece (from the shapes only);
    ``part`` holds at least ``ceil(N*OH / piece_rows) * part_size(...)``
    elements, overwritten.  ``simd_level`` picks the compiled variant (0 generic,
    1 AVX2, 2 AVX-512).  ``interrupt_work`` multiply-adds between two looks at
    pending signals (0: none).
    """
    cdef int k = KINDS[kind]
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t OH = dy.shape[1], OW = dy.shape[2], O = dy.shape[3]
    cdef int KH = <int> out.shape[0], KW = <int> out.shape[1]
    cdef Py_ssize_t Cg = 1 if k == FC_GRAD_DEPTHWISE else C
    if dy.shape[0] != N or out.shape[2] != Cg or out.shape[3] != O or (
            k == FC_GRAD_DEPTHWISE and C != O):
        raise ValueError(f"{kind} filter gradient: x {[x.shape[i] for i in range(4)]}, dy "
                         f"{[dy.shape[i] for i in range(4)]} and out "
                         f"{[out.shape[i] for i in range(4)]} do not fit together.")
    if piece_rows < 1:
        raise ValueError(f"piece_rows must be >= 1; got {piece_rows}.")
    cdef Py_ssize_t size = <Py_ssize_t> KH * KW * Cg * O
    cdef Py_ssize_t rows = N * OH
    cdef Py_ssize_t pieces = (rows + piece_rows - 1) // piece_rows
    if size == 0:
        return
    if rows == 0 or OW == 0:
        out[...] = 0
        return
    if part.shape[0] < pieces * size:
        raise ValueError(f"part has {part.shape[0]} elements; {pieces * size} needed.")
    cdef fc_grad_args a
    a.x = &x[0, 0, 0, 0]
    a.dy = &dy[0, 0, 0, 0]
    a.part = &part[0]
    a.H, a.W, a.C, a.OH, a.OW, a.O = H, W, C, OH, OW, O
    a.KH, a.KW, a.SH, a.SW, a.DH, a.DW, a.top, a.left = KH, KW, SH, SW, DH, DW, top, left
    a.rows, a.piece_rows = rows, piece_rows
    cdef int lanes = fc_grad_lanes(simd_level, floating is double)
    cdef Py_ssize_t block = FC_GRAD_NV * lanes
    a.blocks = fc_grad_items_per_piece(&a, k, lanes)
    cdef fc_grad_fn fn = fc_grad_pick(k, floating is double, simd_level)
    cdef Py_ssize_t items = pieces * a.blocks, i0, i1, step
    if num_threads > items:
        num_threads = <int> items
    if num_threads < 1:
        num_threads = 1
    # multiply-adds per item: at most a piece's rows times one block's share of a row
    step = fc_rows_per_chunk(items, <double> piece_rows * OW * KH * KW * Cg * min(block, O),
                             interrupt_work, num_threads)
    i0 = 0
    while i0 < items:
        i1 = min(i0 + step, items)
        with nogil:
            _items(&a, fn, i0, i1, num_threads)
        i0 = i1
        if i0 < items:
            PyErr_CheckSignals()
    with nogil:
        _reduce(&part[0], &out[0, 0, 0, 0], pieces, size, num_threads)
