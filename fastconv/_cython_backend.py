"""The compiled ("cython") backend: C/SIMD kernels with OpenMP, driven from Python.

Implements the driver interface of :mod:`fastconv._backends` on arrays the
public functions have already checked.  The kernels live in three compiled
modules:

``fastconv._conv_direct``
    register-blocked direct convolution (AVX-512/AVX2 intrinsics).
``fastconv._im2col_gemm``
    tiled im2col + SciPy BLAS GEMM, bias and ReLU fused per L2-sized tile.
``fastconv._relu_pool``
    ReLU, NHWC max pooling and im2col, vectorized with C intrinsics.

Every kernel receives the SIMD level to use (:func:`simd_level`): the best
one this CPU supports, which the environment variable ``FASTCONV_SIMD``
(``avx512``, ``avx2`` or ``generic``) may lower -- for testing every code
path on one machine, or for comparing them.  The module imports only when the
compiled modules are present; otherwise the ImportError makes the registry
report "extension not built".
"""
import os

from . import _build_info, _im2col_gemm, _relu_pool  # ImportError when not built
from ._threads import blas_controller, single_threaded_blas

try:
    from . import _conv_direct
    _DIRECT_MISSING = ""
except ImportError as exc:  # built without the direct kernels: im2col serves every shape
    _conv_direct = None
    _DIRECT_MISSING = str(exc)

SIMD_ENV_VAR = "FASTCONV_SIMD"
#: level names, lowest first; the index is the FC_SIMD_* value of fc_cpu.h
SIMD_LEVELS = ("generic", "avx2", "avx512")
ALGORITHMS = ("direct", "im2col") if _conv_direct is not None else ("im2col",)

_CPU_SIMD = _build_info.cpu_simd_level()   # the CPU does not change while we run
def cpu_simd_level():
    """The best SIMD level of this CPU: 'avx512', 'avx2' or 'generic'."""
    return _CPU_SIMD


def simd_level():
    """The SIMD level the kernels use, as an int (0 generic, 1 AVX2, 2 AVX-512).

    The CPU's best level, lowered to ``FASTCONV_SIMD`` when that is set.  Read
    at every call (it is cheap), so changing the variable takes effect at once.

    Raises
    ------
    ValueError
        When ``FASTCONV_SIMD`` names an unknown level, or a level above the CPU's.
    """
    best = SIMD_LEVELS.index(cpu_simd_level())
    raw = os.environ.get(SIMD_ENV_VAR, "").strip().lower()
    if not raw:
        return best
    if raw not in SIMD_LEVELS:
        raise ValueError(f"environment variable {SIMD_ENV_VAR}={raw!r} must be one of "
                         f"{', '.join(SIMD_LEVELS)} (or unset for the CPU's best, "
                         f"{SIMD_LEVELS[best]!r}).")
    level = SIMD_LEVELS.index(raw)
    if level > best:
        raise ValueError(f"environment variable {SIMD_ENV_VAR}={raw!r} asks for more than "
                         f"this CPU supports: its best SIMD level is {SIMD_LEVELS[best]!r}.")
    return level


#: "auto" picks im2col + GEMM (groups == 1) when the output has at most
#: ``pixels`` pixels (N*OH*OW) and the filters at least ``filter`` elements
#: (KH*KW*C_in*C_out), for any (pixels, filter) pair below; direct otherwise.
AUTO_IM2COL_RULES = ((256, 1 << 16), (1024, 1 << 20))


def choose_algorithm(x_shape, w_shape, out_shape, strides, dilations, groups):
    """The kernel ``algorithm="auto"`` runs for one convolution: 'direct' or 'im2col'.

    Rule: tiled im2col + GEMM when ``groups == 1`` and the filters are large
    for the number of output pixels -- at most 256 pixels (``N*OH*OW``) with
    at least 64 Ki filter elements (``KH*KW*C_in*C_out``), or at most 1024
    pixels with at least 1 Mi elements (:data:`AUTO_IM2COL_RULES`); the
    direct kernel otherwise.  It depends on the shapes only (never on the
    thread count), so "auto" gives bitwise identical results for any
    ``num_threads``.

    Why: the direct kernel streams the whole filter once per output row, so it
    wins wherever many pixels share each filter element -- every shape of the
    benchmark suite -- and on small-channel and grouped/depthwise layers where
    a GEMM's K or N is tiny; BLAS's cache blocking wins for large filters
    applied to few pixels (late layers, small batches).  Measured here,
    float32, one thread, CPU time of each kernel (the machine was shared, so
    CPU time rather than wall time), direct time / im2col time (> 1: im2col
    faster)::

        N, HxW,      C_in->C_out, K    pixels  filter  direct/im2col
        256, 28x28,    1->64,   3    173056     576    0.53
        256, 13x13,   64->64,   3     43264     37K    0.72
        8,   56x56,   64->64,   3     25088     37K    0.76
        1,  224x224,  64->64,   3     50176     37K    0.75
        8,  224x224,   3->64,   7 s2 100352      9K    0.71
        1,  512x512,   1->1,    3    262144       9    0.04
        8,   56x56,   64->64,   3, depthwise           0.03
        32,  32x32,    3->32,   3     32768     864    0.71
        8,   28x28,  256->256,  3      6272    590K    0.57
        8,   14x14,  256->256,  3      1568    590K    0.85
        1,   28x28,  256->256,  3       784    590K    0.88
        8,   28x28,  512->512,  1      6272    262K    0.85
        8,   56x56,   64->256,  1     25088     16K    1.16  (rule says direct)
        1,   14x14,  256->256,  3       196    590K    1.23
        1,   14x14,  128->1024, 1       196    131K    1.32
        4,   14x14,  512->512,  3       784    2.4M    1.16
        8,    7x7,   512->512,  3       392    2.4M    1.37
        1,   14x14,  512->512,  3       196    2.4M    1.95
        8,    7x7,   512->2048, 1       392    1.0M    1.55
        1,    7x7,   512->2048, 1        49    1.0M    3.67

    Without the compiled direct module everything is im2col.
    """
    if _conv_direct is None:
        return "im2col"
    if groups != 1:
        return "direct"
    KH, KW, Cg, O = w_shape
    pixels = out_shape[0] * out_shape[1] * out_shape[2]
    filt = KH * KW * Cg * O
    for max_pixels, min_filter in AUTO_IM2COL_RULES:
        if pixels <= max_pixels and filt >= min_filter:
            return "im2col"
    return "direct"


def conv2d(x, w, bias, out, strides, dilations, pads, groups, relu, num_threads,
           algorithm="auto"):
    """Driver: ``out = relu?(conv2d(x, w) + bias)`` with the direct or im2col kernels.

    See :mod:`fastconv._backends` for the arguments; ``algorithm`` is
    'auto' (:func:`choose_algorithm`), 'direct' or 'im2col'.
    """
    level = simd_level()
    if algorithm == "auto":
        algorithm = choose_algorithm(x.shape, w.shape, out.shape, strides, dilations, groups)
    if algorithm == "direct":
        if _conv_direct is None:
            raise ValueError("algorithm='direct' is not available: this build of fastconv "
                             "lacks the compiled module fastconv._conv_direct "
                             f"({_DIRECT_MISSING or 'not imported'}); use "
                             "algorithm='im2col' or 'auto'.")
        _conv_direct.conv2d_direct(x, w, bias, out, strides[0], strides[1], dilations[0],
                                   dilations[1], pads[0], pads[1], groups, bool(relu),
                                   num_threads, level)
        return
    if algorithm != "im2col":
        raise ValueError(f"algorithm must be one of ('auto',) + {ALGORITHMS}; "
                         f"got {algorithm!r}.")
    with single_threaded_blas():
        _im2col_gemm.conv2d_im2col(x, w, bias, out, strides[0], strides[1], dilations[0],
                                   dilations[1], pads[0], pads[1], groups, bool(relu),
                                   num_threads, level)


def relu(x, out, num_threads):
    """Driver: ``out = max(x, 0)``; ``out`` may be ``x``; NaN stays NaN."""
    _relu_pool.relu(x.reshape(-1), out.reshape(-1), num_threads, simd_level())


def max_pool2d(x, out, ksize, strides, dilations, pads, num_threads):
    """Driver: NHWC max pooling; padding is never picked, NaN propagates."""
    _relu_pool.max_pool2d(x, out, ksize[0], ksize[1], strides[0], strides[1], dilations[0],
                          dilations[1], pads[0], pads[1], num_threads, simd_level())


def im2col(x, out, ksize, strides, dilations, pads, num_threads):
    """Driver: unfold ``x`` into ``out`` (N, OH, OW, KH, KW, C), zeros outside."""
    _relu_pool.im2col(x, out, strides[0], strides[1], dilations[0], dilations[1], pads[0],
                      pads[1], num_threads)


def _blas_info():
    """threadpoolctl's description of the BLAS SciPy's cython_blas calls."""
    libs = [lib for lib in blas_controller().info() if lib.get("user_api") == "blas"]
    scipy_libs = [lib for lib in libs if "scipy" in os.path.basename(
        os.path.dirname(lib.get("filepath", "")))]
    chosen = (scipy_libs or libs)[:1]
    if not chosen:
        return "unknown (threadpoolctl found no BLAS)"
    lib = chosen[0]
    return (f"{lib.get('internal_api')} {lib.get('version')} ({lib.get('architecture')}, "
            f"{lib.get('threading_layer')}; held to 1 thread inside fastconv's own threads) "
            f"{lib.get('filepath')}")


def info():
    """Facts for :func:`fastconv.show_config`."""
    try:
        simd = SIMD_LEVELS[simd_level()]
    except ValueError as exc:
        simd = f"invalid ({exc})"
    return {
        "openmp": _build_info.openmp_enabled(),
        "simd": simd,
        "cpu simd": cpu_simd_level(),
        "blas": _blas_info(),
        "algorithms": ", ".join(ALGORITHMS),
    }
