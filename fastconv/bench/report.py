"""Reporting: text tables, JSON documents, comparisons, plots, RESULTS.md and targets.

A *document* (what ``--json`` saves) is a dict::

    {"schema": 1, "meta": {...machine, versions, command, commit...},
     "runs": [run, ...]}          # one run per thread count, see runner.run

Ratios are always "speed-ups": a value above 1 means the row is faster than
what it is compared with.
"""
import datetime
import json
import math
import os
import platform
import subprocess

__all__ = ["machine_info", "make_document", "format_run", "format_scaling", "format_compare",
           "plot", "write_json", "load_json", "evaluate_targets", "markdown", "git_commit"]

SCHEMA = 1
FLOP_NOTE = "GFLOP/s counts 2 FLOPs per multiply-add (2 x N*OH*OW*C_out*KH*KW*C_in/groups)."


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


def machine_info():
    """CPU model, cores, Python, fastconv's configuration (backends, SIMD path)."""
    import fastconv
    cfg = fastconv.config()
    simd = {name: {k: v for k, v in entry.items() if k != "available"}
            for name, entry in cfg["backends"].items()}
    return {"cpu": _cpu_model(), "cpu_flags": _cpu_flags(), "logical_cpus": os.cpu_count(),
            "available_cores": cfg["available cores"], "python": cfg["python"],
            "platform": cfg["platform"], "fastconv": cfg["fastconv"], "numpy": cfg["numpy"],
            "backends": simd}


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
            "meta": {"command": "fastconv bench " + " ".join(argv), "suite": suite,
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


# ----------------------------------------------------------------- formatting
def _fmt_time(t):
    if t is None:
        return "-"
    if t >= 1:
        return f"{t:.2f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.2f} ms"
    return f"{t * 1e6:.1f} us"


def _fmt(v, spec, suffix=""):
    return "-" if v is None else format(v, spec) + suffix


def _table(header, rows, align=None):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    align = align or ["<"] * len(header)
    out = []
    for i, line in enumerate([header] + rows):
        out.append("  ".join(format(str(c), a + str(w)) for c, w, a in zip(line, widths, align)))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _iqr(row):
    """The row's interquartile range as a percentage of its median ('-' if unknown)."""
    if row.get("iqr_s") is None or not row.get("median_s"):
        return "-"
    return f"{100 * row['iqr_s'] / row['median_s']:.0f}%"


def geomean(values):
    """Geometric mean of positive values (None when there are none)."""
    vals = [v for v in values if v and v > 0]
    if not vals:
        return None
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def format_run(run, suite=""):
    """The side-by-side table of one run, with its header notes and a geometric mean."""
    peak = run.get("peak_gflops")
    lines = [f"fastconv bench -- suite {suite or '?'}, float32 NHWC, {run['threads']} thread(s), "
             f"median of {run['repeat']} interleaved rounds",
             FLOP_NOTE]
    if peak:
        lo, hi = run.get("peak_range_gflops") or (peak, peak)
        lines.append(f"peak = NumPy sgemm {run['peak_size']}^3 float32 at {run['threads']} "
                     f"thread(s), timed in every round of this run: median {peak:.1f} GFLOP/s "
                     f"(range {lo:.0f}-{hi:.0f}); %peak uses each case's own probes")
    lines.append("IQR = interquartile range of the rounds, as % of the median")
    lines.append("vs best = best correct peer's time / this engine's time (>1: faster than "
                 "every peer); relu/pool/im2col show GB/s (bytes read + written)")
    mem = ("resident-memory high-water rise during one call (VmHWM)"
           if run.get("memory_method") == "rss-hwm" else
           "peak Python-visible allocations of one call (tracemalloc)")
    lines.append(f"extra MB = {mem}")
    if run.get("loadavg_start") is not None:
        lines.append(f"load average (1 min) at start/end: {run['loadavg_start']} / "
                     f"{run['loadavg_end']} on {os.cpu_count()} logical CPUs -- a busy machine "
                     f"makes absolute figures noisy; the ratios are measured side by side")
    lines.append("fastconv calls reuse an out= buffer; so do peers whose API accepts one")
    if run.get("engines"):
        lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in run["engines"].items()))
    lines.append("")
    header = ["case", "shape", "engine", "time", "IQR", "GFLOP/s", "GB/s", "%peak", "vs best",
              "extra MB", "check"]
    rows = []
    prev = None
    for r in run["results"]:
        first = r["case"] != prev
        prev = r["case"]
        check = r["check"] if r["check"] == "ok" else f"{r['check']}: {r['detail']}"
        rows.append([r["case"] if first else "", r["shape"] if first else "", r["engine"],
                     _fmt_time(r["median_s"]), _iqr(r), _fmt(r["gflops"], ".1f"),
                     _fmt(r["gbytes_s"], ".1f") if not r["flops"] else "",
                     _fmt(r["pct_peak"], ".0f", "%"),
                     _fmt(r["vs_best_peer"], ".2f", "x"),
                     _fmt(None if r["extra_bytes"] is None else r["extra_bytes"] / 2 ** 20,
                          ".1f"), check])
    lines.append(_table(header, rows, ["<", "<", "<", ">", ">", ">", ">", ">", ">", ">", "<"]))
    lines.append("")
    lines.append("geometric mean of 'vs best' per engine (rows with a correct result):")
    for name, (g, n) in engine_geomeans(run).items():
        lines.append(f"  {name:16s} {_fmt(g, '.2f', 'x'):>8s}  over {n} case(s)")
    if run.get("unavailable"):
        lines.append("")
        lines.append("not run (missing or unusable here):")
        for name, why in run["unavailable"].items():
            lines.append(f"  {name}: {why}")
    return "\n".join(lines)


def engine_geomeans(run):
    """{engine: (geometric mean of vs_best_peer, number of rows)} in table order."""
    vals = {}
    for r in run["results"]:
        vals.setdefault(r["engine"], [])
        if r["check"] == "ok" and r["vs_best_peer"]:
            vals[r["engine"]].append(r["vs_best_peer"])
    return {k: (geomean(v), len(v)) for k, v in vals.items()}


def _index(run):
    return {(r["case"], r["engine"]): r for r in run["results"]}


def format_scaling(runs):
    """Speed-up from the smallest to every larger thread count, per case and engine."""
    runs = sorted(runs, key=lambda r: r["threads"])
    base = runs[0]
    lines = [f"thread scaling: median time at {base['threads']} thread(s) / median time at N"]
    header = ["case", "engine"] + [f"{r['threads']}->{o['threads']}" for r in [base]
                                   for o in runs[1:]]
    rows = []
    idx = [_index(r) for r in runs]
    for r in base["results"]:
        key = (r["case"], r["engine"])
        cells = []
        for other in idx[1:]:
            o = other.get(key)
            if r["median_s"] and o and o["median_s"]:
                cells.append(f"{r['median_s'] / o['median_s']:.2f}x")
            else:
                cells.append("-")
        rows.append([r["case"], r["engine"]] + cells)
    lines.append(_table(header, rows, ["<", "<"] + [">"] * (len(header) - 2)))
    return "\n".join(lines)


def compare_rows(new_doc, old_doc):
    """Rows ``(threads, case, engine, old_s, new_s, speedup)`` for entries in both documents."""
    old_runs = {r["threads"]: _index(r) for r in old_doc["runs"]}
    out = []
    for run in new_doc["runs"]:
        old = old_runs.get(run["threads"], {})
        for r in run["results"]:
            o = old.get((r["case"], r["engine"]))
            if o and o.get("median_s") and r["median_s"]:
                out.append((run["threads"], r["case"], r["engine"], o["median_s"],
                            r["median_s"], o["median_s"] / r["median_s"]))
    return out


def format_compare(new_doc, old_doc, old_name="saved run"):
    """The ratio of every row to the same row of a saved run (>1: faster now)."""
    rows = compare_rows(new_doc, old_doc)
    meta = old_doc.get("meta", {})
    lines = [f"compared with {old_name} (commit {str(meta.get('commit'))[:12]}, "
             f"{meta.get('date', '?')}): speed-up = saved time / time now (>1: faster now)"]
    m_old, m_new = meta.get("machine", {}), new_doc.get("meta", {}).get("machine", {})
    keys = ("cpu", "logical_cpus", "available_cores")
    if m_old and m_new and any(m_old.get(k) != m_new.get(k) for k in keys):
        lines.append("WARNING: the saved run comes from a different machine ("
                     + ", ".join(f"{m_old.get(k)} vs {m_new.get(k)}" for k in keys
                                 if m_old.get(k) != m_new.get(k))
                     + "): these ratios say little about the code.")
    if not rows:
        lines.append("  no common (threads, case, engine) rows.")
        return "\n".join(lines)
    table = [[str(t), c, e, _fmt_time(o), _fmt_time(n), f"{s:.2f}x"] for t, c, e, o, n, s in rows]
    lines.append(_table(["threads", "case", "engine", "saved", "now", "speed-up"], table,
                        [">", "<", "<", ">", ">", ">"]))
    per = {}
    for t, c, e, o, n, s in rows:
        per.setdefault((t, e), []).append(s)
    lines.append("geometric mean speed-up:")
    for (t, e), v in per.items():
        lines.append(f"  {e:16s} {t} thread(s): {geomean(v):.2f}x over {len(v)} case(s)")
    return "\n".join(lines)


def plot(doc, path):
    """Bar chart of every engine's 'vs best peer' ratio per case (log scale), one panel per
    thread count.  Needs matplotlib; raises ImportError with an install hint otherwise."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install matplotlib "
                          "(or pip install 'fastconv[viz]')") from None
    runs = doc["runs"]
    fig, axes = plt.subplots(len(runs), 1, figsize=(12, 4.5 * len(runs)), squeeze=False)
    for ax, run in zip(axes[:, 0], runs):
        cases, engines = [], []
        for r in run["results"]:
            if r["case"] not in cases:
                cases.append(r["case"])
            if r["engine"] not in engines:
                engines.append(r["engine"])
        idx = _index(run)
        width = 0.8 / max(len(engines), 1)
        for j, e in enumerate(engines):
            xs, ys = [], []
            for i, c in enumerate(cases):
                r = idx.get((c, e))
                if r and r["vs_best_peer"] and r["check"] == "ok":
                    xs.append(i + (j - (len(engines) - 1) / 2) * width)
                    ys.append(r["vs_best_peer"])
            ax.bar(xs, ys, width, label=e)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels(cases, rotation=30, ha="right")
        ax.set_ylabel("speed vs best peer (x)")
        ax.set_title(f"{run['threads']} thread(s): best peer's time / engine's time")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------ speed targets
def _best_fastconv(rows_by_case, case, exclude=("fastconv:numpy",)):
    """The fastest correct compiled fastconv row of a case (the reference backend excluded)."""
    cands = [r for r in rows_by_case.get(case, []) if r["kind"] == "fastconv"
             and r["engine"] not in exclude and r["check"] == "ok" and r["median_s"]]
    return min(cands, key=lambda r: r["median_s"]) if cands else None


def _peer_row(rows_by_case, case, names):
    """The fastest correct row among the engines ``names`` of a case."""
    rows = [r for r in rows_by_case.get(case, [])
            if r["engine"] in names and r["check"] == "ok" and r["median_s"]]
    return min(rows, key=lambda r: r["median_s"]) if rows else None


def _peer_time(rows_by_case, case, names):
    row = _peer_row(rows_by_case, case, names)
    return row["median_s"] if row else None


def _why_missed(peer, need, ours):
    """A measured reason for a missed ratio target: where the peer and fastconv stand
    against the sgemm peak of the same run, and what the target would take."""
    if peer is None or not peer.get("pct_peak"):
        return ""
    p = peer["pct_peak"]
    mine = f"; fastconv {ours['pct_peak']:.0f}%" if ours and ours.get("pct_peak") else ""
    return (f"{peer['engine']} runs at {p:.0f}% of this run's sgemm peak, so {need}x its "
            f"speed means {p * need:.0f}%{mine}")


def evaluate_targets(doc):
    """Check the Cython issue's speed targets; one dict per (target, case, thread count).

    Targets (fastconv = its fastest compiled backend on the row; the NumPy
    reference backend does not count):

    * C_in >= 16: >= 1.0x PyTorch channels_last and >= 1.2x TensorFlow;
    * 64-channel 3x3 shapes: >= 85% of the sgemm peak measured in the same run;
    * C_in <= 3: >= 10x PyTorch (best of NCHW and channels_last) and TensorFlow;
    * edge_1ch: within 1.5x of OpenCV (time <= 1.5 x OpenCV's);
    * relu, max_pool2d: >= 1.5x PyTorch;
    * 1 -> 2 threads: >= 1.8x on compute-bound shapes;
    * the lesson model (teaching issue): ``predict`` >= 3x Keras ``predict``.

    Each dict has ``target``, ``case``, ``threads``, ``engine``, ``measured``,
    ``required`` and ``status`` ('met', 'missed' or 'n/a: why').
    """
    from .suite import CASES
    out = []

    def add(target, case, threads, engine, measured, required, ok, why="", reason=""):
        status = why if why else ("met" if ok else "missed")
        out.append({"target": target, "case": case, "threads": threads, "engine": engine,
                    "measured": measured, "required": required, "status": status,
                    "reason": reason if status == "missed" else ""})

    for run in doc["runs"]:
        by_case = {}
        for r in run["results"]:
            by_case.setdefault(r["case"], []).append(r)
        n = run["threads"]
        for name in by_case:
            case = CASES.get(name)
            if case is None:
                continue
            fc = _best_fastconv(by_case, name)
            eng = fc["engine"] if fc else "-"
            why = "" if fc else "n/a: no compiled fastconv backend"

            def speed(peers):
                t = _peer_time(by_case, name, peers)
                return (t / fc["median_s"]) if (fc and t) else None

            def ratio_target(label, peers, need):
                s = speed(peers)
                w = why or ("" if s is not None else f"n/a: no {'/'.join(peers)} result")
                add(label, name, n, eng, None if s is None else f"{s:.2f}x", f">= {need}x",
                    s is not None and s >= need, w,
                    _why_missed(_peer_row(by_case, name, peers), need, fc))

            if case.op == "conv2d" and case.C >= 16:
                ratio_target("C_in>=16 vs torch channels_last", ("torch-cl",), 1.0)
                ratio_target("C_in>=16 vs TF", ("tf",), 1.2)
            if case.op == "conv2d" and "c64_3x3" in case.tags:
                p = fc["pct_peak"] if fc else None
                w = why or ("" if p is not None else "n/a: no peak measured")
                add("64-ch 3x3 % of sgemm peak", name, n, eng,
                    None if p is None else f"{p:.0f}%", ">= 85%", p is not None and p >= 85, w)
            if case.op == "conv2d" and case.C <= 3:
                ratio_target("C_in<=3 vs torch", ("torch", "torch-cl"), 10)
                ratio_target("C_in<=3 vs TF", ("tf",), 10)
            if "edge" in case.tags:
                s = speed(("opencv",))
                w = why or ("" if s is not None else "n/a: no opencv result")
                add("edge within 1.5x of OpenCV", name, n, eng,
                    None if s is None else f"{1 / s:.2f}x OpenCV's time", "<= 1.5x",
                    s is not None and 1 / s <= 1.5, w)
            if case.op in ("relu", "max_pool2d"):
                ratio_target(f"{case.op} vs torch", ("torch", "torch-cl"), 1.5)
            if case.op == "model":
                ratio_target("model predict vs Keras predict", ("keras-predict",), 3)
    # thread scaling
    by_threads = {r["threads"]: r for r in doc["runs"]}
    if 1 in by_threads and 2 in by_threads:
        one, two = _index(by_threads[1]), _index(by_threads[2])
        p1, p2 = (by_threads[k].get("peak_gflops") for k in (1, 2))
        probe_scaling = (f"the sgemm probe itself scaled {p2 / p1:.2f}x in this run"
                         if p1 and p2 else "")
        for (name, engine), r1 in one.items():
            case = CASES.get(name)
            if (case is None or "compute" not in case.tags or r1["kind"] != "fastconv"
                    or engine == "fastconv:numpy"):
                continue
            r2 = two.get((name, engine))
            if r1["median_s"] and r2 and r2["median_s"]:
                s = r1["median_s"] / r2["median_s"]
                add("1->2 threads scaling", name, "1->2", engine, f"{s:.2f}x", ">= 1.8x",
                    s >= 1.8, reason=probe_scaling)
    return out


# ------------------------------------------------------------------ markdown
def _md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(doc, command):
    """RESULTS.md: machine, versions, exact command, the tables and the targets."""
    meta = doc["meta"]
    m = meta["machine"]
    lines = ["# fastconv benchmark results", "",
             "Generated by `benchmarks/make_results.py` from a real run; do not edit by hand.",
             "", f"Command: `{command}`", "",
             f"Date (UTC): {meta['date']}; commit `{meta.get('commit')}`"
             + (" (with uncommitted changes)" if meta.get("dirty") else ""), "",
             "## Machine", "",
             f"- CPU: {m['cpu']} ({m['logical_cpus']} logical CPUs, {m['available_cores']} "
             f"available to this process)",
             f"- SIMD flags: {' '.join(m.get('cpu_flags', [])) or 'unknown'}",
             f"- Python {m['python']}, {m['platform']}",
             f"- fastconv {m['fastconv']}; backends:"]
    for name, entry in m["backends"].items():
        facts = ", ".join(f"{k}: {v}" for k, v in entry.items())
        lines.append(f"  - {name}: {facts or 'available'}")
    lines.append("- peers: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()
                                         if not k.startswith("fastconv")))
    lines += ["", "## Method", "",
              f"- {FLOP_NOTE}",
              "- All engines in one process, interleaved rounds (round-robin over engines, "
              "starting engine rotating), median of the rounds after a warm-up call.",
              "- Every engine held to the same thread count (fastconv `num_threads=`, "
              "OpenMP/BLAS via threadpoolctl, TF intra-op N / inter-op 1, "
              "`torch.set_num_threads`, `cv2.setNumThreads`; SciPy ndimage is single-threaded).",
              "- Every engine's result is checked against the NumPy reference once per shape; "
              "a failed check is shown and excluded from the ratios.",
              "- fastconv calls reuse an `out=` buffer, and so do peers whose API accepts one "
              "(PyTorch conv/pool, TensorFlow and `fastconv.im2col` allocate their result).",
              "- PyTorch has no asymmetric padding: where TF's 'SAME' puts the odd pixel at the "
              "bottom/right (stride 2) it gets an input padded once outside the timing "
              "(favours PyTorch).",
              "- % of peak: a float32 sgemm through NumPy's BLAS at the same thread count, "
              "timed in every round of every case; each row uses its own case's probes.",
              "- extra MB: rise of the resident-memory high-water mark during one call "
              "(`/proc/self/clear_refs` + `VmHWM`).",
              "- With several thread counts and TensorFlow selected, each count runs in its "
              "own process (TF fixes its thread pool once), so the scaling ratios compare "
              "runs made one after the other.",
              "- IQR = interquartile range of the rounds, as % of the median.",
              "- vs best = best correct peer's time / this engine's time (>1: faster than "
              "every peer).", ""]
    for run in doc["runs"]:
        lines.append(f"## {run['threads']} thread(s)")
        lines.append("")
        if run.get("peak_gflops"):
            lo, hi = run.get("peak_range_gflops") or (run["peak_gflops"], run["peak_gflops"])
            lines.append(f"Peak: NumPy sgemm {run['peak_size']}^3 float32 at {run['threads']} "
                         f"thread(s), timed in every round of this run: median "
                         f"{run['peak_gflops']:.1f} GFLOP/s (range {lo:.0f}-{hi:.0f}); "
                         f"%peak uses the probes of the row's own case.")
            lines.append("")
        if run.get("loadavg_start") is not None:
            lines.append(f"Load average (1 min) at start/end: {run['loadavg_start']} / "
                         f"{run['loadavg_end']}.")
            lines.append("")
        rows = []
        for r in run["results"]:
            check = r["check"] if r["check"] == "ok" else f"{r['check']}: {r['detail']}"
            rows.append([r["case"], r["shape"], r["engine"], _fmt_time(r["median_s"]), _iqr(r),
                         _fmt(r["gflops"], ".1f"),
                         _fmt(r["gbytes_s"], ".1f") if not r["flops"] else "",
                         _fmt(r["pct_peak"], ".0f", "%"), _fmt(r["vs_best_peer"], ".2f", "x"),
                         _fmt(None if r["extra_bytes"] is None else r["extra_bytes"] / 2 ** 20,
                              ".1f"), check])
        lines.append(_md_table(["case", "shape", "engine", "time", "IQR", "GFLOP/s", "GB/s",
                                "%peak",
                                "vs best", "extra MB", "check"], rows))
        lines.append("")
        lines.append("Geometric mean of 'vs best' per engine: " + ", ".join(
            f"{k} {_fmt(g, '.2f', 'x')} ({n})" for k, (g, n) in engine_geomeans(run).items()))
        if run.get("unavailable"):
            lines.append("")
            lines.append("Not run: " + "; ".join(f"{k} ({v})"
                                                 for k, v in run["unavailable"].items()))
        lines.append("")
    lines += ["## Speed targets (from the Cython issue)", "",
              "fastconv = its fastest compiled backend on the row (the NumPy reference backend "
              "does not count).", ""]
    targets = evaluate_targets(doc)
    lines.append(_md_table(["target", "case", "threads", "engine", "measured", "required",
                            "status", "measured reason when missed"],
                           [[t["target"], t["case"], t["threads"], t["engine"],
                             t["measured"] or "-", t["required"], t["status"], t["reason"]]
                            for t in targets]))
    met = sum(t["status"] == "met" for t in targets)
    missed = sum(t["status"] == "missed" for t in targets)
    lines += ["", f"{met} met, {missed} missed, {len(targets) - met - missed} not applicable.",
              ""]
    return "\n".join(lines)
