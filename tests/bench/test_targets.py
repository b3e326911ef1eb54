"""The goals in benchmarks/targets.json and their check in benchmarks/make_results.py."""
import json
import re

import pytest


def _row(case, engine, kind, t, pct=None):
    return {"case": case, "engine": engine, "kind": kind, "median_s": t, "check": "ok",
            "pct_peak": pct}


def _target(make_results, target_id):
    (t,) = [t for t in make_results.load_targets() if t["id"] == target_id]
    return t


def test_evaluate_targets_met_and_missed(make_results):
    doc = {"runs": [
        {"threads": 1, "results": [
            _row("resnet_3x3", "fastconv:cython", "fastconv", 1.0, 90.0),
            _row("resnet_3x3", "torch-cl", "peer", 1.1), _row("resnet_3x3", "tf", "peer", 1.1),
            _row("edge_1ch", "fastconv:cython", "fastconv", 1.0),
            _row("edge_1ch", "opencv", "peer", 0.5),
            _row("relu", "fastconv:cython", "fastconv", 1.0),
            _row("relu", "torch", "peer", 2.0)]},
        {"threads": 2, "results": [
            _row("resnet_3x3", "fastconv:cython", "fastconv", 0.5, 88.0)]},
    ]}
    got = {(t["target"], t["case"], t["threads"]): t["status"]
           for t in make_results.evaluate_targets(doc, make_results.load_targets())}
    assert got[("C_in>=16 vs torch channels_last", "resnet_3x3", 1)] == "met"
    assert got[("C_in>=16 vs TF", "resnet_3x3", 1)] == "missed"  # 1.1x < 1.2x
    assert got[("64-ch 3x3 % of sgemm peak", "resnet_3x3", 1)] == "met"
    assert got[("edge within 1.5x of OpenCV", "edge_1ch", 1)] == "missed"  # 2x OpenCV's time
    assert got[("relu/max_pool2d vs torch", "relu", 1)] == "met"
    assert got[("1->2 threads scaling", "resnet_3x3", "1->2")] == "met"
    assert got[("C_in>=16 vs TF", "resnet_3x3", 2)].startswith("n/a")
    # a goal limited to 2 threads is not checked on the 1-thread run
    assert ("C_in>=16 vs best peer, 2 threads", "resnet_3x3", 1) not in got
    assert got[("C_in>=16 vs best peer, 2 threads", "resnet_3x3", 2)].startswith("n/a")


def test_the_reference_backend_does_not_count(make_results):
    doc = {"runs": [{"threads": 1, "results": [
        _row("relu", "fastconv:numpy", "fastconv", 0.1), _row("relu", "torch", "peer", 1.0)]}]}
    (t,) = make_results.evaluate_targets(doc, [_target(make_results,
                                                       "relu/max_pool2d vs torch")])
    assert t["status"] == "n/a: no compiled fastconv backend"


def test_missed_ratio_goal_gives_its_measured_reason(make_results):
    doc = {"runs": [{"threads": 2, "results": [
        _row("vgg_c12", "fastconv:cython", "fastconv", 1.0, 80.0),
        _row("vgg_c12", "onnxruntime", "peer", 0.9, 88.0)]}]}
    (t,) = make_results.evaluate_targets(
        doc, [_target(make_results, "C_in>=16 vs best peer, 2 threads")])
    assert t["status"] == "missed" and t["measured"] == "0.90x"
    assert "onnxruntime runs at 88% of this run's sgemm peak" in t["reason"]


def test_targets_file_is_data_worded_for_a_reader(make_results):
    with open(make_results.TARGETS) as f:
        raw = json.load(f)
    targets = make_results.load_targets()
    assert len(targets) == len(raw["targets"]) >= 9
    ids = [t["id"] for t in targets]
    assert len(set(ids)) == len(ids)
    from fastconv.bench.peers import PEER_NAMES
    from fastconv.bench.suite import CASES
    for t in targets:
        assert t["goal"].endswith(".") and len(t["goal"]) > 30
        assert not re.search(r"\bissue\b|#\d", t["goal"] + t["id"], re.I)
        assert set(t.get("peers", ())) <= set(PEER_NAMES)
        # every goal covers at least one shape of the full suite
        assert any(make_results._selects(t["cases"], c) for c in CASES.values()
                   if not c.name.startswith("tiny")), t["id"]


def test_a_broken_targets_file_is_refused(make_results, tmp_path):
    bad = tmp_path / "targets.json"
    bad.write_text(json.dumps({"targets": [{"id": "x", "goal": "g.", "kind": "vs_peers",
                                            "cases": {}}]}))
    with pytest.raises(ValueError, match="needs peers, at_least"):
        make_results.load_targets(str(bad))
    bad.write_text(json.dumps({"targets": [{"id": "x", "goal": "g.", "kind": "faster",
                                            "cases": {}}]}))
    with pytest.raises(ValueError, match="kind must be one of"):
        make_results.load_targets(str(bad))


def test_make_results_writes_measurements_then_goals(make_results, run_cli, fast, tmp_path):
    run = tmp_path / "run.json"
    assert run_cli(*fast, "--peers", "numpy", "--json", str(run))[0] == 0
    out = tmp_path / "RESULTS.md"
    assert make_results.main(["--from-json", str(run), "--output", str(out)]) == 0
    md = out.read_text()
    assert md.index("## Machine") < md.index("## Goals (benchmarks/targets.json)")
    assert "| tiny_conv |" in md and "met, " in md
    assert str(tmp_path) not in md


def test_make_results_rewrites_only_the_readme_summary(make_results, run_cli, fast, tmp_path):
    run = tmp_path / "run.json"
    assert run_cli(*fast, "--peers", "numpy", "--json", str(run))[0] == 0
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{make_results.README_BEGIN}\nold figures\n"
                      f"{make_results.README_END}\nafter\n")
    out = tmp_path / "RESULTS.md"
    assert make_results.main(["--from-json", str(run), "--output", str(out),
                              "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n") and text.endswith("after\n")
    assert "old figures" not in text and "| goal (benchmarks/targets.json) | rows met |" in text
    summary = text[text.index(make_results.README_BEGIN):text.index(make_results.README_END)]
    # every goal shown counts its rows as in RESULTS.md's goals table
    from fastconv.bench.report import load_json
    results = make_results.evaluate_targets(load_json(str(run)),
                                            make_results.load_targets())
    for goal in {r["target"] for r in results if r["status"] in ("met", "missed")}:
        rows = [r for r in results if r["target"] == goal and r["status"] in ("met", "missed")]
        met = sum(r["status"] == "met" for r in rows)
        assert f"| {goal} | {met} / {len(rows)} |" in summary
    assert str(tmp_path) not in summary
    # a file without the markers, and --output elsewhere without --readme, are left alone
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    assert make_results.main(["--from-json", str(run), "--output", str(out),
                              "--readme", str(plain)]) == 0
    assert plain.read_text() == "no markers\n"


def test_limit_and_small_call_goals(make_results):
    def row(case, engine, kind, t, pct_limit=None):
        r = _row(case, engine, kind, t)
        r["pct_limit"] = pct_limit
        return r
    doc = {"runs": [
        {"threads": 1, "results": [row("small_relu", "fastconv:cython", "fastconv", 10e-6),
                                   row("small_pool", "fastconv:cython", "fastconv", 10e-6)]},
        {"threads": 2, "results": [
            row("small_relu", "fastconv:cython", "fastconv", 16e-6),   # <= 1.2 x 10 + 5 us
            row("small_pool", "fastconv:cython", "fastconv", 18e-6),   # > 17 us
            row("hd_rgb", "fastconv:cython", "fastconv", 1.0, 80.0),
            row("small_f64", "fastconv:cython", "fastconv", 20e-6),
            row("small_f64", "torch", "peer", 18e-6)]},
    ]}
    targets = [_target(make_results, i) for i in (
        "small calls: 2 threads no slower than 1", "C_in<=3 % of limit, 2 threads",
        "tiny float64 conv vs PyTorch")]
    got = {(t["target"], t["case"]): t for t in make_results.evaluate_targets(doc, targets)}
    assert got[("small calls: 2 threads no slower than 1", "small_relu")]["status"] == "met"
    assert got[("small calls: 2 threads no slower than 1", "small_pool")]["status"] == "missed"
    assert got[("C_in<=3 % of limit, 2 threads", "hd_rgb")]["status"] == "met"
    assert got[("C_in<=3 % of limit, 2 threads", "hd_rgb")]["measured"] == "80%"
    assert got[("tiny float64 conv vs PyTorch", "small_f64")]["status"] == "missed"


def test_make_results_puts_each_part_under_its_heading(make_results, run_cli, fast, tmp_path):
    run = tmp_path / "run.json"
    assert run_cli(*fast, "--peers", "numpy", "--json", str(run))[0] == 0
    out = tmp_path / "RESULTS.md"
    assert make_results.main(["--from-json", f"forward={run}", "--from-json", f"busy={run}",
                              "--output", str(out)]) == 0
    md = out.read_text()
    forward, busy = (md.index(f"## {make_results.BENCH_PARTS[p][0]}") for p in ("forward", "busy"))
    assert md.index("## Machine") < forward < busy < md.index("## Goals")
    assert md.count("| tiny_conv |") >= 2 and re.search(r"^### \d+ thread\(s\)", md, re.M)


def test_a_goal_is_checked_against_its_part_only(make_results):
    doc = {"runs": [{"threads": 2, "results": [_row("relu", "fastconv:cython", "fastconv", 1.0),
                                               _row("relu", "torch", "peer", 2.0)]}]}
    target = {"id": "t", "goal": "g.", "kind": "vs_peers", "peers": ["torch"],
              "at_least": 1.5, "cases": {"op": "relu"}, "part": "busy"}
    assert make_results.target_part(target) == "busy"
    assert make_results.target_part({k: v for k, v in target.items() if k != "part"}) == "forward"
    assert make_results.evaluate_parts({"forward": doc}, [target]) == []
    (got,) = make_results.evaluate_parts({"busy": doc}, [target])
    assert got["status"] == "met" and got["measured"] == "2.00x"


def test_backward_goals(make_results):
    """The gradient goals: the best of the autograd peers (JAX included), 1x on C_in >= 16,
    2x on C_in <= 3, 1.5x for pool/relu backward, the CS231n rows within PyTorch's time;
    all at 2 threads."""
    rows = [
        _row("conv2d_grad_input:resnet_3x3", "fastconv:cython", "fastconv", 1.0),
        _row("conv2d_grad_input:resnet_3x3", "torch-cl", "peer", 1.2),
        _row("conv2d_grad_input:resnet_3x3", "jax", "peer", 1.1),
        _row("conv2d_grad_filters:cars_c1", "fastconv:numba", "fastconv", 1.0),
        _row("conv2d_grad_filters:cars_c1", "tf", "peer", 3.0),
        _row("conv2d_grad_filters:cars_c1", "jax", "peer", 1.9),       # 1.9x < 2x
        _row("relu_backward:relu", "fastconv:cython", "fastconv", 1.0),
        _row("relu_backward:relu", "torch", "peer", 1.6),
        _row("max_pool2d_backward:max_pool2d", "fastconv:cython", "fastconv", 1.0),
        _row("max_pool2d_backward:max_pool2d", "torch-cl", "peer", 1.4),
        _row("cs231n_conv", "fastconv:cython", "fastconv", 40e-6),
        _row("cs231n_conv", "torch", "peer", 50e-6),
        _row("cs231n_conv_relu_pool", "fastconv:cython", "fastconv", 60e-6),
        _row("cs231n_conv_relu_pool", "torch", "peer", 50e-6)]
    doc = {"runs": [{"threads": 1, "results": rows}, {"threads": 2, "results": rows}]}
    targets = [t for t in make_results.load_targets()
               if "gradient" in t["id"] or "backward" in t["id"] or "CS231n" in t["id"]]
    assert len(targets) == 7 and all(t["threads"] == [2] for t in targets)
    got = {(t["target"], t["case"]): t for t in make_results.evaluate_targets(doc, targets)}
    assert {k[1] for k in got} == {r["case"] for r in rows}  # no row checked twice
    assert all(t["threads"] == 2 for t in got.values())       # the 1-thread run is not checked
    status = {k: t["status"] for k, t in got.items()}
    assert status == {
        ("input gradient C_in>=16 vs best peer, 2 threads", "conv2d_grad_input:resnet_3x3"): "met",
        ("filter gradient C_in<=3 vs best peer, 2 threads", "conv2d_grad_filters:cars_c1"):
            "missed",
        ("pool/relu backward vs best peer, 2 threads", "relu_backward:relu"): "met",
        ("pool/relu backward vs best peer, 2 threads", "max_pool2d_backward:max_pool2d"):
            "missed",
        ("CS231n conv forward+backward vs PyTorch, 2 threads", "cs231n_conv"): "met",
        ("CS231n conv-relu-pool forward+backward vs PyTorch, 2 threads",
         "cs231n_conv_relu_pool"): "missed"}
    assert got[("filter gradient C_in<=3 vs best peer, 2 threads",
                "conv2d_grad_filters:cars_c1")]["measured"] == "1.90x"
    assert got[("CS231n conv forward+backward vs PyTorch, 2 threads",
                "cs231n_conv")]["measured"] == "0.80x torch's time"
