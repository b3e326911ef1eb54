"""pytest-benchmark suites for fastconv: op x engine x suite shape.

These live outside the default test run (``testpaths = ["tests"]``).  Run them
with, for example::

    python -m pytest benchmarks/ --fc-suite quick --benchmark-save=base
    python -m pytest benchmarks/ --fc-suite quick --benchmark-compare=0001 \\
        --benchmark-compare-fail=median:10%

Options added here:

``--fc-suite quick|lesson|full``  shapes to run (default ``full``);
``--fc-peers LIST``  peers besides fastconv's backends, comma-separated, from
    ``fastconv.bench.peers.PEER_NAMES`` (default ``numpy,torch,torch-cl``;
    ``all`` for every one, ``''`` for none);
``--fc-backends LIST``  fastconv backends (default: all; unavailable ones skip);
``--fc-threads N``  thread count for every engine (default: fastconv's default).

Every benchmark first checks its engine's result against the NumPy reference
(so a wrong setup fails instead of producing a fast number), then times the
call with pytest-benchmark.  Tests of one shape share a group, so the report
puts the engines side by side.  FLOP figures in ``extra_info`` count 2 FLOPs
per multiply-add.
"""
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fastconv.bench import peers, runner, suite  # noqa: E402

DEFAULT_PEERS = "numpy,torch,torch-cl"


def pytest_addoption(parser):
    group = parser.getgroup("fastconv benchmarks")
    group.addoption("--fc-suite", default="full", choices=list(suite.SUITES),
                    help="suite whose shapes to benchmark (default full)")
    group.addoption("--fc-peers", default=DEFAULT_PEERS,
                    help=f"peers to include besides fastconv's backends (default "
                         f"{DEFAULT_PEERS}; 'all' or '' for none)")
    group.addoption("--fc-backends", default=None,
                    help="fastconv backends, comma-separated (default: every known one; "
                         "unavailable ones are skipped)")
    group.addoption("--fc-threads", type=int, default=None,
                    help="thread count for every engine (default: fastconv's default)")


def _engine_names(config):
    import fastconv
    raw = config.getoption("--fc-peers")
    names = list(peers.PEER_NAMES) if raw == "all" else [p for p in raw.split(",") if p]
    backends = config.getoption("--fc-backends")
    if backends is None:
        backends = [s.name for s in fastconv.backends()]
    else:
        backends = [b for b in backends.split(",") if b]
    return [f"fastconv:{b}" for b in backends] + names


def _engine(name):
    """An engine object (not yet set up) for a name from :func:`_engine_names`."""
    return peers.make_engine(name)


def pytest_generate_tests(metafunc):
    """Parametrize over (case, engine) pairs, shape-major, for the engines that support it."""
    if "engine_name" in metafunc.fixturenames and "case_name" in metafunc.fixturenames:
        op = getattr(metafunc.module, "OP")
        cases = [c for c in suite.get_suite(metafunc.config.getoption("--fc-suite"))
                 if c.op == op]
        engines = [(n, _engine(n)) for n in _engine_names(metafunc.config)]
        pairs = [(c.name, n) for c in cases for n, e in engines if e.supports(c)]
        metafunc.parametrize("case_name, engine_name", pairs,
                             ids=[f"{c}-{n}" for c, n in pairs])


@pytest.fixture(scope="session")
def threads(pytestconfig):
    import fastconv
    n = pytestconfig.getoption("--fc-threads") or fastconv.get_num_threads()
    return n


@pytest.fixture(scope="session", autouse=True)
def _hold_threads(threads):
    """Hold fastconv, OpenMP and BLAS to the same thread count for the session."""
    import fastconv
    from threadpoolctl import threadpool_limits
    before = fastconv._threads._default
    fastconv.set_num_threads(threads)
    with threadpool_limits(limits=threads):
        yield
    fastconv._threads._default = before


@pytest.fixture(scope="session")
def _engines(threads):
    """Engines set up once per session: name -> engine, or the reason it is unavailable."""
    cache = {}

    def get(name):
        if name not in cache:
            engine = _engine(name)
            try:
                engine.setup(threads)
                cache[name] = engine
            except peers.Unavailable as exc:
                cache[name] = str(exc)
        return cache[name]
    return get


@pytest.fixture(scope="session")
def _cases():
    """Inputs and reference outputs, made once per shape."""
    cache = {}

    def get(name):
        if name not in cache:
            case = suite.CASES[name]
            data = runner.make_data(case)
            cache.clear()  # keep one shape's arrays alive at a time
            cache[name] = (case, data, runner.reference(case, data))
        return cache[name]
    return get


@pytest.fixture
def bench_case(benchmark, _engines, _cases, threads):
    """``bench_case(engine_name, case_name)``: check the result, then benchmark the call."""

    def run(engine_name, case_name):
        engine = _engines(engine_name)
        if isinstance(engine, str):
            pytest.skip(f"{engine_name}: {engine}")
        case, data, expected = _cases(case_name)
        if not engine.supports(case):
            pytest.skip(f"{engine_name} has no natural implementation of {case_name}")
        try:
            prepared = engine.prepare(case, data)
        except peers.Unavailable as exc:
            pytest.skip(str(exc))
        prepared()
        ok, detail = runner.check_result(prepared.result(), expected)
        assert ok, f"{engine_name} on {case_name}: wrong result ({detail})"
        prepared.last = None
        benchmark.group = f"{case.op} {case_name} ({case.description}), {threads} thread(s)"
        benchmark.extra_info.update(engine=engine_name, case=case_name, threads=threads,
                                    flops=case.flops, bytes=case.bytes_moved,
                                    flop_convention="2 x multiply-add")
        benchmark(prepared)
        stats = getattr(benchmark, "stats", None)
        if stats:  # None under --benchmark-disable (the call then runs once, untimed)
            median = stats.stats.median
            if case.flops:
                benchmark.extra_info["gflops_at_median"] = case.flops / median / 1e9
            benchmark.extra_info["gbytes_s_at_median"] = case.bytes_moved / median / 1e9
    return run
