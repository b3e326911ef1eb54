"""The runner: result checks, wrong peers left out of the ratios."""
import numpy as np
import pytest

from fastconv.bench import report, runner, suite
from fastconv.bench.peers import Prepared, fastconv_backends, numpy_scipy


class _WrongPeer(numpy_scipy.NumpyEngine):
    """A peer set up wrongly: its relu returns the input unchanged."""
    name = "wrong"

    def prepare(self, case, data):
        x = data["x"]
        return Prepared(lambda: x)


def test_wrong_results_are_marked_and_excluded_from_ratios():
    case = suite.CASES["tiny_relu"]
    res = runner.run([case], [fastconv_backends.FastconvEngine("numpy"), _WrongPeer(),
                              numpy_scipy.NumpyEngine()],
                     1, repeat=2, min_time=0, peak_size=0, progress=False)
    rows = {r["engine"]: r for r in res["results"]}
    assert rows["wrong"]["check"] == "MISMATCH"
    assert rows["numpy"]["check"] == "ok"
    # the best peer is the correct one, however fast the wrong one was
    assert rows["numpy"]["vs_best_peer"] == pytest.approx(1.0)
    text = report.format_run(res, "tiny")
    assert "MISMATCH" in text


def test_check_result_tolerance():
    ref = np.linspace(-3, 3, 100, dtype=np.float32)
    assert runner.check_result(ref + 1e-6, ref)[0]
    assert not runner.check_result(ref + 0.1, ref)[0]
    assert not runner.check_result(ref[:50], ref)[0]
    bad = ref.copy()
    bad[3] = np.nan
    assert not runner.check_result(bad, ref)[0]


def test_model_reference_is_fastconv_models_on_the_numpy_backend():
    case = suite.CASES["model:fmnist"]
    data = runner.make_data(case)
    expected = runner.reference(case, data)
    assert expected.shape == (256, 10) and expected.dtype == np.float32
    np.testing.assert_allclose(expected.sum(axis=1), 1, rtol=1e-5)  # softmax rows
