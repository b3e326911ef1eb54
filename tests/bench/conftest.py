"""Fixtures of the ``fastconv bench`` tests: the CLI runner, fast options, peer libraries.

Everything runs the hidden ``tiny`` suite, with ``--repeat 2 --min-time 0`` and
a 64^3 peak probe, on fastconv's NumPy backend, so a test takes a fraction of
a second to a few seconds.  TensorFlow is kept out (importing it is slow).

Peer libraries (:func:`peer_library`) are skipped where they are not
installed, except under ``FASTCONV_REQUIRE_ORACLES=1`` (CI), where a missing
one fails the test, as for the TensorFlow and PyTorch oracles.
"""
import importlib
import os
import sys

import pytest

from fastconv import bench

REQUIRE_ORACLES = os.environ.get("FASTCONV_REQUIRE_ORACLES", "") not in ("", "0")


@pytest.fixture
def fast():
    """Options that make any bench run quick (tiny suite, NumPy backend, no progress bar)."""
    return ["--suite", "tiny", "--repeat", "2", "--min-time", "0", "--peak-size", "64",
            "--no-progress", "--backends", "numpy"]


@pytest.fixture
def light():
    """Peers that import in no time."""
    return "numpy,scipy"


@pytest.fixture
def run_cli(capsys):
    """``run_cli(*args)`` -> ``(status, stdout, stderr)`` of ``fastconv bench args``."""
    def run(*args):
        status = bench.main(list(args))
        out, err = capsys.readouterr()
        return status, out, err
    return run


@pytest.fixture
def block_imports(monkeypatch):
    """``block_imports(*names)``: make ``import name`` fail (ImportError) in this test."""
    def block(*names):
        for n in names:
            monkeypatch.setitem(sys.modules, n, None)
    return block


@pytest.fixture
def peer_library():
    """``peer_library(*modules)``: import them, or skip (fail under FASTCONV_REQUIRE_ORACLES)."""
    def need(*names):
        mods = []
        for name in names:
            try:
                mods.append(importlib.import_module(name))
            except ImportError as exc:
                if REQUIRE_ORACLES:
                    pytest.fail(f"FASTCONV_REQUIRE_ORACLES is set but {name} is missing: {exc}")
                pytest.skip(f"{name} is not installed")
        return mods
    return need


@pytest.fixture(scope="session")
def make_results():
    """``benchmarks/make_results.py`` of this source tree, as a module."""
    import importlib.util
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(root, "benchmarks", "make_results.py")
    spec = importlib.util.spec_from_file_location("make_results", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
