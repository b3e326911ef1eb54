"""fastconv's own backends as engines: the public ops, with a reused ``out=`` buffer.

The buffer is allocated as fastconv allocates an output when the caller
passes none (cache-line aligned), so a row times the op a user gets from
``fastconv.conv2d(x, w)``, without the allocation; the peers' own
allocators align their outputs too.
"""
import numpy as np

from ... import _ops
from ..suite import (BACKWARD_OPS, CS231N_OPS, backward_call, build_lesson_model,
                     cs231n_arrays, cs231n_call, cs231n_pack)
from . import Engine, Prepared, Unavailable


class FastconvEngine(Engine):
    """One fastconv backend, always with a reused ``out=`` buffer where the API has one."""
    kind = "fastconv"

    def __init__(self, backend):
        self.backend = backend
        self.name = f"fastconv:{backend}"

    def setup(self, threads):
        import fastconv
        if self.backend not in fastconv.available_backends():
            raise Unavailable(f"backend {self.backend!r} is not available")
        self.library = fastconv
        self.threads = threads

    def supports(self, case):
        return True

    def prepare(self, case, data):
        fc, b, n = self.library, self.backend, self.threads
        x = data["x"]
        k, s = (case.KH, case.KW), (case.SH, case.SW)
        if case.op in CS231N_OPS:
            return self._prepare_cs231n(case, data)
        if case.op in BACKWARD_OPS:
            return Prepared(lambda: backward_call(fc, case, data, backend=b, num_threads=n))
        if case.op == "conv2d":
            out = _ops._new_output(case.output_shape, np.dtype(case.dtype))
            w, g = data["w"], case.groups
            return Prepared(lambda: fc.conv2d(x, w, s, case.padding, groups=g, out=out,
                                              backend=b, num_threads=n))
        if case.op == "relu":
            out = _ops._new_output(x.shape, x.dtype)
            return Prepared(lambda: fc.relu(x, out=out, backend=b, num_threads=n))
        if case.op == "max_pool2d":
            out = _ops._new_output(case.output_shape, np.dtype(case.dtype))
            return Prepared(lambda: fc.max_pool2d(x, k, s, case.padding, out=out, backend=b,
                                                  num_threads=n))
        if case.op == "im2col":
            out = _ops._new_output(case.output_shape, np.dtype(case.dtype))
            return Prepared(lambda: fc.im2col(x, k, s, case.padding, out=out, backend=b,
                                              num_threads=n))
        if case.op == "model":
            model = fastconv_lesson_model(data["weights"])
            return Prepared(lambda: model.predict(x, batch_size=case.N, backend=b,
                                                  num_threads=n))
        if case.op == "train":
            from .training import fastconv_train_step
            return fastconv_train_step(case, data, b, n)
        raise ValueError(f"unknown op {case.op!r}")

    def _prepare_cs231n(self, case, data):
        """The course adapter's forward + backward, as a student's gradient check calls it:
        no backend or thread argument (the adapter has none), so the call runs under
        :func:`fastconv.use_backend` unless this backend is already the default."""
        from ... import _backends
        from ...compat import cs231n
        fc, backend = self.library, self.backend
        call = cs231n_call(cs231n, case, *cs231n_arrays(case, data))
        if _backends.resolve(None)[0] != backend:
            plain = call

            def call():
                with fc.use_backend(backend):
                    return plain()
        return Prepared(call, lambda res: cs231n_pack(*res))


def fastconv_lesson_model(weights):
    """The lesson model as a :class:`fastconv.models.Sequential` holding ``weights``."""
    from ... import models
    return build_lesson_model(models.Sequential, models.Input, models, weights)
