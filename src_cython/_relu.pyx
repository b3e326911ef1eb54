"""Compiled ReLU and its gradient (fastconv's "cython" backend).

``relu`` and ``relu_backward`` receive flat arrays already checked by their
callers (C-contiguous, one dtype, float32 or float64) and an explicit SIMD
level (``FC_SIMD_*`` of ``fc_cpu.h``); the kernels are in ``fc_relu.h``,
one body on fastconv's SIMD vocabulary compiled per level.  A small call runs
on the calling thread without entering a parallel region; a larger one is cut
into chunks of a fixed size (from the arguments, never from the thread count)
handed out dynamically to fastconv's thread pool, so that a thread slowed by
another process on its core does not hold the others up.  A long call runs in
pieces between which a pending signal (Ctrl-C) is noticed.  Every element is
computed by the same code whatever the thread count, so results are bitwise
identical for any ``num_threads``.
"""
from cpython.exc cimport PyErr_CheckSignals
from cpython.pycapsule cimport PyCapsule_GetPointer
from cython cimport floating
from libc.stdint cimport int64_t

from fastconv_c cimport fc_relu_f32_nt, fc_relu_f64_nt, fc_relu_grad_f32, fc_relu_grad_f64
from fc_parallel cimport RUN_CAPSULE_NAME, fc_run_fn

from . import _parallel

#: the process's thread pool (fc_parallel.h): tasks on the caller and persistent workers
cdef fc_run_fn _parallel_run = <fc_run_fn> PyCapsule_GetPointer(_parallel.RUN, RUN_CAPSULE_NAME)


def relu(const floating[::1] x,   # IN
         floating[::1] out,       # OUT (may be x itself)
         int num_threads, int simd_level, Py_ssize_t chunk, Py_ssize_t stream_bytes,
         stream=None, Py_ssize_t single_thread_elements=0, Py_ssize_t interrupt_elements=0):
    """``out = max(x, 0)`` elementwise; NaN stays NaN, -inf becomes 0.

    ``x`` and ``out`` are flat views of the same length; ``out`` may be the
    same buffer as ``x`` (in place).  Below ``single_thread_elements``
    elements the call runs on one thread with no parallel region; otherwise
    chunks of ``chunk`` elements are spread over ``num_threads`` threads
    (fastconv's thread pool, taken one at a time).  Pieces of about ``interrupt_elements``
    elements (whole chunks; 0: all at once) run one after the other, and a
    pending signal is noticed between them (``KeyboardInterrupt`` leaves
    ``out`` partly written).  Out of place, outputs of ``stream_bytes`` or
    more are written with non-temporal stores (``stream=None``);
    ``stream=True/False`` forces the choice.
    """
    if x.shape[0] != out.shape[0]:
        raise ValueError(f"out has {out.shape[0]} elements; expected x's {x.shape[0]}.")
    if x.shape[0] == 0:
        return
    _run(<const floating *> NULL, &x[0], &out[0], x.shape[0], num_threads, simd_level, chunk,
         stream_bytes, stream, single_thread_elements, interrupt_elements)


def relu_backward(const floating[::1] value,   # IN  the ReLU's input or output
                  const floating[::1] dy,      # IN  the upstream gradient
                  floating[::1] out,           # OUT (may be dy or value)
                  int num_threads, int simd_level, Py_ssize_t chunk, Py_ssize_t stream_bytes,
                  stream=None, Py_ssize_t single_thread_elements=0,
                  Py_ssize_t interrupt_elements=0):
    """``out = dy where value > 0, else +0``: the ReLU's gradient.

    A NaN ``value`` gives 0 (an ordered compare, as TensorFlow's ``ReluGrad``
    and PyTorch's ``threshold_backward``); a passed ``dy`` keeps its bits
    (-0.0, NaN).  Flat views of one length; ``out`` may be ``dy`` or
    ``value``.  Threads, pieces, Ctrl-C and streaming as for :func:`relu`.
    """
    cdef Py_ssize_t n = value.shape[0]
    if dy.shape[0] != n or out.shape[0] != n:
        raise ValueError(f"value, dy and out must have one length; got {n}, {dy.shape[0]} "
                         f"and {out.shape[0]}.")
    if n == 0:
        return
    _run(&value[0], &dy[0], &out[0], n, num_threads, simd_level, chunk, stream_bytes, stream,
         single_thread_elements, interrupt_elements)


cdef _run(const floating *pf, const floating *px, floating *py, Py_ssize_t n,
          int num_threads, int simd_level, Py_ssize_t chunk, Py_ssize_t stream_bytes,
          stream, Py_ssize_t single_thread_elements, Py_ssize_t interrupt_elements):
    """The ReLU (``pf`` NULL) or its gradient over ``n`` elements, in interruptible pieces."""
    if chunk < 1:
        chunk = 1
    cdef Py_ssize_t n_chunks = (n + chunk - 1) // chunk
    cdef Py_ssize_t start, stop, step
    cdef int nt = (n * <Py_ssize_t> sizeof(floating) >= stream_bytes) if stream is None \
        else bool(stream)
    if n < single_thread_elements:
        num_threads = 1
    if num_threads > n_chunks:   # never more threads than chunks
        num_threads = <int> n_chunks
    if num_threads < 1:
        num_threads = 1
    step = n
    if interrupt_elements > 0:
        step = max(interrupt_elements // chunk, 1) * chunk
    start = 0
    while start < n:
        stop = min(start + step, n)
        with nogil:
            _run_range(pf, px, py, start, stop, chunk, num_threads, simd_level, nt)
        start = stop
        if start < n:
            PyErr_CheckSignals()


cdef inline void _run_one(const floating *pf, const floating *px, floating *py,
                          Py_ssize_t first, Py_ssize_t size, int simd_level,
                          int nt) noexcept nogil:
    if pf == NULL:
        if floating is float:
            fc_relu_f32_nt(px + first, py + first, size, simd_level, nt)
        else:
            fc_relu_f64_nt(px + first, py + first, size, simd_level, nt)
    else:
        if floating is float:
            fc_relu_grad_f32(pf + first, px + first, py + first, size, simd_level, nt)
        else:
            fc_relu_grad_f64(pf + first, px + first, py + first, size, simd_level, nt)


cdef void _run_range(const floating *pf, const floating *px, floating *py, Py_ssize_t start,
                     Py_ssize_t stop, Py_ssize_t chunk, int num_threads, int simd_level,
                     int nt) noexcept nogil:
    """Elements ``[start, stop)``; ``start`` is a multiple of ``chunk``."""
    cdef Py_ssize_t n_chunks
    if num_threads <= 1:   # the calling thread alone: no parallel region
        _run_one(pf, px, py, start, stop - start, simd_level, nt)
        return
    cdef _range_ctx c
    c.pf, c.px, c.py = <const void *> pf, <const void *> px, <void *> py
    c.start, c.stop, c.chunk = start, stop, chunk
    c.simd_level, c.nt, c.is_double = simd_level, nt, floating is double
    n_chunks = (stop - start + chunk - 1) // chunk
    _parallel_run(_range_task, &c, n_chunks, num_threads)


ctypedef struct _range_ctx:
    const void *pf
    const void *px
    void *py
    Py_ssize_t start, stop, chunk
    int simd_level, nt, is_double


cdef int _range_task(void *p, int64_t task, int slot) noexcept nogil:
    """Chunk ``task`` of a ``_run_range`` call (a task of the thread pool)."""
    cdef _range_ctx *c = <_range_ctx *> p
    cdef Py_ssize_t first = c.start + task * c.chunk
    cdef Py_ssize_t size = c.stop - first
    if size > c.chunk:
        size = c.chunk
    if c.is_double:
        _run_one(<const double *> c.pf, <const double *> c.px, <double *> c.py, first, size,
                 c.simd_level, c.nt)
    else:
        _run_one(<const float *> c.pf, <const float *> c.px, <float *> c.py, first, size,
                 c.simd_level, c.nt)
    return 0
