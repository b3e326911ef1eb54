"""pytest-benchmark: ``im2col`` on every engine x every im2col shape of the chosen suite.

See ``benchmarks/conftest.py`` for the options (``--fc-suite``, ``--fc-peers``,
``--fc-threads``); each benchmark fails if its engine's result is wrong.
"""
OP = "im2col"


def test_im2col(bench_case, engine_name, case_name):
    bench_case(engine_name, case_name)
