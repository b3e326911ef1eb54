"""*Deep Learning from Scratch*'s convolution helpers and layers on fastconv.

Drop-in replacements for the book's ``common.util.im2col``/``col2im`` and
``common.layers.Convolution``/``Pooling`` (NCHW arrays; zero padding ``pad``
on all four sides; output sizes ``(H + 2*pad - filter_h) // stride + 1``).

Like the book, everything computes and returns float64, whatever the input
dtype (integers included).  Unlike the book, results are contiguous arrays
and the layers keep their own copy of the forward input.
"""
import numpy as np

import fastconv
from .._validation import real_array

__all__ = ["im2col", "col2im", "Convolution", "Pooling"]


def _int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}.")
    return int(value)


def _float64(value, name, ndim):
    """``value`` as a float64 array of rank ``ndim`` (the book computes in float64)."""
    return real_array(value, name, ndim).astype(np.float64, copy=False)


def _geometry(H, W, filter_h, filter_w, stride, pad):
    filter_h = _int(filter_h, "filter_h", 1)
    filter_w = _int(filter_w, "filter_w", 1)
    stride = _int(stride, "stride", 1)
    pad = _int(pad, "pad", 0)
    if H + 2 * pad < filter_h or W + 2 * pad < filter_w:
        raise ValueError(f"the {filter_h}x{filter_w} filter does not fit the padded input "
                         f"{H + 2 * pad}x{W + 2 * pad} (pad {pad}).")
    return filter_h, filter_w, stride, pad


def _padding(pad):
    return [[0, 0], [pad, pad], [pad, pad], [0, 0]]


def im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    """Unfold NCHW patches into the rows of a 2-D matrix.

    Row ``(n*out_h + i)*out_w + j`` is output pixel ``(n, i, j)``; column
    ``(c*filter_h + p)*filter_w + q`` holds ``x_pad[n, c, i*stride + p, j*stride + q]``
    (channel, then kernel row, then kernel column).

    Parameters
    ----------
    input_data : array_like (N, C, H, W)
        Any real dtype.
    filter_h, filter_w : int
    stride : int
    pad : int
        Zero padding on all four sides.

    Returns
    -------
    ndarray (N*out_h*out_w, C*filter_h*filter_w), float64
        ``out_h = (H + 2*pad - filter_h) // stride + 1`` (likewise ``out_w``).
    """
    x = _float64(input_data, "input_data", 4)
    N, C, H, W = x.shape
    fh, fw, stride, pad = _geometry(H, W, filter_h, filter_w, stride, pad)
    cols = fastconv.im2col(x.transpose(0, 2, 3, 1), (fh, fw), stride, _padding(pad))
    # fastconv's columns are (kh, kw, c); the book's are (c, kh, kw)
    return np.ascontiguousarray(cols.reshape(-1, fh * fw, C).transpose(0, 2, 1)).reshape(
        -1, C * fh * fw)


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    """Fold :func:`im2col`'s layout back into an NCHW image, adding up overlaps.

    The adjoint of :func:`im2col` (its gradient), not its inverse: every entry
    is added to the pixel it was read from, and entries that fall in the
    padding are dropped.

    Parameters
    ----------
    col : array_like (N*out_h*out_w, C*filter_h*filter_w)
    input_shape : sequence of 4 ints
        ``(N, C, H, W)``, e.g. ``x.shape``.
    filter_h, filter_w, stride, pad
        As for :func:`im2col`.

    Returns
    -------
    ndarray (N, C, H, W), float64
    """
    try:
        N, C, H, W = (int(v) for v in input_shape)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"input_shape must be 4 ints (N, C, H, W); got {input_shape!r}.") \
            from exc
    c = _float64(col, "col", 2)
    fh, fw, stride, pad = _geometry(H, W, filter_h, filter_w, stride, pad)
    out_h = (H + 2 * pad - fh) // stride + 1
    out_w = (W + 2 * pad - fw) // stride + 1
    expected = (N * out_h * out_w, C * fh * fw)
    if c.shape != expected:
        raise ValueError(f"col has shape {c.shape}; im2col of input_shape {(N, C, H, W)} with a "
                         f"{fh}x{fw} filter, stride {stride}, pad {pad} gives {expected}.")
    c = np.ascontiguousarray(c.reshape(-1, C, fh * fw).transpose(0, 2, 1)).reshape(-1, fh * fw * C)
    img = fastconv.col2im(c, (N, H, W, C), (fh, fw), stride, _padding(pad))
    return np.ascontiguousarray(img.transpose(0, 3, 1, 2))


class Convolution:
    """The book's convolution layer: ``forward(x)`` and ``backward(dout)``, NCHW.

    Parameters
    ----------
    W : array_like (FN, C, FH, FW)
        Kept by reference as ``self.W`` (optimizers and numerical gradients
        update it in place; ``forward`` reads it at each call).
    b : array_like (FN,)
    stride, pad : int

    Attributes
    ----------
    W, b, stride, pad
        The constructor's arguments.
    x : ndarray or None
        A float64 copy of the last forward input.
    col_W : ndarray or None
        The last forward's ``W.reshape(FN, -1).T``.
    col : ndarray
        ``im2col`` of the last forward input (computed when read; the
        gradients do not need it).
    dW, db : ndarray or None
        Set by ``backward``: the shapes of ``W`` and ``b``.
    """

    def __init__(self, W, b, stride=1, pad=0):
        self.W = W
        self.b = b
        self.stride = stride
        self.pad = pad
        self.x = None
        self.col_W = None
        self.dW = None
        self.db = None
        self._w_hwio = None

    @property
    def col(self):
        if self.x is None:
            return None
        FN, C, FH, FW = np.shape(self.W)
        return im2col(self.x, FH, FW, self.stride, self.pad)

    def forward(self, x):
        """``out (N, FN, out_h, out_w)``, float64."""
        x = np.array(_float64(x, "x", 4), dtype=np.float64)       # own copy
        W = _float64(self.W, "W", 4)
        b = _float64(self.b, "b", 1)
        FN, C, FH, FW = W.shape
        N, Cx, H, Wd = x.shape
        if Cx != C:
            raise ValueError(f"x has {Cx} channels (shape {x.shape}); W {W.shape} expects {C}.")
        if b.shape != (FN,):
            raise ValueError(f"b has shape {b.shape}; expected (FN,) = ({FN},).")
        FH, FW, stride, pad = _geometry(H, Wd, FH, FW, self.stride, self.pad)
        self.x = x
        self.col_W = W.reshape(FN, -1).T
        self._w_hwio = np.ascontiguousarray(W.transpose(2, 3, 1, 0))
        out = fastconv.conv2d(x, self._w_hwio, strides=stride,
                              padding=[[0, 0], [0, 0], [pad, pad], [pad, pad]],
                              data_format="NCHW", bias=b)
        return np.ascontiguousarray(out)

    def backward(self, dout):
        """Set ``self.dW``, ``self.db``; return ``dx`` (the forward input's shape), float64."""
        if self.x is None:
            raise RuntimeError("Convolution.backward called before forward.")
        d = _float64(dout, "dout", 4)
        pad = self.pad
        dx, dw, db = fastconv.conv2d_backward(
            self.x, self._w_hwio, d, strides=self.stride,
            padding=[[0, 0], [0, 0], [pad, pad], [pad, pad]], data_format="NCHW")
        self.dW = np.ascontiguousarray(dw.transpose(3, 2, 0, 1))
        self.db = db
        return np.ascontiguousarray(dx)


class Pooling:
    """The book's max-pooling layer: ``forward(x)`` and ``backward(dout)``, NCHW.

    Parameters
    ----------
    pool_h, pool_w : int
    stride : int
        The book's default, 2.
    pad : int
        Zero padding on all four sides (as the book's ``im2col`` pads: a
        padded zero can be a window's maximum).  Output sizes are
        ``(H + 2*pad - pool_h) // stride + 1``.

    Attributes
    ----------
    pool_h, pool_w, stride, pad
        The constructor's arguments.
    x : ndarray or None
        A float64 copy of the last forward input.
    arg_max : ndarray or None
        For each output, the flat index ``(c*H_pad + h)*W_pad + w`` of its
        window's first maximum in the (padded) image.
    """

    def __init__(self, pool_h, pool_w, stride=2, pad=0):
        self.pool_h = pool_h
        self.pool_w = pool_w
        self.stride = stride
        self.pad = pad
        self.x = None
        self.arg_max = None

    def forward(self, x):
        """``out (N, C, out_h, out_w)``, float64; ties go to the first maximum."""
        x = np.array(_float64(x, "x", 4), dtype=np.float64)
        N, C, H, W = x.shape
        ph, pw, stride, pad = _geometry(H, W, self.pool_h, self.pool_w, self.stride, self.pad)
        self.x = x
        xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
        out, self.arg_max = fastconv.max_pool2d_with_argmax(xp, (ph, pw), stride, "VALID",
                                                            data_format="NCHW")
        return np.ascontiguousarray(out)

    def backward(self, dout):
        """``dx`` (the forward input's shape), float64; overlapping windows add up."""
        if self.x is None:
            raise RuntimeError("Pooling.backward called before forward.")
        d = _float64(dout, "dout", 4)
        if d.shape != self.arg_max.shape:
            raise ValueError(f"dout has shape {d.shape}; expected the forward output's shape "
                             f"{self.arg_max.shape}.")
        N, C, H, W = self.x.shape
        pad = self.pad
        like = np.broadcast_to(np.zeros((), np.float64), (N, C, H + 2 * pad, W + 2 * pad))
        dx = fastconv.max_pool2d_backward(d, like, (self.pool_h, self.pool_w), self.stride,
                                          "VALID", data_format="NCHW", argmax=self.arg_max)
        if pad:
            dx = dx[:, :, pad:pad + H, pad:pad + W]
        return np.ascontiguousarray(dx)
