"""The backward bench cases: their suites and ``--ops`` names, every fastconv backend and
the autograd peers (torch, TF GradientTape) checked against the NumPy reference."""
import json

import numpy as np
import pytest

import fastconv
from fastconv.bench import peers, runner, suite

TINY_BACKWARD = suite.SUITES["tiny-backward"][0]


def test_backward_ops_are_known_and_filter_suites():
    for op in suite.BACKWARD_OPS:
        cases = suite.get_suite("backward", ops=[op])
        assert cases and all(c.op == op for c in cases)
        assert suite.get_suite("tiny-backward", ops=[op])
    assert "backward" in suite.PUBLIC_SUITES
    with pytest.raises(ValueError, match="unknown op"):
        suite.get_suite("backward", ops=["conv2d_grad_bias"])


@pytest.mark.parametrize("name", suite.SUITES["backward"][0] + TINY_BACKWARD)
def test_backward_case_shapes_match_the_reference(name):
    case = suite.CASES[name]
    forward = suite.CASES[name.split(":", 1)[1]]
    assert case.op in suite.BACKWARD_OPS and forward.op == suite.BACKWARD_OPS[case.op]
    if case.op.startswith("conv2d"):
        assert case.flops == forward.flops
    if name in TINY_BACKWARD:  # the full-size ones are too big to compute here
        data = runner.make_data(case)
        assert data["dy"].shape == (forward.output_shape if case.op != "relu_backward"
                                    else case.input_shape)
        assert runner.reference(case, data).shape == case.output_shape


def test_tiny_backward_suite_every_backend_ok(run_cli, tmp_path):
    path = tmp_path / "bw.json"
    backends = ",".join(fastconv.available_backends())
    status, out, err = run_cli("--suite", "tiny-backward", "--repeat", "2", "--min-time", "0",
                               "--peak-size", "64", "--no-progress", "--backends", backends,
                               "--peers", "", "--threads", "2", "--json", str(path))
    assert status == 0, err
    (run,) = json.loads(path.read_text())["runs"]
    rows = {(r["case"], r["engine"]): r for r in run["results"]}
    for name in TINY_BACKWARD:
        for b in fastconv.available_backends():
            r = rows[(name, f"fastconv:{b}")]
            assert r["check"] == "ok", (name, b, r["detail"])
            assert r["median_s"] > 0


@pytest.mark.oracle
@pytest.mark.parametrize("peer, module", [("torch", "torch"), ("torch-cl", "torch"),
                                          ("tf", "tensorflow")])
def test_autograd_peers_match_the_reference(peer_library, peer, module):
    peer_library(module)
    engine = peers.make_peer(peer)
    try:
        engine.setup(fastconv.get_num_threads())
    except peers.Unavailable as exc:  # TF initialised earlier with another thread count
        pytest.skip(str(exc))
    ran = 0
    for name in TINY_BACKWARD:
        case = suite.CASES[name]
        if not engine.supports(case):
            continue
        data = runner.make_data(case)
        prepared = engine.prepare(case, data)
        prepared()
        prepared()  # a second backward through the same recorded forward
        got = prepared.result()
        expected = runner.reference(case, data)
        assert got.shape == expected.shape, name
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * max(
            1.0, float(np.abs(expected).max())), err_msg=name)
        ran += 1
    assert ran >= 6
