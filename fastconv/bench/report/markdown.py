"""A run as Markdown: machine, versions, method, and one table per thread count.

:func:`results_markdown` writes what ``benchmarks/make_results.py`` puts in
``benchmarks/RESULTS.md``; that script adds the project's goals (data in
``benchmarks/targets.json``) after it.  Measurements only: this module judges
nothing.  Text taken from a document passes :func:`~.document.without_paths`
again, so that a run saved before that rule existed loses its local paths too.
"""
from .document import public_facts, without_paths
from .tables import (FLOP_NOTE, LIMIT_NOTE, RESULT_HEADER, bandwidth_note, engine_geomeans,
                     load_notes, peak_note, result_cells)

__all__ = ["results_markdown", "header_markdown", "part_markdown", "markdown_table"]


def markdown_table(header, rows):
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


#: how every run is made, in the words of RESULTS.md's "Method" section
METHOD = (
    FLOP_NOTE,
    "All engines in one process, interleaved rounds (round-robin over engines, starting "
    "engine rotating), median of the rounds after a warm-up call.",
    "Every engine held to the same thread count (fastconv `num_threads=`, OpenMP/BLAS via "
    "threadpoolctl, TF intra-op N / inter-op 1, `torch.set_num_threads`, "
    "`cv2.setNumThreads`, ONNX Runtime `intra_op_num_threads`; JAX's XLA client runs on one "
    "thread or on every core, and is not run at other counts; SciPy ndimage is "
    "single-threaded).",
    "Every engine's result is checked against the NumPy reference once per shape; a failed "
    "check is shown and excluded from the ratios.",
    "fastconv calls (`fastconv.im2col` included) reuse an `out=` buffer, and so do peers "
    "whose API accepts one (PyTorch conv/pool, TensorFlow, JAX and ONNX Runtime allocate "
    "their result).",
    "PyTorch has no asymmetric padding: where TF's 'SAME' puts the odd pixel at the "
    "bottom/right (stride 2) it gets an input padded once outside the timing (favours "
    "PyTorch).",
    "JAX: each case is one `jax.jit` function, compiled in the warm-up call, timed up to "
    "`jax.block_until_ready`. ONNX Runtime: a one-node model per case, only `session.run` "
    "timed.",
    "% of peak: a float32 sgemm through NumPy's BLAS at the same thread count, timed in "
    "every round of every case; each row uses its own case's probes.",
    "Limit: " + LIMIT_NOTE.split(" = ", 1)[1] + "; the bandwidth probe is a large "
    "`np.copyto` split over the run's threads, timed like the peak.",
    "`--isa`: the run was made in a child process whose environment holds fastconv, oneDNN, "
    "OpenBLAS and ATen to a lesser instruction set; the header says what each library "
    "reported. `--busy K`: K spinning processes ran beside the timed part.",
    "extra MB: rise of the resident-memory high-water mark during one call "
    "(`/proc/self/clear_refs` + `VmHWM`).",
    "With several thread counts and TensorFlow or JAX selected, each count runs in its own "
    "process (they fix their thread pools once), so the scaling ratios compare runs made one "
    "after the other.",
    "IQR = interquartile range of the rounds, as % of the median.",
    "vs best = best correct peer's time / this engine's time (>1: faster than every peer).",
)


def _machine(meta):
    m = meta["machine"]
    lines = [f"- CPU: {m['cpu']} ({m['logical_cpus']} logical CPUs, {m['available_cores']} "
             f"available to this process)",
             f"- SIMD flags: {' '.join(m.get('cpu_flags', [])) or 'unknown'}",
             f"- Python {m['python']}, {m['platform']}"]
    if m.get("blas"):
        lines.append(f"- BLAS: {'; '.join(m['blas'])}")
    lines.append(f"- fastconv {m['fastconv']}; backends:")
    for name, entry in m["backends"].items():
        facts = ", ".join(f"{k}: {v}" for k, v in public_facts(entry).items())
        lines.append(f"  - {name}: {facts or 'available'}")
    lines.append("- peers: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()
                                         if not k.startswith("fastconv")))
    return lines


def _run_section(run, level=2):
    title = f"{'#' * level} {run['threads']} thread(s)"
    if run.get("isa"):
        title += f", --isa {run['isa']} (emulated)"
    if run.get("busy"):
        title += f", --busy {run['busy']}"
    lines = [title, ""]
    for note in load_notes(run) + [peak_note(run), bandwidth_note(run)]:
        if note:
            lines += [note[0].upper() + note[1:] + ".", ""]
    if run.get("loadavg_start") is not None:
        lines += [f"Load average (1 min) at start/end: {run['loadavg_start']} / "
                  f"{run['loadavg_end']}.", ""]
    lines.append(markdown_table(RESULT_HEADER, [result_cells(r) for r in run["results"]]))
    lines.append("")
    lines.append("Geometric mean of 'vs best' per engine: " + ", ".join(
        f"{k} {'-' if g is None else f'{g:.2f}x'} ({n})"
        for k, (g, n) in engine_geomeans(run).items()))
    if run.get("unavailable"):
        lines.append("")
        lines.append("Not run: " + "; ".join(f"{k} ({v})" for k, v in run["unavailable"].items()))
    lines.append("")
    return lines


def header_markdown(doc, command):
    """The top of RESULTS.md: title, exact command, date and commit, machine and method."""
    meta = doc["meta"]
    lines = ["# fastconv benchmark results", "",
             "Generated by `benchmarks/make_results.py` from a real run; do not edit by hand.",
             "", f"Command: `{without_paths(command)}`", "",
             f"Date (UTC): {meta['date']}; commit `{meta.get('commit')}`"
             + (" (with uncommitted changes)" if meta.get("dirty") else ""), "",
             "## Machine", ""]
    lines += _machine(meta)
    lines += ["", "## Method", ""] + [f"- {m}" for m in METHOD] + [""]
    return lines


def part_markdown(doc, title, command=None):
    """One part of RESULTS.md made of a ``fastconv bench`` run: a ``##`` heading, the
    run's own command and one ``###`` table per thread count."""
    meta = doc["meta"]
    lines = [f"## {title}", ""]
    if command or meta.get("command"):
        lines += [f"Run: `{without_paths(command or meta['command'])}`, "
                  f"{meta['date']}.", ""]
    for run in doc["runs"]:
        lines += _run_section(run, level=3)
    return "\n".join(lines)


def results_markdown(doc, command):
    """RESULTS.md's measurements: machine, versions, exact command, method and tables."""
    lines = header_markdown(doc, command)
    for run in doc["runs"]:
        lines += _run_section(run)
    return "\n".join(lines)
