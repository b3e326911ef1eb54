"""Direct 2-D convolution kernels for NHWC activations (compiled as ``fastconv._conv_direct``).

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
   otherwise -- over OpenMP threads with a
   static ``prange``, with denormals flushed to zero in every thread;
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

from cython cimport floating
from cython.parallel cimport parallel, prange

cdef extern from "fc_cpu.h" nogil:
    int fc_cpu_simd_level()

cdef extern from "fc_conv_direct.h" nogil:
    ctypedef struct fc_conv_args:
        const void *x
        const void *w
        const void *bias
        void *out
        int N, H, W, C, OH, OW, O, KH, KW, Cg, Og, groups
        int SH, SW, DH, DW, pt, pl
        int relu
        int kind
        int level
        int is_double
        int packed
        int OB
        int nb
        int block_major
        int RG
        int CC
    int FC_KIND_GENERAL
    int FC_KIND_DEPTHWISE
    int FC_KIND_WIDTH
    Py_ssize_t fc_conv_direct_items(const fc_conv_args *a)
    void fc_conv_direct_item(const fc_conv_args *a, Py_ssize_t item)
    int fc_conv_block_channels(int level, int is_double)
    int fc_conv_vector_lanes(int level, int is_double)
    void fc_pack_filters(const void *w, void *packed, size_t size, int KH, int KW, int Cg,
                         int O, int groups, int OB, int nb)
    unsigned int fc_ftz_enter()
    void fc_ftz_leave(unsigned int saved)

# filters larger than this are walked block by block (see fc_conv_direct.h)
cdef enum:
    L2_SHARE_BYTES = 1 << 20
# a block of filters larger than this is applied in chunks of input channels of about
# this size (3x3 x 128 channels x 64 float32 outputs: 288 KB, in L2 with the input rows),
# each over several output rows.  Measured on 1 thread: 64-channel chunks ran 8x56x56
# 128->128 3x3/2 at 101 GFLOP/s and 8x14x14 256->256 3x3 at 113, 128-channel ones at
# 106 and 115; smaller chunks (8 to 32 channels, to keep them in L1) were slower.
cdef enum:
    CHUNK_BYTES = 9 * 128 * 64 * 4
# output pixels a work item should cover when the filters are chunked
cdef enum:
    CHUNK_MIN_PIXELS = 48
# output rows of a general work item: its border columns run as tiles of up to this
# many rows (one pixel per row) instead of one pixel at a time
cdef enum:
    BORDER_ROWS = 6

KIND_NAMES = {FC_KIND_GENERAL: "general", FC_KIND_DEPTHWISE: "depthwise",
              FC_KIND_WIDTH: "width"}


cdef void _run(const fc_conv_args *a, int num_threads) noexcept nogil:
    """Run every work item of ``a``, split statically over ``num_threads`` OpenMP threads."""
    cdef Py_ssize_t i
    cdef Py_ssize_t n_items = fc_conv_direct_items(a)
    cdef unsigned int saved = 0
    if num_threads > n_items:
        num_threads = <int>n_items
    if num_threads <= 1:
        saved = fc_ftz_enter()
        for i in range(n_items):
            fc_conv_direct_item(a, i)
        fc_ftz_leave(saved)
        return
    with parallel(num_threads=num_threads):
        saved = fc_ftz_enter()
        for i in prange(n_items, schedule="static"):
            fc_conv_direct_item(a, i)
        fc_ftz_leave(saved)


def kernel_kind(int C, int O, int groups, int SW):
    """Name of the kernel :func:`conv2d_direct` uses for these sizes.

    ``"width"`` for a single-channel filter (C == O == 1, SW == 1), ``"depthwise"``
    for one input channel per group and a channel multiplier O // groups below 16
    (vectors across channels; the input is gathered when the multiplier is above 1),
    ``"general"`` otherwise.
    """
    return KIND_NAMES[_kind(C, O, groups, SW)]


cdef int _kind(int C, int O, int groups, int SW) noexcept:
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
                  int groups, bint relu, int num_threads, int simd_level):
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
        OpenMP threads (values below 1 mean 1).
    simd_level : int
        2 = AVX-512, 1 = AVX2 + FMA, 0 = portable C.  Levels above what this CPU
        supports are lowered to the CPU's level (never a SIGILL).

    Notes
    -----
    Shapes are assumed consistent (checked by :mod:`fastconv._ops`).  Results do
    not depend on ``num_threads``.  Denormal numbers are flushed to zero during
    the call (MXCSR FTZ/DAZ), as oneDNN does, to avoid their large slowdown.
    """
    cdef int N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef int KH = w.shape[0], KW = w.shape[1], Cg = w.shape[2], O = w.shape[3]
    cdef int OH = out.shape[1], OW = out.shape[2]
    cdef fc_conv_args a
    cdef int level = simd_level
    cdef int lanes
    if N == 0 or OH == 0 or OW == 0 or O == 0:
        return
    if KH == 0 or KW == 0 or Cg == 0 or H == 0 or W == 0:
        # an empty sum: only the bias (and ReLU) remain
        out_arr = np.asarray(out)
        out_arr[...] = 0 if bias is None else np.asarray(bias)
        if relu:
            np.maximum(out_arr, 0, out=out_arr)
        return
    if level > fc_cpu_simd_level():
        level = fc_cpu_simd_level()
    if level < 0:
        level = 0
    if num_threads < 1:
        num_threads = 1

    a.N, a.H, a.W, a.C, a.OH, a.OW, a.O = N, H, W, C, OH, OW, O
    a.KH, a.KW, a.Cg, a.Og, a.groups = KH, KW, Cg, O // groups, groups
    a.SH, a.SW, a.DH, a.DW, a.pt, a.pl = SH, SW, DH, DW, pad_top, pad_left
    a.relu = relu
    a.level = level
    a.is_double = floating is double
    a.kind = _kind(C, O, groups, SW)
    a.OB = fc_conv_block_channels(level, a.is_double)
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

    a.RG = 1
    a.CC = Cg
    cdef Py_ssize_t tap_bytes = <Py_ssize_t>KH * KW * a.OB * sizeof(floating)
    if a.kind == FC_KIND_GENERAL:
        a.RG = min(OH, BORDER_ROWS)
        if tap_bytes * Cg > CHUNK_BYTES:
            a.CC = max(1, CHUNK_BYTES // tap_bytes)
            a.RG = min(OH, max(a.RG, (CHUNK_MIN_PIXELS + OW - 1) // OW))
        # keep at least 4 work items per thread (RG never changes a reduction order)
        while a.RG > 1 and N * ((OH + a.RG - 1) // a.RG) * groups * a.nb < 4 * num_threads:
            a.RG -= 1
    # all filter blocks larger than half of a 2 MB L2: walk one block at a time
    a.block_major = (a.kind == FC_KIND_GENERAL and a.nb > 1 and
                     <Py_ssize_t>groups * a.nb * tap_bytes * Cg > L2_SHARE_BYTES)

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
    with nogil:
        _run(&a, num_threads)
