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

from ._validation import MAX_WINDOW_PARAM, check_data_format, spatial_pair

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


def _plain_pads(padding):
    """The 4 pairs of an explicit padding given as lists/tuples of Python ints, or None."""
    if type(padding) not in (list, tuple) or len(padding) != 4:
        return None
    out = []
    for pair in padding:
        if type(pair) not in (list, tuple) or len(pair) != 2:
            return None
        a, b = pair
        if type(a) is not int or type(b) is not int or a < 0 or b < 0:
            return None
        out.append((a, b))
    return out


def parse_explicit_padding(padding, data_format, name="padding"):
    """Read an explicit padding list; return ``(top, bottom, left, right)``."""
    plain = _plain_pads(padding)   # the common case, checked without NumPy
    if plain is not None:
        batch, h, w, chan = plain if data_format == "NHWC" else (plain[0], plain[2],
                                                                  plain[3], plain[1])
        if batch == (0, 0) and chan == (0, 0):
            return h[0], h[1], w[0], w[1]
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
    """Return the :class:`Window` (output size and padding) for one configuration.

    Raises ``ValueError`` when a padding (explicit, or the one ``"SAME"``
    needs) exceeds :data:`fastconv._validation.MAX_WINDOW_PARAM`.
    """
    win = _resolve_window(H, W, KH, KW, SH, SW, DH, DW, padding, data_format, name)
    for pad, axis in ((win.pad_top, "top"), (win.pad_bottom, "bottom"),
                      (win.pad_left, "left"), (win.pad_right, "right")):
        if pad > MAX_WINDOW_PARAM:
            raise ValueError(
                f"{name}: the {axis} padding would be {pad}, more than the kernels take "
                f"({MAX_WINDOW_PARAM}); with 'SAME' it comes from the window size and "
                f"dilations (here kernel {KH}x{KW}, dilations {DH}x{DW}).")
    return win


def _resolve_window(H, W, KH, KW, SH, SW, DH, DW, padding, data_format, name):
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "SAME":
            OH, top, bottom = _axis_same(H, KH, SH, DH)
            OW, left, right = _axis_same(W, KW, SW, DW)
            return Window(OH, OW, top, bottom, left, right)
        if mode == "VALID":
            OH, _, _ = _axis_explicit(H, KH, SH, DH, 0, 0, "height", name)
            OW, _, _ = _axis_explicit(W, KW, SW, DW, 0, 0, "width", name)
            return Window(OH, OW, 0, 0, 0, 0)
        else:
            raise ValueError(f"{name} must be 'SAME', 'VALID' or an explicit list of "
                             f"[before, after] pairs; got {padding!r}.")
    top, bottom, left, right = parse_explicit_padding(padding, data_format, name)
    OH, top, bottom = _axis_explicit(H, KH, SH, DH, top, bottom, "height", name)
    OW, left, right = _axis_explicit(W, KW, SW, DW, left, right, "width", name)
    return Window(OH, OW, top, bottom, left, right)


#: windows checked at once by :func:`_axis_has_empty_window` (bounds its memory)
_WINDOW_CHECK_BLOCK = 1 << 16


def _axis_has_empty_window(size, k, s, d, o, before):
    """Whether some of the ``o`` windows of one axis has no tap inside ``[0, size)``.

    Window ``i`` has taps ``i*s - before + j*d``, ``0 <= j < k``.  Its first
    tap at or after 0 is below ``d``, so when ``d <= size`` a window has a tap
    inside exactly when its span ``[start, start + (k-1)*d]`` meets the input;
    spans move monotonically, so only the first and the last window need a
    look.  Otherwise the windows are checked in blocks, with memory in
    proportion to the block, never to ``k``.
    """
    if d <= size:
        for i in (0, o - 1):
            start = i * s - before
            if start >= size or start + (k - 1) * d < 0:
                return True
        return False
    for i0 in range(0, o, _WINDOW_CHECK_BLOCK):
        start = np.arange(i0, min(i0 + _WINDOW_CHECK_BLOCK, o), dtype=np.int64) * s - before
        first = np.where(start >= 0, 0, (-start + d - 1) // d)   # first tap index >= 0
        tap = start + first * d
        if not ((first < k) & (tap < size)).all():
            return True
    return False


def check_pool_windows(H, W, KH, KW, SH, SW, DH, DW, win, name="padding"):
    """Raise when some pooling window would hold only padding (nothing to pick).

    Costs O(1) for undilated windows and O(output) otherwise, whatever the
    window size.
    """
    for size, k, s, d, o, before, axis in ((H, KH, SH, DH, win.OH, win.pad_top, "height"),
                                           (W, KW, SW, DW, win.OW, win.pad_left, "width")):
        if o == 0:
            continue
        if _axis_has_empty_window(size, k, s, d, o, before):
            raise ValueError(f"{name}: some pooling windows along {axis} lie entirely in the "
                             f"padding; reduce the padding (it must be smaller than the "
                             f"window).")


def nhwc_dims(input_shape, data_format):
    """``(N, H, W, C)`` of a 4-D shape given in ``data_format`` ('NHWC' or 'NCHW')."""
    if type(input_shape) is tuple and len(input_shape) == 4 and \
            all(type(s) is int for s in input_shape):
        shape = input_shape   # an ndarray's shape: nothing to convert
    else:
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


def _axis_taps(size, k, s, d, o, before):
    """``(k_lo, k_hi, first, before')`` of one axis: the taps any output reads inside.

    Tap ``j`` of output ``i`` reads ``i*s + j*d - before``; the taps
    ``[k_lo, k_hi)`` are those inside ``[0, size)`` for some output.  With the
    window cut to them the padding before becomes ``before - k_lo*d``; when
    that is negative, the input's first ``first`` rows are never read and are
    dropped instead (``before'`` is then 0).  ``k_lo >= k_hi``: no tap inside.
    """
    k_lo = max(0, -(-(before - (o - 1) * s) // d))
    k_hi = min(k, (before + size - 1) // d + 1)
    new_before = before - k_lo * d
    first = max(-new_before, 0)
    return k_lo, k_hi, first, max(new_before, 0)


def crop_far_taps(x, w, ksize, strides, dilations, win):
    """Drop the window taps that no output reads inside the input (windows far wider than it).

    An axis whose dilated window extent ``(K - 1) * D + 1`` exceeds twice the
    input plus 64 is cut to the taps some output reads inside the input, with
    the padding and the input's unread leading rows adjusted to match, so no
    backend pads the input to the window's size.  The taps dropped only ever
    read padding (zeros for a convolution, never picked by pooling), so the
    result is the same.

    Parameters
    ----------
    x : ndarray (N, H, W, C)
    w : ndarray (KH, KW, Cg, O) or None (pooling)
    ksize, strides, dilations : pairs
    win : Window

    Returns
    -------
    (x, w, ksize, pads) or None
        The arrays (C-contiguous), window size and ``(top, left)`` to run;
        ``None`` when some axis has no tap inside the input at all (a
        convolution is then its bias alone).
    """
    _, H, W, _ = x.shape
    if (ksize[0] - 1) * dilations[0] + 1 <= 2 * H + 64 and \
            (ksize[1] - 1) * dilations[1] + 1 <= 2 * W + 64:
        return x, w, tuple(ksize), (win.pad_top, win.pad_left)   # the usual case: no crop
    pads = [win.pad_top, win.pad_left]
    ks = list(ksize)
    rows, cols = slice(None), slice(None)
    kh_sl, kw_sl = slice(None), slice(None)
    changed = False
    for axis, (size, k, s, d, o) in enumerate(((H, ksize[0], strides[0], dilations[0], win.OH),
                                               (W, ksize[1], strides[1], dilations[1], win.OW))):
        if (k - 1) * d + 1 <= 2 * size + 64:
            continue
        k_lo, k_hi, first, before = _axis_taps(size, k, s, d, o, pads[axis])
        if k_lo >= k_hi:
            return None
        changed = True
        ks[axis], pads[axis] = k_hi - k_lo, before
        if axis == 0:
            rows, kh_sl = slice(first, None), slice(k_lo, k_hi)
        else:
            cols, kw_sl = slice(first, None), slice(k_lo, k_hi)
    if not changed:
        return x, w, tuple(ksize), tuple(pads)
    x = np.ascontiguousarray(x[:, rows, cols, :])
    if w is not None:
        w = np.ascontiguousarray(w[kh_sl, kw_sl])
    return x, w, tuple(ks), tuple(pads)
