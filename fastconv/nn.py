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

from . import _backward, _ops
from ._validation import as_float_array, cast_operand, check_data_format, check_ndim

__all__ = ["conv2d", "relu", "max_pool2d", "bias_add", "depthwise_conv2d", "conv2d_transpose",
           "conv2d_backprop_input", "conv2d_backprop_filter", "max_pool_with_argmax"]


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


def _raw_padding(padding, explicit_paddings):
    """TensorFlow raw-op padding: 'SAME', 'VALID', or 'EXPLICIT' with 8 ``explicit_paddings``."""
    if isinstance(padding, str) and padding.upper() == "EXPLICIT":
        pads = np.asarray(explicit_paddings)
        if pads.size != 8:
            raise ValueError(f"explicit_paddings must hold 8 integers (4 [before, after] pairs "
                             f"in data_format order) with padding='EXPLICIT'; got "
                             f"{explicit_paddings!r}.")
        return pads.reshape(4, 2).tolist()
    if len(explicit_paddings):
        raise ValueError("explicit_paddings is used only with padding='EXPLICIT'; got "
                         f"padding={padding!r}.")
    return padding


def _groups(C, Cg, name):
    if Cg < 1 or C % Cg:
        raise ValueError(f"channel mismatch: {C} channels is not a multiple of "
                         f"{name}.shape[2]={Cg}.")
    return C // Cg


def conv2d_transpose(input, filters, output_shape, strides, padding="SAME", data_format="NHWC",
                     dilations=None, name=None):
    """``tf.nn.conv2d_transpose``: the gradient of :func:`conv2d` with respect to its input.

    ``filters`` is ``(KH, KW, C_out, C_in)``: the HWIO filters of the forward
    convolution that maps ``output_shape`` to ``input``'s shape.  As in
    :func:`conv2d` the groups are inferred (``output_shape``'s channels over
    ``filters.shape[2]``).  See :func:`fastconv.conv2d_transpose`.
    """
    w = np.asarray(filters)
    check_ndim(w, 4, "filters", "[KH, KW, C_out, C_in]")
    data_format = check_data_format(data_format)
    C = _backward._shape4(output_shape, "output_shape", data_format)[3]
    return _backward.conv2d_transpose(input, w, output_shape, strides, padding, data_format,
                                      dilations, groups=_groups(C, w.shape[2], "filters"))


def conv2d_backprop_input(input_sizes, filter, out_backprop, strides, padding,
                          use_cudnn_on_gpu=True, explicit_paddings=(), data_format="NHWC",
                          dilations=(1, 1, 1, 1), name=None):
    """``tf.raw_ops.Conv2DBackpropInput``: ``dL/dinput`` of :func:`conv2d` (the input gradient).

    ``padding`` is 'SAME', 'VALID' or 'EXPLICIT' (then ``explicit_paddings``
    holds 8 integers, ``[before, after]`` per dimension in ``data_format``
    order); ``use_cudnn_on_gpu`` is accepted and ignored.  Groups are inferred
    from ``input_sizes``' channels and ``filter.shape[2]``.
    """
    dy = as_float_array(out_backprop, "out_backprop")
    data_format = check_data_format(data_format)
    check_ndim(dy, 4, "out_backprop", data_format)
    w = cast_operand(filter, "filter", dy.dtype)
    check_ndim(w, 4, "filter", "HWIO: [KH, KW, C_in / groups, C_out]")
    nhwc = _backward._shape4(input_sizes, "input_sizes", data_format)
    return _backward._backprop_input(nhwc, w, dy, strides,
                                     _raw_padding(padding, explicit_paddings), data_format,
                                     dilations, _groups(nhwc[3], w.shape[2], "filter"), None, None)


def conv2d_backprop_filter(input, filter_sizes, out_backprop, strides, padding,
                           use_cudnn_on_gpu=True, explicit_paddings=(), data_format="NHWC",
                           dilations=(1, 1, 1, 1), name=None):
    """``tf.raw_ops.Conv2DBackpropFilter``: ``dL/dfilter`` of :func:`conv2d`, shape ``filter_sizes``.

    Arguments as for :func:`conv2d_backprop_input`; ``filter_sizes`` is the
    HWIO shape ``[KH, KW, C_in / groups, C_out]``.
    """
    x = as_float_array(input, "input")
    data_format = check_data_format(data_format)
    check_ndim(x, 4, "input", data_format)
    dy = cast_operand(out_backprop, "out_backprop", x.dtype)
    check_ndim(dy, 4, "out_backprop", data_format)
    fs = _backward._shape4(filter_sizes, "filter_sizes", "NHWC")  # plain order: KH, KW, Cg, O
    C = x.shape[3] if data_format == "NHWC" else x.shape[1]
    if fs[2] < 1 or C % fs[2]:
        raise ValueError(f"channel mismatch: input has {C} channels, which is not a multiple of "
                         f"filter_sizes[2]={fs[2]}.")
    return _backward._backprop_filter(x, fs, dy, strides,
                                      _raw_padding(padding, explicit_paddings), data_format,
                                      dilations, C // fs[2], None, None)


def max_pool_with_argmax(input, ksize, strides, padding, data_format="NHWC",
                         output_dtype=np.int64, include_batch_in_index=False, name=None):
    """``tf.nn.max_pool_with_argmax``: the max pool and the flat index of each maximum.

    The index is ``(h * W + w) * C + c`` (plus ``n * H * W * C`` with
    ``include_batch_in_index``), of dtype ``output_dtype`` (int32 or int64).
    Ties take the first maximum; unlike TensorFlow's kernel, a window holding
    NaN outputs NaN and points at it.  See
    :func:`fastconv.max_pool2d_with_argmax`.
    """
    dtype = np.dtype(getattr(output_dtype, "as_numpy_dtype", output_dtype))
    if dtype not in (np.dtype(np.int32), np.dtype(np.int64)):
        raise ValueError(f"output_dtype must be int32 or int64; got {output_dtype!r}.")
    out, argmax = _backward.max_pool2d_with_argmax(
        input, ksize, strides, padding, data_format,
        include_batch_in_index=include_batch_in_index)
    return out, argmax.astype(dtype, copy=False)
