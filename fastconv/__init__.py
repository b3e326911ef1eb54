"""fastconv: fast CPU conv2d, relu and max pooling for NumPy arrays.

Exact ``tf.nn`` semantics at the top level and in :mod:`fastconv.nn`;
``torch.nn.functional`` semantics (NCHW, OIHW) in :mod:`fastconv.functional`.
Kernels come from interchangeable backends (``"cython"``, ``"numba"``, and the
NumPy reference ``"numpy"``), chosen per call or per process.
"""
from ._version import __version__
from ._backends import (BackendUnavailableError, available_backends, backends, get_backend,
                        set_backend, use_backend, warmup)
from ._config import config, show_config
from ._ops import conv2d, im2col, max_pool2d, relu
from ._backward import (col2im, conv2d_backward, conv2d_transpose, max_pool2d_backward,
                        max_pool2d_with_argmax, relu_backward)
from ._shapes import explicit_padding, output_shape
from ._threads import get_num_threads, set_num_threads
from . import functional, kernels, models, nn, viz

__all__ = [
    "__version__", "conv2d", "relu", "max_pool2d", "im2col", "output_shape",
    "conv2d_backward", "relu_backward", "max_pool2d_with_argmax", "max_pool2d_backward",
    "col2im", "conv2d_transpose",
    "explicit_padding", "backends", "available_backends", "set_backend", "get_backend",
    "use_backend", "BackendUnavailableError", "set_num_threads", "get_num_threads",
    "show_config", "config", "warmup", "nn", "functional", "kernels", "models", "viz",
]
