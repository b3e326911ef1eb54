"""Tiled im2col + GEMM convolution (fastconv's "cython" backend, ``algorithm="im2col"``).

The convolution of an NHWC input with HWIO filters is a matrix product once
each output pixel's window is unfolded into a row (im2col; Chellapilla et al.,
2006)::

    out[P, O] = cols[P, K] @ w[K, O],   P = N*OH*OW,  K = KH*KW*C_in

Materializing ``cols`` whole costs ``KH*KW`` times the input in memory traffic
(58 MB for 8x56x56x64 with a 3x3 kernel) and made one big 2-thread sgemm run
at 87 GFLOP/s (shared notes, performance.md).  Instead the P output pixels are cut into tiles of
``tile_pixels`` rows sized so that a tile's columns (``tile_pixels * K``
elements) stay in the 2 MB L2 cache; each OpenMP thread unfolds one tile into
its own buffer, multiplies it with SciPy's single-threaded BLAS
(``scipy.linalg.cython_blas`` sgemm/dgemm) straight into the tile's rows of
``out``, then adds the bias and applies the ReLU while those rows are still
in cache -- the pattern of scikit-learn's chunked k-means
(``sklearn/cluster/_k_means_lloyd.pyx``).  The notes report 152-159 GFLOP/s
for 64-1024 pixel tiles; measured on one thread in a busy run here, this
kernel did 8x56x56 64->64 3x3 at 79 GFLOP/s while SciPy's sgemm alone did
82-87 in the same run: the unfolding costs about 5-10% of the GEMM.

Grouped convolution: the tile's columns are laid out ``(g, kh, kw, c')`` (see
``fc_im2col.h``), so group ``g`` is one GEMM on the contiguous column slice
``[g*Kg, (g+1)*Kg)`` with the filters' column slice ``[g*Og, (g+1)*Og)``,
both reached through leading dimensions.  A 1x1, stride-1, unpadded
convolution needs no unfolding at all: the input already is ``cols``.  When
there are too few pixel tiles to keep the threads busy (a 7x7 layer of one
image), each tile's output channels are also split into blocks, one GEMM per
(tile, block) task, so that threads share the work without cutting the GEMM's
n below ``MIN_TILE`` (measured: a 1x7x7 512->2048 1x1 layer cut into 16-pixel
tiles ran 7x slower than the direct kernel, repacking the 4 MB of filters for
every tiny tile).

BLAS is column-major: the row-major product ``C = A @ B`` is computed as
``C^T = B^T @ A^T``, i.e. ``gemm('N', 'N', m=O, n=rows, k=K, B, A, C)``, as in
``sklearn/utils/_cython_blas.pyx``.  The caller must hold BLAS to one thread
(threadpoolctl) while this runs.

Tile boundaries depend only on the problem shape, never on the thread count,
and every tile is one GEMM call of the same shape, so the result is bitwise
identical for any ``num_threads``.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdlib cimport free, malloc
from scipy.linalg.cython_blas cimport dgemm, sgemm

cdef extern from "stdlib.h" nogil:
    void *aligned_alloc(size_t alignment, size_t size)

cdef extern from "fc_relu.h" nogil:
    void fc_bias_relu_f32(float *out, Py_ssize_t rows, Py_ssize_t O, Py_ssize_t ldo,
                          const float *bias, int relu, int simd)
    void fc_bias_relu_f64(double *out, Py_ssize_t rows, Py_ssize_t O, Py_ssize_t ldo,
                          const double *bias, int relu, int simd)

cdef extern from "fc_im2col.h" nogil:
    void fc_im2col_rows(const void *x, void *col, size_t es, Py_ssize_t H, Py_ssize_t W,
                        Py_ssize_t C, int KH, int KW, int SH, int SW, int DH, int DW,
                        int top, int left, Py_ssize_t OH, Py_ssize_t OW, int groups,
                        Py_ssize_t p0, Py_ssize_t p1, Py_ssize_t ldcol)

#: bytes of unfolded columns per tile: half the 2 MB L2, leaving room for the
#: GEMM's packed filter panel and the output rows.
TILE_BYTES = 1 << 20
#: never more than this per thread's column buffer, however large the filters.
MAX_BUFFER_BYTES = 16 << 20
#: bounds on the pixels per tile (below 64 the GEMM's n is too small to
#: amortize packing the filters; above 1024 nothing more is gained).
MIN_TILE, MAX_TILE = 64, 1024
#: a problem is cut into at least this many tasks (when it is large enough),
#: so that threads share it and a slow thread does not hold up the others.
MIN_TASKS = 8
#: fewest output channels per task when the channels are split.
MIN_O_BLOCK = 64


def tile_pixels(Py_ssize_t P, Py_ssize_t K, Py_ssize_t O, Py_ssize_t itemsize):
    """Output pixels per tile for ``P`` pixels, ``K`` columns, ``O`` output channels.

    Every tile is one GEMM that reads all ``K x O`` filters, so a tile should
    hold at least as many bytes of columns as the filters have (``K*O``), and
    otherwise ``TILE_BYTES`` (L2-sized): ``max(TILE_BYTES, K*O*itemsize) /
    (K*itemsize)`` pixels, clipped to ``[MIN_TILE, MAX_TILE]`` and to
    ``MAX_BUFFER_BYTES``.  Small filters on few pixels are cut into up to
    ``MIN_TASKS`` tiles (of at least ``MIN_TILE``) so threads share them; large
    filters are shared by splitting the channels instead (:func:`o_block`).
    The tiles are then made equal (no tiny last tile).  Depends on the shape
    only, never on the thread count.
    """
    cdef Py_ssize_t row = max(K * itemsize, 1)
    cdef Py_ssize_t filt = K * O * itemsize
    cdef Py_ssize_t tp = max(TILE_BYTES, filt) // row
    tp = min(tp, MAX_BUFFER_BYTES // row)
    tp = min(max(tp, MIN_TILE), MAX_TILE)
    cdef Py_ssize_t n_tiles = (P + tp - 1) // tp
    if n_tiles < MIN_TASKS and filt <= TILE_BYTES:
        n_tiles = max(n_tiles, min(MIN_TASKS, P // MIN_TILE))
    n_tiles = max(n_tiles, 1)
    return max((P + n_tiles - 1) // n_tiles, 1)


def o_block(Py_ssize_t n_tiles, Py_ssize_t O, int groups):
    """Output channels per task: all ``O`` unless there are too few tiles to share.

    With fewer than ``MIN_TASKS`` pixel tiles (few output pixels, e.g. a late
    7x7 layer with N=1) and ``groups == 1``, the channels are split into
    blocks of at least ``MIN_O_BLOCK`` (a multiple of 16) so that threads
    still share the work; each block is its own GEMM.  Shape-only, like
    :func:`tile_pixels`.
    """
    if groups != 1 or n_tiles >= MIN_TASKS:
        return O
    cdef Py_ssize_t want = (MIN_TASKS + n_tiles - 1) // n_tiles
    cdef Py_ssize_t size = (O + want - 1) // want
    size = (size + 15) // 16 * 16
    return min(max(size, MIN_O_BLOCK), O)


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
                  bint relu, int num_threads, int simd_level, Py_ssize_t tile=0):
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
    num_threads : OpenMP threads; tiles go to threads dynamically
    simd_level : FC_SIMD_* level for the fused bias/ReLU pass
    tile : pixels per tile; 0 means :func:`tile_pixels` (tests force others)

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
                                                          sizeof(floating))
    cdef Py_ssize_t n_tiles = (P + tp - 1) // tp
    cdef Py_ssize_t ob = o_block(n_tiles, O, groups)
    cdef Py_ssize_t n_ob = (O + ob - 1) // ob
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
    cdef int failed = 0
    cdef int *failed_ptr = &failed
    cdef floating *col = NULL
    cdef Py_ssize_t *held = NULL   # per thread: which tile its buffer holds
    cdef const floating *A
    cdef Py_ssize_t task, t, p0, rows, o0, on
    cdef int g
    with nogil, parallel(num_threads=num_threads):
        col = NULL
        held = <Py_ssize_t *> malloc(sizeof(Py_ssize_t))
        if held != NULL:
            held[0] = -1
        if not identity:
            col = <floating *> aligned_alloc(64, buf_bytes)
        # task = (pixel tile, channel block), tile-major so that a thread
        # usually finds the tile it needs already unfolded in its buffer
        for task in prange(n_tiles * n_ob, schedule="dynamic"):
            if held == NULL or (not identity and col == NULL):
                failed_ptr[0] = 1
                continue
            t = task // n_ob
            o0 = (task % n_ob) * ob
            on = O - o0
            if on > ob:
                on = ob
            p0 = t * tp
            rows = P - p0
            if rows > tp:
                rows = tp
            if identity:
                A = px + p0 * C
            else:
                if held[0] != t:
                    fc_im2col_rows(px, col, sizeof(floating), H, W, C, KH, KW, SH, SW, DH,
                                   DW, pad_top, pad_left, OH, OW, groups, p0, p0 + rows, K)
                    held[0] = t
                A = col
            if n_ob > 1:
                _gemm_rowmajor(<int> rows, <int> on, K, A, K, pw + o0, O, po + p0 * O + o0, O)
            else:
                for g in range(groups):
                    _gemm_rowmajor(<int> rows, Og, Kg, A + g * Kg, K, pw + g * Og, O,
                                   po + p0 * O + g * Og, O)
            if pb != NULL or relu:
                if floating is float:
                    fc_bias_relu_f32(po + p0 * O + o0, rows, on, O,
                                     pb + o0 if pb != NULL else NULL, relu, simd_level)
                else:
                    fc_bias_relu_f64(po + p0 * O + o0, rows, on, O,
                                     pb + o0 if pb != NULL else NULL, relu, simd_level)
        free(col)
        free(held)
    if failed:
        raise MemoryError(f"conv2d (im2col): could not allocate a {buf_bytes}-byte column "
                          f"buffer per thread.")
