"""The benchmark shapes (float32 but one float64, NHWC) and the suites that group them.

Every case is one call of one operation on fixed-size inputs.  FLOPs follow the
**2 x multiply-add** convention: a convolution producing ``N * OH * OW * O``
outputs, each a sum of ``KH * KW * C_in / groups`` products, costs
``2 * N * OH * OW * O * KH * KW * C_in / groups`` floating-point operations.
ReLU, max pooling and im2col are memory-bound; for them the figure of merit is
bytes moved (input read once plus output written once), reported as GB/s.

Suites
------
``quick`` (the default)
    A few representative shapes at small repeat counts; under a minute.
``lesson``
    The Fashion-MNIST, edge-filter and cars shapes, relu, pool and the lesson
    model's whole forward pass (:data:`LESSON_MODEL_LAYERS`) and one training step of
    it at batch 32 and 128 (see :mod:`.peers.training`).
``small``
    Small calls (per-call and threading overhead): conv2d, relu and max
    pooling on the lesson's 160x240x1 image, a tiny float64 convolution, and the
    CS231n rows (below).
``full``
    Everything but the gradients of ``backward`` (its CS231n rows included).
``backward``
    The gradients (``--ops`` names of :data:`BACKWARD_OPS`): the input and
    filter gradients of conv shapes with 1 to 3 and with 16 or more input
    channels, the pool and ReLU backward, and the CS231n rows.
``tiny``
    Hidden: small shapes that run in a fraction of a second, for the tests
    (``tiny-backward``: the same for the gradients).

Backward cases are named ``<op>:<forward case>`` and time one gradient call
given the forward input and a seeded upstream gradient ``dy`` (peers record
the forward graph once, outside the timing, and time the backward only).

The CS231n rows (ops ``cs231n_conv`` and ``cs231n_conv_relu_pool``, in the
``backward`` and ``small`` suites) time what a course's numerical gradient
check calls thousands of times: one forward *and* one backward of a layer on
tiny float64 NCHW arrays, through :mod:`fastconv.compat.cs231n`
(``conv_forward_fast`` + ``conv_backward_fast``, or
``conv_relu_pool_forward`` + ``conv_relu_pool_backward``) against PyTorch's
forward + ``torch.autograd.grad`` of the same; per-call overhead dominates.
"""
from dataclasses import dataclass, field

import numpy as np

from .._shapes import resolve_window

__all__ = ["Case", "CASES", "BACKWARD_OPS", "CS231N_OPS", "CS231N_POOL", "backward_data",
           "backward_call", "backward_reference", "cs231n_arrays", "cs231n_call", "cs231n_pack",
           "SUITES", "get_suite", "suite_names", "LESSON_MODEL_LAYERS", "build_lesson_model",
           "lesson_model_weights"]


@dataclass(frozen=True)
class Case:
    """One benchmark row: an operation on inputs of a fixed shape.

    Attributes
    ----------
    name : str
        Row label, unique within :data:`CASES` (an op prefix for non-conv ops).
    op : {'conv2d', 'relu', 'max_pool2d', 'im2col', 'model', 'train'} or one of :data:`BACKWARD_OPS`
    N, H, W, C : int
        Input batch, height, width and channels (C_in).
    O : int
        Output channels (C_out) for conv2d; ``C`` otherwise.
    KH, KW, SH, SW : int
        Kernel (or pooling window) and strides.
    padding : {'SAME', 'VALID'}
    groups : int
        Grouped convolution (``groups == C`` is depthwise).
    dtype : str
        ``'float32'`` (every shape but the float64 per-call-overhead ones).
    tags : tuple of str
        Labels that group cases across suites (``small_cin``, ``compute``,
        ``c64_3x3``, ``edge``, ``depthwise``, ``1x1``), for selecting rows in
        reports such as the goals in ``benchmarks/targets.json``.
    """
    name: str
    op: str
    N: int
    H: int
    W: int
    C: int
    O: int = 0
    KH: int = 1
    KW: int = 1
    SH: int = 1
    SW: int = 1
    padding: str = "VALID"
    groups: int = 1
    tags: tuple = field(default=())
    dtype: str = "float32"

    @property
    def window(self):
        """Output size and padding, by TensorFlow's rules."""
        return resolve_window(self.H, self.W, self.KH, self.KW, self.SH, self.SW, 1, 1,
                              self.padding)

    @property
    def input_shape(self):
        """``(N, H, W, C)``."""
        return (self.N, self.H, self.W, self.C)

    @property
    def filter_shape(self):
        """HWIO ``(KH, KW, C // groups, O)``."""
        return (self.KH, self.KW, self.C // self.groups, self.O)

    @property
    def output_shape(self):
        """NHWC output shape (im2col: the ``(rows, KH*KW*C)`` matrix; gradients: the
        shape of what they return, the input's or the filters')."""
        if self.op in ("relu", "relu_backward", "max_pool2d_backward", "conv2d_grad_input"):
            return self.input_shape
        if self.op == "conv2d_grad_filters":
            return self.filter_shape
        if self.op in CS231N_OPS:
            return (cs231n_result_size(self),)
        if self.op in ("model", "train"):
            return (self.N, 10)
        win = self.window
        if self.op == "im2col":
            return (self.N * win.OH * win.OW, self.KH * self.KW * self.C)
        if self.op == "max_pool2d":
            return (self.N, win.OH, win.OW, self.C)
        return (self.N, win.OH, win.OW, self.O)

    @property
    def single_channel_filter(self):
        """One image, one channel in and out, stride 1: what image-filter APIs take."""
        return (self.op == "conv2d" and self.C == 1 and self.O == 1 and self.N == 1
                and self.SH == self.SW == 1)

    @property
    def flops(self):
        """Floating-point operations, 2 x multiply-adds (0 for memory-bound ops)."""
        if self.op in ("conv2d", "conv2d_grad_input", "conv2d_grad_filters"):
            win = self.window
            macs = (self.N * win.OH * win.OW * self.O * self.KH * self.KW
                    * (self.C // self.groups))
            return 2 * macs
        if self.op in CS231N_OPS:  # the forward, the input and the filter gradient
            return 3 * Case(self.name, "conv2d", self.N, self.H, self.W, self.C, self.O,
                            self.KH, self.KW, self.SH, self.SW, self.padding).flops
        if self.op == "model":
            return _lesson_model_flops(self.N)
        if self.op == "train":
            return _lesson_train_flops(self.N)
        return 0

    @property
    def bytes_moved(self):
        """Bytes read plus bytes written by one call (filters not counted); the backward
        of pooling and ReLU also reads ``dy``."""
        n_in = self.N * self.H * self.W * self.C
        if self.op == "relu_backward":
            return 4 * 3 * n_in
        if self.op == "max_pool2d_backward":
            win = self.window
            return 4 * (2 * n_in + self.N * win.OH * win.OW * self.C)
        n_out = 1
        for s in self.output_shape:
            n_out *= s
        return np.dtype(self.dtype).itemsize * (n_in + n_out)

    @property
    def description(self):
        """A short human-readable shape, e.g. ``8x56x56 64->64 k3 s1 SAME``."""
        if self.op in CS231N_OPS:
            win = self.window
            pool = " + relu + pool 2x2 s2" if self.op == "cs231n_conv_relu_pool" else ""
            return (f"NCHW {self.N}x{self.C}x{self.H}x{self.W}, w {self.O}x{self.C}x{self.KH}"
                    f"x{self.KW}, s{self.SH} pad {win.pad_top}{pool}, {self.dtype}, fwd+bwd")
        if self.op in ("conv2d", "conv2d_grad_input", "conv2d_grad_filters"):
            extra = f" g{self.groups}" if self.groups > 1 else ""
            extra += "" if self.dtype == "float32" else f" {self.dtype}"
            return (f"{self.N}x{self.H}x{self.W} {self.C}->{self.O} k{self.KH} "
                    f"s{self.SH} {self.padding}{extra}")
        if self.op == "model":
            return f"batch {self.N}, 28x28x1 -> 10"
        if self.op == "train":
            return f"batch {self.N}, 28x28x1 -> 10, one Adam step"
        if self.op in ("relu", "relu_backward"):
            return f"{self.N}x{self.H}x{self.W}x{self.C}"
        return (f"{self.N}x{self.H}x{self.W}x{self.C} k{self.KH} s{self.SH} "
                f"{self.padding}")


#: the lesson's Fashion-MNIST classifier, 28x28x1 -> 10, as (layer, arguments, keywords):
#: ``fastconv.models`` takes Keras's arguments, so this one list builds both models
LESSON_MODEL_INPUT = (28, 28, 1)
LESSON_MODEL_LAYERS = (
    ("Conv2D", (64, (3, 3)), {"activation": "relu"}),
    ("MaxPooling2D", (2, 2), {}),
    ("Conv2D", (64, (3, 3)), {"activation": "relu"}),
    ("MaxPooling2D", (2, 2), {}),
    ("Flatten", (), {}),
    ("Dense", (128,), {"activation": "relu"}),
    ("Dense", (10,), {"activation": "softmax"}),
)


def build_lesson_model(sequential, input_layer, layers, weights):
    """The lesson model built with one library's Keras-style API, holding ``weights``.

    Parameters
    ----------
    sequential, input_layer : callable
        ``Sequential`` and ``Input`` (``fastconv.models`` or ``keras``).
    layers : module
        Where the layer classes live (``fastconv.models`` or ``keras.layers``).
    weights : list of ndarray
        In Keras ``get_weights()`` order, e.g. :func:`lesson_model_weights`.
    """
    model = sequential([input_layer(LESSON_MODEL_INPUT)]
                       + [getattr(layers, name)(*args, **kw)
                          for name, args, kw in LESSON_MODEL_LAYERS])
    model.set_weights([np.asarray(v) for v in weights])
    return model


def lesson_model_weights(seed=0):
    """Random He-scaled float32 weights of the lesson model, in ``get_weights()`` order."""
    rng = np.random.default_rng(seed)
    shapes = [((3, 3, 1, 64), 9), ((64,), 0), ((3, 3, 64, 64), 576), ((64,), 0),
              ((1600, 128), 1600), ((128,), 0), ((128, 10), 128), ((10,), 0)]
    out = []
    for shape, fan_in in shapes:
        if fan_in:
            out.append((rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32))
        else:
            out.append((0.01 * rng.standard_normal(shape)).astype(np.float32))
    return out


def _lesson_model_flops(N):
    """FLOPs (2 x MAC) of the Fashion-MNIST model's forward pass for a batch of N."""
    c1 = 26 * 26 * 64 * 9 * 1
    c2 = 11 * 11 * 64 * 9 * 64
    d1 = 1600 * 128
    d2 = 128 * 10
    return 2 * N * (c1 + c2 + d1 + d2)


def _lesson_train_flops(N):
    """FLOPs (2 x MAC) of one training step: forward, weight gradients, input gradients.

    Every layer computes its weight gradient (as many multiply-adds as its
    forward pass) and every layer but the first its input gradient (as many
    again).
    """
    c1 = 26 * 26 * 64 * 9 * 1
    c2 = 11 * 11 * 64 * 9 * 64
    d1 = 1600 * 128
    d2 = 128 * 10
    return 2 * N * (2 * c1 + 3 * (c2 + d1 + d2))


def _conv(name, N, H, W, C, O, K, S, pad, groups=1, tags=(), dtype="float32"):
    return Case(name, "conv2d", N, H, W, C, O, K, K, S, S, pad, groups, tuple(tags), dtype)


_CONV = [
    _conv("fmnist_c1", 256, 28, 28, 1, 64, 3, 1, "VALID", tags=("small_cin",)),
    _conv("fmnist_c2", 256, 13, 13, 64, 64, 3, 1, "VALID", tags=("c64_3x3", "compute")),
    _conv("edge_1ch", 1, 512, 512, 1, 1, 3, 1, "SAME", tags=("small_cin", "edge")),
    _conv("cars_c1", 16, 192, 192, 3, 16, 3, 1, "SAME", tags=("small_cin",)),
    _conv("cars_c2", 16, 192, 192, 16, 30, 3, 1, "SAME", tags=("compute",)),
    _conv("cars_c4", 16, 48, 48, 60, 90, 3, 1, "SAME", tags=("compute",)),
    _conv("cars_1x1", 16, 12, 12, 130, 40, 1, 1, "SAME", tags=("compute",)),
    _conv("resnet_3x3", 8, 56, 56, 64, 64, 3, 1, "SAME", tags=("c64_3x3", "compute")),
    _conv("resnet_s2", 8, 56, 56, 128, 128, 3, 2, "SAME", tags=("compute",)),
    _conv("vgg_c12", 1, 224, 224, 64, 64, 3, 1, "SAME", tags=("c64_3x3", "compute")),
    _conv("stem_7x7", 8, 224, 224, 3, 64, 7, 2, "SAME", tags=("small_cin",)),
    _conv("dw_3x3", 8, 56, 56, 128, 128, 3, 1, "SAME", groups=128, tags=("depthwise",)),
    _conv("hd_rgb", 1, 720, 1280, 3, 8, 3, 1, "SAME", tags=("small_cin",)),
    _conv("pw_1x1", 8, 28, 28, 256, 512, 1, 1, "SAME", tags=("compute", "1x1")),
]
_OTHER = [
    Case("relu", "relu", 256, 26, 26, 64, 64),
    Case("max_pool2d", "max_pool2d", 256, 26, 26, 64, 64, 2, 2, 2, 2, "VALID"),
    Case("im2col:fmnist_c2", "im2col", 256, 13, 13, 64, 64, 3, 3, 1, 1, "VALID"),
    Case("im2col:resnet_3x3", "im2col", 8, 56, 56, 64, 64, 3, 3, 1, 1, "SAME"),
    Case("model:fmnist", "model", 256, 28, 28, 1, 10),
]
#: small calls, where per-call and threading overhead dominate: the lesson's 160x240 image
#: (conv2d, relu, 2x2 max pooling) and a tiny float64 convolution
_SMALL = [
    _conv("small_conv", 1, 160, 240, 1, 1, 3, 1, "SAME", tags=("small", "small_cin", "edge")),
    Case("small_relu", "relu", 1, 160, 240, 1, 1, tags=("small",)),
    Case("small_pool", "max_pool2d", 1, 160, 240, 1, 1, 2, 2, 2, 2, "VALID", tags=("small",)),
    _conv("small_f64", 4, 5, 5, 3, 2, 3, 1, "VALID", tags=("small", "small_cin"),
          dtype="float64"),
]
_TINY = [
    _conv("tiny_conv", 2, 12, 12, 4, 8, 3, 1, "SAME", tags=("compute",)),
    _conv("tiny_1ch", 1, 32, 32, 1, 1, 3, 1, "SAME", tags=("small_cin", "edge")),
    _conv("tiny_s2", 2, 11, 11, 8, 8, 3, 2, "SAME", tags=("compute",)),
    _conv("tiny_dw", 2, 10, 10, 8, 8, 3, 1, "SAME", groups=8, tags=("depthwise",)),
    Case("tiny_relu", "relu", 2, 8, 8, 16, 16),
    Case("tiny_pool", "max_pool2d", 2, 8, 8, 16, 16, 2, 2, 2, 2, "VALID"),
    Case("tiny_im2col", "im2col", 2, 9, 9, 4, 4, 3, 3, 1, 1, "SAME"),
]

#: forward cases that only the gradient suites use (not in ``tiny``): 16 input channels
_TINY_GRAD_FORWARD = [
    _conv("tiny_c16", 2, 8, 8, 16, 16, 3, 1, "SAME", tags=("compute",)),
]

#: the CS231n rows: one forward and one backward of a layer through the course adapter
#: (:mod:`fastconv.compat.cs231n`), NCHW float64; ``op -> the forward op it starts with``
CS231N_OPS = {"cs231n_conv": "conv2d", "cs231n_conv_relu_pool": "conv2d"}
#: the pooling of ``cs231n_conv_relu_pool`` (the course's sandwich): 2x2 windows, stride 2
CS231N_POOL = {"pool_height": 2, "pool_width": 2, "stride": 2}

#: the gradient ops ``--ops`` accepts, each the backward of one forward op (the CS231n
#: rows run their forward op too)
BACKWARD_OPS = {"conv2d_grad_input": "conv2d", "conv2d_grad_filters": "conv2d",
                "max_pool2d_backward": "max_pool2d", "relu_backward": "relu", **CS231N_OPS}


def _backward(op, forward):
    """The case ``<op>:<forward.name>``: the gradient ``op`` of the forward case."""
    if BACKWARD_OPS[op] != forward.op:
        raise ValueError(f"{op} is the backward of {BACKWARD_OPS[op]}, not of {forward.op}.")
    return Case(f"{op}:{forward.name}", op, forward.N, forward.H, forward.W, forward.C,
                forward.O, forward.KH, forward.KW, forward.SH, forward.SW, forward.padding,
                forward.groups, forward.tags, forward.dtype)


_BY_NAME = {c.name: c for c in _CONV + _OTHER + _TINY + _TINY_GRAD_FORWARD}
#: the input and filter gradients of every conv shape with at most 3 input channels that a
#: first layer trains (the 1-channel edge filter and the HD frame are not trained) and of
#: the layers with 16 or more input channels, 1x1 and depthwise included
_GRAD_SHAPES = ("fmnist_c1", "fmnist_c2", "cars_c1", "cars_c2", "cars_c4", "resnet_3x3",
                "resnet_s2", "stem_7x7", "dw_3x3", "pw_1x1")
_BACKWARD = [_backward(op, _BY_NAME[name]) for op, names in (
    ("conv2d_grad_input", _GRAD_SHAPES),
    ("conv2d_grad_filters", _GRAD_SHAPES),
    ("max_pool2d_backward", ("max_pool2d",)),
    ("relu_backward", ("relu",))) for name in names]
_TINY_BACKWARD = [_backward(op, _BY_NAME[name]) for op, names in (
    ("conv2d_grad_input", ("tiny_conv", "tiny_1ch", "tiny_c16", "tiny_s2", "tiny_dw")),
    ("conv2d_grad_filters", ("tiny_conv", "tiny_1ch", "tiny_c16", "tiny_s2", "tiny_dw")),
    ("max_pool2d_backward", ("tiny_pool",)),
    ("relu_backward", ("tiny_relu",))) for name in names]
#: the CS231n notebook's geometries: the conv layer's gradient check (x 4x3x5x5, w 2x3x3x3,
#: stride 1, pad 1) and the conv-relu-pool sandwich's (x 2x3x16x16, w 3x3x3x3, pad 1)
_CS231N = [
    Case("cs231n_conv", "cs231n_conv", 4, 5, 5, 3, 2, 3, 3, 1, 1, "SAME",
         tags=("small", "cs231n"), dtype="float64"),
    Case("cs231n_conv_relu_pool", "cs231n_conv_relu_pool", 2, 16, 16, 3, 3, 3, 3, 1, 1,
         "SAME", tags=("small", "cs231n"), dtype="float64"),
]

#: every case by name (the tiny ones included)
CASES = {c.name: c for c in _CONV + _OTHER + _SMALL + _TINY + _TINY_GRAD_FORWARD + _BACKWARD
         + _TINY_BACKWARD + _CS231N}


def backward_data(case, rng):
    """Seeded inputs of a backward case, added to ``x`` (and ``w``): ``dy``, float32, the
    forward output's shape (NHWC).  The CS231n rows: ``w`` (HWIO), ``b`` and ``dy`` (the
    layer's output, NHWC; pooled for the sandwich) in the case's dtype, replacing ``w``."""
    win = case.window
    if case.op in CS231N_OPS:
        dt = np.dtype(case.dtype)
        OH, OW = win.OH, win.OW
        if case.op == "cs231n_conv_relu_pool":
            OH, OW = _pooled(OH), _pooled(OW)
        return {"w": rng.standard_normal(case.filter_shape, dtype=dt),
                "b": rng.standard_normal(case.O, dtype=dt),
                "dy": rng.standard_normal((case.N, OH, OW, case.O), dtype=dt)}
    channels = case.O if case.op.startswith("conv2d") else case.C
    shape = case.input_shape if case.op == "relu_backward" else (case.N, win.OH, win.OW,
                                                                 channels)
    return {"dy": rng.standard_normal(shape, dtype=np.float32)}


def _pooled(size):
    """Output size of :data:`CS231N_POOL` along a side of ``size`` (no padding)."""
    return 1 + (size - CS231N_POOL["pool_height"]) // CS231N_POOL["stride"]


def cs231n_arrays(case, data):
    """The course's operands of a CS231n row, converted once: ``(x, w, b, dout,
    conv_param)`` with ``x`` and ``dout`` NCHW and ``w`` ``(F, C, HH, WW)``."""
    win = case.window
    if (win.pad_top, win.pad_left) != (win.pad_bottom, win.pad_right) or case.SH != case.SW:
        raise ValueError(f"{case.name}: the course's layers take one stride and one "
                         f"symmetric pad")
    x = np.ascontiguousarray(data["x"].transpose(0, 3, 1, 2))
    w = np.ascontiguousarray(data["w"].transpose(3, 2, 0, 1))
    dout = np.ascontiguousarray(data["dy"].transpose(0, 3, 1, 2))
    return x, w, data["b"], dout, {"stride": case.SH, "pad": win.pad_top}


def cs231n_result_size(case):
    """Elements of a CS231n row's result (:func:`cs231n_pack`): the layer's output, ``dx``,
    ``dw`` and ``db``."""
    win = case.window
    OH, OW = win.OH, win.OW
    if case.op == "cs231n_conv_relu_pool":
        OH, OW = _pooled(OH), _pooled(OW)
    return (case.N * OH * OW * case.O + case.N * case.H * case.W * case.C
            + case.KH * case.KW * case.C * case.O + case.O)


def cs231n_pack(out, dx, dw, db):
    """A CS231n row's result as one vector: the layer's output and ``dx`` (NCHW), ``dw``
    ``(F, C, HH, WW)`` and ``db``, flattened in that order (checked outside the timing)."""
    return np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1)
                           for a in (out, dx, dw, db)])


def cs231n_call(cs231n, case, x, w, b, dout, conv_param):
    """A zero-argument call running one forward and one backward of a CS231n row through
    ``cs231n`` (the course's module or :mod:`fastconv.compat.cs231n`); it returns
    ``(out, dx, dw, db)``."""
    if case.op == "cs231n_conv":
        forward, backward = cs231n.conv_forward_fast, cs231n.conv_backward_fast

        def call():
            out, cache = forward(x, w, b, conv_param)
            return (out, *backward(dout, cache))
        return call
    if case.op == "cs231n_conv_relu_pool":
        forward, backward = cs231n.conv_relu_pool_forward, cs231n.conv_relu_pool_backward
        pool_param = dict(CS231N_POOL)

        def call():
            out, cache = forward(x, w, b, conv_param, pool_param)
            return (out, *backward(dout, cache))
        return call
    raise ValueError(f"unknown CS231n op {case.op!r}")


def _cs231n_reference(fc, case, data):
    """A CS231n row's expected result from fastconv's public NHWC ops on the NumPy backend
    (not through the adapter it checks)."""
    s = (case.SH, case.SW)
    x, w, b, dy = data["x"], data["w"], data["b"], data["dy"]
    ref = dict(backend="numpy")
    if case.op == "cs231n_conv":
        out = fc.conv2d(x, w, s, case.padding, bias=b, **ref)
        dx, dw, db = fc.conv2d_backward(x, w, dy, s, case.padding, **ref)
    else:
        a = fc.conv2d(x, w, s, case.padding, bias=b, activation="relu", **ref)
        ksize, stride = (CS231N_POOL["pool_height"], CS231N_POOL["pool_width"]), \
            CS231N_POOL["stride"]
        out = fc.max_pool2d(a, ksize, stride, "VALID", **ref)
        da = fc.max_pool2d_backward(dy, a, ksize, stride, "VALID", **ref)
        dx, dw, db = fc.conv2d_backward(x, w, da, s, case.padding, output=a,
                                        activation="relu", **ref)
    return cs231n_pack(out.transpose(0, 3, 1, 2), dx.transpose(0, 3, 1, 2),
                       dw.transpose(3, 2, 0, 1), db)


def backward_call(fc, case, data, **kw):
    """One call of the backward op of ``case`` through fastconv's public API (``kw``:
    ``backend``, ``num_threads``)."""
    x, dy = data["x"], data["dy"]
    k, s = (case.KH, case.KW), (case.SH, case.SW)
    if case.op == "conv2d_grad_input":
        return fc.conv2d_backward(x, data["w"], dy, s, case.padding, groups=case.groups,
                                  need=("input",), **kw)[0]
    if case.op == "conv2d_grad_filters":
        return fc.conv2d_backward(x, data["w"], dy, s, case.padding, groups=case.groups,
                                  need=("filters",), **kw)[1]
    if case.op == "max_pool2d_backward":
        return fc.max_pool2d_backward(dy, x, k, s, case.padding, **kw)
    if case.op == "relu_backward":
        return fc.relu_backward(dy, x, **kw)
    raise ValueError(f"unknown backward op {case.op!r}")


def backward_reference(case, data):
    """The expected gradient, from fastconv's NumPy reference backend (the CS231n rows: the
    packed forward output and gradients, :func:`cs231n_pack`)."""
    import fastconv
    if case.op in CS231N_OPS:
        return _cs231n_reference(fastconv, case, data)
    return backward_call(fastconv, case, data, backend="numpy")

#: suite name -> (case names, default repeat count, default minimum seconds per sample)
SUITES = {
    "quick": (("fmnist_c1", "fmnist_c2", "edge_1ch", "resnet_3x3", "relu", "max_pool2d"),
              5, 0.005),
    "lesson": (("fmnist_c1", "fmnist_c2", "edge_1ch", "cars_c1", "cars_c2", "cars_c4",
                "cars_1x1", "relu", "max_pool2d", "model:fmnist"), 9, 0.01),
    "small": (tuple(c.name for c in _SMALL + _CS231N), 9, 0.005),
    "full": (tuple(c.name for c in _CONV + _OTHER + _SMALL + _CS231N), 11, 0.01),
    "tiny": (tuple(c.name for c in _TINY), 3, 0.0),
    "backward": (tuple(c.name for c in _BACKWARD + _CS231N), 5, 0.01),
    "tiny-backward": (tuple(c.name for c in _TINY_BACKWARD + _CS231N), 3, 0.0),
}
#: size N of the N^3 sgemm peak probe per suite (default 2048; smaller keeps quick quick)
PEAK_SIZES = {"quick": 1536, "small": 1024, "tiny": 256, "tiny-backward": 256}
#: bytes of each array of the bandwidth probe (a copy) per suite (default 64 MiB, past the L3)
BANDWIDTH_SIZES = {"tiny": 4 << 20, "tiny-backward": 4 << 20}

#: the training rows (one Adam step of the lesson model on a fixed batch), in the lesson
#: and full suites; ``tiny_train`` (batch 2) is for the tests
_TRAIN = [Case("train:fmnist", "train", 32, 28, 28, 1, 10),
          Case("train:fmnist_b128", "train", 128, 28, 28, 1, 10)]
CASES.update({c.name: c for c in _TRAIN + [Case("tiny_train", "train", 2, 28, 28, 1, 10)]})
for _name in ("lesson", "full"):
    SUITES[_name] = (SUITES[_name][0] + tuple(c.name for c in _TRAIN), *SUITES[_name][1:])
#: suites listed in ``--help`` (``tiny`` is for the tests)
PUBLIC_SUITES = ("quick", "lesson", "small", "full", "backward")


def suite_names():
    """Names accepted by ``--suite`` (``tiny`` included, though not advertised)."""
    return tuple(SUITES)


def get_suite(name, ops=None, shapes=None):
    """Return the cases of suite ``name``, optionally filtered.

    Parameters
    ----------
    name : str
        One of :func:`suite_names`.
    ops : sequence of str, optional
        Keep only cases of these operations.
    shapes : sequence of str, optional
        Case names to run instead of the suite's own list (any of
        :data:`CASES`).

    Returns
    -------
    list of Case
    """
    if name not in SUITES:
        raise ValueError(f"suite must be one of {', '.join(SUITES)}; got {name!r}.")
    names = SUITES[name][0] if not shapes else tuple(shapes)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise ValueError(f"unknown shape(s) {', '.join(unknown)}; known: {', '.join(CASES)}.")
    cases = [CASES[n] for n in names]
    if ops:
        known = {"conv2d", "relu", "max_pool2d", "im2col", "model", "train"} | set(BACKWARD_OPS)
        bad = [o for o in ops if o not in known]
        if bad:
            raise ValueError(f"unknown op(s) {', '.join(bad)}; known: {', '.join(sorted(known))}.")
        cases = [c for c in cases if c.op in ops]
    return cases
