"""The bench's training rows: one Adam step of the lesson model, checked and timed."""
import json
import subprocess
import sys

import pytest

from fastconv.bench import runner, suite
from fastconv.bench.peers import PEER_NAMES, make_engine


def test_training_cases_are_in_the_lesson_and_full_suites():
    for name in ("lesson", "full"):
        names = suite.SUITES[name][0]
        assert "train:fmnist" in names and "train:fmnist_b128" in names
    assert "tiny_train" not in suite.SUITES["tiny"][0]
    case = suite.CASES["train:fmnist"]
    assert (case.op, case.N, case.input_shape, case.output_shape) == \
        ("train", 32, (32, 28, 28, 1), (32, 10))
    # forward once, every weight gradient, every input gradient but the first layer's
    fwd = suite.CASES["model:fmnist"].flops / 256
    c1 = 2 * 26 * 26 * 64 * 9
    assert case.flops == 32 * (3 * fwd - c1) and 29e6 < case.flops / 32 < 31e6
    assert "one Adam step" in case.description
    assert [c.name for c in suite.get_suite("lesson", ops=["train"])] == \
        ["train:fmnist", "train:fmnist_b128"]
    assert {"keras-train", "torch-train", "torch-cl-train"} <= set(PEER_NAMES)


def _run(engines):
    res = runner.run([suite.CASES["tiny_train"]], engines, 1, repeat=2, min_time=0,
                     peak_size=64, progress=False)
    return res, {r["engine"]: r for r in res["results"]}


def test_fastconv_train_row_is_checked_and_timed():
    res, rows = _run([make_engine("fastconv:numpy")])
    row = rows["fastconv:numpy"]
    assert row["check"] == "ok", row["detail"]
    assert row["op"] == "train" and len(row["times_s"]) == 2 and row["gflops"] > 0


def test_torch_train_steps_match_the_reference(peer_library):
    peer_library("torch")
    res, rows = _run([make_engine("fastconv:numpy"), make_engine("torch-train"),
                      make_engine("torch-cl-train")])
    assert not res["unavailable"], res["unavailable"]
    for name in ("fastconv:numpy", "torch-train", "torch-cl-train"):
        assert rows[name]["check"] == "ok", (name, rows[name]["detail"])
        assert rows[name]["median_s"] > 0


_KERAS_CHILD = """
import json
from fastconv.bench import runner, suite
from fastconv.bench.peers import make_engine
res = runner.run([suite.CASES["tiny_train"]], [make_engine("keras-train")], 1, repeat=2,
                 min_time=0, peak_size=64, progress=False)
print(json.dumps({"unavailable": res["unavailable"], "rows": res["results"]}))
"""


def test_keras_train_step_matches_the_reference(peer_library):
    peer_library("keras")
    # a fresh interpreter: TensorFlow takes its thread count only before it starts
    proc = subprocess.run([sys.executable, "-c", _KERAS_CHILD], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not doc["unavailable"], doc["unavailable"]
    (row,) = doc["rows"]
    assert row["engine"] == "keras-train" and row["check"] == "ok", row["detail"]
    assert row["median_s"] > 0


def test_train_engines_skip_other_ops():
    case = suite.CASES["tiny_conv"]
    for name in ("keras-train", "torch-train", "torch-cl-train"):
        assert not make_engine(name).supports(case)
    with pytest.raises(ValueError, match="unknown op"):
        suite.get_suite("tiny", ops=["training"])
