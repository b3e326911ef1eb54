"""Named test cases, dtypes and tolerances: the one place every test file takes them from.

A case is a frozen dataclass with an ``id`` that pytest shows in the test's
name (``params`` makes the ``pytest.param`` list), so a failure says which
geometry broke.  Inputs are drawn by the case itself (``case.data(rng,
dtype)``), the same way in every file.
"""
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import fastconv

#: every backend available in this installation, and those other than the NumPy judge
BACKENDS = fastconv.available_backends()
FAST_BACKENDS = [b for b in BACKENDS if b != "numpy"]

#: the dtypes every op accepts
DTYPES = (np.float32, np.float64)

#: relative/absolute tolerance per dtype for sums of a few hundred products
TOL = {np.dtype(np.float32): dict(rtol=2e-5, atol=2e-5),
       np.dtype(np.float64): dict(rtol=1e-11, atol=1e-11)}


def tolerance(dtype, reduction=1):
    """``dict(rtol=, atol=)`` for ``dtype``, widened by ``sqrt(reduction)`` (the sum's length)."""
    tol = TOL[np.dtype(dtype)]
    scale = max(1.0, float(np.sqrt(reduction)))
    return dict(rtol=tol["rtol"] * scale, atol=tol["atol"] * scale)


def assert_close(actual, expected, dtype=None, scale=1.0):
    """Compare with the per-dtype tolerance, widened by ``scale`` (e.g. sqrt of the sum length)."""
    dtype = np.dtype(dtype or np.asarray(expected).dtype)
    tol = TOL[dtype]
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"] * scale,
                               atol=tol["atol"] * scale)


def params(cases):
    """``pytest.param(case, id=case.id)`` for each case."""
    return [pytest.param(case, id=case.id) for case in cases]


@dataclass(frozen=True)
class ConvCase:
    """One conv2d geometry: NHWC input, HWIO filters, TF-style strides/dilations/padding."""
    id: str
    N: int
    H: int
    W: int
    C: int
    KH: int
    KW: int
    O: int
    strides: Any = 1
    dilations: Any = 1
    padding: Any = "VALID"
    groups: int = 1

    @property
    def reduction(self):
        """Length of each output element's sum: KH * KW * C / groups."""
        return self.KH * self.KW * self.C // self.groups

    @property
    def scale(self):
        """The tolerance scale for this case's sums (square root of the reduction)."""
        return float(np.sqrt(self.KH * self.KW * self.C))

    def data(self, rng, dtype):
        """``(x, w, b)``: standard-normal input, filters and bias of this case."""
        x = rng.standard_normal((self.N, self.H, self.W, self.C)).astype(dtype)
        w = rng.standard_normal((self.KH, self.KW, self.C // self.groups, self.O)).astype(dtype)
        b = rng.standard_normal(self.O).astype(dtype)
        return x, w, b

    def kwargs(self):
        """The geometry as keyword arguments of :func:`fastconv.conv2d` (NHWC)."""
        return dict(strides=self.strides, padding=self.padding, dilations=self.dilations,
                    groups=self.groups)

    def nchw_padding(self):
        """``padding`` in NCHW order (explicit pairs reordered; strings unchanged)."""
        p = self.padding
        return p if isinstance(p, str) else [p[0], p[3], p[1], p[2]]


@dataclass(frozen=True)
class PoolCase:
    """One max-pool geometry: NHWC input, window, strides (None: the window) and padding."""
    id: str
    N: int
    H: int
    W: int
    C: int
    ksize: Any
    strides: Any = None
    padding: Any = "VALID"

    def data(self, rng, dtype):
        return rng.standard_normal((self.N, self.H, self.W, self.C)).astype(dtype)


@dataclass(frozen=True)
class TorchConvCase:
    """One ``torch.nn.functional.conv2d`` geometry: NCHW input, OIHW weights, torch arguments."""
    id: str
    N: int
    C: int
    H: int
    W: int
    O: int
    KH: int
    KW: int
    stride: Any = 1
    padding: Any = 0
    dilation: Any = 1
    groups: int = 1

    def data(self, rng, dtype):
        """``(x, w, b)`` in torch's layouts."""
        x = rng.standard_normal((self.N, self.C, self.H, self.W)).astype(dtype)
        w = rng.standard_normal((self.O, self.C // self.groups, self.KH, self.KW)).astype(dtype)
        b = rng.standard_normal(self.O).astype(dtype)
        return x, w, b

    @property
    def scale(self):
        return float(np.sqrt(self.KH * self.KW * self.C))


@dataclass(frozen=True)
class TorchPoolCase:
    """One ``torch.nn.functional.max_pool2d`` geometry (NCHW)."""
    id: str
    N: int
    C: int
    H: int
    W: int
    kernel_size: Any
    stride: Any = None
    padding: Any = 0
    dilation: Any = 1
    ceil_mode: bool = False


#: the shared forward grid: N=1, C=1, non-square kernels, stride > 1 with even and odd sizes
#: under SAME (asymmetric padding), dilation, groups, depthwise, explicit padding
CONV_CASES = [
    ConvCase("unit", 1, 1, 1, 1, 1, 1, 1),
    ConvCase("c1_o1_same", 1, 6, 6, 1, 3, 3, 1, padding="SAME"),
    ConvCase("k3x2_s2_same", 3, 7, 8, 3, 3, 2, 5, strides=2, padding="SAME"),
    ConvCase("k2x3_s2x1_o17", 2, 8, 7, 2, 2, 3, 17, strides=(2, 1), padding="SAME"),
    ConvCase("k5_o33_same", 1, 13, 11, 4, 5, 5, 33, padding="SAME"),
    ConvCase("c19_dilated", 2, 9, 10, 19, 3, 3, 16, dilations=2, padding="SAME"),
    ConvCase("s2_d2_valid", 1, 12, 12, 8, 3, 3, 24, strides=2, dilations=2),
    ConvCase("groups4", 2, 6, 6, 8, 3, 3, 12, padding="SAME", groups=4),
    ConvCase("depthwise16", 2, 10, 9, 16, 3, 3, 16, padding="SAME", groups=16),
    ConvCase("depthwise_x2_s2", 1, 7, 7, 5, 3, 3, 10, strides=2, padding="SAME", groups=5),
    ConvCase("k1x5_explicit", 1, 6, 7, 3, 1, 5, 2, strides=(1, 2),
             padding=[[0, 0], [1, 2], [3, 0], [0, 0]]),
    ConvCase("k5_valid", 2, 5, 5, 7, 5, 5, 9),
    ConvCase("pad_beyond_input", 1, 4, 4, 2, 3, 3, 3, padding=[[0, 0], [4, 4], [4, 4], [0, 0]]),
    ConvCase("k1_c64", 2, 14, 15, 64, 1, 1, 40, padding="SAME"),
    ConvCase("k7_s2_o64", 1, 9, 9, 3, 7, 7, 64, strides=2, padding="SAME"),
]
CONV = {case.id: case for case in CONV_CASES}

#: 1x1 layers: those the compiled backend's "auto" runs as one GEMM of the input
#: (C_in >= fastconv._tuning.GEMM_1X1_MIN_CHANNELS) -- with N=1, C_in not a multiple of 8,
#: strides (pixels gathered per tile), explicit padding, several tiles -- and one just below
#: the threshold (direct kernel)
CONV_1X1_CASES = [
    ConvCase("k1_c130_o40_same", 2, 5, 6, 130, 1, 1, 40, padding="SAME"),
    ConvCase("k1_n1_c131_o17", 1, 7, 3, 131, 1, 1, 17),
    ConvCase("k1_c128_o64_s2_same", 2, 9, 8, 128, 1, 1, 64, strides=2, padding="SAME"),
    ConvCase("k1_c200_o24_s2x3", 1, 11, 10, 200, 1, 1, 24, strides=(2, 3)),
    ConvCase("k1_c129_o33_padded", 1, 4, 5, 129, 1, 1, 33,
             padding=[[0, 0], [1, 0], [0, 2], [0, 0]]),
    ConvCase("k1_c256_o520_tiles", 3, 20, 21, 256, 1, 1, 520),
    ConvCase("k1_c127_o40_below", 1, 6, 6, 127, 1, 1, 40),
]
CONV_1X1 = {case.id: case for case in CONV_1X1_CASES}

#: the shared max-pool grid: windows of 1, tiling and overlapping windows, SAME,
#: non-square windows and strides, explicit padding, channel counts around the vector widths
POOL_CASES = [
    PoolCase("unit", 1, 1, 1, 1, 1),
    PoolCase("k2_tiling", 2, 8, 8, 3, 2),
    PoolCase("k2_s2_c64", 2, 26, 26, 64, 2, 2),
    PoolCase("k3_s2_same_c17", 1, 7, 9, 17, 3, 2, "SAME"),
    PoolCase("k2x3_s1x2_same", 2, 6, 5, 4, (2, 3), (1, 2), "SAME"),
    PoolCase("k3_c1", 1, 9, 9, 1, 3, 3),
    PoolCase("explicit_c33", 2, 7, 7, 33, 2, 2, [[0, 0], [1, 0], [0, 1], [0, 0]]),
    PoolCase("k4_s3_same", 1, 11, 10, 5, 4, 3, "SAME"),
]
