"""The compiled direct-convolution kernels (``_conv_direct``) against the NumPy judge.

Every SIMD level this CPU has (0 = portable C, 1 = AVX2, 2 = AVX-512) is forced in
turn, for float32 and float64, over shapes chosen to hit every tile tail, every
border case, groups, depthwise and the single-channel kernels; results must also be
bitwise identical for 1, 2 and 3 threads.
"""
import math

import numpy as np
import pytest

from cases import DTYPES
from fastconv._backends import reference as _reference

_conv_direct = pytest.importorskip(
    "fastconv._backends.cython._conv_direct", reason="compiled extension not built")
conv2d_direct = _conv_direct.conv2d_direct
from fastconv._backends.cython.driver import DIRECT_TUNING  # noqa: E402

from fastconv._backends.cython._build_info import cpu_simd_level  # noqa: E402  (after the skip)

_CPU_LEVEL = {"generic": 0, "avx2": 1, "avx512": 2}[cpu_simd_level()]
LEVELS = [pytest.param(level, id=name) for level, name in enumerate(("c", "avx2", "avx512"))
          if level <= _CPU_LEVEL]


def _out_size(size, k, s, d, before, after):
    return (size + before + after - ((k - 1) * d + 1)) // s + 1


def _make(case, dtype, rng, bias=True):
    """Random x, w, bias and a NaN-filled out for ``case`` (a dict of sizes)."""
    N, H, W, C, O, KH, KW = (case[k] for k in ("N", "H", "W", "C", "O", "KH", "KW"))
    groups = case.get("groups", 1)
    x = rng.standard_normal((N, H, W, C)).astype(dtype)
    w = rng.standard_normal((KH, KW, C // groups, O)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype) if bias else None
    SH, SW = case.get("S", (1, 1))
    DH, DW = case.get("D", (1, 1))
    top, bottom, left, right = case.get("P", (0, 0, 0, 0))
    OH = _out_size(H, KH, SH, DH, top, bottom)
    OW = _out_size(W, KW, SW, DW, left, right)
    out = np.full((N, OH, OW, O), np.nan, dtype)
    return x, w, b, out


def _run(case, x, w, b, out, relu, num_threads, level):
    SH, SW = case.get("S", (1, 1))
    DH, DW = case.get("D", (1, 1))
    top, _, left, _ = case.get("P", (0, 0, 0, 0))
    conv2d_direct(x, w, b, out, SH, SW, DH, DW, top, left, case.get("groups", 1), relu,
                  num_threads, level, DIRECT_TUNING)
    return out


def _reference_out(case, x, w, b, out, relu):
    ref = np.empty_like(out)
    top, _, left, _ = case.get("P", (0, 0, 0, 0))
    _reference.conv2d(x, w, b, ref, case.get("S", (1, 1)), case.get("D", (1, 1)),
                      (top, left), case.get("groups", 1), relu, 1)
    return ref


def _check(case, dtype, level, num_threads=2, relu=False, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    x, w, b, out = _make(case, dtype, rng, bias)
    got = _run(case, x, w, b, out, relu, num_threads, level)
    ref = _reference_out(case, x, w, b, out, relu)
    K = w.shape[0] * w.shape[1] * w.shape[2]
    tol = (1e-5 if dtype == np.float32 else 1e-12) * math.sqrt(K)
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
    return got


def _case(N, H, W, C, O, KH, KW, **kw):
    return dict(N=N, H=H, W=W, C=C, O=O, KH=KH, KW=KW, **kw)


def _case_id(case):
    extra = "".join(f"_{k}{'x'.join(map(str, v)) if isinstance(v, tuple) else v}"
                    for k, v in case.items() if k not in ("N", "H", "W", "C", "O", "KH", "KW"))
    return (f"n{case['N']}_{case['H']}x{case['W']}_c{case['C']}o{case['O']}"
            f"_k{case['KH']}x{case['KW']}{extra}")


# OW % 6 (and % 8, % 12, % 4 for the narrower tiles) over 0..5, with O % 16 != 0,
# C_in % 16 != 0 and C_in in 1..4; 1x1 VALID keeps every pixel in the interior.
TAIL_CASES = [
    _case(2, 3, W, C, O, KH, KW, P=P)
    for W, (C, O) in zip(range(12, 18), [(5, 64), (17, 20), (1, 37), (3, 130), (2, 16), (4, 7)])
    for KH, KW, P in [(1, 1, (0, 0, 0, 0)), (3, 3, (1, 1, 1, 1))]
]

BORDER_CASES = [
    _case(1, 9, 10, 6, 33, 3, 3, P=(1, 1, 1, 1)),                 # SAME
    _case(2, 10, 10, 5, 24, 3, 3, S=(2, 2), P=(0, 1, 0, 1)),      # SAME, stride 2, asymmetric
    _case(1, 8, 9, 4, 17, 4, 4, P=(1, 2, 2, 1)),                  # even kernel SAME-like
    _case(1, 6, 7, 3, 19, 3, 3, P=(3, 4, 2, 5)),                  # large explicit pads
    _case(1, 3, 4, 2, 5, 3, 3, P=(4, 4, 3, 3)),                   # rows of pure padding
    _case(2, 11, 13, 7, 20, 3, 3, S=(2, 3)),                      # odd sizes, strides 2 and 3
    _case(1, 13, 15, 6, 70, 3, 3, S=(2, 2), P=(1, 1, 1, 1)),
    _case(1, 12, 14, 5, 18, 3, 3, D=(2, 2), P=(2, 2, 2, 2)),      # dilation 2
    _case(1, 12, 17, 4, 40, 2, 3, D=(1, 3), P=(0, 1, 3, 3)),      # dilation (1, 3)
    _case(2, 9, 8, 5, 21, 3, 2, P=(1, 1, 0, 1)),                  # non-square 3x2
    _case(1, 7, 20, 3, 66, 1, 5, P=(0, 0, 2, 2)),                 # 1x5
    _case(1, 20, 7, 8, 16, 5, 1, S=(2, 1), P=(2, 2, 0, 0)),       # 5x1
    _case(2, 4, 4, 3, 10, 6, 6, P=(1, 1, 1, 1)),                  # kernel = padded input
    _case(1, 5, 5, 4, 65, 7, 7, P=(1, 1, 1, 1)),
    _case(1, 3, 2, 2, 9, 3, 3, P=(2, 2, 2, 2), S=(2, 2)),         # input smaller than kernel
    _case(3, 23, 22, 3, 64, 7, 7, S=(2, 2), P=(2, 3, 2, 3)),      # stem-like 7x7 / 2
    _case(2, 9, 9, 1, 64, 3, 3),                                  # Fashion-MNIST-like C=1
    _case(1, 6, 30, 130, 96, 3, 3, P=(1, 1, 1, 1)),               # C > 64, O > 64
    _case(2, 5, 9, 256, 130, 3, 3, P=(1, 1, 1, 1)),               # > 1 MB of filters
]

# Border columns run as tiles down the rows of a work item (up to 6 rows, or more when
# the filters are chunked): rows with different kh ranges in one item, items taller
# than a tile, images narrower than the kernel, C_in = 3 runs and chunked filters.
BORDER_ROW_CASES = [
    _case(2, 30, 7, 3, 16, 3, 3, P=(1, 1, 1, 1)),                 # cars-like C=3 -> 16
    _case(1, 25, 5, 3, 64, 7, 7, S=(2, 2), P=(3, 3, 3, 3)),       # stem-like, all border
    _case(2, 15, 13, 128, 128, 3, 3, S=(2, 2), P=(0, 1, 0, 1)),   # resnet-like 128 -> 128 / 2
    _case(1, 17, 11, 130, 33, 3, 3, S=(2, 1), P=(2, 2, 1, 1)),    # odd sizes, tails
    _case(1, 13, 6, 200, 20, 3, 3, P=(1, 1, 1, 1)),               # chunked: 128 + 72 channels
    _case(1, 20, 9, 5, 24, 5, 3, D=(3, 1), P=(6, 6, 1, 1)),       # many distinct kh ranges
]

GROUP_CASES = [
    _case(2, 7, 9, 8, 6, 3, 3, groups=2, P=(1, 1, 1, 1)),
    _case(1, 8, 9, 9, 12, 3, 2, groups=3, S=(2, 1), P=(1, 0, 0, 1)),
    _case(1, 6, 13, 8, 64, 3, 3, groups=4, P=(1, 1, 1, 1)),       # Og = 16: HWIO as is
    _case(1, 6, 13, 12, 96, 3, 3, groups=3, D=(2, 1), P=(2, 2, 1, 1)),  # Og = 32
    _case(2, 7, 11, 24, 24, 3, 3, groups=24, P=(1, 1, 1, 1)),     # depthwise
    _case(1, 9, 14, 70, 70, 3, 3, groups=70, S=(2, 2), P=(0, 1, 1, 1)),  # depthwise, tail
    _case(1, 8, 10, 130, 130, 5, 5, groups=130, D=(2, 2), P=(4, 4, 4, 4)),
    _case(2, 7, 9, 10, 20, 3, 3, groups=10, P=(1, 1, 1, 1)),      # depthwise, multiplier 2
    _case(1, 6, 8, 3, 9, 2, 2, groups=3, P=(0, 1, 0, 1)),         # multiplier 3
    _case(1, 9, 11, 37, 74, 3, 3, groups=37, S=(2, 2), P=(1, 1, 1, 1)),  # multiplier 2, tails
    _case(1, 6, 9, 5, 75, 3, 3, groups=5, D=(2, 1), P=(2, 2, 1, 1)),  # multiplier 15
    _case(1, 6, 9, 2, 64, 3, 3, groups=2, P=(1, 1, 1, 1)),        # multiplier 32: general
]

SINGLE_CHANNEL_CASES = [
    _case(1, 40, 150, 1, 1, 3, 3, P=(1, 1, 1, 1)),                # edge filter (width kernel)
    _case(2, 9, 70, 1, 1, 5, 3, D=(1, 2), P=(2, 2, 2, 2)),
    _case(1, 7, 37, 1, 1, 1, 4, P=(0, 0, 1, 2)),
    _case(1, 5, 3, 1, 1, 3, 5, P=(1, 1, 2, 2)),                   # no interior at all
    _case(1, 21, 33, 1, 1, 3, 3, S=(2, 2), P=(1, 1, 1, 1)),       # stride 2: not the width kernel
    _case(1, 10, 19, 1, 5, 3, 3, P=(1, 1, 1, 1)),                 # 1 -> 5
    _case(1, 10, 19, 2, 1, 3, 3, P=(1, 1, 1, 1)),                 # 2 -> 1
]

# The register tiles of each ISA (fc_conv_direct.h): blocks of 8 vectors run as tiles of
# 3 px x 4 vectors on AVX2 (4 x 3, 6 x 2, 12 x 1 when narrower), 6 x 4 on AVX-512, and
# the depthwise tile of 6 (AVX2) or 4 (AVX-512) pixels.  Channel counts cover a block
# split into two whole tiles (64), a whole tile and a one-vector rest (40), a block
# and a tail block (100), 3 and 2 vectors with tails (24, 20, 13), one vector (8, 7),
# for float64 too (vectors of 4 or 8); widths cover OW % 3, % 4, % 6 and % 12 over
# their whole range; C_in 1 and 3 with 3x3 windows (the unrolled variants), padded
# (border tiles down the rows) and not.
TILE_CASES = [
    _case(2, 5, W, C, O, 3, 3, P=P)
    for W, (C, O) in zip(range(14, 26),
                         [(1, 64), (3, 64), (1, 40), (3, 100), (3, 8), (1, 8), (3, 24),
                          (1, 20), (2, 13), (3, 7), (1, 16), (5, 72)])
    for P in [(0, 0, 0, 0), (1, 1, 1, 1)]
] + [
    _case(1, 7, 29, 3, 8, 3, 3, P=(1, 1, 1, 1)),                  # HD-RGB-like 3 -> 8
    _case(2, 6, 8, 64, 64, 3, 3, P=(1, 1, 1, 1)),                 # resnet-like 64 -> 64
    _case(1, 4, 11, 16, 136, 1, 1),                               # 1x1, 2 blocks, tail
    _case(1, 5, 13, 4, 64, 3, 3, S=(2, 2), P=(1, 1, 1, 1)),       # stride 2, 64
] + [
    # depthwise tiles: whole 16-channel blocks (128), a block and a tail (20, 36),
    # fewer channels than one vector (3), OW % 6 and % 4 over their range, borders
    _case(1, 4, W, C, C, 3, 3, groups=C, P=P)
    for W, C in zip(range(6, 18), [128, 20, 3, 36, 128, 8, 16, 5, 64, 24, 130, 12])
    for P in [(0, 0, 0, 0), (1, 1, 1, 1)]
]

ALL_CASES = (TAIL_CASES + BORDER_CASES + BORDER_ROW_CASES + GROUP_CASES + SINGLE_CHANNEL_CASES
             + TILE_CASES)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", ALL_CASES, ids=_case_id)
def test_matches_reference(case, level, dtype):
    _check(case, dtype, level)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", [TAIL_CASES[1], BORDER_CASES[0], GROUP_CASES[4],
                                  SINGLE_CHANNEL_CASES[0]], ids=_case_id)
def test_without_bias_and_with_relu(case, level, dtype):
    _check(case, dtype, level, relu=False, bias=False, seed=1)
    got = _check(case, dtype, level, relu=True, bias=True, seed=2)
    assert (got >= 0).all()
    assert (got == 0).any()


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", [BORDER_CASES[0], GROUP_CASES[4], SINGLE_CHANNEL_CASES[0],
                                  TAIL_CASES[3]], ids=_case_id)
def test_nan_propagates_through_relu(case, level):
    rng = np.random.default_rng(3)
    x, w, b, out = _make(case, np.float32, rng)
    x[0, x.shape[1] // 2, x.shape[2] // 2, 0] = np.nan
    got = _run(case, x, w, b, out, True, 2, level)
    ref = _reference_out(case, x, w, b, out, True)
    assert np.isnan(ref).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    K = w.shape[0] * w.shape[1] * w.shape[2]
    np.testing.assert_allclose(got, ref, rtol=1e-5 * math.sqrt(K), atol=1e-5 * math.sqrt(K))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", [
    _case(3, 13, 17, 5, 70, 3, 3, P=(1, 1, 1, 1)),
    _case(2, 11, 10, 64, 64, 3, 3, S=(2, 2), P=(0, 1, 0, 1)),
    _case(2, 5, 9, 256, 130, 3, 3, S=(1, 2), P=(1, 1, 1, 1)),
    GROUP_CASES[1], GROUP_CASES[5], GROUP_CASES[7], SINGLE_CHANNEL_CASES[0],
    _case(1, 9, 7, 3, 16, 3, 3, P=(1, 1, 1, 1)),   # rows per item shrink with the threads
    BORDER_ROW_CASES[2], BORDER_ROW_CASES[4],
], ids=_case_id)
def test_bitwise_identical_across_thread_counts(case, level, dtype):
    rng = np.random.default_rng(4)
    x, w, b, out = _make(case, dtype, rng)
    results = [_run(case, x, w, b, out.copy(), True, nt, level) for nt in (1, 2, 3)]
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


@pytest.mark.parametrize("level", LEVELS)
def test_read_only_inputs_and_large_thread_count(level):
    case = BORDER_CASES[1]
    rng = np.random.default_rng(5)
    x, w, b, out = _make(case, np.float64, rng)
    for a in (x, w, b):
        a.setflags(write=False)
    got = _run(case, x, w, b, out, False, 64, level)
    np.testing.assert_allclose(got, _reference_out(case, x, w, b, out, False), rtol=1e-12,
                               atol=1e-12)


def test_simd_level_above_cpu_is_lowered_not_fatal():
    case = BORDER_CASES[0]
    rng = np.random.default_rng(6)
    x, w, b, out = _make(case, np.float32, rng)
    got = _run(case, x, w, b, out, False, 1, 7)
    np.testing.assert_allclose(got, _reference_out(case, x, w, b, out, False), rtol=1e-4,
                               atol=1e-4)


def test_kernel_kind():
    kind = _conv_direct.kernel_kind
    assert kind(1, 1, 1, 1) == "width"
    assert kind(1, 1, 1, 2) == "general"
    assert kind(32, 32, 32, 1) == "depthwise"
    assert kind(32, 64, 32, 1) == "depthwise"
    assert kind(2, 64, 2, 1) == "general"
    assert kind(3, 64, 1, 2) == "general"


@pytest.mark.parametrize("level", LEVELS)
def test_matches_torch(level):
    torch = pytest.importorskip("torch")
    case = _case(2, 15, 14, 7, 40, 3, 3, S=(2, 1), D=(1, 2), P=(1, 1, 2, 2))
    rng = np.random.default_rng(7)
    x, w, b, out = _make(case, np.float32, rng)
    got = _run(case, x, w, b, out, True, 2, level)
    expected = torch.relu(torch.nn.functional.conv2d(
        torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(w).permute(3, 2, 0, 1),
        torch.from_numpy(b), stride=(2, 1), padding=(1, 2), dilation=(1, 2)))
    np.testing.assert_allclose(got, expected.permute(0, 2, 3, 1).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("level", LEVELS)
def test_empty_reduction_leaves_bias(level):
    case = _case(1, 4, 5, 0, 5, 3, 3, P=(1, 1, 1, 1))
    rng = np.random.default_rng(8)
    x, w, b, out = _make(case, np.float32, rng)
    b[0] = -1.0
    got = _run(case, x, w, b, out, True, 2, level)
    np.testing.assert_array_equal(got, _reference_out(case, x, w, b, out, True))


def _aligned_out(shape, dtype, offset_bytes=0):
    """A NaN-filled C-contiguous array whose data starts ``offset_bytes`` past a 64-byte
    boundary."""
    itemsize = np.dtype(dtype).itemsize
    nbytes = int(np.prod(shape)) * itemsize
    raw = np.empty(nbytes + 128, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset_bytes
    out = raw[start:start + nbytes].view(dtype).reshape(shape)
    out[...] = np.nan
    return out


STREAM_CASES = [
    _case(2, 6, 17, 3, 64, 3, 3, P=(1, 1, 1, 1)),                 # unrolled 3x3, wide block
    _case(1, 7, 29, 3, 8, 3, 3, P=(1, 1, 1, 1)),                  # unrolled 3x3, one vector
    _case(2, 6, 11, 1, 16, 3, 3, P=(1, 1, 1, 1)),                 # unrolled 3x3, C_in 1
    _case(2, 5, 15, 40, 40, 3, 3, groups=40, P=(1, 1, 1, 1)),     # depthwise, tail block
    _case(1, 5, 9, 16, 136, 1, 1),                                # other windows: plain
    _case(2, 6, 13, 100, 40, 3, 3, P=(1, 1, 1, 1)),               # (their own tiles)
    _case(1, 9, 12, 3, 64, 7, 7, S=(2, 2), P=(3, 3, 3, 3)),       # stem-like 7x7
    _case(1, 6, 7, 30, 64, 3, 3, P=(1, 1, 1, 1), chunked=True),   # chunks: never streamed
    _case(2, 7, 13, 3, 16, 3, 3, P=(1, 1, 1, 1)),                 # C_in 3 -> 16 (6x16 tiles)
    _case(1, 6, 23, 3, 8, 3, 3, P=(1, 1, 1, 1)),                  # C_in 3 -> 8 (12x8), odd OW
    _case(1, 6, 10, 1, 8, 3, 3),                                  # C_in 1 -> 8, VALID
    _case(1, 9, 15, 3, 24, 3, 3, S=(2, 2), P=(1, 1, 1, 1)),       # strided, 3 vectors
    _case(1, 9, 14, 1, 40, 3, 3, D=(2, 2), P=(2, 2, 2, 2)),       # dilated, 5 vectors
    _case(1, 6, 9, 128, 128, 3, 3, groups=128, P=(1, 1, 1, 1)),   # depthwise, full blocks
]


def _depthwise(case):
    groups = case.get("groups", 1)
    return groups == case["C"] and groups > 1


def _streamable(case):
    """Whether the kernels may stream this case's output: depthwise, or the unrolled
    3x3 windows of 1 or 3 input channels (fc_conv_direct_impl.h)."""
    cg = case["C"] // case.get("groups", 1)
    return _depthwise(case) or (case["KH"] == 3 and case["KW"] == 3 and cg in (1, 3))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("offset", [0, 32, 16, 8],
                         ids=["aligned64", "aligned32", "aligned16", "misaligned"])
@pytest.mark.parametrize("case", STREAM_CASES, ids=_case_id)
def test_streaming_stores_match_plain_stores(case, offset, level, dtype):
    """With the streaming threshold at 0 an output is streamed when all its vectors are
    aligned to half a vector or more (NumPy's large arrays start 16 bytes past a page:
    then each vector is streamed as two halves; depthwise: only a cache-line aligned
    output), each element is written once (no channel chunks) and the window is one
    the streaming tiles run, else stored plainly; either way bitwise the plain-store
    result, which matches the reference."""
    case = dict(case)
    chunked = case.pop("chunked", False)
    # channel chunks on or off whatever this machine's caches (they change the order)
    tuning = dict(DIRECT_TUNING, chunk_bytes=4096 if chunked else 1 << 40)
    rng = np.random.default_rng(9)
    x, w, b, plain = _make(case, dtype, rng)
    SH, SW = case.get("S", (1, 1))
    DH, DW = case.get("D", (1, 1))
    top, _, left, _ = case.get("P", (0, 0, 0, 0))
    args = (SH, SW, DH, DW, top, left, case.get("groups", 1), True)
    assert not conv2d_direct(x, w, b, plain, *args, 2, level,
                             dict(tuning, stream_bytes=float("inf")))
    vector_bytes = {0: 1, 1: 32, 2: 64}[level]
    lanes = vector_bytes // np.dtype(dtype).itemsize
    alignment = 64 if _depthwise(case) else vector_bytes // 2
    expected = (level > 0 and offset % alignment == 0 and case["O"] % max(lanes, 1) == 0
                and not chunked and _streamable(case))
    for nt in (1, 2, 3):
        out = _aligned_out(plain.shape, dtype, offset)
        streamed = conv2d_direct(x, w, b, out, *args, nt, level, dict(tuning, stream_bytes=0))
        assert streamed == expected
        np.testing.assert_array_equal(out, plain)
    ref = _reference_out(case, x, w, b, plain, True)
    K = w.shape[0] * w.shape[1] * w.shape[2]
    tol = (1e-5 if dtype == np.float32 else 1e-12) * math.sqrt(K)
    np.testing.assert_allclose(plain, ref, rtol=tol, atol=tol)


# Channel chunks of a 3x3 window of 3 input channels: a chunk of 2 channels leaves the
# unrolled variants, but its block is still a wide one (64 float32 channels on AVX2 and
# AVX-512), so it must run by the wide blocks' tiles, not the other windows' narrower
# ones.  chunk_bytes holds the filters of exactly two input channels of one 64-channel
# block at every SIMD level (portable C: its blocks are narrower, nothing is chunked).
CHUNKED_WIDE_CASES = [
    _case(2, 6, 17, 3, 64, 3, 3, P=(1, 1, 1, 1)),
    _case(1, 7, 10, 3, 40, 3, 3),
    _case(1, 5, 14, 3, 130, 3, 3, P=(1, 1, 1, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", CHUNKED_WIDE_CASES, ids=_case_id)
def test_chunked_wide_blocks_match_reference(case, level, dtype):
    itemsize = np.dtype(dtype).itemsize
    block = 64 if dtype == np.float32 else 32
    tap_bytes = 9 * block * itemsize
    tuning = dict(DIRECT_TUNING, chunk_bytes=2 * tap_bytes + tap_bytes // 2)
    rng = np.random.default_rng(11)
    x, w, b, out = _make(case, dtype, rng)
    top, _, left, _ = case.get("P", (0, 0, 0, 0))
    got = conv2d_direct(x, w, b, out, 1, 1, 1, 1, top, left, 1, False, 2, level, tuning)
    assert not got   # chunks: never streamed
    ref = _reference_out(case, x, w, b, out, False)
    tol = (1e-5 if dtype == np.float32 else 1e-12) * math.sqrt(27)
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)
