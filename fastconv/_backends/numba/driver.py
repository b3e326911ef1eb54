"""The Numba backend: parallel, cached kernels behind the driver interface.

Implements ``conv2d``, ``relu``, ``max_pool2d``, ``im2col`` and ``info`` as
described in :mod:`fastconv._backends`, plus :func:`warmup`.  The kernels live
in :mod:`.kernels`; every compile option lives in :mod:`.options`; every
tunable in :mod:`fastconv._tuning`.  Importing this module without Numba raises
``ImportError`` (``name == "numba"``), which the registry reports as
"Numba is not installed".

Convolution algorithms (``algorithm=``):

* ``"im2col"`` -- tiled im2col + ``np.dot`` inside ``prange``, BLAS pinned to
  one thread for the duration (BLAS threads inside fastconv's own threads
  would oversubscribe the cores).
* ``"direct"`` -- direct convolution: the planar shift-and-add kernel
  (:func:`.kernels.conv2d_planar`) when ``C_in / groups <=
  NUMBA_PLANAR_MAX_CHANNELS`` (:mod:`fastconv._tuning`), otherwise (and for
  depthwise) the row kernel vectorized across channels
  (:func:`.kernels.conv2d_direct_o`).
* ``"auto"`` -- :func:`choose_algorithm` (see there).

Threads: a call of less than ``NUMBA_SERIAL_WORK`` elementary operations
(:mod:`fastconv._tuning`), or asked to use one thread, runs the serial twin of
its kernel (:data:`.kernels.SERIAL`) and enters no parallel region.  Otherwise
``num_threads`` becomes ``numba.set_num_threads`` for the call (the previous
value, which Numba keeps per Python thread, is restored afterwards), capped at
``numba.config.NUMBA_NUM_THREADS``, the size of Numba's pool.  The work is cut
into pieces whose boundaries never change a result, so results are bitwise
identical for any ``num_threads``.

Ctrl-C: a Numba kernel cannot look at signals, so every call except ReLU is
cut on the Python side into pieces of about ``INTERRUPT_WORK``
(:mod:`fastconv._tuning`) operations -- whole images, or bands of output rows
of one image (the im2col convolution: runs of whole tiles; the pool backward:
whole images) -- and a ``KeyboardInterrupt``
is raised between two pieces (the output is then partly written).  The pieces
depend on the shape only, and no output element is split between two, so the
result is the same bits as in one piece, for any thread count.

After ``fork``: Numba's ``omp`` threading layer (GNU OpenMP) terminates a
forked child as soon as it enters any parallel region, even on one thread,
once the parent has launched that layer.  In a forked child fastconv runs on
one thread (:func:`fastconv._threads.in_forked_child`), hence on the serial
twins, which never enter a parallel region; a call that would still run a
parallel kernel in such a child raises :class:`fastconv.BackendUnavailableError`
instead, before any kernel runs.  A child forked before the layer was
launched, or from a parent on the ``tbb`` or ``workqueue`` layer, is unaffected.
"""
import contextlib
import functools
import math
import os
import threading
import time

import numba
import numpy as np

from ... import _tuning
from ..._threads import shorten_openmp_spins, single_threaded_blas
from . import kernels as _k
from . import options as _cfg

__all__ = ["conv2d", "relu", "relu_backward", "max_pool2d", "im2col", "info", "warmup",
           "choose_algorithm", "col2im", "max_pool2d_argmax", "max_pool2d_backward"]

shorten_openmp_spins()   # before Numba's omp layer loads the OpenMP runtime

# ----------------------------------------------------------------------------- threads and BLAS
_workqueue_lock = threading.Lock()
_omp_forked = False   # a forked child of a process that had launched the omp layer


def _after_fork_in_child():
    global _workqueue_lock, _omp_forked
    _workqueue_lock = threading.Lock()
    _omp_forked = _omp_forked or _cfg.threading_layer() == "omp"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _check_fork():
    if _omp_forked:
        from .. import BackendUnavailableError
        raise BackendUnavailableError(
            "backend 'numba' cannot run in this process: it was forked from a process that "
            "had started Numba's 'omp' threading layer (GNU OpenMP), which terminates a "
            "forked child at its first parallel region. Use backend='cython' or 'numpy' "
            "here, start worker processes with the 'spawn' or 'forkserver' method, or set "
            "NUMBA_THREADING_LAYER=workqueue (or tbb) before importing fastconv.")


_warm_parallel = False   # warmup(): run the parallel kernels even on one thread


@contextlib.contextmanager
def _numba_threads(num_threads, work):
    """Run with up to ``num_threads`` Numba threads; yield the count used.

    The count is capped at the pool size (``NUMBA_NUM_THREADS``) and at one
    thread per ``MIN_WORK_PER_THREAD`` elementary operations (``work``): waking
    a second thread for a tiny call costs more than the call (and on a busy
    machine a descheduled worker can stall the region for milliseconds).
    Below ``NUMBA_SERIAL_WORK`` operations it is 1, and a count of 1 runs the
    serial twins of the kernels (:func:`_kernel`), which start no threads and
    need neither the threading layer nor its lock.  Results do not depend on
    the count.
    """
    n = min(int(num_threads), numba.config.NUMBA_NUM_THREADS,
            int(work) // _tuning.NUMBA_MIN_WORK_PER_THREAD + 1)
    if work < _tuning.NUMBA_SERIAL_WORK:
        n = 1
    n = max(1, n)
    if n == 1 and not _warm_parallel:
        yield 1
        return
    _check_fork()
    previous = numba.get_num_threads()  # launches the threading layer on first use
    lock = _workqueue_lock if _cfg.needs_lock() else contextlib.nullcontext()
    with lock:
        numba.set_num_threads(n)
        try:
            yield n
        finally:
            numba.set_num_threads(previous)


def _kernel(name, n):
    """Kernel ``name`` of :mod:`.kernels` for a call on ``n`` threads: its serial twin for 1."""
    if n > 1 or _warm_parallel:
        return getattr(_k, name)
    return _k.SERIAL[name]


_local = threading.local()


def _workspace(shape, dtype):
    """A scratch array, reusing this Python thread's previous one when big enough.

    A fresh ``np.empty`` of a few MB costs its page faults again on every call;
    buffers up to ``NUMBA_WORKSPACE_KEEP_BYTES`` (:mod:`fastconv._tuning`) are
    therefore kept per Python thread (so concurrent calls never share one).
    """
    dtype = np.dtype(dtype)
    size = math.prod(int(s) for s in shape)
    nbytes = size * dtype.itemsize
    if nbytes > _tuning.NUMBA_WORKSPACE_KEEP_BYTES:
        return np.empty(shape, dtype=dtype)
    buf = getattr(_local, "buf", None)
    if buf is None or buf.nbytes < nbytes:
        buf = np.empty(max(nbytes, 1 << 16), dtype=np.uint8)
        _local.buf = buf
    return buf[:nbytes].view(dtype).reshape(shape)


def _geometry(strides, dilations, pads):
    """``(SH, SW, DH, DW, top, left)`` as Python ints (Numba compiles one signature for them)."""
    return (*(int(v) for v in strides), *(int(v) for v in dilations), *(int(v) for v in pads))


def _pieces(N, OH, row_work):
    """``(n0, n1, r0, r1)``: images ``[n0, n1)``, output rows ``[r0, r1)``, in order.

    Each piece is about ``INTERRUPT_WORK`` operations when an output row costs
    ``row_work``: whole images while an image costs less than that, otherwise
    bands of rows of one image.  Python looks at pending signals between two
    kernel calls, so Ctrl-C is answered after at most one piece.  Shape only.
    """
    per = max(1, int(_tuning.INTERRUPT_WORK // max(row_work, 1)))
    if per >= OH:
        step = max(1, per // max(OH, 1))
        for n0 in range(0, N, step):
            yield n0, min(N, n0 + step), 0, OH
        return
    for n in range(N):
        for r0 in range(0, OH, per):
            yield n, n + 1, r0, min(OH, r0 + per)


def _input_rows(H, r0, r1, S, K, D, top):
    """Input rows ``[h0, h1)`` that output rows ``[r0, r1)`` read, and their leading padding.

    With the input cut to those rows, output row ``r0 + i`` reads with
    leading padding ``top - r0*S + h0`` exactly the values row ``r0 + i`` of
    the whole input reads.
    """
    h0 = min(max(0, r0 * S - top), H)
    h1 = max(h0, min(H, (r1 - 1) * S - top + (K - 1) * D + 1))
    return h0, h1, top - r0 * S + h0


def _row_bands(x, out, row_work, KH, SH, DH, top):
    """``(x_piece, out_piece, top_piece, h0)`` for each piece of :func:`_pieces` (views)."""
    H = x.shape[1]
    for n0, n1, r0, r1 in _pieces(out.shape[0], out.shape[1], row_work):
        if r0 == 0 and r1 == out.shape[1]:
            yield x[n0:n1], out[n0:n1], top, 0
            continue
        h0, h1, t = _input_rows(H, r0, r1, SH, KH, DH, top)
        yield x[n0:n1, h0:h1], out[n0:n1, r0:r1], t, h0


def _writable(a):
    """Numba compiles a separate signature for read-only arrays; copy those instead."""
    return a if a.flags.writeable else a.copy()


# ----------------------------------------------------------------------------- conv2d
def choose_algorithm(x_shape, w_shape, out_shape, strides, dilations, groups):
    """The kernel ``algorithm="auto"`` runs for one convolution: 'direct' or 'im2col'.

    Takes the same arguments as the compiled backend's rule; only the filter
    shape and ``groups`` matter here:

    * depthwise (``Cg == 1``, ``groups > 1``): ``"direct"`` (row kernel, one
      multiply-add per channel; im2col would be a GEMM with one column).
    * few output channels per group (``Og < NUMBA_FEW_OUTPUTS``) and few
      input channels (``Cg <= NUMBA_PLANAR_MAX_CHANNELS``, both in
      :mod:`fastconv._tuning`): ``"direct"`` (planar kernel); a GEMM that
      narrow is far from BLAS speed.
    * otherwise ``"im2col"``: with 32 or more output channels BLAS wins even
      for ``C_in = 1``.
    """
    KH, KW, Cg, O = w_shape
    Og = O // groups
    if groups > 1 and Cg == 1:
        return "direct"
    if Og < _tuning.NUMBA_FEW_OUTPUTS and Cg <= _tuning.NUMBA_PLANAR_MAX_CHANNELS:
        return "direct"
    return "im2col"


def conv_channel_lanes(dtype, in_channels):
    """Output channels of ``dtype`` that one vector (or GEMM micro-tile column block) serves.

    The planar kernel (``in_channels <= NUMBA_PLANAR_MAX_CHANNELS``) vectorizes
    across pixels: 1, a convolution with few output channels wastes nothing.
    Otherwise the GEMM of the im2col kernel (or the row kernel, across output
    channels) fills 256-bit blocks of output channels.  The input gradient
    counts its work by it (:func:`fastconv._backward.stacked_block`).
    """
    if in_channels <= _tuning.NUMBA_PLANAR_MAX_CHANNELS:
        return 1
    return 32 // np.dtype(dtype).itemsize


def _im2col_tile(P, K, itemsize):
    """Output pixels per im2col tile: from the problem size only (never the thread count)."""
    tile = _tuning.IM2COL_TILE_BYTES // max(1, K * itemsize)
    tile = max(16, min(1024, tile))
    # at least ~8 tiles when the problem is small, so both threads get work
    tile = min(tile, max(16, -(-P // 8)))
    return int(tile)


def conv2d(x, w, bias, out, strides, dilations, pads, groups, relu, num_threads,
           algorithm="auto"):
    """Driver: fill ``out`` (N, OH, OW, O) with the convolution of ``x`` by ``w``."""
    N, H, W, C = x.shape
    KH, KW, Cg, O = w.shape
    groups = int(groups)
    Og = O // groups
    SH, SW, DH, DW, top, left = _geometry(strides, dilations, pads)
    x = _writable(x)
    w = _writable(w)
    b = np.zeros(O, dtype=x.dtype) if bias is None else _writable(bias)
    relu = bool(relu)
    if algorithm == "auto":
        algorithm = choose_algorithm(x.shape, w.shape, out.shape, strides, dilations, groups)
    if algorithm == "im2col":
        K = KH * KW * Cg
        wmat = np.ascontiguousarray(w.reshape(K, groups, Og).transpose(1, 0, 2))
        P = N * out.shape[1] * out.shape[2]
        tile = _im2col_tile(P, K, x.itemsize)
        n_tiles = -(-P // tile)
        # pieces of whole tiles, so every GEMM has the shape it has in one piece
        step = max(1, int(_tuning.INTERRUPT_WORK // max(tile * K * O, 1)))
        with single_threaded_blas(), _numba_threads(num_threads, P * K * Og) as n:
            for t0 in range(0, n_tiles, step):
                _kernel("conv2d_im2col", n)(x, wmat, b, out, KH, KW, SH, SW, DH, DW, top, left,
                                            relu, tile, t0, min(n_tiles, t0 + step), n)
        return
    if algorithm != "direct":
        raise ValueError(f"algorithm must be 'auto', 'direct' or 'im2col'; got {algorithm!r}.")
    OH, OW = out.shape[1], out.shape[2]
    Wq = OW + ((KW - 1) * DW) // SW
    Hq = OH + ((KH - 1) * DH) // SH + 1
    row_work = OW * O * KH * KW * Cg
    # the planar kernel's workspace holds SH*SW phase planes of every channel; when that
    # is more than twice the input (large strides), the row kernel, which needs none, runs
    planar_too_big = N * C * SH * SW * Hq * Wq > 2 * x.size + (1 << 20)
    if groups > 1 and Cg == 1 or Cg > _tuning.NUMBA_PLANAR_MAX_CHANNELS or planar_too_big:
        with _numba_threads(num_threads, out.size * KH * KW * Cg) as n:
            for xp, op, t, _ in _row_bands(x, out, row_work, KH, SH, DH, top):
                _kernel("conv2d_direct_o", n)(xp, w, b, op, SH, SW, DH, DW, t, left, groups,
                                              relu, n)
        return
    block = _planar_block(O)
    wt = None
    with _numba_threads(num_threads, out.size * KH * KW * Cg) as n:
        for xp, op, t, _ in _row_bands(x, out, row_work, KH, SH, DH, top):
            Hq = op.shape[1] + ((KH - 1) * DH) // SH + 1
            planes = _workspace((op.shape[0], C, SH, SW, Hq * Wq), x.dtype)
            toff, wt = _planar_taps(w, groups, C, SH, SW, DH, DW, Hq * Wq, Wq, wt)
            _kernel("build_planes", n)(xp, planes, SH, SW, t, left, Wq, n)
            _kernel("conv2d_planar", n)(planes, toff, wt, b, op, Wq, groups, relu, block, n)


@functools.lru_cache(maxsize=64)
def _planar_offsets(KH, KW, Cg, groups, SH, SW, DH, DW, L, Wq):
    """Flat offsets ``toff[g, t]`` of the planar kernel's taps (depends on geometry only).

    Tap ``t = (kh*KW + kw)*Cg + c`` of group ``g`` reads channel ``g*Cg + c``
    in stride phase ``((kh*DH) % SH, (kw*DW) % SW)``, shifted by
    ``((kh*DH)//SH)*Wq + (kw*DW)//SW``.
    """
    kh = np.arange(KH)[:, None, None]
    kw = np.arange(KW)[None, :, None]
    c = np.arange(Cg)[None, None, :]
    plane_kk = ((kh * DH) % SH) * SW + (kw * DW) % SW
    shift = ((kh * DH) // SH) * Wq + (kw * DW) // SW
    ci = np.arange(groups)[:, None, None, None] * Cg + c
    toff = ((ci * SH * SW + plane_kk) * L + shift).reshape(groups, KH * KW * Cg)
    return np.ascontiguousarray(toff, dtype=np.uint64)


def _planar_taps(w, groups, C, SH, SW, DH, DW, L, Wq, wt=None):
    """Tap tables for the planar kernel: offsets ``toff[g, t]`` and weights ``wt[o, t]``.

    ``wt`` is made from ``w`` unless given (the previous piece's).
    """
    KH, KW, Cg, O = w.shape
    toff = _planar_offsets(KH, KW, Cg, groups, SH, SW, DH, DW, L, Wq)
    if wt is None:
        wt = np.ascontiguousarray(w.reshape(KH * KW * Cg, O).T)
    return toff, wt


def _planar_block(O):
    """Flat positions per planar work unit: ``acc`` (O, block) stays near 32 KB (L1)."""
    return int(max(64, min(4096, (8192 // O) // 16 * 16)))


# ----------------------------------------------------------------------------- other ops
@contextlib.contextmanager
def _dynamic(n):
    """Hand a ``prange``'s iterations out one at a time (Numba's dynamic schedule) on ``n > 1``
    threads, so that a thread stalled by another process on its core holds up at most the
    iteration it has taken, not a fixed share of the call.  The chunks come from the shape."""
    if n <= 1:
        yield
        return
    previous = numba.set_parallel_chunksize(1)
    try:
        yield
    finally:
        numba.set_parallel_chunksize(previous)


def _elementwise(name, arrays, num_threads):
    """Kernel ``name`` over flat ``arrays`` (the last is the output) in pieces of
    ``RELU_INTERRUPT_ELEMENTS`` (Ctrl-C is seen between them), one range per block of
    ``NUMBA_RELU_BLOCK`` elements, dynamically scheduled."""
    size = arrays[-1].size
    block, step = _tuning.NUMBA_RELU_BLOCK, _tuning.RELU_INTERRUPT_ELEMENTS
    with _numba_threads(num_threads, size) as n, _dynamic(n):
        kernel = _kernel(name, n)
        for i in range(0, size, step):
            piece = [a[i:i + step] for a in arrays]
            kernel(*piece, block, -(-piece[-1].size // block))


def relu(x, out, num_threads):
    """Driver: ``out = max(x, 0)`` elementwise on flat arrays (``out`` may be ``x``).

    Pieces of ``RELU_INTERRUPT_ELEMENTS``, so that Ctrl-C is seen between them.
    """
    if out is not x:
        x = _writable(x)
    _elementwise("relu", (x, out), num_threads)


def relu_backward(value, dy, out, num_threads):
    """Driver: ``out = dy`` where ``value > 0``, else 0 (flat arrays; NaN ``value`` gives 0)."""
    value = value if value is out else _writable(value)
    dy = dy if dy is out else _writable(dy)
    _elementwise("relu_backward", (value, dy, out), num_threads)


def max_pool2d(x, out, ksize, strides, dilations, pads, num_threads):
    """Driver: NHWC max pooling into ``out``; padding is never picked, NaN propagates.

    Each band of rows is cut into ranges of about ``POOL_CHUNK_WORK`` compares (from the
    shape), dynamically scheduled.
    """
    KH, KW = (int(k) for k in ksize)
    SH, SW, DH, DW, top, left = _geometry(strides, dilations, pads)
    x = _writable(x)
    row_work = out.shape[2] * out.shape[3] * min(KH, x.shape[1]) * min(KW, x.shape[2])
    per_chunk = max(1, _tuning.POOL_CHUNK_WORK // max(row_work, 1))
    with _numba_threads(num_threads, out.size * KH * KW) as n, _dynamic(n):
        for xp, op, t, _ in _row_bands(x, out, row_work, KH, SH, DH, top):
            rows = op.shape[0] * op.shape[1]
            _kernel("max_pool2d", n)(xp, op, KH, KW, SH, SW, DH, DW, t, left,
                                     max(1, -(-rows // per_chunk)))


def im2col(x, out, ksize, strides, dilations, pads, num_threads):
    """Driver: fill ``out`` (N, OH, OW, KH, KW, C) with input windows, zeros outside."""
    SH, SW, DH, DW, top, left = _geometry(strides, dilations, pads)
    x = _writable(x)
    KH = out.shape[3]
    with _numba_threads(num_threads, out.size) as n:
        row_work = (out[0, 0].size if out.size else 1) * _tuning.INTERRUPT_COPY_COST
        for xp, op, t, _ in _row_bands(x, out, row_work, KH, SH, DH, top):
            _kernel("im2col", n)(xp, op, SH, SW, DH, DW, t, left, n)


# ----------------------------------------------------------------------------- backward drivers
def col2im(cols, out, ksize, strides, dilations, pads, num_threads):
    """Driver: ``out`` (N, H, W, C) ``+=`` the adjoint of im2col of ``cols`` (N, OH, OW, KH, KW, C)."""
    SH, SW, DH, DW, top, left = _geometry(strides, dilations, pads)
    cols = _writable(cols)
    N, H = out.shape[0], out.shape[1]
    OH, KH = cols.shape[1], cols.shape[3]
    with _numba_threads(num_threads, cols.size) as n:
        # each input row is summed whole by one chunk, so the chunk count never changes a bit;
        # pieces of input rows [h0, h1) take the window rows [o0, o1) that reach them
        row_work = cols.size / max(N * H, 1) * _tuning.INTERRUPT_COPY_COST
        for n0, n1, h0, h1 in _pieces(N, H, row_work):
            if h0 == 0 and h1 == H:
                _kernel("col2im", n)(cols[n0:n1], out[n0:n1], SH, SW, DH, DW, top, left, n)
                continue
            o0 = max(0, -(-(h0 + top - (KH - 1) * DH) // SH))
            o1 = min(OH, (h1 - 1 + top) // SH + 1)
            if o1 > o0:
                _kernel("col2im", n)(cols[n0:n1, o0:o1], out[n0:n1, h0:h1], SH, SW, DH, DW,
                                     top + h0 - o0 * SH, left, n)


def max_pool2d_argmax(x, out, argmax, ksize, strides, dilations, pads, num_threads):
    """Driver: NHWC max pooling and the flat index ``(h*W + w)*C + c`` of each first maximum."""
    KH, KW = (int(k) for k in ksize)
    SH, SW, DH, DW, top, left = _geometry(strides, dilations, pads)
    x = _writable(x)
    W, C = x.shape[2], x.shape[3]
    row_work = out.shape[2] * C * min(KH, x.shape[1]) * min(KW, W)
    with _numba_threads(num_threads, out.size * KH * KW) as n:
        for (xp, op, t, h0), (_, ap, _, _) in zip(
                _row_bands(x, out, row_work, KH, SH, DH, top),
                _row_bands(x, argmax, row_work, KH, SH, DH, top)):
            _kernel("max_pool2d_argmax", n)(xp, op, ap, KH, KW, SH, SW, DH, DW, t, left, n)
            if h0:   # indices of the band's input rows -> of the whole image (-1 stays)
                np.add(ap, h0 * W * C, out=ap, where=ap >= 0)


def max_pool2d_backward(dy, flat_index, out, num_threads, images=1):
    """Driver: ``out = 0``, then ``dy[i]`` added at ``flat_index[i]``, one image per task.

    Raises
    ------
    ValueError
        When ``images`` does not divide the lengths, or an index lies outside
        its image's block of ``out``.
    """
    images = int(images)
    if images < 1 or dy.shape[0] % images or out.shape[0] % images:
        raise ValueError(f"images={images} must divide dy's length {dy.shape[0]} and out's "
                         f"length {out.shape[0]}.")
    dy, flat_index = _writable(dy), _writable(flat_index)
    per_dy, per_out = dy.shape[0] // images, out.shape[0] // images
    bad = 0
    with _numba_threads(num_threads, dy.size + out.size) as n, _dynamic(n):
        # pieces of whole images (an image's indices, shifted to the piece's block of out)
        image_work = (per_dy + per_out) * _tuning.INTERRUPT_COPY_COST
        for n0, n1, _, _ in _pieces(images, 1, image_work):
            if n0 == 0 and n1 == images:
                bad = _kernel("max_pool2d_backward", n)(dy, flat_index, out, images)
                break
            d, o = slice(n0 * per_dy, n1 * per_dy), slice(n0 * per_out, n1 * per_out)
            bad += _kernel("max_pool2d_backward", n)(dy[d], flat_index[d] - n0 * per_out,
                                                     out[o], n1 - n0)
    if bad:
        raise ValueError(f"flat_index holds {bad} indices outside their image's block of out "
                         f"(images={images}); pass the argmax of the same input and geometry.")


def conv2d_filter_grad_native(kind, x, dy, out, strides, dilations, pads, piece_rows, pieces,
                              num_threads):
    """Driver: ``out`` (KH, KW, Cg, O) = the filter gradient of ``kind`` (``'depthwise'``, ``'dense'``).

    ``piece_rows`` and ``pieces`` are :func:`fastconv._backward.native_filter_grad_pieces`'s:
    each piece's partial sums are computed whole by one thread, then the pieces are
    added in order.  The pieces run in groups of about ``INTERRUPT_WORK`` multiply-adds,
    between which Ctrl-C is noticed.
    """
    SH, SW, DH, DW, top, left = _geometry(strides, dilations, pads)
    KH, KW, Cg, O = (int(v) for v in out.shape)
    x, dy = _writable(x), _writable(dy)
    part = _workspace((max(int(pieces), 1), KH, KW, Cg, O), out.dtype)[:int(pieces)]
    piece_work = int(piece_rows) * dy.shape[2] * KH * KW * Cg * O
    step = max(1, _tuning.INTERRUPT_WORK // max(piece_work, 1))
    with _numba_threads(num_threads, piece_work * pieces) as n:
        for p0 in range(0, int(pieces), step):
            p1 = min(p0 + step, int(pieces))
            _kernel("conv2d_filter_grad", n)(x, dy, part[p0:p1], KH, KW, SH, SW, DH, DW, top,
                                             left, p0 * int(piece_rows), int(piece_rows),
                                             kind == "depthwise")
    if pieces == 0:
        out[...] = 0
        return
    out[...] = part[0]
    for p in range(1, int(pieces)):
        out += part[p]


# ----------------------------------------------------------------------------- warmup and info
_KERNELS = ("conv2d_im2col", "conv2d_direct_o", "build_planes", "conv2d_planar", "relu",
            "relu_backward", "max_pool2d", "im2col", "col2im", "max_pool2d_argmax",
            "max_pool2d_backward", "conv2d_filter_grad")


def warmup(dtypes=(np.float32, np.float64)):
    """Compile, or load from Numba's cache, every kernel for float32 and float64.

    After this the first real call of each operation does no compilation.
    With a warm cache (a previous process compiled the kernels) this takes a
    fraction of a second; with a cold cache, several tens of seconds.

    Parameters
    ----------
    dtypes : sequence of dtypes
        Which floating types to prepare.

    Returns
    -------
    dict
        Seconds spent per dtype name.
    """
    timings = {}
    for dtype in dtypes:
        dtype = np.dtype(dtype)
        start = time.perf_counter()
        _warmup_dtype(dtype)
        timings[dtype.name] = time.perf_counter() - start
    return timings


def _warmup_dtype(dtype):
    """Run every driver once on tiny inputs: the serial twins, then the parallel kernels."""
    global _warm_parallel
    for parallel in (False, True):
        _warm_parallel = parallel
        try:
            _warmup_calls(dtype)
        finally:
            _warm_parallel = False


def _warmup_calls(dtype):
    """Each driver once, on tiny inputs of ``dtype``."""
    x = np.ones((1, 4, 4, 8), dtype=dtype)
    # im2col; direct depthwise (row kernel); direct few-channel (planar kernels)
    for algorithm, w, groups in (("im2col", np.ones((3, 3, 8, 8), dtype=dtype), 1),
                                 ("direct", np.ones((3, 3, 1, 8), dtype=dtype), 8),
                                 ("direct", np.ones((3, 3, 2, 2), dtype=dtype), 4)):
        out = np.empty((1, 2, 2, w.shape[3]), dtype=dtype)
        conv2d(x, w, None, out, (1, 1), (1, 1), (0, 0), groups, True, 1, algorithm)
    flat = x.reshape(-1)
    relu(flat, np.empty_like(flat), 1)
    relu_backward(flat, flat, np.empty_like(flat), 1)
    max_pool2d(x, np.empty((1, 2, 2, 8), dtype=dtype), (2, 2), (2, 2), (1, 1), (0, 0), 1)
    im2col(x, np.empty((1, 2, 2, 3, 3, 8), dtype=dtype), (3, 3), (1, 1), (1, 1), (0, 0), 1)
    col2im(np.ones((1, 2, 2, 3, 3, 8), dtype=dtype), np.zeros_like(x), (3, 3), (1, 1),
           (1, 1), (0, 0), 1)
    pooled = np.empty((1, 2, 2, 8), dtype=dtype)
    where = np.empty((1, 2, 2, 8), dtype=np.int64)
    max_pool2d_argmax(x, pooled, where, (2, 2), (2, 2), (1, 1), (0, 0), 1)
    max_pool2d_backward(pooled.reshape(-1), where.reshape(-1), np.empty(x.size, dtype=dtype),
                        1, images=1)
    dy = np.ones((1, 2, 2, 8), dtype=dtype)
    for kind, cg in (("depthwise", 1), ("dense", 8)):
        conv2d_filter_grad_native(kind, x, dy, np.empty((3, 3, cg, 8), dtype=dtype), (1, 1),
                                  (1, 1), (0, 0), 1, 2, 1)


def _cache_dir():
    cache = getattr(_k.relu, "_cache", None)
    path = getattr(cache, "_cache_path", None)
    if path is None:
        impl = getattr(cache, "_impl", None)
        locator = getattr(impl, "_locator", None)
        path = getattr(locator, "_cache_path", None)
    return path or "unknown"


def info():
    """Facts for :func:`fastconv.show_config`: Numba version, threading layer, flags, cache."""
    layer = _cfg.threading_layer()
    blas = "held to 1 thread inside parallel im2col (threadpoolctl)"
    return {
        "numba": numba.__version__,
        "threading layer": layer if layer is not None
        else f"not started yet (will prefer {_cfg.REQUESTED_LAYER})",
        "usable layers": ", ".join(_cfg.usable_layers()),
        "max threads": numba.config.NUMBA_NUM_THREADS,
        "fastmath": ", ".join(sorted(_cfg.FASTMATH)),
        "cache": _cfg.CACHE,
        "cache dir": _cache_dir(),
        "blas threads": blas,
        "signatures loaded": ", ".join(f"{name}:{len(getattr(_k, name).signatures)}"
                              for name in _KERNELS),
    }
