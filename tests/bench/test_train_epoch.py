"""``benchmarks/train_epoch.py``: a tiny real run of every engine, and the report's arithmetic.

Not a timing test: the tiny run checks that each engine's child process
trains and reports every field, that the engines, started from the same
weights on the same data in the same order, agree on the first epoch's loss,
and that :func:`markdown` renders the section; the synthetic document checks
the ratios and the met / missed verdicts.
"""
import importlib.util
import json
import os
from dataclasses import dataclass

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "benchmarks", "train_epoch.py")
RESULT_FIELDS = ("engine", "version", "batch_size", "images", "threads", "steps", "epoch_s",
                 "epoch_s_median", "loss", "losses", "images_per_s", "step_ms", "gflops",
                 "pct_peak", "maxrss_mib", "rss_extra_mib", "rss_baseline_mib")


def _load():
    spec = importlib.util.spec_from_file_location("train_epoch", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def te():
    return _load()


@pytest.fixture(scope="module")
def tiny_run(te, tmp_path_factory):
    # found, not imported (each engine imports its library in its own child process);
    # CI installs both (FASTCONV_REQUIRE_ORACLES): missing there is a failure
    for name in ("keras", "tensorflow", "torch"):
        if importlib.util.find_spec(name) is None:
            if os.environ.get("FASTCONV_REQUIRE_ORACLES", "") not in ("", "0"):
                pytest.fail(f"FASTCONV_REQUIRE_ORACLES is set but {name} is missing")
            pytest.skip(f"{name} is not installed")
    path = tmp_path_factory.mktemp("train_epoch") / "run.json"
    doc = te.run(["--images", "256", "--batch-sizes", "64", "--warmup", "1", "--repeat", "1",
                  "--peak-size", "128", "--split-steps", "2", "--json", str(path)])
    return doc, path


@pytest.mark.slow
@pytest.mark.oracle
def test_tiny_run_has_every_engine_and_field(te, tiny_run):
    doc, path = tiny_run
    assert doc["unavailable"] == {}, doc["unavailable"]
    assert sorted(r["engine"] for r in doc["results"]) == sorted(te.ENGINES)
    for r in doc["results"]:
        missing = [f for f in RESULT_FIELDS if f not in r]
        assert not missing, (r["engine"], missing)
        assert r["batch_size"] == 64 and r["images"] == 256 and r["steps"] == 4
        assert r["threads"] == 2 and r["epoch_s_median"] > 0 and r["maxrss_mib"] > 0
        assert r["rss_extra_mib"] is not None and r["rss_extra_mib"] >= 0
        assert np.isclose(r["images_per_s"], 256 / r["epoch_s_median"])
    assert doc["peak"]["gflops"] > 0 and len(doc["peak"]["gflops_samples"]) == 10
    with open(path) as f:
        assert json.load(f)["results"] == doc["results"]
    split = next(r for r in doc["results"] if r["engine"] == "fastconv")["split"]
    names = {p["part"] for p in split["parts"]}
    assert {"conv2d forward", "conv2d_1 backward", "optimizer update"} <= names, names


@pytest.mark.slow
@pytest.mark.oracle
def test_tiny_run_engines_agree_on_the_first_epoch_loss(tiny_run):
    doc, _ = tiny_run
    (check,) = doc["loss_check"]
    assert check["ok"], check
    losses = check["losses"]
    # fastconv and Keras use the same Adam formula; PyTorch's scales epsilon by
    # sqrt(1 - beta_2^t), which moves weights with tiny gradients differently
    np.testing.assert_allclose(losses["fastconv"], losses["keras"], rtol=1e-4)
    np.testing.assert_allclose(losses["torch"], losses["torch-cl"], rtol=1e-4)
    np.testing.assert_allclose(losses["fastconv"], losses["torch-cl"], rtol=1e-2)


@pytest.mark.slow
@pytest.mark.oracle
def test_tiny_run_markdown(te, tiny_run):
    doc, _ = tiny_run
    text = te.markdown(doc)
    assert text.startswith("Command: `python benchmarks/train_epoch.py --images 256 ")
    for label in te.LABELS.values():
        assert f"| 64 | {label} |" in text
    assert "fastconv vs Keras fit" in text and "Targets:" in text
    assert "split by layer" in text


@dataclass(frozen=True)
class VerdictCase:
    id: str
    fastconv_s: float
    keras_s: float
    torch_cl_s: float
    want: dict


VERDICTS = [
    VerdictCase("both_met", 10.0, 26.0, 13.5, {"vs_keras_fit": "met",
                                                "vs_torch_channels_last": "met"}),
    VerdictCase("keras_missed", 10.0, 24.0, 13.0, {"vs_keras_fit": "missed",
                                                   "vs_torch_channels_last": "met"}),
    VerdictCase("both_missed", 20.0, 40.0, 25.0, {"vs_keras_fit": "missed",
                                                  "vs_torch_channels_last": "missed"}),
]


def _result(engine, seconds, images=1000, batch=50, extra=100.0):
    return {"engine": engine, "batch_size": batch, "images": images, "steps": images // batch,
            "epoch_s_median": seconds, "loss": 2.3, "maxrss_mib": 500.0,
            "rss_extra_mib": extra}


@pytest.mark.parametrize("case", VERDICTS, ids=lambda c: c.id)
def test_ratios_and_verdicts(te, case):
    images = 1000
    doc = {"meta": {"command": "python benchmarks/train_epoch.py", "date": "d", "commit": "c",
                    "dirty": False, "images": images, "threads": 2, "repeat": 1,
                    "warmup_steps": 3, "epoch_flops": te.epoch_flops(images)},
           "peak": {"gflops": 100.0, "size": 2048},
           "results": [_result("fastconv", case.fastconv_s, extra=90.0),
                       _result("keras", case.keras_s),
                       _result("torch-cl", case.torch_cl_s, extra=120.0)],
           "unavailable": {}}
    te._derive(doc)
    got = {t["id"]: t for t in doc["targets"]}
    for goal, status in case.want.items():
        assert got[goal]["status"] == status, goal
    np.testing.assert_allclose(got["vs_keras_fit"]["measured"], case.keras_s / case.fastconv_s)
    np.testing.assert_allclose(got["vs_keras_fit"]["needed_s"], case.keras_s / 2.5)
    # the floor: the epoch's FLOPs at the sgemm peak
    np.testing.assert_allclose(got["vs_keras_fit"]["floor_s"],
                               te.epoch_flops(images) / 100e9)
    assert got["memory_vs_torch_channels_last"]["status"] == "met"
    fc = doc["results"][0]
    np.testing.assert_allclose(fc["gflops"], te.epoch_flops(images) / case.fastconv_s / 1e9)
    text = te.markdown(doc)
    assert ("Why the misses" in text) == ("missed" in case.want.values())
    assert f"{case.keras_s / case.fastconv_s:.2f}x" in text


def test_flops_per_image_are_the_lesson_models():
    te = _load()
    # forward 2 x (conv1 26*26*64*9 + conv2 11*11*64*9*64 + 1600*128 + 128*10) MACs, then
    # the weight gradients (as many), the input gradients of all layers but the first
    fwd = 26 * 26 * 64 * 9 + 11 * 11 * 64 * 9 * 64 + 1600 * 128 + 128 * 10
    assert te.epoch_flops(1) == 2 * (3 * fwd - 26 * 26 * 64 * 9)


def test_bad_arguments_are_refused(te):
    with pytest.raises(SystemExit):
        te.run(["--engines", "jax"])
    with pytest.raises(SystemExit):
        te.run(["--images", "0"])
