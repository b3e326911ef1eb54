"""JAX: XLA-compiled convolution, ReLU and max pooling on the CPU.

Each case is one ``jax.jit``-compiled function of NHWC inputs (HWIO filters),
compiled in the untimed warm-up call; a timed call ends with
``jax.block_until_ready`` so that XLA's asynchronous dispatch does not hide
the work.  Convolution is ``jax.lax.conv_general_dilated`` with TensorFlow's
explicit padding amounts and ``feature_group_count`` for grouped and
depthwise filters; ReLU is ``jax.nn.relu``; max pooling is
``jax.lax.reduce_window`` with ``max`` and a ``-inf`` initial value, so that
padding never wins a window (TensorFlow's rule).

Gradients (the backward ops of :data:`..suite.BACKWARD_OPS`) are ``jax.vjp``
of the same forward functions: the forward is run once, outside the timing,
and its vjp function (a pytree holding the residuals) is the argument of a
``jax.jit``-compiled call that applies it to ``dy``, so a timed call is the
backward alone, as for the PyTorch and TensorFlow peers: the input and filter
gradients of ``conv_general_dilated``, the max-pool backward (XLA's
select-and-scatter, the vjp of ``reduce_window`` with ``max``) and the ReLU
backward.

Threads: XLA's CPU client sizes its thread pool once, when JAX first computes,
and has no setting for a count in between: it runs on every core this
process may use, or on one thread with the flags its maintainers give for
that (:data:`SINGLE_THREAD_FLAGS`, jax-ml/jax#743).  Other counts are listed
as unavailable, and so is a count other than the one JAX was started with in
this process (``fastconv bench`` then runs each count in its own process).
"""
import os
import sys

from ..._threads import available_cores
from ..suite import BACKWARD_OPS
from . import Engine, Prepared, Unavailable, import_library

#: ``XLA_FLAGS`` that keep XLA's CPU client on the calling thread
SINGLE_THREAD_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

#: threads the XLA CPU client of this process was started with (None: not started by us)
_started_threads = None


def _client_started():
    """Whether JAX's backends (the XLA CPU client) have been created in this process.

    Importing JAX does not create them (TensorFlow's import imports JAX); the
    first computation does, reading ``XLA_FLAGS`` then.  Where the answer
    cannot be read (JAX's internals moved), a started client is assumed.
    """
    try:
        from jax._src import xla_bridge
        return bool(xla_bridge._backends)
    except Exception:
        return True


def _start_jax(threads):
    """Import JAX and start its CPU client for ``threads`` (1 or every core); return jax."""
    global _started_threads
    if "jax" in sys.modules and _started_threads is None and _client_started():
        # imported by someone else: its client follows XLA_FLAGS as they were
        jax = import_library("jax")
        flags = os.environ.get("XLA_FLAGS", "")
        _started_threads = 1 if SINGLE_THREAD_FLAGS in flags else available_cores()
        return jax
    if _started_threads is None:
        saved = {k: os.environ.get(k) for k in ("XLA_FLAGS", "JAX_PLATFORMS")}
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        if threads == 1:
            os.environ["XLA_FLAGS"] = f"{saved['XLA_FLAGS'] or ''} {SINGLE_THREAD_FLAGS}".strip()
        try:
            jax = import_library("jax")
            jax.block_until_ready(jax.numpy.zeros(1) + 1)  # start the client with these flags
            _started_threads = threads
        finally:  # the flags were read; do not leave them to child processes
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return import_library("jax")


class JaxEngine(Engine):
    """``jax.lax`` / ``jax.nn`` under ``jax.jit`` on NHWC arrays already on the device."""
    name = "jax"
    needs_fresh_process = True

    def setup(self, threads):
        cores = available_cores()
        if threads not in (1, cores):
            raise Unavailable(f"XLA's CPU client runs on 1 thread or on all {cores} cores; "
                              f"it has no setting for {threads}")
        jax = _start_jax(1 if threads == 1 else cores)
        if _started_threads != threads:
            raise Unavailable(f"JAX was started earlier in this process for {_started_threads} "
                              f"thread(s); cannot hold it to {threads} (run each --threads "
                              f"value in its own process)")
        self.library = jax

    def supports(self, case):  # float64 needs jax_enable_x64, a process-wide switch
        ops = ("conv2d", "relu", "max_pool2d", "conv2d_grad_input", "conv2d_grad_filters",
               "max_pool2d_backward", "relu_backward")
        return case.op in ops and case.dtype == "float32"

    def _forward(self, case, op):
        """The jit-able forward function of ``op`` (``conv2d`` takes ``(x, w)``)."""
        jax = self.library
        lax = jax.lax
        win = case.window
        pads = [(win.pad_top, win.pad_bottom), (win.pad_left, win.pad_right)]
        if op == "conv2d":
            return lambda a, b: lax.conv_general_dilated(
                a, b, (case.SH, case.SW), pads, rhs_dilation=(1, 1),
                dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=case.groups)
        if op == "relu":
            return jax.nn.relu
        if op == "max_pool2d":
            return lambda a: lax.reduce_window(
                a, -jax.numpy.inf, lax.max, (1, case.KH, case.KW, 1), (1, case.SH, case.SW, 1),
                [(0, 0), *pads, (0, 0)])
        raise ValueError(f"unknown op {op!r}")

    def prepare(self, case, data):
        jax = self.library
        x = jax.device_put(data["x"])
        if case.op in BACKWARD_OPS:
            return self._prepare_backward(case, data, x)
        fn = jax.jit(self._forward(case, case.op))
        if case.op == "conv2d":
            w = jax.device_put(data["w"])
            return Prepared(lambda: jax.block_until_ready(fn(x, w)))
        return Prepared(lambda: jax.block_until_ready(fn(x)))

    def _prepare_backward(self, case, data, x):
        """``jax.vjp`` taken once (the forward, outside the timing); each call applies the
        jit-compiled vjp function to ``dy``."""
        jax = self.library
        forward = self._forward(case, BACKWARD_OPS[case.op])
        if case.op == "conv2d_grad_input":
            w = jax.device_put(data["w"])
            _, vjp = jax.vjp(lambda a: forward(a, w), x)
        elif case.op == "conv2d_grad_filters":
            w = jax.device_put(data["w"])
            _, vjp = jax.vjp(lambda b: forward(x, b), w)
        else:
            _, vjp = jax.vjp(forward, x)
        dy = jax.device_put(data["dy"])
        apply = jax.jit(lambda f, g: f(g)[0])
        return Prepared(lambda: jax.block_until_ready(apply(vjp, dy)))
