"""Direct 2-D convolution kernels for NHWC activations (the compiled backend's ``_conv_direct``).

One public entry point, :func:`conv2d_direct`, called by the Cython backend
driver on already-validated arrays.  It computes::

    out[n, oh, ow, o] = bias[o] + sum_{kh, kw, c} x[n, oh*SH - pad_top + kh*DH,
                                                    ow*SW - pad_left + kw*DW, g*Cg + c]
                                                  * w[kh, kw, c, o],     g = o // (O // groups)

with zero outside the input, then ReLU when asked.  Three layers:

1. :func:`conv2d_direct` (holds the GIL) chooses the kernel kind, packs the
   filters into output-channel blocks (``fc_pack_filters``) when the HWIO layout
   does not fit the vector width or there are several blocks, and fills an
   ``fc_conv_args`` record;
2. ``_run`` (``noexcept nogil``) splits the work items -- a few output rows
   of one image and one block of output channels (general kind), one output row
   otherwise -- into chunks run by fastconv's thread pool (``_parallel``),
   between which a pending signal is noticed;
3. the ``static inline`` C micro-kernels of ``fc_conv_direct.h``: a
   register-blocked tile of output pixels x output-channel vectors (the loop nest
   of oneDNN's AVX-512 direct convolution and of Zhang et al., ICML 2018), a
   depthwise kernel vectorized across channels, and a single-channel kernel
   vectorized across the output width (as OpenCV's ``filter2D``), each for
   AVX-512, AVX2+FMA and portable C.

No output element's reduction is ever split between threads, so the result is
bitwise identical for every thread count.
"""
import numpy as np

from cpython.exc cimport PyErr_CheckSignals
from cpython.pycapsule cimport PyCapsule_GetPointer
from cython cimport floating

from libc.stdint cimport int64_t, uintptr_t

from fc_parallel cimport RUN_CAPSULE_NAME, fc_run_fn

from fastconv_c cimport (FC_KIND_DEPTHWISE, FC_KIND_GENERAL, FC_KIND_WIDTH, fc_conv_args,
                         fc_conv_block_channels, fc_conv_direct_items, fc_conv_direct_kernel,
                         fc_conv_dw_block_channels, fc_conv_item_fn, fc_conv_size_bytes,
                         fc_conv_vector_lanes, fc_cpu_simd_level,
                         fc_pack_filters)

from . import _parallel

#: the process's thread pool (fc_parallel.h): tasks on the caller and persistent workers
cdef fc_run_fn _parallel_run = <fc_run_fn> PyCapsule_GetPointer(_parallel.RUN, RUN_CAPSULE_NAME)

#: the largest kernel size, channel count per group, stride, dilation or padding the
#: kernels take (they are C ints; every size and offset derived from them is 64-bit)
INT_MAX = 2147483647


def size_field_bytes():
    """``sizeof`` of the size fields (N, H, W, C, OH, OW, O) of the C ``fc_conv_args``."""
    return fc_conv_size_bytes()

KIND_NAMES = {FC_KIND_GENERAL: "general", FC_KIND_DEPTHWISE: "depthwise",
              FC_KIND_WIDTH: "width"}


cdef extern from "Python.h":
    # the same function, its -1 not turned into a Python exception check here
    int _check_signals_raw "PyErr_CheckSignals" () noexcept


cdef int _signal_pending() noexcept with gil:
    """1 when a signal handler raised (the exception stays set for the caller), else 0."""
    return 1 if _check_signals_raw() < 0 else 0


#: multiply-adds a dynamically scheduled chunk of work items holds at least
cdef double MIN_CHUNK_WORK = 65536.0


ctypedef struct _run_ctx:
    const fc_conv_args *a
    fc_conv_item_fn kernel
    Py_ssize_t n_items, chunk
    double item_work, interrupt_work, done


cdef int _run_task(void *p, int64_t task, int slot) noexcept nogil:
    """Task ``task`` of the pool: items ``[task * chunk, (task + 1) * chunk)``.

    The calling thread (slot 0) looks at pending signals after each
    ``interrupt_work`` multiply-adds it has run; 1 (stop the call) when a
    handler raised.
    """
    cdef _run_ctx *c = <_run_ctx *> p
    cdef Py_ssize_t i, first = task * c.chunk
    cdef Py_ssize_t last = first + c.chunk
    if last > c.n_items:
        last = c.n_items
    for i in range(first, last):
        c.kernel(c.a, i)
        if slot == 0:
            c.done = c.done + c.item_work
            if c.done >= c.interrupt_work:
                c.done = 0.0
                if _signal_pending():
                    return 1
    return 0


cdef int _run(const fc_conv_args *a, int num_threads, double item_work,
              double interrupt_work) except -1 nogil:
    """Run every work item of ``a`` on ``num_threads`` threads.

    Small chunks of items (one item, or as many as make ``MIN_CHUNK_WORK``
    multiply-adds) are the tasks of fastconv's thread pool (``_parallel``):
    the calling thread and up to ``num_threads - 1`` workers take them one
    at a time, and the call returns once every chunk is done, so a thread
    slowed down (a busy core) holds the call back by one chunk at most, and
    one that has not woken up yet not at all.  The calling thread takes the
    GIL back after each ``interrupt_work`` multiply-adds it has run, to notice
    a pending signal: Ctrl-C then raises ``KeyboardInterrupt`` at once (the
    remaining items are skipped, ``out`` is left partly written).  Items are
    independent, so the result does not depend on which thread runs which.
    """
    cdef Py_ssize_t i, n_items = fc_conv_direct_items(a)
    cdef fc_conv_item_fn kernel = fc_conv_direct_kernel(a)   # chosen once per call
    cdef int nt = num_threads if num_threads < n_items else <int>n_items
    cdef double done = 0.0
    cdef _run_ctx c
    # items per dynamic chunk: enough work to amortize taking one (a row of a 1-channel
    # image is a few thousand multiply-adds), but at least 4 chunks per thread
    cdef Py_ssize_t chunk = 1
    if item_work > 0 and item_work < MIN_CHUNK_WORK:
        chunk = <Py_ssize_t>(MIN_CHUNK_WORK / item_work)
    if nt > 1 and chunk > n_items // (4 * nt):
        chunk = n_items // (4 * nt)
    if chunk < 1:
        chunk = 1
    if nt <= 1:
        for i in range(n_items):
            kernel(a, i)
            done += item_work
            if done >= interrupt_work and i + 1 < n_items:
                done = 0.0
                with gil:
                    PyErr_CheckSignals()
        return 0
    c.a, c.kernel, c.n_items, c.chunk = a, kernel, n_items, chunk
    c.item_work, c.interrupt_work, c.done = item_work, interrupt_work, 0.0
    if _parallel_run(_run_task, &c, (n_items + chunk - 1) // chunk, nt):
        return -1
    return 0


def kernel_kind(Py_ssize_t C, Py_ssize_t O, int groups, int SW):
    """Name of the kernel :func:`conv2d_direct` uses for these sizes.

    ``"width"`` for a single-channel filter (C == O == 1, SW == 1), ``"depthwise"``
    for one input channel per group and a channel multiplier O // groups below 16
    (vectors across channels; the input is gathered when the multiplier is above 1),
    ``"general"`` otherwise.
    """
    return KIND_NAMES[_kind(C, O, groups, SW)]


cdef int _kind(Py_ssize_t C, Py_ssize_t O, int groups, int SW) noexcept:
    if C == 1 and O == 1 and groups == 1 and SW == 1:
        return FC_KIND_WIDTH
    if C == groups and groups > 1 and O // groups < 16:
        return FC_KIND_DEPTHWISE
    return FC_KIND_GENERAL


def conv2d_direct(const floating[:, :, :, ::1] x,       # IN  (N, H, W, C)
                  const floating[:, :, :, ::1] w,       # IN  (KH, KW, C // groups, O)
                  const floating[::1] bias,             # IN  (O,) or None
                  floating[:, :, :, ::1] out,           # OUT (N, OH, OW, O)
                  int SH, int SW, int DH, int DW, int pad_top, int pad_left,
                  int groups, bint relu, int num_threads, int simd_level, tuning):
    """Direct convolution of NHWC ``x`` with HWIO ``w`` into ``out`` (fully overwritten).

    Parameters
    ----------
    x : float32 or float64 array (N, H, W, C), C-contiguous
    w : array (KH, KW, C // groups, O) of the same dtype, C-contiguous
    bias : array (O,) of the same dtype, or None
    out : array (N, OH, OW, O) of the same dtype, C-contiguous
    SH, SW, DH, DW : int
        Strides and dilations.
    pad_top, pad_left : int
        Zero padding before the first row/column; the bottom/right padding is
        whatever OH/OW imply.
    groups : int
        Input and output channels split into ``groups`` independent convolutions.
    relu : bool
        Apply ``max(0, .)`` after the bias (NaN stays NaN).
    num_threads : int
        Threads (values below 1 mean 1).
    simd_level : int
        2 = AVX-512, 1 = AVX2 + FMA, 0 = portable C.  Levels above what this CPU
        supports are lowered to the CPU's level (never a SIGILL).
    tuning : mapping
        ``block_major_bytes``, ``chunk_bytes``, ``chunk_min_pixels``,
        ``border_rows``, ``interrupt_work``, ``single_thread_work`` and
        ``stream_bytes`` (see :mod:`fastconv._tuning`): how work items are cut,
        in which order filter blocks are walked, and from which output size an
        ``out`` aligned to half a vector or more is written with non-temporal
        stores.  They never change the
        result for a given machine and never depend on the thread count.

    Returns
    -------
    bool
        True when ``out`` was written with non-temporal (streaming) stores.

    Notes
    -----
    Shapes are assumed consistent (checked by :mod:`fastconv._ops`).  Results do
    not depend on ``num_threads``.  Denormal numbers are computed as IEEE 754
    says (no flush to zero), as in every other fastconv kernel and backend.
    """
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t O = w.shape[3], OH = out.shape[1], OW = out.shape[2]
    for name, value in (("filters.shape[0] (KH)", w.shape[0]), ("filters.shape[1] (KW)", w.shape[1]),
                        ("filters.shape[2] (C_in / groups)", w.shape[2]),
                        ("C_out / groups", O // max(groups, 1))):
        if value > INT_MAX:
            raise ValueError(f"{name} = {value} is too large for the direct kernel (at most "
                             f"{INT_MAX}); use algorithm='im2col'.")
    cdef int KH = <int>w.shape[0], KW = <int>w.shape[1], Cg = <int>w.shape[2]
    cdef fc_conv_args a
    cdef int level = simd_level
    cdef int lanes
    if N == 0 or OH == 0 or OW == 0 or O == 0:
        return False
    if KH == 0 or KW == 0 or Cg == 0 or H == 0 or W == 0:
        # an empty sum: only the bias (and ReLU) remain
        out_arr = np.asarray(out)
        out_arr[...] = 0 if bias is None else np.asarray(bias)
        if relu:
            np.maximum(out_arr, 0, out=out_arr)
        return False
    if level > fc_cpu_simd_level():
        level = fc_cpu_simd_level()
    if level < 0:
        level = 0
    if num_threads < 1:
        num_threads = 1

    a.N, a.H, a.W, a.C, a.OH, a.OW, a.O = N, H, W, C, OH, OW, O
    a.KH, a.KW, a.Cg, a.Og, a.groups = KH, KW, Cg, <int>(O // groups), groups
    a.SH, a.SW, a.DH, a.DW, a.pt, a.pl = SH, SW, DH, DW, pad_top, pad_left
    a.relu = relu
    a.level = level
    a.is_double = floating is double
    a.kind = _kind(C, O, groups, SW)
    if a.kind == FC_KIND_DEPTHWISE:
        a.OB = fc_conv_dw_block_channels(level, a.is_double)
    else:
        a.OB = fc_conv_block_channels(level, a.is_double, KH, KW, Cg)
    lanes = fc_conv_vector_lanes(level, a.is_double)
    a.packed = 0
    a.nb = 1
    packed = None
    if a.kind == FC_KIND_GENERAL:
        a.nb = (a.Og + a.OB - 1) // a.OB
        if a.Og % lanes != 0 or a.nb > 1:
            # [groups][nb][KH][KW][Cg][OB], zero past Og: every (kh, kw, c) of a block
            # is OB contiguous weights, whatever O is
            packed = np.empty(<Py_ssize_t>groups * a.nb * KH * KW * Cg * a.OB,
                              dtype=np.float64 if floating is double else np.float32)
            a.packed = 1

    cdef Py_ssize_t block_major_bytes = tuning["block_major_bytes"]
    cdef Py_ssize_t chunk_bytes = tuning["chunk_bytes"]
    cdef int chunk_min_pixels = tuning["chunk_min_pixels"]
    cdef int border_rows = tuning["border_rows"]
    cdef double interrupt_work = tuning["interrupt_work"]
    cdef double single_thread_work = tuning["single_thread_work"]
    cdef double stream_bytes = tuning["stream_bytes"]
    a.RG = 1
    a.CC = Cg
    cdef Py_ssize_t tap_bytes = <Py_ssize_t>KH * KW * a.OB * sizeof(floating)
    if a.kind == FC_KIND_GENERAL:
        # border columns run as tiles down up to border_rows rows of a work item
        a.RG = min(OH, border_rows)
        if tap_bytes * Cg > chunk_bytes:
            # filters applied in chunks of input channels, each over several rows
            a.CC = max(1, chunk_bytes // tap_bytes)
            a.RG = min(OH, max(a.RG, (chunk_min_pixels + OW - 1) // OW))
        # keep at least 4 work items per thread (RG never changes a reduction order)
        while a.RG > 1 and N * ((OH + a.RG - 1) // a.RG) * groups * a.nb < 4 * num_threads:
            a.RG -= 1
    # filters too large to share L2: walk one output-channel block at a time
    a.block_major = (a.kind == FC_KIND_GENERAL and a.nb > 1 and
                     <Py_ssize_t>groups * a.nb * tap_bytes * Cg > block_major_bytes)

    cdef floating[::1] packed_view
    if packed is not None:
        packed_view = packed
        with nogil:
            fc_pack_filters(&w[0, 0, 0, 0], &packed_view[0], sizeof(floating), KH, KW, Cg, O,
                            groups, a.OB, a.nb)
        a.w = <const void *>&packed_view[0]
    else:
        a.w = <const void *>&w[0, 0, 0, 0]
    a.x = <const void *>&x[0, 0, 0, 0]
    a.bias = NULL
    if bias is not None:
        a.bias = <const void *>&bias[0]
    a.out = <void *>&out[0, 0, 0, 0]
    # non-temporal stores for outputs too large to stay in cache, when every full vector
    # of the output is aligned (an aligned out, whole vectors per pixel) and each
    # element is written once (no channel chunks re-reading partial sums); depthwise and
    # the unrolled 3x3 windows of 1 or 3 input channels only (the other windows' tiles
    # store plainly, see fc_conv_direct_impl.h).  Mode 1: out vector-aligned; mode 2:
    # only half-vector aligned (NumPy's large arrays start 16 bytes past a page), each
    # vector streamed as two halves.  The general kernel writes each tile's pixels in
    # order, so its lines are completed one after the other whatever the alignment;
    # the depthwise kernel writes one 64-byte channel block of every pixel of a tile
    # before the next block, which completes whole lines only when out is cache-line
    # aligned (otherwise every line is left half-written in the write-combining buffers
    # until the next block: slower than plain stores), so it streams only then.
    a.stream = 0
    if (level > 0 and a.CC == Cg and O % lanes == 0
            and (a.kind == FC_KIND_DEPTHWISE
                 or (a.kind == FC_KIND_GENERAL and KH == 3 and KW == 3
                     and (Cg == 1 or Cg == 3)))
            and <double>N * OH * OW * O * sizeof(floating) >= stream_bytes):
        if a.kind == FC_KIND_DEPTHWISE:
            if (<uintptr_t>a.out) % 64 == 0:
                a.stream = 1
        elif (<uintptr_t>a.out) % (lanes * sizeof(floating)) == 0:
            a.stream = 1
        elif (<uintptr_t>a.out) % (lanes * sizeof(floating) // 2) == 0:
            a.stream = 2
    # one thread, no parallel region, for calls of little work (same result)
    cdef Py_ssize_t n_items = fc_conv_direct_items(&a)
    cdef double work = <double>N * OH * OW * O * KH * KW * Cg
    if work < single_thread_work:
        num_threads = 1
    cdef double item_work = work / max(n_items, 1)
    with nogil:
        _run(&a, num_threads, item_work, interrupt_work)
    return a.stream != 0
