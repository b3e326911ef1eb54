"""Every fast backend against the NumPy reference, through the public API.

The grid covers N=1, C=1, non-square kernels, stride > 1 with even and odd
sizes under SAME (asymmetric padding), dilation, groups, depthwise, explicit
padding, both layouts, both dtypes, bias and fused ReLU, NaN/inf, ``out=``
and several thread counts; hypothesis then draws random configurations.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from cases import (CONV, CONV_1X1, CONV_1X1_CASES, CONV_CASES, DTYPES, FAST_BACKENDS,
                   POOL_CASES, assert_close, params)

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", params(CONV_CASES))
@pytest.mark.parametrize("algorithm", ["auto", "direct", "im2col"])
def test_conv2d_grid(fast_backend, rng, case, dtype, algorithm):
    x, w, b = case.data(rng, dtype)
    for bias, act in ((None, None), (b, "relu")):
        expected = fastconv.conv2d(x, w, bias=bias, activation=act, backend="numpy",
                                   **case.kwargs())
        got = fastconv.conv2d(x, w, bias=bias, activation=act, backend=fast_backend,
                              algorithm=algorithm, **case.kwargs())
        assert got.dtype == dtype
        assert_close(got, expected, dtype, case.scale)


@pytest.mark.parametrize("case", params(CONV[i] for i in (
    "k3x2_s2_same", "k2x3_s2x1_o17", "k5_o33_same", "groups4", "depthwise16", "k1x5_explicit")))
def test_conv2d_nchw_and_out(fast_backend, rng, case):
    x, w, b = case.data(rng, np.float32)
    x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    s, d, p, g = case.strides, case.dilations, case.nchw_padding(), case.groups
    expected = fastconv.conv2d(x_nchw, w, s, p, "NCHW", d, groups=g, bias=b, backend="numpy")
    out = np.full(expected.shape, np.nan, np.float32)
    got = fastconv.conv2d(x_nchw, w, s, p, "NCHW", d, groups=g, bias=b, out=out,
                          backend=fast_backend)
    assert got is out
    assert_close(out, expected, np.float32, case.scale)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("bias,activation", [(False, None), (True, None), (False, "relu"),
                                             (True, "relu")])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", params(CONV_1X1_CASES))
def test_conv2d_1x1(fast_backend, rng, case, dtype, bias, activation, layout):
    """1x1 layers ("auto": a GEMM of the input where the channels allow), both layouts,
    with and without bias and ReLU; 1 and 2 threads give the same bits."""
    x, w, b = case.data(rng, dtype)
    b = b if bias else None
    s, p = case.strides, case.padding
    if layout == "NCHW":
        x, p = np.ascontiguousarray(x.transpose(0, 3, 1, 2)), case.nchw_padding()
    expected = fastconv.conv2d(x, w, s, p, layout, bias=b, activation=activation,
                               backend="numpy")
    got = [fastconv.conv2d(x, w, s, p, layout, bias=b, activation=activation,
                           backend=fast_backend, num_threads=n) for n in (1, 2)]
    assert got[0].dtype == dtype and got[0].shape == expected.shape
    assert_close(got[0], expected, dtype, case.scale)
    np.testing.assert_array_equal(got[1], got[0])


@pytest.mark.parametrize("case", params(CONV_1X1[i] for i in (
    "k1_c130_o40_same", "k1_c128_o64_s2_same", "k1_c256_o520_tiles")))
def test_conv2d_1x1_out_buffer(fast_backend, rng, case):
    """``out=`` filled in place by the 1x1 path, whatever it held before."""
    x, w, b = case.data(rng, np.float32)
    expected = fastconv.conv2d(x, w, bias=b, activation="relu", backend="numpy",
                               **case.kwargs())
    out = np.full(expected.shape, np.nan, np.float32)
    got = fastconv.conv2d(x, w, bias=b, activation="relu", out=out, backend=fast_backend,
                          **case.kwargs())
    assert got is out
    assert_close(out, expected, np.float32, case.scale)


@pytest.mark.parametrize("case", params(CONV[i] for i in (
    "k3x2_s2_same", "c19_dilated", "depthwise16", "k1_c64")))
def test_conv2d_identical_for_any_thread_count(fast_backend, rng, case):
    x, w, b = case.data(rng, np.float32)
    results = [fastconv.conv2d(x, w, bias=b, activation="relu", backend=fast_backend,
                               num_threads=n, **case.kwargs()) for n in (1, 2, 3)]
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_conv2d_nan_and_inf_follow_ieee(fast_backend):
    x = np.ones((1, 5, 5, 2), np.float32)
    x[0, 2, 2, 0] = np.nan
    x[0, 0, 4, 1] = np.inf
    w = np.ones((3, 3, 2, 3), np.float32)
    for act in (None, "relu"):
        expected = fastconv.conv2d(x, w, 1, "SAME", activation=act, backend="numpy")
        got = fastconv.conv2d(x, w, 1, "SAME", activation=act, backend=fast_backend)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(expected))
        assert np.isnan(got).sum() == 9 * 3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (3, 5, 17), (2, 26, 26, 64)])
def test_relu(fast_backend, rng, dtype, shape):
    x = rng.standard_normal(shape).astype(dtype)
    if x.size > 3:
        x.flat[:3] = [np.nan, -np.inf, np.inf]
    expected = fastconv.relu(x, backend="numpy")
    got = fastconv.relu(x, backend=fast_backend)
    np.testing.assert_array_equal(got, expected)
    inplace = x.copy()
    assert fastconv.relu(inplace, out=inplace, backend=fast_backend) is inplace
    np.testing.assert_array_equal(inplace, expected)
    strided = fastconv.relu(x[..., ::2], backend=fast_backend)
    np.testing.assert_array_equal(strided, expected[..., ::2])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", params(POOL_CASES))
def test_max_pool2d_grid(fast_backend, rng, case, dtype):
    x = case.data(rng, dtype) - 5
    k, s, p = case.ksize, case.strides, case.padding
    expected = fastconv.max_pool2d(x, k, s, p, backend="numpy")
    for n in (1, 2, 3):
        got = fastconv.max_pool2d(x, k, s, p, backend=fast_backend, num_threads=n)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d_nan_and_inf(fast_backend, rng, dtype):
    x = rng.standard_normal((2, 8, 8, 19)).astype(dtype)
    x[0, 1, 1, 3] = np.nan
    x[1, 4, 5, 18] = np.nan
    x[1, 0:2, 0:2, :] = -np.inf
    x[0, 6, 6, 0] = np.inf
    for k, s, p in ((2, 2, "VALID"), (3, 2, "SAME"), (3, 1, "SAME")):
        expected = fastconv.max_pool2d(x, k, s, p, backend="numpy")
        got = fastconv.max_pool2d(x, k, s, p, backend=fast_backend)
        np.testing.assert_array_equal(got, expected)
        assert np.isnan(got).any() and np.isneginf(got).any() == np.isneginf(expected).any()


@pytest.mark.parametrize("case", params(CONV[i] for i in (
    "c1_o1_same", "k3x2_s2_same", "k2x3_s2x1_o17", "k1x5_explicit", "k5_valid",
    "pad_beyond_input")))
def test_im2col(fast_backend, rng, case):
    x, _, _ = case.data(rng, np.float64)
    k, s, p, d = (case.KH, case.KW), case.strides, case.padding, case.dilations
    expected = fastconv.im2col(x, k, s, p, d, backend="numpy")
    got = fastconv.im2col(x, k, s, p, d, backend=fast_backend)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("case", params(CONV[i] for i in (
    "c1_o1_same", "k3x2_s2_same", "k1x5_explicit", "pad_beyond_input")))
def test_im2col_into_out(fast_backend, rng, case):
    """``out=``: filled in place (every entry, zeros included) and returned; same bits."""
    x, _, _ = case.data(rng, np.float32)
    k, s, p, d = (case.KH, case.KW), case.strides, case.padding, case.dilations
    expected = fastconv.im2col(x, k, s, p, d, backend="numpy")
    out = np.full(expected.shape, np.nan, np.float32)
    for n in (1, 2):
        got = fastconv.im2col(x, k, s, p, d, out=out, backend=fast_backend, num_threads=n)
        assert got is out
        np.testing.assert_array_equal(out, expected)


def test_im2col_times_filters_is_conv2d(backend, rng):
    x = rng.standard_normal((2, 9, 7, 3))
    w = rng.standard_normal((3, 2, 3, 5))
    cols = fastconv.im2col(x, (3, 2), 2, "SAME", backend=backend)
    conv = fastconv.conv2d(x, w, 2, "SAME", backend=backend)
    assert_close(cols @ w.reshape(-1, 5), conv.reshape(-1, 5), np.float64, 3)


conv_configs = st.fixed_dictionaries({
    "N": st.integers(1, 3), "H": st.integers(1, 12), "W": st.integers(1, 12),
    "Cg": st.integers(1, 6), "groups": st.sampled_from([1, 1, 2, 3]),
    "Og": st.integers(1, 20), "KH": st.integers(1, 4), "KW": st.integers(1, 4),
    "SH": st.integers(1, 3), "SW": st.integers(1, 3), "DH": st.integers(1, 2),
    "DW": st.integers(1, 2), "padding": st.sampled_from(["SAME", "VALID", "EXPLICIT"]),
    "pads": st.tuples(*[st.integers(0, 3)] * 4),
    "dtype": st.sampled_from(DTYPES), "relu": st.booleans(),
    "layout": st.sampled_from(["NHWC", "NCHW"]),
})


def _padding_for(cfg):
    if cfg["padding"] != "EXPLICIT":
        return cfg["padding"]
    t, b, l, r = cfg["pads"]
    hw = [[t, b], [l, r]]
    return [[0, 0], *hw, [0, 0]] if cfg["layout"] == "NHWC" else [[0, 0], [0, 0], *hw]


@pytest.mark.skipif(not FAST_BACKENDS, reason="no compiled or JIT backend is available")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=conv_configs, seed=st.integers(0, 2**32 - 1))
def test_conv2d_random_configurations(cfg, seed):
    rng = np.random.default_rng(seed)
    C, O = cfg["Cg"] * cfg["groups"], cfg["Og"] * cfg["groups"]
    shape = (cfg["N"], cfg["H"], cfg["W"], C)
    x = rng.standard_normal(shape).astype(cfg["dtype"])
    if cfg["layout"] == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    w = rng.standard_normal((cfg["KH"], cfg["KW"], cfg["Cg"], O))
    b = rng.standard_normal(O)
    kwargs = dict(strides=(cfg["SH"], cfg["SW"]), padding=_padding_for(cfg),
                  data_format=cfg["layout"], dilations=(cfg["DH"], cfg["DW"]),
                  groups=cfg["groups"], bias=b, activation="relu" if cfg["relu"] else None)
    try:
        expected = fastconv.conv2d(x, w, backend="numpy", **kwargs)
    except ValueError as exc:  # kernel larger than the (padded) input: every backend agrees
        for backend in FAST_BACKENDS:
            with pytest.raises(ValueError, match="larger than"):
                fastconv.conv2d(x, w, backend=backend, **kwargs)
        assert "larger than" in str(exc)
        return
    for backend in FAST_BACKENDS:
        got = fastconv.conv2d(x, w, backend=backend, **kwargs)
        assert_close(got, expected, cfg["dtype"], np.sqrt(cfg["KH"] * cfg["KW"] * cfg["Cg"]))


@pytest.mark.skipif(not FAST_BACKENDS, reason="no compiled or JIT backend is available")
@settings(max_examples=60, deadline=None)
@given(N=st.integers(1, 2), H=st.integers(1, 10), W=st.integers(1, 10), C=st.integers(1, 20),
       KH=st.integers(1, 4), KW=st.integers(1, 4), SH=st.integers(1, 3), SW=st.integers(1, 3),
       same=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_max_pool2d_random_configurations(N, H, W, C, KH, KW, SH, SW, same, seed):
    x = np.random.default_rng(seed).standard_normal((N, H, W, C)).astype(np.float32)
    padding = "SAME" if same else "VALID"
    if not same and (KH > H or KW > W):
        return
    expected = fastconv.max_pool2d(x, (KH, KW), (SH, SW), padding, backend="numpy")
    for backend in FAST_BACKENDS:
        got = fastconv.max_pool2d(x, (KH, KW), (SH, SW), padding, backend=backend)
        np.testing.assert_array_equal(got, expected)
