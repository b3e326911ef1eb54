"""The compiled max pool's ways of running a call: one thread, dynamic chunks of rows, pieces.

Below ``POOL_SINGLE_THREAD_WORK`` compares a call runs on the calling thread;
otherwise chunks of whole output rows (at least ``POOL_CHUNK_WORK`` compares,
fixed by the shape) are handed out to OpenMP threads, in pieces of about
``INTERRUPT_WORK`` compares.  Every way must equal the NumPy reference and give
the same bits for any thread count.
"""
from dataclasses import dataclass

import numpy as np
import pytest

import fastconv
from cases import DTYPES, params

cython_driver = pytest.importorskip("fastconv._backends.cython.driver",
                                    reason="Cython extension not built")
from fastconv import _tuning  # noqa: E402
from fastconv._backends.cython import _pool  # noqa: E402


@dataclass(frozen=True)
class PoolRun:
    """One input and how its pooling call is cut."""
    id: str
    shape: tuple               # (N, H, W, C)
    single_thread_work: int
    chunk_work: int
    interrupt_work: int


RUNS = [
    PoolRun("one_thread", (2, 12, 14, 3), 1 << 30, 0, 0),
    PoolRun("rows_one_by_one", (2, 12, 14, 3), 0, 0, 0),
    PoolRun("chunks_of_rows", (3, 20, 16, 19), 0, 2000, 0),
    PoolRun("chunks_and_pieces", (3, 20, 16, 19), 0, 2000, 5000),
    PoolRun("narrow_chunks_and_pieces", (2, 40, 64, 1), 0, 300, 700),
    PoolRun("default_tuning", (4, 64, 64, 16), _tuning.POOL_SINGLE_THREAD_WORK,
            _tuning.POOL_CHUNK_WORK, _tuning.INTERRUPT_WORK),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("run", params(RUNS))
def test_pool_every_way_of_running_matches_reference(run, dtype):
    rng = np.random.default_rng(len(run.id))
    x = rng.standard_normal(run.shape).astype(dtype)
    x.reshape(-1)[::37] = np.nan
    expected = fastconv.max_pool2d(x, 3, 2, "SAME", backend="numpy")
    # SAME with a 3x3 window at stride 2: one padding row/column after the input
    level = cython_driver.simd_level()
    bits = []
    for threads in (1, 2, 3):
        out = np.full(expected.shape, 42.0, dtype)
        _pool.max_pool2d(x, out, 3, 3, 2, 2, 1, 1, 0, 0, threads, level, run.interrupt_work,
                         run.single_thread_work, run.chunk_work)
        np.testing.assert_array_equal(out, expected)
        bits.append(out.view(np.uint32 if dtype == np.float32 else np.uint64))
    for other in bits[1:]:
        np.testing.assert_array_equal(other, bits[0])
