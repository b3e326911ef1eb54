"""The compiled ("cython") backend against the NumPy reference.

Every op goes through the public API with ``backend="cython"`` and is compared
with ``backend="numpy"`` (:mod:`fastconv._backends.reference`, the judge) for every
SIMD path this CPU has (selected with ``FASTCONV_SIMD``), 1-3 threads,
float32 and float64, odd sizes (channel tails of every vector width), NaN and
infinities.  ReLU, pooling and im2col must match exactly; convolutions within
a tolerance scaled by the reduction length.  Results must be bitwise
identical for every thread count.
"""
import shutil
import subprocess

import numpy as np
import pytest

import fastconv

cython_driver = pytest.importorskip("fastconv._backends.cython.driver",
                                    reason="Cython extension not built")
from cases import DTYPES, tolerance  # noqa: E402
from fastconv import _tuning  # noqa: E402
from fastconv._backends.cython import _build_info, _im2col_gemm, _relu  # noqa: E402

LEVELS = cython_driver.SIMD_LEVELS
CPU_LEVEL = _build_info.cpu_simd_level()
USABLE_LEVELS = LEVELS[:LEVELS.index(CPU_LEVEL) + 1]
THREADS = (1, 2, 3)
HAVE_DIRECT = "direct" in cython_driver.BUILT_ALGORITHMS


@pytest.fixture(params=LEVELS)
def simd(request, monkeypatch):
    """Run the test with each SIMD path; skip the ones this CPU lacks."""
    if request.param not in USABLE_LEVELS:
        pytest.skip(f"CPU lacks {request.param} (best: {CPU_LEVEL})")
    monkeypatch.setenv("FASTCONV_SIMD", request.param)
    return request.param


def _data(shape, dtype, seed=0, specials=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    if specials and x.size >= 8:
        flat = x.reshape(-1)
        idx = rng.choice(flat.size, size=max(flat.size // 50, 4), replace=False)
        flat[idx[0::4]] = np.nan
        flat[idx[1::4]] = np.inf
        flat[idx[2::4]] = -np.inf
        flat[idx[3::4]] = -0.0
    return x


# ---------------------------------------------------------------- relu

RELU_SIZES = ((1,), (7,), (15,), (17,), (33,), (3, 5, 7, 11), (70001,))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_threads", THREADS)
@pytest.mark.parametrize("shape", RELU_SIZES)
def test_relu_matches_reference(simd, dtype, num_threads, shape):
    x = _data(shape, dtype, specials=True)
    got = fastconv.relu(x, backend="cython", num_threads=num_threads)
    np.testing.assert_array_equal(got, fastconv.relu(x, backend="numpy"))
    assert np.isnan(got[np.isnan(x)]).all()
    assert (got[x == -np.inf] == 0).all()
    assert (got[x == np.inf] == np.inf).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_threads", THREADS)
def test_relu_in_place(simd, dtype, num_threads):
    x = _data((5, 13, 17, 31), dtype, specials=True)
    expected = fastconv.relu(x, backend="numpy")
    got = fastconv.relu(x, out=x, backend="cython", num_threads=num_threads)
    assert got is x
    np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_threads", (1, 2))
@pytest.mark.parametrize("offset", (0, 1, 3))
@pytest.mark.parametrize("n", (5, 31, 70001))
def test_relu_streaming_stores(simd, dtype, num_threads, offset, n):
    """Non-temporal (streaming) stores: any alignment of out, any length, in place too."""
    x = _data((n,), dtype, seed=n, specials=True)
    backing = np.full(n + 8, 42.0, dtype)
    out = backing[offset:offset + n]
    level = cython_driver.simd_level()
    _relu.relu(x, out, num_threads, level, _tuning.RELU_CHUNK, _tuning.STREAM_BYTES, True)
    np.testing.assert_array_equal(out, np.maximum(x, 0))
    assert (backing[:offset] == 42).all() and (backing[offset + n:] == 42).all()
    _relu.relu(x, x, num_threads, level, _tuning.RELU_CHUNK, _tuning.STREAM_BYTES, True)
    np.testing.assert_array_equal(x, out)


def test_relu_read_only_input_and_out_buffer():
    x = _data((1000,), np.float32)
    x.flags.writeable = False
    out = np.full_like(x, 7.0)
    fastconv.relu(x, out=out, backend="cython")
    np.testing.assert_array_equal(out, np.maximum(x, 0))


# ---------------------------------------------------------------- max pool

# (ksize, strides, padding, dilations)
POOLS = (
    ((2, 2), (2, 2), "VALID", 1),
    ((2, 2), (2, 2), "SAME", 1),
    ((3, 3), (2, 2), "SAME", 1),
    ((3, 2), (1, 2), "VALID", 1),
    ((1, 1), (1, 1), "VALID", 1),
    ((2, 3), (3, 1), [[0, 0], [1, 1], [2, 0], [0, 0]], 1),
    ((3, 3), (1, 1), "SAME", (2, 1)),
)
POOL_INPUTS = ((2, 9, 11, 1), (1, 7, 8, 3), (2, 6, 9, 17), (1, 5, 5, 35), (1, 5, 6, 67))


def _pool(x, ksize, strides, padding, dilations, backend, num_threads=None):
    if dilations == 1:
        return fastconv.max_pool2d(x, ksize, strides, padding, backend=backend,
                                   num_threads=num_threads)
    # dilated pooling is reached through tf.nn.pool-style fastconv.nn
    from fastconv import _ops
    from fastconv._shapes import resolve_window
    N, H, W, C = x.shape
    win = resolve_window(H, W, *ksize, *strides, *dilations, padding, "NHWC")
    return _ops.max_pool2d_window(x, "NHWC", ksize, strides, dilations, win, None, backend,
                               num_threads)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_threads", THREADS)
@pytest.mark.parametrize("geometry", POOLS)
def test_max_pool_matches_reference(simd, dtype, num_threads, geometry):
    for i, shape in enumerate(POOL_INPUTS):
        x = _data(shape, dtype, seed=i, specials=True)
        got = _pool(x, *geometry, backend="cython", num_threads=num_threads)
        np.testing.assert_array_equal(got, _pool(x, *geometry, backend="numpy"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_nan_and_padding(simd, dtype):
    # every value negative: a picked zero would mean the padding was picked
    x = -1.0 - np.abs(_data((1, 5, 7, 19), dtype))
    x[0, 0, 0, :] = np.nan      # NaN in the first tap of a window
    x[0, 3, 4, 5] = np.nan      # NaN in a later tap
    x[0, 4, 6, 2] = -np.inf
    got = fastconv.max_pool2d(x, 3, 2, "SAME", backend="cython")
    np.testing.assert_array_equal(got, fastconv.max_pool2d(x, 3, 2, "SAME", backend="numpy"))
    assert np.isnan(got[0, 0, 0, :]).all()
    assert np.isnan(got[0, 1:3, 2, 5]).all()
    assert (got[~np.isnan(got)] < 0).all()
    only_inf = np.full((1, 2, 2, 17), -np.inf, dtype)
    np.testing.assert_array_equal(fastconv.max_pool2d(only_inf, 2, 1, "SAME", backend="cython"),
                                  np.full((1, 2, 2, 17), -np.inf, dtype))


# ---------------------------------------------------------------- im2col

IM2COL = (
    ((3, 3), 1, "SAME", 1),
    ((3, 2), (2, 1), "SAME", (1, 2)),
    ((1, 4), 3, "VALID", 1),
    ((2, 2), 1, [[0, 0], [2, 1], [0, 3], [0, 0]], (2, 2)),
)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_threads", THREADS)
@pytest.mark.parametrize("geometry", IM2COL)
def test_im2col_matches_reference(dtype, num_threads, geometry):
    ksize, strides, padding, dilations = geometry
    x = _data((2, 7, 9, 5), dtype, specials=True)
    got = fastconv.im2col(x, ksize, strides, padding, dilations, backend="cython",
                          num_threads=num_threads)
    ref = fastconv.im2col(x, ksize, strides, padding, dilations, backend="numpy")
    np.testing.assert_array_equal(got, ref)


# ---------------------------------------------------------------- conv2d

# (x shape, KH, KW, O, strides, padding, dilations, groups)
CONVS = (
    ((2, 9, 11, 5), 3, 2, 7, 1, "SAME", 1, 1),
    ((1, 13, 10, 3), 3, 3, 16, 2, "VALID", 1, 1),
    ((2, 8, 8, 16), 1, 1, 33, 1, "VALID", 1, 1),              # 1x1: no unfolding
    ((1, 12, 12, 8), 3, 3, 12, 1, "SAME", 2, 4),              # grouped, dilated
    ((1, 9, 9, 6), 3, 3, 6, (2, 1), "SAME", 1, 6),            # depthwise
    ((3, 7, 7, 1), 5, 5, 1, 1, [[0, 0], [2, 3], [1, 0], [0, 0]], 1, 1),
    ((1, 6, 7, 4), 2, 3, 4, 1, "VALID", (2, 2), 2),
)


def _conv_case(case, dtype, seed=0):
    shape, KH, KW, O, strides, padding, dilations, groups = case
    x = _data(shape, dtype, seed)
    w = _data((KH, KW, shape[3] // groups, O), dtype, seed + 1)
    b = _data((O,), dtype, seed + 2)
    kwargs = dict(strides=strides, padding=padding, dilations=dilations, groups=groups, bias=b)
    return x, w, kwargs, KH * KW * shape[3] // groups


ALGOS = ("im2col", "direct", "auto")


@pytest.mark.parametrize("activation", (None, "relu"))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", ALGOS)
@pytest.mark.parametrize("case", CONVS)
def test_conv2d_matches_reference(simd, case, algorithm, dtype, activation):
    if algorithm == "direct" and not HAVE_DIRECT:
        pytest.skip("fastconv._conv_direct is not built")
    x, w, kwargs, K = _conv_case(case, dtype)
    ref = fastconv.conv2d(x, w, activation=activation, backend="numpy", **kwargs)
    results = [fastconv.conv2d(x, w, activation=activation, backend="cython",
                               algorithm=algorithm, num_threads=n, **kwargs) for n in THREADS]
    np.testing.assert_allclose(results[0], ref, **tolerance(dtype, K))
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])  # bitwise, any thread count


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tile", (1, 5, 16, 1000))
def test_im2col_gemm_tiles_and_remainders(dtype, tile):
    """Forced tile sizes, including tiles that straddle images and a short last tile."""
    x, w, kwargs, K = _conv_case(((3, 7, 5, 6), 3, 2, 10, 1, "SAME", 1, 2), dtype)
    ref = fastconv.conv2d(x, w, activation="relu", backend="numpy", **kwargs)
    out = np.full(ref.shape, np.nan, dtype)
    _im2col_gemm.conv2d_im2col(x, w, kwargs["bias"], out, 1, 1, 1, 1, 1, 0, 2, True, 2,
                               cython_driver.simd_level(), cython_driver.IM2COL_TUNING, tile)
    np.testing.assert_allclose(out, ref, **tolerance(dtype, K))


#: a fixed tiling (a 2 MiB-L2 machine's), so the rule is checked independently of this machine
_RULE = {"tile_bytes": 1 << 20, "max_buffer_bytes": 16 << 20, "min_tile": 64, "max_tile": 1024,
         "min_tasks": 8, "min_o_block": 64}


def test_tile_pixels_rule():
    def tp(*args):
        return _im2col_gemm.tile_pixels(*args, _RULE)

    def ob(*args):
        return _im2col_gemm.o_block(*args, _RULE)
    assert tp(25088, 576, 64, 4) == 448                # 8x56x56, 3x3x64 -> 64: 56 equal tiles
    assert tp(6272, 256, 256, 4) == 784                # 8 tiles: threads share the work
    assert tp(196, 4608, 512, 4) == 196                # big filters: one tile, split O
    assert tp(10**6, 10**6, 1, 4) == _RULE["min_tile"]
    assert tp(10**6, 1, 1, 4) == _RULE["max_tile"]
    assert tp(40, 64, 8, 4) == 40                      # small: one tile
    assert tp(64 * 20, 64, 8, 4) == 160                # >= min_tasks tiles
    assert tp(1030, 8, 8, 4) == 129                    # equal tiles, no tiny last tile
    assert ob(1, 2048, 1) == 256
    assert ob(1, 100, 1) == 64
    assert ob(1, 50, 1) == 50
    assert ob(8, 2048, 1) == 2048
    assert ob(1, 2048, 2) == 2048


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_threads", THREADS)
@pytest.mark.parametrize("case", (((1, 3, 3, 8), 1, 1, 256, 1, "VALID", 1, 1),
                                  ((1, 4, 3, 5), 3, 3, 200, 1, "SAME", 1, 1)))
def test_im2col_gemm_channel_blocks(simd, dtype, num_threads, case):
    """Few output pixels: the channels are split into blocks (last one short)."""
    x, w, kwargs, K = _conv_case(case, dtype)
    ref = fastconv.conv2d(x, w, activation="relu", backend="numpy", **kwargs)
    got = fastconv.conv2d(x, w, activation="relu", backend="cython", algorithm="im2col",
                          num_threads=num_threads, **kwargs)
    np.testing.assert_allclose(got, ref, **tolerance(dtype, K))
    one = fastconv.conv2d(x, w, activation="relu", backend="cython", algorithm="im2col",
                          num_threads=1, **kwargs)
    np.testing.assert_array_equal(got, one)


def test_conv2d_nan_inf_propagate():
    x, w, kwargs, _ = _conv_case(((1, 6, 6, 4), 3, 3, 5, 1, "SAME", 1, 1), np.float32)
    x[0, 2, 2, 1] = np.nan
    x[0, 5, 0, 0] = np.inf
    ref = fastconv.conv2d(x, w, backend="numpy", **kwargs)
    for algorithm in ALGOS if HAVE_DIRECT else ("im2col",):
        got = fastconv.conv2d(x, w, backend="cython", algorithm=algorithm, **kwargs)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        finite = np.isfinite(ref)
        np.testing.assert_allclose(got[finite], ref[finite], rtol=1e-4, atol=1e-4)


def test_direct_unavailable_message(monkeypatch):
    monkeypatch.setattr(cython_driver, "_conv_direct", None)
    x, w, kwargs, _ = _conv_case(CONVS[0], np.float32)
    with pytest.raises(ValueError, match="algorithm='direct'.*_conv_direct"):
        fastconv.conv2d(x, w, backend="cython", algorithm="direct", **kwargs)
    assert cython_driver.choose_algorithm(x.shape, w.shape, (2, 9, 11, 7), (1, 1), (1, 1),
                                            1) == "im2col"


@pytest.mark.skipif(not HAVE_DIRECT, reason="fastconv._conv_direct is not built")
def test_auto_rule():
    choose = cython_driver.choose_algorithm
    # suite shapes: direct
    assert choose((8, 56, 56, 64), (3, 3, 64, 64), (8, 56, 56, 64), (1, 1), (1, 1), 1) == "direct"
    assert choose((8, 56, 56, 64), (3, 3, 1, 64), (8, 56, 56, 64), (1, 1), (1, 1), 64) == "direct"
    # big filters on few pixels: im2col + GEMM
    assert choose((1, 14, 14, 512), (3, 3, 512, 512), (1, 14, 14, 512), (1, 1), (1, 1), 1) == \
        "im2col"
    assert choose((1, 7, 7, 512), (1, 1, 512, 2048), (1, 7, 7, 2048), (1, 1), (1, 1), 1) == \
        "im2col"
    assert choose((1, 7, 7, 512), (1, 1, 256, 2048), (1, 7, 7, 2048), (1, 1), (1, 1), 2) == \
        "direct"
    assert choose((8, 7, 7, 512), (3, 3, 512, 512), (8, 7, 7, 512), (1, 1), (1, 1), 1) == \
        "im2col"
    assert choose((1, 28, 28, 256), (3, 3, 256, 256), (1, 28, 28, 256), (1, 1), (1, 1), 1) == \
        "direct"
    # 1x1 with groups == 1 and at least GEMM_1X1_MIN_CHANNELS in, GEMM_1X1_MIN_OUTPUTS out:
    # one GEMM of the input (suite: pw_1x1, cars_1x1; strided: gathered pixels)
    c_min, o_min = _tuning.GEMM_1X1_MIN_CHANNELS, _tuning.GEMM_1X1_MIN_OUTPUTS
    assert choose((8, 28, 28, 256), (1, 1, 256, 512), (8, 28, 28, 512), (1, 1), (1, 1), 1) == \
        "im2col"
    assert choose((16, 12, 12, 130), (1, 1, 130, 40), (16, 12, 12, 40), (1, 1), (1, 1), 1) == \
        "im2col"
    assert choose((8, 56, 56, 256), (1, 1, 256, 512), (8, 28, 28, 512), (2, 2), (1, 1), 1) == \
        "im2col"
    assert choose((8, 56, 56, c_min), (1, 1, c_min, o_min), (8, 56, 56, o_min), (1, 1),
                  (1, 1), 1) == "im2col"
    assert choose((8, 56, 56, c_min - 1), (1, 1, c_min - 1, 64), (8, 56, 56, 64), (1, 1),
                  (1, 1), 1) == "direct"
    assert choose((8, 56, 56, 256), (1, 1, 256, o_min - 1), (8, 56, 56, o_min - 1), (1, 1),
                  (1, 1), 1) == "direct"
    assert choose((8, 56, 56, 256), (1, 1, 128, 256), (8, 56, 56, 256), (1, 1), (1, 1), 2) == \
        "direct"


# ---------------------------------------------------------------- SIMD selection

def test_simd_env_bad_values(monkeypatch):
    monkeypatch.setenv("FASTCONV_SIMD", "sse9")
    with pytest.raises(ValueError, match="FASTCONV_SIMD.*sse9"):
        cython_driver.simd_level()
    with pytest.raises(ValueError, match="FASTCONV_SIMD"):
        fastconv.relu(np.ones(3), backend="cython")
    monkeypatch.setattr(cython_driver, "cpu_simd_level", lambda: "avx2")
    monkeypatch.setenv("FASTCONV_SIMD", "avx512")
    with pytest.raises(ValueError, match="FASTCONV_SIMD.*'avx2'"):
        cython_driver.simd_level()
    monkeypatch.setenv("FASTCONV_SIMD", "generic")
    assert cython_driver.simd_level() == 0


def test_simd_env_default_and_levels(monkeypatch):
    monkeypatch.delenv("FASTCONV_SIMD", raising=False)
    assert cython_driver.simd_level() == LEVELS.index(CPU_LEVEL)
    for name in USABLE_LEVELS:
        monkeypatch.setenv("FASTCONV_SIMD", f" {name.upper()} ")
        assert cython_driver.simd_level() == LEVELS.index(name)
        assert cython_driver.info()["simd"] == name


def test_info():
    info = cython_driver.info()
    assert set(info) == {"openmp", "simd", "cpu simd", "blas", "algorithms"}
    assert info["cpu simd"] == CPU_LEVEL
    assert "openblas" in info["blas"].lower() or "mkl" in info["blas"].lower()


# ---------------------------------------------------------------- OpenMP and threads

def _gcc_has_openmp(tmp_path):
    cc = shutil.which("gcc")
    if cc is None:
        return False
    src = tmp_path / "omp.c"
    src.write_text("#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")
    res = subprocess.run([cc, "-fopenmp", str(src), "-o", str(tmp_path / "omp")],
                         capture_output=True)
    return res.returncode == 0


def test_build_has_openmp(tmp_path):
    if not _gcc_has_openmp(tmp_path):
        pytest.skip("gcc with -fopenmp is not available here")
    assert _build_info.openmp_enabled()
    assert cython_driver.info()["openmp"] is True


@pytest.mark.parametrize("num_threads", (1, 2, 3, 4))
def test_num_threads_honoured(num_threads):
    if not _build_info.openmp_enabled():
        pytest.skip("serial build")
    assert _build_info.parallel_team_size(num_threads) == num_threads


def test_blas_restored_after_im2col_conv():
    from threadpoolctl import threadpool_info
    before = [(lib["filepath"], lib["num_threads"]) for lib in threadpool_info()
              if lib["user_api"] == "blas"]
    x, w, kwargs, _ = _conv_case(CONVS[0], np.float32)
    fastconv.conv2d(x, w, backend="cython", algorithm="im2col", num_threads=2, **kwargs)
    after = [(lib["filepath"], lib["num_threads"]) for lib in threadpool_info()
             if lib["user_api"] == "blas"]
    assert after == before


def test_concurrent_im2col_calls_from_python_threads():
    """Several Python threads at once: correct results, BLAS limits restored."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_info
    before = [(lib["filepath"], lib["num_threads"]) for lib in threadpool_info()
              if lib["user_api"] == "blas"]
    x, w, kwargs, K = _conv_case(((4, 20, 20, 16), 3, 3, 32, 1, "SAME", 1, 1), np.float32)
    ref = fastconv.conv2d(x, w, backend="numpy", **kwargs)
    run = lambda _: fastconv.conv2d(x, w, backend="cython", algorithm="im2col",  # noqa: E731
                                    num_threads=2, **kwargs)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, range(12)))
    for got in results:
        np.testing.assert_allclose(got, ref, **tolerance(np.float32, K))
    after = [(lib["filepath"], lib["num_threads"]) for lib in threadpool_info()
             if lib["user_api"] == "blas"]
    assert after == before


@pytest.mark.parametrize("missing", ("fastconv._backends.cython._relu",
                                     "fastconv._backends.cython._im2col_gemm"))
def test_import_error_without_compiled_modules(monkeypatch, missing):
    """Without its compiled modules the backend refuses to import: 'extension not built'."""
    import importlib.util
    import sys

    from fastconv import _backends
    monkeypatch.setitem(sys.modules, missing, None)
    parent, child = missing.rsplit(".", 1)
    monkeypatch.delattr(sys.modules[parent], child)
    spec = importlib.util.find_spec("fastconv._backends.cython.driver")
    module = importlib.util.module_from_spec(spec)
    with pytest.raises(ImportError) as info:
        spec.loader.exec_module(module)
    assert "not built" in _backends._explain("cython", info.value)
