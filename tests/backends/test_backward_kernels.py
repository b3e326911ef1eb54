"""The native backward drivers (col2im, max pool argmax, pool backward, ReLU backward) of every
fast backend against the NumPy reference, bitwise, and across thread counts.

Geometries cover ties, windows holding NaN, overlapping windows, SAME
(asymmetric) padding, strides, dilation, non-square windows, NCHW through the
public API and both dtypes.
"""
import numpy as np
import pytest

import fastconv
from fastconv import _backends
from fastconv._backends import reference
from fastconv._shapes import resolve_window
from cases import DTYPES, FAST_BACKENDS

HOOKS = ("col2im", "max_pool2d_argmax", "max_pool2d_backward", "relu_backward")

# (N, H, W, C), ksize, strides, dilations, padding
GEOMETRIES = [
    pytest.param((2, 7, 9, 5), (3, 3), (1, 1), (1, 1), "SAME", id="k3-s1-same-overlap"),
    pytest.param((1, 8, 7, 3), (2, 3), (2, 1), (1, 2), "SAME", id="k2x3-s2x1-d1x2-same-asym"),
    pytest.param((3, 6, 6, 17), (3, 2), (1, 2), (2, 1), "VALID", id="k3x2-d2x1-valid-c17"),
    pytest.param((2, 9, 8, 4), (3, 3), (2, 2), (1, 1), "SAME", id="k3-s2-same-odd"),
    pytest.param((1, 5, 5, 1), (2, 2), (2, 2), (1, 1), "VALID", id="n1-c1-k2-s2"),
    pytest.param((2, 4, 6, 8), (1, 1), (3, 2), (1, 1), "VALID", id="k1-s3x2-skips"),
]


def _window(shape, ksize, strides, dilations, padding):
    _, H, W, _ = shape
    return resolve_window(H, W, *ksize, *strides, *dilations, padding)


def _native(backend, hook):
    module = _backends.driver(backend)
    fn = getattr(module, hook, None)
    assert fn is not None, f"backend {backend!r} lacks its native {hook} driver"
    return fn


def _tied(rng, shape, dtype, nan=True):
    """Small integers (many ties), a few NaN when asked."""
    x = rng.integers(-2, 3, shape).astype(dtype)
    if nan:
        flat = x.reshape(-1)
        flat[rng.choice(flat.size, max(1, flat.size // 40), replace=False)] = np.nan
    return x


@pytest.mark.parametrize("hook", HOOKS)
def test_fast_backends_have_native_hooks(fast_backend, hook):
    _native(fast_backend, hook)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, ksize, strides, dilations, padding", GEOMETRIES)
def test_col2im_matches_reference_bitwise(fast_backend, rng, dtype, shape, ksize, strides,
                                          dilations, padding):
    win = _window(shape, ksize, strides, dilations, padding)
    N, H, W, C = shape
    cols = rng.standard_normal((N, win.OH, win.OW, *ksize, C)).astype(dtype)
    pads = (win.pad_top, win.pad_left)
    start = rng.standard_normal(shape).astype(dtype)   # the driver adds into out
    expected = start.copy()
    reference.col2im(cols, expected, ksize, strides, dilations, pads, 1)
    fn = _native(fast_backend, "col2im")
    zero_ref = np.zeros(shape, dtype)
    reference.col2im(cols, zero_ref, ksize, strides, dilations, pads, 1)
    for threads in (1, 2, 3):
        got = np.zeros(shape, dtype)
        fn(cols, got, ksize, strides, dilations, pads, threads)
        np.testing.assert_array_equal(got, zero_ref)   # from zero: the same sums, bitwise
        acc = start.copy()
        fn(cols, acc, ksize, strides, dilations, pads, threads)
        np.testing.assert_allclose(acc, expected, rtol=1e-5 if dtype == np.float32 else 1e-12,
                                   atol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_col2im_adjoint_identity(fast_backend, rng, dtype):
    shape, ksize, strides, dilations = (2, 7, 6, 3), (3, 2), (2, 1), (1, 2)
    win = _window(shape, ksize, strides, dilations, "SAME")
    pads = (win.pad_top, win.pad_left)
    x = rng.standard_normal(shape)
    c = rng.standard_normal((2, win.OH, win.OW, *ksize, 3))
    cols = np.empty_like(c)
    reference.im2col(x, cols, ksize, strides, dilations, pads, 1)
    back = np.zeros(shape)
    _native(fast_backend, "col2im")(c, back, ksize, strides, dilations, pads, 2)
    assert np.isclose(np.vdot(cols, c), np.vdot(x, back), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, ksize, strides, dilations, padding", GEOMETRIES)
def test_argmax_matches_reference_bitwise(fast_backend, rng, dtype, shape, ksize, strides,
                                          dilations, padding):
    win = _window(shape, ksize, strides, dilations, padding)
    N, H, W, C = shape
    pads = (win.pad_top, win.pad_left)
    fn = _native(fast_backend, "max_pool2d_argmax")
    for x in (_tied(rng, shape, dtype, nan=False), _tied(rng, shape, dtype, nan=True),
              np.full(shape, np.nan, dtype)):
        out_ref = np.empty((N, win.OH, win.OW, C), dtype)
        idx_ref = np.empty(out_ref.shape, np.int64)
        reference.max_pool2d_argmax(x, out_ref, idx_ref, ksize, strides, dilations, pads, 1)
        for threads in (1, 2, 3):
            out = np.empty_like(out_ref)
            idx = np.full(out_ref.shape, -7, np.int64)
            fn(x, out, idx, ksize, strides, dilations, pads, threads)
            np.testing.assert_array_equal(out, out_ref)   # NaN compare equal here
            np.testing.assert_array_equal(idx, idx_ref)


def test_argmax_first_tie_and_first_nan(fast_backend):
    x = np.zeros((1, 2, 2, 2))
    x[0, 0, 1, 0] = x[0, 1, 0, 0] = 5.0          # channel 0: tie at (0,1) and (1,0)
    x[0, 0, 1, 1] = x[0, 1, 1, 1] = np.nan        # channel 1: two NaN, the first wins
    x[0, 1, 0, 1] = np.inf
    out = np.empty((1, 1, 1, 2))
    idx = np.empty((1, 1, 1, 2), np.int64)
    _native(fast_backend, "max_pool2d_argmax")(x, out, idx, (2, 2), (2, 2), (1, 1), (0, 0), 2)
    assert out[0, 0, 0, 0] == 5.0 and np.isnan(out[0, 0, 0, 1])
    assert idx[0, 0, 0, 0] == (0 * 2 + 1) * 2 + 0
    assert idx[0, 0, 0, 1] == (0 * 2 + 1) * 2 + 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, ksize, strides, dilations, padding", GEOMETRIES)
def test_pool_backward_matches_reference_bitwise(fast_backend, rng, dtype, shape, ksize,
                                                 strides, dilations, padding):
    win = _window(shape, ksize, strides, dilations, padding)
    N, H, W, C = shape
    size = H * W * C
    x = _tied(rng, shape, dtype)
    out = np.empty((N, win.OH, win.OW, C), dtype)
    idx = np.empty(out.shape, np.int64)
    reference.max_pool2d_argmax(x, out, idx, ksize, strides, dilations,
                                (win.pad_top, win.pad_left), 1)
    flat = (idx + (np.arange(N) * size).reshape(N, 1, 1, 1)).reshape(-1)
    dy = rng.standard_normal(out.size).astype(dtype)
    expected = np.empty(N * size, dtype)
    reference.max_pool2d_backward(dy, flat, expected, 1)
    fn = _native(fast_backend, "max_pool2d_backward")
    for threads in (1, 2, 3):
        got = np.full(N * size, np.nan, dtype)
        fn(dy, flat, got, threads, images=N)
        np.testing.assert_array_equal(got, expected)


def _pool_grad_expected(x, dy, ksize, strides, dilations, pads):
    """The reference's argmax, then its scatter-add (one image per block)."""
    N = x.shape[0]
    out = np.empty(dy.shape, x.dtype)
    idx = np.empty(dy.shape, np.int64)
    reference.max_pool2d_argmax(x, out, idx, ksize, strides, dilations, pads, 1)
    size = x[0].size
    flat = (idx + (np.arange(N) * size).reshape(N, 1, 1, 1)).reshape(-1)
    expected = np.empty(x.size, x.dtype)
    reference.max_pool2d_backward(dy.reshape(-1), flat, expected, 1)
    return expected.reshape(x.shape)


@pytest.mark.parametrize("level", ["generic", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, ksize, strides, dilations, padding", GEOMETRIES)
def test_cython_fused_pool_backward_matches_reference_bitwise(monkeypatch, rng, dtype, level,
                                                               shape, ksize, strides,
                                                               dilations, padding):
    """max_pool2d_grad (the argmax found row by row, never stored) at every SIMD level,
    thread count and piece size: the reference's argmax and scatter, bit for bit."""
    if "cython" not in fastconv.available_backends():
        pytest.skip("the cython backend is not built")
    from fastconv._backends.cython import _backward as bw, driver
    if driver.SIMD_LEVELS.index(level) > driver.SIMD_LEVELS.index(driver.cpu_simd_level()):
        pytest.skip(f"CPU lacks {level} (best: {driver.cpu_simd_level()})")
    monkeypatch.setenv(driver.SIMD_ENV_VAR, level)
    monkeypatch.setattr(fastconv._tuning, "POOL_SINGLE_THREAD_WORK", 0)   # threads even here
    win = _window(shape, ksize, strides, dilations, padding)
    pads = (win.pad_top, win.pad_left)
    x = _tied(rng, shape, dtype)
    dy = rng.standard_normal((shape[0], win.OH, win.OW, shape[3])).astype(dtype)
    expected = _pool_grad_expected(x, dy, ksize, strides, dilations, pads)
    for threads in (1, 2, 3, 4):   # 3 and 4: more threads than images
        got = np.full(x.shape, np.nan, dtype)
        driver.max_pool2d_grad(x, dy, got, ksize, strides, dilations, pads, threads)
        np.testing.assert_array_equal(got, expected)
    for work in (1, 50, 10 ** 9):   # one image per piece, a few, all
        got = np.full(x.shape, np.nan, dtype)
        bw.max_pool2d_grad(x, dy, got, *ksize, *strides, *dilations, *pads, 2,
                           driver.simd_level(), work)
        np.testing.assert_array_equal(got, expected)


def test_cython_fused_pool_backward_serves_the_public_op(monkeypatch, rng):
    """Without argmax, the public pool backward runs the fused driver (spied)."""
    if "cython" not in fastconv.available_backends():
        pytest.skip("the cython backend is not built")
    from fastconv._backends.cython import driver
    calls = []
    real = driver.max_pool2d_grad
    monkeypatch.setattr(driver, "max_pool2d_grad", lambda *a: calls.append(1) or real(*a))
    x = _tied(rng, (2, 6, 6, 3), np.float64)
    dy = rng.standard_normal((2, 3, 3, 3))
    got = fastconv.max_pool2d_backward(dy, x, 2, 2, "VALID", backend="cython")
    assert calls
    np.testing.assert_array_equal(got, _pool_grad_expected(x, dy, (2, 2), (2, 2), (1, 1),
                                                           (0, 0)))


def test_pool_backward_rejects_indices_outside_their_image(fast_backend):
    dy = np.ones(4)
    flat = np.array([0, 1, 2, 3], np.int64)        # image 1's entries point into image 0
    with pytest.raises(ValueError, match="images=2"):
        _native(fast_backend, "max_pool2d_backward")(dy, flat, np.empty(8), 2, images=2)
    with pytest.raises(ValueError, match="images=3"):
        _native(fast_backend, "max_pool2d_backward")(dy, flat, np.empty(8), 2, images=3)


def test_cython_pool_backward_in_pieces_matches_one_piece(rng):
    """Pieces of whole images, and of entries cut at the same offsets in every image
    (an image larger than the piece budget), give the same bits as one piece."""
    if "cython" not in fastconv.available_backends():
        pytest.skip("the cython backend is not built")
    from fastconv._backends.cython import _backward as bw
    shape, ksize, strides = (5, 9, 7, 6), (3, 2), (2, 1)
    win = _window(shape, ksize, strides, (1, 1), "SAME")
    N, H, W, C = shape
    x = _tied(rng, shape, np.float64)
    out = np.empty((N, win.OH, win.OW, C))
    idx = np.empty(out.shape, np.int64)
    reference.max_pool2d_argmax(x, out, idx, ksize, strides, (1, 1),
                                (win.pad_top, win.pad_left), 1)
    flat = (idx + (np.arange(N) * H * W * C).reshape(N, 1, 1, 1)).reshape(-1)
    dy = rng.standard_normal(out.size)
    expected = np.empty(x.size)
    reference.max_pool2d_backward(dy, flat, expected, 1)
    image_work = out.size // N + x.size // N
    for work in (0, 2 * image_work, image_work // 3, 50, 1):   # images / entries per piece
        for threads in (1, 2):
            got = np.full(x.size, np.nan)
            bw.max_pool2d_backward(dy, flat, got, N, threads, work)
            np.testing.assert_array_equal(got, expected, err_msg=f"work={work}")


def _relu_values(n, dtype, seed):
    """Values and gradients with every special case: NaN, +-inf, +-0, +-denormals."""
    rng = np.random.default_rng(seed)
    tiny = np.finfo(dtype).smallest_subnormal
    f = rng.standard_normal(n).astype(dtype)
    dy = rng.standard_normal(n).astype(dtype)
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, tiny, -tiny], dtype)
    f[::7] = specials[(np.arange(f[::7].size) % specials.size)]
    dy[3::11] = specials[(np.arange(dy[3::11].size) % specials.size)]
    return f, dy


def _relu_expected(f, dy):
    """dy where f > 0, else +0: NumPy's compare is false for NaN."""
    return np.where(f > 0, dy, np.zeros((), dy.dtype))


def _bits(a):
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 31, 1000, 33333])   # tails of every vector width
def test_relu_backward_matches_reference_bitwise(fast_backend, dtype, n):
    f, dy = _relu_values(n, dtype, seed=n)
    expected = np.empty_like(dy)
    reference.relu_backward(f, dy, expected, 1)
    np.testing.assert_array_equal(_bits(expected), _bits(_relu_expected(f, dy)))
    fn = _native(fast_backend, "relu_backward")
    for threads in (1, 2, 3):
        got = np.full_like(dy, 42.0)
        fn(f, dy, got, threads)
        np.testing.assert_array_equal(_bits(got), _bits(expected))
    in_place = dy.copy()                 # out may be dy ...
    fn(f, in_place, in_place, 2)
    np.testing.assert_array_equal(_bits(in_place), _bits(expected))
    in_place = f.copy()                  # ... or the value
    fn(in_place, dy, in_place, 2)
    np.testing.assert_array_equal(_bits(in_place), _bits(expected))


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_backward_unaligned_views(fast_backend, dtype):
    """Inputs and output at every offset within a vector (streaming heads and tails)."""
    f, dy = _relu_values(4099, dtype, seed=1)
    fn = _native(fast_backend, "relu_backward")
    for off in range(0, 9):
        got = np.full(4099 + off, 42.0, dtype)[off:]
        fn(f[off:], dy[:4099 - off], got[:4099 - off], 2)
        np.testing.assert_array_equal(_bits(got[:4099 - off]),
                                      _bits(_relu_expected(f[off:], dy[:4099 - off])))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("padding, strides", [("SAME", 2), ("VALID", 1), ("SAME", (1, 2))])
def test_public_pool_ops_match_reference(fast_backend, rng, dtype, data_format, padding,
                                         strides):
    nhwc = (2, 7, 8, 6)
    x = _tied(rng, nhwc, dtype)
    if data_format == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    ksize = 3
    ref_out, ref_idx = fastconv.max_pool2d_with_argmax(x, ksize, strides, padding, data_format,
                                                       backend="numpy")
    dy = rng.standard_normal(ref_out.shape).astype(dtype)
    ref_dx = fastconv.max_pool2d_backward(dy, x, ksize, strides, padding, data_format,
                                          backend="numpy")
    for threads in (1, 2, 3):
        out, idx = fastconv.max_pool2d_with_argmax(x, ksize, strides, padding, data_format,
                                                   backend=fast_backend, num_threads=threads)
        np.testing.assert_array_equal(out, ref_out)
        np.testing.assert_array_equal(idx, ref_idx)
        for argmax in (None, idx):
            dx = fastconv.max_pool2d_backward(dy, x, ksize, strides, padding, data_format,
                                              argmax=argmax, backend=fast_backend,
                                              num_threads=threads)
            np.testing.assert_array_equal(dx, ref_dx)


@pytest.mark.parametrize("dtype", DTYPES)
def test_public_col2im_and_strided_input_grad(fast_backend, rng, dtype):
    """The public col2im, and the strided input gradient (which runs col2im), bitwise."""
    x = rng.standard_normal((2, 9, 8, 4)).astype(dtype)
    cols = fastconv.im2col(x, (3, 2), 2, "SAME", backend="numpy")
    ref = fastconv.col2im(cols, x.shape, (3, 2), 2, "SAME", backend="numpy")
    w = rng.standard_normal((3, 3, 4, 5)).astype(dtype)
    dy = rng.standard_normal(fastconv.conv2d(x, w, 2, "SAME", backend="numpy").shape).astype(dtype)
    grads = []
    for threads in (1, 2, 3):
        got = fastconv.col2im(cols, x.shape, (3, 2), 2, "SAME", backend=fast_backend,
                              num_threads=threads)
        np.testing.assert_array_equal(got, ref)
        grads.append(fastconv.conv2d_backward(x, w, dy, 2, "SAME", need=("input",),
                                              backend=fast_backend, num_threads=threads)[0])
    for g in grads[1:]:
        np.testing.assert_array_equal(g, grads[0])
    expected = fastconv.conv2d_backward(x, w, dy, 2, "SAME", need=("input",), backend="numpy")[0]
    np.testing.assert_allclose(grads[0], expected, rtol=1e-4 if dtype == np.float32 else 1e-10,
                               atol=1e-4 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("level", ["generic", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cython_argmax_every_simd_level_matches_reference(monkeypatch, rng, level, dtype):
    if "cython" not in fastconv.available_backends():
        pytest.skip("the cython backend is not built")
    from fastconv._backends.cython import driver
    if driver.SIMD_LEVELS.index(level) > driver.SIMD_LEVELS.index(driver.cpu_simd_level()):
        pytest.skip(f"CPU lacks {level} (best: {driver.cpu_simd_level()})")
    monkeypatch.setenv(driver.SIMD_ENV_VAR, level)
    shape, ksize, strides, dilations = (2, 9, 8, 37), (3, 3), (2, 1), (1, 2)
    win = _window(shape, ksize, strides, dilations, "SAME")
    pads = (win.pad_top, win.pad_left)
    x = _tied(rng, shape, dtype)
    out_ref = np.empty((2, win.OH, win.OW, 37), dtype)
    idx_ref = np.empty(out_ref.shape, np.int64)
    reference.max_pool2d_argmax(x, out_ref, idx_ref, ksize, strides, dilations, pads, 1)
    out, idx = np.empty_like(out_ref), np.empty_like(idx_ref)
    driver.max_pool2d_argmax(x, out, idx, ksize, strides, dilations, pads, 2)
    np.testing.assert_array_equal(out, out_ref)
    np.testing.assert_array_equal(idx, idx_ref)
