"""Backward passes: the gradients of conv2d, relu, max pooling and im2col.

For a convolution ``y = conv2d(x, w)`` (cross-correlation, strides SH, SW,
dilations DH, DW, padding top, left, groups G; :func:`fastconv.conv2d`) and an
upstream gradient ``dy = dL/dy``, the chain rule gives::

    dL/dw[kh, kw, c, o] = sum_{n, oh, ow} x_pad[n, oh*SH + kh*DH, ow*SW + kw*DW, g*Cg + c] * dy[n, oh, ow, o]
    dL/dx[n, h, w, g*Cg + c] = sum_{oh*SH + kh*DH = h + top, ow*SW + kw*DW = w + left, o in group g}
                                   dy[n, oh, ow, o] * w[kh, kw, c, o]
    dL/db[o] = sum_{n, oh, ow} dy[n, oh, ow, o]

Every backend runs the same composition of its own fast primitives (unless
it provides a gradient driver itself, as the NumPy reference does):

* **Filter gradient** -- ``im2col(x)^T @ dy`` per group (BLAS GEMM), as in
  Chellapilla, Puri and Simard, "High performance convolutional neural
  networks for document processing" (2006).  The output pixels are cut into
  pieces whose boundaries depend on the shapes only; each piece's product is
  computed by one thread with single-threaded BLAS, and the pieces are summed
  in their fixed order, so the result is bitwise identical for any
  ``num_threads``.  A one-channel input (a first layer on grey images) is
  unfolded transposed instead, one strided copy per filter tap, so that the
  product reads ``dy`` once with a long inner dimension.  Depthwise
  convolutions (``groups == C_in == C_out``) and dense ones with few filter
  taps per output (:func:`native_filter_grad_kind`) run instead the backend's
  native kernel when it has one (``conv2d_filter_grad_native``): a direct
  accumulation over the output pixels, vectorized across channels, in pieces
  of output rows fixed by the shapes (:func:`native_filter_grad_pieces`) and
  summed in piece order -- again bitwise identical for any ``num_threads``.
* **Input gradient** -- either ``col2im(dy @ w^T)`` (the adjoint of the
  unfolding) or, equivalently, *forward* convolutions, on the backend's fast
  kernel, of ``dy`` with the filters rotated by 180 degrees and their in/out
  channels swapped (Dumoulin and Visin, "A guide to convolution arithmetic
  for deep learning", 2016, section 4).  With strides > 1 that convolution
  would read ``dy`` with zeros inserted between its pixels; instead each
  output phase (the input pixels ``(SH*i + ph, SW*j + pw)``) is its own dense
  stride-1 convolution with the taps that reach it (:func:`phase_taps`), the
  sub-pixel decomposition, and when the input has few channels, blocks of
  pixels are stacked into the channels of one convolution
  (:func:`stacked_block`).  :func:`input_grad_method` says which runs.
* **Bias gradient** -- a sum over ``N, OH, OW``.

Max pooling routes each output's gradient to the input position its window
took the maximum from (the first maximum in window order); overlapping windows
add up.  ``col2im`` is the adjoint of ``im2col``: every window entry is added
back to the pixel it was read from.
"""
import collections
import concurrent.futures
import contextlib
import functools
import math
import threading

import numpy as np

from . import _backends, _tuning
from ._backends import reference as _reference
from ._ops import _new_output, conv_geometry, conv_operands
from ._shapes import check_pool_windows, nhwc_dims, resolve_window
from ._threads import resolve_num_threads, single_threaded_blas
from ._validation import (as_float_array, cast_operand, check_activation, check_data_format,
                          check_ndim, check_out, positive_int, spatial_pair)

__all__ = ["conv2d_backward", "relu_backward", "max_pool2d_with_argmax", "max_pool2d_backward",
           "col2im", "conv2d_transpose"]

#: bytes of unfolded input (or of its gradient) per piece of a gradient GEMM
PIECE_BYTES = 2 << 20
#: output pixels per piece at least (so that each GEMM's inner dimension is long)
MIN_PIECE_PIXELS = 512
#: GEMM work (M * N * K) up to which BLAS is not held to one thread: OpenBLAS runs
#: products this small on one thread anyway, and the limit costs more than they do
SMALL_GEMM = 1 << 18
NEEDS = ("input", "filters", "bias")


# ============================================================================ validation
def _to_nhwc(x, data_format):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1) if data_format == "NCHW" else x)


def _from_nhwc(x, data_format):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if data_format == "NCHW" else x


def _layout(N, H, W, C, data_format):
    return (N, H, W, C) if data_format == "NHWC" else (N, C, H, W)


def _shape4(value, name, data_format):
    """A 4-entry shape (``input_sizes``, ``output_shape``) as ``(N, H, W, C)``."""
    try:
        shape = tuple(np.asarray(value).reshape(-1).tolist())
    except Exception:
        shape = None
    if (shape is None or len(shape) != 4 or
            not all(isinstance(s, int) and not isinstance(s, bool) for s in shape)):
        raise ValueError(f"{name} must be 4 integers ({data_format} order); got {value!r}.")
    if min(shape) < 1:
        raise ValueError(f"{name} must have positive entries; got {list(shape)}.")
    return nhwc_dims(shape, data_format)


def _check_grad_output(dy, expected_nhwc, data_format, name="grad_output"):
    expected = _layout(*expected_nhwc, data_format)
    if dy.shape != expected:
        raise ValueError(f"{name} has shape {dy.shape}; the forward output has shape "
                         f"{expected} ({data_format}).")


def _check_need(need):
    if isinstance(need, str):
        need = (need,)
    try:
        need = tuple(need)
    except TypeError:
        raise TypeError(f"need must be a sequence of names from {NEEDS}; got {need!r}.") from None
    unknown = [n for n in need if n not in NEEDS]
    if unknown:
        raise ValueError(f"need may contain only {NEEDS}; got {unknown[0]!r}.")
    return set(need)


# ============================================================================ driver lookup
def _driver(module, name):
    """The backend's own driver ``name``, or None (the generic composition is used)."""
    return getattr(module, name, None)


def _col2im_driver(module):
    return _driver(module, "col2im") or _reference.col2im


def _argmax_driver(module):
    return _driver(module, "max_pool2d_argmax") or _reference.max_pool2d_argmax


# ============================================================================ pieces and threads
_pool_lock = threading.Lock()
_pool = None


def _executor(workers):
    """A shared thread pool with at least ``workers`` threads."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < workers:
            old, _pool = _pool, concurrent.futures.ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="fastconv-grad")
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def pixel_pieces(N, OH, OW, row_bytes):
    """Cut the output pixels into fixed pieces ``(n0, n1, oh0, oh1)``.

    A piece is either a run of whole images or a band of output rows of one
    image, holding about :data:`PIECE_BYTES` of unfolded input (``row_bytes``
    per output pixel) and at least :data:`MIN_PIECE_PIXELS` pixels.  The cut
    depends on the shapes only, never on the thread count.
    """
    pixels = max(MIN_PIECE_PIXELS, PIECE_BYTES // max(int(row_bytes), 1))
    per_image = OH * OW
    if per_image <= pixels:
        k = pixels // per_image
        return [(n0, min(n0 + k, N), 0, OH) for n0 in range(0, N, k)]
    rows = max(1, pixels // OW)
    return [(n, n + 1, oh0, min(oh0 + rows, OH)) for n in range(N) for oh0 in range(0, OH, rows)]


def _band(piece, H, KH, SH, DH, top):
    """Input rows ``[r0, r1)`` that the output rows of ``piece`` read, and their top padding."""
    n0, n1, oh0, oh1 = piece
    first = oh0 * SH - top
    last = (oh1 - 1) * SH - top + (KH - 1) * DH + 1
    if n1 - n0 > 1 or oh1 - oh0 == 0:
        return 0, H, top  # whole images: the unfolding skips unused rows itself
    r0, r1 = max(first, 0), min(last, H)
    return r0, r1, r0 - first


_scratch = threading.local()


def _piece_buffers(size, dtype, count):
    """``count`` flat arrays of at least ``size`` elements, kept per Python thread.

    The unfolded pieces of :func:`filter_grad` are written into these, which
    a later call reuses: fresh multi-megabyte arrays cost a page fault per
    4 KiB on every call.
    """
    ring = getattr(_scratch, "pieces", None)
    dtype = np.dtype(dtype)
    if ring is None or ring[0].dtype != dtype or ring[0].size < size or len(ring) < count:
        ring = _scratch.pieces = [np.empty(size, dtype=dtype) for _ in range(count)]
    return ring


def _blas_guard(pieces, gemm_work):
    """Hold BLAS to one thread around the pieces' products, unless they are tiny."""
    if len(pieces) == 1 and gemm_work <= SMALL_GEMM:
        return contextlib.nullcontext()
    return single_threaded_blas()


def _side_threads(pieces, n_threads):
    """Threads for the unfolding (or folding) the calling thread does between the products.

    One while the pieces' products run in pool threads at the same time: a
    team of ``n_threads`` beside them would oversubscribe the cores, and its
    threads spin at each barrier waiting for a member that a product has
    taken the core of (several times slower on a busy machine).  The copies
    do not depend on the thread count.
    """
    return 1 if len(pieces) > 1 and n_threads > 1 else n_threads


def _ordered_map(func, jobs, n_threads):
    """Yield ``func(job)`` for each job in order, up to ``n_threads`` running at once.

    ``jobs`` is consumed in the calling thread (so backend primitives called
    while producing a job never run concurrently with each other); ``func``
    runs in pool threads.
    """
    if n_threads <= 1:
        for job in jobs:
            yield func(job)
        return
    pool = _executor(n_threads)
    pending = collections.deque()
    for job in jobs:
        pending.append(pool.submit(func, job))
        if len(pending) >= n_threads:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _ordered_sum(func, jobs, n_threads):
    """``func(job)`` summed over ``jobs`` in their order (None when there are none).

    The products run as :func:`_ordered_map` runs them; the sum is taken in job
    order whatever finishes first, so it does not depend on ``n_threads``.
    """
    total = None
    for part in _ordered_map(func, jobs, n_threads):
        if total is None:
            total = part
        else:
            total += part
    return total


# ============================================================================ filter gradient
def native_filter_grad_kind(C, O, groups, ksize):
    """The native filter-gradient kernel for these channels, or None (the GEMM composition).

    ``'depthwise'`` when ``groups == C == O`` (one channel per group, and more
    than one group); ``'dense'`` when ``groups == 1`` and ``KH * KW * C`` is at
    most :data:`fastconv._tuning.FILTER_GRAD_DENSE_MAX_TAPS` (an im2col GEMM
    with so short an inner dimension is far from BLAS speed).
    """
    if groups > 1 and groups == C == O:
        return "depthwise"
    if groups == 1 and ksize[0] * ksize[1] * C <= _tuning.FILTER_GRAD_DENSE_MAX_TAPS:
        return "dense"
    return None


def native_filter_grad_pieces(kind, x_shape, dy_shape, ksize):
    """``(piece_rows, pieces, work)`` of a native filter gradient, from the shapes only.

    The ``N * OH`` output rows are cut into pieces of ``piece_rows`` rows, of
    about :data:`fastconv._tuning.FILTER_GRAD_PIECE_WORK` multiply-adds each
    and at most :data:`fastconv._tuning.FILTER_GRAD_MAX_PIECES` of them; each
    piece's partial sums are kept and the pieces are added in order, so the
    result does not depend on the thread count.  ``work`` is the call's
    multiply-adds.
    """
    N, _, _, C = x_shape
    _, OH, OW, O = dy_shape
    Cg = 1 if kind == "depthwise" else C
    rows = N * OH
    row_work = OW * ksize[0] * ksize[1] * Cg * O
    piece_rows = max(1, -(-_tuning.FILTER_GRAD_PIECE_WORK // max(row_work, 1)))
    piece_rows = max(piece_rows, -(-rows // _tuning.FILTER_GRAD_MAX_PIECES))
    pieces = -(-rows // piece_rows) if rows else 0
    return piece_rows, pieces, rows * row_work


def _group_matmul_t(a, b, G):
    """``a^T @ b`` per group: a (P, T, G, Cg), b (P, G, Og) -> (G, T*Cg, Og)."""
    P, T, _, Cg = a.shape
    if G == 1:
        return (a.reshape(P, T * Cg).T @ b.reshape(P, -1))[None]
    ag = np.ascontiguousarray(a.transpose(2, 0, 1, 3)).reshape(G, P, T * Cg)
    return np.matmul(ag.transpose(0, 2, 1), b.transpose(1, 0, 2))


def filter_grad(x, dy, ksize, strides, dilations, pads, groups, module, n_threads):
    """``dL/dw`` (KH, KW, C / groups, O) by unfolded pieces of ``x`` times ``dy`` (NHWC).

    Each piece: ``im2col`` of the input band it reads (the backend's
    unfolding, in the calling thread), then one GEMM per group (a pool thread,
    BLAS held to one thread); the piece products are summed in piece order.
    """
    N, H, W, C = x.shape
    _, OH, OW, O = dy.shape
    KH, KW = ksize
    (SH, SW), (DH, DW), (top, left) = strides, dilations, pads
    G, Cg, Og, T = groups, C // groups, O // groups, KH * KW
    if C == 1:
        return _filter_grad_one_channel(x, dy, ksize, strides, dilations, pads, n_threads)
    pieces = pixel_pieces(N, OH, OW, T * C * x.itemsize)
    im2col = module.im2col
    # at most n_threads pieces are unfolded and not yet multiplied (see _ordered_map)
    ring = _piece_buffers(max((n1 - n0) * (oh1 - oh0) for n0, n1, oh0, oh1 in pieces) * OW * T * C,
                          x.dtype, min(n_threads, len(pieces)) + 1) if pieces else []
    taken = iter(range(len(pieces)))
    unfold_threads = _side_threads(pieces, n_threads)

    def unfold(piece):
        n0, n1, oh0, oh1 = piece
        r0, r1, ptop = _band(piece, H, KH, SH, DH, top)
        shape = (n1 - n0, oh1 - oh0, OW, KH, KW, C)
        if r1 <= r0:
            return None
        cols = ring[next(taken) % len(ring)][:math.prod(shape)].reshape(shape)
        im2col(x[n0:n1, r0:r1], cols, ksize, strides, dilations, (ptop, left), unfold_threads)
        return cols

    def product(job):
        cols, piece = job
        n0, n1, oh0, oh1 = piece
        P = cols.shape[0] * cols.shape[1] * OW
        b = dy[n0:n1, oh0:oh1].reshape(P, G, Og)
        return _group_matmul_t(cols.reshape(P, T, G, Cg), b, G)

    with _blas_guard(pieces, N * OH * OW * T * Cg * O):
        jobs = ((cols, piece) for piece in pieces for cols in [unfold(piece)] if cols is not None)
        total = _ordered_sum(product, jobs, n_threads if len(pieces) > 1 else 1)
    if total is None:
        return np.zeros((KH, KW, Cg, O), dtype=x.dtype)
    # (G, T*Cg, Og) -> (KH, KW, Cg, G*Og)
    return np.ascontiguousarray(total.reshape(G, T, Cg, Og).transpose(1, 2, 0, 3)).reshape(
        KH, KW, Cg, O)


def _filter_grad_one_channel(x, dy, ksize, strides, dilations, pads, n_threads):
    """``dL/dw`` (KH, KW, 1, O) of a one-channel input: ``taps @ dy`` per piece.

    With one input channel the unfolded input of a piece is best built
    transposed, ``(KH*KW, pixels)``, one strided copy of the (padded) image
    per tap; its product with the piece's ``dy`` reads ``dy`` once.  The
    pieces (sized by ``dy``, the larger operand) are fixed by the shapes and
    summed in order, as in :func:`filter_grad`.
    """
    N, H, W, _ = x.shape
    _, OH, OW, O = dy.shape
    KH, KW = ksize
    (SH, SW), (DH, DW), (top, left) = strides, dilations, pads
    bottom = max(0, (OH - 1) * SH + (KH - 1) * DH + 1 - top - H)
    right = max(0, (OW - 1) * SW + (KW - 1) * DW + 1 - left - W)
    image = x[..., 0]
    if top or left or bottom or right:
        image = np.pad(image, ((0, 0), (top, bottom), (left, right)))
    pieces = pixel_pieces(N, OH, OW, O * dy.itemsize)

    def product(piece):
        n0, n1, oh0, oh1 = piece
        taps = np.empty((KH, KW, n1 - n0, oh1 - oh0, OW), dtype=x.dtype)
        for kh in range(KH):
            r0 = oh0 * SH + kh * DH
            rows = image[n0:n1, r0:r0 + (oh1 - oh0 - 1) * SH + 1:SH]
            for kw in range(KW):
                c0 = kw * DW
                taps[kh, kw] = rows[:, :, c0:c0 + (OW - 1) * SW + 1:SW]
        return taps.reshape(KH * KW, -1) @ dy[n0:n1, oh0:oh1].reshape(-1, O)

    with _blas_guard(pieces, N * OH * OW * KH * KW * O):
        total = _ordered_sum(product, pieces, n_threads if len(pieces) > 1 else 1)
    if total is None:
        return np.zeros((KH, KW, 1, O), dtype=x.dtype)
    return total.reshape(KH, KW, 1, O)


# ============================================================================ input gradient
def input_grad_method(w_shape, groups, strides=(1, 1), work=None):
    """Which input-gradient algorithm the composition runs: 'conv' or 'col2im'.

    ``'col2im'``, one GEMM ``dy @ w^T`` per piece and the scatter-add of the
    result, when ``groups == 1``, the window has more than one tap and there
    are at least :data:`fastconv._tuning.INPUT_GRAD_COL2IM_OUTPUTS_PER_TAP`
    output channels per filter tap (``KH*KW*C_in``): the GEMM reduces over the
    many output channels and its result is small, where a convolution would
    have only ``C_in`` output channels.  ``'conv'`` otherwise: forward
    convolutions of ``dy`` with the rotated filters on the backend's fast
    kernel, one per output phase (:func:`_input_grad_conv`).  Both give the
    same sums up to rounding, and each is bitwise identical for any
    ``num_threads``.  A strided dense gradient of fewer than
    :data:`fastconv._tuning.INPUT_GRAD_SMALL_WORK` multiply-adds (``work``) is
    ``'col2im'`` too: one GEMM and one fold cost less than a convolution call
    per phase.
    """
    KH, KW, Cg, O = w_shape
    taps = KH * KW * Cg
    if groups == 1 and KH * KW > 1 and O >= _tuning.INPUT_GRAD_COL2IM_OUTPUTS_PER_TAP * taps:
        return "col2im"
    if (groups == 1 and tuple(strides) != (1, 1) and work is not None
            and work < _tuning.INPUT_GRAD_SMALL_WORK):
        return "col2im"
    return "conv"


def rotated_filters(w, groups):
    """Filters of the transposed convolution: ``wt[kh, kw, o, g*Cg + c] = w[KH-1-kh, KW-1-kw, c, g*Og + o]``."""
    KH, KW, Cg, O = w.shape
    Og = O // groups
    wt = w[::-1, ::-1].reshape(KH, KW, Cg, groups, Og).transpose(0, 1, 4, 3, 2)
    return np.ascontiguousarray(wt).reshape(KH, KW, Og, groups * Cg)


@functools.lru_cache(maxsize=1024)
def phase_taps(K, S, D, pad, phase):
    """The taps of one output phase of a transposed convolution, along one axis.

    Input rows ``h = S*i + phase`` are reached by the taps ``k`` with
    ``(k*D - phase - pad) % S == 0``, each from output row
    ``i - (k*D - phase - pad) // S``.  These taps are ``k0, k0 + S/g, ...``
    (``g = gcd(S, D)``) and their output rows ``D/g`` apart: a dense stride-1
    correlation with dilation ``D/g``.  Returns ``(k0, step, count, lead, dil)``:
    ``count`` taps from ``k0`` every ``step`` (0 taps: the phase's gradient is
    0), and that correlation's leading padding ``lead`` and dilation ``dil``.
    """
    g = math.gcd(S, D)
    step, dil = S // g, D // g
    k0 = next((k for k in range(min(step, K)) if (k * D - phase - pad) % S == 0), None)
    if k0 is None:
        return 0, step, 0, 0, dil
    count = (K - 1 - k0) // step + 1
    lead = (k0 * D - phase - pad) // S + (count - 1) * dil
    return k0, step, count, lead, dil


def _phase_buffer(size, dtype):
    """A flat scratch array of at least ``size`` elements, kept per Python thread."""
    buf = getattr(_scratch, "phase", None)
    if buf is None or buf.dtype != dtype or buf.size < size:
        buf = _scratch.phase = np.empty(size, dtype=dtype)
    return buf


def _block_taps(K, S, D, pad, B):
    """Per output phase ``p`` in ``[0, B)`` (``B`` a multiple of ``S``): its taps ``(k, m)``.

    Input row ``h = B*i + p`` receives tap ``k`` from output row ``(B/S)*i - m``
    when ``m = (k*D - p - pad) / S`` is an integer.
    """
    return [[(k, (k * D - p - pad) // S) for k in range(K) if (k * D - p - pad) % S == 0]
            for p in range(B)]


@functools.lru_cache(maxsize=256)
def stacked_block(C, ksize, strides, dilations, pads, groups, lanes):
    """The output block ``(BH, BW)`` whose phases one stacked convolution computes, or None.

    The forward kernels of a backend whose ``conv_channel_lanes`` is ``lanes``
    vectorize across output channels: with few channels per input pixel (a
    first layer's ``C_in``), the per-phase convolutions of
    :func:`_input_grad_conv` fill part of each vector.  A block of ``BH x BW``
    input pixels (multiples of the strides) is instead computed as one pixel of
    a convolution of ``dy`` with stride ``(BH/SH, BW/SW)`` and ``BH*BW*C``
    output channels, its window the union of the block's taps (zeros where a
    pixel has none).  The block minimises the multiply-adds counted in whole
    vectors per input pixel, over blocks of at most
    :data:`fastconv._tuning.INPUT_GRAD_STACK_MAX_VECTORS` vectors; None when
    none beats the per-phase convolutions by
    :data:`fastconv._tuning.INPUT_GRAD_STACK_GAIN`, when ``groups > 1`` or
    when ``lanes`` is 1.  It depends on the shapes and ``lanes`` only.
    """
    if groups != 1 or lanes <= 1:
        return None
    limit = lanes * _tuning.INPUT_GRAD_STACK_MAX_VECTORS
    (KH, KW), (SH, SW), (DH, DW), (top, left) = ksize, strides, dilations, pads

    def vectors(ch):
        return -(-ch // lanes) * lanes

    def window(taps):
        ms = [m for phase in taps for _, m in phase]
        return max(ms) - min(ms) + 1 if ms else 0

    rows = _block_taps(KH, SH, DH, top, SH)
    cols = _block_taps(KW, SW, DW, left, SW)
    base = sum(len(r) for r in rows) * sum(len(c) for c in cols) * vectors(C) / (SH * SW)
    best, choice = base / _tuning.INPUT_GRAD_STACK_GAIN, None
    for BH in range(SH, limit // (SW * C) + 1, SH):
        for BW in range(SW, limit // (BH * C) + 1, SW):
            if BH * BW > 1:
                cost = (window(_block_taps(KH, SH, DH, top, BH)) *
                        window(_block_taps(KW, SW, DW, left, BW)) *
                        vectors(BH * BW * C) / (BH * BW))
                if cost < best:
                    best, choice = cost, (BH, BW)
    return choice


def _input_grad_conv(dy, w, out, strides, dilations, pads, groups, module, n_threads):
    """``out = dL/dx`` as stride-1 forward convolutions of ``dy``, one per output phase.

    The input pixels ``(SH*i + ph, SW*j + pw)`` of one phase ``(ph, pw)`` receive
    the gradient through the taps :func:`phase_taps` picks, with the filters
    rotated by 180 degrees and their channels swapped (:func:`rotated_filters`):
    a dense convolution of ``dy`` on the backend's fast kernel, written into the
    phase's pixels of ``out`` (directly when the strides are 1).  No work is
    spent on the zeros that inserting ``SH - 1`` rows and ``SW - 1`` columns
    between the pixels of ``dy`` would add.  With few channels, blocks of
    phases run as one convolution instead (:func:`stacked_block`) when the
    work is at least :data:`fastconv._tuning.INPUT_GRAD_SMALL_WORK`, unless
    ``dy`` holds a non-finite value (a stacked window's zero taps would turn it
    into NaN in the other phases' pixels).
    """
    N, OH, OW, O = dy.shape
    _, H, W, C = out.shape
    KH, KW = w.shape[:2]
    (SH, SW), (DH, DW), (top, left) = strides, dilations, pads
    lanes = _driver(module, "conv_channel_lanes")
    block = None
    if lanes is not None and _input_grad_work(dy, w) >= _tuning.INPUT_GRAD_SMALL_WORK:
        block = stacked_block(C, (KH, KW), strides, dilations, pads, groups,
                               lanes(out.dtype, O))
    if block is not None and math.isfinite(float(np.add.reduce(dy, axis=None))):
        _stacked_conv(dy, w, out, block, strides, dilations, pads, module, n_threads)
        return
    if (SH, SW) == (1, 1):
        _phase_conv(dy, w, out, (0, 1, KH, (KH - 1) * DH - top, DH),
                    (0, 1, KW, (KW - 1) * DW - left, DW), groups, module, n_threads)
        return
    for ph in range(min(SH, H)):
        rows = phase_taps(KH, SH, DH, top, ph)
        for pw in range(min(SW, W)):
            cols = phase_taps(KW, SW, DW, left, pw)
            target = out[:, ph::SH, pw::SW]
            _phase_conv(dy, w, target, rows, cols, groups, module, n_threads)


@functools.lru_cache(maxsize=256)
def _stack_plan(ksize, block, strides, dilations, pads):
    """Where each tap goes in a stacked convolution's filters (:func:`_stacked_conv`).

    Returns ``(lh, lw, uh, uw, index)``: the window ``uh x uw`` and its leading
    padding ``lh, lw``; ``index`` the arrays ``(u, v, ph, pw, kh, kw)`` of the
    taps, tap ``(kh, kw)`` at window position ``(u, v)`` for block pixel ``(ph, pw)``.
    """
    (KH, KW), (BH, BW), (SH, SW), (DH, DW), (top, left) = ksize, block, strides, dilations, pads
    rows = _block_taps(KH, SH, DH, top, BH)
    cols = _block_taps(KW, SW, DW, left, BW)
    mh = [m for phase in rows for _, m in phase]
    mw = [m for phase in cols for _, m in phase]
    lh, lw = max(mh), max(mw)
    entries = [(lh - m1, lw - m2, ph, pw, kh, kw)
               for ph, taps_h in enumerate(rows) for kh, m1 in taps_h
               for pw, taps_w in enumerate(cols) for kw, m2 in taps_w]
    index = tuple(np.array(column, dtype=np.intp) for column in zip(*entries))
    return lh, lw, lh - min(mh) + 1, lw - min(mw) + 1, index


def _stacked_conv(dy, w, out, block, strides, dilations, pads, module, n_threads):
    """``out = dL/dx`` by one convolution per ``block`` of input pixels (:func:`stacked_block`).

    Block pixel ``(ph, pw)`` of block ``(i, j)`` is input pixel ``(BH*i + ph,
    BW*j + pw)``, the channels ``(ph*BW + pw)*C ...`` of output pixel ``(i, j)``
    of a convolution of ``dy`` with strides ``(BH/SH, BW/SW)``.
    """
    N, H, W, C = out.shape
    KH, KW, _, O = w.shape
    BH, BW = block
    SH, SW = strides
    lh, lw, uh, uw, (u, v, ph, pw, kh, kw) = _stack_plan((KH, KW), block, strides, dilations,
                                                          pads)
    wst = np.zeros((uh, uw, O, BH, BW, C), dtype=w.dtype)
    wst[u, v, :, ph, pw, :] = w.transpose(0, 1, 3, 2)[kh, kw]
    wst = wst.reshape(uh, uw, O, BH * BW * C)
    Hs, Ws = -(-H // BH), -(-W // BW)
    d = dy[:, max(-lh, 0):, max(-lw, 0):]
    if d.shape[1] == 0 or d.shape[2] == 0:
        out[...] = 0
        return
    size = N * Hs * Ws * BH * BW * C
    res = _phase_buffer(size, out.dtype)[:size].reshape(N, Hs, Ws, BH * BW * C)
    module.conv2d(np.ascontiguousarray(d), wst, None, res, (BH // SH, BW // SW), (1, 1),
                  (max(lh, 0), max(lw, 0)), 1, False, n_threads, "auto")
    res = res.reshape(N, Hs, Ws, BH, BW, C).transpose(0, 1, 3, 2, 4, 5)
    if (Hs * BH, Ws * BW) == (H, W):
        out.reshape(N, Hs, BH, Ws, BW, C)[...] = res
        return
    for ph in range(min(BH, H)):
        for pw in range(min(BW, W)):
            part = out[:, ph::BH, pw::BW]
            part[...] = res[:, :part.shape[1], ph, :part.shape[2], pw]


def _phase_conv(dy, w, target, rows, cols, groups, module, n_threads):
    """Fill ``target`` (one phase's pixels of ``dL/dx``) by a forward convolution of ``dy``."""
    (kh0, sh, jh, top, dh), (kw0, sw, jw, left, dw) = rows, cols
    # a negative padding means the first rows of dy are never read: drop them
    dy = dy[:, max(-top, 0):, max(-left, 0):]
    if jh == 0 or jw == 0 or dy.shape[1] == 0 or dy.shape[2] == 0:
        target[...] = 0
        return
    if (kh0, sh, jh, kw0, sw, jw) != (0, 1, w.shape[0], 0, 1, w.shape[1]):
        w = w[kh0::sh][:jh, kw0::sw][:, :jw]
    wt = rotated_filters(w, groups)
    out = target
    if not target.flags.c_contiguous:
        out = _phase_buffer(target.size, target.dtype)[:target.size].reshape(target.shape)
    module.conv2d(np.ascontiguousarray(dy), wt, None, out, (1, 1), (dh, dw),
                  (max(top, 0), max(left, 0)), groups, False, n_threads, "auto")
    if out is not target:
        target[...] = out


def _input_grad_col2im(dy, w, out, strides, dilations, pads, groups, module, n_threads):
    """``out = dL/dx`` as ``col2im(dy @ w^T)``, piece by piece (scatter-adds in piece order)."""
    N, H, W, C = out.shape
    _, OH, OW, O = dy.shape
    KH, KW, Cg, _ = w.shape
    (SH, SW), (DH, DW), (top, left) = strides, dilations, pads
    G, Og, T = groups, O // groups, KH * KW
    # (G, Og, T*Cg): group g's filters, transposed
    wt = np.ascontiguousarray(w.reshape(T, Cg, G, Og).transpose(2, 3, 0, 1)).reshape(G, Og, T * Cg)
    col2im = _col2im_driver(module)
    pieces = pixel_pieces(N, OH, OW, T * C * dy.itemsize)
    out[...] = 0

    def product(piece):
        n0, n1, oh0, oh1 = piece
        P = (n1 - n0) * (oh1 - oh0) * OW
        d = dy[n0:n1, oh0:oh1].reshape(P, G, Og)
        if G == 1:
            cols = d.reshape(P, O) @ wt[0]
        else:
            cols = np.matmul(d.transpose(1, 0, 2), wt).reshape(G, P, T, Cg).transpose(1, 2, 0, 3)
        return np.ascontiguousarray(cols).reshape(n1 - n0, oh1 - oh0, OW, KH, KW, C)

    fold_threads = _side_threads(pieces, n_threads)
    with _blas_guard(pieces, N * OH * OW * T * Cg * O):
        parts = _ordered_map(product, pieces, n_threads if len(pieces) > 1 else 1)
        for piece, cols in zip(pieces, parts):
            n0, n1, oh0, oh1 = piece
            r0, r1, ptop = _band(piece, H, KH, SH, DH, top)
            if r1 > r0:
                col2im(cols, out[n0:n1, r0:r1], (KH, KW), strides, dilations, (ptop, left),
                       fold_threads)


def _input_grad_work(dy, w):
    """Multiply-adds of an input gradient: ``N*OH*OW * KH*KW*C_in/groups * C_out``."""
    return dy.size * w.shape[0] * w.shape[1] * w.shape[2]


def input_grad(dy, w, out, strides, dilations, pads, groups, module, n_threads, method=None):
    """Fill ``out`` (N, H, W, C) with ``dL/dx``: the backend's driver, else the composition."""
    own = _driver(module, "conv2d_backward_input")
    if method is None and own is not None:
        own(dy, w, out, strides, dilations, pads, groups, n_threads)
        return
    method = method or input_grad_method(w.shape, groups, strides, _input_grad_work(dy, w))
    run = _input_grad_conv if method == "conv" else _input_grad_col2im
    run(dy, w, out, strides, dilations, pads, groups, module, n_threads)


def filters_grad(x, dy, ksize, strides, dilations, pads, groups, module, n_threads,
                 composed=False):
    """``dL/dw``: the backend's driver, else the composition (:func:`filter_grad`)."""
    own = None if composed else _driver(module, "conv2d_backward_filters")
    if own is not None:
        out = np.empty((*ksize, x.shape[3] // groups, dy.shape[3]), dtype=x.dtype)
        own(x, dy, out, strides, dilations, pads, groups, n_threads)
        return out
    kind = None if composed else native_filter_grad_kind(x.shape[3], dy.shape[3], groups,
                                                                ksize)
    native = _driver(module, "conv2d_filter_grad_native") if kind else None
    if native is not None:
        out = np.empty((*ksize, x.shape[3] // groups, dy.shape[3]), dtype=x.dtype)
        piece_rows, pieces, work = native_filter_grad_pieces(kind, x.shape, dy.shape, ksize)
        if work < _tuning.FILTER_GRAD_SINGLE_THREAD_WORK:
            n_threads = 1
        native(kind, x, dy, out, strides, dilations, pads, piece_rows, pieces, n_threads)
        return out
    return filter_grad(x, dy, ksize, strides, dilations, pads, groups, module, n_threads)


# ============================================================================ public ops
def conv2d_backward(input, filters, grad_output, strides=1, padding="VALID", data_format="NHWC",
                    dilations=1, *, groups=1, output=None, activation=None,
                    need=("input", "filters", "bias"), backend=None, num_threads=None):
    """Gradients of :func:`fastconv.conv2d` with respect to its input, filters and bias.

    For ``y = act(conv2d(x, w) + b)`` and ``dy = dL/dy`` (``grad_output``)::

        dz = dy * (y > 0)            if activation == "relu", else dz = dy
        grad_filters[kh, kw, c, o] = sum_{n, oh, ow} x_pad[n, oh*SH + kh*DH, ow*SW + kw*DW, g*Cg + c] * dz[n, oh, ow, o]
        grad_input = the adjoint of the convolution applied to dz (each dz[n, oh, ow, o]
                     times w[kh, kw, c, o] added to the input pixel the tap read)
        grad_bias[o] = sum_{n, oh, ow} dz[n, oh, ow, o]

    with ``g = o // (C_out / groups)``; padding positions receive nothing.
    The filter gradient is ``im2col(x)^T @ dz`` per group (GEMM), or a native
    direct kernel for depthwise and few-tap convolutions, summed over fixed
    pieces of the output in a fixed order; the input gradient is a
    forward convolution of ``dz`` with the rotated filters, or ``col2im(dz @
    w^T)`` (see :func:`fastconv._backward.input_grad_method`).  Results are
    bitwise identical for any ``num_threads``.

    Parameters
    ----------
    input : array_like, 4-D
        The forward input, NHWC or NCHW; float32 or float64.
    filters : array_like, 4-D
        HWIO ``(KH, KW, C_in / groups, C_out)``; cast to the input's dtype.
    grad_output : array_like, 4-D
        ``dL/dy``, the shape of the forward output; cast to the input's dtype.
    strides, padding, data_format, dilations, groups
        The forward convolution's, as for :func:`fastconv.conv2d`.
    output : array_like, optional
        The forward output ``y``; required with ``activation="relu"`` (its
        positive entries are where the ReLU passed the gradient).
    activation : {None, 'relu'}
        The fused forward activation.
    need : sequence of {'input', 'filters', 'bias'}
        Which gradients to compute; the others are returned as None.
    backend, num_threads
        As for :func:`fastconv.conv2d`.

    Returns
    -------
    grad_input : ndarray or None
        The input's shape and layout.
    grad_filters : ndarray or None
        ``(KH, KW, C_in / groups, C_out)``.
    grad_bias : ndarray or None
        ``(C_out,)``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.ones((1, 4, 4, 1)); w = np.ones((3, 3, 1, 1)); dy = np.ones((1, 2, 2, 1))
    >>> dx, dw, db = fastconv.conv2d_backward(x, w, dy)
    >>> dx[0, :, :, 0]
    array([[1., 2., 2., 1.],
           [2., 4., 4., 2.],
           [2., 4., 4., 2.],
           [1., 2., 2., 1.]])
    >>> float(db[0]), dw.shape
    (4.0, (3, 3, 1, 1))
    """
    x, w, data_format, groups = conv_operands(input, filters, data_format, groups)
    wanted = _check_need(need)
    nhwc = nhwc_dims(x.shape, data_format)
    strides, dilations, win = conv_geometry(nhwc, w.shape, strides, padding, data_format, dilations,
                                            groups)
    dy = cast_operand(grad_output, "grad_output", x.dtype)
    _check_grad_output(dy, (nhwc[0], win.OH, win.OW, w.shape[3]), data_format)
    relu = check_activation(activation)
    if relu:
        if output is None:
            raise ValueError("activation='relu' needs output=, the forward output (its "
                             "positive entries are where the gradient passes).")
        y = cast_operand(output, "output", x.dtype)
        if y.shape != dy.shape:
            raise ValueError(f"output has shape {y.shape}; expected the forward output's "
                             f"shape {dy.shape}.")
    elif output is not None:
        raise ValueError("output= is used only with activation='relu' (the ReLU mask); "
                         "pass activation='relu' or drop output.")
    n_threads = resolve_num_threads(num_threads)
    _, module = _backends.resolve(backend)
    grad_input, grad_filters, grad_bias = conv2d_backward_nhwc(
        _to_nhwc(x, data_format), w, _to_nhwc(dy, data_format),
        _to_nhwc(y, data_format) if relu else None, strides, dilations,
        (win.pad_top, win.pad_left), groups, wanted, module, n_threads)
    if grad_input is not None:
        grad_input = _from_nhwc(grad_input, data_format)
    return grad_input, grad_filters, grad_bias


def conv2d_backward_nhwc(x, w, dy, relu_output, strides, dilations, pads, groups, wanted,
                         module, n_threads):
    """``(dx, dw, db)`` of checked NHWC arrays (None for a gradient not in ``wanted``).

    The core of :func:`conv2d_backward` once operands, geometry, backend
    ``module`` and thread count are settled; ``relu_output`` (NHWC, or None) is
    the forward output of a fused ReLU, whose positive entries pass the gradient.
    """
    dz = dy
    if relu_output is not None:
        dz = _relu_pass(relu_output, dy, module, n_threads)
    O = w.shape[3]
    grad_input = grad_filters = grad_bias = None
    if "bias" in wanted:
        grad_bias = dz.reshape(-1, O).sum(axis=0)
    if "filters" in wanted:
        grad_filters = filters_grad(x, dz, w.shape[:2], strides, dilations, pads, groups,
                                    module, n_threads)
    if "input" in wanted:
        grad_input = np.empty(x.shape, dtype=x.dtype)
        if grad_input.size and dz.size:
            input_grad(dz, w, grad_input, strides, dilations, pads, groups, module, n_threads)
        else:
            grad_input[...] = 0
    return grad_input, grad_filters, grad_bias


def conv2d_transpose(input, filters, output_shape, strides, padding="SAME", data_format="NHWC",
                     dilations=None, *, groups=1, backend=None, num_threads=None):
    """Transposed convolution with ``tf.nn.conv2d_transpose`` semantics.

    The adjoint of :func:`fastconv.conv2d`: the gradient, with respect to its
    input, of a forward convolution of an ``output_shape`` input with
    ``filters`` -- so that ``<conv2d(x, w), y> == <x, conv2d_transpose(y, w,
    x.shape)>`` for every ``x`` and ``y``.  Each ``input[n, i, j, o]`` times
    ``filters[kh, kw, c, o]`` is added to output pixel
    ``(i*SH + kh*DH - top, j*SW + kw*DW - left)``, channel ``c`` (of group
    ``o // (C_in / groups)``), where ``top``, ``left`` are the forward
    convolution's padding.

    Parameters
    ----------
    input : array_like, 4-D
        ``(N, H_in, W_in, C_in)`` (or NCHW); float32 or float64.
    filters : array_like, 4-D
        ``(KH, KW, C_out / groups, C_in)``: the forward convolution's HWIO
        filters, whose output channels are this op's input channels.
    output_shape : sequence of 4 ints
        The output shape in ``data_format`` order; the forward convolution of
        this shape must give ``input``'s height and width (several sizes may,
        with strides > 1: this chooses one).
    strides, padding, dilations
        The forward convolution's, as for :func:`fastconv.conv2d`.
    data_format : {'NHWC', 'NCHW'}
    groups : int
        Grouped transposed convolution (``C_in`` and ``C_out`` divisible).
    backend, num_threads
        As for :func:`fastconv.conv2d`.

    Returns
    -------
    ndarray of ``output_shape``, the input's dtype.
    """
    dy = as_float_array(input, "input")
    data_format = check_data_format(data_format)
    check_ndim(dy, 4, "input", data_format)
    w = cast_operand(filters, "filters", dy.dtype)
    check_ndim(w, 4, "filters", "[KH, KW, C_out / groups, C_in]")
    groups = positive_int(groups, "groups")
    nhwc = _shape4(output_shape, "output_shape", data_format)
    return _backprop_input(nhwc, w, dy, strides, padding, data_format,
                           1 if dilations is None else dilations, groups, backend, num_threads,
                           shape_name="output_shape", dy_name="input")


def _backprop_input(nhwc, w, dy, strides, padding, data_format, dilations, groups, backend,
                    num_threads, shape_name="input_sizes", dy_name="out_backprop"):
    """``dL/dx`` for an input of ``nhwc`` shape, in ``data_format`` (shared by the TF/torch names)."""
    strides, dilations, win = conv_geometry(nhwc, w.shape, strides, padding, data_format, dilations,
                                            groups)
    N, H, W, C = nhwc
    O = w.shape[3]
    expected = (N, win.OH, win.OW, O)
    if dy.shape != _layout(*expected, data_format):
        raise ValueError(f"{dy_name} has shape {dy.shape}, but a convolution of "
                         f"{shape_name}={list(_layout(*nhwc, data_format))} with filters of "
                         f"shape {w.shape} gives {_layout(*expected, data_format)} "
                         f"({data_format}).")
    return transposed_conv(dy, w, nhwc, strides, dilations, (win.pad_top, win.pad_left), groups,
                           data_format, backend, num_threads)


def transposed_conv(dy, w, nhwc, strides, dilations, pads, groups, data_format, backend=None,
                    num_threads=None):
    """The input gradient of shape ``nhwc`` for padding ``(top, left)``; ``dy`` in ``data_format``.

    Shapes must already be consistent (``dy``'s channels are ``w.shape[3]``,
    ``nhwc``'s are ``w.shape[2] * groups``); the output may extend past the
    last window (those pixels get 0), as PyTorch's ``output_padding`` asks.
    """
    n_threads = resolve_num_threads(num_threads)
    _, module = _backends.resolve(backend)
    dx = np.empty(nhwc, dtype=dy.dtype)
    if dy.size:
        input_grad(_to_nhwc(dy, data_format), np.ascontiguousarray(w), dx, strides, dilations, pads, groups, module,
                   n_threads)
    else:
        dx[...] = 0
    return _from_nhwc(dx, data_format)


def _backprop_filter(x, w_shape, dy, strides, padding, data_format, dilations, groups,
                     backend, num_threads, shape_name="filter_sizes", dy_name="out_backprop"):
    """``dL/dw`` of HWIO shape ``w_shape`` for a convolution of ``x`` (the TF/torch names)."""
    nhwc = nhwc_dims(x.shape, data_format)
    strides, dilations, win = conv_geometry(nhwc, w_shape, strides, padding, data_format,
                                            dilations, groups, filters_name=shape_name)
    KH, KW, _, O = w_shape
    expected = _layout(nhwc[0], win.OH, win.OW, O, data_format)
    if dy.shape != expected:
        raise ValueError(f"{dy_name} has shape {dy.shape}; the forward output has shape "
                         f"{expected} ({data_format}).")
    n_threads = resolve_num_threads(num_threads)
    _, module = _backends.resolve(backend)
    return filters_grad(_to_nhwc(x, data_format), _to_nhwc(dy, data_format), (KH, KW), strides,
                        dilations, (win.pad_top, win.pad_left), groups, module, n_threads)


def relu_backward(grad_output, features_or_output, *, backend=None, num_threads=None):
    """Gradient of :func:`fastconv.relu`: ``grad_output`` where the value is > 0, else 0.

    ``features_or_output`` may be the ReLU's input or its output: both are
    positive at the same places.  At exactly 0 the gradient is 0 (TensorFlow
    and PyTorch agree); a NaN value gives 0, as in TensorFlow's ``ReluGrad``.
    A passed gradient keeps its bits (-0.0, NaN); a blocked one is +0.

    Parameters
    ----------
    grad_output : array_like
        float32 or float64.
    features_or_output : array_like
        The same shape; any real dtype.
    backend, num_threads
        As for :func:`fastconv.conv2d`.

    Returns
    -------
    ndarray, the shape and dtype of ``grad_output``.
    """
    dy = as_float_array(grad_output, "grad_output")
    f = np.asarray(features_or_output)
    if f.dtype.kind not in "fiu":
        raise TypeError(f"features_or_output has dtype {f.dtype}; expected real numbers.")
    if f.shape != dy.shape:
        raise ValueError(f"features_or_output has shape {f.shape}; expected grad_output's "
                         f"shape {dy.shape}.")
    n_threads = resolve_num_threads(num_threads)
    _, module = _backends.resolve(backend)
    return _relu_pass(f, dy, module, n_threads)


def _relu_pass(value, dy, module, n_threads):
    """``dy`` where ``value`` > 0, else +0: a new array, by the backend's kernel."""
    if value.dtype != dy.dtype:   # 1 where the value is > 0 (a cast could round a tiny one to 0)
        value = np.greater(value, 0).astype(dy.dtype)
    out = _new_output(dy.shape, dy.dtype)
    if out.size:
        own = _driver(module, "relu_backward") or _reference.relu_backward
        own(np.ascontiguousarray(value).reshape(-1), np.ascontiguousarray(dy).reshape(-1),
            out.reshape(-1), n_threads)
    return out


def _pool_setup(x, ksize, strides, padding, data_format):
    """Check a max pool's geometry; return ``(nhwc, ksize, strides, dilations, window)``."""
    KH, KW = spatial_pair(ksize, "ksize", data_format)
    SH, SW = spatial_pair(strides, "strides", data_format)
    N, H, W, C = nhwc = nhwc_dims(x.shape, data_format)
    if H < 1 or W < 1:
        raise ValueError(f"input height and width must be >= 1; got {H}x{W}.")
    win = resolve_window(H, W, KH, KW, SH, SW, 1, 1, padding, data_format)
    check_pool_windows(H, W, KH, KW, SH, SW, 1, 1, win)
    return nhwc, (KH, KW), (SH, SW), (1, 1), win


def _argmax_nhwc(x_nhwc, nhwc, ksize, strides, dilations, win, module, n_threads):
    N, H, W, C = nhwc
    out = np.empty((N, win.OH, win.OW, C), dtype=x_nhwc.dtype)
    idx = np.empty((N, win.OH, win.OW, C), dtype=np.int64)
    if out.size:
        _argmax_driver(module)(x_nhwc, out, idx, ksize, strides, dilations,
                               (win.pad_top, win.pad_left), n_threads)
    return out, idx


def max_pool2d_argmax_window(x, data_format, ksize, strides, dilations, win, backend=None,
                             num_threads=None):
    """Max pool on a resolved window through the registry, with the argmax of each window.

    Returns ``(out, argmax)`` in NHWC: ``argmax`` is the per-image flat index
    ``(h * W + w) * C + c`` of the first maximum in window order.  The entry
    point of layers that resolve their own window (``fastconv.functional``).
    """
    nhwc = nhwc_dims(x.shape, data_format)
    check_pool_windows(nhwc[1], nhwc[2], *ksize, *strides, *dilations, win)
    n_threads = resolve_num_threads(num_threads)
    _, module = _backends.resolve(backend)
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1) if data_format == "NCHW" else x)
    return _argmax_nhwc(x_nhwc, nhwc, ksize, strides, dilations, win, module, n_threads)


def _index_layout(idx, nhwc, data_format, include_batch):
    """Turn per-image NHWC flat indices into the flat index in ``data_format``'s layout."""
    N, H, W, C = nhwc
    if data_format == "NCHW":
        pix, c = np.divmod(idx, C)
        idx = c * (H * W) + pix
        idx = idx.transpose(0, 3, 1, 2)
    if include_batch:
        idx = idx + (np.arange(N, dtype=np.int64) * (H * W * C)).reshape(N, 1, 1, 1)
    return np.ascontiguousarray(idx)


def max_pool2d_with_argmax(input, ksize, strides, padding, data_format="NHWC", *,
                           include_batch_in_index=False, backend=None, num_threads=None):
    """Max pooling that also returns where each maximum came from (``tf.nn.max_pool_with_argmax``).

    ``argmax`` is the flat index of the maximum in the input as laid out in
    ``data_format``: for NHWC ``(h * W + w) * C + c`` (TensorFlow's rule),
    for NCHW ``(c * H + h) * W + w``; with ``include_batch_in_index=True`` the
    image's offset ``n * H * W * C`` is added, so that
    ``input.reshape(-1)[argmax] == output``.

    Ties go to the first maximum in window order (row by row), as in
    TensorFlow and PyTorch.  A window holding NaN outputs NaN (as the forward
    :func:`fastconv.max_pool2d` does) and its argmax is its first NaN;
    TensorFlow's kernel skips a NaN unless it is the window's first tap, and
    PyTorch picks the last NaN (see :func:`max_pool2d_backward`).

    Parameters
    ----------
    input : array_like, 4-D
        NHWC or NCHW; float32 or float64.
    ksize, strides : int or list of 1, 2 or 4 ints
    padding : {'VALID', 'SAME'} or list of 4 [before, after] pairs
        As for :func:`fastconv.max_pool2d`; padding is never picked.
    data_format : {'NHWC', 'NCHW'}
    include_batch_in_index : bool
    backend, num_threads
        As for :func:`fastconv.conv2d`.

    Returns
    -------
    output : ndarray
        The pooled input (as :func:`fastconv.max_pool2d`).
    argmax : ndarray of int64
        The output's shape.
    """
    x = as_float_array(input, "input")
    data_format = check_data_format(data_format)
    check_ndim(x, 4, "input", data_format)
    nhwc, ksize, strides, dilations, win = _pool_setup(x, ksize, strides, padding, data_format)
    n_threads = resolve_num_threads(num_threads)
    _, module = _backends.resolve(backend)
    out, idx = _argmax_nhwc(_to_nhwc(x, data_format), nhwc, ksize, strides, dilations, win,
                            module, n_threads)
    return _from_nhwc(out, data_format), _index_layout(idx, nhwc, data_format,
                                                       bool(include_batch_in_index))


def max_pool2d_backward(grad_output, input, ksize, strides, padding, data_format="NHWC", *,
                        argmax=None, include_batch_in_index=False, backend=None,
                        num_threads=None):
    """Gradient of :func:`fastconv.max_pool2d` with respect to its input.

    ``grad_input[p] = sum of grad_output over the windows whose maximum is
    at p``: each window sends its gradient to its first maximum in window
    order (TensorFlow and PyTorch agree), and overlapping windows add up.

    NaN: the forward :func:`fastconv.max_pool2d` propagates a NaN, so a window
    holding NaN sends its gradient to that NaN -- its first NaN in window
    order.  The frameworks disagree with each other here: PyTorch also counts
    a NaN as larger than any number but sends the gradient to the window's
    last NaN; TensorFlow (``tf.GradientTape`` over ``tf.nn.max_pool2d``,
    ``tf.nn.max_pool_with_argmax``) skips a NaN unless it is the window's
    first tap.

    Parameters
    ----------
    grad_output : array_like, 4-D
        ``dL/dy``, the pooled shape; cast to the input's dtype.
    input : array_like, 4-D
        The forward input (NHWC or NCHW); float32 or float64.
    ksize, strides, padding, data_format
        The forward pool's, as for :func:`max_pool2d_with_argmax`.
    argmax : array_like of ints, optional
        What :func:`max_pool2d_with_argmax` returned for the same input and
        geometry (with the same ``include_batch_in_index``); found again from
        ``input`` when omitted.
    include_batch_in_index : bool
        Whether ``argmax`` includes the image offset.
    backend, num_threads
        As for :func:`fastconv.conv2d`.

    Returns
    -------
    ndarray, the input's shape, layout and dtype.
    """
    x = as_float_array(input, "input")
    data_format = check_data_format(data_format)
    check_ndim(x, 4, "input", data_format)
    nhwc, ksize, strides, dilations, win = _pool_setup(x, ksize, strides, padding, data_format)
    N, H, W, C = nhwc
    dy = cast_operand(grad_output, "grad_output", x.dtype)
    _check_grad_output(dy, (N, win.OH, win.OW, C), data_format)
    n_threads = resolve_num_threads(num_threads)
    _, module = _backends.resolve(backend)
    size = H * W * C
    fused = _driver(module, "max_pool2d_grad")
    if argmax is None and fused is not None:
        dx = np.empty(nhwc, dtype=x.dtype)
        fused(_to_nhwc(x, data_format), _to_nhwc(dy, data_format), dx, ksize, strides,
              dilations, (win.pad_top, win.pad_left), n_threads)
        return _from_nhwc(dx, data_format)
    if argmax is None:
        _, idx = _argmax_nhwc(_to_nhwc(x, data_format), nhwc, ksize, strides, dilations, win,
                              module, n_threads)
        flat = idx + (np.arange(N, dtype=np.int64) * size).reshape(N, 1, 1, 1)
        flat_dy = _to_nhwc(dy, data_format)
        layout_nhwc = True
    else:
        idx = np.asarray(argmax)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"argmax has dtype {idx.dtype}; expected integers (the indices "
                            f"max_pool2d_with_argmax returned).")
        if idx.shape != dy.shape:
            raise ValueError(f"argmax has shape {idx.shape}; expected the pooled shape "
                             f"{dy.shape}.")
        flat = idx.astype(np.int64)
        if not include_batch_in_index:
            flat = flat + (np.arange(N, dtype=np.int64) * size).reshape(N, 1, 1, 1)
        lo = (np.arange(N, dtype=np.int64) * size).reshape(N, 1, 1, 1)
        if flat.size and ((flat < lo) | (flat >= lo + size)).any():
            raise ValueError(f"argmax holds indices outside the input "
                             f"(include_batch_in_index={bool(include_batch_in_index)}); pass "
                             f"what max_pool2d_with_argmax returned for this input.")
        flat_dy = dy
        layout_nhwc = data_format == "NHWC"
    dx = _scatter(module, flat_dy, flat, N * size, n_threads)
    if layout_nhwc:
        return _from_nhwc(dx.reshape(nhwc), data_format)
    return dx.reshape(x.shape)


def _scatter(module, dy, flat, size, n_threads, out=None):
    """``out[flat[i]] += dy[i]`` over a zeroed flat output of ``size`` (the pool backward).

    ``dy`` and ``flat`` are 4-D with the images first; image ``n``'s indices
    lie in ``[n * size / N, (n + 1) * size / N)``, which the drivers' ``images``
    argument states.  ``out``: a contiguous 1-D array of ``size`` and
    ``dy``'s dtype to write into (its old contents are ignored).
    """
    own = _driver(module, "max_pool2d_backward")
    if out is None:
        out = np.empty(size, dtype=dy.dtype)
    if own is not None:
        own(np.ascontiguousarray(dy).reshape(-1),
            np.ascontiguousarray(flat, dtype=np.int64).reshape(-1), out, n_threads,
            images=max(int(dy.shape[0]), 1) if size else 1)
        return out
    sums = np.bincount(flat.reshape(-1), weights=dy.reshape(-1), minlength=size)
    out[...] = sums
    return out


def col2im(cols, input_shape, ksize, strides=1, padding="VALID", dilations=1, *, out=None,
           backend=None, num_threads=None):
    """Fold the rows of a patch matrix back into an image: the adjoint of :func:`fastconv.im2col`.

    Each entry ``cols[(n*OH + oh)*OW + ow, (kh*KW + kw)*C + c]`` is added to
    input pixel ``(n, oh*SH + kh*DH - top, ow*SW + kw*DW - left, c)``;
    overlapping windows add up and entries that fall in the padding are
    dropped.  So ``<im2col(x), cols> == <x, col2im(cols)>``: it is the
    gradient of ``im2col``, not its inverse.

    Parameters
    ----------
    cols : array_like (N * OH * OW, KH * KW * C)
        float32 or float64.
    input_shape : sequence of 4 ints
        ``(N, H, W, C)`` of the image (NHWC).
    ksize, strides, padding, dilations
        As for :func:`fastconv.im2col`.
    out : ndarray, optional
        C-contiguous, writeable array of ``input_shape`` and the dtype of
        ``cols``, not overlapping ``cols``, to overwrite (its previous contents
        are ignored) and return instead of a new one.
    backend, num_threads
        As for :func:`fastconv.conv2d`.

    Returns
    -------
    ndarray of ``input_shape``, the dtype of ``cols`` (``out`` when given).
    """
    c = as_float_array(cols, "cols")
    N, H, W, C = _shape4(input_shape, "input_shape", "NHWC")
    KH, KW = spatial_pair(ksize, "ksize")
    SH, SW = spatial_pair(strides, "strides")
    DH, DW = spatial_pair(dilations, "dilations")
    win = resolve_window(H, W, KH, KW, SH, SW, DH, DW, padding)
    expected = (N * win.OH * win.OW, KH * KW * C)
    if c.shape != expected:
        raise ValueError(f"cols has shape {c.shape}; im2col of input_shape {[N, H, W, C]} "
                         f"with ksize {(KH, KW)} gives {expected}.")
    n_threads = resolve_num_threads(num_threads)
    _, module = _backends.resolve(backend)
    if out is None:
        out = np.zeros((N, H, W, C), dtype=c.dtype)
    else:
        check_out(out, (N, H, W, C), c.dtype, inputs=(c,))
        out.fill(0)
    if c.size:
        _col2im_driver(module)(np.ascontiguousarray(c).reshape(N, win.OH, win.OW, KH, KW, C),
                               out, (KH, KW), (SH, SW), (DH, DW), (win.pad_top, win.pad_left),
                               n_threads)
    return out
