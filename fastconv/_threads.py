"""Thread counts: one rule for every backend.

``num_threads=None`` means the process default: the value given to
:func:`set_num_threads`, else the environment variable
``FASTCONV_NUM_THREADS``, else 1 inside a task of a Dask worker (Dask
runs one task per worker thread and already supplies the parallelism; its
nanny sets ``OMP_NUM_THREADS=1`` for the same reason), else the cores
this process may run on (``os.sched_getaffinity``).  A negative count is
counted back from the available cores (-1 = all, -2 = all but one, never fewer than 1), as in
scikit-learn and joblib; 0 is an error.
"""
import contextlib
import numbers
import os
import sys
import threading

ENV_VAR = "FASTCONV_NUM_THREADS"
_default = None


def available_cores():
    """Number of CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _normalize(n, name):
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{name} must be an integer or None; got {n!r}.")
    n = int(n)
    if n == 0:
        raise ValueError(f"{name} must not be 0: use a positive count, or a negative one "
                         f"to count back from the {available_cores()} available cores.")
    if n < 0:
        n = max(available_cores() + 1 + n, 1)
    return n


def _from_env():
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {ENV_VAR}={raw!r} must be an integer.") from None
    return _normalize(value, ENV_VAR)


def _in_dask_task():
    """True inside a task run by a ``distributed`` worker (never imports distributed)."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return False
    try:
        distributed.get_worker()
    except (ValueError, AttributeError):
        return False
    return True


def set_num_threads(n):
    """Set the process-wide default thread count (``None`` restores the default)."""
    global _default
    _default = None if n is None else _normalize(n, "num_threads")


def get_num_threads():
    """The thread count a call with ``num_threads=None`` uses."""
    if _default is not None:
        return _default
    env = _from_env()
    if env is not None:
        return env
    return 1 if _in_dask_task() else available_cores()


def resolve_num_threads(num_threads):
    """Turn a per-call ``num_threads`` argument into a positive int."""
    if num_threads is None:
        return get_num_threads()
    return _normalize(num_threads, "num_threads")


# --------------------------------------------------------------------------- BLAS inside our threads
_blas_lock = threading.Lock()
_blas_users = 0          # calls inside single_threaded_blas() now, from any Python thread
_blas_limiter = None
_blas_controller = None


def blas_controller():
    """threadpoolctl's controller over the BLAS libraries loaded (created once).

    SciPy's ``cython_blas`` -- which the Cython GEMM path calls, and which
    NumPy's and Numba's ``np.dot`` share here -- is imported first so it is
    among them.
    """
    global _blas_controller
    if _blas_controller is None:
        import scipy.linalg.cython_blas  # noqa: F401
        from threadpoolctl import ThreadpoolController
        _blas_controller = ThreadpoolController()
    return _blas_controller


@contextlib.contextmanager
def single_threaded_blas():
    """Hold BLAS to one thread while fastconv's own threads call it.

    Two BLAS threads under each of two OpenMP or Numba threads halved GEMM
    throughput on this project's machine (scikit-learn's k-means limits BLAS
    the same way, with threadpoolctl).  A counter under a lock makes
    overlapping calls from several Python threads share one limit: the first
    call in sets it, the last call out restores the previous thread counts.
    """
    global _blas_users, _blas_limiter
    with _blas_lock:
        if _blas_users == 0:
            _blas_limiter = blas_controller().limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None
