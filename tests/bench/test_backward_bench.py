"""The backward bench cases: their suites and ``--ops`` names, every fastconv backend and
the autograd peers (torch, TF GradientTape, JAX vjp) checked against the NumPy reference,
and the CS231n rows (the course adapter's forward + backward against PyTorch's)."""
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


GRADIENT_ROWS = tuple(n for n in suite.SUITES["backward"][0] + TINY_BACKWARD
                      if suite.CASES[n].op not in suite.CS231N_OPS)
CS231N_ROWS = ("cs231n_conv", "cs231n_conv_relu_pool")


@pytest.mark.parametrize("name", GRADIENT_ROWS)
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


def test_backward_suite_covers_the_gradient_goals_shapes():
    """Input and filter gradients on shapes with <= 3 and >= 16 input channels (1x1 and
    depthwise among them), pool and relu backward, the CS231n rows; the same classes in
    tiny-backward, so that a tiny run exercises every goal's selector."""
    for name in ("backward", "tiny-backward"):
        cases = suite.get_suite(name)
        for op in ("conv2d_grad_input", "conv2d_grad_filters"):
            channels = [c.C for c in cases if c.op == op]
            assert min(channels) <= 3 and max(channels) >= 16, (name, op, channels)
        assert {c.op for c in cases} == set(suite.BACKWARD_OPS)
        assert {"cs231n_conv", "cs231n_conv_relu_pool"} <= {c.name for c in cases}
    full = suite.get_suite("backward", ops=["conv2d_grad_input"])
    assert {c.KH for c in full} >= {1, 3, 7} and any(c.groups == c.C > 1 for c in full)
    assert set(CS231N_ROWS) <= set(suite.SUITES["small"][0])


def test_cs231n_rows_are_the_course_geometries():
    conv, sandwich = suite.CASES["cs231n_conv"], suite.CASES["cs231n_conv_relu_pool"]
    for case, x_shape, w_shape, out_shape in (
            (conv, (4, 3, 5, 5), (2, 3, 3, 3), (4, 2, 5, 5)),
            (sandwich, (2, 3, 16, 16), (3, 3, 3, 3), (2, 3, 8, 8))):
        data = runner.make_data(case)
        x, w, b, dout, conv_param = suite.cs231n_arrays(case, data)
        assert (x.shape, w.shape, b.shape, dout.shape) == (x_shape, w_shape, (w_shape[0],),
                                                          out_shape)
        assert conv_param == {"stride": 1, "pad": 1}
        assert {a.dtype for a in (x, w, b, dout)} == {np.dtype(np.float64)}
        assert runner.reference(case, data).shape == case.output_shape
    assert suite.CS231N_POOL == {"pool_height": 2, "pool_width": 2, "stride": 2}


def test_cs231n_reference_is_the_layer_by_definition():
    """The row's reference (fastconv's NumPy backend on NHWC arrays) against the course's
    conv formula written out here with loops, and the gradients by central differences."""
    case = suite.CASES["cs231n_conv"]
    data = runner.make_data(case)
    x, w, b, dout, conv_param = suite.cs231n_arrays(case, data)
    pad = conv_param["pad"]

    def conv(x, w, b):
        xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        N, _, H, W = x.shape
        F, _, HH, WW = w.shape
        out = np.empty((N, F, H + 2 * pad - HH + 1, W + 2 * pad - WW + 1))
        for i in range(out.shape[2]):
            for j in range(out.shape[3]):
                out[:, :, i, j] = np.tensordot(xp[:, :, i:i + HH, j:j + WW], w,
                                               ((1, 2, 3), (1, 2, 3))) + b
        return out

    def numeric(arg):
        args = [x.copy(), w.copy(), b.copy()]
        grad, h = np.zeros_like(args[arg]), 1e-6
        for idx in np.ndindex(grad.shape):
            old = args[arg][idx]
            args[arg][idx] = old + h
            plus = np.sum(conv(*args) * dout)
            args[arg][idx] = old - h
            grad[idx] = (plus - np.sum(conv(*args) * dout)) / (2 * h)
            args[arg][idx] = old
        return grad

    expected = suite.cs231n_pack(conv(x, w, b), numeric(0), numeric(1), numeric(2))
    got = runner.reference(case, data)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", fastconv.available_backends())
@pytest.mark.parametrize("name", CS231N_ROWS)
def test_cs231n_rows_run_the_adapter_on_each_backend(monkeypatch, backend, name):
    """fastconv's engine calls fastconv.compat.cs231n (which takes no backend argument) and
    its convolutions' backward runs on the engine's backend; the result matches the
    reference."""
    from fastconv import _backends
    from fastconv.bench.peers.fastconv_backends import FastconvEngine
    from fastconv.compat import cs231n
    case = suite.CASES[name]
    data = runner.make_data(case)
    engine = FastconvEngine(backend)
    engine.setup(1)
    default = _backends.get_backend()
    prepared = engine.prepare(case, data)
    seen, real = [], cs231n.conv2d_backward_nhwc
    want = _backends.resolve(backend)[1]

    def spy(*args, **kwargs):   # (x, w, dy, relu_output, strides, dilations, pads, groups,
        seen.append(args[9] is want)   # wanted, module, n_threads)
        return real(*args, **kwargs)
    monkeypatch.setattr(cs231n, "conv2d_backward_nhwc", spy)
    prepared()
    prepared()
    assert seen == [True, True]
    ok, detail = runner.check_result(prepared.result(), runner.reference(case, data))
    assert ok, detail
    assert _backends.get_backend() == default  # the process default is left alone


@pytest.mark.oracle
@pytest.mark.parametrize("name", CS231N_ROWS)
def test_cs231n_rows_torch_matches_the_reference(peer_library, name):
    """PyTorch's forward + autograd of the course layer: the oracle for the row's reference."""
    peer_library("torch")
    case = suite.CASES[name]
    assert not peers.make_peer("torch-cl").supports(case)
    assert not peers.make_peer("tf").supports(case)
    engine = peers.make_peer("torch")
    engine.setup(1)
    assert engine.supports(case)
    data = runner.make_data(case)
    prepared = engine.prepare(case, data)
    prepared()
    prepared()  # a fresh graph every call
    expected = runner.reference(case, data)
    np.testing.assert_allclose(prepared.result(), expected, rtol=1e-10,
                               atol=1e-10 * float(np.abs(expected).max()))


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


@pytest.mark.oracle
def test_jax_vjp_peer_matches_the_reference(peer_library):
    """JAX's vjp under jit: input and filter gradients (strided, 1-channel, depthwise,
    16-channel), pool and relu backward, each against the reference, twice through one vjp."""
    peer_library("jax")
    from fastconv.bench.peers.jax_xla import JaxEngine
    engine = JaxEngine()
    engine.setup(fastconv._threads.available_cores())  # XLA's pool: every core (or 1)
    ran = []
    for name in TINY_BACKWARD:
        case = suite.CASES[name]
        if not engine.supports(case):
            assert case.dtype == "float64", name  # float64 needs JAX's process-wide x64
            continue
        data = runner.make_data(case)
        prepared = engine.prepare(case, data)
        prepared()
        prepared()
        got, expected = prepared.result(), runner.reference(case, data)
        assert got.shape == expected.shape, name
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * max(
            1.0, float(np.abs(expected).max())), err_msg=name)
        ran.append(case.op)
    assert set(ran) == set(suite.BACKWARD_OPS) - set(suite.CS231N_OPS) and len(ran) >= 12


@pytest.mark.oracle
def test_jax_backward_rows_in_a_run_are_checked_ok(peer_library):
    peer_library("jax")
    from fastconv.bench.peers.jax_xla import JaxEngine
    cases = [suite.CASES[n] for n in ("conv2d_grad_filters:tiny_s2",
                                      "max_pool2d_backward:tiny_pool")]
    res = runner.run(cases, [JaxEngine()], fastconv._threads.available_cores(), repeat=1,
                     min_time=0, peak_size=0, bandwidth_bytes=0, progress=False)
    assert "jax" not in res["unavailable"], res["unavailable"]
    assert [(r["case"], r["check"]) for r in res["results"]] == [(c.name, "ok") for c in cases]


@pytest.mark.parametrize("H, W, K, stride, pad", [(5, 5, 3, 1, 1), (31, 31, 3, 2, 1),
                                                  (32, 32, 3, 2, 1), (8, 8, 4, 1, 1),
                                                  (16, 16, 5, 1, 2), (6, 9, 3, 1, 0),
                                                  (7, 7, 3, 3, 1)])
def test_cs231n_padding_shortcut_is_the_explicit_padding(H, W, K, stride, pad):
    """The CS231n rows' adapter names its padding 'SAME'/'VALID' where that is the course's
    symmetric pad (fewer checks per call): the results are bitwise those of the explicit
    padding, forward and gradients."""
    from fastconv.compat import cs231n
    rng = np.random.default_rng(H * 100 + K)
    x = rng.standard_normal((2, 3, H, W))
    w = rng.standard_normal((4, 3, K, K))
    b = rng.standard_normal(4)
    out, cache = cs231n.conv_forward_fast(x, w, b, {"stride": stride, "pad": pad})
    dout = rng.standard_normal(out.shape)
    dx, dw, db = cs231n.conv_backward_fast(dout, cache)
    w_hwio = np.ascontiguousarray(w.transpose(2, 3, 1, 0))
    explicit = [[0, 0], [0, 0], [pad, pad], [pad, pad]]
    expected = fastconv.conv2d(x, w_hwio, stride, explicit, "NCHW", bias=b)
    ex, ew, eb = fastconv.conv2d_backward(x, w_hwio, dout, stride, explicit, "NCHW")
    assert out.shape == (2, 4, 1 + (H + 2 * pad - K) // stride, 1 + (W + 2 * pad - K) // stride)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(dx, ex)
    np.testing.assert_array_equal(dw, ew.transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(db, eb)


@pytest.mark.oracle
@pytest.mark.parametrize("first, ok", [("import jax", True),
                                       ("import jax; jax.numpy.zeros(1) + 1", False)])
def test_jax_imported_but_not_started_can_still_be_held_to_one_thread(peer_library, first, ok):
    """TensorFlow's import imports JAX without starting XLA's client; the one-thread flags
    still apply then (a run at --threads 1 keeps its JAX rows).  Once JAX has computed,
    its client is fixed and one thread is refused."""
    import os
    import subprocess
    import sys
    peer_library("jax")
    code = (f"{first}\nfrom fastconv.bench.peers import Unavailable, jax_xla\n"
            "try:\n    jax_xla.JaxEngine().setup(1)\nexcept Unavailable as e:\n"
            "    print('refused', e)\nelse:\n    print('started', jax_xla._started_threads)\n")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    cores = fastconv._threads.available_cores()
    if ok:
        assert out.stdout.split() == ["started", "1"]
    elif cores > 1:
        assert out.stdout.startswith("refused") and "cannot hold it to 1" in out.stdout
