"""Reporting of measurements: text tables, the JSON document, a chart and Markdown.

* :mod:`.tables` -- one run side by side, thread scaling, comparison with a saved run;
* :mod:`.document` -- the JSON document (machine, versions, command, commit), saved
  and loaded, with local paths taken out;
* :mod:`.chart` -- the ``--plot`` bar chart;
* :mod:`.markdown` -- RESULTS.md's tables.

The report states what was measured; it judges nothing.  Goals, where a
reader wants them checked, are data in ``benchmarks/targets.json``, read by
``benchmarks/make_results.py``.
"""
from .chart import plot
from .document import (git_commit, git_toplevel, load_json, machine_info, make_document,
                       without_paths, write_json)
from .markdown import markdown_table, results_markdown
from .tables import (FLOP_NOTE, compare_rows, engine_geomeans, format_compare, format_run,
                     format_scaling, format_time, geomean, index_rows)

__all__ = ["FLOP_NOTE", "compare_rows", "engine_geomeans", "format_compare", "format_run",
           "format_scaling", "format_time", "geomean", "git_commit", "git_toplevel",
           "index_rows", "load_json", "machine_info", "make_document", "markdown_table",
           "plot", "results_markdown", "without_paths", "write_json"]
