"""Outputs fastconv allocates start on a 64-byte boundary; a caller's ``out=`` is used as given."""
import numpy as np
import pytest

import fastconv
from cases import BACKENDS, assert_close
from fastconv import _tuning
from fastconv._ops import aligned_empty

ALIGN = _tuning.OUTPUT_ALIGN_BYTES


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint8])
@pytest.mark.parametrize("shape", [(), 0, 7, (3, 0, 5), (2, 3, 5, 7), (1, 160, 240, 1)])
def test_aligned_empty_is_an_aligned_c_contiguous_array(shape, dtype):
    for _ in range(8):   # several allocations: NumPy's own offsets vary
        a = aligned_empty(shape, dtype)
        expected_shape = (shape,) if isinstance(shape, int) else shape
        assert a.shape == expected_shape and a.dtype == np.dtype(dtype)
        assert a.flags.c_contiguous and a.flags.writeable
        assert a.size == 0 or a.ctypes.data % ALIGN == 0   # an empty array has no data
        a[...] = 1     # the whole range is usable memory
        assert (a == 1).all()


def test_aligned_empty_other_alignment():
    for alignment in (16, 128, 4096):
        assert aligned_empty((5, 3), np.float32, alignment).ctypes.data % alignment == 0


def test_aligned_empty_below_min_bytes_is_plain():
    a = aligned_empty((3, 5), np.float32, min_bytes=61)   # 60 bytes
    assert a.base is None and a.shape == (3, 5)
    assert aligned_empty((4, 4), np.float32, min_bytes=64).ctypes.data % ALIGN == 0


def _calls(backend):
    rng = np.random.default_rng(0)
    # every output at least OUTPUT_ALIGN_MIN_BYTES (checked in the test)
    x = rng.standard_normal((2, 40, 41, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 5)).astype(np.float32)
    kw = dict(backend=backend)
    return {
        "conv2d": lambda **o: fastconv.conv2d(x, w, padding="SAME", **kw, **o),
        "conv2d_nchw": lambda **o: fastconv.conv2d(x.transpose(0, 3, 1, 2), w,
                                                   data_format="NCHW", **kw, **o),
        "relu": lambda **o: fastconv.relu(x, **kw, **o),
        "max_pool2d": lambda **o: fastconv.max_pool2d(x, 2, 1, **kw, **o),
        "im2col": lambda **o: fastconv.im2col(x, 3, **kw),
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["conv2d", "conv2d_nchw", "relu", "max_pool2d", "im2col"])
def test_allocated_outputs_are_aligned(backend, op):
    call = _calls(backend)[op]
    reference = _calls("numpy")[op]()
    assert reference.nbytes >= _tuning.OUTPUT_ALIGN_MIN_BYTES
    for _ in range(8):
        y = call()
        assert y.ctypes.data % ALIGN == 0, (op, y.ctypes.data % ALIGN)
        assert_close(y, reference, scale=np.sqrt(27))   # conv2d: a 27-term reduction


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["conv2d", "relu", "max_pool2d"])
def test_a_misaligned_out_is_used_as_given(backend, op):
    call = _calls(backend)[op]
    shape, dtype = call().shape, np.float32
    backing = np.zeros(int(np.prod(shape)) + 1, dtype)
    out = backing[1:].reshape(shape)          # 4 bytes past NumPy's (16-byte) alignment
    assert out.ctypes.data % ALIGN != 0
    y = call(out=out)
    assert y is out
    np.testing.assert_array_equal(out, call())
