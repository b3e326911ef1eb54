"""``Sequential.to_keras()``: a fastconv model handed back to Keras (inverse of ``from_keras``)."""
import importlib

import numpy as np

__all__ = ["to_keras"]


def _keras():
    try:
        return importlib.import_module("keras")
    except ImportError as exc:
        raise ImportError("to_keras needs Keras, which is not installed: `pip install keras "
                          "tensorflow` (fastconv.models itself never needs it).") from exc


def _activation(name):
    return None if name == "linear" else name


def _layer(keras, layer):
    """The Keras layer equivalent to one fastconv layer (same name and arguments)."""
    L = keras.layers
    cls = type(layer).__name__
    name = layer.name
    if cls == "Conv2D":
        return L.Conv2D(layer.filters, layer.kernel_size, strides=layer.strides,
                        padding=layer.padding, dilation_rate=layer.dilation_rate,
                        groups=layer.groups, activation=_activation(layer.activation),
                        use_bias=layer.use_bias, name=name)
    if cls == "Dense":
        return L.Dense(layer.units, activation=_activation(layer.activation),
                       use_bias=layer.use_bias, name=name)
    if cls == "MaxPooling2D":
        return L.MaxPooling2D(layer.pool_size, strides=layer.strides, padding=layer.padding,
                              name=name)
    if cls == "Flatten":
        return L.Flatten(name=name)
    if cls == "GlobalAveragePooling2D":
        return L.GlobalAveragePooling2D(keepdims=layer.keepdims, name=name)
    if cls == "ReLU":
        return L.ReLU(max_value=layer.max_value, negative_slope=layer.negative_slope,
                      threshold=layer.threshold, name=name)
    if cls == "Activation":
        return L.Activation(layer.activation, name=name)
    if cls == "Softmax":
        return L.Softmax(axis=layer.axis, name=name)
    if cls == "Dropout":
        return L.Dropout(layer.rate, seed=layer.seed, name=name)
    raise ValueError(f"model: layer {name!r} ({cls}) has no Keras equivalent in to_keras.")


def to_keras(model, *, name=None):
    """Build the ``keras.Sequential`` equivalent of a fastconv model, weights copied.

    Parameters
    ----------
    model : fastconv.models.Sequential
        Built (its input shape known).
    name : str, optional
        Default: the model's name.

    Returns
    -------
    keras.Sequential
        Same layer names, arguments and weights; its predictions equal
        fastconv's within float32 rounding.  It is not compiled.

    Raises
    ------
    ImportError
        When Keras is not installed.
    ValueError
        When the model is not built, or holds a layer Keras cannot express.
    """
    model._ensure_built("to_keras")
    keras = _keras()
    layers = [_layer(keras, layer) for layer in model.layers]
    out = keras.Sequential([keras.Input(model._input_shape)] + layers,
                           name=name or model.name)
    for klayer, layer in zip(layers, model.layers):
        weights = [np.array(w) for w in layer.weights]
        if weights:
            klayer.set_weights(weights)
    return out
