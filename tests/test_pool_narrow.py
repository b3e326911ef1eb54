"""Max pooling of images with few channels (the compiled narrow path) against the reference.

With fewer channels than a SIMD vector holds, the compiled kernel works along
the image width instead of across channels (``fc_pool_impl.h``): a vertical
maximum over the window rows, a horizontal one over the window columns, then
one pick per output, in segments of output columns.  These cases reach every
branch of it on every SIMD path this CPU has: 1 to 7 channels (below the
AVX2 float32 width of 8, and the float64 width of 4), rows long enough for
several segments, padding on either side, dilations, strides that are not the
window, NaN and infinities.  Results must equal the NumPy reference exactly
and be bitwise identical for any thread count.
"""
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import fastconv
from cases import DTYPES, params

cython_driver = pytest.importorskip("fastconv._backends.cython.driver",
                                    reason="Cython extension not built")
from fastconv._backends.cython import _build_info  # noqa: E402

LEVELS = cython_driver.SIMD_LEVELS
USABLE_LEVELS = LEVELS[:LEVELS.index(_build_info.cpu_simd_level()) + 1]


@dataclass(frozen=True)
class NarrowPoolCase:
    """One pooling geometry on an NHWC input with few channels."""
    id: str
    shape: tuple          # (N, H, W, C)
    ksize: Any
    strides: Any = None
    padding: Any = "VALID"
    dilations: Any = 1


NARROW_CASES = [
    NarrowPoolCase("lesson_2x2_c1", (1, 160, 240, 1), 2, 2),
    NarrowPoolCase("odd_sizes_2x2_c1", (2, 9, 13, 1), 2, 2),
    NarrowPoolCase("segments_2x2_c1", (1, 4, 4200, 1), 2, 2),         # > 2 segments
    NarrowPoolCase("segments_3x3_s1_same_c5", (1, 5, 900, 5), 3, 1, "SAME"),
    NarrowPoolCase("k3_s2_same_c3", (2, 11, 17, 3), 3, 2, "SAME"),
    NarrowPoolCase("k2x3_s1x2_c2", (1, 7, 19, 2), (2, 3), (1, 2), "SAME"),
    NarrowPoolCase("explicit_pads_c7", (1, 8, 21, 7), (3, 2), (2, 2),
                   [[0, 0], [2, 0], [0, 1], [0, 0]]),
    NarrowPoolCase("k4_s3_same_c6", (1, 10, 31, 6), 4, 3, "SAME"),
    NarrowPoolCase("dilated_c4", (1, 9, 40, 4), (2, 3), (1, 1), "SAME", (2, 2)),
    NarrowPoolCase("wide_window_c3", (1, 3, 400, 3), (1, 300), (1, 7)),
    NarrowPoolCase("window_past_scratch_c3", (1, 3, 600, 3), (1, 500), (1, 50)),  # wide path
    NarrowPoolCase("stride_past_window_c1", (1, 6, 50, 1), 2, 3),      # wide path
    NarrowPoolCase("one_by_one_c1", (1, 5, 33, 1), 1, 1),
    NarrowPoolCase("one_column_c2", (3, 6, 1, 2), 2, 1, "SAME"),
]


@pytest.fixture(params=LEVELS)
def simd(request, monkeypatch):
    """Run the test with each SIMD path; skip the ones this CPU lacks."""
    if request.param not in USABLE_LEVELS:
        pytest.skip(f"CPU lacks {request.param}")
    monkeypatch.setenv("FASTCONV_SIMD", request.param)
    return request.param


def _data(shape, dtype, seed):
    """Normal values with NaN, +-inf and -0.0 scattered in."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    idx = rng.choice(flat.size, size=max(flat.size // 60, 4), replace=False)
    flat[idx[0::4]] = np.nan
    flat[idx[1::4]] = np.inf
    flat[idx[2::4]] = -np.inf
    flat[idx[3::4]] = -0.0
    return x


def _pool(case, x, backend, num_threads=None):
    if case.dilations == 1:
        return fastconv.max_pool2d(x, case.ksize, case.strides, case.padding, backend=backend,
                                   num_threads=num_threads)
    from fastconv import _ops
    from fastconv._shapes import resolve_window
    ksize, strides, dilations = _ops.pool_geometry(case.ksize, case.strides, "NHWC",
                                                   case.dilations)
    win = resolve_window(x.shape[1], x.shape[2], *ksize, *strides, *dilations, case.padding,
                         "NHWC")
    return _ops.max_pool2d_window(x, "NHWC", ksize, strides, dilations, win, None, backend,
                                  num_threads)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", params(NARROW_CASES))
def test_narrow_pool_matches_reference(simd, case, dtype):
    x = _data(case.shape, dtype, seed=len(case.id))
    expected = _pool(case, x, "numpy")
    got = _pool(case, x, "cython", num_threads=1)
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got).sum() == np.isnan(expected).sum()


@pytest.mark.parametrize("case", params(NARROW_CASES[:3]))
def test_narrow_pool_same_bits_for_any_thread_count(simd, case):
    x = _data(case.shape, np.float32, seed=1)
    one = _pool(case, x, "cython", num_threads=1)
    for n in (2, 3):
        np.testing.assert_array_equal(_pool(case, x, "cython", num_threads=n).view(np.uint32),
                                      one.view(np.uint32))


def test_narrow_pool_all_negative_never_picks_padding(simd):
    x = -1.0 - np.abs(_data((1, 7, 29, 2), np.float32, seed=3))
    x[np.isnan(x)] = -5.0
    got = fastconv.max_pool2d(x, 3, 2, "SAME", backend="cython")
    np.testing.assert_array_equal(got, fastconv.max_pool2d(x, 3, 2, "SAME", backend="numpy"))
    assert (got < 0).all()
