"""The compiled backend ("cython"): its driver (:mod:`.driver`) and the extension
modules built from ``src_cython/`` (``_conv_direct``, ``_im2col_gemm``, ``_relu``,
``_pool``, ``_im2col``, ``_build_info``)."""
