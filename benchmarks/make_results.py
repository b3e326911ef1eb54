"""Regenerate ``benchmarks/RESULTS.md`` from a real ``fastconv bench`` run.

Usage::

    python benchmarks/make_results.py                      # every part (below)
    python benchmarks/make_results.py --parts forward,busy --repeat 5
    python benchmarks/make_results.py --suite lesson --threads 2   # one forward run
    python benchmarks/make_results.py --from-json forward=a.json --from-json training=b.json
    python benchmarks/make_results.py --isa avx2 --output RESULTS-avx2.md  # emulated AVX2

RESULTS.md has parts, each from its own run: ``forward`` (``fastconv bench
--suite full --threads 1,2``), ``busy`` (the quick suite with one CPU-bound
process beside it, ``--busy 1``), ``backward`` (``--suite backward``),
``training`` (``benchmarks/train_epoch.py``: one epoch against Keras ``fit``
and a PyTorch loop) and ``dask`` (``benchmarks/dask_scaling.py``: a 2-worker
cluster against in-memory fastconv and dask-image).  Any option other than
the ones below is passed on to every ``fastconv bench`` part.  Each run is
also saved in the history, ``benchmarks/history/<commit>-<part>.json``
(``--no-history`` to skip).  A goal of ``targets.json`` is checked against
the run of its ``part`` (default ``forward``).
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


#: the parts of RESULTS.md made of one ``fastconv bench`` run each: title, bench arguments
BENCH_PARTS = {
    "forward": ("Forward ops", ["--suite", "full", "--threads", "1,2"]),
    "busy": ("On a busy machine (one CPU-bound process beside the run)",
             ["--suite", "quick", "--threads", "1,2", "--busy", "1"]),
    "backward": ("Backward ops", ["--suite", "backward", "--threads", "1,2"]),
}
#: the parts made by a script of this directory: title, module (``run(argv) -> doc``,
#: ``markdown(doc) -> str``)
SCRIPT_PARTS = {
    "training": ("One training epoch", "train_epoch"),
    "dask": ("On a Dask cluster", "dask_scaling"),
}
PARTS = tuple(BENCH_PARTS) + tuple(SCRIPT_PARTS)


def target_part(target):
    """The part of RESULTS.md whose run a goal is checked against (default 'forward')."""
    return target.get("part", "forward")


def _script(module):
    import importlib.util
    spec = importlib.util.spec_from_file_location(module, os.path.join(HERE, module + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _demoted(text, level=3):
    """``text`` with its Markdown headings shifted so that the highest is ``level``."""
    lines = text.splitlines()
    heads = [len(l) - len(l.lstrip("#")) for l in lines if l.startswith("#")]
    shift = level - min(heads) if heads else 0
    return "\n".join(("#" * shift + l) if l.startswith("#") and shift > 0 else l
                     for l in lines)


def _history_path(part, doc):
    from fastconv.bench.report.document import git_commit
    meta = doc.get("meta", {})
    commit, dirty = meta.get("commit"), meta.get("dirty")
    if commit is None:
        commit, dirty = git_commit(os.path.dirname(HERE))
    if commit is None:
        return None
    return os.path.join(HERE, "history", f"{commit}{'+dirty' if dirty else ''}-{part}.json")


def _run_bench_part(part, bench_args, save):
    from fastconv import bench
    from fastconv.bench import report
    args = list(BENCH_PARTS[part][1])
    for i, a in enumerate(bench_args):  # an option given by the user replaces the part's
        if a in args and a.startswith("--") and i + 1 < len(bench_args):
            j = args.index(a)
            del args[j:j + 2]
    args += bench_args
    if "--isolate" not in args:
        args.append("--isolate")  # a crashing kernel must not lose the run
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "run.json")
        status = bench.main(args + ["--json", path])
        doc = report.load_json(path) if os.path.exists(path) else None
    if doc is not None and save:
        target = _history_path(part, doc)
        if target:
            report.write_json(doc, target)
            print(f"saved {target}")
    return status, doc


def _run_script_part(part, script_args, save):
    from fastconv.bench import report
    doc = _script(SCRIPT_PARTS[part][1]).run(script_args)
    if save:
        target = _history_path(part, doc)
        if target:
            report.write_json(doc, target)
            print(f"saved {target}")
    return 0, doc


def _from_json_args(values):
    """``--from-json`` values: ``PART=FILE`` (or a bare FILE, the forward part)."""
    out = {}
    for v in values:
        part, sep, path = v.partition("=")
        if not sep or part not in PARTS:
            part, path = "forward", v
        out[part] = path
    return out


def render(docs, command, targets):
    """RESULTS.md from the runs of its parts (``{part: doc}``, forward first if present)."""
    from fastconv.bench import report
    from fastconv.bench.report.markdown import header_markdown, part_markdown
    bench_docs = {p: d for p, d in docs.items() if p in BENCH_PARTS}
    first = bench_docs.get("forward") or next(iter(bench_docs.values()), None)
    if set(docs) == {"forward"}:  # one run: the layout RESULTS.md always had
        text = report.results_markdown(first, command)
    else:
        lines = header_markdown(first, command) if first else [
            "# fastconv benchmark results", "", f"Command: `{command}`", ""]
        text = "\n".join(lines)
        for part in list(PARTS) + [p for p in docs if p.startswith("include:")]:
            if part.startswith("include:"):
                text += "\n" + _included_markdown(part.partition(":")[2], docs[part])
            elif part in bench_docs:
                text += "\n" + part_markdown(bench_docs[part], BENCH_PARTS[part][0])
            elif part in docs:
                text += (f"\n## {SCRIPT_PARTS[part][0]}\n\n"
                         + _demoted(_script(SCRIPT_PARTS[part][1]).markdown(docs[part]))
                         + "\n")
    return text + "\n" + targets_markdown(evaluate_parts(bench_docs, targets), targets)


def _isa_name(meta):
    flags = meta.get("machine", {}).get("cpu_flags", [])
    return "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE"


def _included_markdown(name, doc):
    """A saved run of another machine (``--include``), under a heading that says so."""
    from fastconv.bench.report.markdown import part_markdown
    meta = doc["meta"]
    title = (f"Earlier run on an {_isa_name(meta)} machine (commit "
             f"{str(meta.get('commit'))[:7]}, {meta['date'][:10]})")
    text = part_markdown(doc, title)
    note = (f"Included from `benchmarks/history/{name}`: measured in an earlier session, on a "
            f"machine with {' '.join(meta['machine'].get('cpu_flags', []))}, with the code of "
            "that commit. It shows that machine's path; it is not a run of this commit, and "
            "the goals below are not checked against it.")
    head, _, rest = text.partition("\n\n")
    return f"{head}\n\n{note}\n\n{rest}"


def evaluate_parts(docs, targets):
    """:func:`evaluate_targets` of each goal against the run of its part (``{part: doc}``)."""
    results = []
    for part, doc in docs.items():
        results += evaluate_targets(doc, [t for t in targets if target_part(t) == part])
    return results


DEFAULT_OUTPUT = os.path.join(HERE, "RESULTS.md")
README_BEGIN = "<!-- results summary: written by benchmarks/make_results.py, do not edit -->"
README_END = "<!-- end of results summary -->"


def readme_summary(docs, command, targets):
    """The README's summary of a RESULTS.md: the run's date, commit and CPU path, then
    per goal how many of its rows are met and the weakest row's figure."""
    from fastconv.bench.report import markdown_table
    from fastconv.bench.report.markdown import without_paths
    bench_docs = {p: d for p, d in docs.items() if p in BENCH_PARTS}
    first = bench_docs.get("forward") or next(iter(bench_docs.values()), None)
    results = evaluate_parts(bench_docs, targets)
    lines = [README_BEGIN, ""]
    if first is not None:
        meta = first["meta"]
        lines += [f"Latest results ({meta['date'][:10]}, commit `{str(meta.get('commit'))[:7]}`, "
                  f"an {_isa_name(meta)} machine; full tables in "
                  "[benchmarks/RESULTS.md](benchmarks/RESULTS.md)), made by "
                  f"`{without_paths(command)}`:", ""]
    rows = []
    for t in targets:
        mine = [r for r in results if r["target"] == t["id"]
                and r["status"] in ("met", "missed")]
        if not mine:
            continue
        missed = [r for r in mine if r["status"] == "missed"]
        worst = ", ".join(f"{r['case']} {r['threads']}T {r['measured']}" for r in missed[:3])
        worst += " ..." if len(missed) > 3 else ""
        rows.append([t["id"], f"{len(mine) - len(missed)} / {len(mine)}", worst or "-"])
    lines.append(markdown_table(["goal (benchmarks/targets.json)", "rows met",
                                 "missed rows (measured)"], rows))
    lines += ["", README_END]
    return "\n".join(lines)


def write_readme_summary(path, summary):
    """Replace the text between :data:`README_BEGIN` and :data:`README_END` in ``path``
    (nothing happens when the file has no such markers)."""
    with open(path) as f:
        text = f.read()
    head, found, rest = text.partition(README_BEGIN)
    _, found_end, tail = rest.partition(README_END)
    if not (found and found_end):
        return False
    with open(path, "w") as f:
        f.write(head + summary + tail)
    return True


def main(argv=None):
    """Run the benchmark parts (or read saved runs) and write RESULTS.md; return the exit
    status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        description="Run the benchmarks and write benchmarks/RESULTS.md from the results. "
                    "Parts: " + ", ".join(f"{p} ({BENCH_PARTS[p][0]}: fastconv bench "
                                          + " ".join(BENCH_PARTS[p][1]) + ")"
                                          for p in BENCH_PARTS)
                    + ", " + ", ".join(f"{p} (benchmarks/{SCRIPT_PARTS[p][1]}.py)"
                                       for p in SCRIPT_PARTS)
                    + ". Unknown options go to every fastconv bench part (e.g. --repeat 5); "
                      "with --suite, only the forward part runs, with that suite.")
    parser.add_argument("--output", default=DEFAULT_OUTPUT,
                        help="file to write (default benchmarks/RESULTS.md)")
    parser.add_argument("--parts", default=None,
                        help="comma-separated parts to run (default: all; "
                             "with --suite: forward)")
    parser.add_argument("--from-json", metavar="[PART=]FILE", action="append", default=[],
                        help="write RESULTS.md from saved runs instead of running (repeat per "
                             "part; a bare FILE is the forward part)")
    parser.add_argument("--include", metavar="FILE", action="append", default=[],
                        help="also show a saved bench run of another machine (e.g. an AVX-512 "
                             "run from benchmarks/history/), said to be one (repeatable)")
    parser.add_argument("--training-args", default="", metavar="ARGS",
                        help="arguments for benchmarks/train_epoch.py (one string)")
    parser.add_argument("--dask-args", default="", metavar="ARGS",
                        help="arguments for benchmarks/dask_scaling.py (one string)")
    parser.add_argument("--no-history", action="store_true",
                        help="do not save the runs in benchmarks/history/")
    parser.add_argument("--readme", default=None, metavar="FILE",
                        help="also rewrite the results summary between the markers of this "
                             "file (default: the project's README.md when --output is the "
                             "default RESULTS.md, else none; '' for none)")
    parser.add_argument("--targets", default=TARGETS, metavar="FILE",
                        help="the goals to check (default benchmarks/targets.json)")
    ours, bench_args = parser.parse_known_args(argv)
    targets = load_targets(ours.targets)  # a broken goals file fails before a long run
    from fastconv.bench import report

    command = "python benchmarks/make_results.py" + "".join(" " + shlex.quote(a) for a in argv)
    status = 0
    docs = {}
    if ours.from_json:
        for part, path in _from_json_args(ours.from_json).items():
            if part in BENCH_PARTS:
                docs[part] = report.load_json(path)
            else:
                with open(path) as f:
                    docs[part] = json.load(f)
        if set(docs) == {"forward"} and docs["forward"]["meta"].get("command"):
            command = f"{docs['forward']['meta']['command']}` (the run); this file by `{command}"
    else:
        if ours.parts:
            parts = [p.strip() for p in ours.parts.split(",") if p.strip()]
        else:
            parts = ["forward"] if "--suite" in bench_args else list(PARTS)
        unknown = [p for p in parts if p not in PARTS]
        if unknown:
            parser.error(f"--parts: unknown {', '.join(unknown)}; choose from {', '.join(PARTS)}")
        extra = {"training": shlex.split(ours.training_args), "dask": shlex.split(ours.dask_args)}
        for part in parts:
            print(f"make_results: part {part}", flush=True)
            if part in BENCH_PARTS:
                st, doc = _run_bench_part(part, bench_args, not ours.no_history)
            else:
                st, doc = _run_script_part(part, extra[part], not ours.no_history)
            status = status or st
            if doc is None:
                print(f"make_results: part {part} produced no results", file=sys.stderr)
                return status or 1
            docs[part] = doc
    for path in ours.include:
        docs[f"include:{os.path.basename(path)}"] = report.load_json(path)
    with open(ours.output, "w") as f:
        f.write(render(docs, command, targets))
    print(f"wrote {ours.output}")
    readme = ours.readme
    if readme is None and os.path.abspath(ours.output) == os.path.abspath(DEFAULT_OUTPUT):
        readme = os.path.join(HERE, os.pardir, "README.md")
    if readme and write_readme_summary(readme, readme_summary(docs, command, targets)):
        print(f"updated the results summary in {readme}")
    return status


if __name__ == "__main__":
    if os.path.isdir(os.path.join(HERE, os.pardir, "fastconv")):
        sys.path.insert(0, os.path.dirname(HERE))  # the source tree's fastconv, built in place
    sys.exit(main())
