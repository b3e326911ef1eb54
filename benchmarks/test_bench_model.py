"""pytest-benchmark: ``model`` on every engine x every model shape of the chosen suite.

See ``benchmarks/conftest.py`` for the options (``--fc-suite``, ``--fc-peers``,
``--fc-threads``); each benchmark fails if its engine's result is wrong.
"""
OP = "model"


def test_model(bench_case, engine_name, case_name):
    bench_case(engine_name, case_name)
