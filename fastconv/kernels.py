"""The named 3x3 kernels that convolution lessons draw and apply.

A kernel is a small array of numbers; a convolution (strictly, a
cross-correlation: the kernel is *not* flipped, as in every deep-learning
framework) slides it over an image and writes, at every pixel, the weighted
sum of that pixel and its neighbours.  What the output accentuates matches
the shape of the kernel's positive numbers.

Every kernel is a read-only ``float32`` array of shape ``(3, 3)``, available
as a module constant (``EDGE``, ``SHARPEN``...) and by name::

    >>> from fastconv import kernels
    >>> kernels.names()[:3]
    ['identity', 'edge', 'outline']
    >>> kernels.get("edge")            # a writeable copy
    array([[-1., -1., -1.],
           [-1.,  8., -1.],
           [-1., -1., -1.]], dtype=float32)
    >>> kernels.as_filters("edge").shape   # HWIO, ready for fastconv.conv2d
    (3, 3, 1, 1)

Sign conventions of the Sobel kernels follow scikit-image's ``sobel_h`` and
``sobel_v`` (without their 1/4 scale): ``SOBEL_HORIZONTAL`` responds to
*horizontal* edges (brightness changing from row to row) and is positive where
the image is brighter above than below; ``SOBEL_VERTICAL`` responds to vertical
edges and is positive where the image is brighter on the left.  The
directional ``BOTTOM_SOBEL``, ``TOP_SOBEL``, ``LEFT_SOBEL`` and
``RIGHT_SOBEL`` are positive where the named side is the brighter one.
"""
from pathlib import Path

import numpy as np

__all__ = [
    "IDENTITY", "EDGE", "OUTLINE", "SOBEL_HORIZONTAL", "SOBEL_VERTICAL", "BOTTOM_SOBEL",
    "TOP_SOBEL", "LEFT_SOBEL", "RIGHT_SOBEL", "EMBOSS", "SHARPEN", "BLUR", "BOX_BLUR",
    "names", "get", "load", "as_filters", "describe",
]


def _const(rows, scale=1.0):
    arr = np.array(rows, dtype=np.float64) * scale
    arr = arr.astype(np.float32)
    arr.setflags(write=False)
    return arr


#: leaves the image unchanged (a 1 in the centre)
IDENTITY = _const([[0, 0, 0], [0, 1, 0], [0, 0, 0]])
#: the lesson's edge detector: 8 in the centre, -1 around; sums to 0
EDGE = _const([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]])
#: the same numbers as ``EDGE``, under the name image-kernel galleries use
OUTLINE = _const([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]])
#: horizontal edges; positive where the image is brighter above than below
SOBEL_HORIZONTAL = _const([[1, 2, 1], [0, 0, 0], [-1, -2, -1]])
#: vertical edges; positive where the image is brighter on the left
SOBEL_VERTICAL = _const([[1, 0, -1], [2, 0, -2], [1, 0, -1]])
#: horizontal edges; positive where the image is brighter below
BOTTOM_SOBEL = _const([[-1, -2, -1], [0, 0, 0], [1, 2, 1]])
#: horizontal edges; positive where the image is brighter above
TOP_SOBEL = _const([[1, 2, 1], [0, 0, 0], [-1, -2, -1]])
#: vertical edges; positive where the image is brighter on the left
LEFT_SOBEL = _const([[1, 0, -1], [2, 0, -2], [1, 0, -1]])
#: vertical edges; positive where the image is brighter on the right
RIGHT_SOBEL = _const([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
#: a relief effect lit from the bottom right; sums to 1
EMBOSS = _const([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
#: boosts the centre against its four neighbours; sums to 1
SHARPEN = _const([[0, -1, 0], [-1, 5, -1], [0, -1, 0]])
#: 3x3 Gaussian blur, binomial weights (1 2 1) x (1 2 1) / 16; sums to 1
BLUR = _const([[1, 2, 1], [2, 4, 2], [1, 2, 1]], 1 / 16)
#: 3x3 mean filter, every weight 1/9; sums to 1
BOX_BLUR = _const([[1, 1, 1], [1, 1, 1], [1, 1, 1]], 1 / 9)

_REGISTRY = {
    "identity": (IDENTITY, "leaves the image unchanged"),
    "edge": (EDGE, "the lesson's edge detector (8 in the centre, -1 around)"),
    "outline": (OUTLINE, "same numbers as 'edge'"),
    "sobel_horizontal": (SOBEL_HORIZONTAL, "horizontal edges, brighter above is positive"),
    "sobel_vertical": (SOBEL_VERTICAL, "vertical edges, brighter left is positive"),
    "bottom_sobel": (BOTTOM_SOBEL, "horizontal edges, brighter below is positive"),
    "top_sobel": (TOP_SOBEL, "horizontal edges, brighter above is positive"),
    "left_sobel": (LEFT_SOBEL, "vertical edges, brighter left is positive"),
    "right_sobel": (RIGHT_SOBEL, "vertical edges, brighter right is positive"),
    "emboss": (EMBOSS, "relief effect"),
    "sharpen": (SHARPEN, "sharpens (centre 5, -1 for the four neighbours)"),
    "blur": (BLUR, "3x3 Gaussian blur"),
    "box_blur": (BOX_BLUR, "3x3 mean filter"),
}


def _key(name):
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def names():
    """Names of the built-in kernels, in a teaching order.

    Returns
    -------
    list of str
    """
    return list(_REGISTRY)


def describe():
    """One line per built-in kernel: its name and what it does.

    Returns
    -------
    dict
        ``{name: description}``.
    """
    return {name: text for name, (_, text) in _REGISTRY.items()}


def get(name):
    """A built-in kernel by name, as a writeable ``float32`` copy.

    Parameters
    ----------
    name : str
        One of :func:`names`; case, hyphens and spaces are ignored
        (``"Bottom Sobel"`` and ``"bottom-sobel"`` both work).

    Returns
    -------
    ndarray of shape (3, 3), float32

    Raises
    ------
    KeyError
        For an unknown name; the message lists the known ones.
    TypeError
        If ``name`` is not a string.
    """
    if not isinstance(name, str):
        raise TypeError(f"kernel name must be a string; got {type(name).__name__}.")
    try:
        return _REGISTRY[_key(name)][0].copy()
    except KeyError:
        raise KeyError(f"unknown kernel {name!r}; known kernels: {', '.join(names())}.") from None


def _check_kernel_array(arr, source):
    arr = np.asarray(arr)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"kernel from {source} has dtype {arr.dtype}; expected real numbers.")
    if arr.ndim == 4 and arr.shape[2:] == (1, 1):
        arr = arr[:, :, 0, 0]
    if arr.ndim != 2 or min(arr.shape) < 1:
        raise ValueError(f"kernel from {source} must be a 2-D array (KH, KW) or HWIO "
                         f"(KH, KW, 1, 1); got shape {arr.shape}.")
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"kernel from {source} contains NaN or infinity.")
    return arr


def load(spec):
    """A kernel from a name, a ``.npy`` file, or an array.

    Parameters
    ----------
    spec : str, os.PathLike or array_like
        A built-in name (see :func:`names`), the path of a ``.npy`` file
        holding a 2-D ``(KH, KW)`` or ``(KH, KW, 1, 1)`` array, or such an
        array itself.

    Returns
    -------
    ndarray of shape (KH, KW), float32
    """
    if isinstance(spec, str) and not spec.lower().endswith(".npy"):
        return get(spec)
    if isinstance(spec, (str, Path)) or hasattr(spec, "__fspath__"):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"kernel file {str(path)!r} does not exist.")
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"kernel file {str(path)!r} is not a plain .npy array: {exc}") from exc
        return _check_kernel_array(arr, f"file {str(path)!r}")
    return _check_kernel_array(spec, "array")


def as_filters(kernel, channels=1):
    """A 2-D kernel as HWIO filters for :func:`fastconv.conv2d`.

    Parameters
    ----------
    kernel : str or array_like
        A name, ``.npy`` path or 2-D array (see :func:`load`).
    channels : int
        Number of input channels; the kernel is applied to each channel
        separately (shape ``(KH, KW, 1, channels)``, for ``groups=channels``).
        With the default 1 the shape is ``(KH, KW, 1, 1)``, as in the lesson.

    Returns
    -------
    ndarray of shape (KH, KW, 1, channels), float32
    """
    k = load(kernel)
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels < 1:
        raise ValueError(f"channels must be a positive integer; got {channels!r}.")
    return np.ascontiguousarray(np.repeat(k[:, :, None, None], int(channels), axis=3))
