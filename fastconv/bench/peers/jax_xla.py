"""JAX: XLA-compiled convolution, ReLU and max pooling on the CPU.

Each case is one ``jax.jit``-compiled function of NHWC inputs (HWIO filters),
compiled in the untimed warm-up call; a timed call ends with
``jax.block_until_ready`` so that XLA's asynchronous dispatch does not hide
the work.  Convolution is ``jax.lax.conv_general_dilated`` with TensorFlow's
explicit padding amounts and ``feature_group_count`` for grouped and
depthwise filters; ReLU is ``jax.nn.relu``; max pooling is
``jax.lax.reduce_window`` with ``max`` and a ``-inf`` initial value, so that
padding never wins a window (TensorFlow's rule).

Threads: XLA's CPU client sizes its thread pool once, when JAX first starts,
and has no setting for a count in between: it runs on every core this
process may use, or on one thread with the flags its maintainers give for
that (:data:`SINGLE_THREAD_FLAGS`, jax-ml/jax#743).  Other counts are listed
as unavailable, and so is a count other than the one JAX was started with in
this process (``fastconv bench`` then runs each count in its own process).
"""
import os
import sys

from ..._threads import available_cores
from . import Engine, Prepared, Unavailable, import_library

#: ``XLA_FLAGS`` that keep XLA's CPU client on the calling thread
SINGLE_THREAD_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

#: threads the XLA CPU client of this process was started with (None: not started by us)
_started_threads = None


def _start_jax(threads):
    """Import JAX and start its CPU client for ``threads`` (1 or every core); return jax."""
    global _started_threads
    if "jax" in sys.modules and _started_threads is None:
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
        return case.op in ("conv2d", "relu", "max_pool2d") and case.dtype == "float32"

    def prepare(self, case, data):
        jax = self.library
        lax = jax.lax
        x = jax.device_put(data["x"])
        win = case.window
        pads = [(win.pad_top, win.pad_bottom), (win.pad_left, win.pad_right)]
        if case.op == "conv2d":
            w = jax.device_put(data["w"])
            fn = jax.jit(lambda a, b: lax.conv_general_dilated(
                a, b, (case.SH, case.SW), pads, rhs_dilation=(1, 1),
                dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=case.groups))
            return Prepared(lambda: jax.block_until_ready(fn(x, w)))
        if case.op == "relu":
            fn = jax.jit(jax.nn.relu)
        elif case.op == "max_pool2d":
            fn = jax.jit(lambda a: lax.reduce_window(
                a, -jax.numpy.inf, lax.max, (1, case.KH, case.KW, 1), (1, case.SH, case.SW, 1),
                [(0, 0), *pads, (0, 0)]))
        else:
            raise ValueError(f"unknown op {case.op!r}")
        return Prepared(lambda: jax.block_until_ready(fn(x)))
