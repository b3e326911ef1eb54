"""Compiled ReLU and its gradient (fastconv's "cython" backend).

``relu`` and ``relu_backward`` receive flat arrays already checked by their
callers (C-contiguous, one dtype, float32 or float64) and an explicit SIMD
level (``FC_SIMD_*`` of ``fc_cpu.h``); the kernels are in ``fc_relu.h``,
one body on fastconv's SIMD vocabulary compiled per level.  A small call runs
on the calling thread without entering a parallel region; a larger one is cut
into chunks of a fixed size (from the arguments, never from the thread count)
handed out dynamically over OpenMP threads, so that a thread slowed by
another process on its core does not hold the others up.  A long call runs in
pieces between which a pending signal (Ctrl-C) is noticed.  Every element is
computed by the same code whatever the thread count, so results are bitwise
identical for any ``num_threads``.
"""
from cpython.exc cimport PyErr_CheckSignals
from cython cimport floating
from cython.parallel cimport prange

from fastconv_c cimport fc_relu_f32_nt, fc_relu_f64_nt, fc_relu_grad_f32, fc_relu_grad_f64


def relu(const floating[::1] x,   # IN
         floating[::1] out,       # OUT (may be x itself)
         int num_threads, int simd_level, Py_ssize_t chunk, Py_ssize_t stream_bytes,
         stream=None, Py_ssize_t single_thread_elements=0, Py_ssize_t interrupt_elements=0):
    """``out = max(x, 0)`` elementwise; NaN stays NaN, -inf becomes 0.

    ``x`` and ``out`` are flat views of the same length; ``out`` may be the
    same buffer as ``x`` (in place).  Below ``single_thread_elements``
    elements the call runs on one thread with no parallel region; otherwise
    chunks of ``chunk`` elements are spread over ``num_threads`` OpenMP
    threads (dynamic schedule).  Pieces of about ``interrupt_elements``
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
    cdef Py_ssize_t i, first, size, n_chunks
    if num_threads <= 1:   # the calling thread alone: no parallel region
        _run_one(pf, px, py, start, stop - start, simd_level, nt)
        return
    n_chunks = (stop - start + chunk - 1) // chunk
    for i in prange(n_chunks, num_threads=num_threads, schedule="dynamic"):
        first = start + i * chunk
        size = stop - first
        if size > chunk:
            size = chunk
        _run_one(pf, px, py, first, size, simd_level, nt)
