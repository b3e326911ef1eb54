"""Keras-style layers for :mod:`fastconv.models`, computed with fastconv kernels.

Each layer knows its output shape (without the batch axis), its weights in
Keras order and how to run forward (inference only) on float32 NHWC batches.
Argument names and defaults follow ``keras.layers``; arguments fastconv cannot
honour raise ``ValueError`` naming the layer and the argument.
"""
import numbers

import numpy as np

from ._ops import conv2d, max_pool2d, relu
from ._shapes import output_shape
from ._validation import check_layer_activation, positive_int, spatial_pair

__all__ = ["Layer", "InputLayer", "Input", "Conv2D", "MaxPooling2D", "Flatten", "Dense",
           "GlobalAveragePooling2D", "ReLU", "Activation", "Softmax", "Dropout",
           "ACTIVATIONS", "INITIALIZERS"]

DTYPE = np.float32
#: activation names a layer accepts (None means "linear")
ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax")
#: weight initialisers a layer accepts by name
INITIALIZERS = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "zeros", "ones")


# --------------------------------------------------------------------------- helpers
def apply_activation(name, x):
    """Apply activation ``name`` to the float32 array ``x`` in place; return ``x``."""
    if name == "linear":
        return x
    if name == "relu":
        np.maximum(x, 0, out=x)
    elif name == "tanh":
        np.tanh(x, out=x)
    elif name == "sigmoid":
        with np.errstate(over="ignore"):
            np.negative(x, out=x)
            np.exp(x, out=x)
            x += 1
            np.reciprocal(x, out=x)
    elif name == "softmax":
        softmax_(x, axis=-1)
    return x


def softmax_(x, axis=-1):
    """Numerically stable softmax of ``x`` along ``axis``, in place."""
    x -= x.max(axis=axis, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=axis, keepdims=True)
    return x


def _check_padding(padding, where):
    if isinstance(padding, str) and padding.lower() in ("valid", "same"):
        return padding.lower()
    raise ValueError(f"{where}: padding must be 'valid' or 'same'; got {padding!r}.")


def _check_data_format(data_format, where):
    if data_format in (None, "channels_last"):
        return "channels_last"
    raise ValueError(f"{where}: data_format={data_format!r} is not supported; fastconv.models "
                     f"works on channels_last (NHWC) batches only.")


def _check_initializer(init, what, where):
    if isinstance(init, str) and init.lower() in INITIALIZERS:
        return init.lower()
    raise ValueError(f"{where}: {what}={init!r} is not supported; use one of "
                     f"{', '.join(INITIALIZERS)}.")


def _initial(init, shape, fan_in, fan_out, rng):
    """Weights like Keras's initialisers of the same name (float32)."""
    if init == "zeros":
        return np.zeros(shape, DTYPE)
    if init == "ones":
        return np.ones(shape, DTYPE)
    if init == "glorot_uniform":
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, shape).astype(DTYPE)
    if init == "he_uniform":
        limit = np.sqrt(6.0 / fan_in)
        return rng.uniform(-limit, limit, shape).astype(DTYPE)
    # normal initialisers: Keras draws from a normal truncated at 2 standard deviations,
    # with the scale corrected by 0.87962566 for the truncation
    scale = 2.0 / (fan_in + fan_out) if init == "glorot_normal" else 2.0 / fan_in
    std = np.sqrt(scale) / 0.87962566103423978
    w = rng.standard_normal(shape)
    bad = np.abs(w) > 2
    while bad.any():
        w[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(w) > 2
    return (w * std).astype(DTYPE)


def shape_str(shape):
    return "(" + ", ".join(["None"] + [str(s) for s in shape]) + ")"


# --------------------------------------------------------------------------- base class
class Layer:
    """Base of the fastconv.models layers (inference only).

    Attributes
    ----------
    name : str
        Set from ``name=`` or, when the layer is added to a model, from the
        Keras-style default (``conv2d``, ``conv2d_1``...).
    input_shape, output_shape : tuple or None
        Shapes without the batch axis, known once built.
    """

    #: the Keras default name stem
    default_name = "layer"

    def __init__(self, *, name=None, input_shape=None):
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string; got {type(name).__name__}.")
        self.name = name
        self.input_shape = None
        self.output_shape = None
        self._declared_input_shape = None
        if input_shape is not None:
            self._declared_input_shape = check_shape(input_shape, f"{type(self).__name__}: "
                                                                   f"input_shape")
        self._weights = []

    @property
    def built(self):
        return self.output_shape is not None

    def _where(self):
        return f"{type(self).__name__} {self.name!r}" if self.name else type(self).__name__

    def build(self, input_shape, rng=None):
        """Fix the input shape (no batch axis), create weights, set ``output_shape``."""
        input_shape = tuple(int(s) for s in input_shape)
        self.output_shape = self.compute_output_shape(input_shape)
        self.input_shape = input_shape
        self._create_weights(input_shape, rng if rng is not None else np.random.default_rng())
        return self.output_shape

    def compute_output_shape(self, input_shape):
        return input_shape

    def _create_weights(self, input_shape, rng):
        self._weights = []

    def _weight_shapes(self):
        return [w.shape for w in self._weights]

    @property
    def weights(self):
        """The layer's weight arrays (not copies)."""
        return list(self._weights)

    def get_weights(self):
        """Copies of the weights, in Keras order."""
        return [w.copy() for w in self._weights]

    def set_weights(self, weights):
        """Replace the weights; shapes must match :meth:`get_weights`'s."""
        weights = list(weights)
        expected = self._weight_shapes()
        if len(weights) != len(expected):
            raise ValueError(f"{self._where()} expects {len(expected)} weight arrays "
                             f"(shapes {expected}); got {len(weights)}.")
        new = []
        for i, (w, shape) in enumerate(zip(weights, expected)):
            arr = np.asarray(w)
            if arr.dtype.kind not in "fiu":
                raise TypeError(f"{self._where()}: weight {i} has dtype {arr.dtype}; expected "
                                f"real numbers.")
            if arr.shape != tuple(shape):
                raise ValueError(f"{self._where()}: weight {i} must have shape {tuple(shape)}; "
                                 f"got {arr.shape}.")
            new.append(np.array(arr, dtype=DTYPE, order="C"))
        self._weights = new

    def count_params(self):
        """Number of weights (scalars)."""
        return int(sum(w.size for w in self._weights))

    def call(self, x, backend=None, num_threads=None):
        """Forward pass on a float32 batch; may modify ``x`` in place."""
        return x

    def __repr__(self):
        shape = f", output_shape={shape_str(self.output_shape)}" if self.built else ""
        return f"<{type(self).__name__} name={self.name!r}{shape}>"


def check_shape(shape, where):
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"{where} must be a tuple of ints (without the batch axis); got "
                        f"{shape!r}.") from None
    if not dims:
        raise ValueError(f"{where} must have at least one dimension.")
    out = []
    for d in dims:
        if d is None:
            raise ValueError(f"{where}: every dimension must be known (fastconv.models builds "
                             f"fixed shapes); got {shape!r}.")
        out.append(positive_int(d, where))
    return tuple(out)


# --------------------------------------------------------------------------- layers
class InputLayer(Layer):
    """Declares the input shape (without the batch axis), like ``keras.Input``."""

    default_name = "input_layer"

    def __init__(self, shape=None, *, name=None, input_shape=None, batch_size=None):
        shape = shape if shape is not None else input_shape
        if shape is None:
            raise ValueError("InputLayer: give shape=(H, W, C) (without the batch axis).")
        super().__init__(name=name, input_shape=shape)


def Input(shape, *, name=None, batch_size=None):
    """Keras's ``Input(shape)`` for a :class:`~fastconv.models.Sequential` model."""
    return InputLayer(shape, name=name, batch_size=batch_size)


class Conv2D(Layer):
    """2-D convolution (cross-correlation) over NHWC input, like ``keras.layers.Conv2D``.

    Parameters
    ----------
    filters : int
        Number of output channels (feature maps).
    kernel_size : int or (int, int)
    strides : int or (int, int)
    padding : {'valid', 'same'}
        TensorFlow's rules ('same' gives ``ceil(H / stride)``).
    data_format : None or 'channels_last'
    dilation_rate : int or (int, int)
    groups : int
    activation : str or None
        One of ``linear`` (None), ``relu``, ``sigmoid``, ``tanh``,
        ``softmax``; ``relu`` runs fused in the convolution.
    use_bias : bool
    kernel_initializer, bias_initializer : str
        Default glorot_uniform and zeros, as Keras.
    input_shape : tuple, optional
        ``(H, W, C)`` when this is the model's first layer.
    name : str, optional

    Notes
    -----
    Weights (Keras order): kernel ``(KH, KW, C_in / groups, filters)`` (HWIO),
    then bias ``(filters,)`` when ``use_bias``.
    """

    default_name = "conv2d"

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), groups=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", *,
                 input_shape=None, name=None):
        super().__init__(name=name, input_shape=input_shape)
        where = "Conv2D"
        self.filters = positive_int(filters, "Conv2D filters")
        self.kernel_size = spatial_pair(kernel_size, "Conv2D kernel_size")
        self.strides = spatial_pair(strides, "Conv2D strides")
        self.padding = _check_padding(padding, where)
        self.data_format = _check_data_format(data_format, where)
        self.dilation_rate = spatial_pair(dilation_rate, "Conv2D dilation_rate")
        self.groups = positive_int(groups, "Conv2D groups")
        if self.filters % self.groups:
            raise ValueError(f"Conv2D: filters={self.filters} must be divisible by "
                             f"groups={self.groups}.")
        self.activation = check_layer_activation(activation, ACTIVATIONS, where)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _check_initializer(kernel_initializer, "kernel_initializer",
                                                     where)
        self.bias_initializer = _check_initializer(bias_initializer, "bias_initializer", where)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self._where()} expects 3-D input (H, W, C) per example; got "
                             f"shape {shape_str(input_shape)}.")
        H, W, C = input_shape
        if C % self.groups:
            raise ValueError(f"{self._where()}: input channels {C} must be divisible by "
                             f"groups={self.groups}.")
        try:
            _, OH, OW, O = output_shape((1, H, W, C), self.kernel_size, self.strides,
                                        self.padding.upper(), dilations=self.dilation_rate,
                                        out_channels=self.filters)
        except ValueError as exc:
            raise ValueError(f"{self._where()}: input {H}x{W} is too small for this layer "
                             f"({exc})") from None
        return OH, OW, O

    def _create_weights(self, input_shape, rng):
        KH, KW = self.kernel_size
        cin = input_shape[2] // self.groups
        kshape = (KH, KW, cin, self.filters)
        kernel = _initial(self.kernel_initializer, kshape, KH * KW * cin, KH * KW * self.filters,
                          rng)
        self._weights = [kernel]
        if self.use_bias:
            self._weights.append(_initial(self.bias_initializer, (self.filters,), 1, 1, rng))

    def call(self, x, backend=None, num_threads=None, fuse_relu=False, out=None):
        bias = self._weights[1] if self.use_bias else None
        relu_now = fuse_relu or self.activation == "relu"
        y = conv2d(x, self._weights[0], self.strides, self.padding.upper(),
                   dilations=self.dilation_rate, groups=self.groups, bias=bias,
                   activation="relu" if relu_now else None, out=out, backend=backend,
                   num_threads=num_threads)
        if self.activation != "relu":
            apply_activation(self.activation, y)
        return y


class MaxPooling2D(Layer):
    """Maximum pooling over NHWC input, like ``keras.layers.MaxPooling2D``.

    Parameters
    ----------
    pool_size : int or (int, int)
    strides : int or (int, int), optional
        Default ``pool_size``.
    padding : {'valid', 'same'}
    data_format : None or 'channels_last'
    name : str, optional
    """

    default_name = "max_pooling2d"

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, *,
                 input_shape=None, name=None):
        super().__init__(name=name, input_shape=input_shape)
        self.pool_size = spatial_pair(pool_size, "MaxPooling2D pool_size")
        self.strides = (self.pool_size if strides is None
                        else spatial_pair(strides, "MaxPooling2D strides"))
        self.padding = _check_padding(padding, "MaxPooling2D")
        self.data_format = _check_data_format(data_format, "MaxPooling2D")

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self._where()} expects 3-D input (H, W, C) per example; got "
                             f"shape {shape_str(input_shape)}.")
        try:
            _, OH, OW, C = output_shape((1, *input_shape), self.pool_size, self.strides,
                                        self.padding.upper())
        except ValueError as exc:
            raise ValueError(f"{self._where()}: input {input_shape[0]}x{input_shape[1]} is too "
                             f"small for pool_size {self.pool_size} ({exc})") from None
        return OH, OW, C

    def call(self, x, backend=None, num_threads=None, out=None):
        return max_pool2d(x, self.pool_size, self.strides, self.padding.upper(), out=out,
                          backend=backend, num_threads=num_threads)


class Flatten(Layer):
    """Flatten each example in (h, w, c) order -- Keras's order on channels_last data."""

    default_name = "flatten"

    def __init__(self, data_format=None, *, input_shape=None, name=None):
        super().__init__(name=name, input_shape=input_shape)
        self.data_format = _check_data_format(data_format, "Flatten")

    def compute_output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def call(self, x, backend=None, num_threads=None):
        return x.reshape(x.shape[0], -1)


class Dense(Layer):
    """Fully connected layer on the last axis, like ``keras.layers.Dense``.

    Parameters
    ----------
    units : int
    activation : str or None
    use_bias : bool
    kernel_initializer, bias_initializer : str
    input_shape : tuple, optional
    name : str, optional

    Notes
    -----
    Weights (Keras order): kernel ``(in, units)`` then bias ``(units,)``.
    The product is a float32 ``x @ kernel`` (BLAS).
    """

    default_name = "dense"

    def __init__(self, units, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", *,
                 input_shape=None, name=None):
        super().__init__(name=name, input_shape=input_shape)
        self.units = positive_int(units, "Dense units")
        self.activation = check_layer_activation(activation, ACTIVATIONS, "Dense")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _check_initializer(kernel_initializer, "kernel_initializer",
                                                     "Dense")
        self.bias_initializer = _check_initializer(bias_initializer, "bias_initializer", "Dense")

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def _create_weights(self, input_shape, rng):
        n_in = input_shape[-1]
        self._weights = [_initial(self.kernel_initializer, (n_in, self.units), n_in, self.units,
                                  rng)]
        if self.use_bias:
            self._weights.append(_initial(self.bias_initializer, (self.units,), 1, 1, rng))

    def call(self, x, backend=None, num_threads=None):
        y = x @ self._weights[0]
        if self.use_bias:
            y += self._weights[1]
        return apply_activation(self.activation, y)


class GlobalAveragePooling2D(Layer):
    """Mean over height and width, like ``keras.layers.GlobalAveragePooling2D``."""

    default_name = "global_average_pooling2d"

    def __init__(self, data_format=None, keepdims=False, *, input_shape=None, name=None):
        super().__init__(name=name, input_shape=input_shape)
        self.data_format = _check_data_format(data_format, "GlobalAveragePooling2D")
        self.keepdims = bool(keepdims)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self._where()} expects 3-D input (H, W, C) per example; got "
                             f"shape {shape_str(input_shape)}.")
        return (1, 1, input_shape[2]) if self.keepdims else (input_shape[2],)

    def call(self, x, backend=None, num_threads=None):
        return x.mean(axis=(1, 2), dtype=DTYPE, keepdims=self.keepdims)


class ReLU(Layer):
    """Rectified linear unit layer, like ``keras.layers.ReLU``.

    ``f(x) = max_value`` for ``x >= max_value``, ``x`` for
    ``threshold <= x < max_value``, ``negative_slope * (x - threshold)``
    otherwise.  With the defaults this is :func:`fastconv.relu`.
    """

    default_name = "re_lu"

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, *, input_shape=None,
                 name=None):
        super().__init__(name=name, input_shape=input_shape)
        for what, v in (("negative_slope", negative_slope), ("threshold", threshold)):
            if not isinstance(v, numbers.Real) or not np.isfinite(v):
                raise ValueError(f"ReLU: {what} must be a finite number; got {v!r}.")
        if max_value is not None and (not isinstance(max_value, numbers.Real) or max_value < 0):
            raise ValueError(f"ReLU: max_value must be None or a number >= 0; got {max_value!r}.")
        if negative_slope < 0:
            raise ValueError(f"ReLU: negative_slope must be >= 0; got {negative_slope!r}.")
        self.max_value = None if max_value is None else float(max_value)
        self.negative_slope = float(negative_slope)
        self.threshold = float(threshold)

    @property
    def is_plain(self):
        """True when this is the plain ``max(x, 0)``."""
        return self.max_value is None and self.negative_slope == 0 and self.threshold == 0

    def call(self, x, backend=None, num_threads=None):
        if self.is_plain:
            return relu(x, out=x, backend=backend, num_threads=num_threads)
        below = x < self.threshold
        y = np.where(below, DTYPE(self.negative_slope) * (x - DTYPE(self.threshold)), x)
        if self.max_value is not None:
            np.minimum(y, DTYPE(self.max_value), out=y)
        return y.astype(DTYPE, copy=False)


class Activation(Layer):
    """Apply a named activation, like ``keras.layers.Activation``."""

    default_name = "activation"

    def __init__(self, activation, *, input_shape=None, name=None):
        super().__init__(name=name, input_shape=input_shape)
        self.activation = check_layer_activation(activation, ACTIVATIONS, "Activation")

    def call(self, x, backend=None, num_threads=None):
        if self.activation == "relu":
            return relu(x, out=x, backend=backend, num_threads=num_threads)
        return apply_activation(self.activation, x)


class Softmax(Layer):
    """Softmax along ``axis``, like ``keras.layers.Softmax``."""

    default_name = "softmax"

    def __init__(self, axis=-1, *, input_shape=None, name=None):
        super().__init__(name=name, input_shape=input_shape)
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise ValueError(f"Softmax: axis must be an integer; got {axis!r}.")
        self.axis = int(axis)

    def compute_output_shape(self, input_shape):
        ndim = len(input_shape) + 1
        if not -ndim <= self.axis < ndim or self.axis in (0, -ndim):
            raise ValueError(f"{self._where()}: axis={self.axis} is not a feature axis of input "
                             f"shape {shape_str(input_shape)}.")
        return input_shape

    def call(self, x, backend=None, num_threads=None):
        return softmax_(x, axis=self.axis)


class Dropout(Layer):
    """Inverted dropout, like ``keras.layers.Dropout``.

    In training (:meth:`~fastconv.models.Sequential.fit`,
    ``train_on_batch``) each input is zeroed with probability ``rate`` and
    the others are scaled by ``1 / (1 - rate)``, so the expected output equals
    the input; at inference (``predict``, ``evaluate``) the layer passes its
    input through.

    Parameters
    ----------
    rate : float
        In ``[0, 1)``: the fraction of inputs dropped.
    noise_shape : None
        Accepted for Keras compatibility; only None (an independent draw per
        element) is supported.
    seed : int, optional
        Seeds this layer's own random stream: the masks are then the same
        for any model seed.  Without it the masks come from the model's seed
        (with shuffling), so a seeded model still trains reproducibly.  The
        masks never depend on ``num_threads``.
    """

    default_name = "dropout"

    def __init__(self, rate, noise_shape=None, seed=None, *, input_shape=None, name=None):
        super().__init__(name=name, input_shape=input_shape)
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate < 1:
            raise ValueError(f"Dropout: rate must be a number in [0, 1); got {rate!r}.")
        if noise_shape is not None:
            raise ValueError(f"Dropout: noise_shape={noise_shape!r} is not supported; "
                             f"fastconv.models draws one mask value per element "
                             f"(noise_shape=None).")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                                 or seed < 0):
            raise ValueError(f"Dropout: seed must be None or an integer >= 0; got {seed!r}.")
        self.rate = float(rate)
        self.noise_shape = None
        self.seed = None if seed is None else int(seed)
        self._mask_rng = None

    def mask_rng(self, model_rng):
        """The generator the training masks are drawn from.

        This layer's own stream (created from ``seed`` on first use, then
        continued from call to call) when the layer has a seed, else
        ``model_rng``.
        """
        if self.seed is None:
            return model_rng
        if self._mask_rng is None:
            self._mask_rng = np.random.default_rng(self.seed)
        return self._mask_rng
