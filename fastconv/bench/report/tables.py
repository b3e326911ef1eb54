"""Text tables: one run side by side, thread scaling, and a comparison with a saved run.

Ratios are always "speed-ups": a value above 1 means the row is faster than
what it is compared with.  :func:`result_cells` and :func:`peak_note` are
shared with the Markdown report, so both show a row the same way.
"""
import math
import os

__all__ = ["FLOP_NOTE", "LIMIT_NOTE", "RESULT_HEADER", "bandwidth_note", "load_notes", "format_run", "format_scaling", "format_compare",
           "compare_rows", "engine_geomeans", "geomean", "result_cells", "peak_note",
           "index_rows", "format_time"]

FLOP_NOTE = "GFLOP/s counts 2 FLOPs per multiply-add (2 x N*OH*OW*C_out*KH*KW*C_in/groups)."
#: the columns of :func:`result_cells`
RESULT_HEADER = ["case", "shape", "engine", "time", "IQR", "GFLOP/s", "GB/s", "%peak",
                 "limit", "%limit", "vs best", "extra MB", "check"]
_RESULT_ALIGN = ["<", "<", "<", ">", ">", ">", ">", ">", ">", ">", ">", ">", "<"]
#: one letter for the kind of a row's limit
_LIMIT_KIND = {"compute": "C", "memory": "M"}


# ----------------------------------------------------------------- formatting
def format_time(t):
    """Seconds as s, ms or us ('-' for None)."""
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


def peak_note(run):
    """The sentence that says how this run's peak was measured (empty without one)."""
    peak = run.get("peak_gflops")
    if not peak:
        return ""
    lo, hi = run.get("peak_range_gflops") or (peak, peak)
    return (f"peak = NumPy sgemm {run['peak_size']}^3 float32 at {run['threads']} thread(s), "
            f"timed in every round of this run: median {peak:.1f} GFLOP/s "
            f"(range {lo:.0f}-{hi:.0f}); %peak uses each case's own probes")


def result_cells(r):
    """One result row as the strings of :data:`RESULT_HEADER`."""
    check = r["check"] if r["check"] == "ok" else f"{r['check']}: {r['detail']}"
    return [r["case"], r["shape"], r["engine"], format_time(r["median_s"]), _iqr(r),
            _fmt(r["gflops"], ".1f"), _fmt(r["gbytes_s"], ".1f") if not r["flops"] else "",
            _fmt(r["pct_peak"], ".0f", "%"), _limit(r), _fmt(r.get("pct_limit"), ".0f", "%"),
            _fmt(r["vs_best_peer"], ".2f", "x"),
            _fmt(None if r["extra_bytes"] is None else r["extra_bytes"] / 2 ** 20, ".1f"),
            check]


def _limit(r):
    """The row's limit as a time and C (compute) or M (memory), '-' when unknown."""
    if not r.get("limit_s"):
        return "-"
    return f"{format_time(r['limit_s'])} {_LIMIT_KIND.get(r.get('limit_kind'), '?')}"


LIMIT_NOTE = ("limit = the larger of the case's FLOPs at the sgemm peak (C) and its bytes read "
              "+ written at the bandwidth probe (M); %limit = limit / time")


def bandwidth_note(run):
    """The sentence that says how this run's bandwidth was measured (empty without one)."""
    bw = run.get("bandwidth_gbytes_s")
    if not bw:
        return ""
    lo, hi = run.get("bandwidth_range_gbytes_s") or (bw, bw)
    mib = (run.get("bandwidth_bytes") or 0) / 2 ** 20
    return (f"bandwidth = np.copyto of {mib:.0f} MiB float32 split over {run['threads']} "
            f"thread(s), bytes read + written, timed in every round: median {bw:.1f} GB/s "
            f"(range {lo:.1f}-{hi:.1f})")


def load_notes(run):
    """Header lines for --isa and --busy (none when neither was used)."""
    from ..isa import describe
    lines = []
    if run.get("isa"):
        lines.append(describe(run))
    if run.get("busy"):
        lines.append(f"--busy {run['busy']}: {run['busy']} CPU-burner process(es) spinning "
                     f"while the cases were timed (a loaded machine)")
    return lines


def format_run(run, suite=""):
    """The side-by-side table of one run, with its header notes and a geometric mean."""
    lines = [f"fastconv bench -- suite {suite or '?'}, float32 NHWC, {run['threads']} thread(s), "
             f"median of {run['repeat']} interleaved rounds",
             FLOP_NOTE]
    lines += load_notes(run)
    if peak_note(run):
        lines.append(peak_note(run))
    if bandwidth_note(run):
        lines.append(bandwidth_note(run))
    lines.append(LIMIT_NOTE)
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
    rows = []
    prev = None
    for r in run["results"]:
        cells = result_cells(r)
        if r["case"] == prev:  # the case, shape and limit only on a case's first row
            cells[0] = cells[1] = cells[8] = ""
        prev = r["case"]
        rows.append(cells)
    lines.append(_table(RESULT_HEADER, rows, _RESULT_ALIGN))
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


def index_rows(run):
    """``{(case, engine): row}`` of one run."""
    return {(r["case"], r["engine"]): r for r in run["results"]}


def format_scaling(runs):
    """Speed-up from the smallest to every larger thread count, per case and engine."""
    runs = sorted(runs, key=lambda r: r["threads"])
    base = runs[0]
    lines = [f"thread scaling: median time at {base['threads']} thread(s) / median time at N"]
    header = ["case", "engine"] + [f"{r['threads']}->{o['threads']}" for r in [base]
                                   for o in runs[1:]]
    rows = []
    idx = [index_rows(r) for r in runs]
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
    old_runs = {r["threads"]: index_rows(r) for r in old_doc["runs"]}
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
    table = [[str(t), c, e, format_time(o), format_time(n), f"{s:.2f}x"] for t, c, e, o, n, s in rows]
    lines.append(_table(["threads", "case", "engine", "saved", "now", "speed-up"], table,
                        [">", "<", "<", ">", ">", ">"]))
    per = {}
    for t, c, e, o, n, s in rows:
        per.setdefault((t, e), []).append(s)
    lines.append("geometric mean speed-up:")
    for (t, e), v in per.items():
        lines.append(f"  {e:16s} {t} thread(s): {geomean(v):.2f}x over {len(v)} case(s)")
    return "\n".join(lines)


