"""``tf.nn`` names and signatures on NumPy arrays.

``import fastconv.nn as nn`` runs TensorFlow-style code as written::

    import numpy as np
    import fastconv.nn as nn

    image = np.random.rand(1, 64, 64, 1).astype(np.float32)      # NHWC
    kernel = np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], np.float32)
    kernel = kernel.reshape(3, 3, 1, 1)                             # HWIO
    image_filter = nn.conv2d(input=image, filters=kernel, strides=1, padding="SAME")
    image_detect = nn.relu(image_filter)
    image_condense = nn.max_pool2d(image_detect, ksize=2, strides=2, padding="SAME")

Each function has ``tf.nn``'s positional order, defaults and semantics
(``name=`` is accepted and ignored).  Computation runs on the process's
default backend and thread count (:func:`fastconv.set_backend`,
:func:`fastconv.set_num_threads`).
"""
import numpy as np

from . import _ops
from ._validation import as_float_array, cast_operand, check_ndim

__all__ = ["conv2d", "relu", "max_pool2d", "bias_add", "depthwise_conv2d"]


def conv2d(input, filters, strides, padding, data_format="NHWC", dilations=None, name=None):
    """``tf.nn.conv2d``: 2-D cross-correlation of NHWC (or NCHW) input with HWIO filters.

    As in TensorFlow, the number of groups is inferred: ``filters.shape[2]``
    may be any divisor of the input's channels (grouped convolution).
    See :func:`fastconv.conv2d` for the full semantics.
    """
    x = as_float_array(input, "input")
    check_ndim(x, 4, "input", data_format)
    w = np.asarray(filters)
    check_ndim(w, 4, "filters", "HWIO: [KH, KW, C_in / groups, C_out]")
    C = x.shape[3] if str(data_format).upper() == "NHWC" else x.shape[1]
    Cg = w.shape[2]
    if Cg < 1 or C % Cg:
        raise ValueError(f"channel mismatch: input has {C} channels, which is not a multiple "
                         f"of filters.shape[2]={Cg} (filters shape {w.shape}).")
    return _ops.conv2d(x, w, strides, padding, data_format,
                       1 if dilations is None else dilations, groups=C // Cg)


def relu(features, name=None):
    """``tf.nn.relu``: ``max(features, 0)``; NaN stays NaN, -inf becomes 0."""
    return _ops.relu(features)


def max_pool2d(input, ksize, strides, padding, data_format="NHWC", name=None):
    """``tf.nn.max_pool2d``: max over windows; padding is never picked.

    Unlike TensorFlow's CPU kernel, NaN propagates (as in NumPy and PyTorch).
    """
    return _ops.max_pool2d(input, ksize, strides, padding, data_format)


def bias_add(value, bias, data_format=None, name=None):
    """``tf.nn.bias_add``: add a 1-D ``bias`` along the channel axis.

    The channel axis is the last one (``data_format`` None or ``"N...C"``,
    e.g. ``"NHWC"``) or axis 1 (``"NC..."``, e.g. ``"NCHW"``).
    """
    x = as_float_array(value, "value")
    if x.ndim < 2:
        raise ValueError(f"value must be at least 2-D; got shape {x.shape}.")
    b = cast_operand(bias, "bias", x.dtype)
    if b.ndim != 1:
        raise ValueError(f"bias must be 1-D; got shape {b.shape}.")
    if data_format is None or (isinstance(data_format, str) and data_format.startswith("N")
                               and data_format.endswith("C")):
        axis = x.ndim - 1
    elif isinstance(data_format, str) and data_format.startswith("NC"):
        axis = 1
    else:
        raise ValueError(f"data_format must be None, 'N...C' (e.g. 'NHWC') or 'NC...' "
                         f"(e.g. 'NCHW'); got {data_format!r}.")
    if b.shape[0] != x.shape[axis]:
        raise ValueError(f"bias has {b.shape[0]} elements but value has {x.shape[axis]} "
                         f"channels (axis {axis} of shape {x.shape}).")
    shape = [1] * x.ndim
    shape[axis] = -1
    return x + b.reshape(shape)


def depthwise_conv2d(input, filter, strides, padding, data_format=None, dilations=None,
                     name=None):
    """``tf.nn.depthwise_conv2d``: each input channel convolved with its own filters.

    ``filter`` has shape ``(KH, KW, C_in, M)`` (M = channel multiplier); the
    output has ``C_in * M`` channels, channel ``c * M + m`` being input channel
    ``c`` filtered by ``filter[:, :, c, m]``.  ``dilations`` is the 2-element
    ``rate`` of TensorFlow.
    """
    data_format = "NHWC" if data_format is None else data_format
    x = as_float_array(input, "input")
    check_ndim(x, 4, "input", data_format)
    w = cast_operand(filter, "filter", x.dtype)
    check_ndim(w, 4, "filter", "[KH, KW, C_in, channel_multiplier]")
    KH, KW, C, M = w.shape
    C_x = x.shape[3] if str(data_format).upper() == "NHWC" else x.shape[1]
    if C != C_x:
        raise ValueError(f"channel mismatch: input has {C_x} channels but filter.shape[2] "
                         f"is {C} (filter shape {w.shape}).")
    return _ops.conv2d(x, w.reshape(KH, KW, 1, C * M), strides, padding, data_format,
                       1 if dilations is None else dilations, groups=C)
