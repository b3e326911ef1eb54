"""Keras-style ``Sequential`` convnets that predict and train on fastconv kernels.

The lessons build their classifiers with ``keras.Sequential``; this module
builds the same models with the same argument names, prints the same
summary, keeps weights in the same order, and predicts with
:func:`fastconv.conv2d` (bias and ReLU fused), :func:`fastconv.max_pool2d` and
float32 matrix products -- no TensorFlow needed::

    >>> from fastconv.models import Sequential, Conv2D, MaxPooling2D, Flatten, Dense
    >>> model = Sequential([
    ...     Conv2D(64, 3, activation="relu", input_shape=(28, 28, 1)),
    ...     MaxPooling2D(2),
    ...     Conv2D(64, 3, activation="relu"),
    ...     MaxPooling2D(2),
    ...     Flatten(),
    ...     Dense(128, activation="relu"),
    ...     Dense(10, activation="softmax"),
    ... ], seed=0)
    >>> model.count_params()
    243786

A trained Keras model converts with :func:`from_keras` (weights copied,
predictions equal to Keras's within float32 rounding); :meth:`Sequential.feature_maps`
returns every layer's activations for pictures (see :mod:`fastconv.viz`).

Models train with :meth:`Sequential.compile` and :meth:`Sequential.fit`
(optimizers in :mod:`fastconv.models.optimizers`, losses in
:mod:`fastconv.models.losses`); gradients come from
:func:`fastconv.conv2d_backward` and the other backward ops.

Only ``channels_last`` (NHWC) data is supported, as on Keras's CPU backend.
"""
import threading

import numpy as np

from .._layers import (ACTIVATIONS, DTYPE, Activation, Conv2D, Dense, Dropout, Flatten,
                      GlobalAveragePooling2D, Input, InputLayer, Layer, MaxPooling2D, ReLU,
                      Softmax, check_shape, shape_str)
from .._threads import single_threaded_blas
from .._validation import positive_int
from . import _backprop, callbacks, losses, optimizers
from .callbacks import Callback, EarlyStopping
from ._training import History, TrainingMixin
from .optimizers import SGD, Adam, Optimizer, RMSprop

__all__ = ["Sequential", "Layer", "Input", "InputLayer", "Conv2D", "MaxPooling2D", "Flatten",
           "Dense", "GlobalAveragePooling2D", "ReLU", "Activation", "Softmax", "Dropout",
           "from_keras", "ACTIVATIONS", "History", "Optimizer", "SGD", "Adam", "RMSprop",
           "optimizers", "losses", "callbacks", "Callback", "EarlyStopping"]


class Sequential(TrainingMixin):
    """A linear stack of layers, like ``keras.Sequential``.

    Parameters
    ----------
    layers : list of Layer, optional
        Added in order (see :meth:`add`).  The input shape comes from an
        :func:`Input` first, from the first layer's ``input_shape=``, or from
        :meth:`build`.
    name : str
        Default ``"sequential"``.
    seed : int or numpy.random.Generator, optional
        Seeds the weight initialisers (Keras's defaults: glorot-uniform
        kernels, zero biases), then the shuffling and dropout of
        :meth:`fit`, so that a seed gives reproducible weights and training.
    """

    def __init__(self, layers=None, name="sequential", *, seed=None):
        self.name = str(name)
        self.layers = []
        self._input_shape = None
        self._rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self._name_counts = {}
        for layer in layers or []:
            self.add(layer)

    # ----------------------------------------------------------------- structure
    def add(self, layer):
        """Append a layer (an :class:`InputLayer` only sets the input shape)."""
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add expects a fastconv.models layer (Conv2D, Dense...); "
                            f"got {type(layer).__name__}. To convert a Keras model use "
                            f"fastconv.models.from_keras(model).")
        if any(layer is other for other in self.layers):
            raise ValueError(f"layer {layer.name!r} is already in this model.")
        if isinstance(layer, InputLayer):
            if self.layers or self._input_shape is not None:
                raise ValueError("an Input/InputLayer must come first in a Sequential model.")
            self._input_shape = layer._declared_input_shape
            return
        if layer._declared_input_shape is not None:
            if self.layers:
                raise ValueError(f"input_shape= is only allowed on the first layer; layer "
                                 f"{len(self.layers)} ({type(layer).__name__}) has it.")
            if self._input_shape is None:
                self._input_shape = layer._declared_input_shape
        was_built = self.built
        self._assign_name(layer)
        self.layers.append(layer)
        if was_built or (len(self.layers) == 1 and self._input_shape is not None):
            self._build_from(len(self.layers) - 1)

    def _assign_name(self, layer):
        if layer.name is None:
            stem = layer.default_name
            k = self._name_counts.get(stem, 0)
            layer.name = stem if k == 0 else f"{stem}_{k}"
            self._name_counts[stem] = k + 1
        if any(other.name == layer.name for other in self.layers):
            raise ValueError(f"layer name {layer.name!r} is already used in this model; "
                             f"names must be unique.")

    def _build_from(self, start):
        shape = self._input_shape if start == 0 else self.layers[start - 1].output_shape
        for layer in self.layers[start:]:
            if layer.built and layer.input_shape == shape:
                shape = layer.output_shape
                continue
            shape = layer.build(shape, self._rng)

    @property
    def built(self):
        """True once every layer knows its shapes and has weights."""
        return bool(self.layers) and all(layer.built for layer in self.layers) and \
            self._input_shape is not None

    def build(self, input_shape=None):
        """Create the weights for an input shape that includes the batch axis.

        Parameters
        ----------
        input_shape : tuple, optional
            ``(None, H, W, C)`` (Keras convention: batch first, any value);
            optional when the model already knows its input shape.
        """
        if input_shape is not None:
            dims = tuple(input_shape)
            if len(dims) < 2:
                raise ValueError(f"build(input_shape) needs the batch axis first, e.g. "
                                 f"(None, 28, 28, 1); got {input_shape!r}.")
            shape = check_shape(dims[1:], "input_shape")
            if self._input_shape is not None and shape != self._input_shape and self.built:
                raise ValueError(f"model {self.name!r} is built for input shape "
                                 f"{shape_str(self._input_shape)}; got {input_shape!r}.")
            self._input_shape = shape
        if self._input_shape is None:
            raise ValueError(f"model {self.name!r} does not know its input shape: give the "
                             f"first layer input_shape=(H, W, C), start with Input(shape), or "
                             f"call build((None, H, W, C)).")
        if not self.layers:
            raise ValueError(f"model {self.name!r} has no layers.")
        self._build_from(0)

    def _ensure_built(self, what):
        if not self.built:
            if self._input_shape is None:
                raise ValueError(f"{what}: model {self.name!r} has not been built yet; give the "
                                 f"first layer input_shape=(H, W, C), start with Input(shape), "
                                 f"or call build((None, H, W, C)) first.")
            self.build()

    @property
    def input_shape(self):
        """``(None, H, W, C)``, or None when unknown."""
        return None if self._input_shape is None else (None, *self._input_shape)

    @property
    def output_shape(self):
        """``(None, ...)`` of the last layer."""
        self._ensure_built("output_shape")
        return (None, *self.layers[-1].output_shape)

    def get_layer(self, name=None, index=None):
        """A layer by name or by index."""
        if index is not None:
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"no layer named {name!r}; layers: "
                         f"{', '.join(layer.name for layer in self.layers)}.")

    # ----------------------------------------------------------------- weights
    def count_params(self):
        """Total number of weights."""
        self._ensure_built("count_params")
        return sum(layer.count_params() for layer in self.layers)

    def get_weights(self):
        """Copies of every layer's weights, in Keras order (layer by layer: kernel, bias)."""
        self._ensure_built("get_weights")
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights):
        """Set every weight from a list in :meth:`get_weights` order (e.g. Keras's)."""
        self._ensure_built("set_weights")
        weights = list(weights)
        expected = sum(len(layer.weights) for layer in self.layers)
        if len(weights) != expected:
            raise ValueError(f"model {self.name!r} has {expected} weight arrays; got "
                             f"{len(weights)}.")
        i = 0
        for layer in self.layers:
            n = len(layer.weights)
            layer.set_weights(weights[i:i + n])
            i += n

    # ----------------------------------------------------------------- summary
    def summary(self, line_length=None, print_fn=None):
        """Print the layers, output shapes and parameter counts as Keras does.

        Parameters
        ----------
        line_length : int, optional
            Total width (default: wide enough for the content, at least 65).
        print_fn : callable, optional
            Called with each line (default :func:`print`).
        """
        self._ensure_built("summary")
        print_fn = print if print_fn is None else print_fn
        rows = [(f"{layer.name} ({type(layer).__name__})", shape_str(layer.output_shape),
                 f"{layer.count_params():,}") for layer in self.layers]
        heads = ("Layer (type)", "Output Shape", "Param #")
        w0 = max(29, max(len(r[0]) for r in rows) + 2)
        w1 = max(26, max(len(r[1]) for r in rows) + 2)
        w2 = max(10, max(len(r[2]) for r in rows) + 1)
        if line_length is not None:
            w0 = max(w0, positive_int(line_length, "line_length") - w1 - w2)
        width = w0 + w1 + w2
        total = self.count_params()
        lines = [f'Model: "{self.name}"', "_" * width,
                 heads[0].ljust(w0) + heads[1].ljust(w1) + heads[2].rjust(w2), "=" * width]
        for k, (a, b, c) in enumerate(rows):
            lines.append(a.ljust(w0) + b.ljust(w1) + c.rjust(w2))
            lines.append("_" * width if k < len(rows) - 1 else "=" * width)
        lines += [f"Total params: {total:,} ({_human_bytes(total * 4)})",
                  f"Trainable params: {total:,} ({_human_bytes(total * 4)})",
                  "Non-trainable params: 0 (0.00 B)", "_" * width]
        for line in lines:
            print_fn(line)

    # ----------------------------------------------------------------- inference
    def _as_input(self, x, what):
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"{what}: x has dtype {arr.dtype}; expected real numbers.")
        arr = np.ascontiguousarray(arr, dtype=DTYPE)  # no copy when already float32 C-order
        if self._input_shape is None:
            self.build((None, *arr.shape[1:]))
        self._ensure_built(what)
        if arr.shape[1:] != self._input_shape:
            raise ValueError(f"{what}: model {self.name!r} expects input of shape "
                             f"{shape_str(self._input_shape)} (batch first); got {arr.shape}.")
        return arr

    def _plan(self):
        """``(layer, fuse_relu)`` pairs to run.

        A plain ReLU or Activation('relu') right after a linear Conv2D is fused
        into that convolution; Dropout (identity at inference) is skipped.
        """
        plan = []
        i = 0
        layers = self.layers
        while i < len(layers):
            layer = layers[i]
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            if isinstance(layer, Dropout):
                i += 1
                continue
            if (isinstance(layer, Conv2D) and layer.activation == "linear" and _is_plain_relu(nxt)):
                plan.append((layer, True))
                i += 2
                continue
            plan.append((layer, False))
            i += 1
        return plan

    def _forward(self, x, plan, backend, num_threads, workspace=None):
        """Run ``plan`` on ``x``.

        With a ``workspace`` dict, convolution and pooling layers write into
        buffers kept there (keyed by layer) and reused by later calls, which
        skips the page faults of fresh multi-megabyte outputs; only
        :meth:`predict`, which copies the result out, passes one.
        """
        owned = False  # never modify the caller's array in place
        for layer, fuse in plan:
            kwargs = {}
            if workspace is not None and isinstance(layer, (Conv2D, MaxPooling2D)):
                kwargs["out"] = _buffer(workspace, layer, (x.shape[0], *layer.output_shape))
            if fuse:
                x = layer.call(x, backend, num_threads, fuse_relu=True, **kwargs)
            elif not owned and _works_in_place(layer):
                x = layer.call(x.copy(), backend, num_threads)
            else:
                x = layer.call(x, backend, num_threads, **kwargs)
            owned = owned or not isinstance(layer, (Flatten, Dropout))  # those return views
        return x

    def predict(self, x, batch_size=32, verbose=0, *, backend=None, num_threads=None):
        """Outputs for a batch of inputs, computed ``batch_size`` examples at a time.

        Parameters
        ----------
        x : array_like, ``(N, H, W, C)``
            Cast once to float32 (no copy when it already is, C-contiguous).
        batch_size : int
            Examples per forward pass (Keras's default 32).
        verbose : int
            Accepted for Keras compatibility; nothing is printed.
        backend, num_threads
            As for :func:`fastconv.conv2d`.

        Returns
        -------
        ndarray, float32, ``(N, ...)``
        """
        x = self._as_input(x, "predict")
        batch_size = positive_int(batch_size, "batch_size")
        plan = self._plan()
        n = x.shape[0]
        out = np.empty((n, *self.layers[-1].output_shape), dtype=DTYPE)
        workspace = self._workspace()
        # Dense layers run on one BLAS thread: a multithreaded OpenBLAS call leaves its idle
        # worker spinning for a while, taking a core from the next batch's convolutions.
        with single_threaded_blas():
            for start in range(0, n, batch_size):
                out[start:start + batch_size] = self._forward(x[start:start + batch_size], plan,
                                                              backend, num_threads, workspace)
        return out

    def _workspace(self, kind="buffers"):
        """This Python thread's reusable arrays: layer outputs of :meth:`_forward`
        (``kind="buffers"``), or the training passes' (``"training"``)."""
        local = self.__dict__.setdefault("_local", threading.local())
        if not hasattr(local, kind):
            setattr(local, kind, {})
        return getattr(local, kind)

    def _value_and_grads(self, x, y, weights=None, *, training=True, need_grads=True,
                         backend=None, num_threads=None):
        """``(loss, predictions, grads)`` on one batch (see :func:`._backprop.value_and_grads`).

        The intermediate results go to buffers this Python thread keeps from
        one batch to the next; the predictions and gradients returned are new
        arrays.
        """
        ctx = _backprop.Pass(backend, num_threads, self._workspace("training"))
        return _backprop.value_and_grads(self, x, y, weights, training=training,
                                         need_grads=need_grads, ctx=ctx)

    def __getstate__(self):
        """Everything but the per-thread buffers of :meth:`predict`, which cannot be pickled.

        A model that has predicted can so be copied or sent to other
        processes (Dask workers); the copy allocates fresh buffers on first use.
        """
        state = self.__dict__.copy()
        state.pop("_local", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __call__(self, x, training=False, *, backend=None, num_threads=None):
        """The whole input in one forward pass (like ``model(x)`` in Keras), as NumPy."""
        if training:
            raise ValueError("model(x) runs inference; training=True is not supported: train "
                             "with model.fit or model.train_on_batch.")
        x = self._as_input(x, "__call__")
        return self._forward(x, self._plan(), backend, num_threads)

    def feature_maps(self, x, *, backend=None, num_threads=None):
        """Every layer's activation on ``x``, for pictures.

        Parameters
        ----------
        x : array_like, ``(N, H, W, C)`` (or one example ``(H, W, C)``)

        Returns
        -------
        dict
            ``{layer name: activation}`` in layer order; each activation has
            the batch axis.  Draw one with
            ``fastconv.viz.show_feature_maps(maps["conv2d"][0])``.
        """
        arr = np.asarray(x)
        if self._input_shape is not None and arr.shape == self._input_shape:
            arr = arr[None]
        arr = self._as_input(arr, "feature_maps")
        maps = {}
        for layer in self.layers:
            src = arr.copy() if _works_in_place(layer) else arr
            arr = layer.call(src, backend, num_threads)
            maps[layer.name] = arr
        return maps

    def to_keras(self, *, name=None):
        """The equivalent ``keras.Sequential`` with these weights (needs Keras).

        The inverse of :func:`from_keras`: same layer names, arguments and
        weights, so Keras predicts what this model predicts (within float32
        rounding).  See :func:`fastconv.models._to_keras.to_keras`.
        """
        from ._to_keras import to_keras
        return to_keras(self, name=name)

    def __repr__(self):
        return f"<Sequential name={self.name!r}, {len(self.layers)} layers>"


def _is_plain_relu(layer):
    return ((isinstance(layer, ReLU) and layer.is_plain)
            or (isinstance(layer, Activation) and layer.activation == "relu"))


def _buffer(workspace, layer, shape):
    """A float32 array of ``shape`` kept in ``workspace`` for ``layer``, reused when it fits."""
    buf = workspace.get(id(layer))
    if buf is None or buf.shape != shape:
        buf = workspace[id(layer)] = np.empty(shape, dtype=DTYPE)
    return buf


def _works_in_place(layer):
    """Layers whose call() modifies their input array."""
    return isinstance(layer, (ReLU, Activation, Softmax))


def _human_bytes(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.2f} {unit}"
        n /= 1024


# --------------------------------------------------------------------------- Keras conversion
def _cfg_activation(cfg, where):
    act = cfg.get("activation", None)
    if isinstance(act, dict):  # a serialised custom or parametrised activation
        act = act.get("config", {}).get("name", act.get("class_name", act))
    return act


def _reject(cfg, where, **expected):
    """Raise when a Keras config entry differs from what fastconv supports."""
    for key, allowed in expected.items():
        if key in cfg and cfg[key] not in allowed:
            raise ValueError(f"{where}: {key}={cfg[key]!r} is not supported by fastconv.models "
                             f"(supported: {allowed}).")


def _conv_from_keras(cfg, where):
    _reject(cfg, where, data_format=("channels_last", None), lora_rank=(None,))
    return Conv2D(cfg["filters"], tuple(cfg["kernel_size"]), tuple(cfg["strides"]),
                  cfg["padding"], None, tuple(cfg.get("dilation_rate", (1, 1))),
                  cfg.get("groups", 1), _cfg_activation(cfg, where), cfg.get("use_bias", True))


def _dense_from_keras(cfg, where):
    _reject(cfg, where, lora_rank=(None,))
    return Dense(cfg["units"], _cfg_activation(cfg, where), cfg.get("use_bias", True))


def _pool_from_keras(cfg, where):
    strides = cfg.get("strides")
    return MaxPooling2D(tuple(cfg["pool_size"]), None if strides is None else tuple(strides),
                        cfg.get("padding", "valid"), cfg.get("data_format"))


_FROM_KERAS = {
    "Conv2D": _conv_from_keras,
    "Dense": _dense_from_keras,
    "MaxPooling2D": _pool_from_keras,
    "MaxPool2D": _pool_from_keras,
    "Flatten": lambda cfg, where: Flatten(cfg.get("data_format")),
    "GlobalAveragePooling2D": lambda cfg, where: GlobalAveragePooling2D(
        cfg.get("data_format"), cfg.get("keepdims", False)),
    "GlobalAvgPool2D": lambda cfg, where: GlobalAveragePooling2D(
        cfg.get("data_format"), cfg.get("keepdims", False)),
    "ReLU": lambda cfg, where: ReLU(cfg.get("max_value"), cfg.get("negative_slope", 0.0),
                                    cfg.get("threshold", 0.0)),
    "Activation": lambda cfg, where: Activation(_cfg_activation(cfg, where)),
    "Softmax": lambda cfg, where: Softmax(cfg.get("axis", -1)),
    "Dropout": lambda cfg, where: Dropout(cfg.get("rate", 0.0), seed=cfg.get("seed")),
}


def _keras_chain(model):
    """The layers of a Keras Sequential model, or of a functional model that is a plain chain."""
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    if type(model).__name__ == "Sequential":
        return layers
    try:
        prev = model.inputs
        if len(prev) != 1 or len(model.outputs) != 1:
            raise ValueError
        prev = prev[0]
        for layer in layers:
            if layer.input is not prev:
                raise ValueError
            prev = layer.output
        if prev is not model.outputs[0]:
            raise ValueError
    except (AttributeError, ValueError, TypeError):
        raise ValueError(f"from_keras converts Sequential models (or functional models that are "
                         f"one chain of layers); {model.name!r} ({type(model).__name__}) is "
                         f"not.") from None
    return layers


def from_keras(model, *, name=None):
    """Convert a built Keras model into a fastconv :class:`Sequential`.

    Parameters
    ----------
    model : keras.Sequential (or a chain-shaped functional model)
        Must be built (given an input shape), with channels_last layers among
        Conv2D, MaxPooling2D, Flatten, Dense, GlobalAveragePooling2D, ReLU,
        Activation, Softmax, Dropout (and InputLayer); activations among
        linear, relu, sigmoid, tanh, softmax.
    name : str, optional
        Default: the Keras model's name.

    Returns
    -------
    Sequential
        Same layer names, shapes and weights (copied, float32).

    Raises
    ------
    ValueError
        For an unbuilt model, or an unsupported layer, argument or activation
        (the message names the layer).
    """
    if not hasattr(model, "layers") or not hasattr(model, "get_weights"):
        raise TypeError(f"from_keras expects a Keras model; got {type(model).__name__}.")
    try:
        in_shape = model.input_shape
    except (AttributeError, ValueError):
        in_shape = None
    if in_shape is None or isinstance(in_shape, list):
        raise ValueError(f"Keras model {model.name!r} must be built with a single known input "
                         f"shape: start it with keras.Input(shape=...) or call "
                         f"model.build((None, H, W, C)) first.")
    layers = _keras_chain(model)
    out = Sequential(name=name or model.name)
    out.add(Input(tuple(in_shape[1:])))
    for layer in layers:
        cls = type(layer).__name__
        where = f"Keras layer {layer.name!r} ({cls})"
        convert = _FROM_KERAS.get(cls)
        if convert is None:
            raise ValueError(f"{where} is not supported by fastconv.models; supported layers: "
                             f"{', '.join(sorted(set(_FROM_KERAS)))}.")
        try:
            new = convert(layer.get_config(), where)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: {exc}") from None
        new.name = layer.name
        out.add(new)
        new.set_weights([np.asarray(w) for w in layer.get_weights()])
    return out
