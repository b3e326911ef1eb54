"""The engines a benchmark compares: fastconv's backends and the peers a user would pick.

Each engine wraps one library behind the same small interface (:class:`Engine`):

* :meth:`Engine.setup` imports the library and fixes its thread count (raising
  :class:`Unavailable` with a reason when it cannot be used here);
* :meth:`Engine.supports` says whether it has a natural way to run a case;
* :meth:`Engine.prepare` converts the inputs once (outside the timing) and
  returns a :class:`Prepared` -- a zero-argument callable that runs one call,
  and a function that returns the last result as an NHWC NumPy array, which
  the runner checks against the NumPy reference.

One module per library family: :mod:`.fastconv_backends`, :mod:`.numpy_scipy`,
:mod:`.pytorch`, :mod:`.tensorflow_keras`, :mod:`.opencv`, :mod:`.jax_xla`,
:mod:`.onnx_runtime`, and :mod:`.training` (one training step of the lesson
model in Keras and PyTorch).  This module holds the base classes and the registry
(:data:`PEER_NAMES`, :func:`make_engines`); a peer module is imported only
when one of its engines is built, and its library only in :meth:`Engine.setup`.

Fairness rules, applied to every engine:

* inputs are converted to the engine's own types and layouts once, before
  timing (PyTorch and ONNX Runtime get NCHW, TensorFlow and JAX NHWC tensors);
* where an API takes an output buffer it is reused (fastconv ``out=``,
  ``np.maximum(..., out=)``, ``torch.clamp_min(..., out=)``, ``cv2.filter2D(dst=)``,
  ``scipy.ndimage.correlate(output=)``); PyTorch convolution/pooling,
  TensorFlow, JAX and ONNX Runtime allocate their result;
* PyTorch has no asymmetric padding: where TensorFlow's ``'SAME'`` puts the odd
  pixel at the bottom/right (stride 2), PyTorch is given an input padded once
  outside the timing -- this favours PyTorch slightly;
* every engine runs with the same thread count (see :meth:`Engine.setup`);
  SciPy's ``ndimage`` is single-threaded whatever the count, and an engine
  that cannot be held to the count is listed as unavailable instead.
"""
import importlib

import numpy as np

__all__ = ["Engine", "ImageFilterEngine", "Prepared", "Unavailable", "import_library",
           "make_engine", "make_engines", "make_peer", "PEER_NAMES", "nchw", "nhwc"]


class Unavailable(Exception):
    """An engine cannot run here; the message says why (listed, never an error)."""


class Prepared:
    """One engine's ready-to-time call on one case.

    Parameters
    ----------
    call : callable
        Runs the operation once; its return value is kept for :attr:`result`.
    result : callable, optional
        ``result(last)`` turns the last return value into an NHWC NumPy array;
        default ``np.asarray``.
    """

    def __init__(self, call, result=None):
        self._call = call
        self._result = result or np.asarray
        self.last = None

    def __call__(self):
        self.last = self._call()

    def result(self):
        """The last call's output as a NumPy array in the reference's layout."""
        return self._result(self.last)


def import_library(name):
    """Import a module, turning any failure into :class:`Unavailable`."""
    try:
        return importlib.import_module(name)
    except Exception as exc:  # ImportError, or a broken install raising anything
        raise Unavailable(f"{name} is not installed ({type(exc).__name__}: {exc})") from None


def nchw(a):
    """An NHWC array as a C-contiguous NCHW one (done once, before timing)."""
    return np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2))


def nhwc(a):
    """An NCHW result back in the reference's NHWC layout (outside the timing)."""
    return np.asarray(a).transpose(0, 2, 3, 1)


class Engine:
    """Base class: one library, one thread count, many cases."""
    #: row label
    name = "?"
    #: "fastconv" for fastconv's own backends, "peer" for everything else
    kind = "peer"
    #: True when the library cannot change its thread count once initialised
    needs_fresh_process = False
    #: the module :meth:`setup` keeps (for :meth:`version`)
    library = None

    def setup(self, threads):
        """Import the library and hold it to ``threads`` threads."""
        raise NotImplementedError

    def version(self):
        """The library's version string."""
        return getattr(self.library, "__version__", "")

    def supports(self, case):
        """Whether this engine has a natural implementation of ``case``."""
        return False

    def prepare(self, case, data):
        """Return a :class:`Prepared` for ``case`` on ``data`` (see ``runner.make_data``)."""
        raise NotImplementedError


class ImageFilterEngine(Engine):
    """Base of the image-filter APIs (one 2-D image, one 2-D kernel, an output buffer).

    They run the single-channel cases only (:attr:`Case.single_channel_filter`);
    a subclass supplies :meth:`filter_call`.
    """

    def supports(self, case):
        return case.single_channel_filter

    def prepare(self, case, data):
        image = np.ascontiguousarray(data["x"][0, :, :, 0])
        kernel = np.ascontiguousarray(data["w"][:, :, 0, 0])
        win = case.window
        # VALID filters the whole image (zero border) and keeps the interior
        anchor = (0, 0) if case.padding == "VALID" else (win.pad_top, win.pad_left)
        call = self.filter_call(image, kernel, np.empty_like(image), anchor)
        return Prepared(call, lambda out: np.asarray(out)[:win.OH, :win.OW][None, :, :, None])

    def filter_call(self, image, kernel, out, anchor):
        """A zero-argument call that filters ``image`` into ``out`` (and returns it).

        ``anchor = (row, column)``: where the output pixel sits in the kernel;
        pixels outside the image count as zero.
        """
        raise NotImplementedError


# ----------------------------------------------------------------- the registry
#: peer name -> (module of this package, engine class, constructor keywords), in table order;
#: "torch" is NCHW, "torch-cl" channels_last
_PEERS = {
    "numpy": ("numpy_scipy", "NumpyEngine", {}),
    "tf": ("tensorflow_keras", "TensorFlowEngine", {}),
    "keras-predict": ("tensorflow_keras", "KerasPredictEngine", {}),
    "torch": ("pytorch", "TorchEngine", {"channels_last": False}),
    "torch-cl": ("pytorch", "TorchEngine", {"channels_last": True}),
    "onnxruntime": ("onnx_runtime", "OnnxRuntimeEngine", {}),
    "jax": ("jax_xla", "JaxEngine", {}),
    "opencv": ("opencv", "OpenCVEngine", {}),
    "scipy": ("numpy_scipy", "ScipyEngine", {}),
    "keras-train": ("training", "KerasTrainEngine", {}),
    "torch-train": ("training", "TorchTrainEngine", {"channels_last": False}),
    "torch-cl-train": ("training", "TorchTrainEngine", {"channels_last": True}),
}
#: every peer ``--peers`` accepts, in table order
PEER_NAMES = tuple(_PEERS)


def _engine_class(module, cls):
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def make_peer(name):
    """The engine of peer ``name`` (one of :data:`PEER_NAMES`), not set up yet."""
    if name not in _PEERS:
        raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEER_NAMES)}.")
    module, cls, kwargs = _PEERS[name]
    return _engine_class(module, cls)(**kwargs)


def make_engine(name):
    """The engine of a row label: ``fastconv:<backend>`` or a peer of :data:`PEER_NAMES`."""
    if name.startswith("fastconv:"):
        return _engine_class("fastconv_backends", "FastconvEngine")(name.split(":", 1)[1])
    return make_peer(name)


def make_engines(backends=None, peers=None):
    """Build the engines to compare.

    Parameters
    ----------
    backends : sequence of str, optional
        fastconv backends; default every one of :func:`fastconv.available_backends`.
    peers : sequence of str, optional
        Peer names from :data:`PEER_NAMES`; default all of them.

    Returns
    -------
    list of Engine
        fastconv backends first, then peers.  No library is imported yet.
    """
    import fastconv
    if backends is None:
        backends = fastconv.available_backends()
    known = [s.name for s in fastconv.backends()]
    bad = [b for b in backends if b not in known]
    if bad:
        raise ValueError(f"unknown backend(s) {', '.join(bad)}; known: {', '.join(known)}.")
    peers = PEER_NAMES if peers is None else peers
    engines = [make_peer(p) for p in peers]  # unknown names refused before anything runs
    return [make_engine(f"fastconv:{b}") for b in backends] + engines
