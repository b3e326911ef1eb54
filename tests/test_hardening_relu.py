"""Ctrl-C during a long ReLU (or ReLU gradient) of the compiled backends (next to the
interrupt tests of ``test_hardening.py``, whose subprocess helper it reuses).

The ReLU runs in pieces (Cython: inside the kernel; Numba: one kernel call each) of ``RELU_INTERRUPT_ELEMENTS`` elements and looks at
pending signals between them, so SIGINT raises ``KeyboardInterrupt`` about a
piece after it arrives (a few milliseconds; the target is 0.2 s), with the
output only partly written -- the proof that the kernel itself stopped.
"""
import pytest

from cases import BACKENDS

try:
    from test_hardening import _probe
except ImportError:   # run on its own, without the sibling module on the path
    import subprocess
    import sys
    import textwrap

    def _probe(code, timeout=120, env=None):
        """Run ``code`` in a fresh interpreter; return its CompletedProcess."""
        try:
            return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                                  capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"probe hung for {timeout} s:\n{exc.stdout}\n{exc.stderr}")

_RELU_INTERRUPT_PROBE = """
    import os, signal, threading, time
    import numpy as np
    import fastconv
    fastconv.relu(np.ones(8, np.float32), backend="{backend}")  # loaded (and compiled) first
    n = {threads}
    x = np.ones(1 << 28, np.float32)            # 1 GiB: a few hundred ms of memory traffic
    out = np.full_like(x, -1.0)
    call = {call}
    sent = []
    def interrupt():
        sent.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)
    threading.Timer(0.03, interrupt).start()
    try:
        call()
        print("finished")
    except KeyboardInterrupt:
        delay = time.perf_counter() - sent[0]
        print("written", float(np.count_nonzero(out == 1.0)) / out.size)
        print("interrupted after", delay)
"""


#: the interrupted call; the gradient writes into a preallocated array through the driver,
#: so that the probe can see how much of it was written
CALLS = {
    "relu": 'lambda: fastconv.relu(x, out=out, backend="{backend}", num_threads=n)',
    "relu_backward": ('lambda: fastconv._backends.driver("{backend}").relu_backward('
                      'x, x, out, n)'),
}


@pytest.mark.parametrize("backend", [b for b in ("cython", "numba") if b in BACKENDS])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("op", sorted(CALLS))
def test_ctrl_c_interrupts_a_long_relu(backend, threads, op):
    call = CALLS[op].format(backend=backend)
    res = _probe(_RELU_INTERRUPT_PROBE.format(threads=threads, backend=backend, call=call))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "interrupted after" in res.stdout, res.stdout
    written = float(res.stdout.split("written")[1].split()[0])
    delay = float(res.stdout.split("interrupted after")[1])
    assert written < 1.0, res.stdout   # stopped inside the kernel, not after it
    assert delay < 0.5, delay          # about one piece; 0.2 s is the target on a busy machine
