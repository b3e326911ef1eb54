"""Faults beyond plain bad input: thread counts, fork, the calling thread, huge sizes, signals.

Every test that could hang (fork, signals) runs its probe in a fresh Python
process under a timeout, so a hang fails the test instead of blocking the run.
The one test that needs tens of GiB is marked ``slow`` and runs only with
``FASTCONV_RUN_SLOW=1``.
"""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastconv
from fastconv import _threads

from cases import BACKENDS, FAST_BACKENDS

HAS_CYTHON = "cython" in BACKENDS
HAS_NUMBA = "numba" in BACKENDS
RUN_SLOW = os.environ.get("FASTCONV_RUN_SLOW", "") not in ("", "0")
TIMEOUT = 120   # seconds for a probe process (a hang is a failure, not a blocked run)


def _probe(code, timeout=TIMEOUT, env=None):
    """Run ``code`` in a fresh interpreter; return its CompletedProcess (fails on timeout)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                              text=True, timeout=timeout, env=full_env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"probe hung for {timeout} s:\n{exc.stdout}\n{exc.stderr}")


def _ops(backend, n, rng):
    """Every public op on small inputs with ``num_threads=n``."""
    x = rng.standard_normal((2, 17, 19, 8)).astype(np.float32)
    w = rng.standard_normal((3, 2, 8, 24)).astype(np.float32)
    out = [fastconv.relu(x.reshape(-1), backend=backend, num_threads=n),
           fastconv.max_pool2d(x, 3, 2, "SAME", backend=backend, num_threads=n),
           fastconv.im2col(x, (3, 2), 2, "SAME", backend=backend, num_threads=n)]
    for algorithm in ("direct", "im2col"):
        out.append(fastconv.conv2d(x, w, 1, "SAME", backend=backend, num_threads=n,
                                   algorithm=algorithm))
    return out


# ----------------------------------------------------------------------------- thread counts
@pytest.mark.parametrize("bad", [10**6, 10**4, 2**40])
def test_absurd_thread_count_is_an_error_naming_num_threads(bad):
    x = np.ones(1000, np.float32)
    with pytest.raises(ValueError, match=rf"num_threads={bad} is not a usable thread count"):
        fastconv.relu(x, num_threads=bad)
    with pytest.raises(ValueError, match=r"set_num_threads: num_threads="):
        fastconv.set_num_threads(bad)
    assert fastconv.get_num_threads() >= 1   # the default was not changed


def test_absurd_thread_count_from_the_environment(monkeypatch):
    monkeypatch.setattr(_threads, "_default", None)
    monkeypatch.setenv(_threads.ENV_VAR, str(10**6))
    with pytest.raises(ValueError, match=r"FASTCONV_NUM_THREADS='1000000': num_threads="):
        fastconv.relu(np.ones(10, np.float32))


def test_large_counts_are_clamped(monkeypatch):
    limit = _threads.available_cores() * _threads.THREADS_PER_CORE
    assert _threads.max_num_threads() == limit
    assert _threads.resolve_num_threads(limit + 1) == limit
    assert _threads.resolve_num_threads(1) == 1
    monkeypatch.setattr(_threads, "_default", None)
    monkeypatch.setenv(_threads.ENV_VAR, str(limit * 2))
    assert fastconv.get_num_threads() == limit


@pytest.mark.parametrize("backend", BACKENDS)
def test_results_bitwise_identical_for_any_thread_count(backend, rng):
    seed = int(rng.integers(1 << 30))
    ref = _ops(backend, 1, np.random.default_rng(seed))
    for n in (2, 3, 64, _threads.MAX_NUM_THREADS):
        got = _ops(backend, n, np.random.default_rng(seed))
        for a, b in zip(ref, got):
            assert np.array_equal(a, b, equal_nan=True), (backend, n)


# ----------------------------------------------------------------------------- fork
_FORK_PRELUDE = """
    import os, sys
    import numpy as np
    import fastconv
    backend = sys.argv[1] if len(sys.argv) > 1 else {backend!r}
    x = np.ones((1, 32, 32, 8), np.float32)
    w = np.ones((3, 3, 8, 16), np.float32)

    def work(_=None):
        rs = [fastconv.conv2d(x, w, num_threads=2, backend=backend, algorithm=a)
              for a in ("direct", "im2col")]
        rs.append(fastconv.relu(np.full(100000, -1.0, np.float32), num_threads=2, backend=backend))
        rs.append(fastconv.max_pool2d(x, 2, num_threads=2, backend=backend))
        rs.append(fastconv.im2col(x, 3, num_threads=2, backend=backend))
        return [float(r.sum()) for r in rs]

    expected = work()   # the parent has run every op on 2 threads
"""

_FORK_MODES = {
    "os.fork": """
        pid = os.fork()
        if pid == 0:
            os._exit(0 if work() == expected and fastconv.get_num_threads() == 1 else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
    """,
    "multiprocessing": """
        import multiprocessing as mp
        with mp.get_context("fork").Pool(2) as pool:
            assert pool.map(work, range(3)) == [expected] * 3
    """,
    "ProcessPoolExecutor": """
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as ex:
            assert list(ex.map(work, range(3))) == [expected] * 3
    """,
}


@pytest.mark.parametrize("mode", list(_FORK_MODES))
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "numba"])
def test_forked_child_runs_single_threaded_without_hanging(mode, backend):
    code = textwrap.dedent(_FORK_PRELUDE.format(backend=backend)) + textwrap.dedent(
        _FORK_MODES[mode]) + "\nprint('ok')\n"
    res = _probe(code)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-3000:]


@pytest.mark.skipif(not HAS_NUMBA, reason="Numba is not installed")
def test_numba_in_forked_child_errors_clearly_or_works():
    """After the parent launched Numba's omp layer, the child gets an error, not an abort."""
    code = textwrap.dedent(_FORK_PRELUDE.format(backend="numba")) + textwrap.dedent("""
        from fastconv._backends.numba import options
        layer = options.threading_layer()
        pid = os.fork()
        if pid == 0:
            try:
                ok = work() == expected
            except fastconv.BackendUnavailableError as exc:
                ok = layer == "omp" and "forked" in str(exc)
            # the compiled and NumPy backends still serve the child
            backend = "numpy"
            ok = ok and work() == expected
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        print("ok", layer)
    """)
    res = _probe(code)
    assert res.returncode == 0 and "ok" in res.stdout, res.stdout + res.stderr[-3000:]


def test_fork_hook_makes_the_child_single_threaded():
    code = """
        import os, fastconv
        from fastconv import _threads
        fastconv.set_num_threads(2)
        pid = os.fork()
        if pid == 0:
            ok = (_threads.in_forked_child() and fastconv.get_num_threads() == 1
                  and _threads.resolve_num_threads(2) == 1)
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert not _threads.in_forked_child() and fastconv.get_num_threads() == 2
        print("ok")
    """
    res = _probe(code)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-3000:]


# ----------------------------------------------------------------------------- calling thread
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_im2col_path_bitwise_equal_from_any_python_thread(backend, rng):
    """The single-thread BLAS limit holds in every calling thread, so the GEMMs are the same."""
    x = rng.standard_normal((1, 14, 14, 128)).astype(np.float32)
    w = rng.standard_normal((3, 3, 128, 128)).astype(np.float32)

    def run():
        return fastconv.conv2d(x, w, padding="SAME", backend=backend, algorithm="im2col",
                               num_threads=2)

    main = run()
    got = {}

    def worker(i):
        got[i] = run()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(3):
        assert np.array_equal(main, got[i]), i
    assert np.array_equal(main, run())


def test_blas_limit_is_held_and_restored_from_a_worker_thread():
    direct, _ = _threads._blas_split()
    before = [get() for _, get in direct]
    seen = {}

    def worker():
        with _threads.single_threaded_blas():
            seen["inside"] = [get() for _, get in direct]

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["inside"] == [1] * len(direct)
    assert [get() for _, get in direct] == before


# ----------------------------------------------------------------------------- 64-bit sizes
@pytest.mark.skipif(not HAS_CYTHON, reason="compiled backend not built")
def test_direct_kernel_sizes_are_64_bit():
    from fastconv._backends.cython import _conv_direct
    assert _conv_direct.size_field_bytes() == np.dtype(np.intp).itemsize


@pytest.mark.slow
@pytest.mark.skipif(not RUN_SLOW, reason="needs about 20 GiB of memory: set FASTCONV_RUN_SLOW=1")
@pytest.mark.parametrize("backend", BACKENDS)
def test_axis_of_2_to_the_31_elements(backend):
    x = np.ones((1, 1, 2**31 + 8, 1), np.float32)
    w = np.ones((1, 3, 1, 1), np.float32)
    for algorithm in ("direct", "im2col"):
        y = fastconv.conv2d(x, w, strides=4, backend=backend, algorithm=algorithm)
        assert y.shape == (1, 1, (2**31 + 8 - 3) // 4 + 1, 1)
        assert np.all(y[0, 0, :4, 0] == 3) and np.all(y[0, 0, -4:, 0] == 3), algorithm
        del y


# ----------------------------------------------------------------------------- Ctrl-C
_INTERRUPT_PROBE = """
    import os, signal, threading, time
    import numpy as np
    import fastconv
    from fastconv import _backends
    _backends.driver("cython")   # import the backend before the clock starts
    op, n = {op!r}, {threads}
    if op == "conv":
        x = np.ones((1, 256, 256, 128), np.float32)
        w = np.ones((5, 5, 128, 128), np.float32)
        call = lambda: fastconv.conv2d(x, w, padding="SAME", backend="cython",
                                       algorithm="direct", num_threads=n)
    else:
        x = np.ones((1, 512, 512, 32), np.float32)
        call = lambda: fastconv.max_pool2d(x, 63, 1, "SAME", backend="cython", num_threads=n)
    sent = []
    def interrupt():
        sent.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)
    threading.Timer(0.3, interrupt).start()
    try:
        call()
        print("finished")
    except KeyboardInterrupt:
        print("interrupted after", time.perf_counter() - sent[0])
"""


@pytest.mark.skipif(not HAS_CYTHON, reason="compiled backend not built")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("op", ["conv", "pool"])
def test_ctrl_c_interrupts_a_long_kernel(op, threads):
    res = _probe(_INTERRUPT_PROBE.format(op=op, threads=threads))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "interrupted after" in res.stdout, res.stdout
    delay = float(res.stdout.split("interrupted after")[1])
    assert delay < 1.0, delay   # about one chunk; 0.2 s on a quiet machine


# ----------------------------------------------------------------------------- huge parameters
@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_pool_window_is_instant_and_right(backend, rng):
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
    y = fastconv.max_pool2d(x, 10**9, padding="SAME", backend=backend)
    assert y.shape == (2, 1, 1, 3)
    assert np.array_equal(y[:, 0, 0], x.max(axis=(1, 2)))
    y = fastconv.max_pool2d(x, 10**9, 1, "SAME", backend=backend)
    assert np.array_equal(y, np.broadcast_to(x.max(axis=(1, 2))[:, None, None], y.shape))


@pytest.mark.parametrize("name", ["strides", "dilations"])
def test_parameters_beyond_int32_name_the_parameter(name):
    x, w = np.ones((1, 6, 6, 1), np.float32), np.ones((3, 3, 1, 1), np.float32)
    with pytest.raises(ValueError, match=rf"{name} must be at most 2147483647; got 2147483648"):
        fastconv.conv2d(x, w, **{name: 2**31})
    with pytest.raises(ValueError, match=r"ksize must be at most"):
        fastconv.max_pool2d(x, 2**31)
    with pytest.raises(ValueError, match=r"padding: the top padding would be"):
        fastconv.max_pool2d(x, 2, 1, [[0, 0], [2**40, 0], [0, 0], [0, 0]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_dilation_matches_the_uncropped_reference(backend, rng):
    """Windows far wider than the input are cut to the taps that read it: same result."""
    from fastconv._backends import reference
    x = rng.standard_normal((2, 6, 7, 3))
    w = rng.standard_normal((3, 4, 3, 2))
    for dil, pad in (((50, 1), "SAME"), ((1, 40), [[0, 0], [1, 1], [70, 60], [0, 0]]),
                     ((37, 29), "SAME")):
        got = fastconv.conv2d(x, w, 1, pad, dilations=dil, backend=backend)
        win = fastconv._shapes.resolve_window(6, 7, 3, 4, 1, 1, *dil, pad)
        want = np.empty_like(got)
        reference.conv2d(x, w, None, want, (1, 1), dil, (win.pad_top, win.pad_left), 1, False, 1)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    y = fastconv.conv2d(x, w, dilations=10**9, padding="SAME", backend=backend)
    assert y.shape == (2, 6, 7, 2) and not y.any()   # no tap ever reads the input along W


# ----------------------------------------------------------------------------- smaller items
def test_masked_arrays_are_refused():
    x = np.ma.masked_array(np.ones((1, 4, 4, 1), np.float32), mask=False)
    w = np.ones((3, 3, 1, 1), np.float32)
    with pytest.raises(TypeError, match=r"input is a numpy.ma.MaskedArray"):
        fastconv.conv2d(x, w)
    with pytest.raises(TypeError, match=r"filters is a numpy.ma.MaskedArray"):
        fastconv.conv2d(x.data, np.ma.masked_array(w))
    with pytest.raises(TypeError, match=r"features is a numpy.ma.MaskedArray"):
        fastconv.relu(x)
    out = np.ma.masked_array(np.empty((1, 4, 4, 1), np.float32))
    with pytest.raises(TypeError, match=r"out is a numpy.ma.MaskedArray"):
        fastconv.relu(x.data, out=out)


@pytest.mark.parametrize("backend", BACKENDS)
def test_big_endian_input_and_filters_alike(backend, rng):
    x = rng.standard_normal((1, 5, 5, 2)).astype(np.float32)
    w = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
    want = fastconv.conv2d(x, w, backend=backend)
    for xb, wb in ((x.astype(">f4"), w), (x, w.astype(">f4")), (x.astype(">f4"), w.astype(">f4"))):
        got = fastconv.conv2d(xb, wb, backend=backend)
        assert got.dtype == np.float32 and np.array_equal(got, want)
    assert np.array_equal(fastconv.relu(x.astype(">f4"), backend=backend),
                          fastconv.relu(x, backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
def test_denormals_are_not_flushed(backend, algorithm):
    tiny = np.finfo(np.float32).smallest_subnormal * 4
    x = np.full((1, 4, 4, 1), tiny, np.float32)
    w = np.ones((1, 1, 1, 1), np.float32)
    y = fastconv.conv2d(x, w, backend=backend, algorithm=algorithm)
    assert np.array_equal(y, x)
    w3 = np.ones((3, 3, 1, 1), np.float32)
    assert np.all(fastconv.conv2d(x, w3, backend=backend, algorithm=algorithm) == 9 * tiny)
