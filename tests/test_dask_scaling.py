"""benchmarks/dask_scaling.py runs end to end at a tiny size and reports every field.

Not a timing test: the figures of a tiny run on a test machine mean
nothing; what is checked is that the benchmark runs on a real loopback
cluster, that its three comparisons compute the same values as the
in-memory call (or dask-image), and that the document and its RESULTS.md
section carry the medians, ratios, goals and, for a missed goal, a reason.
"""
import copy
import importlib.util
import json
import os

import pytest

pytest.importorskip("distributed")
pytestmark = pytest.mark.slow

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, os.pardir, "benchmarks", "dask_scaling.py")


def _script():
    spec = importlib.util.spec_from_file_location("dask_scaling", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _parts():
    """Every part; dask-image's only when it is installed (CI requires it, like an oracle)."""
    if importlib.util.find_spec("dask_image") is not None:
        return ["image", "dask-image", "predict"]
    if os.environ.get("FASTCONV_REQUIRE_ORACLES", "") not in ("", "0"):
        pytest.fail("FASTCONV_REQUIRE_ORACLES is set but dask-image is missing "
                    "(pip install '.[bench]')")
    return ["image", "predict"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    mod = _script()
    path = tmp_path_factory.mktemp("dask-scaling") / "doc.json"
    parts = _parts()
    doc = mod.run(["--size", "96", "--chunk", "32", "--images", "60", "--images-chunk", "20",
                   "--batch-size", "8", "--repeat", "1", "--parts", ",".join(parts),
                   "--json", str(path)])
    return mod, doc, path, parts


def test_document_fields(run):
    mod, doc, path, parts = run
    assert doc["schema"] == mod.SCHEMA
    with open(path) as f:
        assert json.load(f) == json.loads(json.dumps(doc))
    meta = doc["meta"]
    assert meta["command"].startswith("python benchmarks/dask_scaling.py --size 96")
    assert meta["workers"] == 2 and meta["threads_per_worker"] == 1
    assert list(doc["parts"]) == parts
    pairs = {"image": ("in_memory", "cluster"), "dask-image": ("dask_image", "fastconv"),
             "predict": ("in_memory", "cluster")}
    for name, part in doc["parts"].items():
        a, b = pairs[name]
        ta, tb = part["runs"][a]["median"], part["runs"][b]["median"]
        assert ta > 0 and tb > 0 and len(part["runs"][a]["times"]) == 1
        assert part["ratio"] == pytest.approx(ta / tb if name == "dask-image" else tb / ta)
        assert part["target"] == mod.TARGETS[name]
        met = part["ratio"] > 1 if name == "dask-image" else part["ratio"] <= part["target"]
        assert part["met"] is met
        assert (part["reason"] is None) == met
        if not met:
            assert "tasks x" in part["reason"] and "Transfers between workers" in part["reason"]
            assert "CPU used: workers" in part["reason"]
        prof = part["profile"]
        assert prof["tasks"] > 0 and prof["compute_total_s"] > 0 and prof["transfer_bytes"] >= 0
        # CPU time, beside the task stream's wall-clock times: the workers ran every task
        assert prof["worker_cpu_s"] > 0 and prof["main_cpu_s"] >= 0
        assert part["overhead_per_task_s"] > 0


def test_the_compared_calls_compute_the_same_values(run):
    _, doc, _, _ = run
    image = doc["parts"]["image"]
    # The cluster's result against in-memory fastconv: a few float32 ulps of values below 20.
    assert image["max_abs_diff"] <= 1e-5
    assert image["tasks"] < image["tasks_unfused"]          # the chain was fused
    assert 0 < image["halo_extra_input"] < 0.5 and image["halo_extra_conv_work"] == 0
    assert doc["parts"]["predict"]["max_abs_diff"] <= 1e-5  # softmax outputs
    assert doc["parts"]["predict"]["model_pickle_bytes"] > 4 * 200000  # the weights travel
    if "dask-image" in doc["parts"]:  # scipy's convolve, fastconv's correlation, flipped
        assert doc["parts"]["dask-image"]["max_abs_diff"] <= 1e-5


def test_markdown_section(run):
    mod, doc, _, parts = run
    text = mod.markdown(doc)
    assert f"Command: `{doc['meta']['command']}`" in text
    assert text.count("| met |") + text.count("| missed |") == len(parts)
    assert "B/A <= 1.3" in text
    image = doc["parts"]["image"]
    assert image["in_memory_cpu_s"] > 0
    assert (f"CPU of one run: workers {image['profile']['worker_cpu_s']:.3f} core-s" in text)
    missed = copy.deepcopy(doc)
    missed["parts"]["predict"].update(met=False, reason="measured: a reason")
    assert "- predict: measured: a reason" in mod.markdown(missed)
    for part in missed["parts"].values():
        part.update(met=True, reason=None)
    assert "Missed goals" not in mod.markdown(missed)
