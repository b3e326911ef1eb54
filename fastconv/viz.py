"""Teaching pictures without TensorFlow: kernels, filter -> detect -> condense, feature maps.

The lessons fastconv serves show a kernel as a small heat map with its values
written on the cells, apply it to a grayscale image (*filter*: a convolution
with 'SAME' padding), keep the positive part (*detect*: ReLU) and condense the
result (*condense*: 2x2 maximum pooling).  This module computes those steps
with :func:`fastconv.conv2d`, :func:`fastconv.relu` and
:func:`fastconv.max_pool2d`, and draws them with matplotlib::

    >>> from fastconv import viz
    >>> image = viz.load_image("car")          # built-in sample, float32 in [0, 1]
    >>> fig = viz.show_extraction(image, "edge", path="extraction.png")
    >>> fig = viz.show_kernel("edge", path="kernel.png")

matplotlib and Pillow are the optional ``viz`` extra (``pip install
fastconv[viz]``); they are imported only when a picture is drawn or a file is
read, and :func:`extract` works without them.  Figures are made without
:mod:`matplotlib.pyplot` (rendered by the non-interactive Agg canvas, so no
display is needed and nothing accumulates in pyplot's figure list) unless
your program already imported pyplot, in which case they are pyplot figures
that ``plt.show()`` displays.  In Jupyter the returned Figure displays itself.

Built-in sample images (drawn by the project with NumPy, shipped in the
package; see :func:`sample_names`) are used when no image is given.
"""
import importlib
import math
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import kernels as _kernels
from ._ops import conv2d, max_pool2d, relu

__all__ = ["load_image", "sample_names", "sample_path", "extract", "Extraction", "show_kernel",
           "show_extraction", "show_feature_maps", "show_filters", "conv_filters"]

_INSTALL_HINT = "pip install fastconv[viz]"
_SAMPLES = ("car", "shapes")
#: ITU-R BT.601 luma weights, the ones Pillow's convert("L") uses
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# --------------------------------------------------------------------------- optional imports
def _import_optional(module, what):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{what} needs {module.split('.')[0]}, which is not installed: "
                          f"`{_INSTALL_HINT}` (or install it directly).") from exc


def _pil_image():
    return _import_optional("PIL.Image", "reading images")


def _figure(figsize):
    """A new Figure: pyplot's if the program uses pyplot, else a bare Agg-backed Figure."""
    _import_optional("matplotlib", "drawing pictures")
    if "matplotlib.pyplot" in sys.modules:
        return sys.modules["matplotlib.pyplot"].figure(figsize=figsize)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path, dpi):
    if path is not None:
        fig.savefig(Path(path), dpi=dpi, bbox_inches="tight")
    return fig


# --------------------------------------------------------------------------- images
def sample_names():
    """Names of the built-in sample images (for :func:`load_image`).

    Returns
    -------
    list of str
    """
    return list(_SAMPLES)


def sample_path(name="car"):
    """Path of a built-in sample image's PNG file inside the installed package."""
    if not isinstance(name, str) or name not in _SAMPLES:
        raise ValueError(f"unknown sample image {name!r}; built-in samples: "
                         f"{', '.join(_SAMPLES)}.")
    return Path(__file__).resolve().parent / "data" / f"{name}.png"


def _parse_size(size):
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (size, size)
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be an int or a (height, width) pair; got {size!r}.") from None
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive; got {size!r}.")
    return h, w


def load_image(path_or_name=None, size=None, *, grayscale=True):
    """Read a PNG/JPEG file (or a built-in sample) as float32 in [0, 1].

    Parameters
    ----------
    path_or_name : str or os.PathLike, optional
        A built-in sample name (:func:`sample_names`; default ``"car"``) or
        the path of any image file Pillow can read.
    size : int or (height, width), optional
        Resize to this size (bilinear); an int gives a square image.
    grayscale : bool
        Convert to one channel (shape ``(H, W)``, Pillow's luma), as the
        lesson does; otherwise RGB ``(H, W, 3)``.

    Returns
    -------
    ndarray, float32
        ``(H, W)`` or ``(H, W, 3)`` with values in [0, 1].
    """
    if path_or_name is None:
        path_or_name = "car"
    if isinstance(path_or_name, str) and path_or_name in _SAMPLES:
        path = sample_path(path_or_name)
    else:
        path = Path(path_or_name)
        if not path.is_file():
            raise FileNotFoundError(f"image {str(path)!r} not found (built-in samples: "
                                    f"{', '.join(_SAMPLES)}).")
    hw = _parse_size(size)
    Image = _pil_image()
    try:
        with Image.open(path) as img:
            img = img.convert("L" if grayscale else "RGB")
            if hw is not None:
                img = img.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.float32)
    except OSError as exc:  # PIL.UnidentifiedImageError is an OSError
        raise ValueError(f"could not read {str(path)!r} as an image: {exc}") from exc
    arr /= 255.0
    return arr


def _as_gray(image, name="image"):
    """Any lesson-style image as a 2-D float32 array (no rescaling of floats)."""
    if image is None or isinstance(image, (str, Path)):
        return load_image(image)
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.dtype.kind in "fiub":
        arr = arr.astype(np.float32, copy=False)
    else:
        raise TypeError(f"{name} has dtype {arr.dtype}; expected real numbers.")
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    elif arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[:, :, :3] @ _LUMA
    if arr.ndim != 2 or min(arr.shape) < 1:
        raise ValueError(f"{name} must be a grayscale (H, W), (H, W, 1) or (1, H, W, 1) array "
                         f"or RGB (H, W, 3); got shape {np.shape(image)}.")
    return arr


# --------------------------------------------------------------------------- the pipeline
class Extraction(NamedTuple):
    """The lesson's three steps on one grayscale image (all 2-D float32)."""
    image: np.ndarray
    kernel: np.ndarray
    filtered: np.ndarray
    detected: np.ndarray
    condensed: np.ndarray


def extract(image=None, kernel="edge", *, pool_size=2, padding="SAME", backend=None,
            num_threads=None):
    """Filter, detect and condense one grayscale image, as the lesson does.

    ``filtered = conv2d(image, kernel, strides=1, padding)``,
    ``detected = relu(filtered)``,
    ``condensed = max_pool2d(detected, pool_size)`` (windows = strides, 'VALID').

    Parameters
    ----------
    image : array_like or str, optional
        2-D grayscale, ``(H, W, 1)``, ``(1, H, W, 1)`` or RGB (converted to
        luma); uint8 is scaled to [0, 1]; a str/path is read with
        :func:`load_image`; default the built-in car.
    kernel : str or array_like
        A name from :func:`fastconv.kernels.names`, a ``.npy`` path or a 2-D
        array.
    pool_size : int
        Side of the max-pooling window (and its stride).
    padding : {'SAME', 'VALID'}
        Padding of the convolution (TensorFlow rules).
    backend, num_threads
        As for :func:`fastconv.conv2d`.

    Returns
    -------
    Extraction
        ``(image, kernel, filtered, detected, condensed)``.
    """
    img = _as_gray(image)
    k = _kernels.load(kernel)
    x = np.ascontiguousarray(img)[None, :, :, None]
    filtered = conv2d(x, k[:, :, None, None], strides=1, padding=padding, backend=backend,
                      num_threads=num_threads)
    detected = relu(filtered, backend=backend, num_threads=num_threads)
    condensed = max_pool2d(detected, pool_size, backend=backend, num_threads=num_threads)
    return Extraction(img, k, filtered[0, :, :, 0], detected[0, :, :, 0], condensed[0, :, :, 0])


# --------------------------------------------------------------------------- pictures
def _format_value(value, digits):
    if digits is None:
        text = f"{float(value):.4g}"
    else:
        text = f"{float(value):.{int(digits)}f}"
    if text.startswith("-") and float(text) == 0:  # no "-0" labels
        text = text[1:]
    return text


def _draw_kernel(ax, kernel, label, digits, cmap):
    import matplotlib as mpl
    from matplotlib.colors import Normalize

    k = np.asarray(kernel, dtype=np.float64)
    lo, hi = float(k.min()), float(k.max())
    if lo == hi:  # a constant kernel: centre it in the colour map
        lo, hi = lo - 1.0, hi + 1.0
    norm = Normalize(lo, hi)
    colormap = mpl.colormaps[cmap] if isinstance(cmap, str) else cmap
    ax.imshow(k, cmap=colormap, norm=norm)
    ax.set_xticks([])
    ax.set_yticks([])
    if label:
        size = max(6, 14 - 2 * max(k.shape[0] - 3, 0))
        for (i, j), v in np.ndenumerate(k):
            r, g, b, _ = colormap(norm(v))
            luminance = 0.299 * r + 0.587 * g + 0.114 * b
            ax.text(j, i, _format_value(v, digits), ha="center", va="center", fontsize=size,
                    color="white" if luminance < 0.5 else "black")


def show_kernel(kernel, label=True, digits=None, *, cmap="Blues", title=None, ax=None,
                path=None, dpi=100):
    """Draw a kernel as a small heat map with its values written on the cells.

    Parameters
    ----------
    kernel : str or array_like
        A name (:func:`fastconv.kernels.names`), a ``.npy`` path, a 2-D array
        or HWIO ``(KH, KW, 1, 1)`` filters.
    label : bool
        Write each value on its cell, in white on dark cells and black on
        light ones.
    digits : int, optional
        Decimal places of the labels; default: up to 4 significant digits.
    cmap : str or Colormap
        Default ``'Blues'``, as the lesson.
    title : str, optional
        Axes title; default the kernel's name when given by name.
    ax : matplotlib Axes, optional
        Draw into this axes instead of a new figure.
    path : str or os.PathLike, optional
        Also save the figure there (PNG by the file's extension).
    dpi : int

    Returns
    -------
    matplotlib.figure.Figure
    """
    k = _kernels.load(kernel)
    if title is None and isinstance(kernel, str) and not kernel.lower().endswith(".npy"):
        title = kernel
    if ax is None:
        side = 0.6 * max(k.shape) + 0.6
        fig = _figure((side * k.shape[1] / max(k.shape), side * k.shape[0] / max(k.shape)))
        ax = fig.add_subplot()
    else:
        _import_optional("matplotlib", "drawing pictures")
        fig = ax.figure
    _draw_kernel(ax, k, label, digits, cmap)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path, dpi)


def show_extraction(image=None, kernel="edge", *, pool_size=2, padding="SAME",
                    include_kernel=False, kernel_title=None, cmap="magma",
                    titles=("Input", "Filter", "Detect", "Condense"),
                    figsize=None, path=None, dpi=100, backend=None, num_threads=None):
    """Draw image, filter, detect and condense side by side (the lesson's picture).

    The image is drawn in gray and the three results with ``cmap`` ('magma'
    as in the lesson), axes off; each panel's title gives its shape.

    Parameters
    ----------
    image, kernel, pool_size, padding, backend, num_threads
        As for :func:`extract`.
    include_kernel : bool
        Add the kernel (drawn as by :func:`show_kernel`) after the input.
    kernel_title : str, optional
        Title of that panel; default the kernel's name, or "kernel".
    cmap : str
        Colour map of the filter, detect and condense panels.
    titles : sequence of 4 str
        Panel titles.
    figsize : (float, float), optional
    path : str or os.PathLike, optional
        Also save the figure there.
    dpi : int

    Returns
    -------
    matplotlib.figure.Figure
    """
    if len(titles) != 4:
        raise ValueError(f"titles must hold 4 strings (input, filter, detect, condense); "
                         f"got {len(titles)}.")
    steps = extract(image, kernel, pool_size=pool_size, padding=padding, backend=backend,
                    num_threads=num_threads)
    panels = [(titles[0], steps.image, "gray")]
    panels += [(t, a, cmap) for t, a in zip(titles[1:], steps[2:])]
    n = len(panels) + bool(include_kernel)
    fig = _figure(figsize or (3.2 * n, 3.4))
    axes = fig.subplots(1, n)
    order = list(range(n))
    if include_kernel:
        _draw_kernel(axes[1], steps.kernel, True, None, "Blues")
        if kernel_title is None:
            named = isinstance(kernel, str) and not kernel.lower().endswith(".npy")
            kernel_title = kernel if named else "kernel"
        axes[1].set_title(kernel_title, fontsize=11)
        order = [0] + list(range(2, n))
    for ax_index, (title, arr, colormap) in zip(order, panels):
        ax = axes[ax_index]
        ax.imshow(arr, cmap=colormap)
        ax.set_title(f"{title}\n{arr.shape[0]}x{arr.shape[1]}", fontsize=11)
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, path, dpi)


def _maps_list(maps, max_maps):
    """Feature maps as a list of 2-D arrays plus default titles."""
    if isinstance(maps, dict):
        items = list(maps.items())
        arrays = [np.asarray(v) for _, v in items]
        titles = [str(k) for k, _ in items]
    elif isinstance(maps, (list, tuple)):
        arrays = [np.asarray(m) for m in maps]
        titles = [str(i) for i in range(len(arrays))]
    else:
        arr = np.asarray(maps)
        if arr.ndim == 4:
            if arr.shape[0] != 1:
                raise ValueError(f"maps has a batch of {arr.shape[0]}; pass one image's maps, "
                                 f"e.g. maps[0] (shape {arr.shape[1:]}).")
            arr = arr[0]
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3:
            raise ValueError(f"maps must be (H, W, C), (1, H, W, C), (H, W) or a list of 2-D "
                             f"arrays; got shape {arr.shape}.")
        arrays = [arr[:, :, c] for c in range(arr.shape[2])]
        titles = [str(c) for c in range(arr.shape[2])]
    for i, a in enumerate(arrays):
        if a.ndim == 3 and a.shape[2] == 1:
            arrays[i] = a = a[:, :, 0]
        if a.ndim == 4 and a.shape[0] == 1 and a.shape[3] == 1:
            arrays[i] = a = a[0, :, :, 0]
        if a.ndim != 2:
            raise ValueError(f"feature map {titles[i]!r} must be 2-D; got shape {a.shape}.")
    if not arrays:
        raise ValueError("maps is empty; nothing to draw.")
    total = len(arrays)
    if max_maps is not None and total > max_maps:
        arrays, titles = arrays[:max_maps], titles[:max_maps]
    return arrays, titles, total


def show_feature_maps(maps, *, ncols=None, cmap="magma", titles=None, max_maps=64,
                      suptitle=None, figsize=None, path=None, dpi=100):
    """Draw feature maps (activations) as a grid, one panel per channel.

    Parameters
    ----------
    maps : array_like or list or dict
        ``(H, W, C)`` or ``(1, H, W, C)`` activations (e.g. a layer's entry of
        :meth:`fastconv.models.Sequential.feature_maps`), a list of 2-D
        arrays, or a ``{title: 2-D array}`` dict.
    ncols : int, optional
        Panels per row; default about the square root of their number (<= 8).
    cmap : str
        Default 'magma'.
    titles : sequence of str, optional
        One per panel; default the channel index (or the dict keys).
    max_maps : int or None
        Draw at most this many (the first ones); the title says how many
        were left out.
    suptitle : str, optional
    figsize : (float, float), optional
    path : str or os.PathLike, optional
        Also save the figure there.
    dpi : int

    Returns
    -------
    matplotlib.figure.Figure
    """
    arrays, default_titles, total = _maps_list(maps, max_maps)
    titles = default_titles if titles is None else [str(t) for t in titles][:len(arrays)]
    if len(titles) != len(arrays):
        raise ValueError(f"titles has {len(titles)} entries for {len(arrays)} feature maps.")
    n = len(arrays)
    if ncols is None:
        ncols = min(8, math.ceil(math.sqrt(n)))
    elif isinstance(ncols, bool) or not isinstance(ncols, (int, np.integer)) or ncols < 1:
        raise ValueError(f"ncols must be a positive integer; got {ncols!r}.")
    ncols = min(int(ncols), n)
    nrows = math.ceil(n / ncols)
    fig = _figure(figsize or (1.6 * ncols + 0.4, 1.6 * nrows + (0.6 if suptitle or total > n
                                                               else 0.2)))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, arr, title in zip(axes, arrays, titles):
        ax.imshow(arr, cmap=cmap)
        ax.set_title(title, fontsize=8)
    heading = suptitle or ""
    if total > n:
        heading = (heading + "\n" if heading else "") + f"first {n} of {total} maps"
    if heading:
        fig.suptitle(heading, fontsize=10)
    fig.tight_layout()
    return _save(fig, path, dpi)


# --------------------------------------------------------------------------- learned filters
def _conv_layer(model, layer):
    """The Conv2D of ``model`` chosen by ``layer`` (name, index or None for the first)."""
    convs = [lay for lay in model.layers if type(lay).__name__ == "Conv2D"]
    if isinstance(layer, str):
        chosen = model.get_layer(layer)
    elif layer is None:
        if not convs:
            raise ValueError(f"model_or_weights: model {model.name!r} has no Conv2D layer.")
        chosen = convs[0]
    elif isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
        chosen = model.layers[int(layer)]
    else:
        raise TypeError(f"layer must be a layer name, an index or None; got {layer!r}.")
    if type(chosen).__name__ != "Conv2D":
        raise ValueError(f"layer: {chosen.name!r} is a {type(chosen).__name__}, not a Conv2D; "
                         f"Conv2D layers: {', '.join(c.name for c in convs) or 'none'}.")
    return chosen


def conv_filters(model_or_weights, layer=None, *, channel=0):
    """The learned kernels of a convolution as a list of 2-D arrays, one per filter.

    Parameters
    ----------
    model_or_weights : Sequential, Conv2D, ndarray or list of ndarray
        A :class:`fastconv.models.Sequential` (or a Keras model with the same
        ``layers``/``get_weights`` interface), one of its ``Conv2D`` layers,
        HWIO filters ``(KH, KW, C_in, filters)``, a 2-D kernel, or a
        ``get_weights()`` list (its first 4-D array is used).
    layer : str or int, optional
        With a model: the Conv2D layer's name or index; default the first
        Conv2D.
    channel : int or 'mean'
        Which input channel of each filter to show (the first layer of a
        grayscale model has only channel 0), or the mean over channels.

    Returns
    -------
    kernels : list of ndarray
        ``filters`` arrays of shape ``(KH, KW)``, float32.
    name : str or None
        The layer's name when known.
    """
    name = None
    obj = model_or_weights
    if hasattr(obj, "layers") and hasattr(obj, "get_layer"):
        obj = _conv_layer(obj, layer)
    elif layer is not None:
        raise ValueError("layer is only meaningful with a model; got weights.")
    if hasattr(obj, "get_weights") and not isinstance(obj, np.ndarray):
        if type(obj).__name__ != "Conv2D":
            raise ValueError(f"model_or_weights: {type(obj).__name__} is not a Conv2D layer.")
        name = obj.name
        obj = obj.get_weights()
    if isinstance(obj, (list, tuple)):
        arrays = [np.asarray(w) for w in obj]
        four = [w for w in arrays if w.ndim == 4]
        if not four:
            raise ValueError("model_or_weights: the weight list holds no 4-D (HWIO) kernel.")
        obj = four[0]
    w = np.asarray(obj)
    if w.dtype.kind not in "fiu":
        raise TypeError(f"model_or_weights: weights have dtype {w.dtype}; expected real numbers.")
    if w.ndim == 2:
        w = w[:, :, None, None]
    if w.ndim != 4:
        raise ValueError(f"model_or_weights: expected HWIO filters (KH, KW, C_in, filters) or a "
                         f"2-D kernel; got shape {w.shape}.")
    w = w.astype(np.float32)
    if isinstance(channel, str):
        if channel != "mean":
            raise ValueError(f"channel must be an input-channel index or 'mean'; got "
                             f"{channel!r}.")
        planes = w.mean(axis=2)
    elif isinstance(channel, (int, np.integer)) and not isinstance(channel, bool):
        if not 0 <= channel < w.shape[2]:
            raise ValueError(f"channel must be in [0, {w.shape[2]}) for filters with "
                             f"{w.shape[2]} input channel(s); got {channel}.")
        planes = w[:, :, int(channel), :]
    else:
        raise TypeError(f"channel must be an int or 'mean'; got {channel!r}.")
    return [planes[:, :, o] for o in range(planes.shape[2])], name


def show_filters(model_or_weights, layer=None, *, channel=0, max_filters=64, ncols=None,
                 label=None, digits=2, cmap="Blues", suptitle=None, figsize=None, path=None,
                 dpi=100):
    """Draw the filters a Conv2D layer learned: a grid of small heat maps, one per kernel.

    This is the lesson's "look at the filters it learned" picture; draw the
    activations they produce with :func:`show_feature_maps` of
    :meth:`fastconv.models.Sequential.feature_maps`.

    Parameters
    ----------
    model_or_weights, layer, channel
        As for :func:`conv_filters`: a model (first Conv2D by default), a
        Conv2D layer, HWIO filters or a ``get_weights()`` list.
    max_filters : int or None
        Draw at most this many (the first ones); the title says how many
        were left out.
    ncols : int, optional
        Panels per row; default about the square root of their number (<= 8).
    label : bool, optional
        Write each value on its cell (white on dark cells, black on light);
        default for kernels of at most 3x3.
    digits : int
        Decimal places of those values.
    cmap : str
        Default ``'Blues'``, as the lesson draws kernels.
    suptitle : str, optional
        Default: the layer's name and the filters' shape.
    figsize : (float, float), optional
    path : str or os.PathLike, optional
        Also save the figure there.
    dpi : int

    Returns
    -------
    matplotlib.figure.Figure
    """
    kernels, name = conv_filters(model_or_weights, layer, channel=channel)
    total = len(kernels)
    if max_filters is not None:
        if isinstance(max_filters, bool) or not isinstance(max_filters, (int, np.integer)) \
                or max_filters < 1:
            raise ValueError(f"max_filters must be a positive integer or None; got "
                             f"{max_filters!r}.")
        kernels = kernels[:int(max_filters)]
    n = len(kernels)
    if ncols is None:
        ncols = min(8, math.ceil(math.sqrt(n)))
    elif isinstance(ncols, bool) or not isinstance(ncols, (int, np.integer)) or ncols < 1:
        raise ValueError(f"ncols must be a positive integer; got {ncols!r}.")
    ncols = min(int(ncols), n)
    nrows = math.ceil(n / ncols)
    kh, kw = kernels[0].shape
    if label is None:
        label = kh * kw <= 9
    if suptitle is None:
        where = f"{name}: " if name else ""
        which = "mean over input channels" if channel == "mean" else f"input channel {channel}"
        suptitle = f"{where}{total} filters {kh}x{kw} ({which})"
        if total > n:
            suptitle += f", first {n} shown"
    cell = 1.3 if label else 1.0
    fig = _figure(figsize or (cell * ncols + 0.4, cell * nrows + 0.6))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for i, (ax, k) in enumerate(zip(axes, kernels)):
        _draw_kernel(ax, k, label, digits, cmap)
        ax.axis("on")
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_title(str(i), fontsize=8)
    if label:  # _draw_kernel sizes text for one big kernel; shrink it for a grid
        for ax in axes[:n]:
            for text in ax.texts:
                text.set_fontsize(max(5, 9 - max(kh, kw)))
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return _save(fig, path, dpi)
