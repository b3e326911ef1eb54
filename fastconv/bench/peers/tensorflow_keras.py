"""TensorFlow's ``tf.nn`` ops, and the lesson model in Keras."""
import importlib
import importlib.util
import os
import sys

from ..suite import BACKWARD_OPS, CS231N_OPS, build_lesson_model
from . import Engine, Prepared, Unavailable, import_library


class TensorFlowEngine(Engine):
    """``tf.nn`` ops in eager mode on NHWC tensors (and the lesson model in Keras)."""
    name = "tf"
    needs_fresh_process = True

    def setup(self, threads):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        already = "tensorflow" in sys.modules
        with quiet_native_stderr():  # TF's C++ start-up banner ignores TF_CPP_MIN_LOG_LEVEL
            tf = import_library("tensorflow")
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
        self.library = tf

    def supports(self, case):
        if case.op in CS231N_OPS:  # NCHW float64 arrays: TF's CPU convolution is NHWC-only
            return False
        if case.op in BACKWARD_OPS:
            return BACKWARD_OPS[case.op] != "conv2d" or case.groups in (1, case.C)
        if case.op == "conv2d":
            return case.groups in (1, case.C)
        if case.op == "model":
            # find, do not import: TF must not start before setup()
            return importlib.util.find_spec("keras") is not None
        return case.op in ("relu", "max_pool2d", "im2col")

    def prepare(self, case, data):
        tf = self.library
        x = tf.constant(data["x"])
        strides, pad = [1, case.SH, case.SW, 1], case.padding
        k = [1, case.KH, case.KW, 1]
        if case.op in BACKWARD_OPS:
            return self._prepare_backward(case, data, x, strides, k, pad)
        if case.op == "conv2d":
            if case.groups == 1:
                w = tf.constant(data["w"])
                return Prepared(lambda: tf.nn.conv2d(x, w, strides, pad), _numpy)
            w = tf.constant(data["w"].transpose(0, 1, 3, 2))  # (KH, KW, C, 1)
            return Prepared(lambda: tf.nn.depthwise_conv2d(x, w, strides, pad), _numpy)
        if case.op == "relu":
            return Prepared(lambda: tf.nn.relu(x), _numpy)
        if case.op == "max_pool2d":
            return Prepared(lambda: tf.nn.max_pool2d(x, k, strides, pad), _numpy)
        if case.op == "im2col":
            rows = case.output_shape
            return Prepared(lambda: tf.image.extract_patches(x, k, strides, [1, 1, 1, 1], pad),
                            lambda t: _numpy(t).reshape(rows))
        if case.op == "model":
            model = keras_lesson_model(data["weights"])
            return Prepared(lambda: model(x, training=False), _numpy)
        raise ValueError(f"unknown op {case.op!r}")

    def _prepare_backward(self, case, data, x, strides, k, pad):
        """``tf.GradientTape``: the forward recorded once on a persistent tape (outside
        the timing); each call is one ``tape.gradient`` with ``dy`` as the upstream gradient."""
        tf = self.library
        dy = tf.constant(data["dy"])
        forward = BACKWARD_OPS[case.op]
        w = None
        if forward == "conv2d":
            w = tf.Variable(data["w"] if case.groups == 1 else data["w"].transpose(0, 1, 3, 2))
        xv = tf.Variable(x)
        with tf.GradientTape(persistent=True) as tape:
            if forward == "relu":
                y = tf.nn.relu(xv)
            elif forward == "max_pool2d":
                y = tf.nn.max_pool2d(xv, k, strides, pad)
            elif case.groups == 1:
                y = tf.nn.conv2d(xv, w, strides, pad)
            else:
                y = tf.nn.depthwise_conv2d(xv, w, strides, pad)
        if case.op == "conv2d_grad_filters":
            if case.groups == 1:
                return Prepared(lambda: tape.gradient(y, w, output_gradients=dy), _numpy)
            return Prepared(lambda: tape.gradient(y, w, output_gradients=dy),
                            lambda t: _numpy(t).transpose(0, 1, 3, 2))
        return Prepared(lambda: tape.gradient(y, xv, output_gradients=dy), _numpy)


class KerasPredictEngine(TensorFlowEngine):
    """Keras's own ``model.predict`` on the lesson model, what a lesson's notebook runs.

    The ``tf`` engine times the direct call ``model(x)``, the faster of the two;
    this one times ``predict(x, batch_size=N, verbose=0)``.
    """
    name = "keras-predict"

    def supports(self, case):
        return case.op == "model" and super().supports(case)

    def prepare(self, case, data):
        model = keras_lesson_model(data["weights"])
        x = data["x"]
        return Prepared(lambda: model.predict(x, batch_size=case.N, verbose=0))


def keras_lesson_model(weights):
    """The lesson's Fashion-MNIST model in Keras 3, with the given weights."""
    keras = importlib.import_module("keras")
    return build_lesson_model(keras.Sequential, keras.Input, keras.layers, weights)


class quiet_native_stderr:
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


def _numpy(t):
    return t.numpy()
