"""fastconv's thread pool (the compiled backend's ``_parallel``).

The compiled kernels split a call into tasks whose boundaries depend on the
shape only; :data:`RUN` (a capsule holding ``fc_parallel_run`` of
``fc_parallel.h``) runs them on the calling thread and up to ``num_threads -
1`` persistent worker threads, which claim tasks from one atomic counter.
The call returns as soon as every task has completed: a worker whose core is
taken by another process, and that wakes after the tasks are gone, does not
hold the call back, which an OpenMP parallel region (whose end waits for
every thread of its team) does.  Idle workers spin for
``POOL_SPIN_COUNT`` pause iterations (:mod:`fastconv._tuning`) and then
sleep.  One pool serves every module of the process; a call made while
another Python thread's call holds the workers runs its tasks on its own
thread.  After ``fork`` the child starts with no workers and creates them
when first needed.  Which thread runs a task never changes its result.
"""
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport int64_t

from fc_parallel cimport RUN_CAPSULE_NAME

cdef extern from "fc_parallel.h" nogil:
    ctypedef int (*c_task_fn "fc_task_fn")(void *ctx, int64_t task, int slot) noexcept
    int fc_parallel_run(c_task_fn fn, void *ctx, int64_t n_tasks, int num_threads) noexcept
    void fc_parallel_set_spin(long spin) noexcept
    int fc_parallel_workers() noexcept

#: the pool's entry point for the other compiled modules (``fc_run_fn`` of fc_parallel.pxd)
RUN = PyCapsule_New(<void *> fc_parallel_run, RUN_CAPSULE_NAME, NULL)


def set_spin_count(long count):
    """Pause iterations an idle worker (or a caller waiting for the last tasks) spins
    before it sleeps."""
    fc_parallel_set_spin(count)


def worker_count():
    """Worker threads this process has started so far (0 in a fresh ``fork`` child)."""
    return fc_parallel_workers()
