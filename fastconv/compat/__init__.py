"""Drop-in adapters for the from-scratch NumPy deep-learning courses.

* :mod:`fastconv.compat.cs231n` -- the names and contracts of CS231n
  assignment 2's ``fast_layers`` and ``layer_utils`` (``conv_forward_fast``,
  ``max_pool_forward_fast``, ``conv_relu_pool_forward``, ...): NCHW arrays,
  ``conv_param``/``pool_param`` dicts, ``(out, cache)`` forwards and
  ``(dx, dw, db)`` backwards.
* :mod:`fastconv.compat.dlfs` -- *Deep Learning from Scratch*'s
  ``common.util.im2col``/``col2im`` (columns ordered channel, kernel row,
  kernel column) and its ``Convolution`` and ``Pooling`` layers.

Both run on the public fastconv ops, so they need no build step.  Neither is
imported by ``import fastconv``; import the one you need::

    from fastconv.compat import cs231n
"""
