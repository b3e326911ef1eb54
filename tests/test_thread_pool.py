"""The compiled backend's thread pool (``_parallel``): the calling thread and persistent
workers share a call's tasks, and the call returns when every task is done.

Every way of running a call -- 1 to 4 threads, several Python threads calling at
once (the second caller runs its tasks itself), a child created by ``fork``
(which starts with no workers), thousands of tiny calls in a row -- must give
the NumPy reference's values and the same bits as one thread.  The kernels'
one-thread thresholds are lowered so that even the small shapes here go
through the pool.
"""
import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest

import fastconv
from cases import CONV, DTYPES, POOL_CASES, ConvCase, PoolCase, assert_close, params

cython_driver = pytest.importorskip("fastconv._backends.cython.driver",
                                    reason="Cython extension not built")
from fastconv import _tuning  # noqa: E402
from fastconv._backends.cython import _parallel, _relu  # noqa: E402


@pytest.fixture
def pool_everywhere(monkeypatch):
    """Every op of this backend on several threads, whatever its size."""
    monkeypatch.setitem(cython_driver.DIRECT_TUNING, "single_thread_work", 0)
    monkeypatch.setattr(_tuning, "GEMM_SINGLE_THREAD_WORK", 0)
    monkeypatch.setattr(_tuning, "RELU_SINGLE_THREAD_ELEMENTS", 0)
    monkeypatch.setattr(_tuning, "RELU_CHUNK", 1000)
    monkeypatch.setattr(_tuning, "POOL_SINGLE_THREAD_WORK", 0)
    monkeypatch.setattr(_tuning, "POOL_CHUNK_WORK", 0)
    monkeypatch.setattr(_tuning, "IM2COL_SINGLE_THREAD_ELEMENTS", 0)
    monkeypatch.setattr(_tuning, "POOL_BACKWARD_SINGLE_THREAD_ELEMENTS", 0)


@dataclass(frozen=True)
class PoolConvCase:
    """One conv2d through the pool: geometry, algorithm, fused ReLU."""
    id: str
    case: ConvCase
    algorithm: str
    activation: str = None


CONV_RUNS = [
    PoolConvCase("direct_general", CONV["k5_o33_same"], "direct", activation="relu"),
    PoolConvCase("direct_depthwise", CONV["depthwise16"], "direct"),
    PoolConvCase("direct_width", ConvCase("c1_o1_rows", 2, 37, 41, 1, 3, 3, 1, padding="SAME"),
                 "direct"),
    PoolConvCase("direct_c1_o64", ConvCase("c1_o64", 3, 14, 14, 1, 3, 3, 64), "direct"),
    PoolConvCase("im2col_groups", CONV["groups4"], "im2col", activation="relu"),
    PoolConvCase("im2col_1x1", CONV["k1_c64"], "im2col"),
    PoolConvCase("im2col_k7_s2", CONV["k7_s2_o64"], "im2col"),
    PoolConvCase("im2col_many_tiles", ConvCase("tiles", 4, 30, 30, 8, 3, 3, 16), "im2col"),
]

POOL_RUNS = POOL_CASES + [PoolCase("k3_s2_rows", 3, 41, 37, 5, 3, 2, "SAME")]


def _bits(a):
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def _conv(run, x, w, b, threads):
    return fastconv.conv2d(x, w, **run.case.kwargs(), bias=b, activation=run.activation,
                           backend="cython", algorithm=run.algorithm, num_threads=threads)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("run", params(CONV_RUNS))
def test_conv2d_same_bits_for_one_to_four_threads(pool_everywhere, run, dtype, rng):
    x, w, b = run.case.data(rng, dtype)
    expected = fastconv.conv2d(x, w, **run.case.kwargs(), bias=b, activation=run.activation,
                               backend="numpy")
    first = _conv(run, x, w, b, 1)
    assert_close(first, expected, dtype, run.case.scale)
    for threads in (2, 3, 4):
        np.testing.assert_array_equal(_bits(_conv(run, x, w, b, threads)), _bits(first))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", params(POOL_RUNS))
def test_max_pool2d_same_bits_for_one_to_four_threads(pool_everywhere, case, dtype, rng):
    x = case.data(rng, dtype)
    x.flat[::29] = np.nan
    kw = dict(strides=case.strides, padding=case.padding)
    expected = fastconv.max_pool2d(x, case.ksize, **kw, backend="numpy")
    for threads in (1, 2, 3, 4):
        got = fastconv.max_pool2d(x, case.ksize, **kw, backend="cython", num_threads=threads)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_same_bits_for_one_to_four_threads(pool_everywhere, dtype, rng):
    x = rng.standard_normal(12345).astype(dtype)
    x[::31] = np.nan
    x[1::37] = -0.0
    expected = fastconv.relu(x, backend="numpy")
    first = fastconv.relu(x, backend="cython", num_threads=1)
    np.testing.assert_array_equal(first, expected)
    for threads in (2, 3, 4):
        got = fastconv.relu(x, backend="cython", num_threads=threads)
        np.testing.assert_array_equal(_bits(got), _bits(first))


@dataclass(frozen=True)
class WindowRun:
    """One window geometry of the backward kernels: NHWC input, window, strides, pads."""
    id: str
    N: int
    H: int
    W: int
    C: int
    ksize: tuple
    strides: tuple
    pads: tuple

    def out_hw(self):
        return tuple((size + 2 * pad - k) // s + 1 for size, pad, k, s
                     in zip((self.H, self.W), self.pads, self.ksize, self.strides))


WINDOW_RUNS = [
    WindowRun("k3_s1_pad1", 2, 13, 11, 5, (3, 3), (1, 1), (1, 1)),
    WindowRun("k2_s2_c17", 3, 10, 12, 17, (2, 2), (2, 2), (0, 0)),
    WindowRun("k3x2_s2x1_one_row", 1, 3, 20, 8, (3, 2), (2, 1), (0, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("run", params(WINDOW_RUNS))
def test_backward_window_kernels_same_bits_for_one_to_four_threads(pool_everywhere, run,
                                                                   dtype, rng):
    """col2im, the max-pool argmax and the max-pool backward scatter on the pool."""
    from fastconv._backends import reference
    OH, OW = run.out_hw()
    geo = (run.ksize, run.strides, (1, 1), run.pads)
    cols = rng.standard_normal((run.N, OH, OW) + run.ksize + (run.C,)).astype(dtype)
    x = rng.standard_normal((run.N, run.H, run.W, run.C)).astype(dtype)
    want_fold = np.zeros_like(x)
    reference.col2im(cols, want_fold, *geo, 1)
    want_pool = np.empty((run.N, OH, OW, run.C), dtype)
    want_index = np.empty(want_pool.shape, np.int64)
    reference.max_pool2d_argmax(x, want_pool, want_index, *geo, 1)
    dy = rng.standard_normal(want_pool.size).astype(dtype)
    offsets = (np.arange(run.N, dtype=np.int64) * (run.H * run.W * run.C)).repeat(
        OH * OW * run.C)
    flat = want_index.reshape(-1) + offsets
    want_scatter = np.empty(x.size, dtype)
    reference.max_pool2d_backward(dy, flat, want_scatter, 1)
    for threads in (1, 2, 3, 4):
        fold = np.zeros_like(x)
        cython_driver._col2im(cols, fold, *geo, threads)
        assert_close(fold, want_fold, dtype)
        if threads == 1:
            first_fold = fold
        np.testing.assert_array_equal(_bits(fold), _bits(first_fold))
        pool, index = np.empty_like(want_pool), np.empty_like(want_index)
        cython_driver._max_pool2d_argmax(x, pool, index, *geo, threads)
        np.testing.assert_array_equal(pool, want_pool)
        np.testing.assert_array_equal(index, want_index)
        scatter = np.full(x.size, np.nan, dtype)
        cython_driver._max_pool2d_backward(dy, flat, scatter, threads, images=run.N)
        assert_close(scatter, want_scatter, dtype)
        if threads == 1:
            first_scatter = scatter
        np.testing.assert_array_equal(_bits(scatter), _bits(first_scatter))


def test_calls_from_several_python_threads_equal_serial(pool_everywhere, rng):
    """Eight Python threads call at once, each several ops; every result equals the serial
    one, bit for bit (one call holds the workers, the others run their tasks alone)."""
    runs = [r for r in CONV_RUNS if r.algorithm == "direct"][:2] + [CONV_RUNS[4]]
    data = [run.case.data(rng, np.float32) for run in runs]
    pool_x = rng.standard_normal((2, 40, 40, 8)).astype(np.float32)
    relu_x = rng.standard_normal(20001).astype(np.float32)

    def all_ops(threads):
        outs = [_conv(run, *d, threads) for run, d in zip(runs, data)]
        outs.append(fastconv.max_pool2d(pool_x, 3, 2, "SAME", backend="cython",
                                        num_threads=threads))
        outs.append(fastconv.relu(relu_x, backend="cython", num_threads=threads))
        return outs

    serial = all_ops(1)
    start = threading.Barrier(8)

    def worker(i):
        start.wait()
        return [all_ops(2 + i % 3) for _ in range(15)]

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(worker, range(8)))
    for per_thread in results:
        for outs in per_thread:
            for got, want in zip(outs, serial):
                np.testing.assert_array_equal(_bits(got), _bits(want))


def test_many_tiny_calls(pool_everywhere, rng):
    """Thousands of calls of a few tasks each, back to back: each one complete and right."""
    level = cython_driver.simd_level()
    x = rng.standard_normal(37).astype(np.float64)
    expected = np.maximum(x, 0)
    for i in range(3000):
        out = np.full_like(x, 7.0)
        _relu.relu(x, out, 2 + i % 3, level, 1 + i % 5, _tuning.STREAM_BYTES, None, 0, 0)
        np.testing.assert_array_equal(out, expected)
    cx = rng.standard_normal((1, 5, 6, 2)).astype(np.float32)
    cw = rng.standard_normal((3, 3, 2, 3)).astype(np.float32)
    want = fastconv.conv2d(cx, cw, padding="SAME", backend="cython", algorithm="direct",
                           num_threads=1)
    for i in range(1000):
        got = fastconv.conv2d(cx, cw, padding="SAME", backend="cython", algorithm="direct",
                              num_threads=2)
        np.testing.assert_array_equal(got, want)
    assert _parallel.worker_count() >= 1


def _child_runs_the_pool(conn):
    """In a forked child: the pool has no workers, then runs 2-thread calls right."""
    try:
        before = _parallel.worker_count()
        rng = np.random.default_rng(3)
        x = rng.standard_normal(50000).astype(np.float32)
        out = np.empty_like(x)
        # the module itself (the public ops run one thread in a fork child)
        _relu.relu(x, out, 2, cython_driver.simd_level(), 1000, _tuning.STREAM_BYTES, None,
                   0, 0)
        ok = bool(np.array_equal(out, np.maximum(x, 0)))
        cx = rng.standard_normal((2, 20, 20, 3)).astype(np.float32)
        cw = rng.standard_normal((3, 3, 3, 16)).astype(np.float32)
        public = fastconv.conv2d(cx, cw, backend="cython", algorithm="direct")
        conn.send((before, _parallel.worker_count(), ok, public))
    except BaseException as exc:   # report, do not hang the parent
        conn.send(repr(exc))
    finally:
        conn.close()


def test_pool_after_fork(rng):
    """A fork child (multiprocessing's 'fork' context) starts with no workers, creates them
    when a call needs them, and computes what the parent computes."""
    x = rng.standard_normal(1000).astype(np.float32)
    _relu.relu(x, np.empty_like(x), 2, cython_driver.simd_level(), 10, _tuning.STREAM_BYTES,
               None, 0, 0)
    assert _parallel.worker_count() >= 1   # the parent has workers to lose
    ctx = multiprocessing.get_context("fork")
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_runs_the_pool, args=(child_conn,))
    proc.start()
    child_conn.close()
    assert parent_conn.poll(120), "the forked child did not answer"
    answer = parent_conn.recv()
    proc.join(60)
    assert not isinstance(answer, str), answer
    before, after, relu_ok, public = answer
    assert before == 0
    assert after >= 1
    assert relu_ok
    crng = np.random.default_rng(3)
    crng.standard_normal(50000)
    cx = crng.standard_normal((2, 20, 20, 3)).astype(np.float32)
    cw = crng.standard_normal((3, 3, 3, 16)).astype(np.float32)
    want = fastconv.conv2d(cx, cw, backend="cython", algorithm="direct", num_threads=2)
    np.testing.assert_array_equal(public, want)


def test_spin_count_comes_from_tuning():
    """The driver hands ``POOL_SPIN_COUNT`` to the pool; a zero spin still works (workers
    sleep at once and are woken for each call)."""
    x = np.linspace(-1, 1, 5001, dtype=np.float32)
    level = cython_driver.simd_level()
    try:
        _parallel.set_spin_count(0)
        for _ in range(200):
            out = np.empty_like(x)
            _relu.relu(x, out, 3, level, 100, _tuning.STREAM_BYTES, None, 0, 0)
            np.testing.assert_array_equal(out, np.maximum(x, 0))
    finally:
        _parallel.set_spin_count(_tuning.POOL_SPIN_COUNT)
