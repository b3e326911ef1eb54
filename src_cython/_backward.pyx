"""Compiled backward kernels (fastconv's "cython" backend): col2im, max pool argmax and backward.

Arrays arrive already checked by :mod:`fastconv._backward` (C-contiguous, one
float dtype, int64 indices).  The C loops are in ``fc_col2im.h`` and
``fc_pool_backward.h``.  Every output element is written by exactly one
task, in an order that does not depend on the thread count, so results are
bitwise identical for any ``num_threads``.  Each kernel runs its tasks in
chunks of about ``interrupt_work`` elementary operations (0: all at once),
between which a pending signal (Ctrl-C) is raised as ``KeyboardInterrupt``;
the chunks only group whole tasks, so they never change a result.
"""
from cpython.exc cimport PyErr_CheckSignals
from cpython.pycapsule cimport PyCapsule_GetPointer
from cython cimport floating
from libc.stdint cimport int64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memset

import numpy as np

from fastconv_c cimport (fc_col2im_row_f32, fc_col2im_row_f64, fc_maxpool_argmax_row_f32,
                         fc_maxpool_argmax_row_f64, fc_maxpool_scatter_f32,
                         fc_maxpool_scatter_f64, fc_rows_per_chunk)
from fc_parallel cimport RUN_CAPSULE_NAME, fc_run_fn

from . import _parallel

#: the process's thread pool (fc_parallel.h): tasks on the caller and persistent workers
cdef fc_run_fn _parallel_run = <fc_run_fn> PyCapsule_GetPointer(_parallel.RUN, RUN_CAPSULE_NAME)

#: rows per task of the row kernels (col2im, argmax)
cdef Py_ssize_t ROWS_PER_TASK = 4


ctypedef struct _rows_ctx:
    const void *src
    void *dst
    int64_t *index
    Py_ssize_t start, stop, H, W, C, OH, OW
    int KH, KW, SH, SW, DH, DW, pad_top, pad_left, simd_level, is_double


cdef int _col2im_task(void *p, int64_t task, int slot) noexcept nogil:
    """Input rows ``[start + 4 * task, ...)`` of a col2im call (a task of the pool)."""
    cdef _rows_ctx *c = <_rows_ctx *> p
    cdef Py_ssize_t r, first = c.start + task * ROWS_PER_TASK
    cdef Py_ssize_t last = min(first + ROWS_PER_TASK, c.stop)
    for r in range(first, last):
        if c.is_double:
            fc_col2im_row_f64(<const double *> c.src, <double *> c.dst, c.H, c.W, c.C, c.KH,
                              c.KW, c.SH, c.SW, c.DH, c.DW, c.pad_top, c.pad_left, c.OH,
                              c.OW, r // c.H, r % c.H)
        else:
            fc_col2im_row_f32(<const float *> c.src, <float *> c.dst, c.H, c.W, c.C, c.KH,
                              c.KW, c.SH, c.SW, c.DH, c.DW, c.pad_top, c.pad_left, c.OH,
                              c.OW, r // c.H, r % c.H)
    return 0


cdef int _argmax_task(void *p, int64_t task, int slot) noexcept nogil:
    """Output rows ``[start + 4 * task, ...)`` of a max_pool2d_argmax call."""
    cdef _rows_ctx *c = <_rows_ctx *> p
    cdef Py_ssize_t r, n, first = c.start + task * ROWS_PER_TASK
    cdef Py_ssize_t last = min(first + ROWS_PER_TASK, c.stop)
    cdef Py_ssize_t plane = c.H * c.W * c.C, row = c.OW * c.C
    for r in range(first, last):
        n = r // c.OH
        if c.is_double:
            fc_maxpool_argmax_row_f64(<const double *> c.src + n * plane,
                                      <double *> c.dst + r * row, c.index + r * row, c.H,
                                      c.W, c.C, c.KH, c.KW, c.SH, c.SW, c.DH, c.DW, c.pad_top,
                                      c.pad_left, c.OW, r % c.OH, c.simd_level)
        else:
            fc_maxpool_argmax_row_f32(<const float *> c.src + n * plane,
                                      <float *> c.dst + r * row, c.index + r * row, c.H,
                                      c.W, c.C, c.KH, c.KW, c.SH, c.SW, c.DH, c.DW, c.pad_top,
                                      c.pad_left, c.OW, r % c.OH, c.simd_level)
    return 0


cdef inline int _team(int num_threads, Py_ssize_t tasks) noexcept nogil:
    if num_threads > tasks:
        num_threads = <int> tasks
    return num_threads if num_threads >= 1 else 1


def col2im(const floating[:, :, :, :, :, ::1] cols,   # IN  (N, OH, OW, KH, KW, C)
           floating[:, :, :, ::1] out,               # IN/OUT (N, H, W, C)
           int SH, int SW, int DH, int DW, int pad_top, int pad_left, int num_threads,
           double interrupt_work=0):
    """``out += col2im(cols)``: each window entry added to the pixel im2col read it from.

    ``out[n, oh*SH - pad_top + kh*DH, ow*SW - pad_left + kw*DW, c] += cols[n, oh, ow, kh, kw, c]``;
    entries in the padding are dropped.  One task per input row ``(n, h)``.
    """
    cdef Py_ssize_t N = out.shape[0], H = out.shape[1], W = out.shape[2], C = out.shape[3]
    cdef Py_ssize_t OH = cols.shape[1], OW = cols.shape[2]
    cdef int KH = <int> cols.shape[3], KW = <int> cols.shape[4]
    if cols.shape[0] != N or cols.shape[5] != C:
        raise ValueError(f"cols has shape {[cols.shape[i] for i in range(6)]}; expected (N, OH, OW, KH, "
                         f"KW, C) with N={N}, C={C} of out.")
    cdef Py_ssize_t rows = N * H, start, stop, step
    if rows == 0 or W == 0 or C == 0 or OH == 0 or OW == 0 or KH == 0 or KW == 0:
        return
    cdef const floating *pc = &cols[0, 0, 0, 0, 0, 0]
    cdef floating *po = &out[0, 0, 0, 0]
    num_threads = _team(num_threads, rows)
    # an input row gathers its share of the window entries (about cols.size / rows)
    step = fc_rows_per_chunk(rows, <double> N * OH * OW * KH * KW * C / rows, interrupt_work,
                             num_threads)
    cdef _rows_ctx c
    c.src, c.dst, c.index, c.is_double = <const void *> pc, <void *> po, NULL, \
        floating is double
    c.H, c.W, c.C, c.OH, c.OW, c.KH, c.KW = H, W, C, OH, OW, KH, KW
    c.SH, c.SW, c.DH, c.DW, c.pad_top, c.pad_left, c.simd_level = SH, SW, DH, DW, pad_top, \
        pad_left, 0
    start = 0
    while start < rows:
        stop = min(start + step, rows)
        c.start, c.stop = start, stop
        with nogil:
            _parallel_run(_col2im_task, &c, (stop - start + ROWS_PER_TASK - 1) // ROWS_PER_TASK,
                          num_threads)
        start = stop
        if start < rows:
            PyErr_CheckSignals()


def max_pool2d_argmax(const floating[:, :, :, ::1] x,   # IN  (N, H, W, C)
                      floating[:, :, :, ::1] out,       # OUT (N, OH, OW, C)
                      int64_t[:, :, :, ::1] argmax,     # OUT (N, OH, OW, C)
                      int KH, int KW, int SH, int SW, int DH, int DW, int pad_top,
                      int pad_left, int num_threads, int simd_level=0,
                      double interrupt_work=0):
    """NHWC max pooling and the per-image flat index ``(h*W + w)*C + c`` of each maximum.

    The running maximum starts at the window's first tap and moves to a later
    tap only when that is strictly greater (TensorFlow's rule): ties go to the
    first maximum, and a NaN is picked only as the window's first tap.
    Padding is never picked (a window with no tap inside gives ``-inf`` and
    index -1).  One
    task per output row ``(n, oh)``; ``simd_level`` picks the compiled
    variant (FC_SIMD_*: 0 generic, 1 AVX2, 2 AVX-512), all giving the same result.
    """
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t OH = out.shape[1], OW = out.shape[2]
    if (argmax.shape[0] != out.shape[0] or argmax.shape[1] != OH or argmax.shape[2] != OW or
            argmax.shape[3] != out.shape[3]):
        raise ValueError(f"argmax has shape {[argmax.shape[i] for i in range(4)]}; expected out's "
                         f"shape {[out.shape[i] for i in range(4)]}.")
    cdef Py_ssize_t rows = N * OH, start, stop, step
    if rows == 0 or OW == 0 or C == 0:
        return
    cdef const floating *px = &x[0, 0, 0, 0]
    cdef floating *py = &out[0, 0, 0, 0]
    cdef int64_t *pi = &argmax[0, 0, 0, 0]
    num_threads = _team(num_threads, rows)
    # compares per output row: the window's taps that can lie inside the input
    step = fc_rows_per_chunk(rows, <double> OW * C * min(<Py_ssize_t> KH, H) *
                             min(<Py_ssize_t> KW, W), interrupt_work, num_threads)
    cdef _rows_ctx c
    c.src, c.dst, c.index, c.is_double = <const void *> px, <void *> py, pi, \
        floating is double
    c.H, c.W, c.C, c.OH, c.OW, c.KH, c.KW = H, W, C, OH, OW, KH, KW
    c.SH, c.SW, c.DH, c.DW, c.pad_top, c.pad_left, c.simd_level = SH, SW, DH, DW, pad_top, \
        pad_left, simd_level
    start = 0
    while start < rows:
        stop = min(start + step, rows)
        c.start, c.stop = start, stop
        with nogil:
            _parallel_run(_argmax_task, &c, (stop - start + ROWS_PER_TASK - 1) // ROWS_PER_TASK,
                          num_threads)
        start = stop
        if start < rows:
            PyErr_CheckSignals()


def max_pool2d_backward(const floating[::1] dy, const int64_t[::1] flat_index,
                        floating[::1] out, Py_ssize_t images, int num_threads,
                        double interrupt_work=0):
    """``out = 0``, then ``out[flat_index[i]] += dy[i]`` in index order.

    ``dy`` and ``out`` are cut into ``images`` equal blocks and block ``n`` of
    ``dy`` may only send to block ``n`` of ``out`` (one image each).  One task
    per image zeroes its block and then adds its entries, in index order, while
    the block is still in cache; the tasks are handed out dynamically over
    ``num_threads`` threads of fastconv's pool (one thread: no pool), and no two
    threads write the same element.  The tasks run in pieces of about
    ``interrupt_work`` elements written and read (whole images, or for images
    larger than that, every image's entries cut at the same offsets), between
    which a pending signal is raised (0: all at once).

    Raises
    ------
    ValueError
        When ``images`` does not divide both lengths, or an index falls outside
        its image's block (nothing is reported for the skipped entries
        otherwise: the output is then incomplete).
    """
    cdef Py_ssize_t total = dy.shape[0], size = out.shape[0]
    if flat_index.shape[0] != total:
        raise ValueError(f"flat_index has {flat_index.shape[0]} entries; expected dy's "
                         f"{total}.")
    if images < 1 or total % images or size % images:
        raise ValueError(f"images={images} must divide dy's length {total} and out's "
                         f"length {size}.")
    if size == 0:
        return
    cdef floating *po = &out[0]
    cdef const floating *pd = &dy[0] if total else NULL
    cdef const int64_t *pi = &flat_index[0] if total else NULL
    cdef Py_ssize_t per_dy = total // images, per_out = size // images, bad = 0
    cdef Py_ssize_t n0, n1, i0, i1, image_step, entry_step
    cdef double image_work = <double> per_dy + per_out
    num_threads = _team(num_threads, images)
    # pieces from the shape only: whole images while an image is within the budget, else
    # every image's entries cut at the same offsets
    image_step, entry_step = images, max(per_dy, 1)
    if interrupt_work > 0:
        if image_work <= interrupt_work:
            image_step = max(<Py_ssize_t> (interrupt_work / image_work), 1)
        else:
            entry_step = max(<Py_ssize_t> (interrupt_work / images), 1)
    n0 = 0
    while n0 < images:
        n1 = min(n0 + image_step, images)
        i0 = 0
        while True:
            i1 = min(i0 + entry_step, per_dy)
            with nogil:
                bad += _scatter_images(pd, pi, po, n0, n1, i0, i1, per_dy, per_out,
                                       num_threads)
            i0 = i1
            if i0 >= per_dy:
                break
            PyErr_CheckSignals()
        n0 = n1
        if n0 < images:
            PyErr_CheckSignals()
    if bad:
        raise ValueError(f"flat_index holds {bad} indices outside their image's block of out "
                         f"(images={images}); pass the argmax of the same input and geometry.")


cdef Py_ssize_t _scatter_images(const floating *dy, const int64_t *index, floating *out,
                                Py_ssize_t n0, Py_ssize_t n1, Py_ssize_t i0, Py_ssize_t i1,
                                Py_ssize_t per_dy, Py_ssize_t per_out,
                                int num_threads) noexcept nogil:
    """Images ``[n0, n1)``, entries ``[i0, i1)`` of each (the block zeroed first when
    ``i0 == 0``); the count of skipped entries."""
    cdef Py_ssize_t n, bad = 0
    if num_threads <= 1 or n1 - n0 <= 1:
        for n in range(n0, n1):
            bad += _scatter_image(dy, index, out, n, i0, i1, per_dy, per_out)
        return bad
    cdef _scatter_ctx c
    c.dy, c.index, c.out, c.is_double = <const void *> dy, index, <void *> out, \
        floating is double
    c.n0, c.i0, c.i1, c.per_dy, c.per_out = n0, i0, i1, per_dy, per_out
    if num_threads > n1 - n0:
        num_threads = <int> (n1 - n0)
    c.bad = <Py_ssize_t *> calloc(num_threads, sizeof(Py_ssize_t))   # per slot
    if c.bad == NULL:   # no memory for the counts: one thread, which needs none
        for n in range(n0, n1):
            bad += _scatter_image(dy, index, out, n, i0, i1, per_dy, per_out)
        return bad
    _parallel_run(_scatter_task, &c, n1 - n0, num_threads)
    for n in range(num_threads):
        bad += c.bad[n]
    free(c.bad)
    return bad


ctypedef struct _scatter_ctx:
    const void *dy
    const int64_t *index
    void *out
    Py_ssize_t n0, i0, i1, per_dy, per_out
    Py_ssize_t *bad      # [slot] skipped entries
    int is_double


cdef int _scatter_task(void *p, int64_t task, int slot) noexcept nogil:
    """Image ``n0 + task`` of a ``_scatter_images`` call (a task of the pool)."""
    cdef _scatter_ctx *c = <_scatter_ctx *> p
    if c.is_double:
        c.bad[slot] += _scatter_image(<const double *> c.dy, c.index, <double *> c.out,
                                      c.n0 + task, c.i0, c.i1, c.per_dy, c.per_out)
    else:
        c.bad[slot] += _scatter_image(<const float *> c.dy, c.index, <float *> c.out,
                                      c.n0 + task, c.i0, c.i1, c.per_dy, c.per_out)
    return 0


cdef inline Py_ssize_t _scatter_image(const floating *dy, const int64_t *index, floating *out,
                                      Py_ssize_t n, Py_ssize_t i0, Py_ssize_t i1,
                                      Py_ssize_t per_dy, Py_ssize_t per_out) noexcept nogil:
    if i0 == 0:
        memset(out + n * per_out, 0, per_out * sizeof(floating))
    if i1 <= i0:
        return 0
    if floating is float:
        return fc_maxpool_scatter_f32(dy, index, out + n * per_out, n * per_dy + i0,
                                      n * per_dy + i1, n * per_out, per_out)
    else:
        return fc_maxpool_scatter_f64(dy, index, out + n * per_out, n * per_dy + i0,
                                      n * per_dy + i1, n * per_out, per_out)


def max_pool2d_grad(const floating[:, :, :, ::1] x,    # IN  (N, H, W, C)
                    const floating[:, :, :, ::1] dy,   # IN  (N, OH, OW, C)
                    floating[:, :, :, ::1] out,        # OUT (N, H, W, C)
                    int KH, int KW, int SH, int SW, int DH, int DW, int pad_top,
                    int pad_left, int num_threads, int simd_level=0,
                    double interrupt_work=0):
    """The max pool backward in one pass: ``out = 0``, then each window's ``dy`` added at its
    first maximum (the argmax of :func:`max_pool2d_argmax`), without storing the argmax.

    One task per image: its block of ``out`` is zeroed, then for each output row the
    row's argmax goes to a per-thread scratch row and the row's ``dy`` is added at it, in
    index order, while the image's gradient is in cache -- the same additions in the
    same order as :func:`max_pool2d_argmax` followed by :func:`max_pool2d_backward`, so
    the same bits, for any ``num_threads``.  Images run in pieces of about
    ``interrupt_work`` compares, between which a pending signal is raised.
    """
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t OH = dy.shape[1], OW = dy.shape[2]
    if (out.shape[0] != N or out.shape[1] != H or out.shape[2] != W or out.shape[3] != C or
            dy.shape[0] != N or dy.shape[3] != C):
        raise ValueError("x, dy and out must be (N, H, W, C), (N, OH, OW, C), (N, H, W, C).")
    cdef Py_ssize_t image = H * W * C
    if N == 0 or image == 0:
        return
    cdef floating *po = &out[0, 0, 0, 0]
    if OH == 0 or OW == 0:
        memset(po, 0, N * image * sizeof(floating))
        return
    num_threads = _team(num_threads, N)
    cdef Py_ssize_t row = OW * C
    y_rows = np.empty(num_threads * row, dtype=np.float32 if floating is float else np.float64)
    i_rows = np.empty(num_threads * row, dtype=np.int64)
    cdef floating[::1] ys = y_rows
    cdef int64_t[::1] js = i_rows
    cdef floating *py = &ys[0]
    cdef int64_t *pj = &js[0]
    cdef const floating *px = &x[0, 0, 0, 0]
    cdef const floating *pd = &dy[0, 0, 0, 0]
    cdef double work = <double> OH * row * min(<Py_ssize_t> KH, H) * min(<Py_ssize_t> KW, W) \
        + image
    cdef Py_ssize_t step = N, n0 = 0, n1, n
    cdef _pool_grad_ctx c
    if interrupt_work > 0 and work > 0:
        step = max(<Py_ssize_t> (interrupt_work / work), 1)
    while n0 < N:
        n1 = min(n0 + step, N)
        if num_threads <= 1 or n1 - n0 <= 1:
            with nogil:
                for n in range(n0, n1):
                    _pool_grad_image(px, pd, po, py, pj, n, H, W, C, OH, OW, KH, KW, SH, SW,
                                     DH, DW, pad_top, pad_left, simd_level)
        else:
            c.x, c.dy, c.out, c.y_rows, c.i_rows = px, pd, po, py, pj
            c.is_double, c.n0, c.H, c.W, c.C, c.OH, c.OW = floating is double, n0, H, W, C, OH, OW
            c.KH, c.KW, c.SH, c.SW, c.DH, c.DW = KH, KW, SH, SW, DH, DW
            c.top, c.left, c.simd = pad_top, pad_left, simd_level
            with nogil:
                _parallel_run(_pool_grad_task, &c, n1 - n0, num_threads)
        n0 = n1
        if n0 < N:
            PyErr_CheckSignals()


ctypedef struct _pool_grad_ctx:
    const void *x
    const void *dy
    void *out
    void *y_rows         # [slot] one output row of window maxima
    int64_t *i_rows      # [slot] one output row of their indices
    Py_ssize_t n0, H, W, C, OH, OW
    int KH, KW, SH, SW, DH, DW, top, left, simd, is_double


cdef int _pool_grad_task(void *p, int64_t task, int slot) noexcept nogil:
    """Image ``n0 + task`` of a :func:`max_pool2d_grad` call (a task of the pool), with
    slot ``slot``'s scratch rows."""
    cdef _pool_grad_ctx *c = <_pool_grad_ctx *> p
    cdef Py_ssize_t row = c.OW * c.C
    if c.is_double:
        _pool_grad_image(<const double *> c.x, <const double *> c.dy, <double *> c.out,
                         <double *> c.y_rows + slot * row, c.i_rows + slot * row, c.n0 + task,
                         c.H, c.W, c.C, c.OH, c.OW, c.KH, c.KW, c.SH, c.SW, c.DH, c.DW, c.top,
                         c.left, c.simd)
    else:
        _pool_grad_image(<const float *> c.x, <const float *> c.dy, <float *> c.out,
                         <float *> c.y_rows + slot * row, c.i_rows + slot * row, c.n0 + task,
                         c.H, c.W, c.C, c.OH, c.OW, c.KH, c.KW, c.SH, c.SW, c.DH, c.DW, c.top,
                         c.left, c.simd)
    return 0


cdef inline void _pool_grad_image(const floating *x, const floating *dy, floating *out,
                                  floating *y_row, int64_t *i_row, Py_ssize_t n, Py_ssize_t H,
                                  Py_ssize_t W, Py_ssize_t C, Py_ssize_t OH, Py_ssize_t OW,
                                  int KH, int KW, int SH, int SW, int DH, int DW, int top,
                                  int left, int simd) noexcept nogil:
    cdef Py_ssize_t image = H * W * C, row = OW * C, oh, i
    cdef int64_t j
    cdef const floating *xi = x + n * image
    cdef floating *oi = out + n * image
    cdef const floating *d
    memset(oi, 0, image * sizeof(floating))
    for oh in range(OH):
        if floating is float:
            fc_maxpool_argmax_row_f32(xi, y_row, i_row, H, W, C, KH, KW, SH, SW, DH, DW, top,
                                      left, OW, oh, simd)
        else:
            fc_maxpool_argmax_row_f64(xi, y_row, i_row, H, W, C, KH, KW, SH, SW, DH, DW, top,
                                      left, OW, oh, simd)
        d = dy + (n * OH + oh) * row
        for i in range(row):
            j = i_row[i]
            if j >= 0:
                oi[j] += d[i]
