"""The NumPy reference backend: short, obviously right, and the judge of every other.

Each driver follows the definition directly.  Convolution (really
cross-correlation, as in every framework) is a sum over kernel taps::

    out[n, oh, ow, o] = bias[o] + sum_{kh, kw, c} x_pad[n, oh*SH + kh*DH, ow*SW + kw*DW, g*Cg + c]
                                                 * w[kh, kw, c, o],      g = o // (O // groups)

computed tap by tap as a matrix product of a strided view of the zero-padded
input with one ``(Cg, Og)`` slice of the filters.  Max pooling takes the
maximum over the same strided views of an input padded with ``-inf``, so the
padding is never picked; ``np.maximum`` propagates NaN.

The gradients run the same taps backwards: the input gradient adds each tap's
``dy @ w[kh, kw]^T`` into the strided view of a zero buffer it came from, the
filter gradient contracts each tap's view with ``dy`` over N, OH, OW, and
``col2im`` adds each window entry back where ``im2col`` read it.

The driver signatures are described in :mod:`fastconv._backends`.
"""
import numpy as np


def _padded(x, out_hw, ksize, strides, dilations, pads, fill):
    """Pad ``x`` (N, H, W, C) so every tap of every output position is in range."""
    (OH, OW), (KH, KW), (SH, SW), (DH, DW), (top, left) = out_hw, ksize, strides, dilations, pads
    bottom = max((OH - 1) * SH + (KH - 1) * DH + 1 - x.shape[1] - top, 0)
    right = max((OW - 1) * SW + (KW - 1) * DW + 1 - x.shape[2] - left, 0)
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)


def _taps(xp, out_hw, ksize, strides, dilations):
    """Yield ``(kh, kw, view)``: the (N, OH, OW, C) input seen by each kernel tap."""
    (OH, OW), (KH, KW), (SH, SW), (DH, DW) = out_hw, ksize, strides, dilations
    for kh in range(KH):
        for kw in range(KW):
            h0, w0 = kh * DH, kw * DW
            yield kh, kw, xp[:, h0:h0 + (OH - 1) * SH + 1:SH, w0:w0 + (OW - 1) * SW + 1:SW, :]


def conv2d(x, w, bias, out, strides, dilations, pads, groups, relu, num_threads,
           algorithm="auto"):
    KH, KW, Cg, O = w.shape
    Og = O // groups
    out_hw = out.shape[1:3]
    xp = _padded(x, out_hw, (KH, KW), strides, dilations, pads, 0)
    out[...] = 0
    with np.errstate(invalid="ignore", over="ignore"):  # NaN and inf follow IEEE arithmetic
        for kh, kw, view in _taps(xp, out_hw, (KH, KW), strides, dilations):
            for g in range(groups):
                out[..., g * Og:(g + 1) * Og] += view[..., g * Cg:(g + 1) * Cg] @ w[kh, kw, :, g * Og:(g + 1) * Og]
        if bias is not None:
            out += bias
    if relu:
        np.maximum(out, 0, out=out)


def relu(x, out, num_threads):
    np.maximum(x, 0, out=out)


def relu_backward(value, dy, out, num_threads):
    """``out = dy`` where ``value > 0``, else +0 (a NaN ``value`` gives 0)."""
    passed = value > 0   # before out (which may be value or dy) is written
    np.copyto(out, dy)
    np.copyto(out, 0, where=~passed)


def max_pool2d(x, out, ksize, strides, dilations, pads, num_threads):
    out_hw = out.shape[1:3]
    xp = _padded(x, out_hw, ksize, strides, dilations, pads, -np.inf)
    out[...] = -np.inf
    for _, _, view in _taps(xp, out_hw, ksize, strides, dilations):
        np.maximum(out, view, out=out)


def im2col(x, out, ksize, strides, dilations, pads, num_threads):
    out_hw = out.shape[1:3]
    xp = _padded(x, out_hw, ksize, strides, dilations, pads, 0)
    for kh, kw, view in _taps(xp, out_hw, ksize, strides, dilations):
        out[:, :, :, kh, kw, :] = view


def info():
    return {"numpy": np.__version__}


# ----------------------------------------------------------------------------- backward drivers
def conv2d_backward_input(dy, w, out, strides, dilations, pads, groups, num_threads):
    """``out`` (N, H, W, C) = dL/dx: each tap adds ``dy @ w[kh, kw]^T`` back where it read."""
    KH, KW, Cg, O = w.shape
    Og, (top, left) = O // groups, pads
    N, H, W, C = out.shape
    out_hw = dy.shape[1:3]
    xp = _padded(np.zeros_like(out), out_hw, (KH, KW), strides, dilations, pads, 0)
    for kh, kw, view in _taps(xp, out_hw, (KH, KW), strides, dilations):
        for g in range(groups):
            view[..., g * Cg:(g + 1) * Cg] += dy[..., g * Og:(g + 1) * Og] @ w[kh, kw, :, g * Og:(g + 1) * Og].T
    out[...] = xp[:, top:top + H, left:left + W]


def conv2d_backward_filters(x, dy, out, strides, dilations, pads, groups, num_threads):
    """``out`` (KH, KW, Cg, O) = dL/dw: each tap's input view, contracted with ``dy`` over N, OH, OW."""
    KH, KW, Cg, O = out.shape
    Og = O // groups
    out_hw = dy.shape[1:3]
    xp = _padded(x, out_hw, (KH, KW), strides, dilations, pads, 0)
    for kh, kw, view in _taps(xp, out_hw, (KH, KW), strides, dilations):
        for g in range(groups):
            out[kh, kw, :, g * Og:(g + 1) * Og] = np.tensordot(
                view[..., g * Cg:(g + 1) * Cg], dy[..., g * Og:(g + 1) * Og], axes=([0, 1, 2], [0, 1, 2]))


def col2im(cols, out, ksize, strides, dilations, pads, num_threads):
    """``out`` (N, H, W, C) += the adjoint of :func:`im2col` of ``cols`` (N, OH, OW, KH, KW, C)."""
    (top, left), (N, H, W, C) = pads, out.shape
    out_hw = cols.shape[1:3]
    xp = _padded(np.zeros_like(out), out_hw, ksize, strides, dilations, pads, 0)
    for kh, kw, view in _taps(xp, out_hw, ksize, strides, dilations):
        view += cols[:, :, :, kh, kw, :]
    out += xp[:, top:top + H, left:left + W]


def max_pool2d_argmax(x, out, argmax, ksize, strides, dilations, pads, num_threads):
    """Max pooling into ``out`` and, into ``argmax``, the flat index ``(h * W + w) * C + c``
    of the first maximum in window order; a NaN counts as larger than any number (the
    first NaN wins, and is the output, as :func:`fastconv.max_pool2d` propagates it)."""
    N, H, W, C = x.shape
    out_hw = out.shape[1:3]
    xp = _padded(x, out_hw, ksize, strides, dilations, pads, -np.inf)
    grid = np.arange(H * W * C, dtype=np.int64).reshape(1, H, W, C)
    gp = _padded(grid, out_hw, ksize, strides, dilations, pads, -1)
    best = np.full(out.shape, -np.inf, dtype=x.dtype)
    index = np.full(out.shape, -1, dtype=np.int64)
    for (_, _, v), (_, _, g) in zip(_taps(xp, out_hw, ksize, strides, dilations),
                                    _taps(gp, out_hw, ksize, strides, dilations)):
        take = (g >= 0) & ((index < 0) | (v > best) | (np.isnan(v) & ~np.isnan(best)))
        best = np.where(take, v, best)
        index = np.where(take, g, index)
    out[...] = best
    argmax[...] = index


def max_pool2d_backward(dy, flat_index, out, num_threads, images=1):
    """``out`` (flat, zeroed here) accumulates ``dy[i]`` at ``flat_index[i]``.

    ``images`` (how many equal per-image blocks ``dy`` and ``out`` hold, block
    ``n`` of ``dy`` sending only into block ``n`` of ``out``) lets compiled
    backends run images in parallel; the definition here does not need it."""
    out[...] = 0
    np.add.at(out, flat_index, dy)
