"""Every op, on every available backend, against TensorFlow and PyTorch themselves."""
import numpy as np
import pytest

import fastconv
import fastconv.functional as F
import fastconv.nn as nn
from cases import (DTYPES, ConvCase, PoolCase, TorchConvCase, TorchPoolCase, assert_close,
                   params)

pytestmark = pytest.mark.oracle

CONV_CASES = [
    ConvCase("n1_c1", 1, 5, 5, 1, 3, 3, 1, padding="SAME"),
    ConvCase("k3x2_s2_same", 2, 7, 8, 3, 3, 2, 5, strides=2, padding="SAME"),
    ConvCase("s2x1_valid", 2, 8, 7, 4, 2, 3, 6, strides=[2, 1]),
    ConvCase("dilated_same", 1, 9, 10, 2, 3, 3, 4, dilations=2, padding="SAME"),
    ConvCase("dilated_s2_valid", 2, 9, 9, 3, 3, 3, 4, strides=2, dilations=2),
    ConvCase("groups2", 2, 6, 6, 4, 3, 3, 6, padding="SAME", groups=2),
    ConvCase("k1x5_explicit", 1, 6, 7, 3, 1, 5, 2, strides=[1, 2],
             padding=[[0, 0], [1, 2], [3, 0], [0, 0]]),
    ConvCase("depthwise", 2, 10, 10, 6, 3, 3, 6, padding="SAME", groups=6),
    ConvCase("k5_s3_c17", 1, 11, 11, 17, 5, 5, 19, strides=3, padding="SAME"),
]
ORACLE_CONV = {case.id: case for case in CONV_CASES}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", params(CONV_CASES))
def test_conv2d_matches_tensorflow(tf, backend, rng, case, dtype):
    x, w, _ = case.data(rng, dtype)
    s, d, p = case.strides, case.dilations, case.padding
    expected = tf.nn.conv2d(x, w, s, p, dilations=d).numpy()
    got = fastconv.conv2d(x, w, backend=backend, **case.kwargs())
    assert got.dtype == dtype and got.shape == expected.shape
    assert_close(got, expected, dtype, case.scale)


@pytest.mark.parametrize("case", params(ORACLE_CONV[i] for i in (
    "n1_c1", "k3x2_s2_same", "s2x1_valid", "dilated_same", "groups2")))
def test_conv2d_nchw_matches_tensorflow(tf, backend, rng, case):
    x, w, _ = case.data(rng, np.float32)
    s, d, p, g = case.strides, case.dilations, case.padding, case.groups
    x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    strides = [1, 1, s, s] if np.ndim(s) == 0 else [1, 1, *s]
    # TensorFlow's CPU Conv2D accepts NCHW only on its oneDNN path (AVX-512-class
    # CPUs); its Eigen kernel is NHWC-only.  Give it the NHWC transpose, as a user on
    # any CPU would, and compare in NCHW.
    expected = tf.nn.conv2d(x, w, s, p, dilations=d).numpy().transpose(0, 3, 1, 2)
    got = fastconv.conv2d(x_nchw, w, strides, p, data_format="NCHW", dilations=d, groups=g,
                          backend=backend)
    assert_close(got, expected, np.float32, case.scale)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_bias_relu_matches_tensorflow(tf, backend, rng, dtype):
    case = ORACLE_CONV["k3x2_s2_same"]
    x, w, b = case.data(rng, dtype)
    expected = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, w, 2, "SAME"), b)).numpy()
    got = fastconv.conv2d(x, w, 2, "SAME", bias=b, activation="relu", backend=backend)
    assert_close(got, expected, dtype, case.scale)


def test_lesson_pipeline_matches_tensorflow(tf, rng):
    """The lesson's code, run as written through fastconv.nn."""
    image = rng.random((1, 40, 30, 1)).astype(np.float32)
    kernel = np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], np.float32).reshape(3, 3, 1, 1)
    image_filter = nn.conv2d(input=image, filters=kernel, strides=1, padding="SAME")
    image_detect = nn.relu(image_filter)
    image_condense = nn.max_pool2d(image_detect, ksize=2, strides=2, padding="SAME")
    t_filter = tf.nn.conv2d(input=image, filters=kernel, strides=1, padding="SAME")
    t_detect = tf.nn.relu(t_filter)
    t_condense = tf.nn.max_pool2d(t_detect, ksize=2, strides=2, padding="SAME")
    assert_close(image_filter, t_filter.numpy(), np.float32, 3)
    assert_close(image_detect, t_detect.numpy(), np.float32, 3)
    assert_close(image_condense, t_condense.numpy(), np.float32, 3)


def test_nn_conv2d_infers_groups_like_tensorflow(tf, rng):
    x = rng.standard_normal((2, 6, 6, 6)).astype(np.float32)
    w = rng.standard_normal((3, 3, 2, 9)).astype(np.float32)
    assert_close(nn.conv2d(x, w, 1, "SAME"), tf.nn.conv2d(x, w, 1, "SAME").numpy(), scale=4)


@pytest.mark.parametrize("strides,padding,dilations", [
    ([1, 1, 1, 1], "SAME", [1, 1]), ([1, 2, 2, 1], "VALID", None), ([1, 1, 1, 1], "SAME", [2, 2]),
])
def test_depthwise_conv2d_matches_tensorflow(tf, rng, strides, padding, dilations):
    x = rng.standard_normal((2, 9, 8, 4)).astype(np.float32)
    w = rng.standard_normal((3, 3, 4, 2)).astype(np.float32)
    expected = tf.nn.depthwise_conv2d(x, w, strides, padding, dilations=dilations).numpy()
    got = nn.depthwise_conv2d(x, w, strides, padding, dilations=dilations)
    assert got.shape == expected.shape
    assert_close(got, expected, np.float32, 3)


def test_bias_add_matches_tensorflow(tf, rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    assert_close(nn.bias_add(x, b), tf.nn.bias_add(x, b).numpy())
    b3 = rng.standard_normal(3).astype(np.float32)
    assert_close(nn.bias_add(x, b3, data_format="NCHW"),
                 tf.nn.bias_add(x, b3, data_format="NCHW").numpy())


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_matches_tensorflow_and_torch(tf, torch, backend, dtype):
    x = np.array([-np.inf, -2.5, -0.0, 0.0, 1e-30, 3.0, np.inf, np.nan] * 3, dtype=dtype)
    got = fastconv.relu(x, backend=backend)
    np.testing.assert_array_equal(got, tf.nn.relu(x).numpy())
    np.testing.assert_array_equal(got, torch.relu(torch.from_numpy(x)).numpy())
    assert got[0] == 0 and np.isnan(got[-1])


POOL_CASES = [
    PoolCase("k2_tiling", 2, 8, 8, 3, 2),
    PoolCase("k3_s2_same_odd", 1, 7, 9, 2, 3, 2, "SAME"),   # asymmetric SAME padding
    PoolCase("k2x3_s1x2_same", 2, 6, 5, 4, [2, 3], [1, 2], "SAME"),
    PoolCase("k3_c1", 1, 9, 9, 1, 3, 3),
    PoolCase("explicit", 2, 7, 7, 3, 2, 2, [[0, 0], [1, 0], [0, 1], [0, 0]]),
]


# TensorFlow 2.21's CPU max pool sometimes rounds float64 results through float32,
# so float64 pooling is judged by PyTorch (test_functional_max_pool2d_matches_torch).
@pytest.mark.parametrize("dtype", [np.float32])
@pytest.mark.parametrize("case", params(POOL_CASES))
def test_max_pool2d_matches_tensorflow(tf, backend, rng, case, dtype):
    k, s, p = case.ksize, case.strides, case.padding
    x = case.data(rng, dtype) - 3  # negatives: padding must lose
    expected = tf.nn.max_pool2d(x, k, k if s is None else s, p).numpy()
    got = fastconv.max_pool2d(x, k, s, p, backend=backend)
    np.testing.assert_array_equal(got, expected)
    x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    got_nchw = fastconv.max_pool2d(x_nchw, k, s, p if isinstance(p, str) else
                                   [p[0], p[3], p[1], p[2]], data_format="NCHW", backend=backend)
    np.testing.assert_array_equal(got_nchw, expected.transpose(0, 3, 1, 2))


def test_max_pool2d_nan_propagates_like_torch_not_tf(tf, torch, backend):
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    x[0, 0, 1, 0] = np.nan
    got = fastconv.max_pool2d(x, 2, backend=backend)
    assert np.isnan(got[0, 0, 0, 0]) and not np.isnan(got[0, 1, 1, 0])
    t = torch.nn.functional.max_pool2d(torch.from_numpy(x.transpose(0, 3, 1, 2)), 2)
    np.testing.assert_array_equal(got.transpose(0, 3, 1, 2), t.numpy())
    assert not np.isnan(tf.nn.max_pool2d(x, 2, 2, "VALID").numpy()).any()  # TF drops NaN


TORCH_CONV_CASES = [
    TorchConvCase("n1_c1", 1, 1, 5, 5, 1, 3, 3),
    TorchConvCase("k3x2_s2_p1", 2, 3, 9, 8, 4, 3, 2, 2, 1),
    TorchConvCase("s2x1_p1x2_d1x2_g2", 2, 4, 8, 9, 6, 3, 3, (2, 1), (1, 2), (1, 2), 2),
    TorchConvCase("k2x4_same_d2_g3", 1, 3, 7, 7, 6, 2, 4, 1, "same", 2, 3),
    TorchConvCase("valid", 2, 2, 6, 7, 3, 3, 3, 1, "valid"),
    TorchConvCase("depthwise_same", 2, 4, 10, 10, 4, 3, 3, 1, "same", 1, 4),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", params(TORCH_CONV_CASES))
def test_functional_conv2d_matches_torch(torch, backend, rng, case, dtype):
    s, p, d, g = case.stride, case.padding, case.dilation, case.groups
    x, w, b = case.data(rng, dtype)
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                                          torch.from_numpy(b), s, p, d, g).numpy()
    with fastconv.use_backend(backend):
        got = F.conv2d(x, w, b, s, p, d, g)
        unbatched = F.conv2d(x[0], w, b, s, p, d, g)
    assert got.shape == expected.shape and got.dtype == dtype
    assert_close(got, expected, dtype, case.scale)
    assert_close(unbatched, expected[0], dtype, case.scale)


TORCH_POOL_CASES = [
    TorchPoolCase("k2_tiling", 2, 3, 8, 8, 2),
    TorchPoolCase("k3_s2_p1_ceil", 2, 3, 9, 10, 3, 2, 1, 1, True),
    TorchPoolCase("k2_ceil_odd", 1, 2, 7, 7, 2, 2, 0, 1, True),
    TorchPoolCase("k3x2_s2x3_d2", 1, 2, 11, 8, (3, 2), (2, 3), (1, 1), 2),
    TorchPoolCase("c1_p1_ceil", 2, 1, 5, 5, 3, 2, 1, 1, True),
    TorchPoolCase("k4_s3_p2_ceil", 1, 2, 10, 9, 4, 3, 2, 1, True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", params(TORCH_POOL_CASES))
def test_functional_max_pool2d_matches_torch(torch, backend, rng, case, dtype):
    k, s, p, d, ceil = case.kernel_size, case.stride, case.padding, case.dilation, case.ceil_mode
    x = rng.standard_normal((case.N, case.C, case.H, case.W)).astype(dtype)
    ev, ei = torch.nn.functional.max_pool2d(torch.from_numpy(x), k, s, p, d, ceil, True)
    with fastconv.use_backend(backend):
        gv, gi = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
        plain = F.max_pool2d(x, k, s, p, d, ceil)
    np.testing.assert_array_equal(gv, ev.numpy())
    np.testing.assert_array_equal(plain, ev.numpy())
    np.testing.assert_array_equal(gi, ei.numpy())
    assert gi.dtype == np.int64


def test_functional_relu_inplace_like_torch(torch, rng):
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    expected = torch.relu(torch.from_numpy(x.copy())).numpy()
    y = F.relu(x, inplace=True)
    assert y is x
    np.testing.assert_array_equal(x, expected)


def test_torch_tensors_are_accepted(torch, rng):
    x = torch.randn(1, 6, 6, 2)
    w = torch.randn(3, 3, 2, 4)
    got = fastconv.conv2d(x, w, 1, "SAME")
    expected = fastconv.conv2d(x.numpy(), w.numpy(), 1, "SAME")
    np.testing.assert_array_equal(got, expected)
