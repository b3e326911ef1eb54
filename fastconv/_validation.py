"""Every check on user input, in one place.

Public functions call these helpers before any kernel runs, so a backend only
ever receives C-contiguous float32/float64 arrays of consistent shapes.  Each
helper raises ``TypeError`` or ``ValueError`` naming the parameter and what
was expected.
"""
import numbers
import operator

import numpy as np

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: the largest stride, dilation, window size or padding: the kernels take them as C ints
MAX_WINDOW_PARAM = 2**31 - 1


def _refuse_masked(value, name):
    """Masked arrays are refused: the kernels would silently compute on the masked data."""
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(f"{name} is a numpy.ma.MaskedArray; fastconv does not honour masks. "
                        f"Fill the masked entries first, e.g. {name}.filled(0), or pass "
                        f"{name}.data to ignore the mask explicitly.")


def _native(arr):
    """``arr`` in the machine's byte order (big-endian floats are converted, as any cast)."""
    if not arr.dtype.isnative:
        return arr.astype(arr.dtype.newbyteorder("="))
    return arr
DATA_FORMATS = ("NHWC", "NCHW")
ALGORITHMS = ("auto", "direct", "im2col")


def as_float_array(value, name):
    """Return ``value`` as an ndarray of dtype float32 or float64.

    Array-likes (lists, framework tensors) go through ``np.asarray``.  Any
    other dtype raises a ``TypeError`` that says how to convert.  Floats of
    the other byte order (``'>f4'`` on a little-endian machine) are converted
    to the native order, as filters are; masked arrays raise ``TypeError``.
    """
    if type(value) is np.ndarray and value.dtype in SUPPORTED_DTYPES:
        return value   # the common case (native float32/float64), without the checks below
    _refuse_masked(value, name)
    try:
        arr = np.asarray(value)
    except Exception as exc:  # a tensor that cannot be exported, a ragged list...
        raise TypeError(f"{name} must be array-like (a NumPy array, a list or a CPU tensor); "
                        f"np.asarray failed on {type(value).__name__}: {exc}") from exc
    if arr.dtype.kind == "f" and arr.dtype.newbyteorder("=") in SUPPORTED_DTYPES:
        arr = _native(arr)
    if arr.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"{name} has dtype {arr.dtype}; fastconv computes in float32 or float64 only. "
            f"Convert first, e.g. {name}.astype(np.float32) (for a uint8 image: "
            f"{name}.astype(np.float32) / 255)."
        )
    return arr


def _real_numbers(value, name, cast_to=None):
    """``np.asarray(value)`` when its dtype is int or float, else TypeError naming ``name``
    (and, with ``cast_to``, the dtype it would have been cast to)."""
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise TypeError(f"{name} must be array-like; np.asarray failed on "
                        f"{type(value).__name__}: {exc}") from exc
    if arr.dtype.kind not in "fiu":
        hint = "" if cast_to is None else \
            f" (it is cast to the input's dtype {np.dtype(cast_to)})"
        raise TypeError(f"{name} has dtype {arr.dtype}; expected real numbers{hint}.")
    return arr


def real_array(value, name, ndim=None):
    """``value`` as an ndarray of real numbers (any int or float dtype), else TypeError.

    With ``ndim``, an array of another rank raises ``ValueError`` naming ``name``.
    """
    arr = _real_numbers(value, name)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D; got shape {arr.shape}.")
    return arr


def cast_operand(value, name, dtype):
    """Return ``value`` (filters, bias) as an ndarray cast to ``dtype``.

    Real numbers of any dtype are accepted and cast; complex, object, string
    or boolean arrays raise ``TypeError``, and so do masked arrays.
    """
    if type(value) is np.ndarray and value.dtype == dtype and value.flags.c_contiguous \
            and value.ndim:
        return value   # the common case: nothing to convert (ascontiguousarray makes 0-D 1-D)
    _refuse_masked(value, name)
    arr = _real_numbers(value, name, dtype)
    return np.ascontiguousarray(arr, dtype=dtype)


def check_ndim(arr, ndim, name, layout):
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D ({layout}); got shape {arr.shape} "
                         f"({arr.ndim}-D).")


def check_data_format(data_format):
    if not isinstance(data_format, str) or data_format.upper() not in DATA_FORMATS:
        raise ValueError(f"data_format must be one of {DATA_FORMATS}; got {data_format!r}.")
    return data_format.upper()


def check_algorithm(algorithm):
    if algorithm is None:
        return "auto"
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}; got {algorithm!r}.")
    return algorithm


def positive_int(value, name, max_value=None):
    """Return ``value`` as a Python int >= 1 (and <= ``max_value`` when given)."""
    if type(value) is int and value >= 1 and (max_value is None or value <= max_value):
        return value   # the common case, without the ABC checks below
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {value!r} ({type(value).__name__}).")
    value = operator.index(value)
    if value < 1:
        raise ValueError(f"{name} must be >= 1; got {value}.")
    if max_value is not None and value > max_value:
        raise ValueError(f"{name} must be at most {max_value}; got {value}.")
    return value


def spatial_pair(value, name, data_format="NHWC", allow_none=False):
    """Read a TF-style spatial parameter (strides, dilations, ksize).

    Accepts an int, or a list of 1, 2 or 4 ints as ``tf.nn`` does; a 4-list
    is in ``data_format`` order and its batch and channel entries must be 1.
    Each value is at most :data:`MAX_WINDOW_PARAM`.  Returns ``(along H, along W)``.
    """
    if value is None and allow_none:
        return None
    if type(value) is int and 1 <= value <= MAX_WINDOW_PARAM:
        return value, value   # the common case, without the ABC checks below
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool):
        v = positive_int(value, name, MAX_WINDOW_PARAM)
        return v, v
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{name} must be an int or a list of 1, 2 or 4 ints; "
                        f"got {value!r}.") from None
    if len(items) == 1:
        v = positive_int(items[0], name, MAX_WINDOW_PARAM)
        return v, v
    if len(items) == 2:
        return positive_int(items[0], name, MAX_WINDOW_PARAM), positive_int(items[1], name, MAX_WINDOW_PARAM)
    if len(items) == 4:
        vals = [positive_int(v, name, MAX_WINDOW_PARAM) for v in items]
        if data_format == "NHWC":
            n, h, w, c = vals
        else:
            n, c, h, w = vals
        if n != 1 or c != 1:
            raise ValueError(f"{name}={items!r}: the batch and channel entries of a 4-element "
                             f"{name} must be 1 ({data_format} order).")
        return h, w
    raise ValueError(f"{name} must be an int or a list of 1, 2 or 4 ints; got {len(items)} "
                     f"elements: {value!r}.")


def check_out(out, shape, dtype, name="out", inputs=(), allow_alias=None):
    """Check a user-supplied output array.

    ``out`` must be an ndarray of exactly ``shape`` and ``dtype``, C-contiguous
    and writeable, and must not overlap any array in ``inputs`` -- except that
    it may *be* ``allow_alias`` (same memory, same layout) for in-place ops.
    """
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray; got {type(out).__name__}.")
    _refuse_masked(out, name)
    if out.shape != tuple(shape):
        raise ValueError(f"{name} has shape {out.shape}; expected {tuple(shape)}.")
    if out.dtype != dtype:
        raise ValueError(f"{name} has dtype {out.dtype}; expected {np.dtype(dtype)} "
                         f"(the input's dtype).")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous; got strides {out.strides}. "
                         f"Pass np.empty(shape, dtype) or use the returned array.")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only.")
    for arr in inputs:
        if arr is None:
            continue
        if allow_alias is not None and arr is allow_alias and _same_memory(out, arr):
            continue
        if np.may_share_memory(out, arr):
            raise ValueError(f"{name} overlaps an input array; pass a separate buffer.")
    return out


def _same_memory(a, b):
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.strides == b.strides and a.shape == b.shape)


def check_activation(activation):
    """Whether an op fuses a ReLU: ``activation`` is None or 'relu' (any case)."""
    if activation is None:
        return False
    if isinstance(activation, str) and activation.lower() == "relu":
        return True
    raise ValueError(f"activation must be None or 'relu'; got {activation!r}.")


def check_layer_activation(activation, names, where):
    """The canonical name of a layer activation in ``names`` (None means "linear").

    Raises ValueError naming ``where`` for any other value.
    """
    if activation is None:
        return "linear"
    name = activation
    if callable(activation) and not isinstance(activation, str):
        name = getattr(activation, "__name__", None)
    if isinstance(name, str) and name.lower() in names:
        return name.lower()
    raise ValueError(f"{where}: unsupported activation {activation!r}; fastconv.models supports "
                     f"{', '.join(names)} (and None for linear).")
