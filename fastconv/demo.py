"""``fastconv demo``: the lesson's filter -> detect -> condense pipeline, as a picture.

Reads a grayscale image (the built-in car by default), then

1. *filter*: :func:`fastconv.conv2d` with the kernel, strides 1, 'SAME' padding;
2. *detect*: :func:`fastconv.relu`;
3. *condense*: :func:`fastconv.max_pool2d`, 2x2 windows;

prints each step's shapes and time, and draws the four panels (input,
filter, detect, condense) into a PNG with :func:`fastconv.viz.show_extraction`.

Examples::

    fastconv demo                               # built-in car, edge kernel
    fastconv demo photo.jpg --kernel sobel_vertical --out sobel.png
    fastconv demo shapes --kernel my_kernel.npy --show-kernel
    fastconv demo --list-kernels
"""
import argparse
import statistics
import sys
import time

import numpy as np

from . import kernels as _kernels
from ._backends import BackendUnavailableError, resolve
from ._ops import conv2d, max_pool2d, relu
from ._threads import resolve_num_threads

DEFAULT_OUT = "fastconv-demo.png"


def _parser():
    p = argparse.ArgumentParser(
        prog="fastconv demo",
        description="Run the lesson's filter (conv2d SAME) -> detect (relu) -> condense "
                    "(2x2 max pool) pipeline on an image and draw it.",
        epilog="Built-in images: car, shapes. Kernels: " + ", ".join(_kernels.names()) + ".")
    p.add_argument("image", nargs="?", default="car",
                   help="a PNG/JPEG file or a built-in image name (default: car)")
    p.add_argument("--kernel", "-k", default="edge",
                   help="a kernel name or a .npy file holding a 2-D array (default: edge)")
    p.add_argument("--out", "-o", default=DEFAULT_OUT,
                   help=f"PNG file to write (default: ./{DEFAULT_OUT})")
    p.add_argument("--size", default=None,
                   help="resize the image first: N (square) or HxW, e.g. 400 or 300x400")
    p.add_argument("--pool", type=int, default=2, help="max-pool window side (default: 2)")
    p.add_argument("--backend", default=None,
                   help="fastconv backend: auto, cython, numba or numpy (default: auto)")
    p.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--repeat", type=int, default=5,
                   help="timed runs per step after one warm-up; the median is printed "
                        "(default: 5)")
    p.add_argument("--show-kernel", action="store_true",
                   help="also draw the kernel (values on its cells) next to the input")
    p.add_argument("--list-kernels", action="store_true",
                   help="list the built-in kernels and exit")
    return p


def _parse_size(text):
    if text is None:
        return None
    parts = text.lower().split("x")
    try:
        dims = [int(v) for v in parts]
    except ValueError:
        raise ValueError(f"--size must be N or HxW (e.g. 400 or 300x400); got {text!r}.") from None
    if len(dims) == 1:
        return dims[0]
    if len(dims) == 2:
        return tuple(dims)
    raise ValueError(f"--size must be N or HxW; got {text!r}.")


def _timed(fn, repeat):
    """Run ``fn`` once to warm up, then ``repeat`` times; return (result, median seconds)."""
    result = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return result, statistics.median(times) if times else float("nan")


def _ms(seconds):
    return f"{seconds * 1e3:9.3f} ms"


def main(argv=None):
    """Run ``fastconv demo``; returns the exit status (0 on success)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help or a usage error: argparse has printed why
        return exc.code if isinstance(exc.code, int) else 2
    if args.list_kernels:
        for name, text in _kernels.describe().items():
            print(f"{name:18s} {text}")
        return 0
    if args.repeat < 0 or args.pool < 1:
        print("fastconv demo: --repeat must be >= 0 and --pool >= 1.", file=sys.stderr)
        return 2
    try:
        from . import viz
        size = _parse_size(args.size)
        kernel = _kernels.load(args.kernel)
        image = viz.load_image(args.image, size=size)
        n_threads = resolve_num_threads(args.threads)
        backend_name, _ = resolve(args.backend)
    except (ValueError, KeyError, FileNotFoundError, TypeError, BackendUnavailableError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"fastconv demo: {msg}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"fastconv demo: {exc}", file=sys.stderr)
        return 1

    kw = {"backend": args.backend, "num_threads": n_threads}
    x = np.ascontiguousarray(image)[None, :, :, None]
    w = kernel[:, :, None, None]
    where = "built-in" if args.image in viz.sample_names() else "file"
    print(f"fastconv demo: image {args.image!r} ({where}), {image.shape[0]}x{image.shape[1]} "
          f"grayscale float32; kernel {args.kernel!r} {kernel.shape[0]}x{kernel.shape[1]}; "
          f"backend {backend_name}, {n_threads} thread(s)")
    print(f"  timings: median of {args.repeat} runs after a warm-up call")
    try:
        filtered, t_filter = _timed(lambda: conv2d(x, w, 1, "SAME", **kw), args.repeat)
        detected, t_detect = _timed(lambda: relu(filtered, **kw), args.repeat)
        condensed, t_condense = _timed(lambda: max_pool2d(detected, args.pool, **kw),
                                       args.repeat)
    except ValueError as exc:
        print(f"fastconv demo: {exc}", file=sys.stderr)
        return 2
    rows = [("filter", "conv2d, strides 1, SAME", x.shape, filtered.shape, t_filter),
            ("detect", "relu", filtered.shape, detected.shape, t_detect),
            ("condense", f"max_pool2d {args.pool}x{args.pool}", detected.shape, condensed.shape,
             t_condense)]
    for step, op, a, b, t in rows:
        print(f"  {step:9s} {op:26s} {str(a):18s} -> {str(b):18s} {_ms(t)}")
    positive = float(np.mean(detected > 0))
    print(f"  detect kept {positive:.1%} of the pixels (the rest were <= 0)")
    try:
        viz.show_extraction(image, kernel, pool_size=args.pool, padding="SAME",
                                  include_kernel=args.show_kernel, kernel_title=args.kernel,
                                  path=args.out, **kw)
    except ImportError as exc:
        print(f"fastconv demo: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"fastconv demo: cannot write {args.out!r}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
