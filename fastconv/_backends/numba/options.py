"""The one place for fastconv's Numba options.

Every Numba kernel in fastconv is decorated with :func:`jit` from this module,
so the compile options live here and nowhere else:

* ``cache=True``: compiled machine code is written to Numba's cache (the
  ``__pycache__`` next to the kernel module, or ``NUMBA_CACHE_DIR``) and a new
  process loads it instead of recompiling.
* ``nogil=True``: kernels release the GIL, so several Python threads can run
  them at once.
* ``error_model="numpy"``: division by zero gives inf/NaN as in NumPy instead
  of raising (which would cost a branch per division).
* ``boundscheck=False``: the drivers pass only validated, C-contiguous arrays.
* :data:`FASTMATH`: only the LLVM fast-math flags that cannot change the
  meaning of NaN, infinities or signed zeros in ways the tests check:
  ``contract`` (fuse ``a * b + c`` into one FMA) and ``reassoc`` (allow
  re-ordering of sums so reductions vectorize).  ``nnan`` and ``ninf`` are
  deliberately absent: ReLU must keep NaN and map ``-inf`` to 0, and max
  pooling must propagate NaN.  The re-ordering is fixed at compile time, so a
  given kernel still gives bitwise-identical results for any thread count.

Threading layer
---------------
Numba's default scheduler, ``workqueue``, is slower to start a parallel
region than OpenMP and aborts the process when two Python threads enter
parallel code at once.  Unless the user chose a
layer with ``NUMBA_THREADING_LAYER``, :func:`configure_threading_layer` makes
Numba prefer ``omp`` and then ``tbb``, keeping ``workqueue`` as a last resort;
when only ``workqueue`` is usable the backend serialises its parallel calls
with a lock (see :data:`needs_lock`).  The setting only takes effect if no
parallel Numba code has run in this process yet; :func:`threading_layer`
reports the layer actually in use.
"""
import os
import types

import numba

#: LLVM fast-math flags used by every kernel (no ``nnan``/``ninf``: NaN and inf are data here)
FASTMATH = frozenset({"contract", "reassoc"})
#: every kernel is cached on disk
CACHE = True
#: every kernel releases the GIL
NOGIL = True
#: NumPy's floating-point error semantics (no Python exceptions inside kernels)
ERROR_MODEL = "numpy"
#: layers fastconv prefers, best first
PREFERRED_LAYERS = ("omp", "tbb", "workqueue")


def jit(parallel=False):
    """Return Numba's ``njit`` decorator with fastconv's options.

    Parameters
    ----------
    parallel : bool
        Compile ``prange`` loops as parallel regions (Numba's ``parallel=True``).

    Examples
    --------
    >>> @jit(parallel=True)
    ... def _double(a):  # doctest: +SKIP
    ...     for i in numba.prange(a.size):
    ...         a[i] *= 2
    """
    return numba.njit(parallel=parallel, fastmath=set(FASTMATH), cache=CACHE, nogil=NOGIL,
                      error_model=ERROR_MODEL, boundscheck=False)


def serial_twin(kernel):
    """The same kernel compiled without ``parallel``: its ``prange`` loops run in order.

    ``kernel`` is a dispatcher made by ``jit(parallel=True)``.  The twin runs
    the same Python function on the calling thread, without entering a
    parallel region (nor starting the threading layer); given one chunk
    count it computes every element with the same code, so its results are
    bitwise those of the parallel kernel.  It is a copy of the function under
    the name ``<name>_serial``, so that Numba's on-disk cache (keyed by the
    qualified name) keeps the two compilations apart.
    """
    py = kernel.py_func
    twin = types.FunctionType(py.__code__, py.__globals__, py.__name__ + "_serial",
                              py.__defaults__, py.__closure__)
    twin.__qualname__ = py.__qualname__ + "_serial"
    twin.__module__ = py.__module__
    twin.__doc__ = f"Serial twin of :func:`{py.__name__}` (see :func:`serial_twin`)."
    return jit()(twin)


def _layer_importable(name):
    """Whether Numba's extension for threading layer ``name`` can be loaded here."""
    try:
        if name == "omp":
            from numba.np.ufunc import omppool  # noqa: F401
        elif name == "tbb":
            from numba.np.ufunc import tbbpool  # noqa: F401
        elif name == "workqueue":
            from numba.np.ufunc import workqueue  # noqa: F401
        else:
            return False
    except (ImportError, OSError):
        return False
    return True


def usable_layers():
    """The threading layers whose runtime library loads in this process, in preference order."""
    return [name for name in PREFERRED_LAYERS if _layer_importable(name)]


def configure_threading_layer():
    """Prefer ``omp``, then ``tbb``, over ``workqueue`` (unless the user chose a layer).

    Returns
    -------
    str
        What was decided: the name of the layer requested, or a note that the
        user's ``NUMBA_THREADING_LAYER`` was respected.
    """
    user = os.environ.get("NUMBA_THREADING_LAYER", "").strip()
    if user:
        return f"{user} (from NUMBA_THREADING_LAYER)"
    usable = usable_layers() or ["workqueue"]
    numba.config.THREADING_LAYER_PRIORITY = list(usable) + [
        name for name in PREFERRED_LAYERS if name not in usable]
    numba.config.THREADING_LAYER = "default"
    return usable[0]


def threading_layer():
    """The threading layer Numba actually launched, or None before the first parallel call."""
    try:
        return numba.threading_layer()
    except ValueError:
        return None


def needs_lock():
    """Whether parallel calls must be serialised (only ``workqueue`` is not thread-safe)."""
    layer = threading_layer()
    return layer is None or layer == "workqueue"


REQUESTED_LAYER = configure_threading_layer()
