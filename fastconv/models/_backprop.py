"""Training-mode forward and backward passes of the :mod:`fastconv.models` layers.

Each step takes the weights explicitly (any float dtype, so gradients can be
checked in float64), keeps what its backward pass needs, and computes
gradients with fastconv's ops: :func:`fastconv.conv2d_backward` (ReLU fused),
:func:`fastconv.max_pool2d_with_argmax` / :func:`fastconv.max_pool2d_backward`
and :func:`fastconv.relu_backward`; Dense layers are matrix products.
"""
import numpy as np

from .._backward import conv2d_backward, max_pool2d_backward, max_pool2d_with_argmax, relu_backward
from .._layers import (Activation, Conv2D, Dense, Dropout, Flatten, GlobalAveragePooling2D,
                       MaxPooling2D, ReLU, Softmax, apply_activation, softmax_)
from .._ops import conv2d

__all__ = ["plan", "forward", "backward", "activation_of"]


def _plain_relu(layer):
    return ((isinstance(layer, ReLU) and layer.is_plain)
            or (isinstance(layer, Activation) and layer.activation == "relu"))


def plan(layers):
    """``(layer, fuse_relu)`` steps: a plain ReLU after a linear Conv2D joins the convolution."""
    steps, i = [], 0
    while i < len(layers):
        layer = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, Conv2D) and layer.activation == "linear" and _plain_relu(nxt):
            steps.append((layer, True))
            i += 2
        else:
            steps.append((layer, False))
            i += 1
    return steps


def activation_of(layer):
    """The output activation's name of a step (``"linear"`` for layers without one)."""
    if isinstance(layer, (Conv2D, Dense, Activation)):
        return layer.activation
    if isinstance(layer, Softmax) and layer.axis == -1:
        return "softmax"
    return "linear"


def _act_backward(name, dy, y):
    """Gradient through activation ``name`` given its output ``y``."""
    if name == "linear":
        return dy
    if name == "relu":
        return relu_backward(dy, y)
    if name == "sigmoid":
        return dy * y * (1 - y)
    if name == "tanh":
        return dy * (1 - y * y)
    if name == "softmax":
        return y * (dy - (dy * y).sum(axis=-1, keepdims=True))
    raise ValueError(f"no gradient for activation {name!r}.")


def forward(layer, fuse, x, weights, rng, backend, num_threads, pre_activation=False):
    """``(y, cache)`` for one step in training mode.

    With ``pre_activation`` the output activation is not applied (the loss
    then works on the logits) and ``y`` is the logits.
    """
    act = "relu" if fuse else activation_of(layer)
    if isinstance(layer, Conv2D):
        bias = weights[1] if layer.use_bias else None
        use = act if not pre_activation else "linear"
        y = conv2d(x, weights[0], layer.strides, layer.padding.upper(),
                   dilations=layer.dilation_rate, groups=layer.groups, bias=bias,
                   activation="relu" if use == "relu" else None, backend=backend,
                   num_threads=num_threads)
        if use not in ("relu", "linear"):
            apply_activation(use, y)
        return y, (x, y, use)
    if isinstance(layer, Dense):
        y = x @ weights[0]
        if layer.use_bias:
            y += weights[1]
        use = act if not pre_activation else "linear"
        apply_activation(use, y)
        return y, (x, y, use)
    if isinstance(layer, MaxPooling2D):
        y, idx = max_pool2d_with_argmax(x, layer.pool_size, layer.strides, layer.padding.upper(),
                                        backend=backend, num_threads=num_threads)
        return y, (x, idx)
    if isinstance(layer, Flatten):
        return x.reshape(x.shape[0], -1), x.shape
    if isinstance(layer, GlobalAveragePooling2D):
        return x.mean(axis=(1, 2), keepdims=layer.keepdims), x.shape
    if isinstance(layer, Dropout):
        if layer.rate == 0:
            return x, None
        keep = rng.random(x.shape) >= layer.rate
        scale = x.dtype.type(1 / (1 - layer.rate))
        return np.where(keep, x * scale, 0).astype(x.dtype, copy=False), (keep, scale)
    if isinstance(layer, ReLU) and not layer.is_plain:
        mask = (x >= layer.threshold) if layer.max_value is None else \
            (x >= layer.threshold) & (x < layer.max_value)
        slope = (x < layer.threshold) * layer.negative_slope
        f = x.dtype.type
        y = np.where(x < layer.threshold, f(layer.negative_slope) * (x - f(layer.threshold)), x)
        if layer.max_value is not None:
            np.minimum(y, f(layer.max_value), out=y)
        return y, (mask + slope).astype(x.dtype)
    if isinstance(layer, (ReLU, Activation, Softmax)):
        use = "relu" if isinstance(layer, ReLU) else activation_of(layer)
        if isinstance(layer, Softmax) and layer.axis != -1:
            raise ValueError(f"{layer._where()}: training supports Softmax over the last axis "
                             f"only; got axis={layer.axis}.")
        if pre_activation:
            return x, (None, x, "linear")
        y = x.copy()
        if use == "softmax":
            softmax_(y, axis=-1)
        else:
            apply_activation(use, y)
        return y, (None, y, use)
    raise ValueError(f"{layer._where()} cannot be trained by fastconv.models.")


def backward(layer, fuse, dy, cache, weights, need_input, backend, num_threads):
    """``(dx, grads)``: the input gradient (None unless ``need_input``) and one per weight."""
    if isinstance(layer, Conv2D):
        x, y, use = cache
        if use not in ("relu", "linear"):
            dy = _act_backward(use, dy, y)
        need = ["filters"] + (["bias"] if layer.use_bias else []) + (["input"] if need_input else [])
        relu = use == "relu"
        dx, dw, db = conv2d_backward(x, weights[0], dy, layer.strides, layer.padding.upper(),
                                     dilations=layer.dilation_rate, groups=layer.groups,
                                     output=y if relu else None,
                                     activation="relu" if relu else None, need=need,
                                     backend=backend, num_threads=num_threads)
        return dx, [dw] + ([db] if layer.use_bias else [])
    if isinstance(layer, Dense):
        x, y, use = cache
        dz = _act_backward(use, dy, y)
        x2 = x.reshape(-1, x.shape[-1])
        dz2 = dz.reshape(-1, dz.shape[-1])
        grads = [x2.T @ dz2] + ([dz2.sum(axis=0)] if layer.use_bias else [])
        dx = dz @ weights[0].T if need_input else None
        return dx, grads
    if isinstance(layer, MaxPooling2D):
        x, idx = cache
        if not need_input:
            return None, []
        return max_pool2d_backward(dy, x, layer.pool_size, layer.strides, layer.padding.upper(),
                                   argmax=idx, backend=backend, num_threads=num_threads), []
    if isinstance(layer, Flatten):
        return dy.reshape(cache), []
    if isinstance(layer, GlobalAveragePooling2D):
        N, H, W, C = cache
        return np.broadcast_to(dy.reshape(N, 1, 1, C) / (H * W), cache).astype(dy.dtype), []
    if isinstance(layer, Dropout):
        if cache is None:
            return dy, []
        keep, scale = cache
        return np.where(keep, dy * scale, 0).astype(dy.dtype, copy=False), []
    if isinstance(layer, ReLU) and not layer.is_plain:
        return dy * cache, []
    if isinstance(layer, (ReLU, Activation, Softmax)):
        _, y, use = cache
        return _act_backward(use, dy, y), []
    raise ValueError(f"{layer._where()} cannot be trained by fastconv.models.")
