"""Shared fixtures: backends under test, tolerances, and the oracles (TensorFlow, PyTorch).

Oracle tests are skipped only where a framework is not installed.  CI sets
``FASTCONV_REQUIRE_ORACLES=1``, which turns a missing framework into a test
failure, so the oracle comparisons can never be skipped silently there.
"""
import importlib
import os

import numpy as np
import pytest

import fastconv

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REQUIRE_ORACLES = os.environ.get("FASTCONV_REQUIRE_ORACLES", "") not in ("", "0")

#: relative/absolute tolerance per dtype for sums of a few hundred products
TOL = {np.dtype(np.float32): dict(rtol=2e-5, atol=2e-5),
       np.dtype(np.float64): dict(rtol=1e-11, atol=1e-11)}


def assert_close(actual, expected, dtype=None, scale=1.0):
    """Compare with the per-dtype tolerance, widened by ``scale`` (e.g. sqrt of the sum length)."""
    dtype = np.dtype(dtype or np.asarray(expected).dtype)
    tol = TOL[dtype]
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"] * scale,
                               atol=tol["atol"] * scale)


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


AVAILABLE_BACKENDS = fastconv.available_backends()


@pytest.fixture(params=AVAILABLE_BACKENDS)
def backend(request):
    """Every backend available in this installation."""
    return request.param


FAST_BACKENDS = [b for b in AVAILABLE_BACKENDS if b != "numpy"]


@pytest.fixture(params=FAST_BACKENDS)
def fast_backend(request):
    """Every compiled or JIT backend available (each is judged by the NumPy reference)."""
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)
