"""Regenerate ``benchmarks/RESULTS.md`` from a real ``fastconv bench`` run.

Usage::

    python benchmarks/make_results.py                      # full suite, threads 1,2
    python benchmarks/make_results.py --suite lesson --threads 2
    python benchmarks/make_results.py --from-json run.json # rewrite from a saved run

Any option other than the ones below is passed on to ``fastconv bench``
(default ``--suite full --threads 1,2``).  The run is also saved in the
history, ``benchmarks/history/<commit>-<suite>.json`` (``--no-history`` to skip).
RESULTS.md records the exact command, the machine (CPU model, cores, the
SIMD path fastconv reports) and the version of every peer, and evaluates the
Cython issue's speed targets row by row.  Never edit RESULTS.md by hand.
"""
import argparse
import os
import shlex
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.isdir(os.path.join(HERE, os.pardir, "fastconv")):
    sys.path.insert(0, os.path.dirname(HERE))  # the source tree's fastconv, built in place
DEFAULT_BENCH_ARGS = ["--suite", "full", "--threads", "1,2"]


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
    ours, bench_args = parser.parse_known_args(argv)
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
        f.write(report.markdown(doc, command))
    print(f"wrote {ours.output}")
    return status


if __name__ == "__main__":
    sys.exit(main())
