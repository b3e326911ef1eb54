"""The compiled ("cython") backend's driver: C/SIMD kernels with OpenMP, called from Python.

Implements the driver interface of :mod:`fastconv._backends` on arrays the
public functions have already checked.  The kernels are compiled modules of
this package, built from ``src_cython/``:

``_conv_direct``
    register-blocked direct convolution (AVX-512/AVX2 intrinsics).
``_im2col_gemm``
    tiled im2col + SciPy BLAS GEMM, bias and ReLU fused per L2-sized tile.
``_relu``, ``_pool``, ``_im2col``
    ReLU, NHWC max pooling and im2col, vectorized with C intrinsics.
``_backward``
    col2im, max pooling with the argmax, and the pool backward (scatter-add
    per image, or fused with the argmax row by row): the optional backward
    drivers (absent when not built).
``_backward_conv``
    native filter gradients (depthwise, and dense with few input channels).

Every kernel receives the SIMD level to use (:func:`simd_level`): the best
one this CPU supports, which the environment variable ``FASTCONV_SIMD``
(``avx512``, ``avx2`` or ``generic``) may lower -- for testing every code
path on one machine, or for comparing them -- and its tunables from
:mod:`fastconv._tuning`.  This module imports only when the compiled modules
are present; otherwise the ImportError makes the registry report "extension
not built".
"""
import os
import threading

import numpy as np

from ... import _tuning
from ..._threads import (blas_controller, environ_value, shorten_openmp_spins,
                         single_threaded_blas)

shorten_openmp_spins()   # before the compiled kernels load the OpenMP runtime
from . import _build_info, _im2col, _im2col_gemm, _pool, _relu  # noqa: E402; ImportError: not built
from . import _parallel  # noqa: E402

_parallel.set_spin_count(_tuning.POOL_SPIN_COUNT)

try:
    from . import _backward as _bw
except ImportError:  # built before the backward kernels: the registry's fallbacks serve
    _bw = None

try:
    from . import _backward_conv as _bwc
except ImportError:  # built before the native filter gradients: the GEMM composition serves
    _bwc = None

try:
    from . import _conv_direct
    _DIRECT_MISSING = ""
except ImportError as exc:  # built without the direct kernels: im2col serves every shape
    _conv_direct = None
    _DIRECT_MISSING = str(exc)

#: the tunables handed to the kernels (see :mod:`fastconv._tuning`)
IM2COL_TUNING = {"tile_bytes": _tuning.IM2COL_TILE_BYTES,
                 "max_buffer_bytes": _tuning.IM2COL_MAX_BUFFER_BYTES,
                 "min_tile": _tuning.IM2COL_MIN_TILE, "max_tile": _tuning.IM2COL_MAX_TILE,
                 "min_tasks": _tuning.IM2COL_MIN_TASKS,
                 "min_o_block": _tuning.IM2COL_MIN_O_BLOCK}
DIRECT_TUNING = {"block_major_bytes": _tuning.DIRECT_BLOCK_MAJOR_BYTES,
                 "chunk_bytes": _tuning.DIRECT_CHUNK_BYTES,
                 "chunk_min_pixels": _tuning.DIRECT_CHUNK_MIN_PIXELS,
                 "border_rows": _tuning.DIRECT_BORDER_ROWS,
                 "interrupt_work": _tuning.INTERRUPT_WORK,
                 "single_thread_work": _tuning.DIRECT_SINGLE_THREAD_WORK,
                 "stream_bytes": _tuning.DIRECT_STREAM_BYTES}

SIMD_ENV_VAR = "FASTCONV_SIMD"
#: level names, lowest first; the index is the FC_SIMD_* value of fc_cpu.h
SIMD_LEVELS = ("generic", "avx2", "avx512")
#: the conv2d algorithms this build has
BUILT_ALGORITHMS = ("direct", "im2col") if _conv_direct is not None else ("im2col",)

_CPU_SIMD = _build_info.cpu_simd_level()   # the CPU does not change while we run


def _copy_interrupt_work():
    """Elements per interruptible chunk of the memory-bound kernels (:mod:`fastconv._tuning`)."""
    return _tuning.INTERRUPT_WORK / _tuning.INTERRUPT_COPY_COST


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
    raw = environ_value(SIMD_ENV_VAR)
    level = _SIMD_SEEN.get(raw)
    if level is None:
        level = _SIMD_SEEN[raw] = _simd_level(raw)   # raises for a bad value, never cached
    return level


_SIMD_SEEN = {}   # FASTCONV_SIMD's raw value -> level (the CPU does not change)


def _simd_level(raw):
    best = SIMD_LEVELS.index(cpu_simd_level())
    raw = raw.strip().lower()
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


def choose_algorithm(x_shape, w_shape, out_shape, strides, dilations, groups):
    """The kernel ``algorithm="auto"`` runs for one convolution: 'direct' or 'im2col'.

    Rules: a 1x1 convolution with ``groups == 1`` and enough channels
    (:data:`fastconv._tuning.GEMM_1X1_MIN_CHANNELS` input,
    :data:`~fastconv._tuning.GEMM_1X1_MIN_OUTPUTS` output) is a GEMM of the
    ``(N*H*W, C_in)`` input (no unfolding when stride 1 and unpadded; its
    strided pixels gathered otherwise) with the ``(C_in, C_out)`` filters, so
    it goes to the im2col + GEMM kernel.  Otherwise
    (:data:`fastconv._tuning.AUTO_IM2COL_RULES`) tiled im2col + GEMM
    when ``groups == 1`` and the filters are large for the number of output
    pixels -- at most 256 pixels (``N*OH*OW``) with at least 64 Ki filter
    elements (``KH*KW*C_in*C_out``), or at most 1024 pixels with at least
    1 Mi elements; the direct kernel otherwise.  It depends on the shapes
    only (never on the thread count), so "auto" gives bitwise identical
    results for any ``num_threads``.

    The direct kernel streams the whole filter once per output row, so it wins
    wherever many pixels share each filter element, and on small-channel and
    grouped/depthwise layers where a GEMM's K or N is tiny; BLAS's cache
    blocking wins for large filters applied to few pixels (late layers, small
    batches).  The measurements behind the thresholds are in the benchmark
    results of the repository.  Without the compiled direct module everything
    is im2col.
    """
    if _conv_direct is None:
        return "im2col"
    if groups != 1:
        return "direct"
    KH, KW, Cg, O = w_shape
    if KH == 1 and KW == 1 and Cg >= _tuning.GEMM_1X1_MIN_CHANNELS \
            and O >= _tuning.GEMM_1X1_MIN_OUTPUTS:
        return "im2col"   # a 1x1 layer is one GEMM (strided: of the gathered pixels)
    pixels = out_shape[0] * out_shape[1] * out_shape[2]
    filt = KH * KW * Cg * O
    for max_pixels, min_filter in _tuning.AUTO_IM2COL_RULES:
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
                             "lacks the compiled module _conv_direct "
                             f"({_DIRECT_MISSING or 'not imported'}); use "
                             "algorithm='im2col' or 'auto'.")
        _conv_direct.conv2d_direct(x, w, bias, out, strides[0], strides[1], dilations[0],
                                   dilations[1], pads[0], pads[1], groups, bool(relu),
                                   num_threads, level, DIRECT_TUNING)
        return
    if algorithm != "im2col":
        raise ValueError(f"algorithm must be one of ('auto',) + {BUILT_ALGORITHMS}; "
                         f"got {algorithm!r}.")
    if x.shape[0] * out.shape[1] * out.shape[2] * w.shape[0] * w.shape[1] * x.shape[3] \
            * w.shape[3] // groups < _tuning.GEMM_SINGLE_THREAD_WORK:
        num_threads = 1
    with single_threaded_blas():
        _im2col_gemm.conv2d_im2col(x, w, bias, out, strides[0], strides[1], dilations[0],
                                   dilations[1], pads[0], pads[1], groups, bool(relu),
                                   num_threads, level, IM2COL_TUNING,
                                   interrupt_work=_tuning.INTERRUPT_WORK)


def conv_channel_lanes(dtype, in_channels):
    """Output channels of ``dtype`` per SIMD vector of the direct kernel at :func:`simd_level`.

    The direct kernel vectorizes across output channels (whatever
    ``in_channels``), so a convolution with fewer fills part of each vector;
    the input gradient counts its work by it
    (:func:`fastconv._backward.stacked_block`).
    """
    level = simd_level()
    return (32, 64)[level - 1] // np.dtype(dtype).itemsize if level else 1


def relu(x, out, num_threads):
    """Driver: ``out = max(x, 0)``; ``out`` may be ``x``; NaN stays NaN."""
    _relu.relu(x.reshape(-1), out.reshape(-1), num_threads, simd_level(), _tuning.RELU_CHUNK,
               _tuning.STREAM_BYTES, None, _tuning.RELU_SINGLE_THREAD_ELEMENTS,
               _tuning.RELU_INTERRUPT_ELEMENTS)


def relu_backward(value, dy, out, num_threads):
    """Driver: ``out = dy`` where ``value > 0``, else +0 (flat arrays; NaN ``value`` gives 0).

    Chunks, the one-thread threshold, streaming and Ctrl-C pieces as :func:`relu`.
    """
    _relu.relu_backward(value.reshape(-1), dy.reshape(-1), out.reshape(-1), num_threads,
                        simd_level(), _tuning.RELU_CHUNK, _tuning.STREAM_BYTES, None,
                        _tuning.RELU_SINGLE_THREAD_ELEMENTS, _tuning.RELU_INTERRUPT_ELEMENTS)


def max_pool2d(x, out, ksize, strides, dilations, pads, num_threads):
    """Driver: NHWC max pooling; padding is never picked, NaN propagates."""
    _pool.max_pool2d(x, out, ksize[0], ksize[1], strides[0], strides[1], dilations[0],
                     dilations[1], pads[0], pads[1], num_threads, simd_level(),
                     _tuning.INTERRUPT_WORK, _tuning.POOL_SINGLE_THREAD_WORK,
                     _tuning.POOL_CHUNK_WORK)


def im2col(x, out, ksize, strides, dilations, pads, num_threads):
    """Driver: unfold ``x`` into ``out`` (N, OH, OW, KH, KW, C), zeros outside.

    Below ``IM2COL_SINGLE_THREAD_ELEMENTS`` output elements one thread copies.
    """
    if out.size < _tuning.IM2COL_SINGLE_THREAD_ELEMENTS:
        num_threads = 1
    _im2col.im2col(x, out, strides[0], strides[1], dilations[0], dilations[1], pads[0],
                   pads[1], num_threads, _copy_interrupt_work())


# ----------------------------------------------------------------------------- backward drivers
def _col2im(cols, out, ksize, strides, dilations, pads, num_threads):
    """Driver: ``out`` (N, H, W, C) ``+=`` the adjoint of im2col of ``cols`` (N, OH, OW, KH, KW, C).

    Below ``IM2COL_SINGLE_THREAD_ELEMENTS`` elements of ``cols`` one thread folds.
    """
    if cols.size < _tuning.IM2COL_SINGLE_THREAD_ELEMENTS:
        num_threads = 1
    _bw.col2im(cols, out, strides[0], strides[1], dilations[0], dilations[1], pads[0], pads[1],
               num_threads, _copy_interrupt_work())


def _max_pool2d_argmax(x, out, argmax, ksize, strides, dilations, pads, num_threads):
    """Driver: NHWC max pooling and the flat index ``(h*W + w)*C + c`` of each first maximum.

    Below ``POOL_SINGLE_THREAD_WORK`` compares one thread pools.
    """
    if out.size * ksize[0] * ksize[1] < _tuning.POOL_SINGLE_THREAD_WORK:
        num_threads = 1
    _bw.max_pool2d_argmax(x, out, argmax, ksize[0], ksize[1], strides[0], strides[1],
                          dilations[0], dilations[1], pads[0], pads[1], num_threads,
                          simd_level(), _tuning.INTERRUPT_WORK)


def _max_pool2d_backward(dy, flat_index, out, num_threads, images=1):
    """Driver: ``out = 0``, then ``dy[i]`` added at ``flat_index[i]``, one image per task.

    Below ``POOL_BACKWARD_SINGLE_THREAD_ELEMENTS`` elements written one thread scatters.
    """
    if out.size < _tuning.POOL_BACKWARD_SINGLE_THREAD_ELEMENTS:
        num_threads = 1
    _bw.max_pool2d_backward(dy, flat_index, out, images, num_threads, _copy_interrupt_work())


def _max_pool2d_grad(x, dy, out, ksize, strides, dilations, pads, num_threads):
    """Driver: ``out`` = the max pool's input gradient, the argmax found and used row by row.

    One task per image (below ``POOL_SINGLE_THREAD_WORK`` compares one thread works).
    With fewer images than threads, the argmax rows run in parallel first
    (:func:`_max_pool2d_argmax`), then the scatter: the same bits.
    """
    if dy.size * ksize[0] * ksize[1] < _tuning.POOL_SINGLE_THREAD_WORK:
        num_threads = 1
    N = x.shape[0]
    if 1 <= N < num_threads:
        pooled = np.empty(dy.shape, dtype=dy.dtype)
        idx = np.empty(dy.shape, dtype=np.int64)
        _max_pool2d_argmax(x, pooled, idx, ksize, strides, dilations, pads, num_threads)
        idx += (np.arange(N, dtype=np.int64) * (x.size // N)).reshape(N, 1, 1, 1)
        _max_pool2d_backward(dy.reshape(-1), idx.reshape(-1), out.reshape(-1), num_threads,
                             images=N)
        return
    _bw.max_pool2d_grad(x, dy, out, ksize[0], ksize[1], strides[0], strides[1], dilations[0],
                        dilations[1], pads[0], pads[1], num_threads, simd_level(),
                        _tuning.INTERRUPT_WORK)


def _conv2d_filter_grad_native(kind, x, dy, out, strides, dilations, pads, piece_rows, pieces,
                               num_threads):
    """Driver: ``out`` (KH, KW, Cg, O) = the filter gradient of ``kind`` (``'depthwise'``, ``'dense'``).

    ``piece_rows`` and ``pieces`` are :func:`fastconv._backward.native_filter_grad_pieces`'s;
    the pieces' partial sums go to a scratch buffer kept per Python thread.
    """
    KH, KW = out.shape[:2]
    part = _part_buffer(pieces * _bwc.part_size(kind, x.shape[3], dy.shape[3], KH, KW), x.dtype)
    _bwc.conv2d_filter_grad(kind, x, dy, out, part, strides[0], strides[1], dilations[0],
                            dilations[1], pads[0], pads[1], piece_rows, num_threads,
                            simd_level(), _tuning.INTERRUPT_WORK)


_scratch = threading.local()


def _part_buffer(size, dtype):
    """A flat scratch array of at least ``size`` elements of ``dtype``, kept per Python thread."""
    buf = getattr(_scratch, "part", None)
    if buf is None or buf.dtype != dtype or buf.size < size:
        buf = _scratch.part = np.empty(max(size, 1), dtype=dtype)
    return buf


if _bwc is not None:
    conv2d_filter_grad_native = _conv2d_filter_grad_native

if _bw is not None:
    col2im = _col2im
    max_pool2d_argmax = _max_pool2d_argmax
    max_pool2d_backward = _max_pool2d_backward
    if hasattr(_bw, "max_pool2d_grad"):   # a build before the fused pool backward lacks it
        max_pool2d_grad = _max_pool2d_grad


def _blas_info():
    """threadpoolctl's description of the BLAS SciPy's cython_blas calls."""
    libs = [lib for lib in blas_controller().info() if lib.get("user_api") == "blas"]
    scipy_libs = [lib for lib in libs if "scipy" in os.path.basename(
        os.path.dirname(lib.get("filepath", "")))]
    chosen = (scipy_libs or libs)[:1]
    if not chosen:
        return "unknown (threadpoolctl found no BLAS)"
    lib = chosen[0]
    library = os.path.basename(lib.get("filepath", "")) or "?"
    return (f"{lib.get('internal_api')} {lib.get('version')} ({library}, "
            f"{lib.get('architecture')}, {lib.get('threading_layer')}; held to 1 thread "
            f"inside fastconv's own threads)")


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
        "algorithms": ", ".join(BUILT_ALGORITHMS),
    }
