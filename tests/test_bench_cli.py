"""``fastconv bench``: options, JSON, compare, plot, threads, history and missing peers.

Everything runs the hidden ``tiny`` suite with light peers (NumPy, SciPy,
OpenCV, PyTorch), so the whole file takes seconds; TensorFlow is kept out
because importing it is slow.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys

import numpy as np
import pytest

import fastconv
from fastconv import bench
from fastconv.bench import peers, report, runner, suite

LIGHT = "numpy,scipy"
FAST = ["--suite", "tiny", "--repeat", "2", "--min-time", "0", "--peak-size", "64",
        "--no-progress", "--backends", "numpy"]


def run_cli(capsys, *args):
    status = bench.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_default_arguments_parse_to_quick_suite():
    args = bench._parser().parse_args([])
    assert args.suite == "quick"
    assert args.threads is None and args.peers is None and args.json is None


def test_cli_dispatches_bench(capsys):
    from fastconv.cli import main as cli_main
    status = cli_main(["bench", *FAST, "--peers", LIGHT, "--shapes", "tiny_relu"])
    out = capsys.readouterr().out
    assert status == 0
    assert "tiny_relu" in out and "fastconv:numpy" in out


def test_table_and_json(capsys, tmp_path):
    path = tmp_path / "run.json"
    status, out, err = run_cli(capsys, *FAST, "--peers", LIGHT, "--json", str(path))
    assert status == 0, err
    assert "2 FLOPs per multiply-add" in out
    assert "geometric mean" in out
    for case in suite.SUITES["tiny"][0]:
        assert case in out
    doc = json.loads(path.read_text())
    assert doc["meta"]["flop_convention"] == "2 x multiply-add"
    assert doc["meta"]["machine"]["cpu"]
    (run,) = doc["runs"]
    assert run["threads"] == fastconv.get_num_threads()
    assert run["peak_gflops"] > 0
    rows = {(r["case"], r["engine"]): r for r in run["results"]}
    # every engine's result was checked against the reference, and was right
    assert all(r["check"] == "ok" for r in rows.values()), [r["detail"] for r in rows.values()]
    conv = rows[("tiny_conv", "fastconv:numpy")]
    assert conv["flops"] == 2 * 2 * 12 * 12 * 8 * 3 * 3 * 4
    assert conv["median_s"] == pytest.approx(statistics.median(conv["times_s"]))
    assert len(conv["times_s"]) == 2
    assert conv["gflops"] == pytest.approx(conv["flops"] / conv["median_s"] / 1e9)
    # % of peak: against the sgemm probes timed in this case's own rounds
    assert conv["pct_peak"] == pytest.approx(100 * conv["gflops"] / conv["peak_gflops"])
    lo, hi = run["peak_range_gflops"]
    assert lo <= conv["peak_gflops"] <= hi and lo <= run["peak_gflops"] <= hi
    # the single-channel peers only run the single-channel case
    assert ("tiny_1ch", "scipy") in rows and ("tiny_conv", "scipy") not in rows
    # the ratio is relative to the best peer, so the best peer shows 1.00
    peer_ratios = [r["vs_best_peer"] for r in rows.values()
                   if r["case"] == "tiny_1ch" and r["kind"] == "peer"]
    assert max(peer_ratios) == pytest.approx(1.0)


@pytest.mark.parametrize("opt, value, message", [
    ("--suite", "huge", "invalid choice"),
    ("--threads", "0", "positive"),
    ("--threads", "a,b", "integers"),
    ("--repeat", "0", "positive"),
    ("--peak-size", "-1", "non-negative"),
    ("--min-time", "x", "seconds"),
    ("--shapes", "nope", "unknown shape"),
    ("--ops", "conv3d", "unknown op"),
    ("--peers", "matlab", "unknown peer"),
    ("--backends", "fortran", "unknown backend"),
])
def test_bad_options_give_status_2_and_a_message(capsys, opt, value, message):
    status, out, err = run_cli(capsys, *FAST, opt, value)
    assert status == 2
    assert message in err


def test_ops_and_shapes_filter(capsys):
    status, out, err = run_cli(capsys, *FAST, "--peers", "numpy", "--ops", "relu,max_pool2d")
    assert status == 0
    assert "tiny_relu" in out and "tiny_pool" in out and "tiny_conv" not in out
    status, out, err = run_cli(capsys, *FAST, "--peers", "", "--shapes", "tiny_s2")
    assert status == 0
    assert "tiny_s2" in out and "tiny_relu" not in out


def test_compare_against_saved_run(capsys, tmp_path):
    path = tmp_path / "old.json"
    assert run_cli(capsys, *FAST, "--peers", "numpy", "--json", str(path))[0] == 0
    status, out, err = run_cli(capsys, *FAST, "--peers", "numpy", "--compare", str(path))
    assert status == 0
    assert "speed-up" in out and "geometric mean speed-up" in out
    # doctor the saved run: make every old time 10x slower -> about 10x faster now
    doc = json.loads(path.read_text())
    for r in doc["runs"][0]["results"]:
        r["median_s"] *= 1e3
    rows = report.compare_rows(doc, json.loads(path.read_text()))
    assert rows and all(s == pytest.approx(1e-3) for *_, s in rows)
    assert "different machine" not in out
    old = json.loads(path.read_text())
    old["meta"]["machine"]["cpu"] = "Some Other CPU"
    text = report.format_compare(doc, old)
    assert "different machine" in text and "Some Other CPU" in text


def test_compare_with_unreadable_file(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    status, out, err = run_cli(capsys, *FAST, "--compare", str(bad))
    assert status == 2 and "cannot read" in err
    status, out, err = run_cli(capsys, *FAST, "--compare", str(tmp_path / "missing.json"))
    assert status == 2


def test_plot(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "ratios.png"
    status, out, err = run_cli(capsys, *FAST, "--peers", LIGHT, "--plot", str(png))
    assert status == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _block_imports(monkeypatch, *names):
    """Make ``import name`` fail (ImportError) for the given top-level modules."""
    for n in names:
        monkeypatch.setitem(sys.modules, n, None)


def test_plot_without_matplotlib_says_so(capsys, tmp_path, monkeypatch):
    _block_imports(monkeypatch, "matplotlib")
    png = tmp_path / "ratios.png"
    status, out, err = run_cli(capsys, *FAST, "--peers", "numpy", "--plot", str(png))
    assert status == 1
    assert "needs matplotlib" in err and "pip install" in err
    assert "tiny_conv" in out  # the table is still printed
    assert not png.exists()


def test_missing_peers_are_listed_not_errors(capsys, monkeypatch):
    _block_imports(monkeypatch, "cv2", "torch", "tensorflow")
    status, out, err = run_cli(capsys, *FAST, "--peers", "numpy,opencv,torch,torch-cl,scipy,tf")
    assert status == 0
    listing = out.split("not run (missing or unusable here):")[1]
    for name in ("opencv", "torch", "torch-cl", "tf"):
        assert f"  {name}: " in listing
    assert "not installed" in listing
    table = out.split("geometric mean")[0]
    assert "opencv" not in table and "torch" not in table
    assert "scipy" in table  # the peers that are there still run


def test_engines_setup_reports_missing_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError
    ready, missing = runner.setup_engines([peers.OpenCVEngine(), peers.NumpyEngine()], 1)
    assert [e.name for e in ready] == ["numpy"]
    assert "cv2" in missing["opencv"]


def test_threads_list_runs_each_count(capsys, tmp_path):
    path = tmp_path / "scaling.json"
    status, out, err = run_cli(capsys, *FAST, "--peers", "numpy", "--threads", "1,2",
                               "--shapes", "tiny_conv,tiny_relu", "--json", str(path))
    assert status == 0, err
    assert "1 thread(s)" in out and "2 thread(s)" in out and "thread scaling" in out
    doc = json.loads(path.read_text())
    assert [r["threads"] for r in doc["runs"]] == [1, 2]


def test_threads_are_restored_after_a_run(capsys):
    before = fastconv.get_num_threads()
    run_cli(capsys, *FAST, "--peers", "", "--threads", "1", "--shapes", "tiny_relu")
    assert fastconv.get_num_threads() == before


def _git_repo(path):
    """A one-commit git repository at ``path``; returns its HEAD."""
    if shutil.which("git") is None:
        pytest.fail("git is needed to test --save-history")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    path.mkdir()
    (path / "f.txt").write_text("x\n")
    for cmd in (["init", "-q"], ["add", "f.txt"], ["commit", "-q", "-m", "one"]):
        subprocess.run(["git", *cmd], cwd=path, check=True, env=env, capture_output=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, check=True, text=True,
                          capture_output=True).stdout.strip()


def test_save_history_uses_the_checkout_of_the_current_directory(capsys, tmp_path,
                                                                  monkeypatch):
    repo = tmp_path / "repo"
    commit = _git_repo(repo)
    monkeypatch.chdir(repo)
    status, out, err = run_cli(capsys, *FAST, "--peers", "numpy", "--shapes", "tiny_conv",
                               "--save-history")
    assert status == 0, err
    (saved,) = list((repo / "benchmarks" / "history").iterdir())
    assert saved.name == f"{commit}-tiny.json"
    status, out, err = run_cli(capsys, "--history", str(saved.parent))
    assert status == 0
    assert commit[:12] in out and "fastconv:numpy" in out


def test_save_history_with_an_explicit_commit_outside_a_checkout(capsys, tmp_path,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "history"
    status, _, err = run_cli(capsys, *FAST, "--peers", "", "--shapes", "tiny_relu",
                             "--save-history", str(d))
    assert status == 2 and "--commit" in err
    status, _, err = run_cli(capsys, *FAST, "--peers", "", "--shapes", "tiny_relu",
                             "--save-history", str(d), "--commit", "abc123")
    assert status == 0, err
    (saved,) = list(d.iterdir())
    assert saved.name.startswith("abc123-")


class _WrongPeer(peers.NumpyEngine):
    """A peer set up wrongly: its relu returns the input unchanged."""
    name = "wrong"

    def prepare(self, case, data):
        x = data["x"]
        return peers.Prepared(lambda: x)


class _WrongBackend(peers.FastconvEngine):
    """A fastconv backend that returns garbage."""

    def prepare(self, case, data):
        return peers.Prepared(lambda: np.zeros(case.output_shape, np.float32) + 1)


def test_wrong_results_are_marked_and_excluded_from_ratios():
    case = suite.CASES["tiny_relu"]
    res = runner.run([case], [peers.FastconvEngine("numpy"), _WrongPeer(), peers.NumpyEngine()],
                     1, repeat=2, min_time=0, peak_size=0, progress=False)
    rows = {r["engine"]: r for r in res["results"]}
    assert rows["wrong"]["check"] == "MISMATCH"
    assert rows["numpy"]["check"] == "ok"
    # the best peer is the correct one, however fast the wrong one was
    assert rows["numpy"]["vs_best_peer"] == pytest.approx(1.0)
    text = report.format_run(res, "tiny")
    assert "MISMATCH" in text


def test_wrong_fastconv_result_gives_status_1(capsys, monkeypatch):
    monkeypatch.setattr(peers, "FastconvEngine", _WrongBackend)
    status, out, err = run_cli(capsys, *FAST, "--peers", "", "--shapes", "tiny_relu")
    assert status == 1
    assert "MISMATCH" in out and "wrong result" in err


def test_check_result_tolerance():
    ref = np.linspace(-3, 3, 100, dtype=np.float32)
    assert runner.check_result(ref + 1e-6, ref)[0]
    assert not runner.check_result(ref + 0.1, ref)[0]
    assert not runner.check_result(ref[:50], ref)[0]
    bad = ref.copy()
    bad[3] = np.nan
    assert not runner.check_result(bad, ref)[0]


def test_flops_use_two_per_multiply_add():
    c = suite.CASES["resnet_3x3"]
    assert c.flops == 2 * 8 * 56 * 56 * 64 * 3 * 3 * 64
    dw = suite.CASES["dw_3x3"]
    assert dw.flops == 2 * 8 * 56 * 56 * 128 * 3 * 3 * 1
    s2 = suite.CASES["resnet_s2"]
    assert s2.output_shape == (8, 28, 28, 128)
    assert suite.CASES["fmnist_c1"].output_shape == (256, 26, 26, 64)


def test_suites_match_the_spec():
    names = set(suite.SUITES["full"][0])
    for n in ("fmnist_c1", "fmnist_c2", "edge_1ch", "cars_c1", "cars_c2", "cars_c4", "cars_1x1",
              "resnet_3x3", "resnet_s2", "vgg_c12", "stem_7x7", "dw_3x3", "relu", "max_pool2d",
              "model:fmnist"):
        assert n in names
    assert not any(n.startswith("tiny") for n in names)
    lesson = set(suite.SUITES["lesson"][0])
    assert {"fmnist_c1", "edge_1ch", "cars_1x1", "relu", "max_pool2d", "model:fmnist"} <= lesson


def test_evaluate_targets_met_and_missed():
    def row(case, engine, kind, t, pct=None):
        return {"case": case, "engine": engine, "kind": kind, "median_s": t, "check": "ok",
                "pct_peak": pct}
    doc = {"runs": [
        {"threads": 1, "results": [
            row("resnet_3x3", "fastconv:cython", "fastconv", 1.0, 90.0),
            row("resnet_3x3", "torch-cl", "peer", 1.1), row("resnet_3x3", "tf", "peer", 1.1),
            row("edge_1ch", "fastconv:cython", "fastconv", 1.0),
            row("edge_1ch", "opencv", "peer", 0.5),
            row("relu", "fastconv:cython", "fastconv", 1.0), row("relu", "torch", "peer", 2.0)]},
        {"threads": 2, "results": [
            row("resnet_3x3", "fastconv:cython", "fastconv", 0.5, 88.0)]},
    ]}
    got = {(t["target"], t["case"], t["threads"]): t["status"]
           for t in report.evaluate_targets(doc)}
    assert got[("C_in>=16 vs torch channels_last", "resnet_3x3", 1)] == "met"
    assert got[("C_in>=16 vs TF", "resnet_3x3", 1)] == "missed"  # 1.1x < 1.2x
    assert got[("64-ch 3x3 % of sgemm peak", "resnet_3x3", 1)] == "met"
    assert got[("edge within 1.5x of OpenCV", "edge_1ch", 1)] == "missed"  # 2x OpenCV's time
    assert got[("relu vs torch", "relu", 1)] == "met"
    assert got[("1->2 threads scaling", "resnet_3x3", "1->2")] == "met"
    assert got[("C_in>=16 vs TF", "resnet_3x3", 2)].startswith("n/a")


def test_markdown_report(tmp_path, capsys):
    path = tmp_path / "run.json"
    assert run_cli(capsys, *FAST, "--peers", "numpy", "--json", str(path))[0] == 0
    doc = report.load_json(path)
    md = report.markdown(doc, "python benchmarks/make_results.py --suite tiny")
    assert "## Machine" in md and doc["meta"]["machine"]["cpu"] in md
    assert "python benchmarks/make_results.py --suite tiny" in md
    assert "| tiny_conv |" in md
    assert "## Speed targets" in md


def test_list(capsys):
    status, out, err = run_cli(capsys, "--list")
    assert status == 0
    assert "suite quick" in out and "resnet_s2" in out and "torch-cl" in out


@pytest.mark.slow
def test_pytest_benchmark_suites_run_and_check_results():
    """The benchmarks/ suites collect, check every result and pass (timing disabled)."""
    import os
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isdir(os.path.join(root, "benchmarks")):
        pytest.skip("not a source tree")
    pytest.importorskip("pytest_benchmark")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/", "-q", "-p", "no:cacheprovider",
         "--fc-suite", "tiny", "--fc-peers", "numpy,scipy", "--fc-threads", "1",
         "--fc-backends", "numpy",
         "--benchmark-disable"], cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


def test_model_row_without_fastconv_models_says_not_available(monkeypatch):
    _block_imports(monkeypatch, "fastconv.models")
    case = suite.CASES["model:fmnist"]
    res = runner.run([case], [peers.FastconvEngine("numpy")], 1, repeat=1, min_time=0,
                     peak_size=0, progress=False)
    (row,) = res["results"]
    assert row["check"] == "n/a" and "fastconv.models" in row["detail"]
    assert row["median_s"] is None
    assert "n/a: fastconv.models" in report.format_run(res, "full")


def test_model_row_matches_reference_when_fastconv_models_exists():
    pytest.importorskip("fastconv.models")
    case = suite.CASES["model:fmnist"]
    res = runner.run([case], [peers.FastconvEngine("numpy")], 1, repeat=1, min_time=0,
                     peak_size=0, progress=False)
    (row,) = res["results"]
    assert row["check"] == "ok", row["detail"]
    assert row["gflops"] > 0


@pytest.mark.slow
def test_threads_run_in_child_processes_when_an_engine_needs_it(capsys, tmp_path, monkeypatch):
    """TensorFlow fixes its thread count once, so each count then gets its own process."""
    monkeypatch.setattr(peers.NumpyEngine, "needs_fresh_process", True)
    path = tmp_path / "children.json"
    status, out, err = run_cli(capsys, *FAST, "--peers", "numpy", "--threads", "1,2",
                               "--shapes", "tiny_conv", "--json", str(path))
    assert status == 0, err
    doc = json.loads(path.read_text())
    assert [r["threads"] for r in doc["runs"]] == [1, 2]
    assert all(r["results"][0]["check"] == "ok" for r in doc["runs"])
    assert "thread scaling" in out


_CRASHER = '''
import os
if os.environ.get("FASTCONV_TEST_CRASH_CASE"):
    from fastconv.bench import peers

    _prepare = peers.NumpyEngine.prepare

    def prepare(self, case, data):
        if case.name == os.environ["FASTCONV_TEST_CRASH_CASE"]:
            os.abort()  # a native crash, as a broken kernel would cause
        return _prepare(self, case, data)

    peers.NumpyEngine.prepare = prepare
'''


@pytest.mark.slow
def test_isolate_survives_a_crashing_engine(capsys, tmp_path, monkeypatch):
    """A pair that kills the process is reported as CRASH; everything else still runs."""
    (tmp_path / "sitecustomize.py").write_text(_CRASHER)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("FASTCONV_TEST_CRASH_CASE", "tiny_relu")
    path = tmp_path / "run.json"
    status, out, err = run_cli(capsys, *FAST, "--peers", "numpy", "--isolate", "--threads", "1",
                               "--shapes", "tiny_conv,tiny_relu,tiny_pool", "--json", str(path))
    assert status == 0, err  # a peer crashed, not fastconv
    assert "numpy on tiny_relu crashed the process" in err
    rows = {(r["case"], r["engine"]): r for r in json.loads(path.read_text())["runs"][0]["results"]}
    assert rows[("tiny_relu", "numpy")]["check"] == "CRASH"
    assert rows[("tiny_relu", "numpy")]["median_s"] is None
    assert rows[("tiny_relu", "fastconv:numpy")]["check"] == "ok"
    assert rows[("tiny_conv", "numpy")]["check"] == "ok"  # finished before the crash: kept
    assert rows[("tiny_pool", "numpy")]["check"] == "ok"  # after the crash: run by a new child
    run = json.loads(path.read_text())["runs"][0]
    assert [r["case"] for r in run["results"]].count("tiny_conv") == 2  # not run twice
    assert len(run["peak_samples_gflops"]) == 3 * 2  # 3 cases x 2 rounds, merged
    assert "CRASH" in out
