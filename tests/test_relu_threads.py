"""The compiled ReLU's ways of running a call: one thread, OpenMP chunks, interruptible pieces.

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
