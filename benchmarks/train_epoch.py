"""One training epoch of the lesson's Fashion-MNIST model: fastconv ``fit`` against Keras
``fit`` and a plain PyTorch loop (NCHW and channels_last).

Run on a quiet machine::

    python benchmarks/train_epoch.py --json train-epoch.json        # 60000 images, batch 32, 128
    python benchmarks/train_epoch.py --images 6000 --repeat 3       # shorter, median of 3 epochs

Every engine trains the lesson's model (``LESSON_MODEL_LAYERS`` of
``fastconv.bench.suite``) from the same starting weights
(``lesson_model_weights(seed)``) on the same seeded synthetic data of the
real shape (``--images`` images 28x28x1 float32 in [0, 1], labels 0-9), in
the same order (``shuffle=False``), with sparse categorical cross-entropy
and Adam (learning rate 1e-3, epsilon 1e-7):

* ``fastconv``: ``Sequential.fit(verbose=0, num_threads=threads)``;
* ``keras``: Keras 3 ``model.fit(verbose=0)`` on NumPy arrays (TensorFlow
  intra-op threads = ``threads``, inter-op 1);
* ``torch`` / ``torch-cl``: a loop over the batches (``zero_grad``,
  ``cross_entropy`` on the logits, ``backward``, ``torch.optim.Adam.step``),
  NCHW or channels_last, ``torch.set_num_threads(threads)``.

Each engine runs in its own child process (thread settings cannot leak
from one to the next, and memory is per engine): it imports its library,
makes the data, warms up (a few steps, the partial last batch's shape
included, so tracing and first-call costs are not timed), puts the
starting weights and a fresh optimizer state back, and times ``--repeat``
epochs, each from that same start (the median is reported).  Memory: the
resident-set high-water mark of the child (``ru_maxrss``) and its rise over
the resident size after the imports and the data (``/proc/self/clear_refs``
+ ``VmHWM`` on Linux): what training needs beyond holding the dataset.
The first epoch's mean loss is recorded: with the same weights, data and
order the engines' losses must agree closely (``loss_check``).

The FLOP rate (2 x multiply-add: forward, weight gradients, input gradients
except the first layer's) is compared with a float32 sgemm through NumPy's
BLAS at the same thread count, probed in a child process before and after
the engines.  For fastconv, ``--split-steps`` instrumented steps give the
time of each layer's forward and backward pass and of the optimizer, with
their FLOP rates: the measured reason when a target is missed.

The interface :mod:`make_results` uses: ``run(argv) -> doc`` (also written
with ``--json``), ``markdown(doc) -> str`` (a RESULTS.md section) and
``main(argv)``.
"""
import argparse
import datetime
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

SCHEMA = "fastconv-train-epoch/1"
ENGINES = ("fastconv", "keras", "torch", "torch-cl")
LABELS = {"fastconv": "fastconv fit", "keras": "Keras fit", "torch": "PyTorch loop NCHW",
          "torch-cl": "PyTorch loop channels_last"}
LEARNING_RATE = 1e-3
EPSILON = 1e-7
#: the goals of the training issue: fastconv's speed over an engine, at every batch size
TARGETS = ({"id": "vs_keras_fit", "engine": "keras", "at_least": 2.5},
           {"id": "vs_torch_channels_last", "engine": "torch-cl", "at_least": 1.3})
#: the first-epoch losses of all engines must agree within this relative spread
LOSS_RTOL = 0.02


# --------------------------------------------------------------------------- data
def make_data(images, seed):
    """Seeded images in [0, 1] (NHWC float32), integer labels 0-9, starting weights."""
    from fastconv.bench.suite import lesson_model_weights
    rng = np.random.default_rng(seed)
    x = rng.random((images, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, images).astype(np.int64)
    return x, y, lesson_model_weights(seed)


def epoch_flops(images):
    """FLOPs of one epoch: forward, weight gradients and input gradients but the first's."""
    from fastconv.bench.suite import _lesson_train_flops
    return _lesson_train_flops(images)


# --------------------------------------------------------------------------- memory
def _status_kib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_hwm():
    """Reset the resident-set high-water mark; False where the OS cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kib("VmHWM") is not None
    except OSError:
        return False


def _maxrss_mib():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


# --------------------------------------------------------------------------- engines
class _Engine:
    """One engine in its child process: ``setup`` (import), ``build``, ``reset``, ``epoch``."""

    def __init__(self, threads):
        self.threads = threads


class _Fastconv(_Engine):
    def setup(self):
        import fastconv
        from fastconv import models
        self.fastconv, self.models = fastconv, models
        return fastconv.__version__

    def build(self, weights):
        from fastconv.bench.peers.fastconv_backends import fastconv_lesson_model
        self.weights = weights
        self.model = fastconv_lesson_model(weights)
        self.reset()

    def reset(self):
        self.model.set_weights(self.weights)
        self.model.compile(self.models.Adam(LEARNING_RATE, epsilon=EPSILON),
                           "sparse_categorical_crossentropy")

    def epoch(self, x, y, batch_size):
        hist = self.model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0,
                              num_threads=self.threads)
        return hist.history["loss"][0]


class _Keras(_Engine):
    def setup(self):
        from fastconv.bench.peers.tensorflow_keras import TensorFlowEngine
        engine = TensorFlowEngine()
        engine.setup(self.threads)  # intra-op threads, inter-op 1, checked
        import keras
        self.keras = keras
        return f"keras {keras.__version__}, tensorflow {engine.library.__version__}"

    def build(self, weights):
        from fastconv.bench.peers.tensorflow_keras import keras_lesson_model
        self.weights = weights
        self.model = keras_lesson_model(weights)
        self.model.compile(optimizer=self.keras.optimizers.Adam(LEARNING_RATE, epsilon=EPSILON),
                           loss="sparse_categorical_crossentropy")

    def reset(self):
        """The starting weights and a zero optimizer state (iteration, moments), keeping
        the traced train function."""
        self.model.set_weights(self.weights)
        for v in self.model.optimizer.variables:
            if not v.path.endswith("learning_rate"):
                v.assign(np.zeros(v.shape, v.dtype))

    def epoch(self, x, y, batch_size):
        hist = self.model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
        return float(hist.history["loss"][0])


class _Torch(_Engine):
    channels_last = False

    def setup(self):
        import torch
        torch.set_num_threads(self.threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        self.torch = torch
        return f"torch {torch.__version__}"

    def build(self, weights):
        torch = self.torch
        nn = torch.nn
        self.model = nn.Sequential(nn.Conv2d(1, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                                   nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                   nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10))
        k1, b1, k2, b2, d1, c1, d2, c2 = weights
        # Keras flattens (h, w, c), PyTorch (c, h, w): reorder the first Dense's rows
        d1 = d1.reshape(5, 5, 64, 128).transpose(2, 0, 1, 3).reshape(1600, 128)
        self.params = [np.ascontiguousarray(p) for p in
                       (k1.transpose(3, 2, 0, 1), b1, k2.transpose(3, 2, 0, 1), b2, d1.T, c1,
                        d2.T, c2)]
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.reset()

    def reset(self):
        torch = self.torch
        with torch.no_grad():
            for p, v in zip(self.model.parameters(), self.params):
                p.copy_(torch.from_numpy(v))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LEARNING_RATE, eps=EPSILON)

    def tensors(self, x, y):
        """The whole dataset as tensors, once (not timed): NCHW or channels_last."""
        torch = self.torch
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        if self.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        return t, torch.from_numpy(y)

    def epoch(self, x, y, batch_size):
        F = self.torch.nn.functional
        model, opt = self.model, self.opt
        total, seen = 0.0, 0
        for s in range(0, x.shape[0], batch_size):
            xb, yb = x[s:s + batch_size], y[s:s + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * xb.shape[0]
            seen += xb.shape[0]
        return total / seen


class _TorchCL(_Torch):
    channels_last = True


_CLASSES = {"fastconv": _Fastconv, "keras": _Keras, "torch": _Torch, "torch-cl": _TorchCL}


def _child_engine(args):
    """Run one engine at one batch size; the result as a dict."""
    t_import = time.perf_counter()
    engine = _CLASSES[args.child](args.threads)
    version = engine.setup()
    import_s = time.perf_counter() - t_import
    x, y, weights = make_data(args.images, args.seed)
    if isinstance(engine, _Torch):
        x, y = engine.tensors(x, y)
    baseline_kib = _status_kib("VmRSS")
    hwm = _reset_hwm()
    B = args.batch_size
    engine.build(weights)
    rem = args.images % B
    n_warm = min(args.images, args.warmup * B + rem)
    t0 = time.perf_counter()
    if n_warm:
        engine.epoch(x[:n_warm], y[:n_warm], B)
    warmup_s = time.perf_counter() - t0
    times, losses = [], []
    for _ in range(args.repeat):
        engine.reset()
        t0 = time.perf_counter()
        loss = engine.epoch(x, y, B)
        times.append(time.perf_counter() - t0)
        losses.append(float(loss))
    peak_kib = _status_kib("VmHWM") if hwm else None
    out = {"engine": args.child, "version": version, "batch_size": B, "images": args.images,
           "threads": args.threads, "steps": -(-args.images // B), "epoch_s": times,
           "epoch_s_median": statistics.median(times), "losses": losses, "loss": losses[0],
           "warmup_images": n_warm, "warmup_s": warmup_s, "import_s": import_s,
           "rss_baseline_mib": baseline_kib / 1024 if baseline_kib else None,
           "rss_extra_mib": (max(peak_kib - baseline_kib, 0) / 1024
                             if peak_kib and baseline_kib else None),
           "rss_method": "clear_refs+VmHWM" if hwm else "ru_maxrss",
           "maxrss_mib": _maxrss_mib()}
    if out["rss_extra_mib"] is None and baseline_kib:
        out["rss_extra_mib"] = max(out["maxrss_mib"] - baseline_kib / 1024, 0)
    if args.child == "fastconv" and args.split_steps:
        engine.reset()
        out["split"] = _fastconv_split(engine.model, x, y, B, args.split_steps, args.threads)
    return out


def _layer_macs(layer, first):
    """``(forward, backward)`` multiply-adds per image of a Conv2D or Dense layer."""
    from fastconv.models import Conv2D, Dense
    if isinstance(layer, Conv2D):
        KH, KW, CI, O = layer.weights[0].shape
        OH, OW, _ = layer.output_shape
        fwd = OH * OW * O * KH * KW * CI
    elif isinstance(layer, Dense):
        fwd = layer.weights[0].size
    else:
        return 0, 0
    return fwd, fwd * (1 if first else 2)  # weight gradient (+ input gradient but the first)


def _fastconv_split(model, x, y, batch_size, steps, threads):
    """Seconds per step in each layer's forward and backward pass and in the optimizer.

    The training loop's calls are timed by wrapping them in this process only
    (``fastconv.models._backprop.forward`` / ``backward``, the optimizer's
    ``apply``); ``other`` is the rest of the step (loss, metrics, Python).
    """
    from fastconv.models import _backprop
    try:
        orig_fwd, orig_bwd = _backprop.forward, _backprop.backward
    except AttributeError as exc:
        return {"unavailable": f"fastconv.models internals changed: {exc}"}
    acc = {}

    def timed(kind, fn):
        def wrapper(layer, *a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(layer, *a, **kw)
            finally:
                key = (layer.name, kind)
                acc[key] = acc.get(key, 0.0) + time.perf_counter() - t0
        return wrapper

    opt = model.optimizer
    orig_apply = opt.apply

    def apply(*a, **kw):
        t0 = time.perf_counter()
        try:
            return orig_apply(*a, **kw)
        finally:
            acc[("optimizer", "update")] = acc.get(("optimizer", "update"), 0.0) + \
                time.perf_counter() - t0

    n = min(steps, x.shape[0] // batch_size)
    model.train_on_batch(x[:batch_size], y[:batch_size], num_threads=threads)  # warm
    acc.clear()
    _backprop.forward, _backprop.backward = timed("forward", orig_fwd), timed("backward", orig_bwd)
    opt.apply = apply
    try:
        t0 = time.perf_counter()
        for b in range(n):
            sl = slice(b * batch_size, (b + 1) * batch_size)
            model.train_on_batch(x[sl], y[sl], num_threads=threads)
        total = time.perf_counter() - t0
    finally:
        _backprop.forward, _backprop.backward = orig_fwd, orig_bwd
        opt.apply = orig_apply
    macs = {}
    trainable = [layer for layer in model.layers if layer.weights]
    for layer in model.layers:
        fwd, bwd = _layer_macs(layer, layer is trainable[0])
        macs[(layer.name, "forward")], macs[(layer.name, "backward")] = fwd, bwd
    parts = []
    for (name, kind), seconds in acc.items():
        flops = 2 * macs.get((name, kind), 0) * batch_size
        parts.append({"part": f"{name} {kind}", "ms": seconds / n * 1e3,
                      "gflops": flops / (seconds / n) / 1e9 if flops and seconds else None})
    parts.sort(key=lambda p: -p["ms"])
    other = total - sum(acc.values())
    parts.append({"part": "other (loss, metrics, Python)", "ms": other / n * 1e3,
                  "gflops": None})
    return {"steps": n, "step_ms": total / n * 1e3, "parts": parts}


def _child_peak(args):
    from threadpoolctl import threadpool_limits

    from fastconv.bench.runner import PeakProbe
    with threadpool_limits(limits=args.threads, user_api="blas"):
        probe = PeakProbe(args.peak_size)
        samples = []
        for _ in range(5):
            t0 = time.perf_counter()
            probe()
            samples.append(probe.flops / (time.perf_counter() - t0) / 1e9)
    return {"engine": "sgemm", "size": args.peak_size, "threads": args.threads,
            "gflops_samples": samples}


# --------------------------------------------------------------------------- parent
def _parser():
    p = argparse.ArgumentParser(
        prog="python benchmarks/train_epoch.py",
        description="One training epoch of the lesson's Fashion-MNIST model: fastconv fit vs "
                    "Keras fit vs a PyTorch loop (NCHW, channels_last), each engine in its own "
                    "process.")
    p.add_argument("--images", type=int, default=60000, help="images per epoch (default 60000)")
    p.add_argument("--batch-sizes", default="32,128", help="comma-separated (default 32,128)")
    p.add_argument("--threads", type=int, default=2, help="threads for every engine (default 2)")
    p.add_argument("--engines", default=",".join(ENGINES),
                   help=f"comma-separated among {','.join(ENGINES)} (default all)")
    p.add_argument("--repeat", type=int, default=None,
                   help="timed epochs per engine, median reported (default 1 for 60000 "
                        "images or more, else 3)")
    p.add_argument("--warmup", type=int, default=3,
                   help="warm-up steps before timing (default 3, plus the partial last batch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--peak-size", type=int, default=2048,
                   help="matrix size of the sgemm probe (default 2048; 0 skips it)")
    p.add_argument("--split-steps", type=int, default=50,
                   help="instrumented fastconv steps for the per-layer time split (0 skips)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds allowed per engine run (default no limit)")
    p.add_argument("--json", metavar="FILE", default=None, help="write the results here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    return p


def _child_env(threads):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONSAFEPATH"] = "1"  # never import a source tree from the current directory
    return env


def _spawn(args, child, batch_size=None):
    """Run one child; ``(result dict, None)`` or ``(None, reason)``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--child", child,
               "--images", str(args.images), "--threads", str(args.threads),
               "--repeat", str(args.repeat), "--warmup", str(args.warmup),
               "--seed", str(args.seed), "--peak-size", str(args.peak_size),
               "--split-steps", str(args.split_steps), "--child-out", out]
        if batch_size is not None:
            cmd += ["--batch-size", str(batch_size)]
        try:
            proc = subprocess.run(cmd, env=_child_env(args.threads), capture_output=True,
                                  text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            return None, f"timed out after {args.timeout:g} s"
        if proc.returncode != 0 or not os.path.exists(out):
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return None, f"exit status {proc.returncode}: " + " | ".join(tail)
        with open(out) as f:
            return json.load(f), None


def _installed(engine):
    import importlib.util
    module = {"fastconv": "fastconv", "keras": "keras", "torch": "torch",
              "torch-cl": "torch"}[engine]
    return importlib.util.find_spec(module) is not None


def _meta(argv, args):
    from fastconv.bench.report.document import git_commit, machine_info, without_paths
    commit, dirty = git_commit(os.path.dirname(os.path.abspath(__file__)))
    return {"command": without_paths("python benchmarks/train_epoch.py"
                                     + "".join(" " + shlex.quote(a) for a in argv)),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": commit, "dirty": dirty, "machine": machine_info(),
            "images": args.images, "threads": args.threads, "repeat": args.repeat,
            "warmup_steps": args.warmup, "seed": args.seed,
            "flop_convention": "2 x multiply-add", "epoch_flops": epoch_flops(args.images)}


def run(argv=None):
    """Run the benchmark; return the results document (written to ``--json`` if given)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.child:
        raise SystemExit("--child is internal; use main()")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = [e for e in engines if e not in ENGINES]
    if bad or not engines:
        parser.error(f"--engines: unknown {', '.join(bad) or '(none)'}; choose from "
                     f"{', '.join(ENGINES)}")
    if args.images < 1 or not batch_sizes or min(batch_sizes) < 1 or args.threads < 1:
        parser.error("--images, --batch-sizes and --threads must be positive")
    if args.repeat is None:
        args.repeat = 1 if args.images >= 60000 else 3
    doc = {"schema": SCHEMA, "meta": _meta(argv, args), "results": [], "unavailable": {},
           "peak": None}
    peaks = []
    if args.peak_size:
        res, why = _spawn(args, "sgemm")
        peaks += res["gflops_samples"] if res else []
    for B in batch_sizes:
        for engine in engines:
            if not _installed(engine):
                doc["unavailable"][f"{engine}@{B}"] = "not installed"
                continue
            print(f"train_epoch: {LABELS[engine]}, batch {B}, {args.images} images ...",
                  file=sys.stderr, flush=True)
            res, why = _spawn(args, engine, B)
            if res is None:
                doc["unavailable"][f"{engine}@{B}"] = why
                print(f"train_epoch: {engine} batch {B} failed: {why}", file=sys.stderr)
                continue
            doc["results"].append(res)
    if args.peak_size:
        res, why = _spawn(args, "sgemm")
        peaks += res["gflops_samples"] if res else []
        doc["peak"] = {"size": args.peak_size, "threads": args.threads,
                       "gflops_samples": peaks,
                       "gflops": statistics.median(peaks) if peaks else None}
    _derive(doc)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    return doc


def _derive(doc):
    """Rates, ratios, loss agreement and the targets, from the raw results (in place)."""
    peak = (doc.get("peak") or {}).get("gflops")
    per_image = doc["meta"]["epoch_flops"] / doc["meta"]["images"]
    for r in doc["results"]:
        t = r["epoch_s_median"]
        r["images_per_s"] = r["images"] / t
        r["step_ms"] = t / r["steps"] * 1e3
        r["gflops"] = per_image * r["images"] / t / 1e9
        r["pct_peak"] = 100 * r["gflops"] / peak if peak else None
    doc["ratios"], doc["loss_check"], doc["targets"] = [], [], []
    for B in sorted({r["batch_size"] for r in doc["results"]}):
        rows = {r["engine"]: r for r in doc["results"] if r["batch_size"] == B}
        mine = rows.get("fastconv")
        losses = [r["loss"] for r in rows.values()]
        spread = (max(losses) - min(losses)) / abs(statistics.median(losses)) if losses else None
        doc["loss_check"].append({"batch_size": B, "losses": {e: r["loss"]
                                                              for e, r in rows.items()},
                                  "spread": spread,
                                  "ok": spread is not None and spread <= LOSS_RTOL})
        if mine is None:
            continue
        for engine, other in rows.items():
            if engine != "fastconv":
                doc["ratios"].append({"batch_size": B, "vs": engine,
                                      "speedup": other["epoch_s_median"] / mine["epoch_s_median"]})
        for goal in TARGETS:
            other = rows.get(goal["engine"])
            entry = dict(goal, batch_size=B)
            if other is None:
                entry.update(status="not run", measured=None)
            else:
                speed = other["epoch_s_median"] / mine["epoch_s_median"]
                entry.update(measured=speed, status="met" if speed >= goal["at_least"]
                             else "missed",
                             needed_s=other["epoch_s_median"] / goal["at_least"],
                             floor_s=(per_image * mine["images"] / (peak * 1e9)) if peak
                             else None)
            doc["targets"].append(entry)
        torch_cl = rows.get("torch-cl")
        if torch_cl is not None and mine.get("rss_extra_mib") is not None \
                and torch_cl.get("rss_extra_mib") is not None:
            doc["targets"].append({"id": "memory_vs_torch_channels_last", "batch_size": B,
                                   "engine": "torch-cl", "at_most": 1.0,
                                   "measured": mine["rss_extra_mib"] / torch_cl["rss_extra_mib"]
                                   if torch_cl["rss_extra_mib"] else None,
                                   "status": "met" if mine["rss_extra_mib"]
                                   <= torch_cl["rss_extra_mib"] else "missed"})


# --------------------------------------------------------------------------- report
def _f(v, spec, suffix=""):
    return "-" if v is None else f"{v:{spec}}{suffix}"


def _table(header, rows):
    from fastconv.bench.report import markdown_table
    return markdown_table(header, rows)


def markdown(doc):
    """A RESULTS.md section for a document from :func:`run`."""
    meta = doc["meta"]
    peak = (doc.get("peak") or {}).get("gflops")
    lines = [f"Command: `{meta['command']}` (commit {str(meta.get('commit'))[:10]}"
             f"{', local changes' if meta.get('dirty') else ''}, {meta['date']}).", "",
             f"One epoch of the lesson's Fashion-MNIST model (28x28x1 -> 10, Adam lr 1e-3 "
             f"eps 1e-7, sparse categorical cross-entropy) on {meta['images']} synthetic "
             f"images of the real shape, {meta['threads']} threads for every engine, the same "
             f"starting weights, data and order (`shuffle=False`); each engine in its own "
             f"process, {meta['warmup_steps']} warm-up steps (and the last partial batch) "
             f"untimed, median of {meta['repeat']} epoch(s). GFLOP/s counts 2 FLOPs per "
             f"multiply-add ({meta['epoch_flops'] / meta['images'] / 1e6:.1f} MFLOP per image: "
             f"forward, weight gradients, input gradients but the first layer's); "
             + (f"sgemm peak {peak:.1f} GFLOP/s (NumPy's BLAS, {meta['threads']} threads, "
                f"{doc['peak']['size']}^3, probed before and after the engines)."
                if peak else "no sgemm probe."), ""]
    rows = []
    for r in sorted(doc["results"], key=lambda r: (r["batch_size"], ENGINES.index(r["engine"]))):
        rows.append([r["batch_size"], LABELS[r["engine"]], _f(r["epoch_s_median"], ".2f"),
                     _f(r["images_per_s"], ",.0f"), _f(r["step_ms"], ".2f"),
                     _f(r["gflops"], ".1f"), _f(r.get("pct_peak"), ".0f", "%"),
                     _f(r.get("maxrss_mib"), ",.0f"), _f(r.get("rss_extra_mib"), ",.0f"),
                     _f(r["loss"], ".4f")])
    lines += [_table(["batch", "engine", "epoch s", "images/s", "ms/step", "GFLOP/s",
                      "% of sgemm peak", "peak RSS MiB", "training MiB", "epoch-1 loss"],
                     rows), "",
              "peak RSS = the engine's process high-water mark (imports and the dataset "
              "included); training MiB = its rise over the resident size after the imports "
              "and the data.", ""]
    if doc["ratios"]:
        by = {}
        for q in doc["ratios"]:
            by.setdefault(q["batch_size"], {})[q["vs"]] = q["speedup"]
        lines += [_table(["batch", "fastconv vs Keras fit", "vs PyTorch channels_last",
                          "vs PyTorch NCHW"],
                         [[B, _f(v.get("keras"), ".2f", "x"), _f(v.get("torch-cl"), ".2f", "x"),
                           _f(v.get("torch"), ".2f", "x")] for B, v in sorted(by.items())]), ""]
    for c in doc["loss_check"]:
        vals = ", ".join(f"{e} {v:.4f}" for e, v in c["losses"].items())
        lines.append(f"- batch {c['batch_size']}: epoch-1 losses {vals} -- spread "
                     f"{_f(c['spread'] and 100 * c['spread'], '.2f', '%')} "
                     f"({'agree' if c['ok'] else 'DISAGREE'}: limit {100 * LOSS_RTOL:.0f}%)")
    if doc["loss_check"]:
        lines.append("")
    if doc["targets"]:
        rows = []
        for t in doc["targets"]:
            if "at_least" in t:
                goal = f">= {t['at_least']}x {LABELS[t['engine']]}"
                got = _f(t["measured"], ".2f", "x")
            else:
                goal = f"training memory <= {LABELS[t['engine']]}'s"
                got = _f(t["measured"], ".2f", "x theirs")
            rows.append([t["batch_size"], goal, got, t["status"]])
        lines += ["Targets:", "", _table(["batch", "goal", "measured", "status"], rows), ""]
    misses = [t for t in doc["targets"] if t["status"] == "missed" and "at_least" in t]
    if misses:
        lines += ["Why the misses (measured in the same run):", ""]
        mine = {r["batch_size"]: r for r in doc["results"] if r["engine"] == "fastconv"}
        for t in misses:
            r = mine[t["batch_size"]]
            need = t["needed_s"]
            text = (f"- batch {t['batch_size']}, {t['id']}: the goal needs an epoch in "
                    f"{need:.2f} s; fastconv took {r['epoch_s_median']:.2f} s at "
                    f"{r['gflops']:.1f} GFLOP/s")
            if t.get("floor_s"):
                text += (f" ({r['pct_peak']:.0f}% of the sgemm peak; at 100% of it the epoch "
                         f"takes {t['floor_s']:.2f} s, so the goal needs "
                         f"{100 * t['floor_s'] / need:.0f}% of the peak over the whole step)")
            lines.append(text + ".")
        lines.append("")
    splits = [r for r in doc["results"] if r["engine"] == "fastconv" and r.get("split")]
    for r in splits:
        s = r["split"]
        if "parts" not in s:
            lines += [f"fastconv time split at batch {r['batch_size']}: {s.get('unavailable')}",
                      ""]
            continue
        rows = [[p["part"], f"{p['ms']:.2f}", f"{100 * p['ms'] / s['step_ms']:.0f}%",
                 _f(p["gflops"], ".1f"),
                 _f(p["gflops"] and peak and 100 * p["gflops"] / peak, ".0f", "%")]
                for p in s["parts"]]
        lines += [f"fastconv's step at batch {r['batch_size']}, split by layer "
                  f"({s['steps']} instrumented `train_on_batch` steps, {s['step_ms']:.2f} ms "
                  f"per step):", "",
                  _table(["part", "ms/step", "share", "GFLOP/s", "% of sgemm peak"], rows), ""]
    if doc["unavailable"]:
        lines += ["Not run: " + "; ".join(f"{k}: {v}" for k, v in doc["unavailable"].items()),
                  ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.child:  # inside a child process: one engine (or the sgemm probe)
        res = _child_peak(args) if args.child == "sgemm" else _child_engine(args)
        with open(args.child_out, "w") as f:
            json.dump(res, f)
        return 0
    doc = run(argv)
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
