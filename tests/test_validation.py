"""Every bad input gets a ValueError or TypeError naming the parameter and what was expected."""
import numpy as np
import pytest

import fastconv
import fastconv.functional as F
import fastconv.nn as nn

X = np.zeros((2, 8, 8, 3), np.float32)
Wt = np.zeros((3, 3, 3, 4), np.float32)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: fastconv.conv2d(X[0], Wt), ValueError, r"input must be 4-D"),
    (lambda: fastconv.conv2d(X, Wt[0]), ValueError, r"filters must be 4-D"),
    (lambda: fastconv.conv2d(X, np.zeros((3, 3, 2, 4))), ValueError, r"channel mismatch"),
    (lambda: fastconv.conv2d(X, np.zeros((3, 3, 1, 4)), groups=2), ValueError, r"channel mismatch"),
    (lambda: fastconv.conv2d(np.zeros((1, 5, 5, 4)), np.zeros((3, 3, 2, 3)), groups=2),
     ValueError, r"C_out=3 .* divisible by groups=2"),
    (lambda: fastconv.conv2d(X, Wt, groups=0), ValueError, r"groups must be >= 1"),
    (lambda: fastconv.conv2d(X, Wt, strides=0), ValueError, r"strides must be >= 1"),
    (lambda: fastconv.conv2d(X, Wt, strides=-2), ValueError, r"strides must be >= 1"),
    (lambda: fastconv.conv2d(X, Wt, strides=1.5), TypeError, r"strides must be an int or a list"),
    (lambda: fastconv.conv2d(X, Wt, strides=[1, 2, 3]), ValueError, r"strides must be an int or a list of 1, 2 or 4"),
    (lambda: fastconv.conv2d(X, Wt, strides=[2, 1, 1, 1]), ValueError, r"batch and channel entries"),
    (lambda: fastconv.conv2d(X, Wt, dilations=0), ValueError, r"dilations must be >= 1"),
    (lambda: fastconv.conv2d(X, Wt, padding="FULL"), ValueError, r"padding must be 'SAME', 'VALID'"),
    (lambda: fastconv.conv2d(X, Wt, padding=[[0, 0], [1, 1], [1, 1]]), ValueError, r"padding must be"),
    (lambda: fastconv.conv2d(X, Wt, padding=[[0, 0], [-1, 1], [1, 1], [0, 0]]), ValueError, r"non-negative"),
    (lambda: fastconv.conv2d(X, Wt, padding=[[1, 0], [1, 1], [1, 1], [0, 0]]), ValueError, r"batch and channel entries"),
    (lambda: fastconv.conv2d(X, Wt, padding=[[0, 0], [0.5, 1], [1, 1], [0, 0]]), ValueError, r"integer pairs"),
    (lambda: fastconv.conv2d(X, Wt, data_format="NWHC"), ValueError, r"data_format must be one of"),
    (lambda: fastconv.conv2d(X, np.zeros((9, 3, 3, 4))), ValueError, r"larger than the padded input height"),
    (lambda: fastconv.conv2d(X, np.zeros((3, 3, 3, 4)), dilations=4), ValueError, r"effective height 9"),
    (lambda: fastconv.conv2d(X, Wt, bias=np.zeros(5)), ValueError, r"bias must have shape \(C_out,\) = \(4,\)"),
    (lambda: fastconv.conv2d(X, Wt, activation="tanh"), ValueError, r"activation must be None or 'relu'"),
    (lambda: fastconv.conv2d(X, Wt, backend="cuda"), ValueError, r"backend must be one of"),
    (lambda: fastconv.conv2d(X, Wt, num_threads=0), ValueError, r"num_threads must not be 0"),
    (lambda: fastconv.conv2d(X, Wt, num_threads="2"), TypeError, r"num_threads must be an integer"),
    (lambda: fastconv.conv2d(X, Wt, algorithm="fft"), ValueError, r"algorithm must be one of"),
    (lambda: fastconv.conv2d(X.astype(np.uint8), Wt), TypeError, r"astype\(np.float32\) / 255"),
    (lambda: fastconv.conv2d(X.astype(np.float16), Wt), TypeError, r"float32 or float64 only"),
    (lambda: fastconv.conv2d(X, Wt.astype(complex)), TypeError, r"filters has dtype complex128"),
    (lambda: fastconv.conv2d(np.zeros((1, 0, 5, 3), np.float32), Wt, padding="SAME"), ValueError, r"height and width must be >= 1"),
    (lambda: fastconv.conv2d([[1, 2]], Wt), TypeError, r"input has dtype int64"),
    (lambda: fastconv.conv2d(X, np.zeros((3, 0, 3, 4))), ValueError, r"non-zero dimensions"),
    (lambda: fastconv.max_pool2d(X, 0), ValueError, r"ksize must be >= 1"),
    (lambda: fastconv.max_pool2d(X, 2, strides=0), ValueError, r"strides must be >= 1"),
    (lambda: fastconv.max_pool2d(X, 9), ValueError, r"larger than the padded input"),
    (lambda: fastconv.max_pool2d(X, 2, padding="same-ish"), ValueError, r"padding must be"),
    (lambda: fastconv.max_pool2d(X, 2, 2, [[0, 0], [2, 2], [0, 0], [0, 0]]), ValueError, r"entirely in the padding"),
    (lambda: fastconv.max_pool2d(X[0], 2), ValueError, r"input must be 4-D"),
    (lambda: fastconv.relu(np.array(["a"])), TypeError, r"features has dtype"),
    (lambda: fastconv.im2col(X, (2, 0)), ValueError, r"ksize must be >= 1"),
    (lambda: fastconv.im2col(X[0], 2), ValueError, r"input must be 4-D"),
    (lambda: nn.conv2d(X, np.zeros((3, 3, 2, 4)), 1, "SAME"), ValueError, r"not a multiple of filters.shape\[2\]=2"),
    (lambda: nn.depthwise_conv2d(X, np.zeros((3, 3, 2, 2)), [1, 1, 1, 1], "SAME"), ValueError, r"channel mismatch"),
    (lambda: nn.bias_add(X, np.zeros(4)), ValueError, r"bias has 4 elements but value has 3 channels"),
    (lambda: nn.bias_add(X, np.zeros(3), data_format="HWCN"), ValueError, r"data_format must be"),
    (lambda: F.conv2d(np.zeros((1, 3, 8, 8)), np.zeros((4, 3, 3, 3)), stride=2, padding="same"), ValueError, r"not supported for strided"),
    (lambda: F.conv2d(np.zeros((1, 3, 8, 8)), np.zeros((4, 3, 3, 3)), padding="full"), ValueError, r"padding must be 'valid', 'same'"),
    (lambda: F.conv2d(np.zeros((1, 3, 8, 8)), np.zeros((4, 3, 3, 3)), padding=-1), ValueError, r"padding must be non-negative"),
    (lambda: F.conv2d(np.zeros((8, 8)), np.zeros((4, 3, 3, 3))), ValueError, r"3-D \(C, H, W\) or 4-D"),
    (lambda: F.max_pool2d(np.zeros((1, 3, 8, 8)), 2, padding=2), ValueError, r"at most half of kernel_size"),
    (lambda: F.relu([1.0, -1.0], inplace=True), TypeError, r"inplace=True needs a numpy.ndarray"),
    (lambda: fastconv.output_shape((1, 8, 8), 3), ValueError, r"input_shape must have 4 entries"),
    (lambda: fastconv.set_num_threads(0), ValueError, r"num_threads must not be 0"),
    (lambda: fastconv.set_backend("gpu"), ValueError, r"backend must be one of"),
])
def test_bad_input_raises_clear_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("bad_out,match", [
    (np.zeros((2, 8, 8, 5), np.float32), r"out has shape \(2, 8, 8, 5\); expected \(2, 8, 8, 4\)"),
    (np.zeros((2, 8, 8, 4), np.float64), r"out has dtype float64; expected float32"),
    (np.zeros((2, 8, 8, 8), np.float32)[..., ::2], r"out must be C-contiguous"),
    ([[0.0]], r"out must be a numpy.ndarray"),
])
def test_bad_out_raises(bad_out, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fastconv.conv2d(X, Wt, 1, "SAME", out=bad_out)


#: im2col(X, 3, 1, "SAME") is (2*8*8, 3*3*3) = (128, 27); col2im of it gives X's shape
@pytest.mark.parametrize("op", ["im2col", "col2im"])
@pytest.mark.parametrize("bad_out,match", [
    ("shape", r"out has shape \(\d+, \d+(, \d+, \d+)?\); expected \("),
    ("dtype", r"out has dtype float64; expected float32"),
    ("strided", r"out must be C-contiguous"),
    ("list", r"out must be a numpy.ndarray"),
    ("read-only", r"out is read-only"),
])
def test_im2col_col2im_bad_out_raises(op, bad_out, match):
    cols = fastconv.im2col(X, 3, 1, "SAME")
    shape = cols.shape if op == "im2col" else X.shape
    bad = {"shape": lambda: np.zeros(shape[:-1] + (shape[-1] + 1,), np.float32),
           "dtype": lambda: np.zeros(shape, np.float64),
           "strided": lambda: np.zeros(shape[:-1] + (2 * shape[-1],), np.float32)[..., ::2],
           "list": lambda: np.zeros(shape, np.float32).tolist(),
           "read-only": lambda: np.require(np.zeros(shape, np.float32), requirements="C")}
    out = bad[bad_out]()
    if bad_out == "read-only":
        out.flags.writeable = False
    with pytest.raises((ValueError, TypeError), match=match):
        if op == "im2col":
            fastconv.im2col(X, 3, 1, "SAME", out=out)
        else:
            fastconv.col2im(cols, X.shape, 3, 1, "SAME", out=out)


def test_im2col_col2im_out_overlapping_input_raises():
    x = np.zeros((1, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="overlaps an input"):
        fastconv.im2col(x, 1, out=x.reshape(16, 1))   # 1x1 window: same shape as the input
    cols = np.zeros((16, 1), np.float32)
    with pytest.raises(ValueError, match="overlaps an input"):
        fastconv.col2im(cols, (1, 4, 4, 1), 1, out=cols.reshape(1, 4, 4, 1))


def test_out_overlapping_input_raises():
    buf = np.zeros((2, 8, 8, 4), np.float32)
    with pytest.raises(ValueError, match="overlaps an input"):
        fastconv.conv2d(buf, np.zeros((1, 1, 4, 4), np.float32), out=buf)
    x = np.zeros((10,), np.float32)
    with pytest.raises(ValueError, match="overlaps an input"):
        fastconv.relu(x[:8], out=x[2:])
    ro = np.zeros((2, 8, 8, 4), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fastconv.conv2d(X, Wt, 1, "SAME", out=ro)


def test_bad_environment_thread_count(monkeypatch):
    monkeypatch.setenv("FASTCONV_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="FASTCONV_NUM_THREADS='many' must be an integer"):
        fastconv.relu(np.zeros(3))


def _read_only(a):
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("x, exc, match", [
    (_read_only(np.ones((3, 4), np.float32)), ValueError, r"input is read-only"),
    (np.ones((4, 6), np.float32)[:, ::2], ValueError, r"C-contiguous input.*strides"),
    (np.ones((3, 4), np.int32), TypeError, r"float32 or float64 input; got dtype int32"),
])
def test_relu_inplace_blames_input_not_out(x, exc, match):
    """The caller of F.relu(inplace=True) passed no ``out``: the error names ``input``."""
    with pytest.raises(exc, match=match) as info:
        F.relu(x, inplace=True)
    assert "out" not in str(info.value).replace("without", "")


def test_relu_inplace_still_overwrites_its_input():
    x = np.array([[-1.0, 2.0]], np.float32)
    assert F.relu(x, inplace=True) is x and x.tolist() == [[0.0, 2.0]]


def test_a_refused_geometry_is_refused_every_time():
    """Checked geometries are cached by their arguments; a refusal never is."""
    x, w = np.ones((1, 4, 4, 1), np.float32), np.ones((5, 5, 1, 1), np.float32)
    for _ in range(3):
        with pytest.raises(ValueError, match="larger than the padded input"):
            fastconv.conv2d(x, w, padding="VALID")
    for _ in range(2):   # the same arguments as lists, tuples and NumPy integers agree
        a = fastconv.conv2d(x, w, strides=[2, 2], padding=[[0, 0], [1, 2], [1, 2], [0, 0]])
        b = fastconv.conv2d(x, w, strides=(np.int64(2),) * 2,
                            padding=((0, 0), (1, 2), (1, 2), (0, 0)))
        ref = fastconv.conv2d(x, w, 2, "SAME", backend="numpy")
        np.testing.assert_array_equal(a, ref)
        np.testing.assert_array_equal(b, ref)


def test_the_geometry_cache_stays_small():
    from fastconv import _ops
    w = np.ones((1, 1, 1, 1), np.float32)
    for h in range(1, _ops._GEOMETRY_CACHE_SIZE + 20):
        fastconv.conv2d(np.ones((1, h, 1, 1), np.float32), w)
    assert len(_ops._GEOMETRY_CACHE) <= _ops._GEOMETRY_CACHE_SIZE


def test_zero_d_bias_for_one_channel_is_accepted():
    """A 0-D bias counts as shape (1,) for C_out=1, as np.ascontiguousarray makes it."""
    x = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    w = np.ones((1, 1, 3, 1), np.float32)
    got = fastconv.conv2d(x, w, bias=np.array(2.5, np.float32))
    expected = fastconv.conv2d(x, w, bias=np.array([2.5], np.float32), backend="numpy")
    np.testing.assert_array_equal(got, expected)
