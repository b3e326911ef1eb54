"""Training-mode forward and backward passes of the :mod:`fastconv.models` layers.

Each step takes the weights explicitly (any float dtype, so gradients can be
checked in float64), keeps what its backward pass needs, and computes
gradients with the drivers behind fastconv's backward ops (the input and
filter gradients of :func:`fastconv.conv2d_backward`, the pooling argmax and
scatter of :func:`fastconv.max_pool2d_with_argmax` /
:func:`fastconv.max_pool2d_backward`), called directly: the shapes are the
model's, checked when it was built.  Dense layers are matrix products.

:func:`value_and_grads` runs a whole pass.  Its :class:`Pass` holds the
backend, the thread count and a store of buffers that a model keeps from one
batch to the next, so that the multi-megabyte activations and their
gradients are written into memory that is already mapped.  A ReLU whose
output feeds a max pool is differentiated on the pooled side: the pooled
value is the ReLU output at the window's argmax, so masking the pooled
gradient by ``pooled > 0`` before the scatter gives the same sums as masking
the full-size gradient after it, on a quarter of the data for 2x2 windows.
"""
import numpy as np

from .. import _backends
from .._backward import _argmax_driver, _pool_setup, _scatter, filters_grad, input_grad
from .._layers import (Activation, Conv2D, Dense, Dropout, Flatten, GlobalAveragePooling2D,
                       MaxPooling2D, ReLU, Softmax, apply_activation, softmax_)
from .._ops import conv2d, conv_geometry
from .._threads import resolve_num_threads

__all__ = ["Pass", "plan", "forward", "backward", "activation_of", "value_and_grads"]


class Pass:
    """What the steps of one pass share: backend module, thread count, buffers.

    Parameters
    ----------
    backend, num_threads
        As for :func:`fastconv.conv2d` (checked here, once per pass).
    buffers : dict, optional
        Arrays kept from earlier passes, keyed by ``(layer id, role)``;
        reused when shape and dtype match.  Default: a new dict (nothing
        reused).
    """

    def __init__(self, backend=None, num_threads=None, buffers=None):
        self.module_name, self.module = _backends.resolve(backend)
        self.n_threads = resolve_num_threads(num_threads)
        self.buffers = {} if buffers is None else buffers

    def buffer(self, layer, role, shape, dtype):
        """An uninitialised array kept for ``(layer, role)``; each role is used once per pass."""
        key = (id(layer), role)
        buf = self.buffers.get(key)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self.buffers[key] = np.empty(shape, dtype=dtype)
        return buf

    def geometry(self, layer, kind, compute, *shapes):
        """A layer's resolved geometry for input ``shapes``, computed once per shape."""
        key = (id(layer), kind)
        hit = self.buffers.get(key)
        if hit is None or hit[0] != shapes:
            hit = self.buffers[key] = (shapes, compute())
        return hit[1]


def _channel_sums(ctx, a):
    """``a`` summed over every axis but the last (a bias gradient), as one BLAS product."""
    a2 = a.reshape(-1, a.shape[-1])
    ones = ctx.geometry(Pass, ("ones", a2.shape[0], a2.dtype.str),
                        lambda: np.ones(a2.shape[0], a2.dtype))
    return ones @ a2


def _relu_mask(ctx, layer, role, dy, y):
    """``dy * (y > 0)`` (NaN in ``y`` gives 0), into a kept buffer.

    A product rather than a masked copy, which NumPy runs an order of
    magnitude slower; the two differ only where ``dy`` is not finite (a
    training step that has already failed) and in the sign of zeros.
    """
    out = ctx.buffer(layer, role, dy.shape, dy.dtype)
    keep = ctx.buffer(layer, role + " mask", y.shape, np.bool_)
    np.greater(y, 0, out=keep)
    np.multiply(dy, keep, out=out)
    return out


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
        return dy * (y > 0)  # 0 at 0 and at NaN, as relu_backward (see _relu_mask)
    if name == "sigmoid":
        return dy * y * (1 - y)
    if name == "tanh":
        return dy * (1 - y * y)
    if name == "softmax":
        return y * (dy - (dy * y).sum(axis=-1, keepdims=True))
    raise ValueError(f"no gradient for activation {name!r}.")


def _conv_geometry(ctx, layer, x, w):
    return ctx.geometry(layer, "conv", lambda: conv_geometry(
        x.shape, w.shape, layer.strides, layer.padding.upper(), "NHWC", layer.dilation_rate,
        layer.groups), x.shape, w.shape)


def _pool_geometry(ctx, layer, x):
    def compute():
        nhwc, ksize, strides, dilations, win = _pool_setup(x, layer.pool_size, layer.strides,
                                                           layer.padding.upper(), "NHWC")
        N, H, W, C = nhwc
        offsets = (np.arange(N, dtype=np.int64) * (H * W * C)).reshape(N, 1, 1, 1)
        return ksize, strides, dilations, win, offsets
    return ctx.geometry(layer, "pool", compute, x.shape)


def forward(layer, fuse, x, weights, rng, backend, num_threads, pre_activation=False, ctx=None):
    """``(y, cache)`` for one step in training mode.

    With ``pre_activation`` the output activation is not applied (the loss
    then works on the logits) and ``y`` is the logits.  ``ctx`` (a
    :class:`Pass`) supplies the backend and the buffers; by default one is
    made from ``backend`` and ``num_threads``.  ``y`` may be one of the
    pass's buffers: it is valid until the next pass with the same buffers.
    """
    if ctx is None:
        ctx = Pass(backend, num_threads)
    act = "relu" if fuse else activation_of(layer)
    if isinstance(layer, Conv2D):
        x = np.ascontiguousarray(x)
        w = np.asarray(weights[0], dtype=x.dtype)
        bias = weights[1] if layer.use_bias else None
        use = act if not pre_activation else "linear"
        strides, dilations, win = geo = _conv_geometry(ctx, layer, x, w)
        out = ctx.buffer(layer, "y", (x.shape[0], win.OH, win.OW, w.shape[3]), x.dtype)
        y = conv2d(x, w, layer.strides, layer.padding.upper(), dilations=layer.dilation_rate,
                   groups=layer.groups, bias=bias, activation="relu" if use == "relu" else None,
                   out=out, backend=ctx.module_name, num_threads=ctx.n_threads)
        if use not in ("relu", "linear"):
            apply_activation(use, y)
        return y, (x, y, use, geo)
    if isinstance(layer, Dense):
        w = weights[0]
        y = ctx.buffer(layer, "y", (*x.shape[:-1], w.shape[1]), np.result_type(x, w))
        np.matmul(x, w, out=y)
        if layer.use_bias:
            y += weights[1]
        use = act if not pre_activation else "linear"
        apply_activation(use, y)
        return y, (x, y, use)
    if isinstance(layer, MaxPooling2D):
        x = np.ascontiguousarray(x)
        ksize, strides, dilations, win, offsets = _pool_geometry(ctx, layer, x)
        shape = (x.shape[0], win.OH, win.OW, x.shape[3])
        y = ctx.buffer(layer, "y", shape, x.dtype)
        idx = ctx.buffer(layer, "argmax", shape, np.int64)
        if y.size:
            _argmax_driver(ctx.module)(x, y, idx, ksize, strides, dilations,
                                       (win.pad_top, win.pad_left), ctx.n_threads)
            idx += offsets  # flat indices into the whole batch, as the scatter takes them
        return y, (x.shape, y, idx)
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


def relu_before(layer, cache):
    """Whether a step's output went through a ReLU it differentiates itself (a Conv2D's)."""
    return isinstance(layer, Conv2D) and cache is not None and cache[2] == "relu"


def backward(layer, fuse, dy, cache, weights, need_input, backend, num_threads, ctx=None,
             masked=False, bias_grad=None):
    """``(dx, grads)``: the input gradient (None unless ``need_input``) and one per weight.

    For a Conv2D, ``masked`` says that ``dy`` has already been through this
    layer's ReLU, and ``bias_grad`` gives the bias gradient when the caller
    has it (see :func:`value_and_grads`).  ``dx`` may be one of the pass's
    buffers.
    """
    if ctx is None:
        ctx = Pass(backend, num_threads)
    if isinstance(layer, Conv2D):
        x, y, use, (strides, dilations, win) = cache
        w = np.asarray(weights[0], dtype=x.dtype)
        if use not in ("relu", "linear"):
            dz = _act_backward(use, dy, y)
        elif use == "relu" and not masked:
            dz = _relu_mask(ctx, layer, "dz", dy, y)
        else:
            dz = dy
        dz = np.ascontiguousarray(dz, dtype=x.dtype)
        pads = (win.pad_top, win.pad_left)
        grads = [filters_grad(x, dz, w.shape[:2], strides, dilations, pads, layer.groups,
                              ctx.module, ctx.n_threads)]
        if layer.use_bias:
            grads.append(_channel_sums(ctx, dz) if bias_grad is None else bias_grad)
        dx = None
        if need_input:
            dx = ctx.buffer(layer, "dx", x.shape, x.dtype)
            if dx.size and dz.size:
                input_grad(dz, w, dx, strides, dilations, pads, layer.groups, ctx.module,
                           ctx.n_threads)
            else:
                dx[...] = 0
        return dx, grads
    if isinstance(layer, Dense):
        x, y, use = cache
        dz = _relu_mask(ctx, layer, "dz", dy, y) if use == "relu" else _act_backward(use, dy, y)
        x2 = x.reshape(-1, x.shape[-1])
        dz2 = dz.reshape(-1, dz.shape[-1])
        grads = [x2.T @ dz2] + ([_channel_sums(ctx, dz2)] if layer.use_bias else [])
        dx = None
        if need_input:
            w = weights[0]
            dx = ctx.buffer(layer, "dx", (*dz.shape[:-1], w.shape[0]), np.result_type(dz, w))
            np.matmul(dz, w.T, out=dx)
        return dx, grads
    if isinstance(layer, MaxPooling2D):
        x_shape, y, idx = cache
        if not need_input:
            return None, []
        dy = np.asarray(dy, dtype=y.dtype)
        dx = ctx.buffer(layer, "dx", x_shape, y.dtype)
        _scatter(ctx.module, dy, idx, dx.size, ctx.n_threads, out=dx.reshape(-1))
        return dx, []
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


def value_and_grads(model, x, y, weights=None, *, training=True, need_grads=True, ctx=None):
    """``(loss, predictions, grads)`` of ``model`` (compiled) on one batch.

    ``weights`` is one list per layer (default the layers' own); any float
    dtype, used as given.  ``grads`` has the same structure and, like
    ``predictions``, is made of new arrays; ``ctx`` (a :class:`Pass`) holds
    the backend, the threads and the buffers of the intermediate results.
    """
    ctx = Pass() if ctx is None else ctx
    layers = model.layers
    if weights is None:
        weights = [layer._weights for layer in layers]
    wmap = {id(layer): w for layer, w in zip(layers, weights)}
    steps = plan(layers)
    loss = model.loss
    last, last_fuse = steps[-1]
    act = "relu" if last_fuse else activation_of(last)
    use_logits = not loss.from_logits and loss.logit_activation == act
    rng = model._rng_for_training() if training else None
    caches = []
    h = x
    for k, (layer, fuse) in enumerate(steps):
        if not training and isinstance(layer, Dropout):
            caches.append(None)
            continue
        pre = use_logits and k == len(steps) - 1
        # a Dropout layer with its own seed draws from its own stream
        layer_rng = layer.mask_rng(rng) if isinstance(layer, Dropout) else rng
        h, cache = forward(layer, fuse, h, wmap[id(layer)], layer_rng, None, None,
                           pre_activation=pre, ctx=ctx)
        caches.append(cache)
    pred = h.copy()  # h may be a buffer of the pass
    if use_logits:
        value, dh = loss.value_and_logit_grad(y, h)
        if act == "softmax":
            softmax_(pred, axis=-1)
        else:
            apply_activation(act, pred)
    else:
        value, dh = loss.value_and_grad(y, h)
    if not need_grads:
        return value, pred, None
    grads = {}
    masked, bias_grad = False, None
    for k in range(len(steps) - 1, -1, -1):
        layer, fuse = steps[k]
        if caches[k] is None and isinstance(layer, Dropout):
            grads[id(layer)] = []
            masked, bias_grad = False, None
            continue
        # a ReLU'd convolution feeding a max pool: mask on the pooled side, where the
        # convolution's bias gradient is also summed (each window's gradient lands on
        # exactly one input pixel, so the sums are the same); see the module docstring
        mask_here = (isinstance(layer, MaxPooling2D) and k > 0
                     and relu_before(steps[k - 1][0], caches[k - 1]))
        if mask_here:
            dh = _relu_mask(ctx, layer, "dy", np.asarray(dh, dtype=caches[k][1].dtype),
                            caches[k][1])
            conv = steps[k - 1][0]
            new_bias_grad = _channel_sums(ctx, dh) if conv.use_bias else None
        dh, g = backward(layer, fuse, dh, caches[k], wmap[id(layer)], k > 0, None, None,
                         ctx=ctx, masked=masked, bias_grad=bias_grad)
        masked, bias_grad = (True, new_bias_grad) if mask_here else (False, None)
        grads[id(layer)] = g
    return value, pred, [grads.get(id(layer), []) for layer in layers]
