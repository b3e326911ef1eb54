"""fastconv.compat.cs231n against loop implementations of the assignment's naive layers."""
from dataclasses import dataclass

import numpy as np
import pytest

from cases import DTYPES, assert_close, params, tolerance
from fastconv.compat import cs231n


# ---------------------------------------------------------------------------- loop references
def conv_ref(x, w, b, stride, pad):
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    OH, OW = 1 + (H + 2 * pad - HH) // stride, 1 + (W + 2 * pad - WW) // stride
    out = np.zeros((N, F, OH, OW), dtype=np.result_type(x, w, b))
    for i in range(OH):
        for j in range(OW):
            patch = xp[:, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
            out[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return out


def conv_backward_ref(dout, x, w, stride, pad):
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            hs, ws = slice(i * stride, i * stride + HH), slice(j * stride, j * stride + WW)
            dxp[:, :, hs, ws] += np.tensordot(dout[:, :, i, j], w, axes=(1, 0))
            dw += np.tensordot(dout[:, :, i, j], xp[:, :, hs, ws], axes=(0, 0))
    return dxp[:, :, pad:pad + H, pad:pad + W], dw, dout.sum(axis=(0, 2, 3))


def pool_ref(x, ph, pw, stride):
    N, C, H, W = x.shape
    OH, OW = 1 + (H - ph) // stride, 1 + (W - pw) // stride
    out = np.zeros((N, C, OH, OW), dtype=x.dtype)
    for i in range(OH):
        for j in range(OW):
            out[:, :, i, j] = x[:, :, i * stride:i * stride + ph, j * stride:j * stride + pw].max(
                axis=(2, 3))
    return out


def pool_backward_ref(dout, x, ph, pw, stride):
    """First maximum in window order gets the gradient; overlapping windows add up."""
    dx = np.zeros_like(x)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    win = x[n, c, i * stride:i * stride + ph, j * stride:j * stride + pw]
                    p, q = np.unravel_index(np.argmax(win), win.shape)
                    dx[n, c, i * stride + p, j * stride + q] += dout[n, c, i, j]
    return dx


def numerical_grad(f, x, df, h=1e-5, sample=None):
    """Central differences of ``sum(f(x) * df)`` (float64), perturbing a copy of ``x``.

    With ``sample``, only that many entries (drawn at random) are differenced; the
    others are NaN and :func:`assert_grad` skips them.
    """
    x = x.copy()
    grad = np.zeros_like(x)
    indices = list(np.ndindex(x.shape))
    if sample is not None and sample < len(indices):
        grad[...] = np.nan
        pick = np.random.default_rng(0).choice(len(indices), sample, replace=False)
        indices = [indices[i] for i in pick]
    for idx in indices:
        old = x[idx]
        x[idx] = old + h
        pos = f(x).copy()
        x[idx] = old - h
        neg = f(x).copy()
        x[idx] = old
        grad[idx] = np.sum((pos - neg) * df) / (2 * h)
    return grad


def assert_grad(actual, numeric, rel=1e-7):
    """Judged on max|diff| / max|numeric| (the notebook's elementwise rel_error is fragile)."""
    known = ~np.isnan(numeric)
    scale = max(np.abs(numeric[known]).max(), 1e-12)
    assert np.abs(actual[known] - numeric[known]).max() / scale < rel


# ---------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Conv:
    id: str
    x: tuple
    w: tuple
    stride: int
    pad: int

    @property
    def param(self):
        return {"stride": self.stride, "pad": self.pad}

    def data(self, rng, dtype=np.float64):
        x = rng.standard_normal(self.x).astype(dtype)
        w = rng.standard_normal(self.w).astype(dtype)
        b = rng.standard_normal(self.w[0]).astype(dtype)
        return x, w, b


@dataclass(frozen=True)
class Pool:
    id: str
    x: tuple
    ph: int
    pw: int
    stride: int

    @property
    def param(self):
        return {"pool_height": self.ph, "pool_width": self.pw, "stride": self.stride}


CONVS = [
    Conv("notebook_linspace", (2, 3, 4, 4), (3, 3, 4, 4), 2, 1),
    Conv("notebook_gradcheck", (4, 3, 5, 5), (2, 3, 3, 3), 1, 1),
    Conv("notebook_fast", (100, 3, 31, 31), (25, 3, 3, 3), 2, 1),
    Conv("nonsquare_k3x2_s2_nontiling", (2, 3, 7, 6), (4, 3, 3, 2), 2, 1),
    Conv("k1x4_s3_pad0", (1, 2, 9, 10), (3, 2, 1, 4), 3, 0),
    Conv("k7_same_threelayer", (2, 3, 16, 16), (5, 3, 7, 7), 1, 3),
]
POOLS = [
    Pool("notebook_backward", (3, 2, 8, 8), 2, 2, 2),
    Pool("notebook_fast", (100, 3, 32, 32), 2, 2, 2),
    Pool("overlap_3x3_s1", (3, 2, 8, 8), 3, 3, 1),
    Pool("nonsquare_3x2_s2_nontiling", (2, 3, 7, 9), 3, 2, 2),
    Pool("window_gt_stride_4x3_s3", (1, 2, 10, 11), 4, 3, 3),
]
SMALL_CONVS = [c for c in CONVS if np.prod(c.x) < 1000]


# ---------------------------------------------------------------------------- conv
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", params(CONVS))
def test_conv_against_loops(case, dtype):
    rng = np.random.default_rng(231)
    x, w, b = case.data(rng, dtype)
    out, cache = cs231n.conv_forward_fast(x, w, b, case.param)
    ref = conv_ref(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                   case.stride, case.pad)
    assert out.dtype == dtype and out.flags.c_contiguous
    assert_close(out, ref, dtype, scale=np.sqrt(np.prod(case.w[1:])))
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx, dw, db = cs231n.conv_backward_fast(dout, cache)
    rdx, rdw, rdb = conv_backward_ref(dout.astype(np.float64), x.astype(np.float64),
                                      w.astype(np.float64), case.stride, case.pad)
    assert (dx.shape, dw.shape, db.shape) == (x.shape, w.shape, b.shape)
    assert dx.dtype == dw.dtype == db.dtype == dtype
    np.testing.assert_allclose(dx, rdx, **tolerance(dtype, np.prod(case.w)))
    np.testing.assert_allclose(dw, rdw, **tolerance(dtype, out[:, 0].size))
    np.testing.assert_allclose(db, rdb, **tolerance(dtype, out[:, 0].size))


@pytest.mark.parametrize("case", params(SMALL_CONVS))
def test_conv_numerical_gradient(case):
    rng = np.random.default_rng(1)
    x, w, b = case.data(rng)
    out, cache = cs231n.conv_forward_fast(x, w, b, case.param)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = cs231n.conv_backward_fast(dout, cache)
    p = case.param
    assert_grad(dx, numerical_grad(lambda v: cs231n.conv_forward_fast(v, w, b, p)[0], x, dout))
    assert_grad(dw, numerical_grad(lambda v: cs231n.conv_forward_fast(x, v, b, p)[0], w, dout))
    assert_grad(db, numerical_grad(lambda v: cs231n.conv_forward_fast(x, w, v, p)[0], b, dout))


# ---------------------------------------------------------------------------- pool
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", params(POOLS))
def test_pool_against_loops(case, dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(case.x).astype(dtype)
    out, cache = cs231n.max_pool_forward_fast(x, case.param)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, pool_ref(x, case.ph, case.pw, case.stride))
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx = cs231n.max_pool_backward_fast(dout, cache)
    assert dx.dtype == dtype and dx.shape == x.shape
    assert_close(dx, pool_backward_ref(dout, x, case.ph, case.pw, case.stride), dtype,
                 scale=case.ph * case.pw)


@pytest.mark.parametrize("case", params([POOLS[0], POOLS[2], POOLS[3]]))
def test_pool_numerical_gradient(case):
    rng = np.random.default_rng(3)
    x = rng.permutation(np.prod(case.x)).reshape(case.x) / 7.0   # distinct values: no kinks
    out, cache = cs231n.max_pool_forward_fast(x, case.param)
    dout = rng.standard_normal(out.shape)
    dx = cs231n.max_pool_backward_fast(dout, cache)
    f = lambda v: cs231n.max_pool_forward_fast(v, case.param)[0]  # noqa: E731
    assert_grad(dx, numerical_grad(f, x, dout))


@pytest.mark.parametrize("case", params(POOLS[:1] + POOLS[2:]))
def test_pool_ties_go_to_the_first_maximum_once(case):
    rng = np.random.default_rng(4)
    x = rng.integers(0, 2, size=case.x).astype(np.float64)   # many tied maxima
    x[0, 0] = 0.0                                            # a plane of ties only
    out, cache = cs231n.max_pool_forward_fast(x, case.param)
    dout = rng.standard_normal(out.shape)
    dx = cs231n.max_pool_backward_fast(dout, cache)
    np.testing.assert_allclose(dx, pool_backward_ref(dout, x, case.ph, case.pw, case.stride),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx.sum(), dout.sum())          # never split, never duplicated


# ---------------------------------------------------------------------------- sandwiches
def test_conv_relu_numerical_gradient():
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((3, 3, 3, 3)), \
        rng.standard_normal(3)
    p = {"stride": 1, "pad": 1}
    out, cache = cs231n.conv_relu_forward(x, w, b, p)
    np.testing.assert_allclose(out, np.maximum(conv_ref(x, w, b, 1, 1), 0), rtol=1e-11,
                               atol=1e-11)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = cs231n.conv_relu_backward(dout, cache)
    f = cs231n.conv_relu_forward
    assert_grad(dx, numerical_grad(lambda v: f(v, w, b, p)[0], x, dout))
    assert_grad(dw, numerical_grad(lambda v: f(x, v, b, p)[0], w, dout))
    assert_grad(db, numerical_grad(lambda v: f(x, w, v, p)[0], b, dout))


@pytest.mark.parametrize("size, pool", [
    (16, {"pool_height": 2, "pool_width": 2, "stride": 2}),
    (7, {"pool_height": 3, "pool_width": 2, "stride": 1})], ids=["notebook_2x2_s2", "overlap_3x2_s1"])
def test_conv_relu_pool_numerical_gradient(size, pool):
    rng = np.random.default_rng(6)
    x, w, b = rng.standard_normal((2, 3, size, size)), rng.standard_normal((3, 3, 3, 3)), \
        rng.standard_normal(3)
    p = {"stride": 1, "pad": 1}
    out, cache = cs231n.conv_relu_pool_forward(x, w, b, p, pool)
    ref = pool_ref(np.maximum(conv_ref(x, w, b, 1, 1), 0), pool["pool_height"],
                   pool["pool_width"], pool["stride"])
    np.testing.assert_allclose(out, ref, rtol=1e-11, atol=1e-11)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = cs231n.conv_relu_pool_backward(dout, cache)
    f = cs231n.conv_relu_pool_forward
    assert_grad(dx, numerical_grad(lambda v: f(v, w, b, p, pool)[0], x, dout, sample=300),
                rel=1e-6)
    assert_grad(dw, numerical_grad(lambda v: f(x, v, b, p, pool)[0], w, dout), rel=1e-6)
    assert_grad(db, numerical_grad(lambda v: f(x, w, v, p, pool)[0], b, dout), rel=1e-6)


def test_relu_pair():
    x = np.array([[-1.0, 0.0, 2.0]])
    out, cache = cs231n.relu_forward(x)
    np.testing.assert_array_equal(out, [[0.0, 0.0, 2.0]])
    np.testing.assert_array_equal(cs231n.relu_backward(np.ones((1, 3)), cache), [[0, 0, 1]])


# ---------------------------------------------------------------------------- contracts
CONV_P = {"stride": 1, "pad": 1}
POOL_P = {"pool_height": 2, "pool_width": 2, "stride": 2}


def _roundtrip(name, x, w, b):
    """Forward and backward of layer ``name`` (with a fresh dout)."""
    fwd, bwd = (getattr(cs231n, n) for n in NAMES[name])
    if name.startswith("max_pool"):
        out, cache = fwd(x, POOL_P)
    elif name.endswith("pool"):
        out, cache = fwd(x, w, b, CONV_P, POOL_P)
    else:
        out, cache = fwd(x, w, b, CONV_P)
    dout = np.random.default_rng(7).standard_normal(out.shape)
    return out, cache, dout, bwd


def _grads(result):
    """A backward's gradients as a list (the pool backward returns dx alone)."""
    return [result] if isinstance(result, np.ndarray) else list(result)


LAYERS = ["conv", "conv_relu", "conv_relu_pool", "max_pool"]
NAMES = {"conv": ("conv_forward_fast", "conv_backward_fast"),
         "conv_relu": ("conv_relu_forward", "conv_relu_backward"),
         "conv_relu_pool": ("conv_relu_pool_forward", "conv_relu_pool_backward"),
         "max_pool": ("max_pool_forward_fast", "max_pool_backward_fast")}


@pytest.mark.parametrize("layer", LAYERS)
def test_inputs_and_dout_unmodified(layer):
    rng = np.random.default_rng(8)
    x, w, b = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((4, 3, 3, 3)), \
        rng.standard_normal(4)
    saved = [a.copy() for a in (x, w, b)]
    out, cache, dout, bwd = _roundtrip(layer, x, w, b)
    dsaved = dout.copy()
    first = bwd(dout, cache)
    second = bwd(dout, cache)                          # a cache can be used twice
    for a, s in zip((x, w, b, dout), saved + [dsaved]):
        np.testing.assert_array_equal(a, s)
    for g1, g2 in zip(_grads(first), _grads(second)):
        np.testing.assert_array_equal(g1, g2)


@pytest.mark.parametrize("layer", LAYERS)
def test_cache_independent_of_later_edits(layer):
    rng = np.random.default_rng(9)
    x, w, b = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((4, 3, 3, 3)), \
        rng.standard_normal(4)
    name = layer
    _, cache, dout, bwd = _roundtrip(name, x.copy(), w, b)
    expected = bwd(dout, cache)
    x2 = x.copy()
    _, cache2, _, _ = _roundtrip(name, x2, w, b)
    x2 -= x2.max()        # what the notebook's NaN came from: an in-place edit of x
    x2[...] = 0.0
    got = bwd(dout, cache2)
    for g, e in zip(_grads(got), _grads(expected)):
        np.testing.assert_array_equal(g, e)


def test_float64_data_float32_weights_promote():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 3, 8, 8))
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = np.zeros(4, np.float32)
    out, cache = cs231n.conv_relu_pool_forward(x, w, b, CONV_P, POOL_P)
    assert out.dtype == np.float64
    grads = cs231n.conv_relu_pool_backward(np.ones_like(out), cache)
    assert [g.dtype for g in grads] == [np.float64] * 3
    ref = pool_ref(np.maximum(conv_ref(x, w.astype(np.float64), b, 1, 1), 0), 2, 2, 2)
    np.testing.assert_allclose(out, ref, rtol=1e-11, atol=1e-11)


def test_int_bias_and_float32_stays_float32():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, 3, 6, 6))
    w = rng.standard_normal((2, 3, 3, 3))
    out, _ = cs231n.conv_forward_fast(x, w, np.array([0, 128]), CONV_P)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, conv_ref(x, w, np.array([0.0, 128.0]), 1, 1), rtol=1e-11,
                               atol=1e-11)
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    out, cache = cs231n.conv_forward_fast(x32, w32, np.zeros(2, np.float32), CONV_P)
    assert out.dtype == np.float32
    assert all(g.dtype == np.float32 for g in cs231n.conv_backward_fast(np.ones_like(out), cache))


def test_non_contiguous_inputs():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 8, 8, 3)).transpose(0, 3, 1, 2)
    w = rng.standard_normal((3, 3, 3, 4)).transpose(3, 2, 0, 1)
    b = rng.standard_normal(4)
    out, cache = cs231n.conv_forward_fast(x, w, b, CONV_P)
    np.testing.assert_allclose(out, conv_ref(x, w, b, 1, 1), rtol=1e-11, atol=1e-11)
    pooled, _ = cs231n.max_pool_forward_fast(x[:, :, ::2], POOL_P)
    np.testing.assert_array_equal(pooled, pool_ref(x[:, :, ::2], 2, 2, 2))


@pytest.mark.parametrize("call, match", [
    (lambda x, w, b: cs231n.conv_forward_fast(x, w, b, {"stride": 1}), "pad"),
    (lambda x, w, b: cs231n.conv_forward_fast(x, w, b, {"stride": 0, "pad": 0}), "stride"),
    (lambda x, w, b: cs231n.conv_forward_fast(x, w[:, :2], b, CONV_P), "channels"),
    (lambda x, w, b: cs231n.conv_forward_fast(x, w, b[:1], CONV_P), "b has shape"),
    (lambda x, w, b: cs231n.conv_forward_fast(x[0], w, b, CONV_P), "x must be 4-D"),
    (lambda x, w, b: cs231n.max_pool_forward_fast(x, {"pool_height": 2, "stride": 2}),
     "pool_width"),
    (lambda x, w, b: cs231n.max_pool_forward_fast(x, {"pool_height": 9, "pool_width": 2,
                                                      "stride": 2}), "does not fit"),
], ids=["no_pad", "stride0", "channels", "bias_shape", "x_ndim", "no_pool_width", "too_big"])
def test_errors_name_the_parameter(call, match):
    x, w, b = np.zeros((1, 3, 8, 8)), np.zeros((2, 3, 3, 3)), np.zeros(2)
    with pytest.raises((ValueError, KeyError, TypeError), match=match):
        call(x, w, b)


def test_dout_shape_checked():
    out, cache = cs231n.conv_forward_fast(np.zeros((1, 3, 8, 8)), np.zeros((2, 3, 3, 3)),
                                          np.zeros(2), CONV_P)
    with pytest.raises(ValueError, match="dout has shape"):
        cs231n.conv_backward_fast(np.zeros((1, 2, 7, 8)), cache)
