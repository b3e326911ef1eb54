"""``torch.nn.grad`` names on NumPy arrays: the gradients of :func:`fastconv.functional.conv2d`.

Available as ``fastconv.functional.grad``::

    import fastconv.functional as F
    dx = F.grad.conv2d_input(x.shape, weight, grad_output, stride=2, padding=1)
    dw = F.grad.conv2d_weight(x, weight.shape, grad_output, stride=2, padding=1)

NCHW input, OIHW weights, PyTorch's padding rules (symmetric integers, or
``'valid'`` / ``'same'``), as in :func:`fastconv.functional.conv2d`.
"""
import numpy as np

from . import _backward
from ._validation import as_float_array, cast_operand, check_ndim, positive_int

__all__ = ["conv2d_input", "conv2d_weight"]


def _geometry(weight_shape, stride, padding, dilation):
    from .functional import _conv_pads, _pair
    SH, SW = _pair(stride, "stride")
    DH, DW = _pair(dilation, "dilation")
    KH, KW = weight_shape[2:]
    pads = _conv_pads(padding, (SH, SW), (KH, KW), (DH, DW))
    return (SH, SW), (DH, DW), [[0, 0], [0, 0], *pads]


def _size4(value, name):
    shape = tuple(int(s) for s in value)
    if len(shape) != 4:
        raise ValueError(f"{name} must have 4 entries (N, C, H, W) or (C_out, C_in / groups, "
                         f"KH, KW); got {value!r}.")
    return shape


def conv2d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1):
    """``torch.nn.grad.conv2d_input``: ``dL/dinput`` of a 2-D convolution.

    Parameters
    ----------
    input_size : sequence of 4 ints
        ``(N, C_in, H, W)``.
    weight : array_like (C_out, C_in / groups, KH, KW)
    grad_output : array_like (N, C_out, OH, OW)
        float32 or float64; ``weight`` is cast to its dtype.
    stride, padding, dilation, groups
        The forward convolution's.

    Returns
    -------
    ndarray of ``input_size``.
    """
    dy = as_float_array(grad_output, "grad_output")
    check_ndim(dy, 4, "grad_output", "NCHW")
    w = cast_operand(weight, "weight", dy.dtype)
    check_ndim(w, 4, "weight", "(C_out, C_in / groups, KH, KW)")
    N, C, H, W = _size4(input_size, "input_size")
    strides, dilations, pads = _geometry(w.shape, stride, padding, dilation)
    return _backward._backprop_input((N, H, W, C), w.transpose(2, 3, 1, 0), dy, strides, pads,
                                     "NCHW", dilations, positive_int(groups, "groups"), None,
                                     None, shape_name="input_size", dy_name="grad_output")


def conv2d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1):
    """``torch.nn.grad.conv2d_weight``: ``dL/dweight`` of a 2-D convolution, OIHW.

    Parameters
    ----------
    input : array_like (N, C_in, H, W)
        float32 or float64.
    weight_size : sequence of 4 ints
        ``(C_out, C_in / groups, KH, KW)``.
    grad_output : array_like (N, C_out, OH, OW)
        Cast to the input's dtype.
    stride, padding, dilation, groups
        The forward convolution's.

    Returns
    -------
    ndarray of ``weight_size``.
    """
    x = as_float_array(input, "input")
    check_ndim(x, 4, "input", "NCHW")
    dy = cast_operand(grad_output, "grad_output", x.dtype)
    check_ndim(dy, 4, "grad_output", "NCHW")
    O, Cg, KH, KW = _size4(weight_size, "weight_size")
    strides, dilations, pads = _geometry((O, Cg, KH, KW), stride, padding, dilation)
    dw = _backward._backprop_filter(x, (KH, KW, Cg, O), dy, strides, pads, "NCHW", dilations,
                                    positive_int(groups, "groups"), None, None,
                                    shape_name="weight_size", dy_name="grad_output")
    return np.ascontiguousarray(dw.transpose(3, 2, 0, 1))
