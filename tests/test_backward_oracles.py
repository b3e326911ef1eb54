"""Backward ops on every backend against TensorFlow's GradientTape and PyTorch's autograd."""
import numpy as np
import pytest

import fastconv
import fastconv.functional as F
import fastconv.nn as nn
from cases import DTYPES, assert_close

pytestmark = pytest.mark.oracle

# (id, N, H, W, C, KH, KW, O, strides, dilations, padding, groups)
CONV_CASES = [
    ("n1-c1-same", 1, 5, 5, 1, 3, 3, 1, 1, 1, "SAME", 1),
    ("k3x2-s2-same-asym", 2, 7, 8, 3, 3, 2, 5, 2, 1, "SAME", 1),
    ("k2x3-s2x1-valid", 2, 8, 7, 4, 2, 3, 6, [2, 1], 1, "VALID", 1),
    ("s2-same-even", 2, 8, 6, 3, 3, 3, 4, 2, 1, "SAME", 1),
    ("dilation2-same", 1, 9, 10, 2, 3, 3, 4, 1, 2, "SAME", 1),
    ("groups2-same", 2, 6, 6, 4, 3, 3, 6, 1, 1, "SAME", 2),
    ("groups2-s2", 2, 9, 7, 4, 3, 3, 8, 2, 1, "SAME", 2),
    ("explicit-pad", 1, 6, 7, 3, 1, 5, 2, [1, 2], 1, [[0, 0], [1, 2], [3, 0], [0, 0]], 1),
    ("k5-s3-odd-channels", 1, 11, 11, 17, 5, 5, 19, 3, 1, "SAME", 1),
]
IDS = [c[0] for c in CONV_CASES]
# TensorFlow's CPU kernels compute no gradient of a dilated or grouped convolution
# ("Current CPU implementations do not yet support dilation rates larger than 1",
# "Gradients for grouped convolutions are not supported on CPU"); PyTorch checks those
# below, and tf.nn.depthwise_conv2d (which has CPU gradients) checks dilation here.
TF_CASES = [c for c in CONV_CASES if c[9] == 1 and c[11] == 1]
TF_IDS = [c[0] for c in TF_CASES]


def _data(rng, case, dtype):
    _, N, H, W, C, KH, KW, O, s, d, p, g = case
    x = rng.standard_normal((N, H, W, C)).astype(dtype)
    w = rng.standard_normal((KH, KW, C // g, O)).astype(dtype)
    return x, w


def _scale(case):
    return 3 * np.sqrt(case[5] * case[6] * case[4] * case[1] * case[2] * case[3])


# ----------------------------------------------------------------------------- TensorFlow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", TF_CASES, ids=TF_IDS)
def test_conv2d_gradients_match_tensorflow(tf, backend, rng, case, dtype):
    x, w = _data(rng, case, dtype)
    _, N, H, W, C, KH, KW, O, s, d, p, g = case
    b = rng.standard_normal(O).astype(dtype)
    tx, tw, tb = tf.Variable(x), tf.Variable(w), tf.Variable(b)
    with tf.GradientTape() as tape:
        y = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(tx, tw, s, p, dilations=d), tb))
        dy = tf.constant(rng.standard_normal(y.shape).astype(dtype))
        loss = tf.reduce_sum(y * dy)
    ex, ew, eb = (t.numpy() for t in tape.gradient(loss, [tx, tw, tb]))
    got = fastconv.conv2d_backward(x, w, dy.numpy(), s, p, dilations=d, groups=g,
                                   output=y.numpy(), activation="relu", backend=backend)
    for a, e in zip(got, (ex, ew, eb)):
        assert a.dtype == dtype
        assert_close(a, e, dtype, _scale(case))


@pytest.mark.parametrize("case", [c for c in TF_CASES if isinstance(c[10], str)],
                         ids=lambda c: c[0])   # explicit padding: the test below
def test_raw_backprop_ops_match_tensorflow(tf, rng, case):
    x, w = _data(rng, case, np.float32)
    _, N, H, W, C, KH, KW, O, s, d, p, g = case
    s4 = [1, s, s, 1] if np.ndim(s) == 0 else [1, *s, 1]
    d4 = [1, d, d, 1]
    dy = rng.standard_normal(tf.nn.conv2d(x, w, s, p, dilations=d).shape).astype(np.float32)
    ex = tf.raw_ops.Conv2DBackpropInput(input_sizes=x.shape, filter=w, out_backprop=dy,
                                        strides=s4, padding=p, dilations=d4).numpy()
    ew = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=w.shape, out_backprop=dy,
                                         strides=s4, padding=p, dilations=d4).numpy()
    assert_close(nn.conv2d_backprop_input(x.shape, w, dy, s4, p, dilations=d4), ex,
                 np.float32, _scale(case))
    assert_close(nn.conv2d_backprop_filter(x, w.shape, dy, s4, p, dilations=d4), ew,
                 np.float32, _scale(case))


def test_raw_backprop_ops_explicit_padding_match_tensorflow(tf, rng):
    x = rng.standard_normal((2, 6, 7, 3)).astype(np.float32)
    w = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)
    pads = [0, 0, 2, 1, 0, 3, 0, 0]
    s4 = [1, 2, 1, 1]
    y = tf.raw_ops.Conv2D(input=x, filter=w, strides=s4, padding="EXPLICIT",
                          explicit_paddings=pads)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    ex = tf.raw_ops.Conv2DBackpropInput(input_sizes=x.shape, filter=w, out_backprop=dy,
                                        strides=s4, padding="EXPLICIT",
                                        explicit_paddings=pads).numpy()
    ew = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=w.shape, out_backprop=dy,
                                         strides=s4, padding="EXPLICIT",
                                         explicit_paddings=pads).numpy()
    assert_close(nn.conv2d_backprop_input(x.shape, w, dy, s4, "EXPLICIT",
                                          explicit_paddings=pads), ex, np.float32, 30)
    assert_close(nn.conv2d_backprop_filter(x, w.shape, dy, s4, "EXPLICIT",
                                           explicit_paddings=pads), ew, np.float32, 30)


@pytest.mark.parametrize("case", TF_CASES, ids=TF_IDS)
def test_conv2d_transpose_matches_tensorflow(tf, backend, rng, case):
    x, w = _data(rng, case, np.float32)
    _, N, H, W, C, KH, KW, O, s, d, p, g = case
    y = rng.standard_normal(tf.nn.conv2d(x, w, s, p, dilations=d).shape).astype(np.float32)
    expected = tf.nn.conv2d_transpose(y, w, x.shape, s, p, dilations=d).numpy()
    got = fastconv.conv2d_transpose(y, w, x.shape, s, p, dilations=d, backend=backend)
    assert_close(got, expected, np.float32, _scale(case))
    assert_close(nn.conv2d_transpose(y, w, x.shape, s, p, dilations=d), expected, np.float32,
                 _scale(case))


@pytest.mark.parametrize("s, d, p", [(1, 1, "SAME"), (2, 1, "SAME"), (1, 2, "VALID")])
def test_depthwise_conv2d_gradients_match_tensorflow(tf, backend, rng, s, d, p):
    x = rng.standard_normal((2, 9, 8, 3))
    w = rng.standard_normal((3, 3, 3, 2))                                   # multiplier 2
    tx, tw = tf.Variable(x), tf.Variable(w)
    with tf.GradientTape() as tape:
        y = tf.nn.depthwise_conv2d(tx, tw, [1, s, s, 1], p, dilations=[d, d])
        dy = tf.constant(rng.standard_normal(y.shape))
        loss = tf.reduce_sum(y * dy)
    ex, ew = (t.numpy() for t in tape.gradient(loss, [tx, tw]))
    dx, dw, _ = fastconv.conv2d_backward(x, w.reshape(3, 3, 1, 6), dy.numpy(), s, p,
                                         dilations=d, groups=3, backend=backend)
    assert_close(dx, ex, np.float64, 10)
    assert_close(dw.reshape(w.shape), ew, np.float64, 10)


def test_relu_gradient_matches_tensorflow(tf, rng):
    x = np.round(rng.standard_normal((3, 4, 5)), 1).astype(np.float32)   # exact zeros occur
    assert (x == 0).any()
    tx = tf.Variable(x)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.nn.relu(tx) * dy)
    expected = tape.gradient(loss, tx).numpy()
    np.testing.assert_array_equal(fastconv.relu_backward(dy, x), expected)
    np.testing.assert_array_equal(fastconv.relu_backward(dy, fastconv.relu(x)), expected)


POOL_CASES = [((2, 7, 8, 3), 2, 2, "VALID"), ((1, 7, 7, 2), 3, 1, "VALID"),
              ((2, 6, 5, 3), (3, 2), (2, 1), "SAME"), ((1, 5, 5, 4), 3, 2, "SAME")]


def _pool_input(rng, shape, data):
    """``"normal"``: distinct values; ``"ties"``: few values, most windows hold several
    maxima.  (NaN is not compared: TensorFlow skips a NaN that is not its window's first
    tap, where fastconv sends the gradient to the NaN its forward propagates.)"""
    if data == "ties":
        return rng.integers(0, 3, shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("data", ["normal", "ties"])
@pytest.mark.parametrize("shape, k, s, p", POOL_CASES)
def test_max_pool_gradient_and_argmax_match_tensorflow(tf, backend, rng, shape, k, s, p, data):
    x = _pool_input(rng, shape, data)
    tx = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = tf.nn.max_pool2d(tx, k, s, p)
        dy = tf.constant(rng.standard_normal(y.shape).astype(np.float32))
        loss = tf.reduce_sum(y * dy)
    expected = tape.gradient(loss, tx).numpy()
    got = fastconv.max_pool2d_backward(dy.numpy(), x, k, s, p, backend=backend)
    assert_close(got, expected, np.float32, 3)
    for batch in (False, True):
        ey, ea = tf.nn.max_pool_with_argmax(x, k, s, p, include_batch_in_index=batch)
        gy, ga = nn.max_pool_with_argmax(x, k, s, p, include_batch_in_index=batch)
        np.testing.assert_array_equal(gy, ey.numpy())
        np.testing.assert_array_equal(ga, ea.numpy())
        dx = fastconv.max_pool2d_backward(dy.numpy(), x, k, s, p, argmax=ga,
                                          include_batch_in_index=batch, backend=backend)
        assert_close(dx, expected, np.float32, 3)


# ----------------------------------------------------------------------------- PyTorch
# (id, N, C, H, W, O, KH, KW, stride, padding, dilation, groups)
TORCH_CASES = [
    ("plain", 2, 3, 7, 8, 4, 3, 3, 1, 0, 1, 1),
    ("k3x2-s2-p1", 2, 3, 7, 8, 5, 3, 2, 2, 1, 1, 1),
    ("s2x1-p-1x2-dil-1x2", 1, 4, 9, 10, 6, 3, 3, (2, 1), (1, 2), (1, 2), 1),
    ("dil2-s2", 2, 2, 11, 9, 3, 3, 3, 2, 2, 2, 1),
    ("groups2", 2, 4, 6, 7, 6, 3, 3, 1, 1, 1, 2),
    ("depthwise-s2", 1, 3, 9, 8, 6, 3, 3, 2, 1, 1, 3),
    ("n1-c1", 1, 1, 5, 5, 1, 3, 3, 1, 1, 1, 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda c: c[0])
def test_conv2d_gradients_match_pytorch(torch, backend, rng, case, dtype):
    _, N, C, H, W, O, KH, KW, s, p, d, g = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((O, C // g, KH, KW)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    y = torch.nn.functional.conv2d(tx, tw, tb, s, p, d, g)
    dy = rng.standard_normal(tuple(y.shape)).astype(dtype)
    y.backward(torch.tensor(dy))
    ex, ew, eb = tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()
    scale = 3 * np.sqrt(C * KH * KW * O * H * W)
    assert_close(F.grad.conv2d_input(x.shape, w, dy, s, p, d, g), ex, dtype, scale)
    assert_close(F.grad.conv2d_weight(x, w.shape, dy, s, p, d, g), ew, dtype, scale)
    assert_close(torch.nn.grad.conv2d_input(x.shape, torch.tensor(w), torch.tensor(dy), s, p,
                                            d, g).numpy(), ex, dtype, scale)
    (PH, PW), (SH, SW), (DH, DW) = (np.broadcast_to(v, 2) for v in (p, s, d))
    dx, dw, db = fastconv.conv2d_backward(
        x, w.transpose(2, 3, 1, 0), dy, [1, 1, SH, SW], [[0, 0], [0, 0], [PH, PH], [PW, PW]],
        "NCHW", [1, 1, DH, DW], groups=g, backend=backend)
    assert_close(dx, ex, dtype, scale)
    assert_close(dw.transpose(3, 2, 0, 1), ew, dtype, scale)
    assert_close(db, eb, dtype, scale)


# (id, N, C_in, H, W, C_out, KH, KW, stride, padding, output_padding, groups, dilation)
TRANSPOSE_CASES = [
    ("s2-op1", 2, 4, 5, 6, 3, 3, 3, 2, 1, 1, 1, 1),
    ("k2x3-s-2x1-op-1x0", 1, 3, 4, 5, 2, 2, 3, (2, 1), (0, 1), (1, 0), 1, 1),
    ("groups2-dil2", 2, 4, 5, 5, 6, 3, 3, 1, 1, 0, 2, 2),
    ("s3-dil2-op2", 1, 2, 4, 4, 3, 3, 2, 3, 2, 2, 1, 2),
    ("depthwise", 1, 3, 6, 6, 3, 3, 3, 2, 0, 0, 3, 1),
    ("pad-beyond-kernel", 1, 2, 8, 8, 2, 2, 2, 1, 2, 0, 1, 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=lambda c: c[0])
def test_conv_transpose2d_matches_pytorch(torch, backend, rng, case, dtype):
    _, N, C, H, W, O, KH, KW, s, p, op, g, d = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((C, O // g, KH, KW)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    expected = torch.nn.functional.conv_transpose2d(torch.tensor(x), torch.tensor(w),
                                                    torch.tensor(b), s, p, op, g, d).numpy()
    with fastconv.use_backend(backend):
        got = F.conv_transpose2d(x, w, b, s, p, op, g, d)
        unbatched = F.conv_transpose2d(x[0], w, b, s, p, op, g, d)
    assert got.shape == expected.shape and got.dtype == dtype
    assert_close(got, expected, dtype, 3 * np.sqrt(C * KH * KW * H * W))
    assert_close(unbatched, expected[0], dtype, 3 * np.sqrt(C * KH * KW * H * W))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("k, s, p", [(2, 2, 0), (3, 1, 0), (3, 2, 1), ((3, 2), (1, 2), (1, 0))])
def test_max_pool_gradient_matches_pytorch(torch, backend, rng, k, s, p, ties):
    shape = (2, 3, 7, 8)
    x = (rng.integers(0, 3, shape) if ties else rng.standard_normal(shape)).astype(np.float64)
    tx = torch.tensor(x, requires_grad=True)
    y = torch.nn.functional.max_pool2d(tx, k, s, p)
    dy = rng.standard_normal(tuple(y.shape))
    y.backward(torch.tensor(dy))
    PH, PW = np.broadcast_to(p, 2)
    got = fastconv.max_pool2d_backward(dy, x, k, s, [[0, 0], [0, 0], [PH, PH], [PW, PW]],
                                       "NCHW", backend=backend)
    assert_close(got, tx.grad.numpy(), np.float64, 3)


def test_relu_gradient_matches_pytorch(torch, rng):
    x = np.round(rng.standard_normal((3, 4, 5)), 1)
    assert (x == 0).any()
    tx = torch.tensor(x, requires_grad=True)
    dy = rng.standard_normal(x.shape)
    torch.nn.functional.relu(tx).backward(torch.tensor(dy))
    np.testing.assert_array_equal(fastconv.relu_backward(dy, x), tx.grad.numpy())
