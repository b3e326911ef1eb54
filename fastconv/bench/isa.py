"""``--isa avx2|avx512|generic``: the whole comparison as on a lesser CPU.

Every library that dispatches on the CPU at load time is told to stop at the
chosen instruction set, through the environment of a child process (the
variables are read when the libraries load, so the measurement runs in a
fresh interpreter; see ``cli._child_run``):

=========  ===============  ==================  =================  ===================
--isa      FASTCONV_SIMD    ONEDNN_MAX_CPU_ISA  OPENBLAS_CORETYPE  ATEN_CPU_CAPABILITY
=========  ===============  ==================  =================  ===================
avx512     avx512           AVX512_CORE         SkylakeX           avx512
avx2       avx2             AVX2                Haswell            avx2
generic    generic          SSE41               Nehalem            default
=========  ===============  ==================  =================  ===================

fastconv reads ``FASTCONV_SIMD``; oneDNN (PyTorch's and TensorFlow's
convolutions) ``ONEDNN_MAX_CPU_ISA``; OpenBLAS (NumPy's matmul, the peak
probe, fastconv's im2col GEMM) ``OPENBLAS_CORETYPE`` (a preset
``OPENBLAS_L2_SIZE`` is dropped in the child, OpenBLAS then sizes its
blocks for the core type); PyTorch's own ATen kernels (pooling, ReLU)
``ATEN_CPU_CAPABILITY``.  ONNX Runtime's MLAS, XLA and OpenCV have no such
switch here and run at the CPU's best: :func:`verify` says so.

:func:`verify`, run in the child, checks that each setting took effect --
fastconv's ``config()``, threadpoolctl's ``architecture`` of every OpenBLAS,
``torch.backends.cpu.get_cpu_capability()`` and the ISA oneDNN reports in its
verbose output for one tiny convolution (PyTorch in this process, TensorFlow
in a short-lived probe process with ``ONEDNN_VERBOSE=1``).
"""
import os
import re
import subprocess
import sys
import tempfile

__all__ = ["ISAS", "ISA_ENV", "cpu_best_isa", "check_isa", "child_env", "verify",
           "describe"]

#: --isa values, lowest first
ISAS = ("generic", "avx2", "avx512")
#: --isa -> the environment that holds every library to it
ISA_ENV = {
    "avx512": {"FASTCONV_SIMD": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
               "OPENBLAS_CORETYPE": "SkylakeX", "ATEN_CPU_CAPABILITY": "avx512"},
    "avx2": {"FASTCONV_SIMD": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "OPENBLAS_CORETYPE": "Haswell", "ATEN_CPU_CAPABILITY": "avx2"},
    "generic": {"FASTCONV_SIMD": "generic", "ONEDNN_MAX_CPU_ISA": "SSE41",
                "OPENBLAS_CORETYPE": "Nehalem", "ATEN_CPU_CAPABILITY": "default"},
}
#: variables the child drops (preset on some machines for the real CPU)
DROPPED = ("OPENBLAS_L2_SIZE",)
#: what each library should then report, lower-cased (OpenBLAS: threadpoolctl's name)
EXPECTED = {
    "avx512": {"fastconv": "avx512", "openblas": "skylakex", "onednn": "avx-512",
               "aten": "avx512"},
    "avx2": {"fastconv": "avx2", "openblas": "haswell", "onednn": "avx2", "aten": "avx2"},
    "generic": {"fastconv": "generic", "openblas": "nehalem", "onednn": "sse4.1",
                "aten": "default"},
}


def cpu_best_isa():
    """The best of :data:`ISAS` this CPU runs: fastconv's own detection, else /proc/cpuinfo."""
    try:
        from .._backends.cython.driver import cpu_simd_level
        return cpu_simd_level()
    except Exception:  # compiled backend not built
        pass
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2"
    return "generic"


def check_isa(isa):
    """Raise ValueError unless ``isa`` is known and at most this CPU's best."""
    if isa not in ISAS:
        raise ValueError(f"--isa must be one of {', '.join(ISAS)}; got {isa!r}.")
    best = cpu_best_isa()
    if ISAS.index(isa) > ISAS.index(best):
        raise ValueError(f"--isa {isa} asks for more than this CPU has: its best is {best} "
                         f"(--isa can only emulate a lesser CPU).")


def child_env(isa, base=None):
    """``base`` (default ``os.environ``) with the variables of ``isa`` set."""
    env = dict(os.environ if base is None else base)
    for k in DROPPED:
        env.pop(k, None)
    env.update(ISA_ENV[isa])
    return env


def _fastconv_simd():
    import fastconv
    entry = fastconv.config()["backends"].get("cython", {})
    return entry.get("simd") if entry.get("available") else None


def _openblas_architectures():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return sorted({str(lib.get("architecture")) for lib in threadpool_info()
                   if lib.get("internal_api") == "openblas"})


_ISA_LINE = re.compile(r"onednn_verbose.*?,info,cpu,isa:([^\n]*)")


def _onednn_isa(text):
    """The ISA in oneDNN verbose output ('Intel AVX2', ...), else None."""
    m = _ISA_LINE.search(text)
    return m.group(1).strip() if m else None


class _capture_stdout_fd:
    """Collect what native code writes to file descriptor 1 inside the block."""

    def __enter__(self):
        sys.stdout.flush()
        self.file = tempfile.TemporaryFile(mode="w+b")
        self.saved = os.dup(1)
        os.dup2(self.file.fileno(), 1)
        return self

    def __exit__(self, *exc):
        os.dup2(self.saved, 1)
        os.close(self.saved)
        self.file.seek(0)
        self.text = self.file.read().decode(errors="replace")
        self.file.close()
        return False


def _torch_facts():
    import torch
    F = torch.nn.functional
    x = torch.ones(2, 16, 32, 32)
    w = torch.ones(16, 16, 3, 3)
    with _capture_stdout_fd() as cap:
        with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
            F.conv2d(x, w)
            F.conv2d(x.contiguous(memory_format=torch.channels_last),
                     w.contiguous(memory_format=torch.channels_last))
    return _onednn_isa(cap.text), torch.backends.cpu.get_cpu_capability()


_TF_PROBE = """
import tensorflow as tf
x = tf.ones([1, 12, 12, 16]); w = tf.ones([3, 3, 16, 16])
tf.nn.conv2d(x, w, 1, 'SAME').numpy()
"""


def _tf_onednn_isa():
    env = dict(os.environ, ONEDNN_VERBOSE="1", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", _TF_PROBE], env=env, capture_output=True,
                          text=True, timeout=300)
    return _onednn_isa(done.stdout)


def _judge(got, want):
    if not got:
        return "not verified"
    return "ok" if want in str(got).lower() else "NOT APPLIED"


def verify(isa, engines=()):
    """Check, in this process, that the libraries run at ``isa``.

    ``engines``: names of the engines set up (PyTorch and TensorFlow are
    probed only when they take part).  Returns ``{library: {"setting",
    "reported", "status"}}`` with status ``'ok'``, ``'NOT APPLIED'``,
    ``'not verified'`` (nothing to read) or ``'not limited'`` (no switch).
    """
    want, env = EXPECTED[isa], ISA_ENV[isa]
    facts = {}

    def add(lib, setting, reported, status=None):
        facts[lib] = {"setting": setting, "reported": reported,
                      "status": status or _judge(reported, want[_KEY[lib]])}

    add("fastconv", f"FASTCONV_SIMD={os.environ.get('FASTCONV_SIMD')}", _fastconv_simd())
    archs = _openblas_architectures()
    if archs:
        bad = [a for a in archs if want["openblas"] not in a.lower()]
        add("openblas", f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}",
            ", ".join(archs), "NOT APPLIED" if bad else "ok")
    names = set(engines)
    if names & {"torch", "torch-cl"}:
        try:
            onednn, aten = _torch_facts()
        except Exception as exc:
            onednn, aten = None, None
            facts["torch error"] = {"setting": "", "reported": repr(exc),
                                    "status": "not verified"}
        add("onednn (torch)", f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA')}",
            onednn)
        add("aten (torch)", f"ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY')}",
            aten)
    if names & {"tf", "keras-predict"}:
        try:
            tf_isa = _tf_onednn_isa()
        except Exception:
            tf_isa = None
        add("onednn (tf)", f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA')}",
            tf_isa)
    for name in ("onnxruntime", "jax", "opencv"):
        if name in names:
            facts[name] = {"setting": "-", "reported": "CPU's best",
                           "status": "not limited"}
    for k, v in env.items():  # what the child saw, for the record
        facts.setdefault("environment", {"setting": "", "reported": "", "status": ""})
        facts["environment"]["setting"] += f"{k}={os.environ.get(k)} "
    facts["environment"]["setting"] = facts["environment"]["setting"].strip()
    return facts


_KEY = {"fastconv": "fastconv", "openblas": "openblas", "onednn (torch)": "onednn",
        "onednn (tf)": "onednn", "aten (torch)": "aten"}


def describe(run):
    """The header line of a run made with ``--isa`` (empty without)."""
    isa = run.get("isa")
    if not isa:
        return ""
    facts = run.get("isa_check") or {}
    cells = [f"{lib} {f['reported']} ({f['status']})" for lib, f in facts.items()
             if lib not in ("environment", "cpu")]
    cpu = facts.get("cpu", {}).get("reported", "?")
    return (f"--isa {isa}: emulating a {isa} CPU on a {cpu} one; what each library uses: "
            + "; ".join(cells))
