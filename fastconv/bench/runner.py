"""Timing: interleaved rounds, medians, the same thread count for every engine.

For one thread count, :func:`run` does, in one process:

1. set every engine's thread count (fastconv ``num_threads=``, OpenMP/BLAS via
   threadpoolctl, TensorFlow intra-op/inter-op, ``torch.set_num_threads``,
   ``cv2.setNumThreads``, ONNX Runtime's ``intra_op_num_threads``, JAX's XLA
   client on one thread or every core); an engine that cannot be set up, or
   not held to the count, is listed with the reason, never an error;
2. prepare the machine's peak probe: a large float32 matrix product
   (``N^3``, default 2048) through NumPy's BLAS at the same thread count,
   timed once in every round of every case (interleaved with the engines);
   a row's "% of peak" uses the median of its own case's probes, so both
   figures saw the same machine load; likewise a bandwidth probe (the
   fastest of a few sweeps of a large copy split over the same number of
   threads, :class:`BandwidthProbe`); a case's *limit* is the
   larger of its FLOPs at the peak and its bytes read + written at the
   bandwidth, and each row says what % of that limit it reaches;
3. for each case: make seeded float32 inputs, compute the NumPy reference,
   and for each engine that supports the case run one warm-up call, check its
   result against the reference (a wrong setup must not produce a fast
   number), then measure the resident-memory rise of one call;
4. time ``repeat`` rounds; each round visits every engine once (round-robin,
   the starting engine rotating), so drift in machine load affects all
   engines alike.  A sample is the mean over enough back-to-back calls to
   last ``min_time`` seconds; the reported time is the median of the samples.
   Each sample starts after a short pause (:data:`SETTLE_S`) so that worker
   threads another library left spinning do not run against it, then one
   untimed call of the same engine, so that its own worker threads -- asleep
   after the pause, and on a virtual machine slow to wake -- are running when
   the clock starts; every engine is treated alike.  After an OpenBLAS product
   on two or more threads (the NumPy peer, the peak probe) the runner waits
   :data:`BLAS_SPIN_S`, until OpenBLAS's spinning idle worker has gone to
   sleep.  Samples run with Python's garbage collector off.
"""
import gc
import math
import os
import statistics
import sys
import time
import tracemalloc

import numpy as np

from .peers import Unavailable
from .suite import BACKWARD_OPS, backward_data, backward_reference, lesson_model_weights

__all__ = ["run", "measure_peak", "make_data", "reference", "check_result", "Progress"]

#: pause before each sample, so the previous engine's spinning worker threads (OpenMP,
#: OpenBLAS, Eigen) have gone to sleep and do not steal cores from the next engine
SETTLE_S = 0.002
#: after an OpenBLAS product on 2+ threads (the NumPy peer, the peak probe), its idle worker
#: keeps spinning for about 2**28 TSC cycles (OpenBLAS's THREAD_TIMEOUT, about 0.1 s at
#: 2-3 GHz) and takes a core from whatever runs next.  The runner waits this long after such
#: samples.
BLAS_SPIN_S = 0.15
#: float32 relative tolerance of the result check (scaled by the output's magnitude)
RTOL = 2e-3


class Progress:
    """A one-line progress bar on stderr (only drawn when stderr is a terminal)."""

    def __init__(self, total, enabled=None, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = (self.stream.isatty() if enabled is None else enabled) and total > 0
        self.total, self.done, self.label = total, 0, ""
        self._last = 0.0

    def step(self, label="", n=1):
        """Advance by ``n`` and redraw at most ten times a second."""
        self.done += n
        self.label = label or self.label
        now = time.perf_counter()
        if self.enabled and (now - self._last > 0.1 or self.done >= self.total):
            self._last = now
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
            self.stream.write(f"\r[{bar}] {100 * frac:3.0f}% {self.label[:40]:40s}")
            self.stream.flush()

    def show(self, label):
        """Redraw with a new label without advancing."""
        self._last = 0.0
        self.step(label, 0)

    def close(self):
        """Erase the bar."""
        if self.enabled:
            self.stream.write("\r" + " " * 80 + "\r")
            self.stream.flush()


class PeakProbe:
    """A ``size``-cubed float32 matrix product through NumPy's BLAS: the machine's peak.

    The caller holds BLAS to the wanted thread count (threadpoolctl).  The
    runner times one product in every round of every case, interleaved with
    the engines, so each row's "% of peak" compares with a peak measured
    under the same machine load.
    """

    def __init__(self, size=2048):
        rng = np.random.default_rng(1)
        self.size = size
        self.a = rng.standard_normal((size, size), dtype=np.float32)
        self.b = rng.standard_normal((size, size), dtype=np.float32)
        self.c = np.empty((size, size), np.float32)
        self()  # warm-up

    def __call__(self):
        np.matmul(self.a, self.b, out=self.c)

    @property
    def flops(self):
        """2 x multiply-adds of one product."""
        return 2.0 * self.size ** 3


class BandwidthProbe:
    """The memory bandwidth a streaming kernel can reach at the run's thread count.

    A STREAM-style copy between two float32 arrays of ``nbytes`` each (64 MiB
    by default: past the last-level cache of common CPUs, so every sweep goes
    to memory).  With ``threads > 1`` the copy is split into ``threads``
    contiguous slices, each copied by its own thread at the same time
    (``np.copyto`` releases the GIL).  The copy is NumPy's, which calls the C
    library's ``memcpy``: the platform's tuned copy, which writes a large
    destination with non-temporal stores, as fastconv's ReLU does for large
    outputs -- so the probe measures what such a kernel can reach, not a
    kernel under test (fastconv's own ReLU would make every ReLU row 100% of
    its limit by construction).  Traffic is counted like a case's: bytes read
    plus bytes written (``2 * nbytes``).

    One :meth:`measure` is the fastest of ``repeats`` back-to-back sweeps: a
    sweep takes a few milliseconds, so a single one is easily slowed by a
    timer tick or another process, while the fastest of several is the
    achievable figure (as STREAM reports its best time).  Like
    :class:`PeakProbe` it is measured once in every round of every case.
    """

    def __init__(self, nbytes=64 << 20, threads=1, repeats=5):
        n = max(nbytes // 4, 1024)
        self.src = np.random.default_rng(2).standard_normal(n, dtype=np.float32)
        self.dst = np.empty_like(self.src)
        self.threads = max(int(threads), 1)
        self.repeats = max(int(repeats), 1)
        edges = [n * i // self.threads for i in range(self.threads + 1)]
        self.parts = [(self.dst[a:b], self.src[a:b]) for a, b in zip(edges, edges[1:])]
        self.pool = None
        if self.threads > 1:
            from concurrent.futures import ThreadPoolExecutor
            self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="fc-bw-probe")
        self()  # warm-up: touch every page, start the threads

    def __call__(self):
        """One sweep: every slice copied, each by its own thread."""
        if self.pool is None:
            np.copyto(self.dst, self.src)
        else:
            for f in [self.pool.submit(np.copyto, d, s) for d, s in self.parts]:
                f.result()

    def measure(self):
        """GB/s (bytes read + written) of the fastest of ``repeats`` sweeps."""
        best = min(_time_calls(self, 1) for _ in range(self.repeats))
        return self.bytes_moved / best / 1e9

    @property
    def bytes_moved(self):
        """Bytes read plus bytes written by one sweep."""
        return 2.0 * self.src.nbytes

    def close(self):
        """Stop the probe's threads."""
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None


def limit_time(flops, nbytes, peak_gflops, bw_gbytes_s):
    """``(seconds, kind)``: a call's floor, the larger of its compute floor (``flops`` at the
    sgemm peak) and its memory floor (``nbytes`` read + written at the probed bandwidth);
    kind is ``'compute'`` or ``'memory'``.  ``(None, None)`` without either figure."""
    compute = flops / (peak_gflops * 1e9) if flops and peak_gflops else None
    memory = nbytes / (bw_gbytes_s * 1e9) if nbytes and bw_gbytes_s else None
    if compute is None and memory is None:
        return None, None
    if memory is None or (compute is not None and compute >= memory):
        return compute, "compute"
    return memory, "memory"


def measure_peak(size=2048, repeat=5):
    """Peak GFLOP/s of a ``size``-cubed float32 matmul (NumPy's BLAS), median of ``repeat``."""
    probe = PeakProbe(size)
    return probe.flops / statistics.median(_time_calls(probe, 1) for _ in range(repeat)) / 1e9


def make_data(case, seed=0):
    """Seeded inputs for ``case`` in its dtype: ``x`` (NHWC) and ``w`` (HWIO) or model weights."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(case.dtype)
    data = {"x": rng.standard_normal(case.input_shape, dtype=dt)}
    if case.op == "conv2d":
        fan_in = case.KH * case.KW * (case.C // case.groups)
        w = rng.standard_normal(case.filter_shape, dtype=dt) / dt.type(np.sqrt(fan_in))
        data["w"] = w
    if case.op == "model":
        data["x"] = rng.random(case.input_shape, dtype=np.float32)
        data["weights"] = lesson_model_weights(seed)
    if case.op == "train":  # images in [0, 1], labels, the lesson model's weights
        from .peers.training import train_data
        data.update(train_data(case, seed))
    if case.op in BACKWARD_OPS:
        if BACKWARD_OPS[case.op] == "conv2d":
            fan_in = case.KH * case.KW * (case.C // case.groups)
            data["w"] = (rng.standard_normal(case.filter_shape, dtype=np.float32)
                         / np.float32(np.sqrt(fan_in)))
        data.update(backward_data(case, rng))
    return data


def reference(case, data):
    """The expected output, from fastconv's NumPy reference backend."""
    import fastconv as fc
    x = data["x"]
    if case.op == "train":  # the predictions after one step
        from .peers.training import train_reference
        return train_reference(case, data)
    if case.op in BACKWARD_OPS:
        return backward_reference(case, data)
    if case.op == "conv2d":
        return fc.conv2d(x, data["w"], (case.SH, case.SW), case.padding, groups=case.groups,
                         backend="numpy")
    if case.op == "relu":
        return fc.relu(x, backend="numpy")
    if case.op == "max_pool2d":
        return fc.max_pool2d(x, (case.KH, case.KW), (case.SH, case.SW), case.padding,
                             backend="numpy")
    if case.op == "im2col":
        return fc.im2col(x, (case.KH, case.KW), (case.SH, case.SW), case.padding,
                         backend="numpy")
    if case.op == "model":
        from .peers.fastconv_backends import fastconv_lesson_model
        return fastconv_lesson_model(data["weights"]).predict(x, batch_size=case.N,
                                                              backend="numpy")
    raise ValueError(f"unknown op {case.op!r}")


def check_result(got, expected, rtol=RTOL):
    """Return ``(ok, detail)``: whether ``got`` matches ``expected`` within float32 rounding."""
    got = np.asarray(got)
    if got.shape != expected.shape:
        return False, f"shape {got.shape}, expected {expected.shape}"
    if not np.all(np.isfinite(got)):
        return False, "non-finite values"
    scale = max(float(np.max(np.abs(expected))) if expected.size else 0.0, 1e-30)
    err = float(np.max(np.abs(got.astype(np.float64) - expected))) if got.size else 0.0
    if err > rtol * scale:
        return False, f"max error {err:.3g} > {rtol:g} x max|ref| {scale:.3g}"
    return True, f"max error {err:.2g}"


def _rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def memory_method():
    """How extra memory is measured here: 'rss-hwm' (Linux) or 'tracemalloc'."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _rss_kib("VmHWM")
        return "rss-hwm"
    except OSError:
        return "tracemalloc"


def extra_memory(fn, method):
    """Bytes of memory one call of ``fn`` adds at its peak.

    ``'rss-hwm'``: reset the kernel's resident-set high-water mark
    (``/proc/self/clear_refs``), call, and report ``VmHWM`` minus the resident
    size before the call -- every library's allocations count, but memory an
    allocator had already touched and cached does not.  ``'tracemalloc'``:
    the peak of Python-visible allocations (NumPy's included, not those of
    PyTorch or TensorFlow).
    """
    if method == "rss-hwm":
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _rss_kib("VmRSS")
        fn()
        return max(_rss_kib("VmHWM") - before, 0) * 1024
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _loadavg():
    """The 1-minute load average (None where the OS does not report it)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _time_calls(fn, inner):
    """Mean seconds per call over ``inner`` back-to-back calls, the garbage collector off."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        return (time.perf_counter() - t0) / inner
    finally:
        if was_enabled:
            gc.enable()


def setup_engines(engines, threads):
    """Set up each engine for ``threads``; return ``(ready, unavailable)``."""
    ready, unavailable = [], {}
    for engine in engines:
        try:
            engine.setup(threads)
        except Unavailable as exc:
            unavailable[engine.name] = str(exc)
            continue
        except Exception as exc:  # a broken install: list it, keep going
            unavailable[engine.name] = f"setup failed: {type(exc).__name__}: {exc}"
            continue
        ready.append(engine)
    return ready, unavailable


def run(cases, engines, threads, repeat=5, min_time=0.005, peak_size=2048, progress=None,
        skip=None, breadcrumb=None, partial=None, bandwidth_bytes=64 << 20, busy=0,
        isa=None):
    """Benchmark ``cases`` on ``engines`` at ``threads`` threads, all in this process.

    Parameters
    ----------
    cases : list of Case
    engines : list of Engine
        Not yet set up; unavailable ones are listed in the result.
    threads : int
    repeat : int
        Rounds (samples per engine and case); the median is reported.
    min_time : float
        Minimum seconds per sample; fast calls are repeated back to back.
    peak_size : int
        Matrix size of the peak sgemm measurement (0 skips it).
    progress : bool, optional
        Draw a progress bar on stderr (default: when stderr is a terminal).
    skip : dict, optional
        ``{(case name, engine name): reason}``: pairs not to run (they crashed
        the process in an earlier attempt); their rows say ``CRASH``.
    breadcrumb : str, optional
        File rewritten with ``case<TAB>engine`` before each engine's first call
        on a case, so that a parent process can tell which pair crashed.
    partial : str, optional
        JSON file rewritten after each case with the results and peak probes
        so far, so that a parent process can keep them if a later case crashes.
    bandwidth_bytes : int
        Size of each array of the bandwidth probe (:class:`BandwidthProbe`; 0 skips it).
    busy : int
        CPU-burner processes (:class:`fastconv.bench.busy.Burners`) running while the
        cases are timed: a loaded machine.
    isa : str, optional
        The ``--isa`` this process was started for (its environment set by the
        parent): what each library really uses is checked and recorded
        (:func:`fastconv.bench.isa.verify`).

    Returns
    -------
    dict
        ``threads``, ``peak_gflops``, ``peak_size``, ``memory_method``,
        ``unavailable`` {engine: reason}, ``engines`` {engine: version} and
        ``results``: one dict per (case, engine) with ``case``, ``op``,
        ``engine``, ``kind``, ``median_s``, ``times_s``, ``gflops``,
        ``gbytes_s``, ``pct_peak``, ``extra_bytes``, ``check`` ('ok',
        'MISMATCH' or 'ERROR'), ``detail`` -- plus ``vs_best_peer`` filled in
        by :func:`add_ratios`.
    """
    import fastconv
    from threadpoolctl import threadpool_limits

    from .busy import Burners

    ready, unavailable = setup_engines(engines, threads)
    isa_facts = None
    if isa:
        from . import isa as isa_mod
        isa_facts = isa_mod.verify(isa, [e.name for e in ready])
        isa_facts["cpu"] = {"setting": "", "reported": isa_mod.cpu_best_isa(), "status": ""}
    versions = {}
    for e in ready:
        try:
            versions[e.name] = e.version()
        except Exception:
            versions[e.name] = "?"
    load_start = _loadavg()
    old_threads = fastconv._threads._default
    fastconv.set_num_threads(threads)
    method = memory_method()
    results, burner_pids = [], []
    bw = None
    try:
        with threadpool_limits(limits=threads):
            probe = PeakProbe(peak_size) if peak_size else None
            bw = BandwidthProbe(bandwidth_bytes, threads) if bandwidth_bytes else None
            plan = [(c, [e for e in ready if e.supports(c)]) for c in cases]
            bar = Progress(sum(len(es) * (repeat + 1) for _, es in plan), progress)
            peaks, bws = [], []
            with Burners(busy) as burners:
                burner_pids = burners.pids
                for case, case_engines in plan:
                    results.extend(_run_case(case, case_engines, repeat, min_time, probe,
                                             method, bar, peaks, skip or {}, breadcrumb,
                                             BLAS_SPIN_S if threads > 1 else 0.0, bw, bws))
                    if partial:
                        _write_partial(partial, results, peaks, bws)
                bar.close()
                if probe is not None and not peaks:  # no case ran: measure it on its own
                    peaks = [probe.flops / _time_calls(probe, 1) / 1e9 for _ in range(3)]
                if bw is not None and not bws:
                    bws = [bw.measure() for _ in range(3)]
            del probe
    finally:
        fastconv._threads._default = old_threads
        if bw is not None:
            bw.close()
    add_ratios(results)
    peak = statistics.median(peaks) if peaks else None
    band = statistics.median(bws) if bws else None
    return {"threads": threads, "peak_gflops": peak, "peak_size": peak_size,
            "peak_range_gflops": [min(peaks), max(peaks)] if peaks else None,
            "peak_samples_gflops": peaks,
            "bandwidth_gbytes_s": band, "bandwidth_bytes": bandwidth_bytes,
            "bandwidth_range_gbytes_s": [min(bws), max(bws)] if bws else None,
            "bandwidth_samples_gbytes_s": bws,
            "busy": busy, "busy_pids": burner_pids, "isa": isa, "isa_check": isa_facts,
            "loadavg_start": load_start, "loadavg_end": _loadavg(),
            "memory_method": method, "repeat": repeat, "min_time_s": min_time,
            "unavailable": unavailable, "engines": versions, "results": results}


def _row(case, engine, check="ok", detail=""):
    return {"case": case.name, "op": case.op, "shape": case.description,
            "engine": engine.name, "kind": engine.kind, "flops": case.flops,
            "bytes": case.bytes_moved, "median_s": None, "times_s": [], "gflops": None,
            "gbytes_s": None, "pct_peak": None, "extra_bytes": None, "check": check,
            "detail": detail, "vs_best_peer": None, "limit_s": None, "limit_kind": None,
            "pct_limit": None}


def _write_partial(path, results, peaks, bandwidths=()):
    """Save the finished cases' rows and peak/bandwidth probes (replaced atomically)."""
    import json
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"results": results, "peaks": peaks, "bandwidths": list(bandwidths)}, f)
    os.replace(tmp, path)


def _leave_breadcrumb(path, case, engine):
    """Record the pair about to run, written straight to the file (survives a crash)."""
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, f"{case.name}\t{engine.name}\n".encode())
        finally:
            os.close(fd)


def _run_case(case, engines, repeat, min_time, probe, method, bar, peaks, skip, breadcrumb,
              spin_s=0.0, bw=None, bws=None):
    gc.collect()
    data = make_data(case)
    expected = reference(case, data)
    rows, live = [], []
    for engine in engines:
        row = _row(case, engine)
        if (case.name, engine.name) in skip:
            row["check"], row["detail"] = "CRASH", skip[(case.name, engine.name)]
            bar.step(f"{case.name} {engine.name}", repeat + 1)
            rows.append(row)
            continue
        bar.show(f"{case.name} {engine.name}")  # visible if a native crash follows
        _leave_breadcrumb(breadcrumb, case, engine)
        try:
            prepared = engine.prepare(case, data)
            t0 = time.perf_counter()
            prepared()
            first = time.perf_counter() - t0
            ok, detail = check_result(prepared.result(), expected)
            prepared.last = None
            row["check"], row["detail"] = ("ok" if ok else "MISMATCH"), detail
            first = min(first, _time_calls(prepared, 1))  # second call: steady state
            row["extra_bytes"] = extra_memory(prepared, method)
            prepared.last = None
        except Unavailable as exc:
            row["check"], row["detail"] = "n/a", str(exc)
            bar.step(f"{case.name} {engine.name}", repeat + 1)
            rows.append(row)
            continue
        except Exception as exc:
            row["check"], row["detail"] = "ERROR", f"{type(exc).__name__}: {exc}"
            bar.step(f"{case.name} {engine.name}", repeat + 1)
            rows.append(row)
            continue
        inner = 1 if first >= min_time else min(max(math.ceil(min_time / max(first, 1e-7)), 1),
                                                10000)
        rows.append(row)
        live.append((row, prepared, inner))
        bar.step(f"{case.name} {engine.name}")
    case_peaks, case_bws = [], []
    for r in range(repeat):
        k = r % len(live) if live else 0
        for row, prepared, inner in live[k:] + live[:k]:
            time.sleep(SETTLE_S)
            prepared()  # untimed: wakes this engine's own worker threads after the pause
            row["times_s"].append(_time_calls(prepared, inner))
            if spin_s and row["engine"] == "numpy":
                time.sleep(spin_s)
            bar.step(f"{case.name} round {r + 1}/{repeat}")
        if probe is not None and live:
            time.sleep(SETTLE_S)
            probe()
            case_peaks.append(probe.flops / _time_calls(probe, 1) / 1e9)
            time.sleep(spin_s)
        if bw is not None and live:
            time.sleep(SETTLE_S)
            case_bws.append(bw.measure())
    peaks.extend(case_peaks)
    if bws is not None:
        bws.extend(case_bws)
    peak = statistics.median(case_peaks) if case_peaks else None
    band = statistics.median(case_bws) if case_bws else None
    limit, kind = limit_time(case.flops, case.bytes_moved, peak, band)
    for row, prepared, inner in live:
        prepared.last = None
        t = statistics.median(row["times_s"])
        row["median_s"], row["inner"], row["peak_gflops"] = t, inner, peak
        row["bandwidth_gbytes_s"], row["limit_s"], row["limit_kind"] = band, limit, kind
        if limit:
            row["pct_limit"] = 100.0 * limit / t
        if len(row["times_s"]) >= 2:
            q1, _, q3 = statistics.quantiles(row["times_s"], n=4, method="inclusive")
            row["iqr_s"] = q3 - q1
        if case.flops:
            row["gflops"] = case.flops / t / 1e9
            if peak:
                row["pct_peak"] = 100.0 * row["gflops"] / peak
        row["gbytes_s"] = case.bytes_moved / t / 1e9
    return rows


def add_ratios(results):
    """Fill ``vs_best_peer`` = best correct peer's median / this row's median, per case."""
    best = {}
    for r in results:
        if r["kind"] == "peer" and r["check"] == "ok" and r["median_s"]:
            b = best.get(r["case"])
            best[r["case"]] = r["median_s"] if b is None else min(b, r["median_s"])
    for r in results:
        b = best.get(r["case"])
        if b and r["median_s"]:
            r["vs_best_peer"] = b / r["median_s"]
    return results
