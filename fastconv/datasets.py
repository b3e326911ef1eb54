"""Data for the lessons: MNIST-style IDX files the user already has, and scikit-learn's digits.

Nothing here downloads.  :func:`load_fashion_mnist` and :func:`load_mnist`
read the four files MNIST and Fashion-MNIST ship as (IDX format, gzipped or
not) from a directory the user downloaded once::

    >>> from fastconv import datasets
    >>> (x_train, y_train), (x_test, y_test) = datasets.load_fashion_mnist("~/data/fashion")
    >>> x_train.shape, x_train.dtype
    ((60000, 28, 28, 1), dtype('float32'))

:func:`load_digits` returns scikit-learn's bundled 8x8 handwritten digits (no
files needed) in the same NHWC float32 layout, for training in seconds.
"""
import gzip
import os
from pathlib import Path

import numpy as np

__all__ = ["read_idx", "write_idx", "load_mnist", "load_fashion_mnist", "load_digits",
           "MNIST_FILES", "FASHION_MNIST_CLASSES"]

#: the four file names of the MNIST and Fashion-MNIST distributions (without ``.gz``)
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
#: Fashion-MNIST's class names, by label
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")

#: IDX type code -> big-endian dtype
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def _open(path):
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(2)
    return gzip.open(path, "rb") if head == _GZIP_MAGIC else open(path, "rb")


def read_idx(path):
    """Read one IDX file (gzipped or not) into a NumPy array.

    Parameters
    ----------
    path : str or os.PathLike
        An IDX file such as ``train-images-idx3-ubyte`` or its ``.gz``;
        compression is detected from the content, not the name.

    Returns
    -------
    ndarray
        The array in its stored type (uint8 for MNIST), native byte order.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When the file is not IDX: bad magic number, unknown type code, or
        fewer bytes than its header announces (the message names the file).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"path: IDX file {str(path)!r} not found.")
    try:
        with _open(path) as f:
            data = f.read()
    except (OSError, EOFError) as exc:  # a truncated or corrupt gzip stream
        raise ValueError(f"path: {path.name!r} could not be read as IDX: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"path: {path.name!r} is not an IDX file (its first bytes are not "
                         f"the IDX magic number 0x0000TTDD).")
    code, ndim = data[2], data[3]
    if code not in _IDX_TYPES:
        raise ValueError(f"path: {path.name!r} has unknown IDX type code 0x{code:02X}.")
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise ValueError(f"path: {path.name!r} has a truncated IDX header.")
    shape = tuple(int(v) for v in np.frombuffer(data, ">u4", ndim, 4))
    dtype = np.dtype(_IDX_TYPES[code])
    count = int(np.prod(shape, dtype=np.int64))
    start = 4 + 4 * ndim
    if len(data) - start < count * dtype.itemsize:
        raise ValueError(f"path: {path.name!r} is truncated: its header announces shape "
                         f"{shape} ({count * dtype.itemsize} bytes) but it holds "
                         f"{len(data) - start}.")
    arr = np.frombuffer(data, dtype, count, start).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def write_idx(path, array, compress=None):
    """Write an array as an IDX file (the inverse of :func:`read_idx`).

    Parameters
    ----------
    path : str or os.PathLike
    array : array_like
        uint8, int8, int16, int32, float32 or float64, at least 1-D.
    compress : bool, optional
        gzip the file; default: when ``path`` ends in ``.gz``.
    """
    arr = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_TYPES.items()}
    dtype = arr.dtype.newbyteorder("=")
    if dtype not in codes:
        raise ValueError(f"array: dtype {arr.dtype} has no IDX type code; use uint8, int8, "
                         f"int16, int32, float32 or float64.")
    if arr.ndim == 0 or arr.ndim > 255:
        raise ValueError(f"array: IDX stores 1 to 255 dimensions; got {arr.ndim}.")
    code = codes[dtype]
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    body = np.ascontiguousarray(arr, _IDX_TYPES[code]).tobytes()
    path = Path(path)
    if compress is None:
        compress = path.name.endswith(".gz")
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(header + body)


def _find(directory, stem):
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"),
                 stem.replace("-idx", ".idx") + ".gz"):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def load_mnist(path, *, normalize=True, channels=True):
    """Load MNIST-format data from the four standard IDX files in a directory.

    Parameters
    ----------
    path : str or os.PathLike
        A directory holding ``train-images-idx3-ubyte``,
        ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
        ``t10k-labels-idx1-ubyte``, each possibly gzipped (``.gz``).
        Nothing is downloaded.
    normalize : bool
        Return images as float32 in [0, 1] (``pixel / 255``); otherwise the
        stored uint8.
    channels : bool
        Add the channel axis: ``(N, 28, 28, 1)``, the NHWC layout
        :mod:`fastconv.models` trains on; otherwise ``(N, 28, 28)``.

    Returns
    -------
    ((x_train, y_train), (x_test, y_test))
        As ``keras.datasets.mnist.load_data()``; labels are uint8.

    Raises
    ------
    FileNotFoundError
        When ``path`` is not a directory or a file is missing (the message
        lists the expected file names).
    ValueError
        When a file is not IDX or images and labels disagree in number.
    """
    directory = Path(os.fspath(path)).expanduser()
    expected = ", ".join(MNIST_FILES)
    if not directory.is_dir():
        raise FileNotFoundError(f"path: {str(directory)!r} is not a directory; it should hold "
                                f"the four IDX files {expected} (each may end in .gz). "
                                f"fastconv never downloads them.")
    found = [_find(directory, stem) for stem in MNIST_FILES]
    missing = [stem for stem, f in zip(MNIST_FILES, found) if f is None]
    if missing:
        raise FileNotFoundError(f"path: {str(directory)!r} lacks {', '.join(missing)} (or "
                                f"their .gz); expected the four IDX files {expected}. "
                                f"fastconv never downloads them.")
    arrays = [read_idx(f) for f in found]
    out = []
    for (images, labels), (fi, fl) in zip((arrays[:2], arrays[2:]), (found[:2], found[2:])):
        if images.ndim != 3:
            raise ValueError(f"path: {fi.name!r} must hold (N, rows, cols) images; got shape "
                             f"{images.shape}.")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"path: {fl.name!r} holds {labels.shape} labels for "
                             f"{images.shape[0]} images in {fi.name!r}.")
        if normalize:
            images = images.astype(np.float32) / np.float32(255.0)
        if channels:
            images = images[..., None]
        out.append((images, labels))
    return tuple(out)


def load_fashion_mnist(path, *, normalize=True, channels=True):
    """Load Fashion-MNIST from the four IDX files in a directory (see :func:`load_mnist`).

    Fashion-MNIST uses MNIST's file names and format; class names are in
    :data:`FASHION_MNIST_CLASSES`.

    Parameters
    ----------
    path : str or os.PathLike
        The directory holding the four files (possibly gzipped).
    normalize, channels : bool
        As for :func:`load_mnist`.

    Returns
    -------
    ((x_train, y_train), (x_test, y_test))
    """
    return load_mnist(path, normalize=normalize, channels=channels)


def load_digits(*, test_fraction=0.0, seed=0):
    """scikit-learn's bundled 8x8 handwritten digits as NHWC float32 images in [0, 1].

    Parameters
    ----------
    test_fraction : float
        In ``[0, 1)``; when positive, hold out this fraction (a stratified
        random split drawn with ``seed``) and return two pairs.
    seed : int
        Seed of that split.

    Returns
    -------
    (x, y) or ((x_train, y_train), (x_test, y_test))
        ``x`` float32 ``(N, 8, 8, 1)`` (pixel values 0-16 divided by 16),
        ``y`` int64 labels 0-9; 1797 examples in all.

    Raises
    ------
    ImportError
        When scikit-learn is not installed (the message says how to install
        it).
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) \
            or not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be a number in [0, 1); got {test_fraction!r}.")
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:
        raise ImportError("load_digits needs scikit-learn, which is not installed: "
                          "`pip install scikit-learn` (or `pip install fastconv[test]`).") from exc
    bunch = sk_load_digits()
    x = (bunch.images.astype(np.float32) / np.float32(16.0))[..., None]
    y = bunch.target.astype(np.int64)
    if not test_fraction:
        return x, y
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        k = int(round(len(idx) * test_fraction))
        test[rng.choice(idx, k, replace=False)] = True
    return (x[~test], y[~test]), (x[test], y[test])
