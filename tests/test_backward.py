"""Backward ops on every backend against the NumPy reference, central differences,
adjoint identities, max-pool ties/overlaps/NaN, and thread-count independence."""
from dataclasses import dataclass

import numpy as np
import pytest

import fastconv
import fastconv.functional as F
import fastconv.nn as nn
from fastconv import _backward, _backends, _tuning
from fastconv._backends import reference
from fastconv._shapes import resolve_window
from fastconv._validation import spatial_pair
from cases import DTYPES, ConvCase, assert_close, params


@dataclass(frozen=True)
class Conv(ConvCase):
    """A conv geometry of :class:`cases.ConvCase`, in either layout."""
    data_format: str = "NHWC"

    def data(self, rng, dtype):
        x = rng.standard_normal(self.x_shape).astype(dtype)
        w = rng.standard_normal((self.KH, self.KW, self.C // self.groups, self.O)).astype(dtype)
        return x, w

    @property
    def x_shape(self):
        if self.data_format == "NHWC":
            return (self.N, self.H, self.W, self.C)
        return (self.N, self.C, self.H, self.W)

    def forward(self, x, w, backend="numpy", **kw):
        return fastconv.conv2d(x, w, self.strides, self.padding, self.data_format,
                               self.dilations, groups=self.groups, backend=backend, **kw)

    def backward(self, x, w, dy, backend="numpy", **kw):
        return fastconv.conv2d_backward(x, w, dy, self.strides, self.padding, self.data_format,
                                        self.dilations, groups=self.groups, backend=backend, **kw)

    def scale(self):
        return np.sqrt(self.KH * self.KW * self.C * self.O)


CASES = [
    Conv("n1-c1-same", 1, 5, 5, 1, 3, 3, 1, padding="SAME"),
    Conv("nonsquare-k3x2-s2-same-asym", 2, 7, 8, 3, 3, 2, 5, strides=2, padding="SAME"),
    Conv("nonsquare-k2x3-s2x1-valid", 2, 8, 7, 4, 2, 3, 6, strides=[2, 1]),
    Conv("s2-same-even-input", 2, 8, 6, 3, 3, 3, 4, strides=2, padding="SAME"),
    Conv("dilation2-same", 1, 9, 10, 2, 3, 3, 4, dilations=2, padding="SAME"),
    Conv("dilation2-stride2-valid", 2, 9, 9, 3, 3, 3, 4, strides=2, dilations=2),
    Conv("dilation-1x3-stride-3x1", 1, 10, 11, 2, 2, 3, 3, strides=[3, 1], dilations=[1, 3]),
    Conv("groups2-same", 2, 6, 6, 4, 3, 3, 6, padding="SAME", groups=2),
    Conv("groups2-stride2", 2, 9, 7, 4, 3, 3, 8, strides=2, padding="SAME", groups=2),
    Conv("depthwise", 2, 10, 10, 6, 3, 3, 6, padding="SAME", groups=6),
    Conv("depthwise-mult2-s2", 1, 9, 9, 3, 3, 3, 6, strides=2, padding="SAME", groups=3),
    Conv("explicit-pad", 1, 6, 7, 3, 1, 5, 2, strides=[1, 2],
         padding=[[0, 0], [1, 2], [3, 0], [0, 0]]),
    Conv("explicit-pad-wider-than-kernel", 2, 6, 6, 2, 2, 2, 3,
         padding=[[0, 0], [4, 3], [5, 0], [0, 0]]),
    Conv("explicit-pad-wide-s2-groups", 2, 7, 7, 4, 3, 3, 8, strides=2, groups=2,
         padding=[[0, 0], [4, 3], [5, 0], [0, 0]]),
    Conv("k5-s3-odd-channels", 1, 11, 11, 17, 5, 5, 19, strides=3, padding="SAME"),
    Conv("stride-larger-than-kernel", 2, 9, 9, 2, 2, 2, 3, strides=3),
    Conv("valid-unused-rows", 1, 8, 9, 3, 3, 3, 2, strides=[3, 2]),
    Conv("kernel-1x1", 2, 5, 4, 5, 1, 1, 3),
    Conv("nchw-s2-same", 2, 7, 8, 3, 3, 2, 5, strides=[1, 1, 2, 2], padding="SAME",
         data_format="NCHW"),
    Conv("nchw-groups-explicit", 1, 6, 7, 4, 3, 3, 6, groups=2, data_format="NCHW",
         padding=[[0, 0], [0, 0], [1, 2], [2, 1]]),
    Conv("dilation2-stride3-same", 1, 11, 10, 2, 3, 3, 4, strides=3, dilations=2,
         padding="SAME"),
    Conv("k7-s2-same-rgb", 2, 13, 12, 3, 7, 7, 8, strides=2, padding="SAME"),
    Conv("kernel-1x1-s2", 2, 7, 6, 4, 1, 1, 5, strides=2),
    Conv("s2x3-d3x2-explicit", 1, 12, 13, 3, 3, 2, 4, strides=[2, 3], dilations=[3, 2],
         padding=[[0, 0], [2, 1], [0, 3], [0, 0]]),
    Conv("stride4-k2-empty-phases", 1, 10, 11, 2, 2, 2, 3, strides=4, padding="SAME"),
    Conv("c1-o20-many-outputs-per-tap", 2, 9, 9, 1, 3, 3, 20),
    Conv("depthwise-s3-k2x3-dil2", 1, 11, 12, 4, 2, 3, 4, strides=3, dilations=[2, 1],
         groups=4),
]
IDS = [c.id for c in CASES]


def _grad_out(case, rng, x, w, dtype):
    return rng.standard_normal(case.forward(x, w).shape).astype(dtype)


def _nhwc_problem(case, x, w, dy):
    """The canonical problem (NHWC arrays, strides, dilations, pads) of a case."""
    to = (lambda a: np.ascontiguousarray(a.transpose(0, 2, 3, 1))) \
        if case.data_format == "NCHW" else np.ascontiguousarray
    SH, SW = spatial_pair(case.strides, "strides", case.data_format)
    DH, DW = spatial_pair(case.dilations, "dilations", case.data_format)
    win = resolve_window(case.H, case.W, case.KH, case.KW, SH, SW, DH, DW, case.padding,
                         case.data_format)
    return to(x), w, to(dy), (SH, SW), (DH, DW), (win.pad_top, win.pad_left)


def _judge(case, x, w, dy):
    """dx (NHWC), dw, db from the reference drivers themselves."""
    xn, w, dyn, s, d, p = _nhwc_problem(case, x, w, dy)
    dx = np.empty_like(xn)
    reference.conv2d_backward_input(dyn, w, dx, s, d, p, case.groups, 1)
    dw = np.empty_like(w)
    reference.conv2d_backward_filters(xn, dyn, dw, s, d, p, case.groups, 1)
    return dx, dw, dyn.sum(axis=(0, 1, 2))


def _nchw_to_nhwc(a, case):
    return a.transpose(0, 2, 3, 1) if case.data_format == "NCHW" else a


# ----------------------------------------------------------------------------- the judge itself
def _loss(case, x, w, b, t):
    """A non-linear loss of the convolution: sum(t * y + y**2 / 2), y = conv2d(x, w) + b."""
    y = case.forward(x, w) + (b if case.data_format == "NHWC" else b[:, None, None])
    return np.sum(t * y + 0.5 * y * y), y


def _central(f, a, h=1e-3):
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        keep = a[i]
        a[i] = keep + h
        up = f()
        a[i] = keep - h
        down = f()
        a[i] = keep
        g[i] = (up - down) / (2 * h)
    return g


@pytest.mark.parametrize("case", [c for c in CASES if c.H * c.W * c.C * c.N <= 200], ids=lambda c: c.id)
def test_reference_matches_central_differences(case, rng):
    x, w = case.data(rng, np.float64)
    b = rng.standard_normal(case.O)
    t = _grad_out(case, rng, x, w, np.float64)
    _, y = _loss(case, x, w, b, t)
    dx, dw, db = case.backward(x, w, t + y)          # dL/dy = t + y
    assert_close(dx, _central(lambda: _loss(case, x, w, b, t)[0], x), scale=1e3)
    assert_close(dw, _central(lambda: _loss(case, x, w, b, t)[0], w), scale=1e3)
    assert_close(db, _central(lambda: _loss(case, x, w, b, t)[0], b), scale=1e3)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_public_numpy_backend_is_the_reference(case, rng):
    x, w = case.data(rng, np.float64)
    dy = _grad_out(case, rng, x, w, np.float64)
    dx, dw, db = case.backward(x, w, dy, backend="numpy")
    jx, jw, jb = _judge(case, x, w, dy)
    np.testing.assert_array_equal(_nchw_to_nhwc(dx, case), jx)
    np.testing.assert_array_equal(dw, jw)
    assert_close(db, jb)


# ----------------------------------------------------------------------------- every backend
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_conv2d_backward_matches_reference(backend, case, dtype, rng):
    x, w = case.data(rng, dtype)
    dy = _grad_out(case, rng, x, w, dtype)
    dx, dw, db = case.backward(x, w, dy, backend=backend)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == (case.O,)
    assert dx.dtype == dw.dtype == db.dtype == dtype
    jx, jw, jb = _judge(case, x, w, dy)
    scale = case.scale()
    assert_close(_nchw_to_nhwc(dx, case), jx, dtype, scale)
    assert_close(dw, jw, dtype, scale * np.sqrt(dy.size / case.O))
    assert_close(db, jb, dtype, np.sqrt(dy.size))


@pytest.mark.parametrize("method", ["conv", "col2im"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_both_input_gradient_compositions_match_reference(backend, case, method, rng,
                                                          monkeypatch):
    """Each composition on each backend's primitives (the numpy one included), in small pieces."""
    monkeypatch.setattr(_backward, "PIECE_BYTES", 1)
    monkeypatch.setattr(_backward, "MIN_PIECE_PIXELS", 7)
    x, w = case.data(rng, np.float64)
    dy = _grad_out(case, rng, x, w, np.float64)
    xn, w, dyn, s, d, p = _nhwc_problem(case, x, w, dy)
    module = _backends.resolve(backend)[1]
    jx, jw, _ = _judge(case, x, w, dy)
    dx = np.full_like(xn, np.nan)
    _backward.input_grad(dyn, w, dx, s, d, p, case.groups, module, 2, method=method)
    assert_close(dx, jx, np.float64, case.scale())
    dw = _backward.filters_grad(xn, dyn, (case.KH, case.KW), s, d, p, case.groups, module, 2,
                                composed=True)
    assert_close(dw, jw, np.float64, case.scale() * np.sqrt(dy.size))


# ----------------------------------------------------------------------------- input gradient by phases
def _blocks(case, s):
    """Blocks of input pixels to stack for a case: the strides' and two larger ones."""
    SH, SW = s
    return [(SH, SW), (2 * SH, SW), (SH, 3 * SW)] if (SH, SW) != (1, 1) else [(1, 2), (3, 2)]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_input_gradient_by_phases_and_by_stacked_blocks_matches_reference(backend, case, rng,
                                                                          monkeypatch):
    """The per-phase convolutions and every stacked block, on each backend's conv2d."""
    monkeypatch.setattr(_tuning, "INPUT_GRAD_SMALL_WORK", 0)
    x, w = case.data(rng, np.float64)
    dy = _grad_out(case, rng, x, w, np.float64)
    xn, w, dyn, s, d, p = _nhwc_problem(case, x, w, dy)
    module = _backends.resolve(backend)[1]
    jx, _, _ = _judge(case, x, w, dy)
    dx = np.full_like(xn, np.nan)
    with monkeypatch.context() as m:
        m.setattr(_backward, "stacked_block", lambda *args: None)
        _backward.input_grad(dyn, w, dx, s, d, p, case.groups, module, 2, method="conv")
    assert_close(dx, jx, np.float64, case.scale())
    if case.groups == 1:
        for block in _blocks(case, s):
            dx = np.full_like(xn, np.nan)
            _backward._stacked_conv(dyn, w, dx, block, s, d, p, module, 2)
            assert_close(dx, jx, np.float64, case.scale())


def test_input_gradient_rules():
    """Which shapes stack, which run col2im (the benchmark suite's first layers among them)."""
    block, method = _backward.stacked_block, _backward.input_grad_method
    assert block(3, (7, 7), (2, 2), (1, 1), (2, 2), 1, 8) == (2, 2)     # 7x7 stem on RGB
    assert block(3, (3, 3), (1, 1), (1, 1), (1, 1), 1, 8) is not None   # 3x3 on RGB
    assert block(128, (3, 3), (2, 2), (1, 1), (0, 0), 1, 8) is None     # wide: per phase
    assert block(3, (7, 7), (2, 2), (1, 1), (2, 2), 1, 1) is None       # pixel-vectorized
    assert block(1, (3, 3), (2, 2), (1, 1), (1, 1), 2, 8) is None       # grouped
    assert method((3, 3, 1, 64), 1) == "col2im"       # C_in 1, 64 outputs: 7 per tap
    assert method((3, 3, 3, 16), 1) == "conv"
    assert method((1, 1, 256, 512), 1) == "conv"      # a 1x1 input gradient is one GEMM
    assert method((3, 3, 128, 128), 1, (2, 2), 10 ** 9) == "conv"
    assert method((3, 3, 8, 8), 1, (2, 2), 1000) == "col2im"
    assert method((3, 3, 1, 8), 8, (2, 2), 1000) == "conv"


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("case", [c for c in CASES if c.groups == 1 and c.C <= 3],
                         ids=lambda c: c.id)
def test_stacked_input_gradient_keeps_non_finite_values_in_their_pixels(fast_backend, case,
                                                                         rng, monkeypatch):
    """A stacked window's zero taps must not spread an inf or NaN of dy to other pixels."""
    monkeypatch.setattr(_tuning, "INPUT_GRAD_SMALL_WORK", 0)
    x, w = case.data(rng, np.float64)
    dy = _grad_out(case, rng, x, w, np.float64)
    s = _nhwc_problem(case, x, w, dy)[3]
    monkeypatch.setattr(_backward, "stacked_block", lambda *args: _blocks(case, s)[1])
    view = _nchw_to_nhwc(dy, case)          # a view: writes go to dy
    N, OH, OW, O = view.shape
    view[0, OH // 2, OW // 2, 0] = np.inf
    view[N - 1, (OH - 1) // 2, OW - 1, O - 1] = np.nan
    dx = case.backward(x, w, dy, backend=fast_backend, need=("input",))[0]
    jx, _, _ = _judge(case, x, w, dy)
    dx = _nchw_to_nhwc(dx, case)
    np.testing.assert_array_equal(np.isnan(dx), np.isnan(jx))
    np.testing.assert_array_equal(np.isinf(dx), np.isinf(jx))
    finite = np.isfinite(jx)
    assert_close(dx[finite], jx[finite], np.float64, case.scale())


def test_input_gradients_by_phases_are_bitwise_identical_for_any_thread_count(backend, rng,
                                                                              monkeypatch):
    monkeypatch.setattr(_tuning, "INPUT_GRAD_SMALL_WORK", 0)
    cases = [Conv("stacked-rgb-k7-s2", 2, 29, 27, 3, 7, 7, 16, strides=2, padding="SAME"),
             Conv("stacked-rgb-k3", 2, 25, 23, 3, 3, 3, 16, padding="SAME"),
             Conv("phases-c24-s2", 2, 21, 19, 24, 3, 3, 24, strides=2, padding="SAME"),
             Conv("phases-dw-s2", 2, 21, 19, 24, 3, 3, 24, strides=2, groups=24)]
    for dtype in DTYPES:
        for case in cases:
            x, w = case.data(rng, dtype)
            dy = _grad_out(case, rng, x, w, dtype)
            runs = [case.backward(x, w, dy, backend=backend, num_threads=n, need=("input",))[0]
                    for n in (1, 2, 3)]
            for other in runs[1:]:
                np.testing.assert_array_equal(runs[0], other)


def test_pieces_cover_the_output_once():
    for N, OH, OW, row in [(1, 1, 1, 8), (3, 5, 7, 10 ** 6), (5, 2, 2, 1), (2, 300, 3, 4096)]:
        seen = np.zeros((N, OH, OW), int)
        for n0, n1, oh0, oh1 in _backward.pixel_pieces(N, OH, OW, row):
            seen[n0:n1, oh0:oh1] += 1
        assert (seen == 1).all()


def test_need_and_relu_activation(backend, rng):
    case = CASES[1]
    x, w = case.data(rng, np.float64)
    b = rng.standard_normal(case.O)
    y = case.forward(x, w, bias=b, activation="relu")
    assert (y == 0).any() and (y > 0).any()
    dy = _grad_out(case, rng, x, w, np.float64)
    got = case.backward(x, w, dy, backend=backend, output=y, activation="relu")
    masked = np.where(y > 0, dy, 0.0)
    expected = case.backward(x, w, masked, backend="numpy")
    for g, e in zip(got, expected):
        assert_close(g, e, np.float64, case.scale())
    only = case.backward(x, w, dy, backend=backend, need=("filters",))
    assert only[0] is None and only[2] is None
    assert_close(only[1], case.backward(x, w, dy)[1], np.float64, case.scale())
    assert case.backward(x, w, dy, backend=backend, need="bias")[:2] == (None, None)


def test_conv2d_backward_errors(rng):
    case = CASES[1]
    x, w = case.data(rng, np.float32)
    dy = _grad_out(case, rng, x, w, np.float32)
    with pytest.raises(ValueError, match="grad_output has shape"):
        case.backward(x, w, dy[:, :-1])
    with pytest.raises(ValueError, match="need may contain only"):
        case.backward(x, w, dy, need=("weights",))
    with pytest.raises(ValueError, match="needs output="):
        case.backward(x, w, dy, activation="relu")
    with pytest.raises(ValueError, match="output= is used only"):
        case.backward(x, w, dy, output=dy)
    with pytest.raises(ValueError, match="activation must be"):
        case.backward(x, w, dy, activation="tanh", output=dy)
    with pytest.raises(ValueError, match="channel mismatch"):
        fastconv.conv2d_backward(x, w[:, :, :2], dy, 2, "SAME")
    with pytest.raises(TypeError, match="input has dtype int64"):
        fastconv.conv2d_backward(x.astype(np.int64), w, dy, 2, "SAME")
    with pytest.raises(ValueError, match="strides must be >= 1"):
        fastconv.conv2d_backward(x, w, dy, 0, "SAME")


# ----------------------------------------------------------------------------- adjoints
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_conv2d_transpose_is_the_adjoint_of_conv2d(backend, case, rng):
    x, w = case.data(rng, np.float64)
    y = _grad_out(case, rng, x, w, np.float64)
    xt = fastconv.conv2d_transpose(y, w, x.shape, case.strides, case.padding, case.data_format,
                                   case.dilations, groups=case.groups, backend=backend)
    lhs = np.vdot(case.forward(x, w, backend=backend), y)
    np.testing.assert_allclose(lhs, np.vdot(x, xt), rtol=1e-10)


COL_CASES = [((2, 6, 7, 3), (3, 2), 1, "VALID", 1), ((1, 8, 8, 2), 3, 2, "SAME", 1),
             ((2, 9, 10, 1), (2, 3), (3, 2), "SAME", (2, 1)), ((1, 5, 5, 4), 2, 3, "VALID", 1),
             ((1, 5, 6, 2), 3, 1, [[0, 0], [2, 0], [1, 3], [0, 0]], 2)]


@pytest.mark.parametrize("shape, k, s, p, d", COL_CASES)
def test_col2im_is_the_adjoint_of_im2col(backend, rng, shape, k, s, p, d):
    x = rng.standard_normal(shape)
    cols = fastconv.im2col(x, k, s, p, d, backend=backend)
    c = rng.standard_normal(cols.shape)
    back = fastconv.col2im(c, shape, k, s, p, d, backend=backend)
    assert back.shape == shape
    np.testing.assert_allclose(np.vdot(cols, c), np.vdot(x, back), rtol=1e-11)


def test_col2im_adds_up_overlaps(backend):
    # 3x3 image, 2x2 windows, stride 1: each pixel counts the windows that hold it
    back = fastconv.col2im(np.ones((4, 4)), (1, 3, 3, 1), 2, backend=backend)
    np.testing.assert_array_equal(back[0, :, :, 0], [[1, 2, 1], [2, 4, 2], [1, 2, 1]])


def test_col2im_into_out(backend, rng):
    """``out=``: overwritten (its previous contents ignored), returned, same bits."""
    x = rng.standard_normal((2, 7, 6, 3))
    cols = fastconv.im2col(x, (3, 2), (2, 1), "SAME", (1, 2), backend="numpy")
    cols = cols + rng.standard_normal(cols.shape)
    expected = fastconv.col2im(cols, x.shape, (3, 2), (2, 1), "SAME", (1, 2), backend="numpy")
    out = np.full(x.shape, np.nan)
    for n in (1, 2):
        got = fastconv.col2im(cols, x.shape, (3, 2), (2, 1), "SAME", (1, 2), out=out,
                              backend=backend, num_threads=n)
        assert got is out
        assert_close(out, expected, np.float64, 3)


def test_col2im_errors():
    with pytest.raises(ValueError, match="cols has shape"):
        fastconv.col2im(np.ones((4, 5)), (1, 3, 3, 1), 2)
    with pytest.raises(ValueError, match="input_shape must be 4 integers"):
        fastconv.col2im(np.ones((4, 4)), (3, 3, 1), 2)


def test_conv2d_transpose_errors(rng):
    y = rng.standard_normal((1, 3, 3, 2))
    w = rng.standard_normal((3, 3, 4, 2))
    with pytest.raises(ValueError, match="gives"):
        fastconv.conv2d_transpose(y, w, (1, 9, 9, 4), 2, "SAME")
    assert fastconv.conv2d_transpose(y, w, (1, 6, 5, 4), 2, "SAME").shape == (1, 6, 5, 4)
    with pytest.raises(ValueError, match="channel mismatch"):
        fastconv.conv2d_transpose(y, w, (1, 6, 6, 3), 2, "SAME")


# ----------------------------------------------------------------------------- relu
def test_relu_backward():
    f = np.array([-2.0, -0.0, 0.0, 1e-300, 3.0, np.nan, np.inf, -np.inf])
    dy = np.arange(1.0, 9.0)
    np.testing.assert_array_equal(fastconv.relu_backward(dy, f), [0, 0, 0, 4, 5, 0, 7, 0])
    y = fastconv.relu(f)
    np.testing.assert_array_equal(fastconv.relu_backward(dy, y), fastconv.relu_backward(dy, f))
    assert fastconv.relu_backward(dy.astype(np.float32), f).dtype == np.float32
    with pytest.raises(ValueError, match="features_or_output has shape"):
        fastconv.relu_backward(dy, f[:3])


@dataclass(frozen=True)
class ReluGradCase:
    """One public relu_backward call: the value's and gradient's dtypes and layouts."""
    id: str
    value_dtype: object
    grad_dtype: object
    layout: str   # "contiguous", "transposed" (both), "strided" (value only)


RELU_GRAD_CASES = [
    ReluGradCase("f32", np.float32, np.float32, "contiguous"),
    ReluGradCase("f64", np.float64, np.float64, "contiguous"),
    ReluGradCase("f64_value_f32_grad", np.float64, np.float32, "contiguous"),  # tiny > 0
    ReluGradCase("f16_value_f32_grad", np.float16, np.float32, "contiguous"),
    ReluGradCase("int_value_f64_grad", np.int64, np.float64, "contiguous"),
    ReluGradCase("uint8_value_f32_grad", np.uint8, np.float32, "contiguous"),
    ReluGradCase("f32_transposed", np.float32, np.float32, "transposed"),
    ReluGradCase("f64_strided_value", np.float64, np.float64, "strided"),
]


@pytest.mark.parametrize("case", params(RELU_GRAD_CASES))
def test_relu_backward_dtypes_and_layouts_every_backend(case, backend):
    rng = np.random.default_rng(3)
    shape = (3, 5, 7, 11)
    f = rng.standard_normal(shape) * 10
    f.reshape(-1)[::13] = 1e-300
    f.reshape(-1)[::17] = np.nan
    f.reshape(-1)[::19] = -0.0
    if np.dtype(case.value_dtype).kind != "f":
        f = np.nan_to_num(f, nan=0.0)
    if np.dtype(case.value_dtype).kind == "u":
        f = np.abs(f) * (rng.random(shape) < 0.5)
    f = f.astype(case.value_dtype)
    dy = rng.standard_normal(shape).astype(case.grad_dtype)
    dy.reshape(-1)[::23] = -0.0
    if case.layout == "transposed":
        f, dy = f.transpose(3, 1, 2, 0), dy.transpose(3, 1, 2, 0)
    elif case.layout == "strided":
        f = np.repeat(f, 2, axis=-1)[..., ::2]
    expected = np.where(f > 0, dy, np.zeros((), dy.dtype))   # NaN > 0 is False
    for threads in (1, 2):
        got = fastconv.relu_backward(dy, f, backend=backend, num_threads=threads)
        assert got.dtype == dy.dtype and got.shape == dy.shape
        bits = np.uint32 if dy.dtype == np.float32 else np.uint64
        np.testing.assert_array_equal(got.view(bits), expected.view(bits))


# ----------------------------------------------------------------------------- max pool
POOL_CASES = [((2, 7, 8, 3), 2, 2, "VALID"), ((1, 7, 7, 2), 3, 1, "VALID"),      # overlap
              ((2, 6, 5, 3), (3, 2), (2, 1), "SAME"), ((1, 5, 5, 1), 3, 2, "SAME"),
              ((1, 9, 8, 4), 2, 3, "VALID"),                                      # gaps
              ((2, 6, 6, 2), 3, 2, [[0, 0], [1, 1], [2, 0], [0, 0]])]


def _pool_ref(x, k, s, p):
    """dx of max pooling from the reference argmax and np.add.at (the judge)."""
    N, H, W, C = x.shape
    (KH, KW), (SH, SW) = spatial_pair(k, "k"), spatial_pair(s, "s")
    win = resolve_window(H, W, KH, KW, SH, SW, 1, 1, p)
    out = np.empty((N, win.OH, win.OW, C), x.dtype)
    idx = np.empty(out.shape, np.int64)
    reference.max_pool2d_argmax(x, out, idx, (KH, KW), (SH, SW), (1, 1),
                                (win.pad_top, win.pad_left), 1)
    return out, idx


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, k, s, p", POOL_CASES)
def test_max_pool_backward_matches_reference(backend, rng, shape, k, s, p, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    out, idx = _pool_ref(x, k, s, p)
    dy = rng.standard_normal(out.shape).astype(dtype)
    flat = (idx + np.arange(shape[0]).reshape(-1, 1, 1, 1) * x[0].size).reshape(-1)
    expected = np.zeros(x.size, dtype)
    np.add.at(expected, flat, dy.reshape(-1))
    y, am = fastconv.max_pool2d_with_argmax(x, k, s, p, backend=backend)
    np.testing.assert_array_equal(y, fastconv.max_pool2d(x, k, s, p, backend="numpy"))
    np.testing.assert_array_equal(am, idx)
    for a in (None, am):
        dx = fastconv.max_pool2d_backward(dy, x, k, s, p, argmax=a, backend=backend)
        assert dx.dtype == dtype
        assert_close(dx, expected.reshape(shape), dtype, 3)


@pytest.mark.parametrize("shape, k, s, p", POOL_CASES[:4])
def test_max_pool_backward_central_differences(rng, shape, k, s, p):
    x = rng.permutation(np.arange(np.prod(shape), dtype=np.float64)).reshape(shape) / 7
    y = fastconv.max_pool2d(x, k, s, p)
    t = rng.standard_normal(y.shape)
    dx = fastconv.max_pool2d_backward(t, x, k, s, p)
    assert_close(dx, _central(lambda: np.vdot(fastconv.max_pool2d(x, k, s, p), t), x), scale=1e3)


def test_max_pool_ties_go_to_the_first_maximum_and_overlaps_add(backend):
    x = np.ones((1, 3, 3, 1))
    y, am = fastconv.max_pool2d_with_argmax(x, 2, 1, "VALID", backend=backend)
    np.testing.assert_array_equal(am[0, :, :, 0], [[0, 1], [3, 4]])
    dx = fastconv.max_pool2d_backward(np.ones((1, 2, 2, 1)), x, 2, 1, "VALID", backend=backend)
    np.testing.assert_array_equal(dx[0, :, :, 0], [[1, 1, 0], [1, 1, 0], [0, 0, 0]])
    # one maximum in the middle shared by all four overlapping windows: the gradients add up
    x[0, 1, 1, 0] = 5
    dx = fastconv.max_pool2d_backward(np.arange(1.0, 5.0).reshape(1, 2, 2, 1), x, 2, 1,
                                      "VALID", backend=backend)
    np.testing.assert_array_equal(dx[0, :, :, 0], [[0, 0, 0], [0, 10, 0], [0, 0, 0]])


def test_max_pool_nan_window_sends_gradient_to_the_first_nan(backend):
    x = np.zeros((1, 2, 4, 1))
    x[0, 1, 0, 0] = np.nan
    x[0, 0, 3, 0] = np.nan
    x[0, 1, 2, 0] = np.nan
    x[0, 0, 1, 0] = 9.0
    y, am = fastconv.max_pool2d_with_argmax(x, 2, 2, "VALID", backend=backend)
    assert np.isnan(y).all()
    np.testing.assert_array_equal(am.reshape(-1), [4, 3])
    dx = fastconv.max_pool2d_backward(np.array([[[[2.0], [3.0]]]]), x, 2, 2, "VALID",
                                      backend=backend)
    np.testing.assert_array_equal(dx[0, :, :, 0], [[0, 0, 0, 3], [2, 0, 0, 0]])


def test_max_pool_argmax_index_conventions(backend, rng):
    x = rng.standard_normal((2, 5, 6, 3))
    y, am = fastconv.max_pool2d_with_argmax(x, 2, 2, "SAME", include_batch_in_index=True,
                                            backend=backend)
    np.testing.assert_array_equal(x.reshape(-1)[am], y)
    xc = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    yc, amc = fastconv.max_pool2d_with_argmax(xc, 2, 2, "SAME", "NCHW", backend=backend)
    np.testing.assert_array_equal(yc, y.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(np.take_along_axis(xc.reshape(2, -1), amc.reshape(2, -1), 1),
                                  yc.reshape(2, -1))
    dy = rng.standard_normal(yc.shape)
    for a, batch in ((None, False), (amc, False), (amc + np.arange(2).reshape(2, 1, 1, 1) * 90, True)):
        dxc = fastconv.max_pool2d_backward(dy, xc, 2, 2, "SAME", "NCHW", argmax=a,
                                           include_batch_in_index=batch, backend=backend)
        dx = fastconv.max_pool2d_backward(np.ascontiguousarray(dy.transpose(0, 2, 3, 1)), x, 2,
                                          2, "SAME", backend=backend)
        np.testing.assert_array_equal(dxc, dx.transpose(0, 3, 1, 2))


def test_max_pool_backward_errors(rng):
    x = rng.standard_normal((1, 4, 4, 1))
    dy = np.ones((1, 2, 2, 1))
    with pytest.raises(ValueError, match="argmax holds indices outside"):
        fastconv.max_pool2d_backward(dy, x, 2, 2, "VALID", argmax=np.full((1, 2, 2, 1), 16))
    with pytest.raises(ValueError, match="argmax has shape"):
        fastconv.max_pool2d_backward(dy, x, 2, 2, "VALID", argmax=np.zeros((1, 2, 1, 1), int))
    with pytest.raises(TypeError, match="argmax has dtype"):
        fastconv.max_pool2d_backward(dy, x, 2, 2, "VALID", argmax=np.zeros((1, 2, 2, 1)))
    with pytest.raises(ValueError, match="grad_output has shape"):
        fastconv.max_pool2d_backward(dy[:, :1], x, 2, 2, "VALID")


# ----------------------------------------------------------------------------- thread counts
def test_results_are_bitwise_identical_for_any_thread_count(backend, rng, monkeypatch):
    monkeypatch.setattr(_backward, "PIECE_BYTES", 4096)
    monkeypatch.setattr(_backward, "MIN_PIECE_PIXELS", 16)
    cases = [Conv("t1", 2, 23, 21, 5, 3, 3, 7, padding="SAME"),
             Conv("t2", 3, 17, 19, 4, 3, 2, 6, strides=2, padding="SAME"),
             Conv("t3", 2, 15, 15, 6, 3, 3, 6, strides=2, groups=3, padding="SAME")]
    for dtype in DTYPES:
        for case in cases:
            x, w = case.data(rng, dtype)
            dy = _grad_out(case, rng, x, w, dtype)
            runs = [case.backward(x, w, dy, backend=backend, num_threads=n) for n in (1, 2, 3)]
            for other in runs[1:]:
                for a, b in zip(runs[0], other):
                    np.testing.assert_array_equal(a, b)
        x = rng.standard_normal((2, 11, 13, 5)).astype(dtype)
        dy = rng.standard_normal((2, 9, 11, 5)).astype(dtype)
        pools = [fastconv.max_pool2d_backward(dy, x, 3, 1, "VALID", backend=backend,
                                              num_threads=n) for n in (1, 2, 3)]
        cols = rng.standard_normal((2 * 99, 45)).astype(dtype)
        folds = [fastconv.col2im(cols, x.shape, 3, 1, "VALID", backend=backend, num_threads=n)
                 for n in (1, 2, 3)]
        for runs in (pools, folds):
            for other in runs[1:]:
                np.testing.assert_array_equal(runs[0], other)


# ----------------------------------------------------------------------------- native filter gradients
#: geometries the native filter-gradient kernels serve: depthwise (groups == C == O) and
#: dense with few input channels; channel counts off the vector widths (8/16 float32,
#: 4/8 float64 lanes, blocks of 4 vectors), borders, strides, dilations, both layouts
NATIVE_CASES = [
    Conv("dw-c13-same", 2, 9, 10, 13, 3, 3, 13, padding="SAME", groups=13),
    Conv("dw-c37-s2-same-n1", 1, 11, 11, 37, 3, 3, 37, strides=2, padding="SAME", groups=37),
    Conv("dw-c70-dil2-valid", 2, 12, 12, 70, 3, 3, 70, dilations=2, groups=70),
    Conv("dw-c8-k5-explicit-pad", 1, 8, 9, 8, 5, 5, 8, groups=8,
         padding=[[0, 0], [3, 1], [0, 4], [0, 0]]),
    Conv("dw-c19-s2x1-nchw", 2, 9, 8, 19, 3, 3, 19, strides=[1, 1, 2, 1], padding="SAME",
         groups=19, data_format="NCHW"),
    Conv("dw-c3-k7-s3-same", 3, 13, 12, 3, 7, 7, 3, strides=3, padding="SAME", groups=3),
    Conv("dw-c33-k2x3-dil-1x2-stride-2x3", 2, 10, 13, 33, 2, 3, 33, strides=[2, 3],
         dilations=[1, 2], groups=33),
    Conv("dense-c1-o64-valid", 2, 12, 12, 1, 3, 3, 64),
    Conv("dense-c3-o16-same", 2, 10, 11, 3, 3, 3, 16, padding="SAME"),
    Conv("dense-c1-o37-k7-s2-same", 1, 15, 14, 1, 7, 7, 37, strides=2, padding="SAME"),
    Conv("dense-c3-o24-k3-s2-same", 2, 15, 14, 3, 3, 3, 24, strides=2, padding="SAME"),
    Conv("dense-c2-o5-dil2-s2", 2, 11, 10, 2, 3, 3, 5, strides=2, dilations=2),
    Conv("dense-c4-o33-nchw-explicit", 1, 7, 9, 4, 3, 3, 33, data_format="NCHW",
         padding=[[0, 0], [0, 0], [2, 0], [1, 3]]),
    Conv("dense-c1-o1-n1-same", 1, 9, 8, 1, 3, 3, 1, padding="SAME"),
    Conv("dense-c3-o19-k1x3-s1x2", 2, 6, 11, 3, 1, 3, 19, strides=[1, 2]),
    # the register-tiled dense kernel: blocks of two vectors and a last block of one
    # (odd vector counts), partial last vectors, tap groups of every size, border rows
    # and columns on both sides, strides and dilations
    Conv("dense-c2-o64-same", 2, 9, 12, 2, 3, 3, 64, padding="SAME"),
    Conv("dense-c3-o40-dil2-same", 2, 13, 11, 3, 3, 3, 40, dilations=2, padding="SAME"),
    Conv("dense-c1-o9-k5-s2-explicit", 2, 14, 13, 1, 5, 5, 9, strides=2,
         padding=[[0, 0], [4, 1], [2, 3], [0, 0]]),
    Conv("dense-c1-o8-k8-s3-same", 1, 20, 23, 1, 8, 8, 8, strides=3, padding="SAME"),
    Conv("dense-c2-o3-k1", 3, 5, 6, 2, 1, 1, 3),
    Conv("dense-c3-o23-k2x4-s2x1-dil1x2-nchw", 2, 11, 16, 3, 2, 4, 23, strides=[1, 1, 2, 1],
         dilations=[1, 1, 1, 2], padding="SAME", data_format="NCHW"),
    Conv("dense-c1-o64-k3-wide-rows", 1, 6, 70, 1, 3, 3, 64, padding="SAME"),
]
#: the ids of the cases whose filter gradients are also checked at every thread count
THREAD_CASES = ("dw-c13-same", "dw-c70-dil2-valid", "dense-c1-o64-valid",
                "dense-c1-o37-k7-s2-same", "dense-c3-o40-dil2-same",
                "dense-c1-o9-k5-s2-explicit", "dense-c3-o23-k2x4-s2x1-dil1x2-nchw")


def test_native_cases_take_the_native_path():
    for case in NATIVE_CASES:
        kind = _backward.native_filter_grad_kind(case.C, case.O, case.groups,
                                                 (case.KH, case.KW))
        assert kind == ("depthwise" if case.groups > 1 else "dense"), case.id
    assert _backward.native_filter_grad_kind(16, 16, 1, (3, 3)) is None
    assert _backward.native_filter_grad_kind(3, 64, 1, (7, 7)) is None   # 147 taps: GEMM
    assert _backward.native_filter_grad_kind(8, 16, 8, (3, 3)) is None   # channel multiplier 2
    assert _backward.native_filter_grad_kind(8, 8, 2, (3, 3)) is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", params(NATIVE_CASES))
def test_native_filter_and_input_gradients_match_reference(backend, case, dtype, rng,
                                                           monkeypatch):
    """Both gradients of depthwise and few-channel convolutions, in several pieces of rows."""
    monkeypatch.setattr(fastconv._tuning, "FILTER_GRAD_PIECE_WORK", 700)
    x, w = case.data(rng, dtype)
    dy = _grad_out(case, rng, x, w, dtype)
    dx, dw, _ = case.backward(x, w, dy, backend=backend, need=("input", "filters"))
    jx, jw, _ = _judge(case, x, w, dy)
    assert dw.dtype == dx.dtype == dtype
    assert_close(_nchw_to_nhwc(dx, case), jx, dtype, case.scale())
    assert_close(dw, jw, dtype, case.scale() * np.sqrt(dy.size / case.O))


@pytest.mark.parametrize("case", params(NATIVE_CASES))
def test_native_filter_gradient_matches_the_gemm_composition(backend, case, rng):
    x, w = case.data(rng, np.float64)
    dy = _grad_out(case, rng, x, w, np.float64)
    xn, w, dyn, s, d, p = _nhwc_problem(case, x, w, dy)
    module = _backends.resolve(backend)[1]
    ksize = (case.KH, case.KW)
    native = _backward.filters_grad(xn, dyn, ksize, s, d, p, case.groups, module, 2)
    composed = _backward.filters_grad(xn, dyn, ksize, s, d, p, case.groups, module, 2,
                                      composed=True)
    assert_close(native, composed, np.float64, case.scale() * np.sqrt(dy.size))


def test_native_pieces_cover_the_rows_and_depend_on_shapes_only(monkeypatch):
    monkeypatch.setattr(fastconv._tuning, "FILTER_GRAD_MAX_PIECES", 5)
    for kind, x_shape, dy_shape, k in [("depthwise", (8, 56, 56, 128), (8, 56, 56, 128), (3, 3)),
                                       ("dense", (1, 5, 5, 1), (1, 3, 3, 4), (3, 3)),
                                       ("dense", (256, 28, 28, 1), (256, 26, 26, 64), (3, 3))]:
        rows, pieces, work = _backward.native_filter_grad_pieces(kind, x_shape, dy_shape, k)
        N, OH = dy_shape[:2]
        assert 1 <= pieces <= 5 and (pieces - 1) * rows < N * OH <= pieces * rows
        cg = 1 if kind == "depthwise" else x_shape[3]
        assert work == N * OH * dy_shape[2] * k[0] * k[1] * cg * dy_shape[3]


def test_native_filter_gradients_are_bitwise_identical_for_any_thread_count(backend, rng,
                                                                            monkeypatch):
    monkeypatch.setattr(fastconv._tuning, "FILTER_GRAD_PIECE_WORK", 2000)
    monkeypatch.setattr(fastconv._tuning, "FILTER_GRAD_SINGLE_THREAD_WORK", 0)
    for dtype in DTYPES:
        for case in [c for c in NATIVE_CASES if c.id in THREAD_CASES]:
            x, w = case.data(rng, dtype)
            dy = _grad_out(case, rng, x, w, dtype)
            runs = [case.backward(x, w, dy, backend=backend, num_threads=n,
                                  need=("input", "filters")) for n in (1, 2, 3)]
            for other in runs[1:]:
                for a, b in zip(runs[0], other):
                    if a is not None:
                        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("level", ["generic", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_native_filter_gradients_at_every_simd_level(monkeypatch, rng, level, dtype):
    """Each compiled variant of the native kernels against the reference."""
    if "cython" not in fastconv.available_backends():
        pytest.skip("the cython backend is not built")
    from fastconv._backends.cython import driver
    if driver.SIMD_LEVELS.index(level) > driver.SIMD_LEVELS.index(driver.cpu_simd_level()):
        pytest.skip(f"CPU lacks {level} (best: {driver.cpu_simd_level()})")
    monkeypatch.setenv(driver.SIMD_ENV_VAR, level)
    monkeypatch.setattr(fastconv._tuning, "FILTER_GRAD_PIECE_WORK", 700)
    for case in [c for c in NATIVE_CASES if c.id in THREAD_CASES]:
        x, w = case.data(rng, dtype)
        dy = _grad_out(case, rng, x, w, dtype)
        dw = case.backward(x, w, dy, backend="cython", need=("filters",), num_threads=2)[1]
        jw = _judge(case, x, w, dy)[1]
        assert_close(dw, jw, dtype, case.scale() * np.sqrt(dy.size / case.O))


# ----------------------------------------------------------------------------- tf/torch names
def test_nn_backprop_names(rng):
    case = CASES[2]
    x, w = case.data(rng, np.float64)
    dy = _grad_out(case, rng, x, w, np.float64)
    dx, dw, _ = case.backward(x, w, dy)
    s4 = [1, 2, 1, 1]
    assert_close(nn.conv2d_backprop_input(x.shape, w, dy, s4, "VALID"), dx)
    assert_close(nn.conv2d_backprop_filter(x, w.shape, dy, s4, "VALID"), dw)
    assert_close(nn.conv2d_transpose(dy, w, x.shape, s4, "VALID"), dx)
    pads = [0, 0, 1, 2, 3, 0, 0, 0]
    c2 = CASES[11]
    x, w = c2.data(rng, np.float64)
    dy = _grad_out(c2, rng, x, w, np.float64)
    dx, dw, _ = c2.backward(x, w, dy)
    assert_close(nn.conv2d_backprop_input(x.shape, w, dy, [1, 1, 2, 1], "EXPLICIT",
                                          explicit_paddings=pads), dx)
    assert_close(nn.conv2d_backprop_filter(x, w.shape, dy, [1, 1, 2, 1], "EXPLICIT",
                                           explicit_paddings=pads), dw)
    y, am = nn.max_pool_with_argmax(x, 2, 2, "SAME")
    assert am.dtype == np.int64
    assert nn.max_pool_with_argmax(x, 2, 2, "SAME", output_dtype=np.int32)[1].dtype == np.int32


def test_functional_grad_names(rng):
    x = rng.standard_normal((2, 4, 8, 6))
    wt = rng.standard_normal((6, 2, 3, 2))                           # OIHW, groups 2
    y = F.conv2d(x, wt, None, stride=(2, 1), padding=1, dilation=(1, 2), groups=2)
    dy = rng.standard_normal(y.shape)
    import fastconv.functional.grad as G
    dx, dw, _ = fastconv.conv2d_backward(x, wt.transpose(2, 3, 1, 0), dy, [1, 1, 2, 1],
                                         [[0, 0], [0, 0], [1, 1], [1, 1]], "NCHW", [1, 1, 1, 2],
                                         groups=2)
    assert_close(G.conv2d_input(x.shape, wt, dy, (2, 1), 1, (1, 2), 2), dx)
    assert_close(G.conv2d_weight(x, wt.shape, dy, (2, 1), 1, (1, 2), 2), dw.transpose(3, 2, 0, 1))
    # conv_transpose2d is the adjoint of conv2d
    xt = F.conv_transpose2d(dy, wt, stride=(2, 1), padding=1, dilation=(1, 2), groups=2,
                            output_padding=(1, 0))
    assert xt.shape == x.shape
    np.testing.assert_allclose(np.vdot(y, dy), np.vdot(x, xt), rtol=1e-10)
    with pytest.raises(ValueError, match="output_padding"):
        F.conv_transpose2d(dy, wt, stride=(2, 1), padding=1, groups=2, output_padding=2)
