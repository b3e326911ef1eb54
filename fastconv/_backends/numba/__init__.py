"""The Numba backend ("numba"): its driver (:mod:`.driver`), its kernels
(:mod:`.kernels`) and the one place for its compile options (:mod:`.options`).

Nothing here imports Numba: importing :mod:`.driver` does, and fails with
``ImportError`` (``name == "numba"``) when Numba is not installed."""
