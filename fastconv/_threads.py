"""Thread counts: one rule for every backend.

``num_threads=None`` means the process default: the value given to
:func:`set_num_threads`, else the environment variable
``FASTCONV_NUM_THREADS``, else 1 inside a task of a Dask worker (Dask
runs one task per worker thread and already supplies the parallelism; its
nanny sets ``OMP_NUM_THREADS=1`` for the same reason), else the cores
this process may run on (``os.sched_getaffinity``).  A negative count is
counted back from the available cores (-1 = all, -2 = all but one, never fewer than 1), as in
scikit-learn and joblib; 0 is an error.

Clamping
--------
Whatever its source (the argument, :func:`set_num_threads` or the
environment variable), a count is then limited to
:func:`max_num_threads`, the available cores times
:data:`THREADS_PER_CORE` -- more threads than that only add scheduling
cost.  A count above ``max(MAX_NUM_THREADS, max_num_threads())`` is taken
for a mistake (a size passed as a thread count) and raises ``ValueError``
naming ``num_threads``.  Each kernel further uses at most one thread per
work item.  No kernel's result depends on the thread count, so clamping
never changes a result.

After ``fork``
--------------
GNU OpenMP (libgomp) keeps its thread team across ``fork`` but not its
threads, so an OpenMP region with more than one thread in a forked child
waits forever.  A child created by ``os.fork`` (``multiprocessing``'s
"fork" start method, ``ProcessPoolExecutor`` on Linux before Python 3.14)
therefore runs every fastconv call on one thread, whatever is asked
(:func:`in_forked_child`); use the "spawn" or "forkserver" start methods
for multi-threaded workers.  The locks of this module are re-created in the
child, in case the fork happened while another thread held them.
"""
import contextlib
import numbers
import os
import sys
import threading

from . import _tuning

ENV_VAR = "FASTCONV_NUM_THREADS"
#: threads per available core at most (a little oversubscription is harmless)
THREADS_PER_CORE = 4
#: counts above this (or above :func:`max_num_threads`, if larger) are an error
MAX_NUM_THREADS = 4096
_default = None
_forked_child = False


def _environ_reader():
    """A function ``name -> str`` reading the environment ('' when unset), as ``os.environ``.

    ``os.environ.get`` of an unset variable raises and catches a ``KeyError``
    inside, which costs more than the rest of a tiny call's checks; CPython's
    mapping keeps the encoded variables in a dict (updated by every assignment
    to ``os.environ``), read here directly when it exists.
    """
    env = os.environ
    data = getattr(env, "_data", None)
    encodekey = getattr(env, "encodekey", None)
    decodevalue = getattr(env, "decodevalue", None)
    if not isinstance(data, dict) or encodekey is None or decodevalue is None:
        return lambda name: os.environ.get(name, "")
    keys = {}

    def read(name):
        if os.environ is not env:   # replaced wholesale: read the new one the usual way
            return os.environ.get(name, "")
        key = keys.get(name)
        if key is None:
            key = keys[name] = encodekey(name)
        raw = data.get(key)
        return "" if raw is None else decodevalue(raw)
    return read


#: ``environ_value(name)``: the environment variable ``name``, or '' when unset
environ_value = _environ_reader()


def shorten_openmp_spins():
    """Make idle OpenMP threads sleep soon (``GOMP_SPINCOUNT``, :mod:`fastconv._tuning`).

    Called before fastconv's compiled kernels (or Numba's ``omp`` layer) load the
    GNU OpenMP runtime, which reads its environment once, when it loads.  Left
    alone when the user set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``, and
    without effect when the runtime was loaded before.  Results do not change.
    """
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = str(_tuning.OPENMP_SPIN_COUNT)


def available_cores():
    """Number of CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def max_num_threads():
    """The most threads a call uses: the available cores times :data:`THREADS_PER_CORE`.

    1 in a child process created by ``fork`` (see :func:`in_forked_child`).
    """
    if _forked_child:
        return 1
    return available_cores() * THREADS_PER_CORE


def in_forked_child():
    """True in a process created by ``os.fork`` from one that had imported fastconv."""
    return _forked_child


def _normalize(n, name, source=None):
    """Validate a thread count from ``source`` (default: the parameter ``name``)."""
    where = f"{source}: " if source else ""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{where}{name} must be an integer or None; got {n!r}.")
    n = int(n)
    if n == 0:
        raise ValueError(f"{where}{name} must not be 0: use a positive count, or a negative "
                         f"one to count back from the {available_cores()} available cores.")
    if n < 0:
        n = max(available_cores() + 1 + n, 1)
    limit = max(MAX_NUM_THREADS, available_cores() * THREADS_PER_CORE)
    if n > limit:
        raise ValueError(f"{where}{name}={n} is not a usable thread count; expected at most "
                         f"{limit} (this process may run on {available_cores()} cores; counts "
                         f"above {available_cores() * THREADS_PER_CORE} are lowered to that).")
    return n


def _clamp(n):
    return min(n, max_num_threads())


def _from_env():
    raw = environ_value(ENV_VAR).strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {ENV_VAR}={raw!r} must be an integer "
                         f"(num_threads).") from None
    return _normalize(value, "num_threads", f"environment variable {ENV_VAR}={raw!r}")


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
    """Set the process-wide default thread count (``None`` restores the default).

    Raises ``ValueError`` for 0 and for absurd counts (see the module
    docstring); counts above :func:`max_num_threads` are accepted and lowered
    to it when used.
    """
    global _default
    _default = None if n is None else _normalize(n, "num_threads", "set_num_threads")


def get_num_threads():
    """The thread count a call with ``num_threads=None`` uses (clamped)."""
    if _default is not None:
        return _clamp(_default)
    env = _from_env()
    if env is not None:
        return _clamp(env)
    if _in_dask_task() or _forked_child:
        return 1
    return available_cores()   # within the clamp (cores x THREADS_PER_CORE) by definition


def resolve_num_threads(num_threads):
    """Turn a per-call ``num_threads`` argument into a positive int, clamped."""
    if num_threads is None:
        return get_num_threads()
    return _clamp(_normalize(num_threads, "num_threads"))


# --------------------------------------------------------------------------- BLAS inside our threads
_blas_lock = threading.Lock()
_blas_users = 0          # calls inside single_threaded_blas() now, from any Python thread
_blas_limiter = None     # threadpoolctl limiter over the libraries not set directly
_blas_saved = None       # [(set_num_threads, previous count)] of the libraries set directly
_blas_controller = None
_blas_direct = None      # [(set, get)] ctypes functions of each process-wide OpenBLAS
_blas_others = None      # threadpoolctl controller over every other BLAS (or None)

_OPENBLAS_AFFIXES = [(p, s) for p in ("", "scipy_") for s in ("", "64_", "_64")]


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


def _openblas_functions(lib):
    """``(openblas_set_num_threads, openblas_get_num_threads)`` of one library, or None."""
    for prefix, suffix in _OPENBLAS_AFFIXES:
        set_name = f"{prefix}openblas_set_num_threads{suffix}"
        get_name = f"{prefix}openblas_get_num_threads{suffix}"
        if hasattr(lib.dynlib, set_name) and hasattr(lib.dynlib, get_name):
            import ctypes
            setter = getattr(lib.dynlib, set_name)
            setter.argtypes, setter.restype = [ctypes.c_int], None
            getter = getattr(lib.dynlib, get_name)
            getter.argtypes, getter.restype = [], ctypes.c_int
            return setter, getter
    return None


def _blas_split():
    """Sort the BLAS libraries into those set directly and the rest (done once).

    An OpenBLAS built with its own pthreads pool (not OpenMP) has one thread
    count for the whole process.  threadpoolctl lets only the first Python
    thread that ever limited it change that count and silently ignores the
    others, so a limit asked for from any other thread would not hold.  Such
    libraries are therefore set through OpenBLAS's own
    ``openblas_set_num_threads``, process-wide, under this module's counter.
    Every other BLAS (OpenMP builds, MKL, BLIS) goes through threadpoolctl.
    """
    global _blas_direct, _blas_others
    if _blas_direct is None:
        controller = blas_controller()
        direct, other_paths = [], []
        for lib in controller.lib_controllers:
            if lib.user_api != "blas":
                continue
            funcs = None
            if lib.internal_api == "openblas" and getattr(lib, "threading_layer", "") != "openmp":
                funcs = _openblas_functions(lib)
            if funcs is not None:
                direct.append(funcs)
            else:
                other_paths.append(lib.filepath)
        others = None
        if other_paths:
            others = controller.select(filepath=other_paths)
        _blas_others = others
        _blas_direct = direct
    return _blas_direct, _blas_others


@contextlib.contextmanager
def single_threaded_blas():
    """Hold BLAS to one thread while fastconv's own threads call it, from any Python thread.

    Two BLAS threads under each of two OpenMP or Numba threads halved GEMM
    throughput on this project's machine (scikit-learn's k-means limits BLAS
    the same way), and changed the GEMM's blocking, hence the last bits of
    the result.  A counter under a lock makes overlapping calls from several
    Python threads share one process-wide limit: the first call in sets it,
    the last call out restores the previous thread counts.  OpenBLAS's
    pthreads builds are set through their own API (see :func:`_blas_split`),
    so the limit holds whichever Python thread calls.
    """
    global _blas_users, _blas_limiter, _blas_saved
    with _blas_lock:
        if _blas_users == 0:
            direct, others = _blas_split()
            _blas_saved = []
            for setter, getter in direct:
                _blas_saved.append((setter, getter()))
                setter(1)
            if others is not None:
                _blas_limiter = others.limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                for setter, previous in _blas_saved:
                    setter(previous)
                _blas_saved = None
                if _blas_limiter is not None:
                    _blas_limiter.restore_original_limits()
                    _blas_limiter = None


# --------------------------------------------------------------------------- fork
def _after_fork_in_child():
    """Run by ``os.fork`` in the child: one thread from now on, fresh locks.

    The BLAS counter restarts at zero: a call that was inside
    :func:`single_threaded_blas` in another thread of the parent does not
    exist in the child (the BLAS thread counts it set stay as they were).
    """
    global _forked_child, _blas_lock, _blas_users, _blas_limiter, _blas_saved
    _forked_child = True
    _blas_lock = threading.Lock()
    _blas_users = 0
    _blas_limiter = None
    _blas_saved = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
