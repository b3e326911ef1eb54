"""pytest-benchmark: ``conv2d`` on every engine x every conv2d shape of the chosen suite.

See ``benchmarks/conftest.py`` for the options (``--fc-suite``, ``--fc-peers``,
``--fc-threads``); each benchmark fails if its engine's result is wrong.
"""
OP = "conv2d"


def test_conv2d(bench_case, engine_name, case_name):
    bench_case(engine_name, case_name)
