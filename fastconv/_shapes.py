"""Output sizes and padding: TensorFlow's rules, in one place.

For one spatial axis of size ``H``, kernel ``KH``, stride ``SH`` and dilation
``DH`` the effective kernel is ``EKH = (KH - 1) * DH + 1`` and

* ``"VALID"``: no padding, ``OH = (H - EKH) // SH + 1`` (requires ``H >= EKH``);
* ``"SAME"``: ``OH = ceil(H / SH)``; the padding needed,
  ``max((OH - 1) * SH + EKH - H, 0)``, is split with the smaller half on top
  (left) and the odd extra pixel on the bottom (right), as TensorFlow does;
* explicit ``[[0, 0], [top, bottom], [left, right], [0, 0]]`` (in
  ``data_format`` order): ``OH = (H + top + bottom - EKH) // SH + 1``.

Every backend gets its geometry from :func:`resolve_window`; the public
helpers :func:`output_shape` and :func:`explicit_padding` expose it.
"""
from collections import namedtuple
import numbers

import numpy as np

from ._validation import check_data_format, spatial_pair

Window = namedtuple("Window", "OH OW pad_top pad_bottom pad_left pad_right")
Window.__doc__ = "Output size and padding of a 2-D sliding window."


def _axis_same(size, k, s, d):
    ek = (k - 1) * d + 1
    o = -(-size // s)
    total = max((o - 1) * s + ek - size, 0)
    return o, total // 2, total - total // 2


def _axis_explicit(size, k, s, d, before, after, axis, name):
    ek = (k - 1) * d + 1
    padded = size + before + after
    if padded < ek:
        raise ValueError(
            f"{name}: the kernel (effective {axis} {ek} with dilation) is larger than the "
            f"padded input {axis} ({size} + {before} + {after} = {padded})."
        )
    return (padded - ek) // s + 1, before, after


def parse_explicit_padding(padding, data_format, name="padding"):
    """Read an explicit padding list; return ``(top, bottom, left, right)``."""
    try:
        pads = np.asarray(padding)
    except Exception:
        pads = None
    if pads is None or pads.shape != (4, 2) or pads.dtype.kind not in "iu":
        raise ValueError(
            f"{name} must be 'SAME', 'VALID' or a list of 4 [before, after] integer pairs "
            f"({'[[0, 0], [top, bottom], [left, right], [0, 0]]' if data_format == 'NHWC' else '[[0, 0], [0, 0], [top, bottom], [left, right]]'}"
            f" for {data_format}); got {padding!r}."
        )
    if (pads < 0).any():
        raise ValueError(f"{name} must be non-negative; got {pads.tolist()}.")
    if data_format == "NHWC":
        batch, h, w, chan = pads
    else:
        batch, chan, h, w = pads
    if batch.any() or chan.any():
        raise ValueError(f"{name}: the batch and channel entries must be [0, 0] "
                         f"({data_format} order); got {pads.tolist()}.")
    return int(h[0]), int(h[1]), int(w[0]), int(w[1])


def resolve_window(H, W, KH, KW, SH, SW, DH, DW, padding, data_format="NHWC",
                   name="padding"):
    """Return the :class:`Window` (output size and padding) for one configuration."""
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "SAME":
            OH, top, bottom = _axis_same(H, KH, SH, DH)
            OW, left, right = _axis_same(W, KW, SW, DW)
            return Window(OH, OW, top, bottom, left, right)
        if mode == "VALID":
            padding = ((0, 0), (0, 0), (0, 0), (0, 0))
        else:
            raise ValueError(f"{name} must be 'SAME', 'VALID' or an explicit list of "
                             f"[before, after] pairs; got {padding!r}.")
    top, bottom, left, right = parse_explicit_padding(padding, data_format, name)
    OH, top, bottom = _axis_explicit(H, KH, SH, DH, top, bottom, "height", name)
    OW, left, right = _axis_explicit(W, KW, SW, DW, left, right, "width", name)
    return Window(OH, OW, top, bottom, left, right)


def check_pool_windows(H, W, KH, KW, SH, SW, DH, DW, win, name="padding"):
    """Raise when some pooling window would hold only padding (nothing to pick)."""
    for size, k, s, d, o, before, axis in ((H, KH, SH, DH, win.OH, win.pad_top, "height"),
                                           (W, KW, SW, DW, win.OW, win.pad_left, "width")):
        if o == 0:
            continue
        starts = np.arange(o) * s - before
        taps = starts[:, None] + np.arange(k)[None, :] * d
        if not ((taps >= 0) & (taps < size)).any(axis=1).all():
            raise ValueError(f"{name}: some pooling windows along {axis} lie entirely in the "
                             f"padding; reduce the padding (it must be smaller than the "
                             f"window).")


def nhwc_dims(input_shape, data_format):
    """``(N, H, W, C)`` of a 4-D shape given in ``data_format`` ('NHWC' or 'NCHW')."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4:
        raise ValueError(f"input_shape must have 4 entries ({data_format}); got {input_shape!r}.")
    if data_format == "NHWC":
        N, H, W, C = shape
    else:
        N, C, H, W = shape
    return N, H, W, C


def _kernel(kernel_size):
    """``(KH, KW, C_out or None)`` from an int, ``(KH, KW)`` or a filter shape."""
    if isinstance(kernel_size, numbers.Integral):
        return (*spatial_pair(kernel_size, "kernel_size"), None)
    ks = tuple(kernel_size)
    if len(ks) == 4:  # a filter shape [KH, KW, C_in, C_out]
        return (*spatial_pair(ks[:2], "kernel_size"), int(ks[3]))
    return (*spatial_pair(ks, "kernel_size"), None)


def _geometry(input_shape, kernel_size, strides, padding, data_format, dilations):
    """What both public helpers need: the layout, ``(N, C)``, the filter's C_out, the window."""
    data_format = check_data_format(data_format)
    N, H, W, C = nhwc_dims(input_shape, data_format)
    KH, KW, O = _kernel(kernel_size)
    SH, SW = spatial_pair(strides, "strides", data_format)
    DH, DW = spatial_pair(dilations, "dilations", data_format)
    win = resolve_window(H, W, KH, KW, SH, SW, DH, DW, padding, data_format)
    return data_format, N, C, O, win


def output_shape(input_shape, kernel_size, strides=1, padding="VALID", data_format="NHWC",
                 dilations=1, *, out_channels=None):
    """Shape of the output of a convolution or pooling with TensorFlow's rules.

    Parameters
    ----------
    input_shape : tuple of 4 ints
        ``(N, H, W, C)`` for NHWC or ``(N, C, H, W)`` for NCHW.
    kernel_size : int, (KH, KW) or a filter shape (KH, KW, C_in, C_out)
        Window size; a 4-entry filter shape also sets ``out_channels``.
    strides, dilations : int or list of 1, 2 or 4 ints
        As ``tf.nn.conv2d`` accepts them.
    padding : 'SAME', 'VALID' or explicit pairs
        See the module docstring for the arithmetic.
    data_format : 'NHWC' or 'NCHW'
    out_channels : int, optional
        Output channels (a convolution's ``C_out``); by default the input's,
        as for pooling.

    Returns
    -------
    tuple of 4 ints in ``data_format`` order.

    Examples
    --------
    >>> output_shape((1, 5, 5, 1), 2, strides=2, padding="SAME")
    (1, 3, 3, 1)
    """
    data_format, N, C, O_filter, win = _geometry(input_shape, kernel_size, strides, padding,
                                                 data_format, dilations)
    O = int(out_channels) if out_channels is not None else (C if O_filter is None else O_filter)
    return (N, win.OH, win.OW, O) if data_format == "NHWC" else (N, O, win.OH, win.OW)


def explicit_padding(input_shape, kernel_size, strides=1, padding="VALID",
                     data_format="NHWC", dilations=1):
    """The explicit padding a configuration uses, as TensorFlow's pairs.

    Useful to see where ``"SAME"`` puts the odd extra pixel (bottom/right).

    Returns
    -------
    list of 4 ``[before, after]`` pairs in ``data_format`` order.

    Examples
    --------
    >>> explicit_padding((1, 6, 6, 1), 3, strides=2, padding="SAME")
    [[0, 0], [0, 1], [0, 1], [0, 0]]
    """
    data_format, _, _, _, win = _geometry(input_shape, kernel_size, strides, padding,
                                          data_format, dilations)
    hw = [[win.pad_top, win.pad_bottom], [win.pad_left, win.pad_right]]
    return [[0, 0], *hw, [0, 0]] if data_format == "NHWC" else [[0, 0], [0, 0], *hw]
