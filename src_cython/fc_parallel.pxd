# Types of fastconv's thread pool (src_cython/_parallel.pyx, fc_parallel.h), shared by the
# modules that run their tasks on it.  A module gets the pool's entry point once, at import:
#
#     from . import _parallel
#     cdef fc_run_fn parallel_run = <fc_run_fn> PyCapsule_GetPointer(_parallel.RUN,
#                                                                    RUN_CAPSULE_NAME)
#
# so that every module uses the same workers (one pool per process).
from libc.stdint cimport int64_t

#: one task: ``fn(ctx, task, slot)``; ``slot`` (0 = the calling thread) is stable within a
#: call and below its ``num_threads``; nonzero asks the call to stop (tasks not yet started
#: are skipped)
ctypedef int (*fc_task_fn)(void *ctx, int64_t task, int slot) noexcept nogil

#: ``run(fn, ctx, n_tasks, num_threads)``: every task once, on the calling thread and up to
#: ``num_threads - 1`` workers; returns 1 when a task asked to stop, else 0
ctypedef int (*fc_run_fn)(fc_task_fn fn, void *ctx, int64_t n_tasks,
                          int num_threads) noexcept nogil

cdef extern from *:
    """
    #define FC_PARALLEL_RUN_CAPSULE "fastconv._backends.cython._parallel.run"
    """
    const char *RUN_CAPSULE_NAME "FC_PARALLEL_RUN_CAPSULE"
