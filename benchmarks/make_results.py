"""Regenerate ``benchmarks/RESULTS.md`` from a real ``fastconv bench`` run.

Usage::

    python benchmarks/make_results.py                      # full suite, threads 1,2
    python benchmarks/make_results.py --suite lesson --threads 2
    python benchmarks/make_results.py --from-json run.json # rewrite from a saved run
    python benchmarks/make_results.py --isa avx2 --output RESULTS-avx2.md  # emulated AVX2
    python benchmarks/make_results.py --suite quick --threads 1,2 --busy 1  # loaded machine

Any option other than the ones below is passed on to ``fastconv bench``
(default ``--suite full --threads 1,2``).  The run is also saved in the
history, ``benchmarks/history/<commit>-<suite>.json`` (``--no-history`` to skip).
RESULTS.md records the exact command, the machine (CPU model, cores, BLAS,
the SIMD path fastconv reports) and the version of every peer, and checks
the goals of ``benchmarks/targets.json`` row by row (``--targets`` for
another file).  Never edit RESULTS.md by hand.

The goals are data: each one in ``targets.json`` has a sentence for the
reader, a kind (see that file's ``schema``), the shapes it covers and the
figure it needs; :func:`evaluate_targets` checks them against a run, and
the package itself only measures.
"""
import argparse
import json
import os
import shlex
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_BENCH_ARGS = ["--suite", "full", "--threads", "1,2"]
#: the goals RESULTS.md checks
TARGETS = os.path.join(HERE, "targets.json")
#: target kind -> the figures it needs besides id, goal, kind and cases
KINDS = {"vs_peers": ("peers", "at_least"), "within_peers": ("peers", "at_most"),
         "pct_peak": ("at_least",), "pct_limit": ("at_least",),
         "thread_scaling": ("from", "to", "at_least"),
         "thread_overhead": ("from", "to", "at_most", "plus_us")}
#: the fastconv backend that does not count for a goal (the reference)
REFERENCE_BACKEND = "fastconv:numpy"


def load_targets(path=TARGETS):
    """The goals of a targets file, checked for the fields their kind needs."""
    with open(path) as f:
        targets = json.load(f)["targets"]
    for i, t in enumerate(targets):
        where = f"{path}: target {t.get('id', i)!r}"
        missing = [k for k in ("id", "goal", "kind", "cases") if k not in t]
        if missing:
            raise ValueError(f"{where} lacks {', '.join(missing)}")
        if t["kind"] not in KINDS:
            raise ValueError(f"{where}: kind must be one of {', '.join(KINDS)}; "
                             f"got {t['kind']!r}")
        missing = [k for k in KINDS[t["kind"]] if k not in t]
        if missing:
            raise ValueError(f"{where}: kind {t['kind']!r} needs {', '.join(missing)}")
    return targets


def _selects(sel, case):
    """Whether the ``cases`` selector of a target covers ``case`` (a suite Case)."""
    ops = sel.get("op")
    if ops and case.op not in ([ops] if isinstance(ops, str) else ops):
        return False
    if case.C < sel.get("min_C", case.C) or case.C > sel.get("max_C", case.C):
        return False
    if "names" in sel and case.name not in sel["names"]:
        return False
    return set(sel.get("tags", ())) <= set(case.tags)


def _fastest(rows, keep):
    """The fastest correct row among ``rows`` for which ``keep(row)`` holds."""
    rows = [r for r in rows if keep(r) and r["check"] == "ok" and r["median_s"]]
    return min(rows, key=lambda r: r["median_s"]) if rows else None


def _is_compiled_fastconv(row):
    return row["kind"] == "fastconv" and row["engine"] != REFERENCE_BACKEND


def _why_missed(peer, need, ours):
    """A measured reason for a missed ratio: where the peer and fastconv stand against
    the sgemm peak of the same run, and what the goal would take."""
    if peer is None or not peer.get("pct_peak"):
        return ""
    p = peer["pct_peak"]
    mine = f"; fastconv {ours['pct_peak']:.0f}%" if ours and ours.get("pct_peak") else ""
    return (f"{peer['engine']} runs at {p:.0f}% of this run's sgemm peak, so {need}x its "
            f"speed means {p * need:.0f}%{mine}")


def _check_row(target, rows):
    """``(engine, measured, required, ok, n/a reason, missed reason)`` of one case's rows."""
    kind = target["kind"]
    fc = _fastest(rows, _is_compiled_fastconv)
    if fc is None:
        return "-", None, "", False, "n/a: no compiled fastconv backend", ""
    engine = fc["engine"]
    if kind in ("pct_peak", "pct_limit"):
        need, p = target["at_least"], fc.get(kind)
        if p is None:
            what = "peak" if kind == "pct_peak" else "limit"
            return engine, None, f">= {need}%", False, f"n/a: no {what} measured", ""
        return engine, f"{p:.0f}%", f">= {need}%", p >= need, "", ""
    peers = target["peers"]
    peer = _fastest(rows, lambda r: r["engine"] in peers)
    if peer is None:
        return engine, None, "", False, f"n/a: no {'/'.join(peers)} result", ""
    speed = peer["median_s"] / fc["median_s"]
    if kind == "within_peers":
        need = target["at_most"]
        return (engine, f"{1 / speed:.2f}x {peer['engine']}'s time", f"<= {need}x",
                1 / speed <= need, "", "")
    need = target["at_least"]
    return (engine, f"{speed:.2f}x", f">= {need}x", speed >= need, "",
            _why_missed(peer, need, fc))


def evaluate_targets(doc, targets):
    """Check ``targets`` (see :func:`load_targets`) against a run document.

    Returns one dict per (target, case, thread count) the target covers, with
    ``target`` (its id), ``goal``, ``case``, ``threads``, ``engine``,
    ``measured``, ``required``, ``status`` ('met', 'missed' or 'n/a: why')
    and ``reason`` (a measured reason, for a missed goal).
    """
    from fastconv.bench.suite import CASES
    out = []

    def add(target, case, threads, engine, measured, required, ok, why="", reason=""):
        status = why or ("met" if ok else "missed")
        out.append({"target": target["id"], "goal": target["goal"], "case": case,
                    "threads": threads, "engine": engine, "measured": measured,
                    "required": required, "status": status,
                    "reason": reason if status == "missed" else ""})

    def covered(name):
        return name in CASES and _selects(target["cases"], CASES[name])

    for target in targets:
        if target["kind"] in ("thread_scaling", "thread_overhead"):
            _scaling(doc, target, covered, add)
            continue
        for run in doc["runs"]:
            if run["threads"] not in target.get("threads", [run["threads"]]):
                continue
            by_case = {}
            for r in run["results"]:
                by_case.setdefault(r["case"], []).append(r)
            for name, rows in by_case.items():
                if covered(name):
                    engine, measured, required, ok, why, reason = _check_row(target, rows)
                    add(target, name, run["threads"], engine, measured, required, ok, why,
                        reason)
    return out


def _scaling(doc, target, covered, add):
    """The thread goals, every compiled fastconv row: 'thread_scaling', time at 'from' / at
    'to' >= at_least; 'thread_overhead', time at 'to' <= at_most x time at 'from' + plus_us."""
    by_threads = {r["threads"]: r for r in doc["runs"]}
    lo, hi = target["from"], target["to"]
    overhead = target["kind"] == "thread_overhead"
    need = target["at_most"] if overhead else target["at_least"]
    if lo not in by_threads or hi not in by_threads:
        return
    slow, fast = (index_rows(by_threads[k]) for k in (lo, hi))
    p_lo, p_hi = (by_threads[k].get("peak_gflops") for k in (lo, hi))
    probe = (f"the sgemm probe itself scaled {p_hi / p_lo:.2f}x in this run"
             if p_lo and p_hi else "")
    for (name, engine), r1 in slow.items():
        r2 = fast.get((name, engine))
        if covered(name) and _is_compiled_fastconv(r1) and r1["median_s"] and r2 \
                and r2["median_s"]:
            if overhead:
                bound = need * r1["median_s"] + target["plus_us"] * 1e-6
                add(target, name, f"{lo}->{hi}", engine,
                    f"{r2['median_s'] * 1e6:.1f} us vs {r1['median_s'] * 1e6:.1f} us",
                    f"<= {need}x + {target['plus_us']} us", r2["median_s"] <= bound)
                continue
            s = r1["median_s"] / r2["median_s"]
            add(target, name, f"{lo}->{hi}", engine, f"{s:.2f}x", f">= {need}x", s >= need,
                reason=probe)


def index_rows(run):
    """``{(case, engine): row}`` of one run."""
    return {(r["case"], r["engine"]): r for r in run["results"]}


def targets_markdown(results, targets):
    """RESULTS.md's goals section: each goal's sentence, then the row-by-row check."""
    from fastconv.bench.report import markdown_table
    lines = ["## Goals (benchmarks/targets.json)", "",
             "fastconv = its fastest compiled backend on the row (the NumPy reference backend "
             "does not count).", ""]
    lines += [f"- **{t['id']}**: {t['goal']}" for t in targets]
    lines.append("")
    lines.append(markdown_table(["goal", "case", "threads", "engine", "measured", "required",
                                 "status", "measured reason when missed"],
                                [[t["target"], t["case"], t["threads"], t["engine"],
                                  t["measured"] or "-", t["required"] or "-", t["status"],
                                  t["reason"]] for t in results]))
    met = sum(t["status"] == "met" for t in results)
    missed = sum(t["status"] == "missed" for t in results)
    lines += ["", f"{met} met, {missed} missed, {len(results) - met - missed} not applicable.",
              ""]
    return "\n".join(lines)


def main(argv=None):
    """Run the benchmark (or read a saved run) and write RESULTS.md; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        description="Run fastconv bench and write benchmarks/RESULTS.md from the result; "
                    "unknown options go to fastconv bench (default: "
                    + " ".join(DEFAULT_BENCH_ARGS) + ").")
    parser.add_argument("--output", default=os.path.join(HERE, "RESULTS.md"),
                        help="file to write (default benchmarks/RESULTS.md)")
    parser.add_argument("--from-json", metavar="FILE",
                        help="write RESULTS.md from a run saved with --json instead of running")
    parser.add_argument("--no-history", action="store_true",
                        help="do not save the run in benchmarks/history/")
    parser.add_argument("--targets", default=TARGETS, metavar="FILE",
                        help="the goals to check (default benchmarks/targets.json)")
    ours, bench_args = parser.parse_known_args(argv)
    targets = load_targets(ours.targets)  # a broken goals file fails before a long run
    from fastconv import bench
    from fastconv.bench import report

    command = "python benchmarks/make_results.py" + "".join(" " + shlex.quote(a) for a in argv)
    status = 0
    if ours.from_json:
        doc = report.load_json(ours.from_json)
        if doc["meta"].get("command"):
            command = f"{doc['meta']['command']}` (the run); this file by `{command}"
    else:
        if "--suite" not in bench_args:
            bench_args = DEFAULT_BENCH_ARGS[:2] + bench_args
        if "--threads" not in bench_args:
            bench_args = bench_args + DEFAULT_BENCH_ARGS[2:]
        if "--isolate" not in bench_args:
            bench_args = bench_args + ["--isolate"]  # a crashing kernel must not lose the run
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "run.json")
            extra = ["--json", path]
            if not ours.no_history:
                extra.append("--save-history")
            status = bench.main(bench_args + extra)
            if not os.path.exists(path):
                print("make_results: the benchmark did not produce results", file=sys.stderr)
                return status or 1
            doc = report.load_json(path)
    with open(ours.output, "w") as f:
        f.write(report.results_markdown(doc, command) + "\n"
                + targets_markdown(evaluate_targets(doc, targets), targets))
    print(f"wrote {ours.output}")
    return status


if __name__ == "__main__":
    if os.path.isdir(os.path.join(HERE, os.pardir, "fastconv")):
        sys.path.insert(0, os.path.dirname(HERE))  # the source tree's fastconv, built in place
    sys.exit(main())
