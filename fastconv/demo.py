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
    fastconv demo --train --epochs 5 --out trained.png

With ``--train`` it trains instead a small convnet shaped like the lesson's
(convolution, pooling, convolution, pooling, two dense layers) on
scikit-learn's bundled 8x8 digits with :meth:`fastconv.models.Sequential.fit`,
prints the history and the held-out accuracy, and draws one PNG: the filters
the first layer learned, the activations they produce on one test digit, and
the loss and accuracy curves.
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
DEFAULT_TRAIN_OUT = "fastconv-train.png"


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
    t = p.add_argument_group("training (--train)")
    t.add_argument("--train", action="store_true",
                   help="train a small lesson-style convnet on scikit-learn's 8x8 digits and "
                        f"draw what it learned (default output: ./{DEFAULT_TRAIN_OUT})")
    t.add_argument("--epochs", type=int, default=5, help="training epochs (default: 5)")
    t.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    t.add_argument("--seed", type=int, default=0,
                   help="seed of the weights, the split and the shuffling (default: 0)")
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
    if args.train:
        return _train(args, argv)
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


def digits_model(seed=0):
    """The lesson's architecture scaled to 8x8 digits (conv, pool, conv, pool, dense, dense)."""
    from .models import Conv2D, Dense, Flatten, MaxPooling2D, Sequential
    return Sequential([
        Conv2D(16, 3, activation="relu", padding="same", input_shape=(8, 8, 1)),
        MaxPooling2D(2),
        Conv2D(32, 3, activation="relu", padding="same"),
        MaxPooling2D(2),
        Flatten(),
        Dense(64, activation="relu"),
        Dense(10, activation="softmax"),
    ], name="digits_convnet", seed=seed)


def _train(args, argv):
    """``fastconv demo --train``: fit the digits model, print the history, draw one PNG."""
    out = args.out if any(a in ("--out", "-o") or a.startswith("--out=") for a in argv) \
        else DEFAULT_TRAIN_OUT
    if args.epochs < 1 or args.batch_size < 1:
        print("fastconv demo: --epochs and --batch-size must be >= 1.", file=sys.stderr)
        return 2
    try:
        from . import datasets, viz
        from .models import Adam
        n_threads = resolve_num_threads(args.threads)
        backend_name, _ = resolve(args.backend)
        (x_train, y_train), (x_test, y_test) = datasets.load_digits(test_fraction=0.2,
                                                                    seed=args.seed)
        viz._import_optional("matplotlib", "drawing pictures")
    except (ValueError, TypeError, BackendUnavailableError) as exc:
        print(f"fastconv demo: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"fastconv demo: {exc}", file=sys.stderr)
        return 1
    model = digits_model(args.seed)
    model.compile(Adam(0.003), "sparse_categorical_crossentropy", ["accuracy"])
    print(f"fastconv demo --train: {len(x_train)} training and {len(x_test)} test digits "
          f"(8x8x1, scikit-learn); backend {backend_name}, {n_threads} thread(s)")
    model.summary()
    kw = {"backend": args.backend, "num_threads": n_threads}
    t0 = time.perf_counter()
    history = model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
                        verbose=1 if sys.stdout.isatty() else 2, **kw)
    seconds = time.perf_counter() - t0
    test_loss, test_acc = model.evaluate(x_test, y_test, **kw)
    print(f"history ({seconds:.1f} s):")
    for key, values in history.history.items():
        print(f"  {key:9s} " + " ".join(f"{v:.4f}" for v in values))
    print(f"test: loss {test_loss:.4f} - accuracy {test_acc:.4f}")
    digit = x_test[:1]
    maps = model.feature_maps(digit, **kw)
    try:
        _train_picture(model, history, digit, maps, int(y_test[0]), out)
    except OSError as exc:
        print(f"fastconv demo: cannot write {out!r}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


def _train_picture(model, history, digit, maps, label, path):
    """One PNG: first-layer filters, their activations on ``digit``, the training curves."""
    from . import viz
    kernels, name = viz.conv_filters(model)
    acts = maps[name][0]
    fig = viz._figure((15, 5.4))
    left, middle, right = fig.subfigures(1, 3, width_ratios=(1.0, 1.25, 0.9))
    n = len(kernels)
    cols = min(4, n)
    rows = -(-n // cols)
    for ax, k in zip(left.subplots(rows, cols, squeeze=False).ravel(), kernels):
        viz._draw_kernel(ax, k, True, 2, "Blues")
        for text in ax.texts:
            text.set_fontsize(6)
    left.suptitle(f"filters the first layer learned ({name}, 3x3)", fontsize=11)
    axes = middle.subplots(rows, cols + 1, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    axes[0, 0].imshow(digit[0, :, :, 0], cmap="gray")
    axes[0, 0].set_title(f"input: {label}", fontsize=9)
    for i in range(n):
        ax = axes[i // cols, 1 + i % cols]
        ax.imshow(acts[:, :, i], cmap="magma")
        ax.set_title(str(i), fontsize=8)
    middle.suptitle("their activations (after ReLU) on one test digit", fontsize=11)
    ax_loss, ax_acc = right.subplots(2, 1, sharex=True)
    epochs = [e + 1 for e in history.epoch]
    ax_loss.plot(epochs, history.history["loss"], "o-")
    ax_loss.set_ylabel("loss")
    ax_acc.plot(epochs, history.history["accuracy"], "o-", color="tab:green")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_xticks(epochs)
    right.suptitle("training curves", fontsize=11)
    fig.savefig(path, dpi=90)
    return fig


if __name__ == "__main__":
    sys.exit(main())
