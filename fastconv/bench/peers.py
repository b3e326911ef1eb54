"""The engines a benchmark compares: fastconv's backends and the peers a user would pick.

Each engine wraps one library behind the same small interface:

* :meth:`Engine.setup` imports the library and fixes its thread count (raising
  :class:`Unavailable` with a reason when it cannot be used here);
* :meth:`Engine.supports` says whether it has a natural way to run a case;
* :meth:`Engine.prepare` converts the inputs once (outside the timing) and
  returns a :class:`Prepared` -- a zero-argument callable that runs one call,
  and a function that returns the last result as an NHWC NumPy array, which
  the runner checks against the NumPy reference.

Fairness rules, applied to every engine:

* inputs are converted to the engine's own types and layouts once, before
  timing (PyTorch gets NCHW or channels_last tensors, TensorFlow tensors);
* where an API takes an output buffer it is reused (fastconv ``out=``,
  ``np.maximum(..., out=)``, ``torch.clamp_min(..., out=)``, ``cv2.filter2D(dst=)``,
  ``scipy.ndimage.correlate(output=)``); PyTorch convolution/pooling and
  TensorFlow ops have no ``out=`` and allocate their result;
* PyTorch has no asymmetric padding: where TensorFlow's ``'SAME'`` puts the odd
  pixel at the bottom/right (stride 2), PyTorch is given an input padded once
  outside the timing -- this favours PyTorch slightly;
* every engine runs with the same thread count (see :meth:`Engine.setup`);
  SciPy's ``ndimage`` is single-threaded whatever the count.
"""
import importlib
import os
import sys

import numpy as np

__all__ = ["Engine", "Prepared", "Unavailable", "make_engines", "PEER_NAMES",
           "model_weights", "model_reference"]


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


def _import(name):
    """Import a module, turning any failure into :class:`Unavailable`."""
    try:
        return importlib.import_module(name)
    except Exception as exc:  # ImportError, or a broken install raising anything
        raise Unavailable(f"{name} is not installed ({type(exc).__name__}: {exc})") from None


class Engine:
    """Base class: one library, one thread count, many cases."""
    #: row label
    name = "?"
    #: "fastconv" for fastconv's own backends, "peer" for everything else
    kind = "peer"
    #: True when the library cannot change its thread count once initialised
    needs_fresh_process = False

    def setup(self, threads):
        """Import the library and hold it to ``threads`` threads."""
        raise NotImplementedError

    def version(self):
        """The library's version string."""
        return ""

    def supports(self, case):
        """Whether this engine has a natural implementation of ``case``."""
        return False

    def prepare(self, case, data):
        """Return a :class:`Prepared` for ``case`` on ``data`` (see :func:`make_data`)."""
        raise NotImplementedError


# --------------------------------------------------------------------- fastconv
class FastconvEngine(Engine):
    """One fastconv backend, always with a reused ``out=`` buffer where the API has one."""
    kind = "fastconv"

    def __init__(self, backend):
        self.backend = backend
        self.name = f"fastconv:{backend}"

    def setup(self, threads):
        import fastconv
        if self.backend not in fastconv.available_backends():
            raise Unavailable(f"backend {self.backend!r} is not available")
        self.fc = fastconv
        self.threads = threads

    def version(self):
        return self.fc.__version__

    def supports(self, case):
        return True  # the model row says "n/a" (see prepare) when fastconv.models is missing

    def prepare(self, case, data):
        fc, b, n = self.fc, self.backend, self.threads
        x = data["x"]
        if case.op == "conv2d":
            out = np.empty(case.output_shape, np.float32)
            w, s, pad, g = data["w"], (case.SH, case.SW), case.padding, case.groups
            return Prepared(lambda: fc.conv2d(x, w, s, pad, groups=g, out=out, backend=b,
                                              num_threads=n))
        if case.op == "relu":
            out = np.empty_like(x)
            return Prepared(lambda: fc.relu(x, out=out, backend=b, num_threads=n))
        if case.op == "max_pool2d":
            out = np.empty(case.output_shape, np.float32)
            k, s = (case.KH, case.KW), (case.SH, case.SW)
            return Prepared(lambda: fc.max_pool2d(x, k, s, case.padding, out=out, backend=b,
                                                  num_threads=n))
        if case.op == "im2col":
            k, s = (case.KH, case.KW), (case.SH, case.SW)
            return Prepared(lambda: fc.im2col(x, k, s, case.padding, backend=b, num_threads=n))
        if case.op == "model":
            model = build_fastconv_model(data["weights"])
            predict = _predict_function(model, case.N, b, n)
            return Prepared(lambda: predict(x))
        raise ValueError(f"unknown op {case.op!r}")


def _fastconv_models():
    """``fastconv.models`` if it exists in this installation, else None."""
    try:
        return importlib.import_module("fastconv.models")
    except ImportError:
        return None


def _layer_class(module, name):
    for place in (module, getattr(module, "layers", None)):
        if place is not None and hasattr(place, name):
            return getattr(place, name)
    raise Unavailable(f"fastconv.models has no {name} layer")


def build_fastconv_model(weights):
    """The lesson's Fashion-MNIST model as a ``fastconv.models.Sequential``, given weights.

    The layer list follows the Keras model of the lesson; ``weights`` is in
    Keras ``get_weights()`` order (see :func:`model_weights`).
    """
    fm = _fastconv_models()
    if fm is None:
        raise Unavailable("fastconv.models is not part of this installation yet")
    Conv2D, MaxPooling2D = _layer_class(fm, "Conv2D"), _layer_class(fm, "MaxPooling2D")
    Flatten, Dense = _layer_class(fm, "Flatten"), _layer_class(fm, "Dense")
    model = fm.Sequential([
        Conv2D(64, (3, 3), activation="relu", input_shape=(28, 28, 1)),
        MaxPooling2D(2, 2),
        Conv2D(64, (3, 3), activation="relu"),
        MaxPooling2D(2, 2),
        Flatten(),
        Dense(128, activation="relu"),
        Dense(10, activation="softmax"),
    ])
    model.set_weights([np.asarray(v) for v in weights])
    return model


def _predict_function(model, batch, backend, threads):
    """``model.predict`` on the whole batch at once, on ``backend`` with ``threads``."""
    import inspect
    try:
        params = inspect.signature(model.predict).parameters
    except (TypeError, ValueError):
        params = {}
    kwargs = {}
    if "batch_size" in params:
        kwargs["batch_size"] = batch
    if "num_threads" in params:
        kwargs["num_threads"] = threads
    if "backend" in params:
        kwargs["backend"] = backend
        return lambda x: model.predict(x, **kwargs)
    import fastconv

    def call(x):
        with fastconv.use_backend(backend):
            return model.predict(x, **kwargs)
    return call


def model_weights(seed=0):
    """Random He-scaled weights for the lesson model, in Keras ``get_weights()`` order."""
    rng = np.random.default_rng(seed)
    shapes = [((3, 3, 1, 64), 9), ((64,), 0), ((3, 3, 64, 64), 576), ((64,), 0),
              ((1600, 128), 1600), ((128,), 0), ((128, 10), 128), ((10,), 0)]
    out = []
    for shape, fan_in in shapes:
        if fan_in:
            out.append((rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32))
        else:
            out.append((0.01 * rng.standard_normal(shape)).astype(np.float32))
    return out


def model_reference(x, weights):
    """The lesson model's forward pass with fastconv's NumPy reference backend."""
    import fastconv as fc
    k1, b1, k2, b2, d1, c1, d2, c2 = weights
    y = fc.conv2d(x, k1, 1, "VALID", bias=b1, activation="relu", backend="numpy")
    y = fc.max_pool2d(y, 2, 2, backend="numpy")
    y = fc.conv2d(y, k2, 1, "VALID", bias=b2, activation="relu", backend="numpy")
    y = fc.max_pool2d(y, 2, 2, backend="numpy")
    y = y.reshape(len(y), -1).astype(np.float64)
    y = np.maximum(y @ d1 + c1, 0) @ d2 + c2
    y = np.exp(y - y.max(axis=1, keepdims=True))
    return (y / y.sum(axis=1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------ NumPy
class NumpyEngine(Engine):
    """Plain NumPy as a user would write it: im2col by strided view + one matmul."""
    name = "numpy"

    def setup(self, threads):
        # BLAS threads are held by the runner's threadpoolctl limit
        self.threads = threads

    def version(self):
        return np.__version__

    def supports(self, case):
        if case.op == "conv2d":
            return case.groups in (1, case.C)
        if case.op == "max_pool2d":
            return case.padding == "VALID" and (case.KH, case.KW) == (case.SH, case.SW)
        return case.op in ("relu", "im2col")

    def prepare(self, case, data):
        x = data["x"]
        if case.op == "relu":
            out = np.empty_like(x)
            return Prepared(lambda: np.maximum(x, 0, out=out))
        if case.op == "max_pool2d":
            N, C = case.N, case.C
            win = case.window
            OH, OW, KH, KW = win.OH, win.OW, case.KH, case.KW
            out = np.empty(case.output_shape, np.float32)
            return Prepared(lambda: x[:, :OH * KH, :OW * KW].reshape(N, OH, KH, OW, KW, C)
                            .max(axis=(2, 4), out=out))
        view = _numpy_windows(case)
        if case.op == "im2col":
            win = case.window
            buf = np.empty((case.N, win.OH, win.OW, case.KH, case.KW, case.C), np.float32)

            def call():
                np.copyto(buf, view(x).transpose(0, 1, 2, 4, 5, 3))
                return buf.reshape(case.output_shape)
            return Prepared(call)
        out = np.empty(case.output_shape, np.float32)
        if case.groups == 1:
            w2 = np.ascontiguousarray(data["w"].reshape(-1, case.O))
            rows = case.output_shape[0] * case.output_shape[1] * case.output_shape[2]
            out2 = out.reshape(rows, case.O)

            def call():
                cols = view(x).transpose(0, 1, 2, 4, 5, 3).reshape(rows, -1)
                np.matmul(cols, w2, out=out2)
                return out
            return Prepared(call)
        wd = np.ascontiguousarray(data["w"][:, :, 0, :])  # depthwise (KH, KW, C)
        return Prepared(lambda: np.einsum("nhwcij,ijc->nhwc", view(x), wd, out=out))


def _numpy_windows(case):
    """A function mapping x to its (N, OH, OW, C, KH, KW) window view, zero-padded."""
    from numpy.lib.stride_tricks import sliding_window_view
    win = case.window
    pads = ((0, 0), (win.pad_top, win.pad_bottom), (win.pad_left, win.pad_right), (0, 0))

    def view(x):
        xp = np.pad(x, pads) if any(p for pair in pads for p in pair) else x
        v = sliding_window_view(xp, (case.KH, case.KW), axis=(1, 2))
        return v[:, ::case.SH, ::case.SW][:, :win.OH, :win.OW]
    return view


# ------------------------------------------------------------------- TensorFlow
class TensorFlowEngine(Engine):
    """``tf.nn`` ops in eager mode on NHWC tensors (and the lesson model in Keras)."""
    name = "tf"
    needs_fresh_process = True

    def setup(self, threads):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        already = "tensorflow" in sys.modules
        with _quiet_native_stderr():  # TF's C++ start-up banner ignores TF_CPP_MIN_LOG_LEVEL
            tf = _import("tensorflow")
            try:
                # must precede the runtime's initialisation, hence the lazy import above
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:
                pass
            tf.constant(1.0) + 1.0  # initialise the runtime now, while stderr is quiet
        got = tf.config.threading.get_intra_op_parallelism_threads()
        if got != threads:
            why = "was imported and initialised earlier" if already else "refused the setting"
            raise Unavailable(f"TensorFlow {why} with {got or 'default'} intra-op threads; "
                              f"cannot hold it to {threads} (run each --threads value in "
                              f"its own process)")
        self.tf = tf

    def version(self):
        return self.tf.__version__

    def supports(self, case):
        if case.op == "conv2d":
            return case.groups in (1, case.C)
        if case.op == "model":
            import importlib.util  # find, do not import: TF must not start before setup()
            return importlib.util.find_spec("keras") is not None
        return case.op in ("relu", "max_pool2d", "im2col")

    def prepare(self, case, data):
        tf = self.tf
        x = tf.constant(data["x"])
        strides, pad = [1, case.SH, case.SW, 1], case.padding
        if case.op == "conv2d":
            if case.groups == 1:
                w = tf.constant(data["w"])
                return Prepared(lambda: tf.nn.conv2d(x, w, strides, pad), _tf_numpy)
            w = tf.constant(data["w"].transpose(0, 1, 3, 2))  # (KH, KW, C, 1)
            return Prepared(lambda: tf.nn.depthwise_conv2d(x, w, strides, pad), _tf_numpy)
        if case.op == "relu":
            return Prepared(lambda: tf.nn.relu(x), _tf_numpy)
        if case.op == "max_pool2d":
            k = [1, case.KH, case.KW, 1]
            return Prepared(lambda: tf.nn.max_pool2d(x, k, strides, pad), _tf_numpy)
        if case.op == "im2col":
            k, rows = [1, case.KH, case.KW, 1], case.output_shape
            return Prepared(lambda: tf.image.extract_patches(x, k, strides, [1, 1, 1, 1], pad),
                            lambda t: _tf_numpy(t).reshape(rows))
        if case.op == "model":
            model = keras_model(data["weights"])
            return Prepared(lambda: model(x, training=False), _tf_numpy)
        raise ValueError(f"unknown op {case.op!r}")


class KerasPredictEngine(TensorFlowEngine):
    """Keras's own ``model.predict`` on the lesson model (the teaching issue's yardstick).

    The ``tf`` engine times the direct call ``model(x)``, the faster of the two;
    this one times ``predict(x, batch_size=N, verbose=0)``, what a lesson runs.
    """
    name = "keras-predict"

    def supports(self, case):
        return case.op == "model" and super().supports(case)

    def prepare(self, case, data):
        model = keras_model(data["weights"])
        x = data["x"]
        return Prepared(lambda: model.predict(x, batch_size=case.N, verbose=0))


class _quiet_native_stderr:
    """Send file descriptor 2 (C/C++ logging included) to /dev/null inside the block.

    Python exceptions still propagate; only text written to stderr is lost.
    """

    def __enter__(self):
        try:
            sys.stderr.flush()
            self.saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except (OSError, ValueError):  # no real fd 2 (e.g. captured): leave it alone
            self.saved = None
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            os.dup2(self.saved, 2)
            os.close(self.saved)
        return False


def _tf_numpy(t):
    return t.numpy()


def keras_model(weights):
    """The lesson's Fashion-MNIST model in Keras 3, with the given weights."""
    keras = importlib.import_module("keras")
    L = keras.layers
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(64, (3, 3), activation="relu"),
        L.MaxPooling2D(2, 2),
        L.Conv2D(64, (3, 3), activation="relu"),
        L.MaxPooling2D(2, 2),
        L.Flatten(),
        L.Dense(128, activation="relu"),
        L.Dense(10, activation="softmax"),
    ])
    model.set_weights(weights)
    return model


# ---------------------------------------------------------------------- PyTorch
class TorchEngine(Engine):
    """``torch.nn.functional`` on NCHW tensors, or on channels_last ones."""

    def __init__(self, channels_last=False):
        self.channels_last = channels_last
        self.name = "torch-cl" if channels_last else "torch"

    def setup(self, threads):
        torch = _import("torch")
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # only settable before the first parallel work
            pass
        self.torch = torch

    def version(self):
        return self.torch.__version__

    def supports(self, case):
        if case.op == "relu":
            return not self.channels_last  # layout-free: one row is enough
        if case.op == "im2col":
            return not self.channels_last  # F.unfold is NCHW-only
        return case.op in ("conv2d", "max_pool2d")

    def _tensor(self, a):
        t = self.torch.from_numpy(np.ascontiguousarray(a))
        if self.channels_last:
            return t.contiguous(memory_format=self.torch.channels_last)
        return t.contiguous()

    def prepare(self, case, data):
        torch = self.torch
        F = torch.nn.functional
        x_nhwc = data["x"]
        if case.op == "relu":
            x = torch.from_numpy(x_nhwc)
            buf = torch.empty_like(x)
            return Prepared(lambda: torch.clamp_min(x, 0, out=buf), _torch_numpy)
        win = case.window
        symmetric = win.pad_top == win.pad_bottom and win.pad_left == win.pad_right
        if case.op == "max_pool2d" or symmetric:
            padding = (win.pad_top, win.pad_left)
        else:  # pre-pad once, outside the timing (favours PyTorch)
            x_nhwc = np.pad(x_nhwc, ((0, 0), (win.pad_top, win.pad_bottom),
                                     (win.pad_left, win.pad_right), (0, 0)))
            padding = (0, 0)
        x = self._tensor(x_nhwc.transpose(0, 3, 1, 2))
        stride = (case.SH, case.SW)
        if case.op == "conv2d":
            w = self._tensor(data["w"].transpose(3, 2, 0, 1))  # OIHW
            g = case.groups
            return Prepared(lambda: F.conv2d(x, w, None, stride, padding, 1, g),
                            _torch_nhwc)
        if case.op == "max_pool2d":
            k = (case.KH, case.KW)
            return Prepared(lambda: F.max_pool2d(x, k, stride, padding), _torch_nhwc)
        if case.op == "im2col":
            k = (case.KH, case.KW)
            N, C, KH, KW = case.N, case.C, case.KH, case.KW

            def result(t):  # (N, C*KH*KW, L) ordered (c, kh, kw) -> rows ordered (kh, kw, c)
                a = t.numpy().reshape(N, C, KH, KW, win.OH, win.OW)
                return a.transpose(0, 4, 5, 2, 3, 1).reshape(case.output_shape)
            return Prepared(lambda: F.unfold(x, k, 1, padding, stride), result)
        raise ValueError(f"unknown op {case.op!r}")


def _torch_numpy(t):
    return t.numpy()


def _torch_nhwc(t):
    return t.permute(0, 2, 3, 1).numpy()


# ----------------------------------------------------- single-channel filters
def _single_channel(case):
    return (case.op == "conv2d" and case.C == 1 and case.O == 1 and case.N == 1
            and case.SH == case.SW == 1)


class OpenCVEngine(Engine):
    """``cv2.filter2D`` (single-channel filters), zero border, reused ``dst``."""
    name = "opencv"

    def setup(self, threads):
        self.cv2 = _import("cv2")
        self.cv2.setNumThreads(threads)

    def version(self):
        return self.cv2.__version__

    def supports(self, case):
        return _single_channel(case)

    def prepare(self, case, data):
        cv2 = self.cv2
        src = np.ascontiguousarray(data["x"][0, :, :, 0])
        k = np.ascontiguousarray(data["w"][:, :, 0, 0])
        dst = np.empty_like(src)
        win = case.window
        anchor = (win.pad_left, win.pad_top)  # (x, y): where the output pixel sits in the kernel
        valid = case.padding == "VALID"
        # VALID: filter the whole image, keep the interior
        if valid:
            anchor = (0, 0)

        def result(d):
            return d[:win.OH, :win.OW][None, :, :, None]
        return Prepared(lambda: cv2.filter2D(src, -1, k, dst, anchor, 0, cv2.BORDER_CONSTANT),
                        result)


class ScipyEngine(Engine):
    """``scipy.ndimage.correlate`` (single-channel filters; single-threaded), reused output."""
    name = "scipy"

    def setup(self, threads):
        self.ndimage = _import("scipy.ndimage")

    def version(self):
        return importlib.import_module("scipy").__version__

    def supports(self, case):
        return _single_channel(case)

    def prepare(self, case, data):
        nd = self.ndimage
        src = np.ascontiguousarray(data["x"][0, :, :, 0])
        k = np.ascontiguousarray(data["w"][:, :, 0, 0])
        out = np.empty_like(src)
        win = case.window
        top, left = (0, 0) if case.padding == "VALID" else (win.pad_top, win.pad_left)
        origin = (top - case.KH // 2, left - case.KW // 2)

        def result(o):
            return o[:win.OH, :win.OW][None, :, :, None]

        def call():
            nd.correlate(src, k, output=out, mode="constant", cval=0.0, origin=origin)
            return out
        return Prepared(call, result)


# ----------------------------------------------------------------- the registry
#: peers in table order; "torch" is NCHW, "torch-cl" channels_last
PEER_NAMES = ("numpy", "tf", "keras-predict", "torch", "torch-cl", "opencv", "scipy", "jax", "onnxruntime")


class MissingEngine(Engine):
    """A peer fastconv knows of but does not drive yet: listed as unavailable."""

    def __init__(self, name, module):
        self.name, self.module = name, module

    def setup(self, threads):
        _import(self.module)
        raise Unavailable(f"{self.module} is installed, but fastconv bench has no "
                          f"{self.name} engine yet")


def _peer(name):
    if name == "numpy":
        return NumpyEngine()
    if name == "tf":
        return TensorFlowEngine()
    if name == "keras-predict":
        return KerasPredictEngine()
    if name == "torch":
        return TorchEngine(channels_last=False)
    if name == "torch-cl":
        return TorchEngine(channels_last=True)
    if name == "opencv":
        return OpenCVEngine()
    if name == "scipy":
        return ScipyEngine()
    if name == "jax":
        return MissingEngine("jax", "jax")
    if name == "onnxruntime":
        return MissingEngine("onnxruntime", "onnxruntime")
    raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEER_NAMES)}.")


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
        fastconv backends first, then peers.  Nothing is imported yet.
    """
    import fastconv
    if backends is None:
        backends = fastconv.available_backends()
    known = [s.name for s in fastconv.backends()]
    bad = [b for b in backends if b not in known]
    if bad:
        raise ValueError(f"unknown backend(s) {', '.join(bad)}; known: {', '.join(known)}.")
    peers = PEER_NAMES if peers is None else peers
    return [FastconvEngine(b) for b in backends] + [_peer(p) for p in peers]
