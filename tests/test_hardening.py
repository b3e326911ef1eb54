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
from dataclasses import dataclass

import numpy as np
import pytest

import fastconv
from fastconv import _threads

from cases import BACKENDS, FAST_BACKENDS, params

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


@dataclass(frozen=True)
class InterruptCase:
    """One long kernel call for the Ctrl-C probe: ``op`` on ``backend``.

    The probe sets ``INTERRUPT_WORK`` to ``work`` (a small chunk, so that a
    call of a few hundred MB holds hundreds of chunks), warms the kernel up
    on a small input (Numba compiles), starts the long call and sends SIGINT
    as soon as the first output element is written.
    """
    id: str
    backend: str
    op: str
    work: int = 1 << 20


INTERRUPT_CASES = [InterruptCase(f"{b}-{op}", b, op) for b, ops in (
    ("cython", ("im2col", "conv-im2col", "col2im", "argmax", "pool-backward")),
    ("numba", ("conv-planar", "conv-depthwise", "conv-im2col", "pool", "im2col", "col2im",
               "argmax", "pool-backward"))) for op in ops]

_KERNEL_INTERRUPT_PROBE = """
    import os, signal, threading, time
    import numpy as np
    from fastconv import _backends, _tuning
    backend, op, n = {backend!r}, {op!r}, {threads}
    drv = _backends.driver(backend)
    f32, nan = np.float32, np.nan

    def make(big):
        # (call, out, last): `out` starts all NaN (col2im: all zero), `call` writes every
        # element, and out's last element is `last` once it has (inputs of ones)
        s = 512 if big else 8
        if op == "im2col":
            x, out = np.ones((1, s, s, 16), f32), np.full((1, s - 2, s - 2, 3, 3, 16), nan, f32)
            return lambda: drv.im2col(x, out, (3, 3), (1, 1), (1, 1), (0, 0), n), out, 1
        if op == "col2im":
            cols, out = np.ones((1, s - 2, s - 2, 3, 3, 16), f32), np.zeros((1, s, s, 16), f32)
            return lambda: drv.col2im(cols, out, (3, 3), (1, 1), (1, 1), (0, 0), n), out, 1
        if op in ("argmax", "pool"):
            x, out = np.ones((1, s, s, 32), f32), np.full((1, s, s, 32), nan, f32)
            k = 15 if big else 3
            if op == "pool":
                return lambda: drv.max_pool2d(x, out, (k, k), (1, 1), (1, 1), (k // 2,) * 2,
                                              n), out, 1
            where = np.empty(out.shape, np.int64)
            return lambda: drv.max_pool2d_argmax(x, out, where, (k, k), (1, 1), (1, 1),
                                                 (k // 2,) * 2, n), out, 1
        if op == "pool-backward":
            images, per = (64, 1 << 18) if big else (2, 64)
            dy = np.ones(images * per, f32)
            rng = np.random.default_rng(0)
            index = np.concatenate([rng.permutation(per) + i * per for i in range(images)])
            out = np.full(images * per, nan, f32)
            return lambda: drv.max_pool2d_backward(dy, index, out, n, images=images), out, 1
        # convolutions: (x shape, filter shape, groups, algorithm)
        xs, ws, groups, algorithm = {{
            "conv-im2col": ((1, s // 4, s // 4, 128), (3, 3, 128, 128), 1, "im2col"),
            "conv-planar": ((1, 2 * s, 2 * s, 4), (5, 5, 4, 8), 1, "direct"),
            "conv-depthwise": ((1, 2 * s, 2 * s, 32), (5, 5, 1, 32), 32, "direct"),
        }}[op]
        x, w = np.ones(xs, f32), np.ones(ws, f32)
        out = np.full(xs[:3] + (ws[3],), nan, f32)
        pad = (ws[0] // 2, ws[1] // 2)
        # the last output's window holds (KH//2 + 1) x (KW//2 + 1) taps of C/groups ones
        last = (pad[0] + 1) * (pad[1] + 1) * ws[2]
        return lambda: drv.conv2d(x, w, None, out, (1, 1), (1, 1), pad, groups, False, n,
                                  algorithm), out, last

    call, _, _ = make(False)
    call()   # compiled (Numba) before the clock starts
    _tuning.INTERRUPT_WORK = {work}
    call, out, last = make(True)
    flat = out.reshape(-1)
    before = flat[0]
    started = lambda: not (flat[0] == before or (flat[0] != flat[0] and before != before))
    sent = []

    def interrupt():
        while not started():
            pass
        sent.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    try:
        call()
        print("finished")
    except KeyboardInterrupt:
        delay = time.perf_counter() - sent[0]
        print("interrupted after", delay, "last element unfinished:", bool(flat[-1] != last))
"""


@pytest.mark.parametrize("case", params(INTERRUPT_CASES))
def test_ctrl_c_interrupts_every_long_kernel(case):
    """Ctrl-C stops the call between two chunks: soon, and before the last output is final."""
    if case.backend not in BACKENDS:
        pytest.skip(f"backend {case.backend!r} is not available")
    res = _probe(_KERNEL_INTERRUPT_PROBE.format(backend=case.backend, op=case.op, threads=2,
                                                work=case.work))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "interrupted after" in res.stdout, res.stdout
    delay = float(res.stdout.split("interrupted after")[1].split()[0])
    assert delay < 1.0, delay   # a chunk is milliseconds here
    assert "last element unfinished: True" in res.stdout, res.stdout


def _chunked_ops(backend, rng):
    """Every chunked kernel on shapes whose pieces cut images into row bands."""
    from fastconv import _backends
    drv = _backends.driver(backend)
    x = rng.standard_normal((2, 13, 11, 5))
    x[0, 3, 4, 1] = x[1, 12, 0, 2] = np.nan
    out = {}
    geo = ((3, 2), (2, 1), (2, 1), (2, 1))   # ksize, strides, dilations, leading pads
    (KH, KW), (SH, SW), (DH, DW), (top, left) = geo
    OH = (13 + 2 * top - DH * (KH - 1) - 1) // SH + 1
    OW = (11 + 2 * left - DW * (KW - 1) - 1) // SW + 1
    for name, w, groups in (("conv", rng.standard_normal((3, 2, 5, 6)), 1),
                            ("conv-depthwise", rng.standard_normal((3, 2, 1, 10)), 5),
                            ("conv-wide", rng.standard_normal((3, 2, 5, 40)), 1)):
        for algorithm in ("direct", "im2col"):
            y = np.full((2, OH, OW, w.shape[3]), 7.0)
            drv.conv2d(x, w, None, y, geo[1], geo[2], geo[3], groups, False, 2, algorithm)
            out[f"{name}-{algorithm}"] = y
    y = np.full((2, OH, OW, 5), 7.0)
    drv.max_pool2d(x, y, *geo, 2)
    out["max_pool2d"] = y
    cols = np.full((2, OH, OW, KH, KW, 5), 7.0)
    drv.im2col(x, cols, *geo, 2)
    out["im2col"] = cols
    back = np.zeros_like(x)
    drv.col2im(rng.standard_normal(cols.shape), back, *geo, 2)
    out["col2im"] = back
    where = np.full((2, OH, OW, 5), -7, np.int64)
    drv.max_pool2d_argmax(x, y, where, *geo, 2)
    out["argmax"], out["argmax-out"] = where, y.copy()
    flat = (where + np.arange(2).reshape(2, 1, 1, 1) * x[0].size).reshape(-1)
    grad = np.full(x.size, 7.0)
    drv.max_pool2d_backward(rng.standard_normal(flat.size), flat, grad, 2, images=2)
    out["pool-backward"] = grad
    return out


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_chunks_for_ctrl_c_never_change_a_bit(backend, monkeypatch):
    """One output row (or one image) per chunk gives the same bits as one chunk per call."""
    from fastconv import _tuning
    monkeypatch.setattr(_tuning, "INTERRUPT_WORK", 1 << 60)
    whole = _chunked_ops(backend, np.random.default_rng(5))
    for work in (1, 500):
        monkeypatch.setattr(_tuning, "INTERRUPT_WORK", work)
        pieces = _chunked_ops(backend, np.random.default_rng(5))
        for name in whole:
            assert np.array_equal(pieces[name], whole[name], equal_nan=True), (name, work)


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


def _denormal_ops(backend, x, w, dy_conv, dy_pool):
    """Every op, forward and backward, on one backend (inputs hold denormals)."""
    out = {"relu": fastconv.relu(x, backend=backend),
           "max_pool2d": fastconv.max_pool2d(x, 2, 1, "SAME", backend=backend),
           "im2col": fastconv.im2col(x, 3, 1, "SAME", backend=backend),
           "col2im": fastconv.col2im(fastconv.im2col(x, 3, 1, "SAME"), x.shape, 3, 1, "SAME",
                                     backend=backend),
           "max_pool2d_backward": fastconv.max_pool2d_backward(dy_pool, x, 2, 1, "SAME",
                                                               backend=backend)}
    for algorithm in ("direct", "im2col"):
        out[f"conv2d-{algorithm}"] = fastconv.conv2d(x, w, 1, "SAME", backend=backend,
                                                     algorithm=algorithm)
    gx, gw, _ = fastconv.conv2d_backward(x, w, dy_conv, 1, "SAME", backend=backend)
    out["conv2d_backward-input"], out["conv2d_backward-filters"] = gx, gw
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_denormal_policy_is_the_same_in_every_backend(backend, dtype, rng):
    """Denormal inputs, weights and results are computed as IEEE 754 says, never flushed.

    Inputs are small integer multiples of the smallest denormal, weights small
    integers (and some denormal weights on integer inputs), so every product
    and sum is exact: any flush to zero (FTZ/DAZ) or any order of summation
    difference that a flush would cause shows as a mismatch with the NumPy
    reference.  Products of two normal numbers that underflow into the
    denormal range (1e-20 * 1e-20 in float32) are checked too.
    """
    tiny = np.finfo(dtype).smallest_subnormal
    x = (rng.integers(-50, 50, (2, 6, 7, 3)) * tiny).astype(dtype)
    assert np.all(np.abs(x[x != 0]) < np.finfo(dtype).smallest_normal)   # all denormal
    w = rng.integers(-3, 4, (3, 3, 3, 4)).astype(dtype)
    dy_conv = rng.integers(-3, 4, (2, 6, 7, 4)).astype(dtype)
    dy_pool = (rng.integers(-50, 50, (2, 6, 7, 3)) * tiny).astype(dtype)
    want = _denormal_ops("numpy", x, w, dy_conv, dy_pool)
    got = _denormal_ops(backend, x, w, dy_conv, dy_pool)
    for name in want:
        assert np.array_equal(got[name], want[name]), name
        if name != "conv2d_backward-filters":   # x * dy: sums of denormals, some nonzero
            assert np.any(got[name] != 0), name
    # denormal weights on integer inputs, and normal * normal underflowing to a denormal
    xi = rng.integers(-3, 4, (1, 5, 5, 3)).astype(dtype)
    small = np.sqrt(tiny * 2 ** 16).astype(dtype)   # small * small = 2**16 denormal steps
    for xs, ws in ((xi, (w * tiny).astype(dtype)), (np.full_like(xi, small), w * small)):
        for algorithm in ("direct", "im2col"):
            ref = fastconv.conv2d(xs, ws, 1, "SAME", backend="numpy")
            assert np.any((ref != 0) & (np.abs(ref) < np.finfo(dtype).smallest_normal))
            assert np.array_equal(fastconv.conv2d(xs, ws, 1, "SAME", backend=backend,
                                                  algorithm=algorithm), ref), algorithm


@pytest.mark.parametrize("user_env, expected", [
    ({}, "tuned"),                              # fastconv shortens the idle spin
    ({"GOMP_SPINCOUNT": "7"}, "7"),             # the user's setting wins
    ({"OMP_WAIT_POLICY": "PASSIVE"}, None),     # so does a wait policy
], ids=["unset", "user_spincount", "user_wait_policy"])
def test_openmp_idle_spin_is_set_before_the_runtime_loads(user_env, expected):
    """Idle OpenMP threads spin OPENMP_SPIN_COUNT before sleeping unless the user chose."""
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.update(user_env)
    code = """
        import os, numpy as np, fastconv
        from fastconv import _tuning
        fastconv.relu(np.ones(10, np.float32), backend="cython")
        print(os.environ.get("GOMP_SPINCOUNT"), _tuning.OPENMP_SPIN_COUNT)
    """
    full = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=TIMEOUT, env=env)
    assert full.returncode == 0, full.stderr
    got, tuned = full.stdout.split()
    assert got == (tuned if expected == "tuned" else str(expected))
