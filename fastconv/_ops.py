"""The public operations: validation, dtype rules, layout, output allocation, threads.

Each public function turns its arguments into one canonical problem -- NHWC,
C-contiguous, float32 or float64, explicit geometry -- allocates (or checks)
the output, and hands it to a backend driver (see :mod:`fastconv._backends`).
"""
import math

import numpy as np

from . import _backends, _tuning
from ._shapes import check_pool_windows, crop_far_taps, nhwc_dims, resolve_window
from ._threads import resolve_num_threads
from ._validation import (as_float_array, cast_operand, check_activation, check_algorithm,
                          check_data_format, check_ndim, check_out, positive_int, spatial_pair)

__all__ = ["conv2d", "relu", "max_pool2d", "im2col", "max_pool2d_window", "pool_geometry"]


def aligned_empty(shape, dtype, alignment=None, min_bytes=0):
    """An uninitialized C-contiguous array whose data starts on an ``alignment``-byte boundary.

    A view into a slightly larger byte buffer (its ``base``), so it behaves
    as ``np.empty(shape, dtype)`` in every other way.  An empty array holds
    no data, so its address means nothing.  ``alignment`` defaults to
    :data:`fastconv._tuning.OUTPUT_ALIGN_BYTES` (a cache line).  An array of
    fewer than ``min_bytes`` bytes is a plain ``np.empty`` (finding the
    address costs a few microseconds).
    """
    dtype = np.dtype(dtype)
    alignment = _tuning.OUTPUT_ALIGN_BYTES if alignment is None else int(alignment)
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (int(shape),)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < min_bytes:
        return np.empty(shape, dtype=dtype)
    buf = np.empty(nbytes + alignment, dtype=np.uint8)
    start = -buf.__array_interface__["data"][0] % alignment   # (.ctypes is slower)
    return buf[start:start + nbytes].view(dtype).reshape(shape)


def _new_output(shape, dtype):
    """An output array fastconv allocates: cache-line aligned unless it is tiny."""
    if math.prod(shape) * dtype.itemsize < _tuning.OUTPUT_ALIGN_MIN_BYTES:
        return np.empty(shape, dtype=dtype)   # tiny: as aligned_empty, without its steps
    return aligned_empty(shape, dtype, min_bytes=_tuning.OUTPUT_ALIGN_MIN_BYTES)


def _to_nhwc(x, data_format):
    if data_format == "NHWC" and x.flags.c_contiguous:
        return x
    x = x.transpose(0, 2, 3, 1) if data_format == "NCHW" else x
    return np.ascontiguousarray(x)


def _check_spatial(H, W, name="input"):
    if H < 1 or W < 1:
        raise ValueError(f"{name} height and width must be >= 1; got {H}x{W}.")


def _layout_shape(N, H, W, C, data_format):
    return (N, H, W, C) if data_format == "NHWC" else (N, C, H, W)


def _prepare_out(out, shape_nhwc, dtype, data_format, inputs):
    """Return ``(result, target)``: the array handed back and the NHWC array a driver fills."""
    shape = _layout_shape(*shape_nhwc, data_format)
    if out is None:
        result = _new_output(shape, dtype)
    else:
        result = check_out(out, shape, dtype, inputs=inputs)
    if data_format == "NHWC":
        return result, result
    return result, _new_output(shape_nhwc, dtype)


def _finish(result, target, data_format):
    if data_format == "NCHW":
        result[...] = target.transpose(0, 3, 1, 2)
    return result


#: checked geometries by their arguments (see :func:`conv_geometry`); cleared when full
_GEOMETRY_CACHE = {}
_GEOMETRY_CACHE_SIZE = 512


def _frozen(value):
    """``value`` as a hashable key when it is made of str, int, list and tuple only, else
    None (then it is validated afresh: NumPy integers, arrays, anything unusual)."""
    t = type(value)
    if t is int or t is str:
        return value
    if t is tuple or t is list:
        items = []
        for v in value:
            tv = type(v)
            if tv is not int and tv is not str:
                v = _frozen(v)
                if v is None:
                    return None
            items.append(v)
        return tuple(items)
    return None


def conv_geometry(nhwc, w_shape, strides, padding, data_format, dilations, groups,
                  filters_name="filters"):
    """Check a convolution's shapes; return ``((SH, SW), (DH, DW), Window)``.

    ``nhwc`` is the input's ``(N, H, W, C)``, ``w_shape`` the HWIO filters'
    shape; shared by the forward op and its gradients.  The answer depends on
    the arguments only, so arguments seen before (made of ints, strings, lists
    and tuples) are answered from a small cache -- a tiny convolution's call
    costs about as much as its checks.
    """
    key = (tuple(nhwc), tuple(w_shape), _frozen(strides), _frozen(padding), data_format,
           _frozen(dilations), groups, filters_name)
    if None in key:
        return _conv_geometry(nhwc, w_shape, strides, padding, data_format, dilations, groups,
                              filters_name)
    hit = _GEOMETRY_CACHE.get(key)
    if hit is None:
        hit = _conv_geometry(nhwc, w_shape, strides, padding, data_format, dilations, groups,
                             filters_name)
        if len(_GEOMETRY_CACHE) >= _GEOMETRY_CACHE_SIZE:
            _GEOMETRY_CACHE.clear()
        _GEOMETRY_CACHE[key] = hit
    return hit


def _conv_geometry(nhwc, w_shape, strides, padding, data_format, dilations, groups,
                   filters_name):
    N, H, W, C = nhwc
    KH, KW, Cg, O = w_shape = tuple(w_shape)
    if min(KH, KW, Cg, O) < 1:
        raise ValueError(f"{filters_name} must have non-zero dimensions; got shape {w_shape}.")
    if Cg * groups != C:
        raise ValueError(
            f"channel mismatch: input has C_in={C} channels, so {filters_name}.shape[2] must be "
            f"C_in / groups = {C}/{groups}; got {filters_name} of shape {w_shape} "
            f"({filters_name}.shape[2]={Cg}).")
    if O % groups:
        raise ValueError(f"C_out={O} ({filters_name}.shape[3]) must be divisible by "
                         f"groups={groups}.")
    _check_spatial(H, W)
    SH, SW = spatial_pair(strides, "strides", data_format)
    DH, DW = spatial_pair(dilations, "dilations", data_format)
    return (SH, SW), (DH, DW), resolve_window(H, W, KH, KW, SH, SW, DH, DW, padding, data_format)


def conv_operands(input, filters, data_format, groups):
    """Check and convert a convolution's operands: ``(x, w, data_format, groups)``.

    ``x`` is a float32/float64 4-D array in ``data_format``, ``w`` 4-D HWIO
    filters cast to its dtype, ``groups`` a positive int.
    """
    x = as_float_array(input, "input")
    check_ndim(x, 4, "input", "NHWC" if data_format != "NCHW" else "NCHW")
    data_format = check_data_format(data_format)
    w = cast_operand(filters, "filters", x.dtype)
    check_ndim(w, 4, "filters", "HWIO: [KH, KW, C_in / groups, C_out]")
    return x, w, data_format, positive_int(groups, "groups")


def conv2d(input, filters, strides=1, padding="VALID", data_format="NHWC", dilations=1, *,
           groups=1, bias=None, activation=None, out=None, backend=None, num_threads=None,
           algorithm="auto"):
    """2-D convolution with ``tf.nn.conv2d`` semantics, plus groups, bias and ReLU.

    Like every deep-learning framework this computes the *cross-correlation*
    (the kernel is not flipped)::

        out[n, oh, ow, o] = bias[o] + sum_{kh, kw, c} x[n, oh*SH + kh*DH - top, ow*SW + kw*DW - left, g*Cg + c]
                                                     * filters[kh, kw, c, o]

    with ``g = o // (C_out / groups)``, ``Cg = C_in / groups`` and positions
    outside the input read as zero.

    Parameters
    ----------
    input : array_like, 4-D
        NHWC ``(N, H, W, C_in)``, or NCHW with ``data_format="NCHW"``;
        float32 or float64 (other dtypes raise ``TypeError``).
    filters : array_like, 4-D
        HWIO ``(KH, KW, C_in / groups, C_out)``; cast to the input's dtype.
    strides, dilations : int or list of 1, 2 or 4 ints
        As ``tf.nn.conv2d``; a 4-list is in ``data_format`` order with 1 for
        batch and channels.
    padding : {'VALID', 'SAME'} or list of 4 [before, after] pairs
        TensorFlow's rules: ``'SAME'`` gives ``ceil(H / SH)`` rows and puts the
        odd extra padding pixel at the bottom/right; explicit pairs are in
        ``data_format`` order. See :func:`fastconv.output_shape`.
    data_format : {'NHWC', 'NCHW'}
    groups : int
        Grouped convolution; ``groups == C_in`` with ``C_in / groups == 1`` is
        depthwise.
    bias : array_like (C_out,), optional
        Added to every output pixel in the same pass.
    activation : {None, 'relu'}
        Applied after the bias in the same pass.
    out : ndarray, optional
        C-contiguous output of the right shape and dtype, not overlapping the
        inputs; reusing one skips page-fault costs.
    backend : str, optional
        'auto', 'cython', 'numba' or 'numpy'; default: the process default
        (:func:`fastconv.set_backend`).
    num_threads : int, optional
        Threads to use; default :func:`fastconv.get_num_threads`.
    algorithm : {'auto', 'direct', 'im2col'}
        Kernel family for backends that have both (direct register-blocked
        convolution, or tiled im2col + GEMM).

    Returns
    -------
    ndarray
        ``(N, OH, OW, C_out)`` (or NCHW), the input's dtype.
    """
    x, w, data_format, groups = conv_operands(input, filters, data_format, groups)
    if data_format == "NHWC":   # an ndarray's 4-D shape: no conversion (see nhwc_dims)
        N, H, W, C = x.shape
    else:
        N, C, H, W = x.shape
    O = w.shape[3]
    (SH, SW), (DH, DW), win = conv_geometry((N, H, W, C), w.shape, strides, padding,
                                            data_format, dilations, groups)
    b = None
    if bias is not None:
        b = cast_operand(bias, "bias", x.dtype)
        if b.shape != (O,):
            raise ValueError(f"bias must have shape (C_out,) = ({O},); got {b.shape}.")
    relu_fused = check_activation(activation)
    algorithm = check_algorithm(algorithm)
    n_threads = resolve_num_threads(num_threads)
    _, module = _backends.resolve(backend)
    result, target = _prepare_out(out, (N, win.OH, win.OW, O), x.dtype, data_format,
                                  inputs=(x, w, b))
    if target.size:
        conv2d_nhwc(_to_nhwc(x, data_format), w, b, target, (SH, SW), (DH, DW), win, groups,
                    relu_fused, module, n_threads, algorithm)
    return _finish(result, target, data_format)


def conv2d_nhwc(x, w, b, target, strides, dilations, win, groups, relu, module, n_threads,
                algorithm="auto"):
    """Fill ``target`` (N, OH, OW, O) with the convolution of checked NHWC ``x`` and HWIO ``w``.

    The core of :func:`conv2d` once its operands, geometry (``win``, a
    :func:`conv_geometry` window), backend ``module`` and thread count are
    settled: far taps that never read the input are cropped, and a convolution
    whose taps all miss the input gives the bias alone.
    """
    cropped = crop_far_taps(x, w, w.shape[:2], strides, dilations, win)
    if cropped is None:   # no tap ever reads the input: the bias alone
        target[...] = 0 if b is None else b
        if relu:
            np.maximum(target, 0, out=target)
    else:
        xc, wc, _, pads = cropped
        module.conv2d(xc, wc, b, target, strides, dilations, pads, groups, relu, n_threads,
                      algorithm)


def relu(features, *, out=None, backend=None, num_threads=None):
    """Rectified linear unit, ``max(features, 0)``, elementwise.

    NaN stays NaN and ``-inf`` becomes 0, as in ``tf.nn.relu`` and
    ``torch.relu``.

    Parameters
    ----------
    features : array_like
        float32 or float64, any shape.
    out : ndarray, optional
        C-contiguous array of the same shape and dtype; may be ``features``
        itself for an in-place ReLU.
    backend, num_threads
        As for :func:`conv2d`.
    """
    x = as_float_array(features, "features")
    n_threads = resolve_num_threads(num_threads)
    _, module = _backends.resolve(backend)
    if out is None:
        out = _new_output(x.shape, x.dtype)
    else:
        check_out(out, x.shape, x.dtype, inputs=(x,), allow_alias=x)
    if out.size:
        src = out if out is x else np.ascontiguousarray(x)
        module.relu(src.reshape(-1), out.reshape(-1), n_threads)
    return out


def pool_geometry(ksize, strides, data_format, dilations=1):
    """``(KH, KW), (SH, SW), (DH, DW)`` of a pooling window; ``strides=None`` means the window."""
    KH, KW = spatial_pair(ksize, "ksize", data_format)
    if strides is None:
        SH, SW = KH, KW
    else:
        SH, SW = spatial_pair(strides, "strides", data_format)
    DH, DW = spatial_pair(dilations, "dilations", data_format)
    return (KH, KW), (SH, SW), (DH, DW)


def max_pool2d_window(x, data_format, ksize, strides, dilations, win, out, backend, num_threads):
    """Validate ``out``, then run a backend's max pool on a resolved window."""
    N, H, W, C = nhwc_dims(x.shape, data_format)
    check_pool_windows(H, W, *ksize, *strides, *dilations, win)
    n_threads = resolve_num_threads(num_threads)
    _, module = _backends.resolve(backend)
    result, target = _prepare_out(out, (N, win.OH, win.OW, C), x.dtype, data_format,
                                  inputs=(x,))
    if target.size:
        # every window has a tap inside (checked above), so cropping never returns None
        xc, _, kc, pads = crop_far_taps(_to_nhwc(x, data_format), None, ksize, strides,
                                        dilations, win)
        module.max_pool2d(xc, target, kc, strides, dilations, pads, n_threads)
    return _finish(result, target, data_format)


def max_pool2d(input, ksize, strides=None, padding="VALID", data_format="NHWC", *, out=None,
               backend=None, num_threads=None):
    """2-D max pooling with ``tf.nn.max_pool2d`` semantics.

    ``out[n, oh, ow, c]`` is the maximum of ``x[n, oh*SH + kh - top, ow*SW + kw - left, c]``
    over the window positions inside the input; padding is never picked.

    NaN propagates (a window holding NaN gives NaN), as in NumPy and PyTorch.
    TensorFlow's CPU kernel instead skips NaN, so results differ there.

    Parameters
    ----------
    input : array_like, 4-D
        NHWC, or NCHW with ``data_format="NCHW"``; float32 or float64.
    ksize : int or list of 1, 2 or 4 ints
        Window size.
    strides : int or list of 1, 2 or 4 ints, optional
        Defaults to ``ksize`` (non-overlapping windows).
    padding : {'VALID', 'SAME'} or list of 4 [before, after] pairs
        TensorFlow's rules, as for :func:`conv2d`.
    data_format : {'NHWC', 'NCHW'}
    out, backend, num_threads
        As for :func:`conv2d`.
    """
    x = as_float_array(input, "input")
    check_ndim(x, 4, "input", data_format)
    data_format = check_data_format(data_format)
    ksize, strides, dilations = pool_geometry(ksize, strides, data_format)
    N, H, W, C = nhwc_dims(x.shape, data_format)
    _check_spatial(H, W)
    win = resolve_window(H, W, *ksize, *strides, *dilations, padding, data_format)
    return max_pool2d_window(x, data_format, ksize, strides, dilations, win, out, backend,
                          num_threads)


def im2col(input, ksize, strides=1, padding="VALID", dilations=1, *, out=None, backend=None,
           num_threads=None):
    """Unfold NHWC patches into the rows of a matrix (image to columns).

    Row ``(n * OH + oh) * OW + ow`` holds the window of output pixel
    ``(n, oh, ow)``, its columns ordered ``(kh, kw, c)`` -- so that::

        im2col(x, (KH, KW), s, p) @ filters.reshape(-1, C_out)
            == conv2d(x, filters, s, p).reshape(-1, C_out)

    Positions outside the input are zero.

    Parameters
    ----------
    input : array_like (N, H, W, C)
        float32 or float64.
    ksize : int or (KH, KW)
    strides, padding, dilations
        As for :func:`conv2d` (NHWC).
    out : ndarray, optional
        C-contiguous, writeable ``(N * OH * OW, KH * KW * C)`` array of the
        input's dtype, not overlapping the input, to fill and return instead of
        a new one; reusing one skips the page faults of a fresh result.
    backend, num_threads
        As for :func:`conv2d`.

    Returns
    -------
    ndarray of shape ``(N * OH * OW, KH * KW * C)`` (``out`` when given).
    """
    x = as_float_array(input, "input")
    check_ndim(x, 4, "input", "NHWC")
    KH, KW = spatial_pair(ksize, "ksize")
    SH, SW = spatial_pair(strides, "strides")
    DH, DW = spatial_pair(dilations, "dilations")
    N, H, W, C = x.shape
    _check_spatial(H, W)
    win = resolve_window(H, W, KH, KW, SH, SW, DH, DW, padding)
    n_threads = resolve_num_threads(num_threads)
    _, module = _backends.resolve(backend)
    shape = (N * win.OH * win.OW, KH * KW * C)
    if out is None:
        result = _new_output(shape, x.dtype)
    else:
        result = check_out(out, shape, x.dtype, inputs=(x,))
    if result.size:
        module.im2col(np.ascontiguousarray(x), result.reshape(N, win.OH, win.OW, KH, KW, C),
                      (KH, KW), (SH, SW), (DH, DW), (win.pad_top, win.pad_left), n_threads)
    return result

