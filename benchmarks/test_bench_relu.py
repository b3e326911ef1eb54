"""pytest-benchmark: ``relu`` on every engine x every relu shape of the chosen suite.

See ``benchmarks/conftest.py`` for the options (``--fc-suite``, ``--fc-peers``,
``--fc-threads``); each benchmark fails if its engine's result is wrong.
"""
OP = "relu"


def test_relu(bench_case, engine_name, case_name):
    bench_case(engine_name, case_name)
