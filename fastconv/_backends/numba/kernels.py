"""Numba kernels for conv2d, ReLU, max pooling and im2col (NHWC, HWIO).

Layout follows stumpy's: each operation has a ``parallel=True`` driver that
splits the work into a fixed number of contiguous chunks handled by
``prange``, and single-threaded helpers that do one piece (one output row, one
tile of output pixels), so threads never write the same memory.  Chunk and
tile boundaries depend only on the problem (and the chunk count), never on how
many threads run, and every output element is reduced in one fixed order, so
results are bitwise identical for any thread count.

Notation: ``x`` (N, H, W, C), ``w`` (KH, KW, Cg, O) with ``Cg = C / groups``
and ``Og = O / groups``, ``out`` (N, OH, OW, O); strides SH, SW; dilations DH,
DW; ``top``/``left`` the padding before the first row/column.  Output pixel
``(oh, ow)`` reads input row ``oh*SH + kh*DH - top`` and column
``ow*SW + kw*DW - left``; positions outside the input read as 0 (convolution)
or are skipped (max pooling).

Convolution kernels
-------------------
* :func:`conv2d_im2col` -- tiled im2col + GEMM: each chunk owns a buffer of
  ``tile`` output pixels x ``KH*KW*Cg`` patch values, fills it and multiplies
  it by the packed filters with ``np.dot`` (Numba calls SciPy's BLAS
  ``sgemm``/``dgemm``), writing straight into the output rows when
  ``groups == 1``.  Per-thread tiles that fit in L2 keep the GEMM's operand
  in cache (one big im2col buffer would stream through memory); the caller
  must pin BLAS to one thread around it.
* :func:`conv2d_direct_o` -- direct convolution of one output row at a time,
  accumulating into the output row with the innermost loop over output
  channels (contiguous in HWIO filters and NHWC output), so LLVM vectorizes
  across ``O`` while the input value is broadcast.  Used for depthwise
  convolution (innermost loop over all channels) and for ``algorithm="direct"``
  with many input channels.
* :func:`build_planes` + :func:`conv2d_planar` -- the few-input-channel path:
  the input is copied once into zero-padded, stride-phase-split channel
  planes stored flat, where every kernel tap is a constant shift; each output
  channel is then a sum of shifted planes, computed by long contiguous
  vectorized loops over output positions (four taps and four or two output channels
  per pass).

Writing loops Numba vectorizes
------------------------------
Numba wraps negative indices, so ``a[i0 + j]`` with a signed ``i0`` becomes a
select per element and LLVM gives up vectorizing.  Innermost loops therefore index with ``range(n)`` counters
or with ``np.uint64`` offsets (no wraparound for unsigned indices).  Array
views (``a[i]``, ``a[i:j]``) are avoided in hot loops: each one costs an
atomic reference-count update.

Bias and ReLU are applied while the output row or tile is still in cache.

Serial twins
------------
Every parallel kernel ``k`` has a twin ``SERIAL["k"]`` (:data:`SERIAL`), the
same function compiled without ``parallel``, which the driver runs for calls
of little work: no parallel region is entered.  With the same arguments it
gives the same bits.
"""
import numpy as np
from numba import prange

from .options import jit, serial_twin


@jit()
def _col_range(OW, W, SW, off):
    """Output columns ``ow`` with ``0 <= ow*SW + off < W``, as ``(lo, hi)``."""
    lo = 0
    if off < 0:
        lo = (-off + SW - 1) // SW
    last = W - 1 - off
    if last < 0:
        return 0, 0
    hi = min(OW, last // SW + 1)
    if lo > hi:
        lo = hi
    return lo, hi


@jit()
def _chunk_bounds(total, n_chunks, chunk):
    """Bounds ``[start, stop)`` of chunk ``chunk`` when ``total`` items are split ``n_chunks`` ways."""
    return chunk * total // n_chunks, (chunk + 1) * total // n_chunks


@jit()
def _bias_relu_rows(block, bias, relu):
    """``block[p, o] = relu?(block[p, o] + bias[o])`` for a (P, O) block, in place."""
    P, O = block.shape
    for p in range(P):
        for o in range(O):
            v = block[p, o] + bias[o]
            if relu and v < 0:
                block[p, o] = 0
            else:
                block[p, o] = v


# --------------------------------------------------------------------------- conv: direct, O inner
@jit()
def _direct_o_row(x, w, bias, out, n, oh, SH, SW, DH, DW, top, left, groups, relu):
    """Output row ``out[n, oh]`` (OW, O) by direct convolution, vectorized across ``O``.

    For every in-range tap ``(kh, kw)`` and input channel ``c`` the input value
    ``x[n, ih, iw, g*Cg + c]`` is broadcast and multiplied by the contiguous
    filter vector ``w[kh, kw, c, g*Og:(g+1)*Og]``; depthwise convolution
    (``Cg == Og == 1``) instead runs the innermost loop over all channels.
    """
    N, H, W, C = x.shape
    KH, KW, Cg, O = w.shape
    OW = out.shape[2]
    Og = O // groups
    uOg = np.uint64(Og)
    for ow in range(OW):
        for o in range(O):
            out[n, oh, ow, o] = bias[o]
    for kh in range(KH):
        ih = oh * SH + kh * DH - top
        if ih < 0 or ih >= H:
            continue
        for kw in range(KW):
            off = kw * DW - left
            lo, hi = _col_range(OW, W, SW, off)
            if Cg == 1 and Og == 1:
                # depthwise, one filter per channel: contiguous over channels
                for ow in range(lo, hi):
                    iw = ow * SW + off
                    for c in range(C):
                        out[n, oh, ow, c] += x[n, ih, iw, c] * w[kh, kw, 0, c]
            elif groups == 1:
                for ow in range(lo, hi):
                    iw = ow * SW + off
                    for c in range(Cg):
                        xv = x[n, ih, iw, c]
                        for o in range(O):
                            out[n, oh, ow, o] += xv * w[kh, kw, c, o]
            else:
                # grouped, or depthwise with a channel multiplier
                for ow in range(lo, hi):
                    iw = ow * SW + off
                    for g in range(groups):
                        uo0 = np.uint64(g * Og)
                        for c in range(Cg):
                            xv = x[n, ih, iw, g * Cg + c]
                            for o in range(uOg):
                                out[n, oh, ow, uo0 + o] += xv * w[kh, kw, c, uo0 + o]
    if relu:
        for ow in range(OW):
            for o in range(O):
                if out[n, oh, ow, o] < 0:
                    out[n, oh, ow, o] = 0


@jit(parallel=True)
def conv2d_direct_o(x, w, bias, out, SH, SW, DH, DW, top, left, groups, relu, n_chunks):
    """Direct convolution, innermost loop over output channels; rows ``N*OH`` split in chunks.

    Parameters
    ----------
    x, w, bias, out : ndarray
        NHWC input, HWIO filters, (O,) bias (zeros for none), NHWC output.
    SH, SW, DH, DW, top, left : int
        Strides, dilations and leading padding.
    groups : int
    relu : bool
        Apply ``max(., 0)`` after the bias.
    n_chunks : int
        Number of contiguous row ranges (one per thread).
    """
    N, OH = out.shape[0], out.shape[1]
    rows = N * OH
    for chunk in prange(n_chunks):
        r0, r1 = _chunk_bounds(rows, n_chunks, chunk)
        for r in range(r0, r1):
            n = r // OH
            oh = r - n * OH
            _direct_o_row(x, w, bias, out, n, oh, SH, SW, DH, DW, top, left, groups, relu)


# --------------------------------------------------------------------------- conv: planar shift-and-add
@jit(parallel=True)
def build_planes(x, planes, SH, SW, top, left, Wq, n_chunks):
    """Copy ``x`` (N, H, W, C) into zero-padded, stride-phase-split channel planes.

    ``planes[n, c, ph, pw, i*Wq + j] = x[n, i*SH + ph - top, j*SW + pw - left, c]``
    (0 outside the input).  In phase plane ``(ph, pw)`` a strided convolution
    becomes a stride-1 one, and with the plane stored flat with row width
    ``Wq`` every kernel tap is a constant shift of the flat index.  The work
    units are plane rows ``(n, i)``, each filled for every channel and phase
    in turn, so the input rows it reads stay in L1 while their channels are
    scattered (a unit per channel would read the whole image once per channel).
    """
    N, H, W, C = x.shape
    L = planes.shape[4]
    Hq = L // Wq
    units = N * Hq
    x3 = x.reshape(N, H, W * C)
    ustep = np.uint64(SW * C)
    for chunk in prange(n_chunks):
        u0, u1 = _chunk_bounds(units, n_chunks, chunk)
        for u in range(u0, u1):
            n = u // Hq
            i = u - n * Hq
            ub = np.uint64(i * Wq)
            for ph in range(SH):
                r = i * SH + ph - top
                inside = r >= 0 and r < H
                for pw in range(SW):
                    lo, hi = _col_range(Wq, W, SW, pw - left)
                    if not inside:
                        lo, hi = Wq, Wq
                    ulo = np.uint64(lo)
                    for c in range(C):
                        for j in range(lo):
                            planes[n, c, ph, pw, i * Wq + j] = 0
                        if hi > lo:
                            # unsigned offsets: no negative-index wraparound in the copy loop
                            usrc = np.uint64((lo * SW + pw - left) * C + c)
                            if ustep == 1:
                                for j in range(np.uint64(hi - lo)):
                                    planes[n, c, ph, pw, ub + ulo + j] = x3[n, r, usrc + j]
                            else:
                                for j in range(np.uint64(hi - lo)):
                                    planes[n, c, ph, pw, ub + ulo + j] = x3[n, r, usrc + j * ustep]
                        for j in range(hi, Wq):
                            planes[n, c, ph, pw, i * Wq + j] = 0


@jit()
def _planar_unit(pflat, toff, wt, bias, out, acc, n, q0, m, Wq, groups, relu):
    """Positions ``q0 .. q0+m-1`` of image ``n`` for :func:`conv2d_planar`.

    ``toff[g, t]`` is the flat offset of tap ``t`` of group ``g`` in
    ``pflat[n]`` and ``wt[o, t]`` its weight.  Taps are taken four at a time
    and output channels two at a time, so each load and store of ``acc``
    serves four multiply-adds and each input load two.
    """
    O, T = wt.shape
    OW = out.shape[2]
    Og = O // groups
    um = np.uint64(m)
    uq0 = np.uint64(q0)
    T4 = T - T % 4
    o = 0
    while o < O:
        g = o // Og
        if o + 3 < O and (o + 3) // Og == g:
            # four output channels of one group per pass: each input load feeds four FMAs,
            # so the tap streams (read from L2 once the block's planes exceed L1) are read
            # half as often as two at a time; every sum is formed as in the pair pass
            for j in range(um):
                acc[o, j] = 0
                acc[o + 1, j] = 0
                acc[o + 2, j] = 0
                acc[o + 3, j] = 0
            for t in range(0, T4, 4):
                b0 = uq0 + toff[g, t]
                b1 = uq0 + toff[g, t + 1]
                b2 = uq0 + toff[g, t + 2]
                b3 = uq0 + toff[g, t + 3]
                w0, w1, w2, w3 = wt[o, t], wt[o, t + 1], wt[o, t + 2], wt[o, t + 3]
                v0, v1, v2, v3 = wt[o + 1, t], wt[o + 1, t + 1], wt[o + 1, t + 2], wt[o + 1, t + 3]
                y0, y1, y2, y3 = wt[o + 2, t], wt[o + 2, t + 1], wt[o + 2, t + 2], wt[o + 2, t + 3]
                z0, z1, z2, z3 = wt[o + 3, t], wt[o + 3, t + 1], wt[o + 3, t + 2], wt[o + 3, t + 3]
                for j in range(um):
                    p0 = pflat[n, b0 + j]
                    p1 = pflat[n, b1 + j]
                    p2 = pflat[n, b2 + j]
                    p3 = pflat[n, b3 + j]
                    acc[o, j] += p0 * w0 + p1 * w1 + p2 * w2 + p3 * w3
                    acc[o + 1, j] += p0 * v0 + p1 * v1 + p2 * v2 + p3 * v3
                    acc[o + 2, j] += p0 * y0 + p1 * y1 + p2 * y2 + p3 * y3
                    acc[o + 3, j] += p0 * z0 + p1 * z1 + p2 * z2 + p3 * z3
            t1 = T4
            if T - T4 == 3:
                # three taps left (e.g. three input channels): one pass, not three
                b0 = uq0 + toff[g, T4]
                b1 = uq0 + toff[g, T4 + 1]
                b2 = uq0 + toff[g, T4 + 2]
                w0, w1, w2 = wt[o, T4], wt[o, T4 + 1], wt[o, T4 + 2]
                v0, v1, v2 = wt[o + 1, T4], wt[o + 1, T4 + 1], wt[o + 1, T4 + 2]
                y0, y1, y2 = wt[o + 2, T4], wt[o + 2, T4 + 1], wt[o + 2, T4 + 2]
                z0, z1, z2 = wt[o + 3, T4], wt[o + 3, T4 + 1], wt[o + 3, T4 + 2]
                for j in range(um):
                    p0 = pflat[n, b0 + j]
                    p1 = pflat[n, b1 + j]
                    p2 = pflat[n, b2 + j]
                    acc[o, j] += p0 * w0 + p1 * w1 + p2 * w2
                    acc[o + 1, j] += p0 * v0 + p1 * v1 + p2 * v2
                    acc[o + 2, j] += p0 * y0 + p1 * y1 + p2 * y2
                    acc[o + 3, j] += p0 * z0 + p1 * z1 + p2 * z2
                t1 = T
            for t in range(t1, T):
                b0 = uq0 + toff[g, t]
                w0, v0, y0, z0 = wt[o, t], wt[o + 1, t], wt[o + 2, t], wt[o + 3, t]
                for j in range(um):
                    p0 = pflat[n, b0 + j]
                    acc[o, j] += p0 * w0
                    acc[o + 1, j] += p0 * v0
                    acc[o + 2, j] += p0 * y0
                    acc[o + 3, j] += p0 * z0
            o += 4
            continue
        if o + 1 < O and (o + 1) // Og == g:
            # two output channels of one group per pass: each input load feeds two FMAs
            for j in range(um):
                acc[o, j] = 0
                acc[o + 1, j] = 0
            for t in range(0, T4, 4):
                b0 = uq0 + toff[g, t]
                b1 = uq0 + toff[g, t + 1]
                b2 = uq0 + toff[g, t + 2]
                b3 = uq0 + toff[g, t + 3]
                w0 = wt[o, t]
                w1 = wt[o, t + 1]
                w2 = wt[o, t + 2]
                w3 = wt[o, t + 3]
                v0 = wt[o + 1, t]
                v1 = wt[o + 1, t + 1]
                v2 = wt[o + 1, t + 2]
                v3 = wt[o + 1, t + 3]
                for j in range(um):
                    p0 = pflat[n, b0 + j]
                    p1 = pflat[n, b1 + j]
                    p2 = pflat[n, b2 + j]
                    p3 = pflat[n, b3 + j]
                    acc[o, j] += p0 * w0 + p1 * w1 + p2 * w2 + p3 * w3
                    acc[o + 1, j] += p0 * v0 + p1 * v1 + p2 * v2 + p3 * v3
            t1 = T4
            if T - T4 == 3:
                b0 = uq0 + toff[g, T4]
                b1 = uq0 + toff[g, T4 + 1]
                b2 = uq0 + toff[g, T4 + 2]
                w0, w1, w2 = wt[o, T4], wt[o, T4 + 1], wt[o, T4 + 2]
                v0, v1, v2 = wt[o + 1, T4], wt[o + 1, T4 + 1], wt[o + 1, T4 + 2]
                for j in range(um):
                    p0 = pflat[n, b0 + j]
                    p1 = pflat[n, b1 + j]
                    p2 = pflat[n, b2 + j]
                    acc[o, j] += p0 * w0 + p1 * w1 + p2 * w2
                    acc[o + 1, j] += p0 * v0 + p1 * v1 + p2 * v2
                t1 = T
            for t in range(t1, T):
                b0 = uq0 + toff[g, t]
                w0 = wt[o, t]
                v0 = wt[o + 1, t]
                for j in range(um):
                    p0 = pflat[n, b0 + j]
                    acc[o, j] += p0 * w0
                    acc[o + 1, j] += p0 * v0
            o += 2
            continue
        for j in range(um):
            acc[o, j] = 0
        for t in range(0, T4, 4):
            b0 = uq0 + toff[g, t]
            b1 = uq0 + toff[g, t + 1]
            b2 = uq0 + toff[g, t + 2]
            b3 = uq0 + toff[g, t + 3]
            w0 = wt[o, t]
            w1 = wt[o, t + 1]
            w2 = wt[o, t + 2]
            w3 = wt[o, t + 3]
            for j in range(um):
                acc[o, j] += (pflat[n, b0 + j] * w0 + pflat[n, b1 + j] * w1
                              + pflat[n, b2 + j] * w2 + pflat[n, b3 + j] * w3)
        for t in range(T4, T):
            b0 = uq0 + toff[g, t]
            w0 = wt[o, t]
            for j in range(um):
                acc[o, j] += pflat[n, b0 + j] * w0
        o += 1
    # write back row segment by row segment (columns ow >= OW are discarded)
    j = 0
    while j < m:
        q = q0 + j
        oh = q // Wq
        ow0 = q - oh * Wq
        seg = min(m - j, Wq - ow0)
        cnt = min(seg, OW - ow0)
        if cnt > 0:
            if O <= 16:
                # few channels: contiguous runs along the row
                uj = np.uint64(j)
                uow0 = np.uint64(ow0)
                for o in range(O):
                    b = bias[o]
                    for k in range(np.uint64(cnt)):
                        v = acc[o, uj + k] + b
                        if relu and v < 0:
                            out[n, oh, uow0 + k, o] = 0
                        else:
                            out[n, oh, uow0 + k, o] = v
            else:
                for k in range(cnt):
                    for o in range(O):
                        v = acc[o, j + k] + bias[o]
                        if relu and v < 0:
                            out[n, oh, ow0 + k, o] = 0
                        else:
                            out[n, oh, ow0 + k, o] = v
        j += seg


@jit(parallel=True)
def conv2d_planar(planes, toff, wt, bias, out, Wq, groups, relu, block, n_chunks):
    """Direct convolution for few input channels: shift-and-add over flat channel planes.

    Output pixel ``(oh, ow)`` is computed at the virtual flat position
    ``q = oh*Wq + ow`` (columns ``ow >= OW`` are computed and discarded), so
    that tap ``(kh, kw)`` of input channel ``c`` reads plane
    ``((kh*DH) % SH, (kw*DW) % SW)`` at ``q + ((kh*DH)//SH)*Wq + (kw*DW)//SW``:
    a constant shift.  Each work unit is ``block`` consecutive positions of one
    image, accumulated channel-major in ``acc[o, j]`` (kept in L1) by long,
    contiguous, vectorized loops ``acc[o, :] += w[kh, kw, c, o] * plane[shift:]``
    -- OpenCV ``filter2D``'s idea (vectorize across the row, broadcast the tap)
    extended to many output channels.  Bias and ReLU are applied when the
    block is written back to NHWC.
    """
    N = planes.shape[0]
    O = wt.shape[0]
    OH = out.shape[1]
    Q = OH * Wq
    pflat = planes.reshape(N, planes.size // N)
    per_image = (Q + block - 1) // block
    units = N * per_image
    for chunk in prange(n_chunks):
        acc = np.empty((O, block), dtype=out.dtype)
        u0, u1 = _chunk_bounds(units, n_chunks, chunk)
        for u in range(u0, u1):
            n = u // per_image
            q0 = (u - n * per_image) * block
            _planar_unit(pflat, toff, wt, bias, out, acc, n, q0, min(block, Q - q0), Wq, groups,
                         relu)


# --------------------------------------------------------------------------- conv: tiled im2col
@jit()
def _fill_patch(x, patch, p0, m, OH, OW, KH, KW, c0, Cg, SH, SW, DH, DW, top, left):
    """Fill ``patch[:m]`` with the (KH, KW, Cg) windows of flat output pixels ``p0 .. p0+m-1``.

    Channels ``c0 .. c0+Cg-1`` of the input are taken (one group); positions
    outside the input are zero.  Without dilation and groups, a kernel row
    that lies inside the input is copied as one run of ``KW*C`` values.
    """
    N, H, W, C = x.shape
    n = p0 // (OH * OW)
    rem = p0 - n * OH * OW
    oh = rem // OW
    ow = rem - oh * OW
    uCg = np.uint64(Cg)
    uc0 = np.uint64(c0)
    run = DW == 1 and Cg == C
    urun = np.uint64(KW * C)
    x3 = x.reshape(N, H, W * C)
    for p in range(m):
        uk = np.uint64(0)
        iw0 = ow * SW - left
        for kh in range(KH):
            ih = oh * SH + kh * DH - top
            inside_h = ih >= 0 and ih < H
            if inside_h and run and iw0 >= 0 and iw0 + KW <= W:
                # the whole kernel row is one contiguous run of KW*C input values
                ux = np.uint64(iw0 * C)
                for j in range(urun):
                    patch[p, uk + j] = x3[n, ih, ux + j]
                uk += urun
                continue
            for kw in range(KW):
                iw = ow * SW + kw * DW - left
                inside = inside_h and iw >= 0 and iw < W
                if Cg == 1:
                    # one channel: a plain store, no inner loop to set up
                    patch[p, uk] = x[n, ih, iw, c0] if inside else 0
                elif inside:
                    for c in range(uCg):
                        patch[p, uk + c] = x[n, ih, iw, uc0 + c]
                else:
                    for c in range(uCg):
                        patch[p, uk + c] = 0
                uk += uCg
        ow += 1
        if ow == OW:
            ow = 0
            oh += 1
            if oh == OH:
                oh = 0
                n += 1


@jit(parallel=True)
def conv2d_im2col(x, wmat, bias, out, KH, KW, SH, SW, DH, DW, top, left, relu, tile,
                  t_begin, t_end, n_chunks):
    """Tiled im2col + GEMM: ``tile`` output pixels at a time, each chunk with its own buffers.

    Parameters
    ----------
    x : ndarray (N, H, W, C)
    wmat : ndarray (groups, KH*KW*Cg, Og)
        Filters packed per group, rows ordered ``(kh, kw, c)``.
    bias : ndarray (O,)
    out : ndarray (N, OH, OW, O)
    KH, KW, SH, SW, DH, DW, top, left : int
    relu : bool
    tile : int
        Output pixels per GEMM; the tiles are fixed by ``tile`` alone.
    t_begin, t_end : int
        The tiles to compute, ``[t_begin, t_end)`` (a piece of a longer call).
    n_chunks : int
        Number of contiguous tile ranges (one per thread).

    Notes
    -----
    When ``KH == KW == 1``, both strides are 1, there is no padding and
    ``groups == 1``, the input rows already are the patch matrix and no copy
    is made.  BLAS must be limited to one thread by the caller.
    """
    N, H, W, C = x.shape
    G, K, Og = wmat.shape
    OH, OW, O = out.shape[1], out.shape[2], out.shape[3]
    Cg = C // G
    P = N * OH * OW
    n_tiles = min((P + tile - 1) // tile, t_end) - t_begin
    out2 = out.reshape(P, O)
    pointwise = (KH == 1 and KW == 1 and SH == 1 and SW == 1 and top == 0 and left == 0
                 and OH == H and OW == W and G == 1)
    x2 = x.reshape(N * H * W, C)
    for chunk in prange(n_chunks):
        patch = np.empty((tile, K), dtype=x.dtype)
        res = np.empty((tile, Og), dtype=x.dtype)
        t0, t1 = _chunk_bounds(n_tiles, n_chunks, chunk)
        for t in range(t_begin + t0, t_begin + t1):
            p0 = t * tile
            p1 = min(P, p0 + tile)
            m = p1 - p0
            if pointwise:
                np.dot(x2[p0:p1], wmat[0], out2[p0:p1])
            elif G == 1:
                _fill_patch(x, patch, p0, m, OH, OW, KH, KW, 0, Cg, SH, SW, DH, DW, top, left)
                np.dot(patch[:m], wmat[0], out2[p0:p1])
            else:
                for g in range(G):
                    _fill_patch(x, patch, p0, m, OH, OW, KH, KW, g * Cg, Cg, SH, SW, DH, DW,
                                top, left)
                    np.dot(patch[:m], wmat[g], res[:m])
                    for p in range(m):
                        for o in range(Og):
                            out2[p0 + p, g * Og + o] = res[p, o]
            _bias_relu_rows(out2[p0:p1], bias, relu)


# --------------------------------------------------------------------------- im2col
@jit(parallel=True)
def im2col(x, out, SH, SW, DH, DW, top, left, n_chunks):
    """``out[n, oh, ow, kh, kw, :] = x[n, oh*SH + kh*DH - top, ow*SW + kw*DW - left, :]`` or 0.

    Rows ``N*OH`` are split into ``n_chunks`` contiguous ranges.
    """
    N, H, W, C = x.shape
    OH, OW, KH, KW = out.shape[1], out.shape[2], out.shape[3], out.shape[4]
    rows = N * OH
    for chunk in prange(n_chunks):
        r0, r1 = _chunk_bounds(rows, n_chunks, chunk)
        for r in range(r0, r1):
            n = r // OH
            oh = r - n * OH
            for ow in range(OW):
                for kh in range(KH):
                    ih = oh * SH + kh * DH - top
                    for kw in range(KW):
                        iw = ow * SW + kw * DW - left
                        if ih >= 0 and ih < H and iw >= 0 and iw < W:
                            for c in range(C):
                                out[n, oh, ow, kh, kw, c] = x[n, ih, iw, c]
                        else:
                            for c in range(C):
                                out[n, oh, ow, kh, kw, c] = 0


# --------------------------------------------------------------------------- relu
@jit(parallel=True)
def relu(x, out, block, n_chunks):
    """``out[i] = 0 if x[i] < 0 else x[i]`` over flat arrays (NaN kept, -inf -> 0).

    ``out`` may be ``x``.  Work is cut in blocks of ``block`` elements, split
    into ``n_chunks`` contiguous ranges (the caller passes one range per block
    and a dynamic schedule, so no thread waits for a stalled one).
    """
    size = x.shape[0]
    zero = np.zeros(1, dtype=x.dtype)[0]
    n_blocks = (size + block - 1) // block
    for chunk in prange(n_chunks):
        b0, b1 = _chunk_bounds(n_blocks, n_chunks, chunk)
        i0 = b0 * block
        i1 = min(size, b1 * block)
        for i in range(np.uint64(i0), np.uint64(i1)):
            v = x[i]
            out[i] = zero if v < 0 else v


@jit(parallel=True)
def relu_backward(value, dy, out, block, n_chunks):
    """``out[i] = dy[i] if value[i] > 0 else 0`` over flat arrays (NaN ``value`` -> 0).

    ``out`` may be ``dy`` or ``value``.  Blocks and ranges as :func:`relu`.
    """
    size = dy.shape[0]
    zero = np.zeros(1, dtype=dy.dtype)[0]
    n_blocks = (size + block - 1) // block
    for chunk in prange(n_chunks):
        b0, b1 = _chunk_bounds(n_blocks, n_chunks, chunk)
        i0 = b0 * block
        i1 = min(size, b1 * block)
        for i in range(np.uint64(i0), np.uint64(i1)):
            out[i] = dy[i] if value[i] > 0 else zero


# --------------------------------------------------------------------------- max pool
@jit()
def _pool_row(x, out, x3, out3, n, oh, KH, KW, SH, SW, DH, DW, top, left):
    """One output row (OW, C) of max pooling; taps outside the input are skipped, NaN wins.

    ``x3`` and ``out3`` are (N, H, W*C) and (N, OH, OW*C) views of ``x`` and ``out``.
    """
    N, H, W, C = x.shape
    OW = out.shape[2]
    for ow in range(OW):
        for c in range(C):
            out[n, oh, ow, c] = -np.inf
    for kh in range(KH):
        ih = oh * SH + kh * DH - top
        if ih < 0 or ih >= H:
            continue
        for kw in range(KW):
            off = kw * DW - left
            lo, hi = _col_range(OW, W, SW, off)
            if SW == 1 and hi > lo:
                # stride 1: the whole run of windows is one contiguous stretch
                ux = np.uint64((lo + off) * C)
                uo = np.uint64(lo * C)
                for j in range(np.uint64((hi - lo) * C)):
                    v = x3[n, ih, ux + j]
                    m = out3[n, oh, uo + j]
                    out3[n, oh, uo + j] = v if (v > m) | (v != v) else m
                continue
            for ow in range(lo, hi):
                iw = ow * SW + off
                for c in range(C):
                    v = x[n, ih, iw, c]
                    m = out[n, oh, ow, c]
                    out[n, oh, ow, c] = v if (v > m) | (v != v) else m


@jit(parallel=True)
def max_pool2d(x, out, KH, KW, SH, SW, DH, DW, top, left, n_chunks):
    """Max pooling (NHWC), rows ``N*OH`` split into ``n_chunks`` contiguous ranges.

    Each output element starts at ``-inf`` and takes the maximum over the
    window positions inside the input, so padding is never picked; a NaN in
    the window makes the result NaN (``(v > m) | (v != v)`` keeps it; the
    non-short-circuit ``|`` lets LLVM vectorize the select).
    """
    N, H, W, C = x.shape
    OH, OW = out.shape[1], out.shape[2]
    x3 = x.reshape(N, H, W * C)
    out3 = out.reshape(N, OH, OW * C)
    rows = N * OH
    for chunk in prange(n_chunks):
        r0, r1 = _chunk_bounds(rows, n_chunks, chunk)
        for r in range(r0, r1):
            n = r // OH
            oh = r - n * OH
            _pool_row(x, out, x3, out3, n, oh, KH, KW, SH, SW, DH, DW, top, left)


# --------------------------------------------------------------------------- backward
@jit(parallel=True)
def col2im(cols, out, SH, SW, DH, DW, top, left, n_chunks):
    """``out[n, oh*SH + kh*DH - top, ow*SW + kw*DW - left, :] += cols[n, oh, ow, kh, kw, :]``.

    The adjoint of :func:`im2col`; entries in the padding are dropped.  Input
    rows ``N*H`` are split into ``n_chunks`` contiguous ranges: each row
    gathers every ``(oh, kh)`` that lands on it, so no two threads write the
    same element, and an element receives its terms in ``(kh, kw)`` order.
    """
    N, H, W, C = out.shape
    OH, OW, KH, KW = cols.shape[1], cols.shape[2], cols.shape[3], cols.shape[4]
    rows = N * H
    for chunk in prange(n_chunks):
        r0, r1 = _chunk_bounds(rows, n_chunks, chunk)
        for r in range(r0, r1):
            n = r // H
            h = r - n * H
            for kh in range(KH):
                t = h + top - kh * DH
                if t < 0:
                    break
                if t % SH != 0:
                    continue
                oh = t // SH
                if oh >= OH:
                    continue
                for kw in range(KW):
                    off = kw * DW - left
                    lo, hi = _col_range(OW, W, SW, off)
                    for ow in range(lo, hi):
                        iw = ow * SW + off
                        for c in range(C):
                            out[n, h, iw, c] += cols[n, oh, ow, kh, kw, c]


@jit()
def _argmax_row(x, out, argmax, n, oh, KH, KW, SH, SW, DH, DW, top, left):
    """One output row of max pooling with the per-image flat index of the first maximum
    (a NaN counts as larger than any number: the first NaN wins)."""
    N, H, W, C = x.shape
    OW = out.shape[2]
    for ow in range(OW):
        first = True
        for kh in range(KH):
            ih = oh * SH + kh * DH - top
            if ih < 0 or ih >= H:
                continue
            for kw in range(KW):
                iw = ow * SW + kw * DW - left
                if iw < 0 or iw >= W:
                    continue
                at = (ih * W + iw) * C
                if first:
                    for c in range(C):
                        out[n, oh, ow, c] = x[n, ih, iw, c]
                        argmax[n, oh, ow, c] = at + c
                    first = False
                    continue
                for c in range(C):
                    v = x[n, ih, iw, c]
                    m = out[n, oh, ow, c]
                    if (m == m) & ((v > m) | (v != v)):
                        out[n, oh, ow, c] = v
                        argmax[n, oh, ow, c] = at + c
        if first:  # no tap inside the input
            for c in range(C):
                out[n, oh, ow, c] = -np.inf
                argmax[n, oh, ow, c] = -1


@jit(parallel=True)
def max_pool2d_argmax(x, out, argmax, KH, KW, SH, SW, DH, DW, top, left, n_chunks):
    """Max pooling (NHWC) and ``argmax`` = the flat index ``(h*W + w)*C + c`` of the first
    maximum in window order; a NaN counts as larger than any number (the first NaN wins).

    Rows ``N*OH`` are split into ``n_chunks`` contiguous ranges.
    """
    N = x.shape[0]
    OH = out.shape[1]
    rows = N * OH
    for chunk in prange(n_chunks):
        r0, r1 = _chunk_bounds(rows, n_chunks, chunk)
        for r in range(r0, r1):
            n = r // OH
            _argmax_row(x, out, argmax, n, r - n * OH, KH, KW, SH, SW, DH, DW, top, left)


@jit(parallel=True)
def max_pool2d_backward(dy, flat_index, out, images):
    """``out = 0``, then ``out[flat_index[i]] += dy[i]`` in index order, one image per task.

    ``dy`` and ``out`` are ``images`` equal blocks; an index outside its
    image's block is skipped and counted.  Returns the count of skipped entries.
    """
    per_dy = dy.shape[0] // images
    per_out = out.shape[0] // images
    bad = 0
    for n in prange(images):
        base = n * per_out
        for j in range(per_out):
            out[base + j] = 0
        for i in range(n * per_dy, (n + 1) * per_dy):
            k = flat_index[i] - base
            if k < 0 or k >= per_out:
                bad += 1
            else:
                out[base + k] += dy[i]
    return bad


@jit(parallel=True)
def conv2d_filter_grad(x, dy, part, KH, KW, SH, SW, DH, DW, top, left, r0, piece_rows,
                       depthwise):
    """Partial filter gradients of the pieces of output rows ``[r0 + p*piece_rows, ...)``.

    ``part[p, kh, kw, c, o]`` = the sum over the piece's output pixels of
    ``x[n, ih, iw, c] * dy[n, oh, ow, o]`` (dense, ``groups == 1``) or, when
    ``depthwise``, ``part[p, kh, kw, 0, c]`` of ``x[..., c] * dy[..., c]``.  The
    innermost loop runs over the output channels (contiguous), pixels in row
    order: each piece's sums have one fixed order, whatever thread runs it.
    """
    N, H, W, C = x.shape
    OH, OW, O = dy.shape[1], dy.shape[2], dy.shape[3]
    rows = N * OH
    Cx = 1 if depthwise else C
    for p in prange(part.shape[0]):
        acc = part[p]
        acc[...] = 0
        a = r0 + p * piece_rows
        b = min(a + piece_rows, rows)
        for r in range(a, b):
            n = r // OH
            oh = r - n * OH
            for kh in range(KH):
                ih = oh * SH + kh * DH - top
                if ih < 0 or ih >= H:
                    continue
                for kw in range(KW):
                    off = kw * DW - left
                    lo, hi = _col_range(OW, W, SW, off)
                    for ow in range(lo, hi):
                        iw = ow * SW + off
                        if depthwise:
                            for o in range(O):
                                acc[kh, kw, 0, o] += x[n, ih, iw, o] * dy[n, oh, ow, o]
                        else:
                            for c in range(Cx):
                                v = x[n, ih, iw, c]
                                for o in range(O):
                                    acc[kh, kw, c, o] += v * dy[n, oh, ow, o]


# --------------------------------------------------------------------------- serial twins
#: the parallel kernels, each with a serial twin ``<name>_serial`` (:func:`.options.serial_twin`)
PARALLEL_KERNELS = ("conv2d_direct_o", "build_planes", "conv2d_planar", "conv2d_im2col",
                    "im2col", "relu", "relu_backward", "max_pool2d", "col2im",
                    "max_pool2d_argmax", "max_pool2d_backward", "conv2d_filter_grad")
SERIAL = {name: serial_twin(globals()[name]) for name in PARALLEL_KERNELS}
