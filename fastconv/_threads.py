"""Thread counts: one rule for every backend.

``num_threads=None`` means the process default: the value given to
:func:`set_num_threads`, else the environment variable
``FASTCONV_NUM_THREADS``, else the cores this process may run on
(``os.sched_getaffinity``).  A negative count is counted back from the
available cores (-1 = all, -2 = all but one, never fewer than 1), as in
scikit-learn and joblib; 0 is an error.
"""
import numbers
import os

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


def set_num_threads(n):
    """Set the process-wide default thread count (``None`` restores the default)."""
    global _default
    _default = None if n is None else _normalize(n, "num_threads")


def get_num_threads():
    """The thread count a call with ``num_threads=None`` uses."""
    if _default is not None:
        return _default
    env = _from_env()
    return env if env is not None else available_cores()


def resolve_num_threads(num_threads):
    """Turn a per-call ``num_threads`` argument into a positive int."""
    if num_threads is None:
        return get_num_threads()
    return _normalize(num_threads, "num_threads")
