"""fastconv on a Dask cluster against in-memory fastconv and dask-image.

Run on a quiet machine (it starts its own loopback-only ``LocalCluster``)::

    python benchmarks/dask_scaling.py --json dask-scaling.json      # the issue's sizes
    python benchmarks/dask_scaling.py --size 2048 --images 4000 --parts image,predict

Three comparisons, each the median of ``--repeat`` runs after one warm-up:

* ``image``: a ``1 x SIZE x SIZE x 3`` float32 image through SAME 3x3
  convolution (8 output channels, bias) -> ReLU -> SAME 2x2 max pooling.
  On the cluster (``--workers`` worker processes of one thread each, chunks
  ``--chunk`` x ``--chunk``, default 2048: 16 blocks of 48 MiB) it is the
  chained ``fd.max_pool2d(fd.relu(fd.conv2d(...)))``, which fastconv.dask
  fuses into one windowed map; in
  memory it is ``fastconv.conv2d(..., activation="relu")`` then
  ``fastconv.max_pool2d`` with ``num_threads`` = the cluster's total
  threads.  Goal: the cluster within 1.3x of in memory.  The unfused chain
  (``fuse=False``) is timed too, to show what the fusion saves.  Why 2048:
  every task costs the scheduler and the workers about a millisecond of
  CPU (recorded below as the cost of an empty task), and a fused block
  brings a second, small task (the copy of its first rows and columns for
  its neighbours) and that copy's transfer when the neighbour lives on the
  other worker; with 1024 x 1024 x 3 float32 chunks (12 MiB, Dask's guide
  asks for ~100 MiB) that is 127 tasks whose overhead takes the 2 cores
  from the ~15 ms blocks, and the scheduler balances the workers by moving
  whole input blocks between them; with 2048 it is 31 tasks for ~60 ms
  blocks and only the small copies move.  ``--chunk 1024`` times the
  smaller chunks.
* ``dask-image``: one channel (``SIZE x SIZE``), a 3x3 kernel, zero
  padding, on the same cluster and chunks: ``dask_image.ndfilters.convolve``
  (``mode="constant"``) against ``fastconv.dask.conv2d`` with the flipped
  kernel (the same function; both results are compared).  Goal: fastconv
  faster.
* ``predict``: ``--images`` 28x28x1 images through the lesson's
  Fashion-MNIST model, chunks of ``--images-chunk`` images, with
  ``fastconv.dask.predict`` on the cluster against ``Sequential.predict``
  in memory (``num_threads`` = total threads), the same ``--batch-size``.
  Goal: within 1.3x.

The cluster's inputs are made on the workers (a chunked
``dask.array.random`` array computed and persisted there, as an image read
from a chunked store would be): nothing is sent from the client, and the
in-memory run gets the same values gathered once.  Every timed run computes
fresh keys
(``dask.graph_manipulation.clone``) and waits for them on the workers
(nothing is gathered).  For each comparison the document also records what
explains a gap: the number of tasks and the scheduler's cost of that many
empty tasks on this cluster, the wall-clock time inside tasks by task kind
and the workers' transfer time and bytes (``distributed.get_task_stream``),
the CPU time the workers, this process (scheduler and client) and one
in-memory call used (``time.process_time``; the task stream's times are
wall clock and grow whenever a task waits for a core), the
halo's extra input and extra convolution work, the size of a pickled
model.  Interface: :func:`run` (argv -> document), :func:`markdown`
(document -> RESULTS.md section), :func:`main`.
"""
import argparse
import datetime
import json
import os
import shlex
import statistics
import sys
import time

import numpy as np

SCHEMA = "fastconv-dask-scaling/1"
PARTS = ("image", "dask-image", "predict")
#: The goals: ``cluster / in-memory`` at most this ratio (image, predict); dask-image's
#: time over fastconv's above 1.
TARGETS = {"image": 1.3, "dask-image": 1.0, "predict": 1.3}


def _parser():
    p = argparse.ArgumentParser(prog="python benchmarks/dask_scaling.py",
                                description=__doc__.splitlines()[0])
    p.add_argument("--parts", default=",".join(PARTS),
                   help=f"comma-separated subset of {', '.join(PARTS)}")
    p.add_argument("--size", type=int, default=8192, help="image side (default 8192)")
    p.add_argument("--chunk", type=int, default=2048, help="image chunk side (default 2048)")
    p.add_argument("--images", type=int, default=20000, help="predict: batch (default 20000)")
    p.add_argument("--images-chunk", type=int, default=2000,
                   help="predict: images per chunk (default 2000)")
    p.add_argument("--batch-size", type=int, default=32, help="predict's batch_size")
    p.add_argument("--workers", type=int, default=2, help="single-threaded workers (default 2)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs; the median is reported")
    p.add_argument("--no-unfused", action="store_true",
                   help="image: skip timing the unfused chain")
    p.add_argument("--json", metavar="FILE", help="also write the document to FILE")
    return p


# --------------------------------------------------------------------------- timing helpers
def _timed(fn, repeat):
    """One untimed warm-up, then ``repeat`` timed calls: ``{"times": [...], "median": s}``."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"times": times, "median": statistics.median(times)}


def _on_cluster(client, lazy, source):
    """A function computing ``lazy`` afresh on the workers (new keys past ``source``)."""
    import distributed
    from dask.graph_manipulation import clone

    def run():
        done = client.persist(clone(lazy, omit=source))
        distributed.wait(done)
        del done
    return run


def _cluster(workers):
    from distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address="127.0.0.1:0",
                           worker_dashboard_address=None)
    return cluster, Client(cluster)


def _on_workers(client, shape, chunks, seed):
    """Uniform float32 ``shape`` made and kept on the workers (never sent through the graph)."""
    import dask.array as da
    import distributed
    x = client.persist(da.random.default_rng(seed).random(shape, chunks=chunks,
                                                         dtype=np.float32))
    distributed.wait(x)
    return x


def _noop(i):
    return i


def _per_task_overhead(client, tasks):
    """Seconds per task of ``tasks`` empty tasks through this cluster's scheduler (median of 3)."""
    import distributed
    tasks = max(int(tasks), 10)

    def run():
        distributed.wait(client.map(_noop, range(tasks), pure=False))
    return _timed(run, 3)["median"] / tasks


def _clear_transfer_log(dask_worker):
    dask_worker.transfer_incoming_log.clear()


def _transfers(dask_worker):
    """``(bytes, seconds, count)`` the worker fetched from others since the log was cleared."""
    log = list(dask_worker.transfer_incoming_log)
    return sum(e["total"] for e in log), sum(e["duration"] for e in log), len(log)


def _cpu_seconds():
    return time.process_time()


def _task_profile(client, run):
    """Run ``run`` once under ``get_task_stream``: where the time and the CPU went.

    ``compute_s`` (by task kind) is the task stream's start-to-stop time of
    the tasks: wall-clock time, which grows whenever a worker's compute
    thread waits for a core (the other worker, this process's scheduler,
    the workers' own event loops, anything else on the machine).  The
    CPU time actually used is ``worker_cpu_s`` (all threads of every worker
    process: tasks, transfers, serialisation) and ``main_cpu_s`` (this
    process, which hosts the ``LocalCluster``'s scheduler and the client).
    """
    import distributed
    client.run(_clear_transfer_log)
    cpu0, main0 = client.run(_cpu_seconds), time.process_time()
    t0 = time.perf_counter()
    with distributed.get_task_stream(client) as ts:
        run()
    wall = time.perf_counter() - t0
    main_cpu = time.process_time() - main0
    cpu1 = client.run(_cpu_seconds)
    compute, tasks = {}, 0
    for rec in ts.data:
        key = rec["key"]
        kind = (key[0] if isinstance(key, tuple) else str(key)).rsplit("-", 1)[0]
        for ss in rec["startstops"]:
            if ss["action"] == "compute":
                compute[kind] = compute.get(kind, 0.0) + ss["stop"] - ss["start"]
        tasks += 1
    moved = client.run(_transfers).values()
    return {"wall_s": wall, "tasks": tasks, "compute_s": compute,
            "compute_total_s": sum(compute.values()),
            "worker_cpu_s": sum(cpu1[a] - cpu0[a] for a in cpu0), "main_cpu_s": main_cpu,
            "transfer_bytes": sum(m[0] for m in moved), "transfer_s": sum(m[1] for m in moved),
            "transfers": sum(m[2] for m in moved)}


def _graph_tasks(lazy):
    import dask
    (opt,) = dask.optimize(lazy)
    return len(opt.__dask_graph__())


def _gap_reason(doc_part, fast_s, slow_s, workers, what):
    """A sentence with the measured pieces of ``slow_s - fast_s`` (seconds)."""
    prof, over = doc_part["profile"], doc_part["overhead_per_task_s"]
    sched = over * prof["tasks"] / workers
    busy = prof["compute_total_s"] / workers
    kinds = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(prof["compute_s"].items(),
                                                            key=lambda kv: -kv[1])[:4])
    cpu = ""
    if "worker_cpu_s" in prof:
        cpu = (f" CPU used: workers {prof['worker_cpu_s']:.3f} core-s (all their threads), "
               f"this process (scheduler and client) {prof['main_cpu_s']:.3f} core-s.")
    return (f"{what} took {slow_s:.3f} s against {fast_s:.3f} s (gap {slow_s - fast_s:.3f} s). "
            f"Scheduler: {prof['tasks']} tasks x {over * 1e3:.2f} ms per empty task / "
            f"{workers} workers = {sched:.3f} s. Workers inside tasks (wall clock, which "
            f"includes waiting for a core): {busy:.3f} s each on average ({kinds}), outside "
            f"{max(prof['wall_s'] - busy, 0):.3f} s of the profiled run's "
            f"{prof['wall_s']:.3f} s.{cpu} Transfers between workers: "
            f"{prof['transfer_bytes'] / 2**20:.1f} MiB in {prof['transfer_s']:.3f} s.")


# --------------------------------------------------------------------------- parts
def _halo_work(out_chunks, conv_size, pool_k, pool_s, pool_p0):
    """Convolution rows the fused blocks compute along one axis, over the rows needed."""
    total, start = 0, 0
    for n in out_chunks:
        lo, hi = start * pool_s - pool_p0, (start + n - 1) * pool_s - pool_p0 + pool_k - 1
        total += min(hi, conv_size - 1) - max(lo, 0) + 1
        start += n
    return total / conv_size - 1


def bench_image(args, client):
    import fastconv
    import fastconv.dask as fd

    S, T = args.size, args.workers
    rng = np.random.default_rng(0)
    xd = _on_workers(client, (1, S, S, 3), (1, args.chunk, args.chunk, 3), 0)
    x = xd.compute()
    w = rng.standard_normal((3, 3, 3, 8)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)

    def in_memory():
        y = fastconv.conv2d(x, w, padding="SAME", bias=b, activation="relu", num_threads=T)
        return fastconv.max_pool2d(y, 2, padding="SAME", num_threads=T)

    part = {"what": f"1x{S}x{S}x3 float32, SAME 3x3 conv (8 out, bias) -> relu -> SAME 2x2 "
                    f"max pool", "chunk": args.chunk, "threads": T, "runs": {}}
    part["runs"]["in_memory"] = _timed(in_memory, args.repeat)
    ref = in_memory()
    chain = fd.max_pool2d(fd.relu(fd.conv2d(xd, w, padding="SAME", bias=b)), 2,
                          padding="SAME")
    part["runs"]["cluster"] = _timed(_on_cluster(client, chain, xd), args.repeat)
    if not args.no_unfused:
        unfused = fd.max_pool2d(fd.relu(fd.conv2d(xd, w, padding="SAME", bias=b), fuse=False),
                                2, padding="SAME", fuse=False)
        part["runs"]["cluster_unfused"] = _timed(_on_cluster(client, unfused, xd),
                                                 args.repeat)
        part["tasks_unfused"] = _graph_tasks(unfused)
    got = chain.compute()
    part["max_abs_diff"] = float(np.max(np.abs(got - ref)))
    part["tasks"] = _graph_tasks(chain)
    part["profile"] = _task_profile(client, _on_cluster(client, chain, xd))
    # CPU of this whole process (its scheduler and client threads included) during one
    # in-memory call: kept in the JSON only (not a clean figure of the call alone)
    cpu0 = time.process_time()
    in_memory()
    part["in_memory_cpu_s"] = time.process_time() - cpu0
    part["overhead_per_task_s"] = _per_task_overhead(client, part["tasks"])
    # The fused window: 2 pooled rows of 3x3 convolution rows span 4 input rows (stride 2),
    # so a block copies the first 4 - 1 = 3 rows/columns of its neighbours below and right.
    c, depth = args.chunk, (2 - 1) * 1 + 3 - 1
    part["halo_extra_input"] = sum((min(c, S - i) + (depth if i + c < S else 0))
                                   * (min(c, S - j) + (depth if j + c < S else 0))
                                   for i in range(0, S, c) for j in range(0, S, c)) / S**2 - 1
    part["halo_extra_conv_work"] = (1 + _halo_work(chain.chunks[1], S, 2, 2, 0)) * (
        1 + _halo_work(chain.chunks[2], S, 2, 2, 0)) - 1
    part["ratio"] = part["runs"]["cluster"]["median"] / part["runs"]["in_memory"]["median"]
    part["target"] = TARGETS["image"]
    part["met"] = part["ratio"] <= part["target"]
    del xd
    return part


def bench_dask_image(args, client):
    import distributed
    import fastconv.dask as fd
    from dask_image import ndfilters

    S = args.size
    k = np.random.default_rng(1).standard_normal((3, 3)).astype(np.float32)
    part = {"what": f"one channel {S}x{S} float32, 3x3 kernel, zero padding",
            "chunk": args.chunk, "runs": {}}
    x4 = _on_workers(client, (1, S, S, 1), (1, args.chunk, args.chunk, 1), 1)
    x2 = client.persist(x4[0, :, :, 0])
    distributed.wait(x2)
    theirs = ndfilters.convolve(x2, k, mode="constant", cval=0.0)
    # convolve flips the kernel; conv2d is a correlation: the flipped kernel is the same sum
    ours = fd.conv2d(x4, np.ascontiguousarray(k[::-1, ::-1])[:, :, None, None], padding="SAME")
    part["runs"]["dask_image"] = _timed(_on_cluster(client, theirs, x2), args.repeat)
    part["runs"]["fastconv"] = _timed(_on_cluster(client, ours, x4), args.repeat)
    a, c = theirs.compute(), ours.compute()[0, :, :, 0]
    part["max_abs_diff"] = float(np.max(np.abs(a.astype(np.float64) - c)))
    part["tasks"] = {"dask_image": _graph_tasks(theirs), "fastconv": _graph_tasks(ours)}
    part["profile"] = _task_profile(client, _on_cluster(client, ours, x4))
    part["profile_dask_image"] = _task_profile(client, _on_cluster(client, theirs, x2))
    part["overhead_per_task_s"] = _per_task_overhead(client, part["profile"]["tasks"])
    # dask-image's goal is inverted: their time over ours must exceed 1
    part["ratio"] = part["runs"]["dask_image"]["median"] / part["runs"]["fastconv"]["median"]
    part["target"] = TARGETS["dask-image"]
    part["met"] = part["ratio"] > part["target"]
    del x2, x4
    return part


def _lesson_model():
    from fastconv.bench.peers.fastconv_backends import fastconv_lesson_model
    from fastconv.bench.suite import lesson_model_weights
    return fastconv_lesson_model(lesson_model_weights(0))


def bench_predict(args, client):
    import pickle

    import fastconv.dask as fd

    T = args.workers
    model = _lesson_model()
    xd = _on_workers(client, (args.images, 28, 28, 1), (args.images_chunk, 28, 28, 1), 2)
    x = xd.compute()
    part = {"what": f"{args.images} images 28x28x1 through the lesson's Fashion-MNIST model, "
                    f"batch_size {args.batch_size}", "chunk": args.images_chunk, "threads": T,
            "runs": {}}
    part["runs"]["in_memory"] = _timed(
        lambda: model.predict(x, batch_size=args.batch_size, num_threads=T), args.repeat)
    ref = model.predict(x, batch_size=args.batch_size, num_threads=T)
    out = fd.predict(model, xd, batch_size=args.batch_size)
    part["runs"]["cluster"] = _timed(_on_cluster(client, out, xd), args.repeat)
    part["max_abs_diff"] = float(np.max(np.abs(out.compute() - ref)))
    part["tasks"] = _graph_tasks(out)
    part["model_pickle_bytes"] = len(pickle.dumps(model))
    part["profile"] = _task_profile(client, _on_cluster(client, out, xd))
    part["overhead_per_task_s"] = _per_task_overhead(client, part["tasks"])
    part["ratio"] = part["runs"]["cluster"]["median"] / part["runs"]["in_memory"]["median"]
    part["target"] = TARGETS["predict"]
    part["met"] = part["ratio"] <= part["target"]
    del xd
    return part


BENCHES = {"image": bench_image, "dask-image": bench_dask_image, "predict": bench_predict}


def _meta(argv, args):
    import dask
    import distributed
    from fastconv.bench.report.document import git_commit, machine_info, without_paths
    try:
        from importlib.metadata import version
        dask_image = version("dask-image")
    except Exception:  # not installed
        dask_image = None
    commit, dirty = git_commit(os.path.dirname(os.path.abspath(__file__)))
    return {"command": without_paths("python benchmarks/dask_scaling.py"
                                     + "".join(" " + shlex.quote(a) for a in argv)),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": commit, "dirty": dirty, "machine": machine_info(),
            "versions": {"dask": dask.__version__, "distributed": distributed.__version__,
                         "dask-image": dask_image},
            "workers": args.workers, "threads_per_worker": 1, "repeat": args.repeat,
            "size": args.size, "chunk": args.chunk, "images": args.images,
            "images_chunk": args.images_chunk, "batch_size": args.batch_size}


def run(argv=None):
    """Run the benchmark; return the results document (written to ``--json`` if given)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        parser.error(f"--parts: unknown {', '.join(bad) or '(none)'}; choose from "
                     f"{', '.join(PARTS)}")
    if min(args.size, args.chunk, args.images, args.images_chunk, args.batch_size,
           args.workers, args.repeat) < 1:
        parser.error("sizes, chunks, --workers and --repeat must be positive")
    doc = {"schema": SCHEMA, "meta": _meta(argv, args), "parts": {}}
    cluster, client = _cluster(args.workers)
    with cluster, client:
        for name in parts:
            doc["parts"][name] = BENCHES[name](args, client)
    for name, part in doc["parts"].items():
        part["reason"] = None if part["met"] else _reason(name, part, doc["meta"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return doc


def _reason(name, part, meta):
    workers = meta["workers"]
    if name == "image":
        r = part["runs"]
        text = _gap_reason(part, r["in_memory"]["median"], r["cluster"]["median"], workers,
                           "The cluster")
        return text + (f" The halo copies {part['halo_extra_input']:.2%} more input; the "
                       f"fused blocks compute {part['halo_extra_conv_work']:.2%} extra "
                       f"convolution output.")
    if name == "predict":
        r = part["runs"]
        return _gap_reason(part, r["in_memory"]["median"], r["cluster"]["median"], workers,
                           "The cluster") + (f" The model pickles to "
                                             f"{part['model_pickle_bytes'] / 2**20:.2f} MiB, "
                                             f"sent once per worker.")
    r, theirs = part["runs"], part["profile_dask_image"]
    return _gap_reason(part, r["dask_image"]["median"], r["fastconv"]["median"], workers,
                       "fastconv.dask") + (
        f" dask-image: {theirs['tasks']} tasks, workers computing "
        f"{theirs['compute_total_s'] / workers:.3f} s each.")


# --------------------------------------------------------------------------- report
def _row(label, part, a, b, goal):
    ra, rb = part["runs"][a]["median"], part["runs"][b]["median"]
    return (f"| {label} | {ra:.3f} | {rb:.3f} | {part['ratio']:.2f} | {goal} | "
            f"{'met' if part['met'] else 'missed'} |")


def markdown(doc):
    """A RESULTS.md section for a document from :func:`run`."""
    meta, parts = doc["meta"], doc["parts"]
    W = meta["workers"]
    lines = [f"Command: `{meta['command']}` (commit {str(meta.get('commit'))[:10]}"
             f"{', local changes' if meta.get('dirty') else ''}, {meta['date']}).", "",
             f"A `distributed.LocalCluster` on 127.0.0.1: {W} worker processes x 1 thread; "
             f"in memory: fastconv with `num_threads={W}` (the same total). Dask "
             f"{meta['versions']['dask']}, distributed {meta['versions']['distributed']}, "
             f"dask-image {meta['versions']['dask-image'] or 'not installed'}. Inputs "
             f"made and persisted on the workers before timing (never sent from the "
             f"client); each figure is the median of "
             f"{meta['repeat']} runs after a warm-up, in seconds.", "",
             "| comparison | A s | B s | ratio | goal | |", "|---|---|---|---|---|---|"]
    if "image" in parts:
        p = parts["image"]
        lines.append(_row(f"{p['what']}, chunks {p['chunk']}: A in memory, B cluster", p,
                          "in_memory", "cluster", f"B/A <= {p['target']}"))
    if "dask-image" in parts:
        p = parts["dask-image"]
        lines.append(_row(f"{p['what']}, chunks {p['chunk']}: A dask-image "
                          f"`ndfilters.convolve`, B `fastconv.dask.conv2d`", p, "dask_image",
                          "fastconv", "A/B > 1"))
    if "predict" in parts:
        p = parts["predict"]
        lines.append(_row(f"{p['what']}, chunks {p['chunk']}: A in memory, B cluster `predict`",
                          p, "in_memory", "cluster", f"B/A <= {p['target']}"))
    lines.append("")
    if "image" in parts:
        p = parts["image"]
        lines.append(f"- image: the chained calls fuse into one windowed map ({p['tasks']} "
                     f"tasks after `dask.optimize`"
                     + (f"; unfused {p['tasks_unfused']} tasks, "
                        f"{p['runs']['cluster_unfused']['median']:.3f} s"
                        if "cluster_unfused" in p["runs"] else "")
                     + f"). Halo: {p['halo_extra_input']:.2%} extra input copied, "
                       f"{p['halo_extra_conv_work']:.2%} extra convolution work. Largest "
                       f"difference from in memory {p['max_abs_diff']:.2e}."
                     + (f" CPU of one run: workers {p['profile']['worker_cpu_s']:.3f} core-s, "
                        f"scheduler and client {p['profile']['main_cpu_s']:.3f} core-s."
                        if "worker_cpu_s" in p.get("profile", {}) else ""))
    if "dask-image" in parts:
        p = parts["dask-image"]
        lines.append(f"- dask-image: {p['tasks']['dask_image']} tasks against fastconv's "
                     f"{p['tasks']['fastconv']}; the two results differ by at most "
                     f"{p['max_abs_diff']:.2e}.")
    if "predict" in parts:
        p = parts["predict"]
        lines.append(f"- predict: {p['tasks']} tasks; the model pickles to "
                     f"{p['model_pickle_bytes'] / 2**20:.2f} MiB; largest difference from in "
                     f"memory {p['max_abs_diff']:.2e}.")
    missed = [(n, p) for n, p in parts.items() if not p["met"]]
    if missed:
        lines += ["", "Missed goals, with what was measured:", ""]
        lines += [f"- {n}: {p['reason']}" for n, p in missed]
    return "\n".join(lines) + "\n"


def main(argv=None):
    """Run, print the RESULTS.md section; exit status 0."""
    doc = run(argv)
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
