"""``fastconv bench``'s command line: options, JSON, compare, plot, threads, history, crashes."""
import json
import os
import shutil
import statistics
import subprocess
import sys

import numpy as np
import pytest

import fastconv
from fastconv.bench import cli, report, suite
from fastconv.bench.peers import Prepared, fastconv_backends, numpy_scipy


def test_default_arguments_parse_to_quick_suite():
    args = cli._parser().parse_args([])
    assert args.suite == "quick"
    assert args.threads is None and args.peers is None and args.json is None


def test_package_main_is_the_cli():
    from fastconv import bench
    assert bench.main is cli.main and bench.run_benchmarks is cli.run_benchmarks


def test_cli_dispatches_bench(capsys, fast, light):
    from fastconv.cli import main as cli_main
    status = cli_main(["bench", *fast, "--peers", light, "--shapes", "tiny_relu"])
    out = capsys.readouterr().out
    assert status == 0
    assert "tiny_relu" in out and "fastconv:numpy" in out


def test_table_and_json(run_cli, fast, light, tmp_path):
    path = tmp_path / "run.json"
    status, out, err = run_cli(*fast, "--peers", light, "--json", str(path))
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


def test_json_records_no_local_paths(run_cli, fast, tmp_path):
    path = tmp_path / "run.json"
    assert run_cli(*fast, "--peers", "", "--shapes", "tiny_relu", "--json", str(path))[0] == 0
    text = path.read_text()
    assert str(tmp_path) not in text and os.getcwd() not in text
    assert not any(p in text for p in (".so\"", ".so,", ".so)", "site-packages", "__pycache__"))
    assert json.loads(text)["meta"]["command"].endswith("--json run.json")


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
def test_bad_options_give_status_2_and_a_message(run_cli, fast, opt, value, message):
    status, out, err = run_cli(*fast, opt, value)
    assert status == 2
    assert message in err


def test_ops_and_shapes_filter(run_cli, fast):
    status, out, err = run_cli(*fast, "--peers", "numpy", "--ops", "relu,max_pool2d")
    assert status == 0
    assert "tiny_relu" in out and "tiny_pool" in out and "tiny_conv" not in out
    status, out, err = run_cli(*fast, "--peers", "", "--shapes", "tiny_s2")
    assert status == 0
    assert "tiny_s2" in out and "tiny_relu" not in out


def test_compare_against_saved_run(run_cli, fast, tmp_path):
    path = tmp_path / "old.json"
    assert run_cli(*fast, "--peers", "numpy", "--json", str(path))[0] == 0
    status, out, err = run_cli(*fast, "--peers", "numpy", "--compare", str(path))
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


def test_compare_with_unreadable_file(run_cli, fast, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    status, out, err = run_cli(*fast, "--compare", str(bad))
    assert status == 2 and "cannot read" in err
    status, out, err = run_cli(*fast, "--compare", str(tmp_path / "missing.json"))
    assert status == 2


def test_plot(run_cli, fast, light, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "ratios.png"
    status, out, err = run_cli(*fast, "--peers", light, "--plot", str(png))
    assert status == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_so(run_cli, fast, block_imports, tmp_path):
    block_imports("matplotlib")
    png = tmp_path / "ratios.png"
    status, out, err = run_cli(*fast, "--peers", "numpy", "--plot", str(png))
    assert status == 1
    assert "needs matplotlib" in err and "pip install" in err
    assert "tiny_conv" in out  # the table is still printed
    assert not png.exists()


def test_threads_list_runs_each_count(run_cli, fast, tmp_path):
    path = tmp_path / "scaling.json"
    status, out, err = run_cli(*fast, "--peers", "numpy", "--threads", "1,2",
                               "--shapes", "tiny_conv,tiny_relu", "--json", str(path))
    assert status == 0, err
    assert "1 thread(s)" in out and "2 thread(s)" in out and "thread scaling" in out
    doc = json.loads(path.read_text())
    assert [r["threads"] for r in doc["runs"]] == [1, 2]


def test_threads_are_restored_after_a_run(run_cli, fast):
    before = fastconv.get_num_threads()
    run_cli(*fast, "--peers", "", "--threads", "1", "--shapes", "tiny_relu")
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


def test_save_history_uses_the_checkout_of_the_current_directory(run_cli, fast, tmp_path,
                                                                  monkeypatch):
    repo = tmp_path / "repo"
    commit = _git_repo(repo)
    monkeypatch.chdir(repo)
    status, out, err = run_cli(*fast, "--peers", "numpy", "--shapes", "tiny_conv",
                               "--save-history")
    assert status == 0, err
    (saved,) = list((repo / "benchmarks" / "history").iterdir())
    assert saved.name == f"{commit}-tiny.json"
    status, out, err = run_cli("--history", str(saved.parent))
    assert status == 0
    assert commit[:12] in out and "fastconv:numpy" in out


def test_save_history_with_an_explicit_commit_outside_a_checkout(run_cli, fast, tmp_path,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "history"
    status, _, err = run_cli(*fast, "--peers", "", "--shapes", "tiny_relu",
                             "--save-history", str(d))
    assert status == 2 and "--commit" in err
    status, _, err = run_cli(*fast, "--peers", "", "--shapes", "tiny_relu",
                             "--save-history", str(d), "--commit", "abc123")
    assert status == 0, err
    (saved,) = list(d.iterdir())
    assert saved.name.startswith("abc123-")


class _WrongBackend(fastconv_backends.FastconvEngine):
    """A fastconv backend that returns garbage."""

    def prepare(self, case, data):
        return Prepared(lambda: np.zeros(case.output_shape, np.float32) + 1)


def test_wrong_fastconv_result_gives_status_1(run_cli, fast, monkeypatch):
    monkeypatch.setattr(fastconv_backends, "FastconvEngine", _WrongBackend)
    status, out, err = run_cli(*fast, "--peers", "", "--shapes", "tiny_relu")
    assert status == 1
    assert "MISMATCH" in out and "wrong result" in err


def test_list(run_cli):
    status, out, err = run_cli("--list")
    assert status == 0
    assert "suite quick" in out and "resnet_s2" in out and "torch-cl" in out
    assert "jax" in out and "onnxruntime" in out and "hd_rgb" in out and "pw_1x1" in out


@pytest.mark.slow
def test_threads_run_in_child_processes_when_an_engine_needs_it(run_cli, fast, tmp_path,
                                                                monkeypatch):
    """TensorFlow fixes its thread count once, so each count then gets its own process."""
    monkeypatch.setattr(numpy_scipy.NumpyEngine, "needs_fresh_process", True)
    path = tmp_path / "children.json"
    status, out, err = run_cli(*fast, "--peers", "numpy", "--threads", "1,2",
                               "--shapes", "tiny_conv", "--json", str(path))
    assert status == 0, err
    doc = json.loads(path.read_text())
    assert [r["threads"] for r in doc["runs"]] == [1, 2]
    assert all(r["results"][0]["check"] == "ok" for r in doc["runs"])
    assert "thread scaling" in out


_CRASHER = '''
import os
if os.environ.get("FASTCONV_TEST_CRASH_CASE"):
    from fastconv.bench.peers import numpy_scipy

    _prepare = numpy_scipy.NumpyEngine.prepare

    def prepare(self, case, data):
        if case.name == os.environ["FASTCONV_TEST_CRASH_CASE"]:
            os.abort()  # a native crash, as a broken kernel would cause
        return _prepare(self, case, data)

    numpy_scipy.NumpyEngine.prepare = prepare
'''


@pytest.mark.slow
def test_isolate_survives_a_crashing_engine(run_cli, fast, tmp_path, monkeypatch):
    """A pair that kills the process is reported as CRASH; everything else still runs."""
    (tmp_path / "sitecustomize.py").write_text(_CRASHER)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("FASTCONV_TEST_CRASH_CASE", "tiny_relu")
    path = tmp_path / "run.json"
    status, out, err = run_cli(*fast, "--peers", "numpy", "--isolate", "--threads", "1",
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


@pytest.mark.slow
def test_pytest_benchmark_suites_run_and_check_results():
    """The benchmarks/ suites collect, check every result and pass (timing disabled)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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
