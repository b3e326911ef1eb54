"""pytest-benchmark: ``max_pool2d`` on every engine x every max_pool2d shape of the chosen suite.

See ``benchmarks/conftest.py`` for the options (``--fc-suite``, ``--fc-peers``,
``--fc-threads``); each benchmark fails if its engine's result is wrong.
"""
OP = "max_pool2d"


def test_max_pool2d(bench_case, engine_name, case_name):
    bench_case(engine_name, case_name)
