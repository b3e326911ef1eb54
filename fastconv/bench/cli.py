"""``fastconv bench``'s command line: options, child processes per thread count, history.

:func:`main` parses the options, runs the benchmark (:func:`run_benchmarks`:
one :func:`fastconv.bench.runner.run` per thread count, in this process or
in a child process per count), prints the tables and writes what was asked
(JSON, plot, history).  ``fastconv bench --help`` lists every option.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

from . import report

__all__ = ["main", "run_benchmarks", "default_history_dir"]


def _int_list(text):
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return sorted(set(vals))


def _name_list(text):
    return [t.strip() for t in text.split(",") if t.strip()]


def _bounded(convert, minimum, what):
    """An argparse type: ``convert(text)``, refused below ``minimum`` with "expected ``what``"."""
    def parse(text):
        try:
            v = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v
    return parse


_positive = _bounded(int, 1, "a positive integer")
_nonneg_int = _bounded(int, 0, "a non-negative integer")
_nonneg_float = _bounded(float, 0, "a non-negative number of seconds")


def _parser():
    from .peers import PEER_NAMES
    from .suite import CASES, PUBLIC_SUITES, SUITES
    p = argparse.ArgumentParser(
        prog="fastconv bench",
        description="Benchmark every available fastconv backend against every installed peer "
                    "(NumPy im2col+matmul, TensorFlow, PyTorch NCHW and channels_last, "
                    "ONNX Runtime, JAX, OpenCV, SciPy) in one process: interleaved rounds, medians, the same "
                    "thread count for all, every result checked against the NumPy reference. "
                    "GFLOP/s counts 2 FLOPs per multiply-add.",
        epilog="shapes: " + ", ".join(n for n in CASES if not n.startswith("tiny")))
    p.add_argument("--suite", default="quick", choices=list(SUITES), metavar="NAME",
                   help=f"{'|'.join(PUBLIC_SUITES)} (default quick, under a minute)")
    p.add_argument("--threads", type=_int_list, default=None, metavar="N[,N...]",
                   help="thread counts, e.g. 1,2 for scaling (default: fastconv's default, "
                        "the available cores)")
    p.add_argument("--ops", type=_name_list, default=None, metavar="OP[,OP...]",
                   help="only these ops: "
                        + ", ".join(dict.fromkeys(case.op for case in CASES.values())))
    p.add_argument("--shapes", type=_name_list, default=None, metavar="NAME[,NAME...]",
                   help="run these shapes instead of the suite's list")
    p.add_argument("--backends", type=_name_list, default=None, metavar="B[,B...]",
                   help="fastconv backends (default: every available one)")
    p.add_argument("--peers", type=_name_list, default=None, metavar="P[,P...]",
                   help=f"peers among {','.join(PEER_NAMES)} (default all; '' for none)")
    p.add_argument("--repeat", type=_positive, default=None, metavar="N",
                   help="interleaved rounds; the median is reported (suite default)")
    p.add_argument("--min-time", type=_nonneg_float, default=None, metavar="S",
                   help="minimum seconds per sample; fast calls are looped (suite default)")
    p.add_argument("--peak-size", type=_nonneg_int, default=None, metavar="N",
                   help="size of the N^3 sgemm that measures the peak (default 2048, quick "
                        "suite 1536; 0 skips)")
    p.add_argument("--json", metavar="FILE", help="save all results as JSON")
    p.add_argument("--compare", metavar="FILE",
                   help="print the speed-up of this run over a saved --json run")
    p.add_argument("--plot", metavar="FILE.png",
                   help="bar chart of the ratios to the best peer (needs matplotlib)")
    p.add_argument("--save-history", nargs="?", const="", default=None, metavar="DIR",
                   help="save the JSON as DIR/<commit>-<suite>.json, the commit being the "
                        "current directory's git checkout (default DIR: benchmarks/history "
                        "of that checkout)")
    p.add_argument("--commit", metavar="SHA",
                   help="the commit to record (default: HEAD of the current directory's git "
                        "checkout)")
    p.add_argument("--history", nargs="?", const="", default=None, metavar="DIR",
                   help="summarise the saved history instead of running")
    p.add_argument("--list", action="store_true", help="list suites, shapes and peers, then exit")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="always draw the progress bar (stderr)")
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   help="never draw it (default: only on a terminal)")
    p.add_argument("--isolate", action="store_true",
                   help="run each thread count in a child process, so that a crashing kernel "
                        "is reported as CRASH on its row and the rest still runs (automatic "
                        "with several thread counts and TensorFlow or JAX)")
    p.add_argument("--isa", choices=("avx2", "avx512", "generic"), default=None,
                   help="run the whole comparison as on a lesser CPU: fastconv "
                        "(FASTCONV_SIMD), oneDNN in PyTorch/TF (ONEDNN_MAX_CPU_ISA), OpenBLAS "
                        "(OPENBLAS_CORETYPE) and PyTorch's ATen (ATEN_CPU_CAPABILITY) held to "
                        "this instruction set, in a child process; each setting is verified "
                        "and shown in the table header")
    p.add_argument("--busy", type=_nonneg_int, default=0, metavar="K",
                   help="run K CPU-burner processes (spin loops) while the cases are timed, "
                        "to measure behaviour on a loaded machine (default 0)")
    p.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--breadcrumb", help=argparse.SUPPRESS)
    p.add_argument("--partial", help=argparse.SUPPRESS)
    p.add_argument("--skip-pairs", type=_name_list, default=[], help=argparse.SUPPRESS)
    return p


def default_history_dir():
    """``benchmarks/history`` of the git checkout holding the current directory, else of the cwd."""
    top = report.git_toplevel(os.getcwd()) or os.getcwd()
    return os.path.join(top, "benchmarks", "history")


#: how many crashing (case, engine) pairs a child run may skip before giving up
MAX_CRASHES = 8


def _child_run(args, threads):
    """Run one thread count in a fresh interpreter.

    TensorFlow and JAX fix their thread pools once per process, hence one
    process per count.  When a kernel crashes the child (a native fault), the pair it was
    running (read from a breadcrumb file) is skipped -- its row says CRASH --
    and a new child runs the cases not finished yet (the finished ones are
    kept from a partial-results file).
    """
    from .suite import get_suite
    skipped, done, done_peaks, done_bws = {}, [], [], []
    remaining = [c.name for c in get_suite(args.suite, args.ops, args.shapes)]
    with tempfile.TemporaryDirectory() as tmp:
        path, crumb = os.path.join(tmp, "run.json"), os.path.join(tmp, "breadcrumb")
        partial = os.path.join(tmp, "partial.json")
        for _ in range(MAX_CRASHES + 1):
            cmd = [sys.executable, "-c",
                   "import sys; from fastconv.bench.cli import main; sys.exit(main(sys.argv[1:]))",
                   "--suite", args.suite, "--threads", str(threads), "--json", path, "--quiet",
                   "--breadcrumb", crumb, "--partial", partial, "--shapes", ",".join(remaining),
                   "--child", "--busy", str(args.busy)]
            if args.isa:
                cmd += ["--isa", args.isa]
            for flag, val in (("--backends", args.backends), ("--peers", args.peers)):
                if val is not None:
                    cmd += [flag, ",".join(val)]
            for flag, val in (("--repeat", args.repeat), ("--min-time", args.min_time),
                              ("--peak-size", args.peak_size)):
                if val is not None:
                    cmd += [flag, str(val)]
            if args.progress is not None:
                cmd.append("--progress" if args.progress else "--no-progress")
            if skipped:
                cmd += ["--skip-pairs", ",".join(f"{c}@{e}" for c, e in skipped)]
            env = dict(os.environ,
                       TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
            if args.isa:  # read by the libraries as they load: only a child can have it
                from .isa import child_env
                env = child_env(args.isa, env)
            # the child must import this same fastconv, wherever the parent found it
            root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in
                                                         [os.environ.get("PYTHONPATH")] if p])
            proc = subprocess.run(cmd, env=env)
            if os.path.exists(path):
                with open(path) as f:
                    return _merge_partial(json.load(f)["runs"][0], done, done_peaks, done_bws)
            if proc.returncode >= 0 or not os.path.exists(crumb):
                break  # an ordinary failure (bad arguments...), not a crash
            with open(crumb) as f:
                case, engine = f.read().strip().split("\t")
            os.remove(crumb)
            if os.path.exists(partial):  # keep the cases the crashed child finished
                with open(partial) as f:
                    part = json.load(f)
                os.remove(partial)
                done += part["results"]
                done_peaks += part["peaks"]
                done_bws += part.get("bandwidths", [])
                finished = {r["case"] for r in part["results"]}
                remaining = [c for c in remaining if c not in finished]
            why = (f"crashed the process (signal {-proc.returncode}) at {threads} thread(s); "
                   f"the run was restarted without it")
            print(f"fastconv bench: {engine} on {case} {why}", file=sys.stderr)
            skipped[(case, engine)] = why
        raise RuntimeError(f"the {threads}-thread run failed (exit status {proc.returncode})")


def _merge_partial(run, done, done_peaks, done_bws=()):
    """Put the rows a crashed child finished in front of the final child's run."""
    import statistics
    if not done:
        return run
    run["results"] = done + run["results"]
    for key, old in (("peak", done_peaks), ("bandwidth", list(done_bws))):
        unit = "gflops" if key == "peak" else "gbytes_s"
        vals = old + (run.get(f"{key}_samples_{unit}") or [])
        if vals:
            run[f"{key}_samples_{unit}"] = vals
            run[f"{key}_{unit}"] = statistics.median(vals)
            run[f"{key}_range_{unit}"] = [min(vals), max(vals)]
    return run


def run_benchmarks(args):
    """Run the benchmarks described by parsed ``args``; return the list of runs."""
    import fastconv
    from . import peers as peers_mod
    from .runner import run
    from .suite import BANDWIDTH_SIZES, PEAK_SIZES, SUITES, get_suite

    cases = get_suite(args.suite, args.ops, args.shapes)
    if not cases:
        raise ValueError(f"no case of suite {args.suite!r} matches --ops {','.join(args.ops)}; "
                         f"use --suite full or --shapes.")
    _, default_repeat, default_min = SUITES[args.suite]
    repeat = args.repeat or default_repeat
    min_time = default_min if args.min_time is None else args.min_time
    peak_size = PEAK_SIZES.get(args.suite, 2048) if args.peak_size is None else args.peak_size
    bandwidth = BANDWIDTH_SIZES.get(args.suite, 64 << 20) if peak_size else 0
    threads = args.threads or [fastconv.get_num_threads()]
    engines = peers_mod.make_engines(args.backends, args.peers)
    if args.isa:
        from .isa import check_isa
        check_isa(args.isa)  # above this CPU's best: a clear error, before anything runs
    fresh = not args.child and (
        args.isolate or args.isa is not None
        or (len(threads) > 1 and any(e.needs_fresh_process for e in engines)))
    skip = {}
    for pair in args.skip_pairs:
        case, _, engine = pair.partition("@")
        skip[(case, engine)] = "crashed the process in an earlier attempt; not run again"
    runs = []
    for n in threads:
        if fresh:
            runs.append(_child_run(args, n))
        else:
            runs.append(run(cases, peers_mod.make_engines(args.backends, args.peers), n,
                            repeat, min_time, peak_size, args.progress, skip, args.breadcrumb,
                            args.partial, bandwidth, args.busy,
                            args.isa if args.child else None))
    return runs


def _history(path):
    d = path or default_history_dir()
    if not os.path.isdir(d):
        print(f"fastconv bench: no history directory {d}", file=sys.stderr)
        return 2
    docs = []
    for fn in sorted(os.listdir(d)):
        if fn.endswith(".json"):
            try:
                docs.append((fn, report.load_json(os.path.join(d, fn))))
            except (ValueError, OSError) as exc:
                print(f"skipping {fn}: {exc}", file=sys.stderr)
    docs.sort(key=lambda t: t[1].get("meta", {}).get("date", ""))
    print(f"history in {d} (oldest first): geometric mean of speed vs best peer")
    for fn, doc in docs:
        meta = doc.get("meta", {})
        for run in doc.get("runs", ()):  # the training and Dask parts have no bench runs
            cells = ", ".join(f"{e} {g:.2f}x ({k})"
                              for e, (g, k) in report.engine_geomeans(run).items()
                              if g and e.startswith("fastconv"))
            print(f"  {meta.get('date', '?')[:19]}  {str(meta.get('commit'))[:12]}"
                  f"{'+dirty' if meta.get('dirty') else ''}  suite {meta.get('suite')}  "
                  f"{run['threads']} thr: {cells or '-'}")
    return 0


def main(argv=None):
    """Entry point of ``fastconv bench``; returns the exit status.

    0: done; 1: a fastconv backend produced a wrong result, failed or crashed,
    or the plot could not be drawn; 2: bad arguments or unreadable input files.
    """
    import faulthandler
    if not faulthandler.is_enabled():
        try:  # a crashing native kernel then at least leaves a Python traceback
            faulthandler.enable()
        except (AttributeError, ValueError, OSError):  # no usable sys.stderr file descriptor
            pass
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.list:
        return _list()
    if args.history is not None:
        return _history(args.history)
    old = None
    if args.compare:
        try:
            old = report.load_json(args.compare)
        except (OSError, ValueError) as exc:
            print(f"fastconv bench: --compare: cannot read {args.compare}: {exc}",
                  file=sys.stderr)
            return 2
    try:
        runs = run_benchmarks(args)
    except (ValueError, RuntimeError) as exc:
        print(f"fastconv bench: {exc}", file=sys.stderr)
        return 2
    doc = report.make_document(runs, argv, args.suite, commit=args.commit)
    status = 0
    if not args.quiet:
        for run in runs:
            print(report.format_run(run, args.suite))
            print()
        if len(runs) > 1:
            print(report.format_scaling(runs))
            print()
        if old is not None:
            print(report.format_compare(doc, old, args.compare))
            print()
    if any(r["kind"] == "fastconv" and r["check"] in ("MISMATCH", "ERROR", "CRASH")
           for run in runs for r in run["results"]):
        print("fastconv bench: a fastconv backend gave a wrong result, failed or crashed "
              "(see 'check')",
              file=sys.stderr)
        status = 1
    if args.json:
        report.write_json(doc, args.json)
        if not args.quiet:
            print(f"saved {args.json}")
    if args.save_history is not None:
        commit, dirty = doc["meta"]["commit"], doc["meta"]["dirty"]
        if commit is None:
            print("fastconv bench: --save-history needs a commit: run it inside a git "
                  "checkout, or name one with --commit",
                  file=sys.stderr)
            status = status or 2
        else:
            d = args.save_history or default_history_dir()
            path = os.path.join(d, f"{commit}{'+dirty' if dirty else ''}-{args.suite}.json")
            report.write_json(doc, path)
            print(f"saved {path}")
    if args.plot:
        try:
            report.plot(doc, args.plot)
            print(f"saved {args.plot}")
        except ImportError as exc:
            print(f"fastconv bench: {exc}", file=sys.stderr)
            status = status or 1
    return status


def _list():
    from .peers import PEER_NAMES
    from .suite import CASES, PUBLIC_SUITES, SUITES
    for s in PUBLIC_SUITES:
        names, repeat, _ = SUITES[s]
        print(f"suite {s} (repeat {repeat}): {', '.join(names)}")
    print("shapes:")
    for c in CASES.values():
        if not c.name.startswith("tiny"):
            print(f"  {c.name:18s} {c.op:10s} {c.description}")
    print(f"peers: {', '.join(PEER_NAMES)}")
    return 0
