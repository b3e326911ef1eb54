"""Reports: the Markdown tables, and no local paths in anything a report records."""
import copy
import re

from fastconv.bench import report


def test_markdown_report(run_cli, fast, tmp_path):
    path = tmp_path / "run.json"
    assert run_cli(*fast, "--peers", "numpy", "--json", str(path))[0] == 0
    doc = report.load_json(path)
    md = report.results_markdown(doc, "python benchmarks/make_results.py --suite tiny")
    assert "## Machine" in md and doc["meta"]["machine"]["cpu"] in md
    assert "python benchmarks/make_results.py --suite tiny" in md
    assert "| tiny_conv |" in md
    assert "## Method" in md and "thread(s)" in md
    assert "target" not in md.lower() and "issue" not in md.lower()  # measurements only


def test_markdown_of_an_old_run_drops_its_local_paths(run_cli, fast, tmp_path):
    path = tmp_path / "run.json"
    assert run_cli(*fast, "--peers", "", "--shapes", "tiny_relu", "--json", str(path))[0] == 0
    doc = copy.deepcopy(report.load_json(path))
    # what runs saved before the rule recorded (from show_config)
    doc["meta"]["command"] = "fastconv bench --json /tmp/tmpvd7q7d5w/run.json"
    doc["meta"]["machine"]["backends"]["numpy"] = {
        "blas": "openblas 0.3.30 (SkylakeX, pthreads) "
                "/work/venv/lib/python3.11/site-packages/scipy.libs/libscipy_openblas-6cd.so",
        "cache dir": "/work/main/fastconv/__pycache__", "cache": True}
    md = report.results_markdown(doc, doc["meta"]["command"])
    assert "/work" not in md and "/tmp" not in md and ".so" not in md
    assert "blas: openblas 0.3.30 (SkylakeX, pthreads)" in md and "cache: True" in md
    assert "cache dir" not in md
    assert "--json run.json" in md


def test_without_paths():
    wp = report.without_paths
    assert wp("openblas 0.3.30 (libscipy_openblas-6cdc3b4a.so, Haswell, pthreads; held)") == \
        "openblas 0.3.30 (Haswell, pthreads; held)"
    assert wp("--json /tmp/x/run.json --plot C:\\runs\\a.png") == "--json run.json --plot a.png"
    assert wp("GFLOP/s, 2 x N*OH*OW, (c, kh, kw), benchmarks/history/a.json") == \
        "GFLOP/s, 2 x N*OH*OW, (c, kh, kw), benchmarks/history/a.json"


def test_machine_info_names_libraries_not_files():
    m = report.machine_info()
    text = repr(m)
    assert not re.search(r"(?<![\w.])/\w", text), text  # no absolute path
    assert "__pycache__" not in text and ".so" not in text
    assert all(": " in b for b in m["blas"])  # "numpy: openblas 0.3.x (...)"
