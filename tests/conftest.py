"""Shared fixtures: backends under test and the oracles (TensorFlow, PyTorch).

Cases, dtypes and tolerances live in ``cases.py``.

Oracle tests are skipped only where a framework is not installed.  CI sets
``FASTCONV_REQUIRE_ORACLES=1``, which turns a missing framework into a test
failure, so the oracle comparisons can never be skipped silently there.
"""
import importlib
import os

import numpy as np
import pytest

from cases import BACKENDS, FAST_BACKENDS

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Child interpreters the tests start (``python -c``, Dask workers) must import the
# installed fastconv, never the source tree of the current directory, which has no
# compiled modules: Python 3.11+ then does not put the cwd first on sys.path.
os.environ["PYTHONSAFEPATH"] = "1"
REQUIRE_ORACLES = os.environ.get("FASTCONV_REQUIRE_ORACLES", "") not in ("", "0")


def _oracle(module_name):
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        if REQUIRE_ORACLES:
            pytest.fail(f"FASTCONV_REQUIRE_ORACLES is set but {module_name} is missing: {exc}")
        pytest.skip(f"{module_name} is not installed")


@pytest.fixture(scope="session")
def tf():
    """TensorFlow, the oracle for the tf.nn semantics."""
    return _oracle("tensorflow")


@pytest.fixture(scope="session")
def torch():
    """PyTorch, the oracle for the torch.nn.functional semantics."""
    return _oracle("torch")


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Every backend available in this installation."""
    return request.param


@pytest.fixture(params=FAST_BACKENDS)
def fast_backend(request):
    """Every compiled or JIT backend available (each is judged by the NumPy reference)."""
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)
