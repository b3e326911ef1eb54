"""The Numba backend against the NumPy reference (and PyTorch), across threads and processes.

Every operation goes through the public API with ``backend="numba"`` and is
compared with ``backend="numpy"``; each convolution case is run with every
algorithm, so the im2col, planar and row kernels are all judged.  Kernels are
compiled once per dtype (a few signatures in all), so the file stays fast even
with a cold Numba cache.
"""
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

import fastconv

numba = pytest.importorskip("numba")
from fastconv import _tuning  # noqa: E402
from fastconv._backends.numba import driver as nb  # noqa: E402
from fastconv._backends.numba import options as nbcfg  # noqa: E402

from cases import DTYPES, assert_close  # noqa: E402

ALGORITHMS = ["auto", "direct", "im2col"]
PACKAGE = Path(fastconv.__file__).resolve().parent

# (N, H, W, C, KH, KW, O, strides, dilations, padding, groups)
CONV_CASES = {
    "n1_c1_3x3_same": (1, 9, 7, 1, 3, 3, 4, 1, 1, "SAME", 1),
    "c1_o1_edge": (1, 12, 11, 1, 3, 3, 1, 1, 1, "SAME", 1),
    "c3_nonsquare_2x5": (2, 8, 9, 3, 2, 5, 5, 1, 1, "VALID", 1),
    "stride2_odd_same": (2, 9, 7, 3, 3, 3, 6, 2, 2, "SAME", 1),
    "stride2x1_7x7": (1, 13, 12, 2, 7, 7, 40, (2, 1), 1, "SAME", 1),
    "dilation2": (2, 10, 11, 8, 3, 2, 16, 1, 2, "VALID", 1),
    "c16_many_out": (1, 7, 8, 16, 3, 3, 36, 1, 1, "SAME", 1),
    "explicit_pad": (1, 7, 6, 6, 3, 2, 4, (1, 2), 1, [[0, 0], [2, 0], [1, 3], [0, 0]], 1),
    "groups2": (2, 7, 7, 8, 3, 3, 12, 1, 1, "SAME", 2),
    "groups4_dil": (1, 9, 9, 8, 2, 3, 8, 2, (1, 2), "SAME", 4),
    "depthwise": (2, 8, 8, 6, 3, 3, 6, 1, 1, "SAME", 6),
    "depthwise_mult2_s2": (1, 9, 8, 4, 3, 3, 8, 2, 1, "SAME", 4),
    "pointwise_1x1": (2, 5, 6, 12, 1, 1, 20, 1, 1, "VALID", 1),
    "kernel_bigger_than_input": (1, 3, 2, 2, 5, 4, 3, 1, 1, "SAME", 1),
}


def _conv_inputs(rng, case, dtype):
    N, H, W, C, KH, KW, O, s, d, pad, g = case
    x = rng.standard_normal((N, H, W, C)).astype(dtype)
    w = rng.standard_normal((KH, KW, C // g, O)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    kwargs = dict(strides=s, padding=pad, dilations=d, groups=g)
    return x, w, b, kwargs


def _scale(case):
    """Tolerance widening for a sum of KH*KW*Cg products."""
    _, _, _, C, KH, KW, _, _, _, _, g = case
    return max(1.0, np.sqrt(KH * KW * C / g) / 2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(CONV_CASES))
def test_conv2d_matches_reference_every_algorithm(rng, name, dtype):
    case = CONV_CASES[name]
    x, w, b, kwargs = _conv_inputs(rng, case, dtype)
    expected = fastconv.conv2d(x, w, bias=b, activation="relu", backend="numpy", **kwargs)
    for algorithm in ALGORITHMS:
        got = fastconv.conv2d(x, w, bias=b, activation="relu", backend="numba",
                              algorithm=algorithm, **kwargs)
        assert got.dtype == dtype and got.shape == expected.shape
        assert_close(got, expected, dtype, scale=_scale(case))
        plain = fastconv.conv2d(x, w, backend="numba", algorithm=algorithm, **kwargs)
        assert_close(plain, fastconv.conv2d(x, w, backend="numpy", **kwargs), dtype,
                     scale=_scale(case))


@pytest.mark.parametrize("name", ["stride2_odd_same", "groups2", "depthwise", "c16_many_out",
                                  "c1_o1_edge"])
def test_conv2d_bitwise_identical_for_1_2_3_threads(rng, name, monkeypatch):
    monkeypatch.setattr(_tuning, "NUMBA_MIN_WORK_PER_THREAD", 1)  # split even these small problems
    monkeypatch.setattr(_tuning, "NUMBA_SERIAL_WORK", 0)  # 1 thread: the serial twin
    x, w, b, kwargs = _conv_inputs(rng, CONV_CASES[name], np.float32)
    x = np.repeat(x, 3, axis=0)  # enough rows/tiles for three chunks
    for algorithm in ALGORITHMS:
        results = [fastconv.conv2d(x, w, bias=b, activation="relu", backend="numba",
                                   algorithm=algorithm, num_threads=n, **kwargs)
                   for n in (1, 2, 3)]
        for other in results[1:]:
            np.testing.assert_array_equal(other, results[0])


def test_conv2d_many_tiles_bitwise_identical_and_correct(rng):
    # large enough for several im2col tiles and planar blocks per thread
    x = rng.standard_normal((3, 40, 37, 5)).astype(np.float32)
    w = rng.standard_normal((3, 3, 5, 40)).astype(np.float32)
    expected = fastconv.conv2d(x, w, 1, "SAME", backend="numpy")
    for algorithm in ALGORITHMS:
        runs = [fastconv.conv2d(x, w, 1, "SAME", backend="numba", algorithm=algorithm,
                                num_threads=n) for n in (1, 2, 3)]
        assert_close(runs[0], expected, np.float32, scale=4)
        for other in runs[1:]:
            np.testing.assert_array_equal(other, runs[0])


def test_conv2d_nchw_and_out_buffer(rng):
    x = rng.standard_normal((2, 3, 11, 10)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 8)).astype(np.float32)
    expected = fastconv.conv2d(x, w, 2, "SAME", data_format="NCHW", backend="numpy")
    out = np.empty_like(expected)
    got = fastconv.conv2d(x, w, 2, "SAME", data_format="NCHW", backend="numba", out=out)
    assert got is out
    assert_close(got, expected, np.float32, scale=3)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_conv2d_nan_and_inf_propagate_like_reference(rng, algorithm):
    x = rng.standard_normal((2, 9, 8, 3)).astype(np.float64)
    x[0, 2, 3, 1] = np.nan
    x[1, 5, 5, 0] = np.inf
    x[1, 0, 7, 2] = -np.inf
    w = rng.standard_normal((3, 3, 3, 4))
    expected = fastconv.conv2d(x, w, 1, "SAME", backend="numpy")
    got = fastconv.conv2d(x, w, 1, "SAME", backend="numba", algorithm=algorithm)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(expected))
    finite = np.isfinite(expected)
    assert_close(got[finite], expected[finite], np.float64, scale=3)


def test_conv2d_read_only_inputs(rng):
    x = rng.standard_normal((1, 6, 6, 2)).astype(np.float32)
    w = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
    x.flags.writeable = False
    w.flags.writeable = False
    assert_close(fastconv.conv2d(x, w, backend="numba"), fastconv.conv2d(x, w, backend="numpy"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_matches_torch_small_channel_shapes(torch, rng, dtype):
    for (N, H, C, O, K, s) in ((4, 14, 1, 64, 3, 1), (2, 20, 3, 16, 3, 1), (2, 23, 3, 24, 7, 2)):
        x = rng.standard_normal((N, H, H, C)).astype(dtype)
        w = rng.standard_normal((K, K, C, O)).astype(dtype)
        ref = torch.nn.functional.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2),
                                         torch.from_numpy(w).permute(3, 2, 0, 1),
                                         stride=s, padding=K // 2)
        ref = ref.permute(0, 2, 3, 1).numpy()
        for algorithm in ALGORITHMS:
            p = K // 2
            got = fastconv.conv2d(x, w, s, [[0, 0], [p, p], [p, p], [0, 0]], backend="numba",
                                  algorithm=algorithm)
            assert_close(got, ref, dtype, scale=K)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_nan_inf_and_in_place(rng, dtype, monkeypatch):
    monkeypatch.setattr(_tuning, "NUMBA_MIN_WORK_PER_THREAD", 1)
    monkeypatch.setattr(_tuning, "NUMBA_SERIAL_WORK", 0)  # 1 thread: the serial twin
    x = rng.standard_normal(100_003).astype(dtype)  # several blocks, odd tail
    x[:4] = [np.nan, -np.inf, np.inf, -0.0]
    expected = fastconv.relu(x, backend="numpy")
    got = fastconv.relu(x, backend="numba", num_threads=3)
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got[0]) and got[1] == 0 and got[2] == np.inf
    y = x.copy()
    same = fastconv.relu(y, out=y, backend="numba")
    assert same is y
    np.testing.assert_array_equal(y, expected)
    z = rng.standard_normal((3, 4, 5)).astype(dtype)
    np.testing.assert_array_equal(fastconv.relu(z, backend="numba"), np.maximum(z, 0))


POOL_CASES = [
    # (N, H, W, C, ksize, strides, padding)
    (2, 8, 8, 3, 2, 2, "VALID"),
    (1, 9, 7, 4, 3, 2, "SAME"),
    (2, 7, 9, 1, (2, 3), (1, 2), "SAME"),
    (1, 6, 6, 5, 3, 1, [[0, 0], [1, 1], [2, 0], [0, 0]]),
    (1, 5, 5, 2, 5, 5, "SAME"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool2d_matches_reference(rng, case, dtype, monkeypatch):
    monkeypatch.setattr(_tuning, "NUMBA_MIN_WORK_PER_THREAD", 1)
    monkeypatch.setattr(_tuning, "NUMBA_SERIAL_WORK", 0)  # 1 thread: the serial twin
    N, H, W, C, k, s, pad = case
    x = rng.standard_normal((N, H, W, C)).astype(dtype) - 5  # all negative: padding never wins
    x.flat[::7] = np.nan
    x.flat[3::11] = -np.inf
    expected = fastconv.max_pool2d(x, k, s, pad, backend="numpy")
    runs = [fastconv.max_pool2d(x, k, s, pad, backend="numba", num_threads=n) for n in (1, 2, 3)]
    for got in runs:
        np.testing.assert_array_equal(got, expected)


def test_max_pool2d_dilated_nchw(rng):
    x = rng.standard_normal((2, 3, 11, 10)).astype(np.float32)
    args = dict(ksize=3, strides=2, padding="SAME", data_format="NCHW")
    from fastconv import _ops
    # dilation is only reachable through max_pool2d_window (the tf.nn API has none)
    win = fastconv._shapes.resolve_window(11, 10, 3, 3, 2, 2, 2, 2, "SAME")
    expected = _ops.max_pool2d_window(x, "NCHW", (3, 3), (2, 2), (2, 2), win, None, "numpy", 1)
    got = _ops.max_pool2d_window(x, "NCHW", (3, 3), (2, 2), (2, 2), win, None, "numba", 2)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(fastconv.max_pool2d(x, backend="numba", **args),
                                  fastconv.max_pool2d(x, backend="numpy", **args))


@pytest.mark.parametrize("dtype", DTYPES)
def test_im2col_matches_reference(rng, dtype, monkeypatch):
    monkeypatch.setattr(_tuning, "NUMBA_MIN_WORK_PER_THREAD", 1)
    monkeypatch.setattr(_tuning, "NUMBA_SERIAL_WORK", 0)  # 1 thread: the serial twin
    x = rng.standard_normal((2, 7, 6, 3)).astype(dtype)
    for k, s, pad, d in ((3, 1, "SAME", 1), ((2, 3), 2, "SAME", 1), (3, (2, 1), "VALID", 2)):
        expected = fastconv.im2col(x, k, s, pad, d, backend="numpy")
        for n in (1, 3):
            got = fastconv.im2col(x, k, s, pad, d, backend="numba", num_threads=n)
            np.testing.assert_array_equal(got, expected)


def test_concurrent_calls_from_four_python_threads(rng, monkeypatch):
    monkeypatch.setattr(_tuning, "NUMBA_MIN_WORK_PER_THREAD", 1)
    monkeypatch.setattr(_tuning, "NUMBA_SERIAL_WORK", 0)  # 1 thread: the serial twin
    x = rng.standard_normal((4, 20, 20, 3)).astype(np.float32)
    w_small = rng.standard_normal((3, 3, 3, 8)).astype(np.float32)
    w_big = rng.standard_normal((3, 3, 3, 40)).astype(np.float32)
    expected = {
        "planar": fastconv.conv2d(x, w_small, 1, "SAME", backend="numpy"),
        "im2col": fastconv.conv2d(x, w_big, 1, "SAME", backend="numpy"),
        "pool": fastconv.max_pool2d(x, 3, 2, "SAME", backend="numpy"),
    }
    errors = []
    barrier = threading.Barrier(4)

    def work(i):
        try:
            barrier.wait()
            for _ in range(15):
                got = {
                    "planar": fastconv.conv2d(x, w_small, 1, "SAME", backend="numba",
                                              num_threads=1 + i % 2),
                    "im2col": fastconv.conv2d(x, w_big, 1, "SAME", backend="numba",
                                              algorithm="im2col", num_threads=2),
                    "pool": fastconv.max_pool2d(x, 3, 2, "SAME", backend="numba"),
                }
                for key, value in got.items():
                    assert_close(value, expected[key], np.float32, scale=3)
        except Exception as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS  # restored


def test_small_calls_stay_on_one_thread():
    with nb._numba_threads(8, 100) as n:
        assert n == 1
    with nb._numba_threads(8, _tuning.NUMBA_SERIAL_WORK - 1) as n:
        assert n == 1
    with nb._numba_threads(8, 10 ** 9) as n:
        assert n == min(8, numba.config.NUMBA_NUM_THREADS)
        assert numba.get_num_threads() == n


def test_num_threads_restored_and_threading_layer_deliberate(rng):
    before = numba.get_num_threads()
    fastconv.relu(rng.standard_normal(10), backend="numba", num_threads=1)
    assert numba.get_num_threads() == before
    layer = nbcfg.threading_layer()
    usable = nbcfg.usable_layers()
    assert layer in usable
    if "NUMBA_THREADING_LAYER" not in os.environ and ("omp" in usable or "tbb" in usable):
        assert layer in ("omp", "tbb")
    info = nb.info()
    assert info["threading layer"] == layer
    assert info["fastmath"] and info["numba"] == numba.__version__
    assert "nnan" not in nbcfg.FASTMATH and "ninf" not in nbcfg.FASTMATH


def test_compile_options_live_only_in_numba_options():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if path == PACKAGE / "_backends" / "numba" / "options.py" or "numba" not in text:
            continue
        assert not re.search(r"\b(fastmath|cache|nogil|error_model)=", text), path
        assert "njit" not in text and "numba.jit" not in text, path


def test_warmup_compiles_every_kernel_for_both_dtypes():
    timings = nb.warmup()
    assert set(timings) == {"float32", "float64"}
    for name in nb._KERNELS:
        for kernel in (getattr(nb._k, name), nb._k.SERIAL[name]):
            dtypes = {str(sig[0].dtype) for sig in kernel.signatures}
            assert {"float32", "float64"} <= dtypes, name


def test_algorithm_rule():
    assert nb.choose_algorithm(None, (3, 3, 1, 64), None, 1, 1, 64) == "direct"     # depthwise
    assert nb.choose_algorithm(None, (3, 3, 1, 1), None, 1, 1, 1) == "direct"       # edge filter
    assert nb.choose_algorithm(None, (3, 3, 3, 16), None, 1, 1, 1) == "direct"      # cars layer 1
    assert nb.choose_algorithm(None, (3, 3, 64, 64), None, 1, 1, 1) == "im2col"


_CACHE_SCRIPT = textwrap.dedent("""
    import json, time
    import numpy as np
    t0 = time.perf_counter()
    import fastconv
    from fastconv._backends.numba import kernels as k
    x = np.linspace(-1, 1, 64, dtype=np.float32)
    t1 = time.perf_counter()
    y = fastconv.relu(x, backend="numba")
    t2 = time.perf_counter()
    assert (y == np.maximum(x, 0)).all()
    s = k.SERIAL["relu"].stats   # a small call runs the serial twin
    print(json.dumps({"hits": sum(s.cache_hits.values()), "misses": sum(s.cache_misses.values()),
                      "first_call": t2 - t1}))
""")


def test_second_process_loads_kernels_from_cache(tmp_path):
    import json
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    runs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", _CACHE_SCRIPT], env=env, cwd=str(tmp_path),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first["misses"] >= 1 and first["hits"] == 0
    assert second["hits"] >= 1 and second["misses"] == 0
    assert second["first_call"] < first["first_call"]


_THREE_THREADS_SCRIPT = textwrap.dedent("""
    import numpy as np
    import numba
    import fastconv
    from fastconv import _tuning
    assert numba.config.NUMBA_NUM_THREADS == 3
    _tuning.NUMBA_MIN_WORK_PER_THREAD = 1
    _tuning.NUMBA_SERIAL_WORK = 0
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 17, 15, 4)).astype(np.float32)
    for w, groups in ((rng.standard_normal((3, 3, 4, 40)).astype(np.float32), 1),
                      (rng.standard_normal((3, 2, 2, 6)).astype(np.float32), 2),
                      (rng.standard_normal((3, 3, 1, 4)).astype(np.float32), 4)):
        ref = fastconv.conv2d(x, w, 2, "SAME", groups=groups, backend="numpy")
        for algorithm in ("direct", "im2col"):
            runs = [fastconv.conv2d(x, w, 2, "SAME", groups=groups, backend="numba",
                                    algorithm=algorithm, num_threads=n) for n in (1, 2, 3)]
            assert np.allclose(runs[0], ref, rtol=1e-4, atol=1e-4)
            assert all(np.array_equal(r, runs[0]) for r in runs[1:])
    pools = [fastconv.max_pool2d(x, 3, 2, "SAME", backend="numba", num_threads=n) for n in (1, 3)]
    assert np.array_equal(pools[0], pools[1])
    print("ok")
""")


def test_three_real_threads_give_identical_results(tmp_path):
    # this machine may have fewer cores: give Numba a pool of 3 in a child process
    env = dict(os.environ, NUMBA_NUM_THREADS="3")
    proc = subprocess.run([sys.executable, "-c", _THREE_THREADS_SCRIPT], env=env,
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")


def test_small_calls_run_the_serial_twins(rng, monkeypatch):
    """Below NUMBA_SERIAL_WORK every op runs its kernel's serial twin, never a parallel region."""
    ran, parallel = [], []
    for name in nb._KERNELS:
        serial = nb._k.SERIAL[name]
        monkeypatch.setitem(nb._k.SERIAL, name,
                            lambda *a, _f=serial, _n=name: ran.append(_n) or _f(*a))
        kernel = getattr(nb._k, name)
        monkeypatch.setattr(nb._k, name, lambda *a, _f=kernel, _n=name: parallel.append(_n)
                            or _f(*a))
    x = rng.standard_normal((1, 40, 60, 1)).astype(np.float32)   # 2400 px: small work
    w = rng.standard_normal((3, 3, 1, 1)).astype(np.float32)
    for algorithm in ("direct", "im2col"):
        got = fastconv.conv2d(x, w, padding="SAME", backend="numba", algorithm=algorithm,
                              num_threads=2)
        assert_close(got, fastconv.conv2d(x, w, padding="SAME", backend="numpy"), np.float32,
                     scale=3)
    np.testing.assert_array_equal(fastconv.relu(x, backend="numba", num_threads=2),
                                  np.maximum(x, 0))
    np.testing.assert_array_equal(fastconv.max_pool2d(x, 2, backend="numba", num_threads=2),
                                  fastconv.max_pool2d(x, 2, backend="numpy"))
    np.testing.assert_array_equal(fastconv.im2col(x, 3, backend="numba", num_threads=2),
                                  fastconv.im2col(x, 3, backend="numpy"))
    assert not parallel, parallel
    assert {"conv2d_planar", "conv2d_im2col", "relu", "max_pool2d", "im2col"} <= set(ran), ran
