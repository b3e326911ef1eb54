"""CS231n assignment 2's fast layers on fastconv (``fast_layers`` and ``layer_utils``).

The functions keep the assignment's names and contracts, so that
``from fastconv.compat.cs231n import *`` can replace its ``fast_layers``
imports (and the conv sandwiches of ``layer_utils``):

* arrays are NCHW; filters ``w`` are ``(F, C, HH, WW)`` and biases ``b``
  ``(F,)``; the convolution is a cross-correlation with symmetric zero
  padding ``conv_param['pad']`` and one ``conv_param['stride']``;
* pooling takes ``pool_param = {'pool_height', 'pool_width', 'stride'}``
  and has no padding;
* every forward returns ``(out, cache)`` and every backward takes
  ``(dout, cache)``; the conv backwards return ``(dx, dw, db)``.

They accept more than the originals: non-square kernels and windows,
overlapping and non-tiling pooling windows, any stride; output sizes are
rounded down (``H' = 1 + (H + 2*pad - HH) // stride``).  Inputs and ``dout``
are never modified, results are fresh contiguous arrays, and caches hold
their own copies of what the backward needs, so editing ``x`` after the
forward does not change the gradients and a cache can be used twice.

dtypes follow NumPy promotion: the computation runs in
``np.result_type(x, w, b)`` (float64 data with float32 weights gives
float64; an integer bias is accepted), integers alone compute in float64,
and all gradients come back in that dtype.  Max pooling gives each window's
gradient to its first maximum in window order (the original's im2col path,
TensorFlow and PyTorch); tied maxima never share or duplicate it.
"""
import functools

import numpy as np

import fastconv
from .. import _backends
from .._backward import _scatter, conv2d_backward_nhwc, max_pool2d_argmax_window
from .._ops import conv2d_nhwc, conv_geometry
from .._shapes import resolve_window
from .._threads import resolve_num_threads
from .._validation import real_array as _array

__all__ = ["conv_forward_fast", "conv_backward_fast", "conv_forward_strides",
           "conv_backward_strides", "conv_forward_im2col", "conv_backward_im2col",
           "max_pool_forward_fast", "max_pool_backward_fast", "relu_forward", "relu_backward",
           "conv_relu_forward", "conv_relu_backward", "conv_relu_pool_forward",
           "conv_relu_pool_backward"]


# ============================================================================ checks
def _compute_dtype(*arrays):
    """NumPy's promoted dtype of ``arrays``, as float32 or float64 (integers: float64)."""
    dtype = np.result_type(*arrays)
    return np.dtype(np.float32) if dtype == np.float32 else np.dtype(np.float64)


def _param_int(params, dict_name, key, minimum):
    if not isinstance(params, dict):
        raise TypeError(f"{dict_name} must be a dict with key {key!r}; got "
                        f"{type(params).__name__}.")
    if key not in params:
        raise KeyError(f"{dict_name} needs the key {key!r} (an int >= {minimum}); "
                       f"got keys {sorted(params)}.")
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{dict_name}[{key!r}] must be an int >= {minimum}; got {value!r}.")
    return int(value)


def _conv_params(conv_param):
    return _param_int(conv_param, "conv_param", "stride", 1), \
        _param_int(conv_param, "conv_param", "pad", 0)


def _pool_params(pool_param):
    return (_param_int(pool_param, "pool_param", "pool_height", 1),
            _param_int(pool_param, "pool_param", "pool_width", 1),
            _param_int(pool_param, "pool_param", "stride", 1))


def _check_dout(dout, shape):
    d = _array(dout, "dout")
    if d.shape != tuple(shape):
        raise ValueError(f"dout has shape {d.shape}; expected the forward output's shape "
                         f"{tuple(shape)}.")
    return d


# ============================================================================ convolution
def conv_forward_fast(x, w, b, conv_param):
    """Convolution layer forward (cross-correlation, NCHW).

    ``out[n, f, i, j] = b[f] + sum_{c, p, q} x_pad[n, c, i*stride + p, j*stride + q] * w[f, c, p, q]``
    with ``x_pad`` zero-padded by ``pad`` on all four sides.

    Parameters
    ----------
    x : array_like (N, C, H, W)
    w : array_like (F, C, HH, WW)
        Kernels may be non-square.
    b : array_like (F,)
    conv_param : dict
        ``'stride'`` (int >= 1) and ``'pad'`` (int >= 0).

    Returns
    -------
    out : ndarray (N, F, H', W')
        ``H' = 1 + (H + 2*pad - HH) // stride``, ``W' = 1 + (W + 2*pad - WW) // stride``;
        dtype ``np.result_type(x, w, b)`` (float32 or float64).
    cache : tuple
        For :func:`conv_backward_fast`; holds copies, so later edits of
        ``x``, ``w`` or ``b`` do not affect it.
    """
    cache = _conv_setup(x, w, b, conv_param)
    xc, _, bc, _, w_hwio = cache
    stride, pad = _conv_params(conv_param)
    out = _conv(xc, w_hwio, bc, stride, pad, None)
    return out, cache


@functools.lru_cache(maxsize=256)
def _padding(H, W, HH, WW, stride, pad):
    """The ``padding`` argument of fastconv's ops for a symmetric ``pad`` (NCHW).

    ``'VALID'`` for no padding and ``'SAME'`` where TensorFlow's rule pads
    exactly ``pad`` on every side (odd kernels with ``pad = (HH - 1) // 2`` at
    stride 1, the course's usual layers), the explicit pairs otherwise: the
    same convolution, but a name is checked faster than a nested list, and a
    gradient check calls the layer thousands of times.
    """
    explicit = ((0, 0), (0, 0), (pad, pad), (pad, pad))
    if pad == 0:
        return "VALID"
    try:
        win = resolve_window(H, W, HH, WW, stride, stride, 1, 1, "SAME")
    except ValueError:  # let the op itself judge the explicit padding
        return explicit
    if (win.pad_top, win.pad_bottom, win.pad_left, win.pad_right) == (pad,) * 4:
        return "SAME"
    return explicit


@functools.lru_cache(maxsize=256)
def _geometry(x_shape, w_shape, stride, pad):
    """``(strides, dilations, window)`` of an NCHW ``x_shape`` and HWIO ``w_shape``, checked once.

    A gradient check calls a layer thousands of times on the same shapes:
    the geometry is settled once per shape, not per call.
    """
    N, C, H, W = x_shape
    HH, WW = w_shape[:2]
    return conv_geometry((N, H, W, C), w_shape, stride, _padding(H, W, HH, WW, stride, pad),
                         "NCHW", 1, 1)


def _nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def _conv(x, w_hwio, b, stride, pad, activation):
    return _nchw(_conv_nhwc(x, w_hwio, b, stride, pad, activation))


def _conv_nhwc(x, w_hwio, b, stride, pad, activation):
    """The layer's output in NHWC (the sandwiches keep it so between their stages)."""
    # the operands were checked and converted by _conv_setup: run fastconv.conv2d's core
    strides, dilations, win = _geometry(x.shape, w_hwio.shape, stride, pad)
    N, F = x.shape[0], w_hwio.shape[3]
    out = np.empty((N, win.OH, win.OW, F), dtype=x.dtype)
    if out.size:
        conv2d_nhwc(_nhwc(x), w_hwio, b, out, strides, dilations, win, 1,
                    activation == "relu", _backends.resolve(None)[1],
                    resolve_num_threads(None))
    return out


def _conv_backward(dout, cache, relu_output=None, dout_nhwc=None):
    """``(dx, dw, db)``; ``relu_output`` is the fused ReLU's NHWC output (or None);
    ``dout_nhwc``, when given, is the already checked NHWC upstream gradient."""
    xc, w, bc, conv_param, w_hwio = cache
    stride, pad = _conv_params(conv_param)
    strides, dilations, win = _geometry(xc.shape, w_hwio.shape, stride, pad)
    if dout_nhwc is None:
        d = _check_dout(dout, (xc.shape[0], w.shape[0], win.OH, win.OW))
        dtype = _compute_dtype(xc, d)
        dout_nhwc = _nhwc(d.astype(dtype, copy=False))
    else:
        dtype = _compute_dtype(xc, dout_nhwc)
        dout_nhwc = dout_nhwc.astype(dtype, copy=False)
    if dtype != xc.dtype:
        xc, w_hwio = xc.astype(dtype), w_hwio.astype(dtype)
    # fastconv.conv2d_backward's core, on the operands _conv_setup checked
    dx, dw, db = conv2d_backward_nhwc(
        _nhwc(xc), w_hwio, dout_nhwc, relu_output, strides, dilations,
        (win.pad_top, win.pad_left), 1, ("input", "filters", "bias"),
        _backends.resolve(None)[1], resolve_num_threads(None))
    return _nchw(dx), np.ascontiguousarray(dw.transpose(3, 2, 0, 1)), db


def conv_backward_fast(dout, cache):
    """Convolution layer backward.

    Parameters
    ----------
    dout : array_like (N, F, H', W')
        Upstream gradient; not modified.
    cache : tuple
        From :func:`conv_forward_fast`.

    Returns
    -------
    dx : ndarray (N, C, H, W)
    dw : ndarray (F, C, HH, WW)
    db : ndarray (F,)
        All in the forward's dtype (promoted with ``dout``'s).
    """
    return _conv_backward(dout, cache)


#: the assignment's other names for the same layer
conv_forward_strides = conv_forward_fast
conv_backward_strides = conv_backward_fast
conv_forward_im2col = conv_forward_fast
conv_backward_im2col = conv_backward_fast


# ============================================================================ max pooling
def max_pool_forward_fast(x, pool_param):
    """Max pooling forward (NCHW, no padding).

    ``out[n, c, i, j] = max_{p < pool_height, q < pool_width} x[n, c, i*stride + p, j*stride + q]``.

    Parameters
    ----------
    x : array_like (N, C, H, W)
    pool_param : dict
        ``'pool_height'``, ``'pool_width'`` and ``'stride'`` (ints >= 1);
        windows may be non-square, overlap or not tile the input.

    Returns
    -------
    out : ndarray (N, C, H', W')
        ``H' = 1 + (H - pool_height) // stride``, ``W' = 1 + (W - pool_width) // stride``;
        float32 stays float32, anything else is float64.
    cache : tuple
        For :func:`max_pool_backward_fast`: the position of each window's
        first maximum (not ``x``, so later edits of ``x`` do not affect it).
    """
    out, cache = _max_pool_forward(_array(x, "x", 4), pool_param, "NCHW")
    return _nchw(out), cache


def _max_pool_forward(x, pool_param, data_format):
    """NHWC pooled output and the cache, for ``x`` in ``data_format`` (the cache in NCHW terms)."""
    ph, pw, stride = _pool_params(pool_param)
    if data_format == "NCHW":
        N, C, H, W = x.shape
    else:
        N, H, W, C = x.shape
    if H < ph or W < pw:
        raise ValueError(f"the {ph}x{pw} pooling window does not fit the {H}x{W} input "
                         f"(x has shape {(N, C, H, W)}).")
    dtype = _compute_dtype(x)
    # fastconv.max_pool2d_with_argmax's core: NHWC output and per-image NHWC flat indices
    out, argmax = max_pool2d_argmax_window(x.astype(dtype, copy=False), data_format, (ph, pw),
                                           (stride, stride), (1, 1),
                                           _pool_window(H, W, ph, pw, stride))
    return out, ((N, C, H, W), dtype, dict(pool_param), argmax)


@functools.lru_cache(maxsize=256)
def _pool_window(H, W, ph, pw, stride):
    """The VALID window of a ``ph x pw`` pool at ``stride`` on ``H x W``, resolved once."""
    return resolve_window(H, W, ph, pw, stride, stride, 1, 1, "VALID")


def max_pool_backward_fast(dout, cache):
    """Max pooling backward: each window's gradient goes to its first maximum.

    Overlapping windows add up at the pixels they share.

    Parameters
    ----------
    dout : array_like (N, C, H', W')
        Not modified.
    cache : tuple
        From :func:`max_pool_forward_fast`.

    Returns
    -------
    dx : ndarray (N, C, H, W)
    """
    return _nchw(_max_pool_backward_nhwc(dout, cache))


def _max_pool_backward_nhwc(dout, cache):
    """The input gradient in NHWC, for an NCHW ``dout``."""
    shape, dtype, pool_param, argmax = cache
    N, C, H, W = shape
    _, OH, OW, _ = argmax.shape
    d = _check_dout(dout, (N, C, OH, OW))
    dtype = _compute_dtype(np.empty(0, dtype), d)
    # fastconv.max_pool2d_backward's core: the NHWC gradient scattered to the first maxima
    size = H * W * C
    flat = argmax + (np.arange(N, dtype=np.int64) * size).reshape(N, 1, 1, 1)
    dx = _scatter(_backends.resolve(None)[1], _nhwc(d.astype(dtype, copy=False)), flat,
                  N * size, resolve_num_threads(None))
    return dx.reshape(N, H, W, C)


# ============================================================================ relu
def relu_forward(x):
    """ReLU forward: ``(max(x, 0), cache)``, any shape."""
    x = _array(x, "x")
    dtype = _compute_dtype(x)
    out = fastconv.relu(np.array(x, dtype=dtype, order="C"))
    return out, out


def relu_backward(dout, cache):
    """ReLU backward: ``dout`` where the forward input was > 0, else 0 (0 at 0)."""
    d = _check_dout(dout, cache.shape)
    return fastconv.relu_backward(d.astype(_compute_dtype(cache, d), copy=False), cache)


# ============================================================================ sandwiches
def conv_relu_forward(x, w, b, conv_param):
    """Convolution followed by ReLU, fused in one pass.

    Parameters and shapes as for :func:`conv_forward_fast`.

    Returns
    -------
    out : ndarray (N, F, H', W')
    cache : tuple
        ``(conv_cache, relu_cache)`` for :func:`conv_relu_backward`.
    """
    a, conv_cache = _conv_forward_relu(x, w, b, conv_param)
    return _nchw(a), (conv_cache, a)


def _conv_forward_relu(x, w, b, conv_param):
    # conv_forward_fast's checks and cache, with the ReLU fused into the convolution;
    # the output stays NHWC (the ReLU mask of the backward, the pool's input)
    conv_cache = _conv_setup(x, w, b, conv_param)
    xc, _, bc, _, w_hwio = conv_cache
    stride, pad = _conv_params(conv_param)
    return _conv_nhwc(xc, w_hwio, bc, stride, pad, "relu"), conv_cache


def _conv_setup(x, w, b, conv_param):
    """Check the operands; the cache of :func:`conv_forward_fast` (its own copies)."""
    x = _array(x, "x", 4)
    w = _array(w, "w", 4)
    b = _array(b, "b", 1)
    stride, pad = _conv_params(conv_param)
    N, C, H, W = x.shape
    F, Cw, HH, WW = w.shape
    if Cw != C:
        raise ValueError(f"w has shape {w.shape}: its C = {Cw} must equal x's channels "
                         f"{C} (x has shape {x.shape}).")
    if b.shape != (F,):
        raise ValueError(f"b has shape {b.shape}; expected (F,) = ({F},).")
    if H + 2 * pad < HH or W + 2 * pad < WW:
        raise ValueError(f"the {HH}x{WW} kernel does not fit the padded input "
                         f"{H + 2 * pad}x{W + 2 * pad} (x {x.shape}, pad {pad}).")
    dtype = _compute_dtype(x, w, b)
    xc = np.array(x, dtype=dtype, order="C")
    w_hwio = np.ascontiguousarray(w.transpose(2, 3, 1, 0), dtype=dtype)
    bc = np.array(b, dtype=dtype)
    return (xc, w.copy(), bc, dict(conv_param), w_hwio)


def conv_relu_backward(dout, cache):
    """Backward of :func:`conv_relu_forward`: ``(dx, dw, db)``."""
    conv_cache, relu_cache = cache
    return _conv_backward(dout, conv_cache, relu_output=relu_cache)


def conv_relu_pool_forward(x, w, b, conv_param, pool_param):
    """Convolution, ReLU (fused) and max pooling.

    Parameters
    ----------
    x, w, b, conv_param
        As for :func:`conv_forward_fast`.
    pool_param
        As for :func:`max_pool_forward_fast`.

    Returns
    -------
    out : ndarray (N, F, H'', W'')
    cache : tuple
        ``(conv_cache, relu_cache, pool_cache)`` for :func:`conv_relu_pool_backward`.
    """
    a, conv_cache = _conv_forward_relu(x, w, b, conv_param)
    out, pool_cache = _max_pool_forward(a, pool_param, "NHWC")
    return _nchw(out), (conv_cache, a, pool_cache)


def conv_relu_pool_backward(dout, cache):
    """Backward of :func:`conv_relu_pool_forward`: ``(dx, dw, db)``."""
    conv_cache, relu_cache, pool_cache = cache
    da = _max_pool_backward_nhwc(dout, pool_cache)
    return _conv_backward(None, conv_cache, relu_output=relu_cache, dout_nhwc=da)
