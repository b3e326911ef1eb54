"""``fastconv bench``: every fastconv backend against every installed peer, side by side.

Everything a figure is compared with is measured in the same process, in
interleaved rounds, at the same thread count, and checked against the NumPy
reference first.  The parts:

* :mod:`fastconv.bench.cli` -- the command line (:func:`main`);
* :mod:`fastconv.bench.suite` -- the shapes, the suites and the FLOP convention
  (2 x multiply-add);
* :mod:`fastconv.bench.runner` -- the timing method and the result check;
* :mod:`fastconv.bench.peers` -- how each library is driven, one module per family;
* :mod:`fastconv.bench.report` -- tables, the JSON document, the chart, Markdown.

Usage (``fastconv bench --help`` for every option)::

    fastconv bench                          # quick suite, default thread count
    fastconv bench --suite full --threads 1,2 --json run.json --plot run.png
    fastconv bench --compare run.json       # ratios against a saved run
    fastconv bench --save-history           # benchmarks/history/<commit>-<suite>.json
"""
from .cli import main, run_benchmarks

__all__ = ["main", "run_benchmarks"]
