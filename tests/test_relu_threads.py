"""The compiled ReLU's (and ReLU gradient's) ways of running a call: one thread, OpenMP
chunks, interruptible pieces, streaming stores, every SIMD level.

A call below ``RELU_SINGLE_THREAD_ELEMENTS`` runs on the calling thread; a
larger one in chunks over OpenMP threads, in pieces of about
``RELU_INTERRUPT_ELEMENTS`` between which pending signals are noticed.  Every
way must give the reference's values (NaN kept, -inf to 0) and the same bits.
"""
from dataclasses import dataclass

import numpy as np
import pytest

import fastconv
from cases import DTYPES, params

cython_driver = pytest.importorskip("fastconv._backends.cython.driver",
                                    reason="Cython extension not built")
from fastconv import _tuning  # noqa: E402
from fastconv._backends.cython import _relu  # noqa: E402


@dataclass(frozen=True)
class ReluRun:
    """How one ReLU call is cut: elements, chunk, one-thread threshold, piece size."""
    id: str
    n: int
    chunk: int
    single_thread_elements: int
    interrupt_elements: int


RUNS = [
    ReluRun("one_thread_one_piece", 10007, 1024, 1 << 20, 0),
    ReluRun("one_thread_pieces", 10007, 1024, 1 << 20, 3000),       # pieces of 2 chunks
    ReluRun("threads_one_piece", 10007, 1024, 0, 0),
    ReluRun("threads_pieces", 100003, 1000, 0, 4096),                # pieces of 4 chunks
    ReluRun("piece_below_a_chunk", 5000, 1024, 0, 10),               # pieces of 1 chunk
    ReluRun("default_tuning", 3 * _tuning.RELU_CHUNK + 5, _tuning.RELU_CHUNK,
            _tuning.RELU_SINGLE_THREAD_ELEMENTS, _tuning.RELU_INTERRUPT_ELEMENTS),
]


def _data(n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(dtype)
    x[::97] = np.nan
    x[5::101] = -np.inf
    x[7::103] = np.inf
    x[11::89] = -0.0
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stream", (False, True))
@pytest.mark.parametrize("run", params(RUNS))
def test_relu_every_way_of_running_matches_reference(run, stream, dtype):
    x = _data(run.n, dtype, seed=run.n)
    expected = fastconv.relu(x, backend="numpy")
    level = cython_driver.simd_level()
    outs = []
    for threads in (1, 2, 3):
        out = np.full_like(x, 42.0)
        _relu.relu(x, out, threads, level, run.chunk, _tuning.STREAM_BYTES, stream,
                   run.single_thread_elements, run.interrupt_elements)
        np.testing.assert_array_equal(out, expected)
        outs.append(out.view(np.uint32 if dtype == np.float32 else np.uint64))
    for other in outs[1:]:
        np.testing.assert_array_equal(other, outs[0])


def test_relu_in_place_in_pieces():
    x = _data(50001, np.float32)
    expected = np.maximum(x, 0)   # NaN propagates through np.maximum as through relu
    _relu.relu(x, x, 2, cython_driver.simd_level(), 1000, _tuning.STREAM_BYTES, None, 0, 2000)
    np.testing.assert_array_equal(x, expected)


def _grad_data(n, dtype, seed=0):
    f = _data(n, dtype, seed)
    tiny = np.finfo(dtype).smallest_subnormal
    f[13::91] = tiny
    f[17::93] = -tiny
    dy = _data(n, dtype, seed + 1)[::-1].copy()
    return f, dy


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stream", (False, True))
@pytest.mark.parametrize("run", params(RUNS))
def test_relu_backward_every_way_of_running_matches_reference(run, stream, dtype):
    f, dy = _grad_data(run.n, dtype, seed=run.n)
    expected = fastconv.relu_backward(dy, f, backend="numpy")
    level = cython_driver.simd_level()
    bits = np.uint32 if dtype == np.float32 else np.uint64
    for threads in (1, 2, 3):
        out = np.full_like(dy, 42.0)
        _relu.relu_backward(f, dy, out, threads, level, run.chunk, _tuning.STREAM_BYTES,
                            stream, run.single_thread_elements, run.interrupt_elements)
        np.testing.assert_array_equal(out.view(bits), expected.view(bits))


@pytest.mark.parametrize("level", cython_driver.SIMD_LEVELS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stream", (False, True))
def test_relu_and_gradient_every_simd_level_match_reference(level, dtype, stream):
    best = cython_driver.SIMD_LEVELS.index(cython_driver.cpu_simd_level())
    if cython_driver.SIMD_LEVELS.index(level) > best:
        pytest.skip(f"CPU lacks {level} (best: {cython_driver.cpu_simd_level()})")
    code = cython_driver.SIMD_LEVELS.index(level)
    bits = np.uint32 if dtype == np.float32 else np.uint64
    for n in (1, 3, 8, 15, 17, 63, 1000, 4101):   # every tail length of every vector width
        f, dy = _grad_data(n + 8, dtype, seed=n)
        for off in (0, 1, 3):                     # unaligned outputs (streaming heads)
            out = np.full(n + 8, 42.0, dtype)
            _relu.relu(f[off:off + n], out[off:off + n], 2, code, 1024, _tuning.STREAM_BYTES,
                       stream, 0, 0)
            np.testing.assert_array_equal(   # values: np.maximum makes -0.0 into +0.0
                out[off:off + n], fastconv.relu(f[off:off + n], backend="numpy"))
            _relu.relu_backward(f[off:off + n], dy[off:off + n], out[off:off + n], 2, code,
                                1024, _tuning.STREAM_BYTES, stream, 0, 0)
            np.testing.assert_array_equal(
                out[off:off + n].view(bits),
                fastconv.relu_backward(dy[off:off + n], f[off:off + n],
                                       backend="numpy").view(bits))
            assert (out[:off] == 42).all() and (out[off + n:] == 42).all()   # no overrun
