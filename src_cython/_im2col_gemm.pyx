"""Tiled im2col + GEMM convolution (fastconv's "cython" backend, ``algorithm="im2col"``).

The convolution of an NHWC input with HWIO filters is a matrix product once
each output pixel's window is unfolded into a row (im2col; Chellapilla et al.,
2006)::

    out[P, O] = cols[P, K] @ w[K, O],   P = N*OH*OW,  K = KH*KW*C_in

Materializing ``cols`` whole costs ``KH*KW`` times the input in memory
traffic.  Instead the P output pixels are cut into tiles of ``tile_pixels``
rows sized so that a tile's columns stay in the L2 cache (the size comes from
:mod:`fastconv._tuning`, read from the machine); each thread of fastconv's pool unfolds one
tile into its own buffer, multiplies it with SciPy's single-threaded BLAS
(``scipy.linalg.cython_blas`` sgemm/dgemm) straight into the tile's rows of
``out``, then adds the bias and applies the ReLU while those rows are still
in cache -- the chunked-GEMM pattern of scikit-learn's k-means
(``sklearn/cluster/_k_means_lloyd.pyx``).

Grouped convolution: the tile's columns are laid out ``(g, kh, kw, c')`` (see
``fc_im2col.h``), so group ``g`` is one GEMM on the contiguous column slice
``[g*Kg, (g+1)*Kg)`` with the filters' column slice ``[g*Og, (g+1)*Og)``,
both reached through leading dimensions.  A 1x1, stride-1, unpadded
convolution needs no unfolding at all: the input already is ``cols``.  When
there are too few pixel tiles to keep the threads busy (a 7x7 layer of one
image), each tile's output channels are also split into blocks, one GEMM per
(tile, block) task, so that threads share the work without cutting the GEMM's
n below ``min_tile`` (tiny tiles would repack the whole filter matrix for every
few pixels).

BLAS is column-major: the row-major product ``C = A @ B`` is computed as
``C^T = B^T @ A^T``, i.e. ``gemm('N', 'N', m=O, n=rows, k=K, B, A, C)``, as in
``sklearn/utils/_cython_blas.pyx``.  The caller must hold BLAS to one thread
(threadpoolctl) while this runs.

Tile boundaries depend only on the problem shape, never on the thread count,
and every tile is one GEMM call of the same shape, so the result is bitwise
identical for any ``num_threads``.

Ctrl-C: the calling thread (the pool's slot 0) takes the GIL back after each
``interrupt_work`` multiply-adds it has run, to look at pending signals; when
a handler raised (``KeyboardInterrupt``), the remaining tasks are skipped and
the exception propagates as soon as the running GEMMs return.
"""
from cpython.pycapsule cimport PyCapsule_GetPointer
from cython cimport floating
from libc.stdint cimport int64_t
from libc.stdlib cimport calloc, free
from scipy.linalg.cython_blas cimport dgemm, sgemm

from fastconv_c cimport fc_bias_relu_f32, fc_bias_relu_f64, fc_im2col_rows
from fc_parallel cimport RUN_CAPSULE_NAME, fc_run_fn

from . import _parallel

#: the process's thread pool (fc_parallel.h): tasks on the caller and persistent workers
cdef fc_run_fn _parallel_run = <fc_run_fn> PyCapsule_GetPointer(_parallel.RUN, RUN_CAPSULE_NAME)

cdef extern from "stdlib.h" nogil:
    void *aligned_alloc(size_t alignment, size_t size)

cdef extern from "Python.h":
    # the same function, its -1 not turned into a Python exception check here
    int _check_signals_raw "PyErr_CheckSignals" () noexcept


cdef int _signal_pending() noexcept with gil:
    """1 when a signal handler raised (the exception stays set for the caller), else 0."""
    return 1 if _check_signals_raw() < 0 else 0


cdef int _raise_pending() except -1:
    """Propagate the exception a signal handler left set."""
    return -1


ctypedef struct tiling:
    Py_ssize_t tile_bytes, max_buffer_bytes, min_tile, max_tile, min_tasks, min_o_block


cdef tiling _tiling(object t):
    """The tiling tunables (a mapping, see :mod:`fastconv._tuning`) as a C record."""
    cdef tiling c
    c.tile_bytes = t["tile_bytes"]
    c.max_buffer_bytes = t["max_buffer_bytes"]
    c.min_tile = t["min_tile"]
    c.max_tile = t["max_tile"]
    c.min_tasks = t["min_tasks"]
    c.min_o_block = t["min_o_block"]
    return c


def tile_pixels(Py_ssize_t P, Py_ssize_t K, Py_ssize_t O, Py_ssize_t itemsize, tuning):
    """Output pixels per tile for ``P`` pixels, ``K`` columns, ``O`` output channels.

    Every tile is one GEMM that reads all ``K x O`` filters, so a tile should
    hold at least as many bytes of columns as the filters have (``K*O``), and
    otherwise ``tile_bytes`` (half of L2): ``max(tile_bytes, K*O*itemsize) /
    (K*itemsize)`` pixels, clipped to ``[min_tile, max_tile]`` and to
    ``max_buffer_bytes``.  Small filters on few pixels are cut into up to
    ``min_tasks`` tiles (of at least ``min_tile``) so threads share them; large
    filters are shared by splitting the channels instead (:func:`o_block`).
    The tiles are then made equal (no tiny last tile).  ``tuning`` holds those
    names (see :mod:`fastconv._tuning`).  Depends on the shape and the tuning
    only, never on the thread count.
    """
    cdef tiling c = _tiling(tuning)
    cdef Py_ssize_t row = max(K * itemsize, 1)
    cdef Py_ssize_t filt = K * O * itemsize
    cdef Py_ssize_t tp = max(c.tile_bytes, filt) // row
    tp = min(tp, c.max_buffer_bytes // row)
    tp = min(max(tp, c.min_tile), c.max_tile)
    cdef Py_ssize_t n_tiles = (P + tp - 1) // tp
    if n_tiles < c.min_tasks and filt <= c.tile_bytes:
        n_tiles = max(n_tiles, min(c.min_tasks, P // c.min_tile))
    n_tiles = max(n_tiles, 1)
    return max((P + n_tiles - 1) // n_tiles, 1)


def o_block(Py_ssize_t n_tiles, Py_ssize_t O, int groups, tuning):
    """Output channels per task: all ``O`` unless there are too few tiles to share.

    With fewer than ``min_tasks`` pixel tiles (few output pixels, e.g. a late
    7x7 layer with N=1) and ``groups == 1``, the channels are split into
    blocks of at least ``min_o_block`` (a multiple of 16) so that threads
    still share the work; each block is its own GEMM.  Shape-only, like
    :func:`tile_pixels`.
    """
    cdef tiling c = _tiling(tuning)
    if groups != 1 or n_tiles >= c.min_tasks:
        return O
    cdef Py_ssize_t want = (c.min_tasks + n_tiles - 1) // n_tiles
    cdef Py_ssize_t size = (O + want - 1) // want
    size = (size + 15) // 16 * 16
    return min(max(size, c.min_o_block), O)


cdef inline void _gemm_rowmajor(int rows, int O, int K, const floating *A, int lda,
                                const floating *B, int ldb, floating *C, int ldc) noexcept nogil:
    """Row-major ``C[rows, O] = A[rows, K] @ B[K, O]`` with column-major BLAS."""
    cdef char trans = b'N'
    cdef floating one = 1.0, zero = 0.0
    if floating is float:
        sgemm(&trans, &trans, &O, &rows, &K, &one, <float *> B, &ldb, <float *> A, &lda,
              &zero, C, &ldc)
    else:
        dgemm(&trans, &trans, &O, &rows, &K, &one, <double *> B, &ldb, <double *> A, &lda,
              &zero, C, &ldc)


def conv2d_im2col(const floating[:, :, :, ::1] x,   # IN  (N, H, W, C)
                  const floating[:, :, :, ::1] w,   # IN  (KH, KW, C // groups, O)
                  const floating[::1] bias,         # IN  (O,) or None
                  floating[:, :, :, ::1] out,       # OUT (N, OH, OW, O)
                  int SH, int SW, int DH, int DW, int pad_top, int pad_left, int groups,
                  bint relu, int num_threads, int simd_level, tuning, Py_ssize_t tile=0,
                  double interrupt_work=0):
    """Convolution by tiled im2col + GEMM, bias and ReLU fused per tile.

    ``out[n, oh, ow, o] = bias[o] + sum_{kh, kw, c} x[n, oh*SH - pad_top + kh*DH,
    ow*SW - pad_left + kw*DW, g*Cg + c] * w[kh, kw, c, o]`` (zero outside the
    input), ``g = o // (O / groups)``, then ``max(., 0)`` when ``relu``.

    Parameters
    ----------
    x : (N, H, W, C) float32 or float64, C-contiguous
    w : (KH, KW, C // groups, O), same dtype
    bias : (O,) or None
    out : (N, OH, OW, O), fully overwritten; must not overlap the inputs
    SH, SW, DH, DW : strides and dilations
    pad_top, pad_left : padding before the first row/column (the rest is
        implied by OH, OW)
    groups : C and O are split into ``groups`` independent convolutions
    relu : apply ``max(., 0)`` after the bias (NaN stays NaN)
    num_threads : threads; tiles go to threads dynamically
    simd_level : FC_SIMD_* level for the fused bias/ReLU pass
    tuning : mapping of the tiling tunables (:func:`tile_pixels`)
    tile : pixels per tile; 0 means :func:`tile_pixels` (tests force others)
    interrupt_work : multiply-adds the calling thread runs between two looks at
        pending signals (0: never looks)

    Notes
    -----
    BLAS must already be limited to one thread (threadpoolctl).  Raises
    ``MemoryError`` when a per-thread column buffer cannot be allocated.
    """
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef int KH = <int> w.shape[0], KW = <int> w.shape[1], Cg = <int> w.shape[2]
    cdef int O = <int> w.shape[3], Og = O // groups
    cdef Py_ssize_t OH = out.shape[1], OW = out.shape[2]
    cdef Py_ssize_t P = N * OH * OW
    cdef int K = KH * KW * C, Kg = KH * KW * Cg
    if P == 0 or O == 0:
        return
    cdef Py_ssize_t tp = tile if tile > 0 else tile_pixels(P, K, O // groups,
                                                          sizeof(floating), tuning)
    cdef Py_ssize_t n_tiles = (P + tp - 1) // tp
    cdef Py_ssize_t ob = o_block(n_tiles, O, groups, tuning)
    cdef Py_ssize_t n_ob = (O + ob - 1) // ob
    if num_threads > n_tiles * n_ob:   # never more threads than tasks
        num_threads = <int> (n_tiles * n_ob)
    if num_threads < 1:
        num_threads = 1
    # a 1x1, stride-1, unpadded window reads x itself as the column matrix
    cdef bint identity = (KH == 1 and KW == 1 and SH == 1 and SW == 1 and pad_top == 0
                          and pad_left == 0 and OH == H and OW == W)
    cdef const floating *px = &x[0, 0, 0, 0]
    cdef const floating *pw = &w[0, 0, 0, 0]
    cdef const floating *pb = NULL
    if bias is not None:
        pb = &bias[0]
    cdef floating *po = &out[0, 0, 0, 0]
    cdef size_t buf_bytes = <size_t> tp * K * sizeof(floating)
    buf_bytes = (buf_bytes + 63) // 64 * 64
    cdef _gemm_ctx c
    c.px, c.pw, c.pb, c.po = <const void *> px, <const void *> pw, <const void *> pb, <void *> po
    c.H, c.W, c.C, c.OH, c.OW, c.P, c.tp, c.ob, c.n_ob = H, W, C, OH, OW, P, tp, ob, n_ob
    c.KH, c.KW, c.SH, c.SW, c.DH, c.DW, c.pad_top, c.pad_left = KH, KW, SH, SW, DH, DW, \
        pad_top, pad_left
    c.groups, c.O, c.Og, c.K, c.Kg = groups, O, Og, K, Kg
    c.relu, c.simd_level, c.identity, c.is_double = relu, simd_level, identity, \
        floating is double
    c.buf_bytes, c.interrupt_work, c.done, c.failed = buf_bytes, interrupt_work, 0.0, 0
    # per thread slot of the pool: its column buffer and the tile that buffer holds
    c.col = <void **> calloc(num_threads, sizeof(void *))
    c.held = <Py_ssize_t *> calloc(num_threads, sizeof(Py_ssize_t))
    cdef int stop = 0, slot
    if c.col == NULL or c.held == NULL:
        c.failed = 1
    else:
        for slot in range(num_threads):
            c.held[slot] = -1
        with nogil:
            stop = _parallel_run(_gemm_task, &c, n_tiles * n_ob, num_threads)
        for slot in range(num_threads):
            free(c.col[slot])
    free(c.col)
    free(c.held)
    if c.failed:
        raise MemoryError(f"conv2d (im2col): could not allocate a {buf_bytes}-byte column "
                          f"buffer per thread.")
    if stop:
        _raise_pending()


ctypedef struct _gemm_ctx:
    const void *px
    const void *pw
    const void *pb
    void *po
    Py_ssize_t H, W, C, OH, OW, P, tp, ob, n_ob
    int KH, KW, SH, SW, DH, DW, pad_top, pad_left, groups, O, Og, K, Kg
    int relu, simd_level, identity, is_double
    size_t buf_bytes
    double interrupt_work, done
    int failed                # a slot could not allocate its buffer (read after the call)
    void **col                # [slot] column buffer, allocated by the slot's first task
    Py_ssize_t *held          # [slot] the pixel tile that buffer holds (-1: none)


cdef int _gemm_task(void *p, int64_t task, int slot) noexcept nogil:
    """Task ``task`` = (pixel tile, channel block), tile-major so that a thread usually
    finds the tile it needs already unfolded in its buffer.  The calling thread (slot 0)
    looks at pending signals after each ``interrupt_work`` multiply-adds it has run;
    returns 1 (stop the call) when a handler raised or a buffer could not be allocated."""
    cdef _gemm_ctx *c = <_gemm_ctx *> p
    if c.is_double:
        return _gemm_tile(<const double *> c.px, <const double *> c.pw,
                          <const double *> c.pb, <double *> c.po, c, task, slot)
    return _gemm_tile(<const float *> c.px, <const float *> c.pw, <const float *> c.pb,
                      <float *> c.po, c, task, slot)


cdef inline int _gemm_tile(const floating *px, const floating *pw, const floating *pb,
                           floating *po, _gemm_ctx *c, int64_t task, int slot) noexcept nogil:
    cdef Py_ssize_t t = task // c.n_ob
    cdef Py_ssize_t o0 = (task % c.n_ob) * c.ob
    cdef Py_ssize_t on = c.O - o0
    cdef Py_ssize_t p0 = t * c.tp
    cdef Py_ssize_t rows = c.P - p0
    cdef const floating *A
    cdef floating *col
    cdef int g, O = c.O, K = c.K
    if on > c.ob:
        on = c.ob
    if rows > c.tp:
        rows = c.tp
    if c.identity:
        A = px + p0 * c.C
    else:
        col = <floating *> c.col[slot]
        if col == NULL:
            col = <floating *> aligned_alloc(64, c.buf_bytes)
            if col == NULL:
                c.failed = 1
                return 1
            c.col[slot] = <void *> col
        if c.held[slot] != t:
            fc_im2col_rows(px, col, sizeof(floating), c.H, c.W, c.C, c.KH, c.KW, c.SH, c.SW,
                           c.DH, c.DW, c.pad_top, c.pad_left, c.OH, c.OW, c.groups, p0,
                           p0 + rows, K)
            c.held[slot] = t
        A = col
    if c.n_ob > 1:
        _gemm_rowmajor(<int> rows, <int> on, K, A, K, pw + o0, O, po + p0 * O + o0, O)
    else:
        for g in range(c.groups):
            _gemm_rowmajor(<int> rows, c.Og, c.Kg, A + g * c.Kg, K, pw + g * c.Og, O,
                           po + p0 * O + g * c.Og, O)
    if pb != NULL or c.relu:
        if floating is float:
            fc_bias_relu_f32(po + p0 * O + o0, rows, on, O, pb + o0 if pb != NULL else NULL,
                             c.relu, c.simd_level)
        else:
            fc_bias_relu_f64(po + p0 * O + o0, rows, on, O, pb + o0 if pb != NULL else NULL,
                             c.relu, c.simd_level)
    if c.interrupt_work > 0 and slot == 0:
        c.done = c.done + <double> rows * on * K
        if c.done >= c.interrupt_work:
            c.done = 0.0
            if _signal_pending():
                return 1
    return 0
