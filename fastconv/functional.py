"""``torch.nn.functional`` names and signatures on NumPy arrays (NCHW, OIHW).

::

    import fastconv.functional as F

    y = F.conv2d(x, weight, bias, stride=1, padding="same")   # x (N, C, H, W), weight (O, C/groups, KH, KW)
    y = F.relu(y)
    y = F.max_pool2d(y, 2)

PyTorch's rules apply: symmetric integer padding, ``padding="same"`` only
for stride 1 (the odd extra pixel goes right/bottom), output sizes rounded
down (or up with ``ceil_mode=True`` for pooling), unbatched 3-D ``(C, H, W)``
input accepted.  Computation runs on the process's default backend and
thread count.
"""
import numpy as np

import sys

from . import _backward, _functional_grad as grad, _ops
from ._shapes import Window
from ._validation import as_float_array, cast_operand, positive_int

__all__ = ["conv2d", "relu", "max_pool2d", "conv_transpose2d", "grad"]
sys.modules[__name__ + ".grad"] = grad    # ``import fastconv.functional.grad`` as torch.nn.grad


def _pair(value, name, minimum=1):
    """Read a PyTorch int-or-tuple argument; return two ints >= ``minimum``."""
    items = [value, value] if np.ndim(value) == 0 else list(value)
    if len(items) == 1:
        items = items * 2
    if len(items) != 2:
        raise ValueError(f"{name} must be an int or a tuple of 2 ints; got {value!r}.")
    out = []
    for v in items:
        if minimum == 1:
            out.append(positive_int(v, name))
        else:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name} must be an int or a tuple of 2 ints; got {value!r}.")
            if v < minimum:
                raise ValueError(f"{name} must be non-negative; got {value!r}.")
            out.append(int(v))
    return tuple(out)


def _batched(x, name="input"):
    """Accept (C, H, W) or (N, C, H, W); return a 4-D array and whether to squeeze."""
    if x.ndim == 3:
        return x[None], True
    if x.ndim == 4:
        return x, False
    raise ValueError(f"{name} must be 3-D (C, H, W) or 4-D (N, C, H, W); got shape {x.shape}.")


def _conv_pads(padding, strides, ksize, dilations):
    """PyTorch's convolution padding as ``[[top, bottom], [left, right]]``."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return [[0, 0], [0, 0]]
        if mode == "same":
            if tuple(strides) != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions "
                                 f"(stride={tuple(strides)!r}); use an explicit padding.")
            totals = [d * (k - 1) for k, d in zip(ksize, dilations)]
            return [[t // 2, t - t // 2] for t in totals]
        raise ValueError(f"padding must be 'valid', 'same', an int or a tuple of 2 ints; "
                         f"got {padding!r}.")
    PH, PW = _pair(padding, "padding", minimum=0)
    return [[PH, PH], [PW, PW]]


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``torch.nn.functional.conv2d``: cross-correlation of NCHW input with OIHW weights.

    ``out[n, o] = bias[o] + sum_{c, kh, kw} weight[o, c, kh, kw] * x_pad[n, g*Cg + c, oh*SH + kh*DH, ow*SW + kw*DW]``

    Parameters
    ----------
    input : array_like (N, C_in, H, W) or (C_in, H, W)
    weight : array_like (C_out, C_in / groups, KH, KW)
    bias : array_like (C_out,), optional
    stride, dilation : int or (int, int)
    padding : int, (int, int), 'valid' or 'same'
        Zeros added on both sides; ``'same'`` (stride 1 only) keeps the size.
    groups : int
    """
    x, squeeze = _batched(as_float_array(input, "input"))
    w = cast_operand(weight, "weight", x.dtype)
    if w.ndim != 4:
        raise ValueError(f"weight must be 4-D (C_out, C_in / groups, KH, KW); got shape {w.shape}.")
    SH, SW = _pair(stride, "stride")
    DH, DW = _pair(dilation, "dilation")
    O, Cg, KH, KW = w.shape
    pads = _conv_pads(padding, (SH, SW), (KH, KW), (DH, DW))
    y = _ops.conv2d(x, w.transpose(2, 3, 1, 0), (SH, SW), [[0, 0], [0, 0], *pads], "NCHW",
                    (DH, DW), groups=groups, bias=bias)
    return y[0] if squeeze else y


def relu(input, inplace=False):
    """``torch.nn.functional.relu``: ``max(input, 0)``; NaN stays NaN.

    With ``inplace=True`` the input array (a C-contiguous float ndarray) is
    overwritten and returned.
    """
    if inplace:
        if not isinstance(input, np.ndarray):
            raise TypeError(f"inplace=True needs a numpy.ndarray input; got "
                            f"{type(input).__name__}.")
        # check here, so the error names ``input`` (the caller passed no ``out``)
        if input.dtype not in (np.float32, np.float64):
            raise TypeError(f"inplace=True needs a float32 or float64 input; got dtype "
                            f"{input.dtype}. Use inplace=False, or convert first, e.g. "
                            f"input.astype(np.float32).")
        if not input.flags.writeable:
            raise ValueError("inplace=True overwrites input, but input is read-only; use "
                             "inplace=False (or pass a writeable copy, input.copy()).")
        if not input.flags.c_contiguous:
            raise ValueError(f"inplace=True needs a C-contiguous input (it is overwritten "
                             f"in place); got strides {input.strides}. Use inplace=False, "
                             f"or np.ascontiguousarray(input) first.")
        return _ops.relu(input, out=input)
    return _ops.relu(input)


def _pool_axis(size, k, s, p, d, ceil_mode, axis):
    ek = d * (k - 1) + 1
    if p * 2 > k:
        raise ValueError(f"padding ({p}) should be at most half of kernel_size ({k}) "
                         f"along {axis}.")
    span = size + 2 * p - ek
    if span < 0:
        raise ValueError(f"kernel_size {k} (dilation {d}) is larger than the padded input "
                         f"{axis} {size} + 2*{p}.")
    o = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (o - 1) * s >= size + p:
        o -= 1  # the last window would start in the right/bottom padding
    after = max((o - 1) * s + ek - size - p, 0)
    return o, p, after


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """``torch.nn.functional.max_pool2d`` on NCHW (or unbatched CHW) input.

    Implicit padding is ``-inf`` (never picked); NaN propagates.  With
    ``return_indices=True`` also returns the int64 flat index ``h * W + w``
    of each maximum within its input plane, as PyTorch does.
    """
    x, squeeze = _batched(as_float_array(input, "input"))
    KH, KW = _pair(kernel_size, "kernel_size")
    SH, SW = (KH, KW) if stride is None or (np.ndim(stride) and len(stride) == 0) \
        else _pair(stride, "stride")
    PH, PW = _pair(padding, "padding", minimum=0)
    DH, DW = _pair(dilation, "dilation")
    N, C, H, W = x.shape
    if H < 1 or W < 1:
        raise ValueError(f"input height and width must be >= 1; got {H}x{W}.")
    OH, top, bottom = _pool_axis(H, KH, SH, PH, DH, ceil_mode, "height")
    OW, left, right = _pool_axis(W, KW, SW, PW, DW, ceil_mode, "width")
    win = Window(OH, OW, top, bottom, left, right)
    geometry = ((KH, KW), (SH, SW), (DH, DW), win)
    if return_indices:
        y, idx = _backward.max_pool2d_argmax_window(x, "NCHW", *geometry)
        # NHWC per-image index (h * W + w) * C + c  ->  PyTorch's h * W + w, in NCHW
        y = np.ascontiguousarray(y.transpose(0, 3, 1, 2))
        idx = np.ascontiguousarray((idx // C).transpose(0, 3, 1, 2))
        return (y[0], idx[0]) if squeeze else (y, idx)
    y = _ops.max_pool2d_window(x, "NCHW", *geometry, None, None, None)
    return y[0] if squeeze else y


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """``torch.nn.functional.conv_transpose2d``: the adjoint of :func:`conv2d` (NCHW).

    ``weight`` is ``(C_in, C_out / groups, KH, KW)``.  Each ``input[n, i, h, w]``
    times ``weight[i, c, kh, kw]`` is added to output pixel
    ``(h*SH + kh*DH - PH, w*SW + kw*DW - PW)`` of channel ``g * C_out/groups + c``;
    the output has ``(H_in - 1)*SH - 2*PH + DH*(KH - 1) + output_padding + 1``
    rows (likewise columns).  ``output_padding`` (smaller than the stride or
    the dilation) adds rows at the bottom/right.
    """
    x, squeeze = _batched(as_float_array(input, "input"))
    w = cast_operand(weight, "weight", x.dtype)
    if w.ndim != 4:
        raise ValueError(f"weight must be 4-D (C_in, C_out / groups, KH, KW); got shape "
                         f"{w.shape}.")
    groups = positive_int(groups, "groups")
    strides, dilations = _pair(stride, "stride"), _pair(dilation, "dilation")
    pads, extra = _pair(padding, "padding", minimum=0), _pair(output_padding, "output_padding", 0)
    N, C_in, H_in, W_in = x.shape
    I, Og, KH, KW = w.shape
    if I != C_in or C_in % groups:
        raise ValueError(f"weight.shape[0]={I} must equal the input's C_in={C_in}, a multiple "
                         f"of groups={groups}.")
    size = []
    for n, s, p, d, k, e, axis in zip((H_in, W_in), strides, pads, dilations, (KH, KW), extra,
                                      ("height", "width")):
        if e >= max(s, d):
            raise ValueError(f"output_padding ({e}) must be smaller than either stride ({s}) "
                             f"or dilation ({d}) along {axis}.")
        size.append((n - 1) * s - 2 * p + d * (k - 1) + e + 1)
    if min(size) < 1:
        raise ValueError(f"the output would be {size[0]}x{size[1]}: padding {pads} is too "
                         f"large for this input, kernel and stride.")
    y = _backward.transposed_conv(x, w.transpose(2, 3, 1, 0), (N, *size, Og * groups), strides,
                                  dilations, pads, groups, "NCHW")
    if bias is not None:
        b = cast_operand(bias, "bias", x.dtype)
        if b.shape != (Og * groups,):
            raise ValueError(f"bias must have shape (C_out,) = ({Og * groups},); got {b.shape}.")
        y += b.reshape(-1, 1, 1)
    return y[0] if squeeze else y
