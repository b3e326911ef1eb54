"""``--isa``, ``--busy``, the limit column and the small-call shapes."""
import json
import os
import time

import numpy as np
import pytest

from fastconv.bench import busy, isa, report, runner, suite


def _gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # still in the process table: only acceptable as a zombie nobody reaped (never ours)
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


# ----------------------------------------------------------------- --isa
def test_isa_runs_a_child_with_the_variables_and_reports_what_took_effect(
        run_cli, fast, tmp_path, monkeypatch):
    # preset for the real CPU on some machines: the child overrides them, the parent keeps them
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Zen")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "524288")
    path = tmp_path / "isa.json"
    status, out, err = run_cli(*fast, "--peers", "numpy", "--shapes", "tiny_conv",
                               "--isa", "generic", "--json", str(path))
    assert status == 0, err
    assert os.environ["OPENBLAS_CORETYPE"] == "Zen" and "FASTCONV_SIMD" not in os.environ
    (run,) = json.loads(path.read_text())["runs"]
    assert run["isa"] == "generic"
    facts = run["isa_check"]
    seen = facts["environment"]["setting"]
    for k, v in isa.ISA_ENV["generic"].items():
        assert f"{k}={v}" in seen
    assert facts["cpu"]["reported"] == isa.cpu_best_isa()
    import fastconv
    if fastconv.config()["backends"].get("cython", {}).get("available"):
        assert facts["fastconv"] == {"setting": "FASTCONV_SIMD=generic",
                                     "reported": "generic", "status": "ok"}
    if "openblas" in facts:  # NumPy's BLAS is OpenBLAS: its core type is the one asked for
        assert facts["openblas"]["status"] == "ok", facts["openblas"]
        assert "nehalem" in facts["openblas"]["reported"].lower()
    assert "--isa generic: emulating a generic CPU" in out
    assert "NOT APPLIED" not in out
    assert run["results"][0]["check"] == "ok"


def test_isa_above_the_cpu_is_a_clear_error(run_cli, fast, monkeypatch):
    monkeypatch.setattr(isa, "cpu_best_isa", lambda: "generic")
    status, out, err = run_cli(*fast, "--peers", "", "--isa", "avx2")
    assert status == 2
    assert "--isa avx2 asks for more than this CPU has: its best is generic" in err
    status, out, err = run_cli(*fast, "--isa", "sse9")
    assert status == 2 and "invalid choice" in err


def test_isa_child_environment_drops_preset_l2_size():
    env = isa.child_env("avx2", {"OPENBLAS_L2_SIZE": "1", "OPENBLAS_CORETYPE": "Zen", "A": "b"})
    assert env == {"A": "b", **isa.ISA_ENV["avx2"]}


def test_onednn_isa_is_read_from_verbose_output():
    text = ("onednn_verbose,v1,info,oneDNN v3.7.3\n"
            "onednn_verbose,v1,info,cpu,isa:Intel AVX2\nother\n")
    assert isa._onednn_isa(text) == "Intel AVX2"
    assert isa._onednn_isa("nothing") is None
    assert isa._judge("Intel AVX2", isa.EXPECTED["avx2"]["onednn"]) == "ok"
    assert isa._judge("Intel AVX-512", isa.EXPECTED["avx2"]["onednn"]) == "NOT APPLIED"
    assert isa._judge(None, "avx2") == "not verified"


# ----------------------------------------------------------------- --busy
def test_busy_starts_and_stops_its_burners(run_cli, fast, tmp_path):
    path = tmp_path / "busy.json"
    status, out, err = run_cli(*fast, "--peers", "", "--shapes", "tiny_relu", "--busy", "1",
                               "--json", str(path))
    assert status == 0, err
    (run,) = json.loads(path.read_text())["runs"]
    assert run["busy"] == 1 and len(run["busy_pids"]) == 1
    assert all(_gone(p) for p in run["busy_pids"])  # no process left behind
    assert "--busy 1: 1 CPU-burner process(es)" in out


def test_burners_spin_while_running_and_are_bounded_in_time():
    with busy.Burners(2) as b:
        assert len(b.pids) == 2 and not any(_gone(p) for p in b.pids)
    assert all(_gone(p) for p in b.pids)
    b = busy.Burners(1, max_seconds=0.3).start()
    try:
        (p,) = b.procs
        p.join(20)  # exits by itself after max_seconds, nobody stopping it
        assert not p.is_alive()
    finally:
        b.stop()
    assert busy.Burners(0).start().pids == []


# ----------------------------------------------------------------- limit column
def test_limit_column_is_the_larger_floor(run_cli, fast, light, tmp_path):
    path = tmp_path / "limit.json"
    status, out, err = run_cli(*fast, "--peers", light, "--shapes", "tiny_conv,tiny_relu",
                               "--json", str(path))
    assert status == 0, err
    (run,) = json.loads(path.read_text())["runs"]
    assert run["bandwidth_gbytes_s"] > 0 and len(run["bandwidth_samples_gbytes_s"]) == 2 * 2
    for r in run["results"]:
        compute = r["flops"] / (r["peak_gflops"] * 1e9)
        memory = r["bytes"] / (r["bandwidth_gbytes_s"] * 1e9)
        assert r["limit_s"] == pytest.approx(max(compute, memory))
        assert r["limit_kind"] == ("compute" if compute >= memory else "memory")
        assert r["pct_limit"] == pytest.approx(100 * r["limit_s"] / r["median_s"])
    relu = [r for r in run["results"] if r["case"] == "tiny_relu"]
    assert all(r["limit_kind"] == "memory" for r in relu)  # no FLOPs: the memory floor
    assert "limit" in out and "%limit" in out and "bandwidth = np.copyto" in out
    md = report.results_markdown(json.loads(path.read_text()), "cmd")
    assert "| limit | %limit |" in md and "bandwidth probe" in md


def test_limit_time():
    assert runner.limit_time(2e9, 1e9, 100.0, 10.0) == (pytest.approx(0.1), "memory")
    assert runner.limit_time(2e10, 1e9, 100.0, 10.0) == (pytest.approx(0.2), "compute")
    assert runner.limit_time(0, 1e9, None, 10.0) == (pytest.approx(0.1), "memory")
    assert runner.limit_time(1e9, 1e9, None, None) == (None, None)


def test_bandwidth_probe_splits_the_copy_over_threads():
    probe = runner.BandwidthProbe(1 << 20, threads=2)
    try:
        assert probe.bytes_moved == 2 * (1 << 20) and len(probe.parts) == 2
        probe.dst[:] = 0
        probe()
        np.testing.assert_array_equal(probe.dst, probe.src)
    finally:
        probe.close()


@pytest.mark.parametrize("threads", [1, 2])
def test_bandwidth_probe_measure_is_the_fastest_of_its_sweeps(threads, monkeypatch):
    probe = runner.BandwidthProbe(1 << 20, threads=threads, repeats=4)
    try:
        times = iter([0.004, 0.001, 0.003, 0.002])
        calls = []
        monkeypatch.setattr(runner, "_time_calls",
                            lambda fn, inner: calls.append((fn, inner)) or next(times))
        gbs = probe.measure()
        assert calls == [(probe, 1)] * 4
        assert gbs == pytest.approx(2 * (1 << 20) / 0.001 / 1e9)
    finally:
        probe.close()
        monkeypatch.undo()
    real = runner.BandwidthProbe(1 << 20, threads=threads)
    try:
        assert real.measure() > 0
    finally:
        real.close()


# ----------------------------------------------------------------- small calls
def test_small_suite_shapes():
    names = suite.SUITES["small"][0]
    assert set(names) == {"small_conv", "small_relu", "small_pool", "small_f64", "cs231n_conv",
                          "cs231n_conv_relu_pool"}
    assert set(names) <= set(suite.SUITES["full"][0]) and "small" in suite.PUBLIC_SUITES
    conv, f64 = suite.CASES["small_conv"], suite.CASES["small_f64"]
    assert conv.input_shape == (1, 160, 240, 1) and conv.single_channel_filter
    assert suite.CASES["small_pool"].output_shape == (1, 80, 120, 1)
    assert (f64.input_shape, f64.filter_shape, f64.dtype) == \
        ((4, 5, 5, 3), (3, 3, 3, 2), "float64")
    assert f64.bytes_moved == 8 * (4 * 5 * 5 * 3 + 4 * 3 * 3 * 2)
    data = runner.make_data(f64)
    assert data["x"].dtype == data["w"].dtype == np.float64


def test_float64_row_runs_in_float64(run_cli, fast, tmp_path, peer_library):
    peer_library("torch")
    path = tmp_path / "f64.json"
    status, out, err = run_cli(*fast, "--peers", "numpy,torch,onnxruntime",
                               "--shapes", "small_f64", "--json", str(path))
    assert status == 0, err
    rows = {r["engine"]: r for r in json.loads(path.read_text())["runs"][0]["results"]}
    assert rows["torch"]["check"] == "ok" and rows["fastconv:numpy"]["check"] == "ok"
    assert "onnxruntime" not in rows  # its models are float32-only
    assert "float64" in rows["torch"]["shape"]
