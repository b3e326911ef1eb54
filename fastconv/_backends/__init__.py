"""Backend registry and dispatch.

Each backend is a driver module: :mod:`.reference` (NumPy, the judge),
:mod:`.cython.driver` (compiled kernels) and :mod:`.numba.driver`.  A driver
is a module that implements the private driver interface below on
already-validated arrays.  The public functions in :mod:`fastconv._ops` do all
checking, dtype handling, layout conversion and output allocation, then call
the chosen backend's driver, which fills ``out`` in place:

``conv2d(x, w, bias, out, strides, dilations, pads, groups, relu, num_threads, algorithm)``
    ``x`` (N, H, W, C), ``w`` (KH, KW, C // groups, O), ``bias`` (O,) or None,
    ``out`` (N, OH, OW, O); ``pads = (top, left)``, the bottom/right padding
    being implied by OH/OW; every position outside the input reads as 0.
``relu(x, out, num_threads)``
    any shape; ``out`` may be ``x`` itself (in place).  NaN stays NaN.
``max_pool2d(x, out, ksize, strides, dilations, pads, num_threads)``
    ``x`` (N, H, W, C), ``out`` (N, OH, OW, C); positions outside the input
    are never picked; NaN propagates.
``im2col(x, out, ksize, strides, dilations, pads, num_threads)``
    ``out`` (N, OH, OW, KH, KW, C), zeros where the window leaves the input.
``info()``
    a dict of facts for :func:`fastconv.show_config`.

Optional drivers for the backward ops (:mod:`fastconv._backward`): a backend
that lacks one gets the generic composition of its primitives above (or, for
``col2im`` and ``max_pool2d_argmax``, the reference's NumPy code):

``col2im(cols, out, ksize, strides, dilations, pads, num_threads)``
    ``out`` (N, H, W, C) ``+=`` the adjoint of ``im2col`` of ``cols``
    (N, OH, OW, KH, KW, C): each entry added to the pixel it was read from.
``max_pool2d_argmax(x, out, argmax, ksize, strides, dilations, pads, num_threads)``
    ``out`` as ``max_pool2d``; ``argmax`` (int64, the shape of ``out``) the
    flat index ``(h * W + w) * C + c`` of the first maximum in window order,
    a NaN counting as larger than any number.
``conv2d_backward_input(dy, w, out, strides, dilations, pads, groups, num_threads)``
    ``out`` (N, H, W, C) = the input gradient for ``dy`` (N, OH, OW, O).
``conv2d_backward_filters(x, dy, out, strides, dilations, pads, groups, num_threads)``
    ``out`` (KH, KW, C // groups, O) = the filter gradient.
``relu_backward(value, dy, out, num_threads)``
    flat arrays: ``out = dy`` where ``value > 0``, else +0 (a NaN ``value``
    gives 0); ``out`` may be ``dy`` or ``value``.
``max_pool2d_grad(x, dy, out, ksize, strides, dilations, pads, num_threads)``
    ``out`` (N, H, W, C) = the max pool's input gradient for ``dy`` (N, OH,
    OW, C): zeros, then each window's ``dy`` added at its first maximum (the
    argmax of ``max_pool2d_argmax``), in window order, without storing the
    argmax; absent: ``max_pool2d_argmax`` then ``max_pool2d_backward``.
``conv_channel_lanes(dtype, in_channels)``
    output channels of ``dtype`` that the backend's ``conv2d`` computes per
    vector when the input has ``in_channels`` channels (1 when it vectorizes
    across pixels instead); the input gradient stacks blocks of pixels into
    the channels of one convolution by it (absent: never).
``max_pool2d_backward(dy, flat_index, out, num_threads, images=1)``
    flat arrays: ``out`` = zeros, then ``dy[i]`` added at ``flat_index[i]``;
    ``dy`` and ``out`` are ``images`` equal blocks (one per image) and block
    ``n`` of ``dy`` sends only into block ``n`` of ``out``, so a backend may
    run the images in parallel.

All arrays are C-contiguous and share one dtype, float32 or float64; ``out``
never overlaps an input (except relu in place); ``num_threads >= 1``.
"""
import contextlib
import contextvars
import importlib
import os
from typing import NamedTuple

_MODULES = {
    "numpy": "fastconv._backends.reference",
    "cython": "fastconv._backends.cython.driver",
    "numba": "fastconv._backends.numba.driver",
}
#: the order "auto" tries, fastest first
AUTO_ORDER = ("cython", "numba", "numpy")
OPS = ("conv2d", "relu", "max_pool2d", "im2col", "info")
ENV_VAR = "FASTCONV_BACKEND"

_loaded = {}
_default = None
_override = contextvars.ContextVar("fastconv_backend", default=None)


class BackendUnavailableError(RuntimeError):
    """Raised when a named backend cannot be used here (the message says why)."""


class BackendStatus(NamedTuple):
    """Whether a backend can be used, and if not, why."""
    name: str
    available: bool
    reason: str


def _load(name):
    """Import a backend once; remember the module or the reason it failed."""
    if name not in _loaded:
        try:
            module = importlib.import_module(_MODULES[name])
            missing = [op for op in OPS if not hasattr(module, op)]
            if missing:
                raise ImportError(f"backend module lacks {', '.join(missing)}")
            _loaded[name] = (module, "")
        except ImportError as exc:
            _loaded[name] = (None, _explain(name, exc))
    return _loaded[name]


def _explain(name, exc):
    missing = getattr(exc, "name", None) or ""
    if missing == "numba" or missing.startswith("numba."):
        return "Numba is not installed (pip install numba)"
    if missing.startswith("fastconv._backends.cython.") and name == "cython":
        return ("the compiled extension is not built (install with `pip install .`, or "
                "`python setup.py build_ext --inplace` in a source tree)")
    if missing.startswith("fastconv._"):
        return f"module {missing} is missing from this installation"
    return f"import failed: {exc}"


def _check_name(name, allow_auto=True):
    names = tuple(_MODULES) + (("auto",) if allow_auto else ())
    if not isinstance(name, str) or name not in names:
        raise ValueError(f"backend must be one of {names}; got {name!r}.")
    return name


def backends():
    """List every backend with whether it is available here and, if not, why.

    Returns
    -------
    list of BackendStatus
        ``(name, available, reason)`` tuples, in the order ``"auto"`` tries them.
    """
    out = []
    for name in AUTO_ORDER:
        module, reason = _load(name)
        out.append(BackendStatus(name, module is not None, reason))
    return out


def available_backends():
    """Names of the backends that can be used here, fastest first."""
    return [s.name for s in backends() if s.available]


def set_backend(name):
    """Set the process-wide default backend ('auto', 'cython', 'numba' or 'numpy').

    ``None`` restores the start-up default: the environment variable
    ``FASTCONV_BACKEND`` if set, else ``'auto'``.
    """
    global _default
    if name is None:
        _default = None
        return
    name = _check_name(name)
    if name != "auto":
        driver(name)
    _default = name


def get_backend():
    """The backend a call with ``backend=None`` uses (the name, possibly 'auto')."""
    override = _override.get()
    if override is not None:
        return override
    if _default is not None:
        return _default
    env = os.environ.get(ENV_VAR, "").strip()
    return _check_name(env) if env else "auto"


@contextlib.contextmanager
def use_backend(name):
    """Context manager: use backend ``name`` for calls with ``backend=None`` inside it.

    Examples
    --------
    >>> import fastconv
    >>> with fastconv.use_backend("numpy"):
    ...     y = fastconv.relu([[-1.0, 2.0]])
    """
    name = _check_name(name)
    if name != "auto":
        driver(name)
    token = _override.set(name)
    try:
        yield
    finally:
        _override.reset(token)


def driver(name):
    """The driver module of backend ``name``; raises BackendUnavailableError when it cannot load."""
    module, reason = _load(name)
    if module is None:
        raise BackendUnavailableError(f"backend {name!r} is not available: {reason}.")
    return module


def resolve(backend):
    """Return ``(name, module)`` for a per-call ``backend`` argument."""
    name = get_backend() if backend is None else _check_name(backend)
    if name == "auto":
        for candidate in AUTO_ORDER:
            module, _ = _load(candidate)
            if module is not None:
                return candidate, module
    return name, driver(name)


def warmup():
    """Compile, or load from the on-disk cache, every JIT kernel ahead of use.

    Backends with a just-in-time compiler (``numba``) prepare every kernel
    for float32 and float64, so that no later call stalls on compilation;
    compiled and NumPy backends need nothing.

    Returns
    -------
    dict
        For each backend that did work, what its ``warmup`` reported
        (seconds per dtype).
    """
    done = {}
    for name in available_backends():
        module, _ = _load(name)
        if hasattr(module, "warmup"):
            done[name] = module.warmup()
    return done
