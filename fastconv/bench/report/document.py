"""The JSON document of a run: machine, versions, command, commit; saving and loading.

A *document* (what ``--json`` saves) is a dict::

    {"schema": 1, "meta": {...machine, versions, command, commit...},
     "runs": [run, ...]}          # one run per thread count, see runner.run

Documents name libraries and their versions, never a file of the machine
that made them: :func:`without_paths` takes paths out of every text that
goes in (configuration entries, the command line).
"""
import datetime
import json
import os
import platform
import re
import subprocess

__all__ = ["SCHEMA", "machine_info", "make_document", "write_json", "load_json", "git_commit",
           "git_toplevel", "without_paths", "public_facts", "blas_libraries"]

SCHEMA = 1

#: an absolute path (POSIX, ``~``, or a Windows drive)
_ABS_PATH = re.compile(r"(?<![\w.])(?:~|[A-Za-z]:)?[/\\][^\s,;()'\"]+")
#: a shared library's file name, with the separator after it
_LIBRARY_FILE = re.compile(r"[\w.+-]+\.(?:so|dylib|dll)(?:\.\d+)*(?:,\s*|\s+|(?=\)))")


def without_paths(text):
    """``text`` with absolute paths cut to their last part and library file names removed.

    >>> without_paths("openblas 0.3.30 (libopenblas-ab12.so, pthreads) /usr/lib/x.so")
    'openblas 0.3.30 (pthreads)'
    >>> without_paths("fastconv bench --json /home/me/runs/run.json")
    'fastconv bench --json run.json'
    """
    text = _ABS_PATH.sub(lambda m: re.split(r"[/\\]", m.group().rstrip("/\\"))[-1],
                         str(text))
    return _LIBRARY_FILE.sub("", text + " ").strip()


def public_facts(entry):
    """A configuration entry without the values that are paths, other values scrubbed."""
    return {k: without_paths(v) if isinstance(v, str) else v for k, v in entry.items()
            if not (isinstance(v, str) and _ABS_PATH.fullmatch(v.strip()))}


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512vl",
              "avx512_vnni", "avx512_bf16", "amx_tile", "neon", "asimd")


def _cpu_flags():
    """The SIMD-related flags of the first CPU in /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return [fl for fl in SIMD_FLAGS if fl in have]
    except OSError:
        pass
    return []


def _git(cwd, *args):
    """stdout of ``git args`` run in ``cwd``, or None when git fails or is missing."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_toplevel(path=None):
    """The root of the git work tree holding ``path`` (default: cwd), or None."""
    return _git(path or os.getcwd(), "rev-parse", "--show-toplevel")


def git_commit(path=None):
    """``(commit, dirty)`` of the git work tree holding ``path`` (default: cwd), or (None, None)."""
    cwd = path or os.getcwd()
    commit = _git(cwd, "rev-parse", "HEAD")
    if not commit:
        return None, None
    status = _git(cwd, "status", "--porcelain", "--untracked-files=no")
    return commit, bool(status)


def blas_libraries():
    """Every BLAS loaded in this process, as "owner: name version (architecture, threading)".

    The owner is the Python package whose wheel ships the library (``numpy``,
    ``scipy``...), or ``system``; the library's path itself is not kept.
    """
    try:
        from threadpoolctl import threadpool_info
        infos = threadpool_info()
    except Exception:  # threadpoolctl missing or unable to inspect this process
        return []
    out = []
    for lib in infos:
        if lib.get("user_api") == "blas":
            extra = ", ".join(str(lib[k]) for k in ("architecture", "threading_layer")
                              if lib.get(k))
            text = f"{lib.get('internal_api', '?')} {lib.get('version') or ''}".strip()
            folder = os.path.basename(os.path.dirname(lib.get("filepath") or ""))
            owner = folder[:-len(".libs")] if folder.endswith(".libs") else "system"
            out.append(f"{owner}: {text}" + (f" ({extra})" if extra else ""))
    return sorted(set(out))


def machine_info():
    """CPU model, cores, Python, BLAS, fastconv's configuration (backends, SIMD path)."""
    import fastconv
    cfg = fastconv.config()
    simd = {name: public_facts({k: v for k, v in entry.items() if k != "available"})
            for name, entry in cfg["backends"].items()}
    return {"cpu": _cpu_model(), "cpu_flags": _cpu_flags(), "logical_cpus": os.cpu_count(),
            "available_cores": cfg["available cores"], "python": cfg["python"],
            "platform": cfg["platform"], "fastconv": cfg["fastconv"], "numpy": cfg["numpy"],
            "blas": blas_libraries(), "backends": simd}


def make_document(runs, argv, suite, commit=None):
    """Bundle runs with the command line, commit, date and machine description.

    ``commit`` defaults to HEAD of the git checkout holding the current directory
    (the tree the user benchmarks), with whether that tree has local changes.
    """
    dirty = False
    if commit is None:
        commit, dirty = git_commit(os.getcwd())
    versions = {}
    for run in runs:
        versions.update(run.get("engines", {}))
    return {"schema": SCHEMA,
            "meta": {"command": without_paths("fastconv bench " + " ".join(argv)),
                     "suite": suite,
                     "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
                         timespec="seconds"),
                     "commit": commit, "dirty": dirty, "machine": machine_info(),
                     "versions": versions, "flop_convention": "2 x multiply-add",
                     "dtype": "float32", "layout": "NHWC"},
            "runs": runs}


def write_json(doc, path):
    """Save a document (creating the directory)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def load_json(path):
    """Read a document saved by ``--json``; raise ValueError when it is not one."""
    with open(path) as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or "runs" not in doc:
        raise ValueError(f"{path} is not a fastconv bench result (no 'runs').")
    return doc


