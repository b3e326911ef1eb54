"""fastconv.compat.dlfs against loop implementations of the book's im2col/col2im and layers."""
from dataclasses import dataclass

import numpy as np
import pytest

from cases import DTYPES, params
from fastconv.compat import dlfs


def im2col_ref(x, fh, fw, stride, pad):
    N, C, H, W = x.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (H + 2 * pad - fh) // stride + 1, (W + 2 * pad - fw) // stride + 1
    rows = [xp[n, :, i * stride:i * stride + fh, j * stride:j * stride + fw].reshape(-1)
            for n in range(N) for i in range(oh) for j in range(ow)]
    return np.array(rows)


def col2im_ref(col, shape, fh, fw, stride, pad):
    N, C, H, W = shape
    oh, ow = (H + 2 * pad - fh) // stride + 1, (W + 2 * pad - fw) // stride + 1
    img = np.zeros((N, C, H + 2 * pad, W + 2 * pad))
    r = 0
    for n in range(N):
        for i in range(oh):
            for j in range(ow):
                img[n, :, i * stride:i * stride + fh, j * stride:j * stride + fw] += \
                    col[r].reshape(C, fh, fw)
                r += 1
    return img[:, :, pad:pad + H, pad:pad + W]


def numerical_grad(f, x, h=1e-5):
    """Central differences of the scalar ``f`` (float64) over a copy of ``x``."""
    x = x.copy()
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + h
        pos = f(x)
        x[idx] = old - h
        neg = f(x)
        x[idx] = old
        grad[idx] = (pos - neg) / (2 * h)
    return grad


def assert_grad(actual, numeric, rel=1e-7):
    scale = max(np.abs(numeric).max(), 1e-12)
    assert np.abs(actual - numeric).max() / scale < rel


@dataclass(frozen=True)
class Unfold:
    id: str
    shape: tuple
    fh: int
    fw: int
    stride: int = 1
    pad: int = 0


UNFOLDS = [
    Unfold("gradient_check_10x10_k3", (1, 1, 10, 10), 3, 3),
    Unfold("mnist_k5", (2, 1, 28, 28), 5, 5),
    Unfold("pool_2x2_s2", (2, 3, 8, 8), 2, 2, 2),
    Unfold("nonsquare_k3x2_s2_pad1", (2, 3, 7, 6), 3, 2, 2, 1),
    Unfold("overlap_k3_s1_pad2", (1, 2, 5, 6), 3, 3, 1, 2),
    Unfold("nontiling_k2x4_s3", (2, 2, 9, 10), 2, 4, 3),
]


@pytest.mark.parametrize("dtype", DTYPES + (np.int64,))
@pytest.mark.parametrize("case", params(UNFOLDS))
def test_im2col_layout_and_float64(case, dtype):
    x = (np.random.default_rng(0).standard_normal(case.shape) * 10).astype(dtype)
    saved = x.copy()
    col = dlfs.im2col(x, case.fh, case.fw, case.stride, case.pad)
    assert col.dtype == np.float64
    np.testing.assert_array_equal(col, im2col_ref(x, case.fh, case.fw, case.stride, case.pad))
    np.testing.assert_array_equal(x, saved)


@pytest.mark.parametrize("case", params(UNFOLDS))
def test_col2im_adds_up_and_is_the_adjoint(case):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(case.shape)
    col = rng.standard_normal(im2col_ref(x, case.fh, case.fw, case.stride, case.pad).shape)
    img = dlfs.col2im(col, list(case.shape), case.fh, case.fw, case.stride, case.pad)
    assert img.dtype == np.float64 and img.shape == case.shape
    np.testing.assert_allclose(img, col2im_ref(col, case.shape, case.fh, case.fw, case.stride,
                                               case.pad), rtol=1e-12, atol=1e-12)
    lhs = np.sum(dlfs.im2col(x, case.fh, case.fw, case.stride, case.pad) * col)
    np.testing.assert_allclose(lhs, np.sum(x * img), rtol=1e-11)


def test_defaults_and_integer_toy_input():
    x = np.arange(16).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(dlfs.im2col(x, 3, 3), im2col_ref(x, 3, 3, 1, 0))
    conv = dlfs.Convolution(np.ones((1, 1, 3, 3)), np.zeros(1))
    out = conv.forward(x)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out[0, 0], [[45.0, 54.0], [81.0, 90.0]])


@pytest.mark.parametrize("geom", [(1, 0), (2, 1), (1, 2)], ids=["s1_p0", "s2_p1", "s1_p2"])
def test_convolution_layer(geom):
    stride, pad = geom
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 7, 6))
    W, b = rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(4)
    layer = dlfs.Convolution(W, b, stride, pad)
    out = layer.forward(x)
    col = im2col_ref(x, 3, 2, stride, pad)
    N, oh, ow = 2, (7 + 2 * pad - 3) // stride + 1, (6 + 2 * pad - 2) // stride + 1
    ref = (col @ W.reshape(4, -1).T + b).reshape(N, oh, ow, 4).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(out, ref, rtol=1e-11, atol=1e-11)
    np.testing.assert_array_equal(layer.col, col)
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    assert layer.dW.shape == W.shape and layer.db.shape == b.shape and dx.shape == x.shape
    loss = lambda: np.sum(layer.forward(x) * dout)  # noqa: E731
    gx = numerical_grad(lambda v: np.sum(dlfs.Convolution(W, b, stride, pad).forward(v) * dout), x)
    assert_grad(dx, gx)

    def vary(arr):                      # the book's numerical gradient: params edited in place
        def f(v):
            arr[...] = v
            return loss()
        return f
    W0, b0 = W.copy(), b.copy()
    gW, gb = numerical_grad(vary(W), W0), numerical_grad(vary(b), b0)
    W[...], b[...] = W0, b0
    assert_grad(layer.dW, gW)
    assert_grad(layer.db, gb)


@pytest.mark.parametrize("geom", [(2, 2, 2, 0), (3, 3, 1, 0), (3, 2, 2, 1)],
                         ids=["book_2x2_s2", "overlap_3x3_s1", "nonsquare_3x2_s2_pad1"])
def test_pooling_layer(geom):
    ph, pw, stride, pad = geom
    rng = np.random.default_rng(3)
    x = rng.permutation(2 * 3 * 8 * 9).reshape(2, 3, 8, 9) / 7.0 - 30.0   # distinct values
    layer = dlfs.Pooling(ph, pw, stride, pad)
    out = layer.forward(x)
    rows = im2col_ref(x, ph, pw, stride, pad).reshape(-1, 3, ph * pw)
    oh, ow = (8 + 2 * pad - ph) // stride + 1, (9 + 2 * pad - pw) // stride + 1
    ref = rows.max(axis=2).reshape(2, oh, ow, 3).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(out, ref)
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    gx = numerical_grad(lambda v: np.sum(dlfs.Pooling(ph, pw, stride, pad).forward(v) * dout), x)
    assert_grad(dx, gx)


def test_pooling_ties_go_to_the_first_maximum():
    x = np.zeros((1, 1, 4, 4))
    layer = dlfs.Pooling(2, 2, stride=1)
    dx = layer.backward(np.ones(layer.forward(x).shape))
    expected = np.zeros((4, 4))
    expected[:3, :3] = 1.0
    np.testing.assert_array_equal(dx[0, 0], expected)
    assert layer.forward(np.ones((1, 1, 4, 4), np.float32)).dtype == np.float64


def test_layers_leave_inputs_alone_and_keep_their_own_x():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 2, 6, 6))
    conv = dlfs.Convolution(rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3), 1, 1)
    pool = dlfs.Pooling(2, 2)
    saved = x.copy()
    out = pool.forward(conv.forward(x))
    dout = rng.standard_normal(out.shape)
    dsaved = dout.copy()
    dx = conv.backward(pool.backward(dout))
    x[...] = 0.0
    np.testing.assert_array_equal(conv.backward(pool.backward(dout)), dx)
    np.testing.assert_array_equal(dout, dsaved)
    assert not np.shares_memory(conv.x, x)
    np.testing.assert_array_equal(conv.x, saved)


@pytest.mark.parametrize("call, match", [
    (lambda: dlfs.im2col(np.zeros((1, 1, 4, 4)), 0, 3), "filter_h"),
    (lambda: dlfs.im2col(np.zeros((1, 1, 4, 4)), 3, 3, stride=0), "stride"),
    (lambda: dlfs.im2col(np.zeros((1, 4, 4)), 3, 3), "input_data must be 4-D"),
    (lambda: dlfs.col2im(np.zeros((4, 8)), (1, 1, 4, 4), 3, 3), "col has shape"),
    (lambda: dlfs.col2im(np.zeros((4, 9)), (1, 4, 4), 3, 3), "input_shape"),
    (lambda: dlfs.Convolution(np.zeros((2, 3, 3, 3)), np.zeros(2)).forward(np.zeros((1, 1, 5, 5))),
     "channels"),
], ids=["filter_h", "stride", "ndim", "col_shape", "input_shape", "conv_channels"])
def test_errors_name_the_parameter(call, match):
    with pytest.raises(ValueError, match=match):
        call()
