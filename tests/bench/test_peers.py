"""The engines: registry, missing libraries, the lesson model, and the JAX / ONNX Runtime peers."""
import json
import sys

import pytest

import fastconv
from fastconv.bench import peers, report, runner, suite
from fastconv.bench.peers import fastconv_backends, numpy_scipy, opencv

TINY_COMPUTE = ("tiny_conv", "tiny_1ch", "tiny_s2", "tiny_dw", "tiny_relu", "tiny_pool")


def test_registry_builds_every_peer_without_importing_its_library(monkeypatch):
    for name in ("torch", "tensorflow", "jax", "onnxruntime", "cv2"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    engines = peers.make_engines(["numpy"], None)
    assert [e.name for e in engines] == ["fastconv:numpy", *peers.PEER_NAMES]
    assert all(isinstance(e, peers.Engine) for e in engines)
    for name in ("torch", "tensorflow", "jax", "onnxruntime", "cv2"):
        assert name not in sys.modules  # imported in setup(), not before
    assert peers.make_engine("fastconv:cython").backend == "cython"
    with pytest.raises(ValueError, match="unknown peer"):
        peers.make_peer("matlab")


def test_missing_peers_are_listed_not_errors(run_cli, fast, block_imports):
    block_imports("cv2", "torch", "tensorflow", "jax", "onnxruntime")
    status, out, err = run_cli(*fast, "--peers",
                               "numpy,opencv,torch,torch-cl,scipy,tf,jax,onnxruntime")
    assert status == 0
    listing = out.split("not run (missing or unusable here):")[1]
    for name in ("opencv", "torch", "torch-cl", "tf", "jax", "onnxruntime"):
        assert f"  {name}: " in listing
    assert "not installed" in listing
    table = out.split("geometric mean")[0]
    for name in ("opencv", "torch", "jax", "onnxruntime"):
        assert name not in table
    assert "scipy" in table  # the peers that are there still run


def test_engines_setup_reports_missing_module(block_imports):
    block_imports("cv2")  # import cv2 -> ImportError
    ready, missing = runner.setup_engines([opencv.OpenCVEngine(), numpy_scipy.NumpyEngine()], 1)
    assert [e.name for e in ready] == ["numpy"]
    assert "cv2" in missing["opencv"]


def test_model_row_matches_reference():
    case = suite.CASES["model:fmnist"]
    res = runner.run([case], [fastconv_backends.FastconvEngine("numpy")], 1, repeat=1,
                     min_time=0, peak_size=0, progress=False)
    (row,) = res["results"]
    assert row["check"] == "ok", row["detail"]
    assert row["gflops"] > 0


def test_lesson_model_is_the_documented_keras_model():
    """One layer list builds the fastconv and the Keras model; the fastconv one is Keras's."""
    weights = suite.lesson_model_weights(0)
    model = fastconv_backends.fastconv_lesson_model(weights)
    assert isinstance(model, fastconv.models.Sequential)
    assert model.count_params() == 243786  # Keras's summary of the lesson model
    assert [type(layer).__name__ for layer in model.layers] == \
        [name for name, _, _ in suite.LESSON_MODEL_LAYERS]
    assert all((a == b).all() for a, b in zip(model.get_weights(), weights))
    assert suite.CASES["model:fmnist"].flops == 2 * 256 * (26 * 26 * 64 * 9 + 11 * 11 * 64 * 576
                                                           + 1600 * 128 + 128 * 10)


def _tiny_rows(run_cli, fast, tmp_path, peer, *extra):
    path = tmp_path / f"{peer}.json"
    status, out, err = run_cli(*fast, "--peers", peer, "--json", str(path), *extra)
    assert status == 0, err
    (run,) = json.loads(path.read_text())["runs"]
    assert peer not in run["unavailable"], run["unavailable"].get(peer)
    return run, {r["case"]: r for r in run["results"] if r["engine"] == peer}


@pytest.mark.oracle
def test_onnxruntime_runs_the_tiny_suite_and_matches_the_reference(run_cli, fast, tmp_path,
                                                                   peer_library):
    _, ort = peer_library("onnx", "onnxruntime")
    run, rows = _tiny_rows(run_cli, fast, tmp_path, "onnxruntime")
    assert set(rows) == set(TINY_COMPUTE)  # conv (grouped, strided, 1-channel), relu, pool
    for case, r in rows.items():
        assert r["check"] == "ok", (case, r["detail"])
        assert r["median_s"] > 0
    assert run["engines"]["onnxruntime"] == ort.__version__


@pytest.mark.oracle
def test_onnxruntime_session_holds_the_thread_count(peer_library):
    peer_library("onnx", "onnxruntime")
    from fastconv.bench.peers.onnx_runtime import OnnxRuntimeEngine
    engine = OnnxRuntimeEngine()
    engine.setup(1)
    case = suite.CASES["tiny_s2"]
    data = runner.make_data(case)
    prepared = engine.prepare(case, data)
    prepared()
    assert runner.check_result(prepared.result(), runner.reference(case, data))[0]
    res = runner.run([case], [engine], 1, repeat=1, min_time=0, peak_size=0, progress=False)
    assert res["results"][0]["check"] == "ok"


@pytest.mark.oracle
def test_jax_runs_the_tiny_suite_and_matches_the_reference(run_cli, fast, tmp_path,
                                                           peer_library):
    (jax,) = peer_library("jax")
    cores = fastconv._threads.available_cores()  # XLA's own thread pool: every core
    run, rows = _tiny_rows(run_cli, fast, tmp_path, "jax", "--threads", str(cores))
    assert set(rows) == set(TINY_COMPUTE)
    for case, r in rows.items():
        assert r["check"] == "ok", (case, r["detail"])
        assert r["median_s"] > 0
    assert run["engines"]["jax"] == jax.__version__


@pytest.mark.oracle
@pytest.mark.slow
def test_jax_on_one_thread_runs_in_its_own_process(run_cli, fast, tmp_path, peer_library):
    """XLA's single-thread flags are read when JAX starts: a child process gets them."""
    peer_library("jax")
    run, rows = _tiny_rows(run_cli, fast, tmp_path, "jax", "--threads", "1", "--isolate",
                           "--shapes", "tiny_conv,tiny_pool")
    assert run["threads"] == 1
    assert {c: r["check"] for c, r in rows.items()} == {"tiny_conv": "ok", "tiny_pool": "ok"}


def test_jax_refuses_a_thread_count_xla_cannot_hold():
    from fastconv.bench.peers.jax_xla import JaxEngine
    cores = fastconv._threads.available_cores()
    with pytest.raises(peers.Unavailable, match="no setting for"):
        JaxEngine().setup(cores + 1)


def test_unavailable_row_reasons_reach_the_table(block_imports):
    block_imports("onnxruntime")
    from fastconv.bench.peers.onnx_runtime import OnnxRuntimeEngine
    res = runner.run([suite.CASES["tiny_relu"]], [OnnxRuntimeEngine()], 1, repeat=1,
                     min_time=0, peak_size=0, progress=False)
    # the engine imports onnx (to build its model) before onnxruntime, so without the
    # oracles extra the reason names onnx
    reason = res["unavailable"]["onnxruntime"]
    assert reason.startswith(("onnxruntime is not installed", "onnx is not installed"))
    assert f"onnxruntime: {reason.split(' (')[0]}" in report.format_run(res, "tiny")
