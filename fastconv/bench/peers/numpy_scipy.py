"""NumPy as a user would write a convolution, and SciPy's image filter."""
import importlib

import numpy as np

from . import Engine, ImageFilterEngine, Prepared, import_library


class NumpyEngine(Engine):
    """Plain NumPy as a user would write it: im2col by strided view + one matmul."""
    name = "numpy"
    library = np

    def setup(self, threads):
        # BLAS threads are held by the runner's threadpoolctl limit
        self.threads = threads

    def supports(self, case):
        if case.op == "conv2d":
            return case.groups in (1, case.C)
        if case.op == "max_pool2d":
            return case.padding == "VALID" and (case.KH, case.KW) == (case.SH, case.SW)
        return case.op in ("relu", "im2col")

    def prepare(self, case, data):
        x = data["x"]
        if case.op == "relu":
            out = np.empty_like(x)
            return Prepared(lambda: np.maximum(x, 0, out=out))
        if case.op == "max_pool2d":
            N, C = case.N, case.C
            win = case.window
            OH, OW, KH, KW = win.OH, win.OW, case.KH, case.KW
            out = np.empty(case.output_shape, case.dtype)
            return Prepared(lambda: x[:, :OH * KH, :OW * KW].reshape(N, OH, KH, OW, KW, C)
                            .max(axis=(2, 4), out=out))
        view = _numpy_windows(case)
        if case.op == "im2col":
            win = case.window
            buf = np.empty((case.N, win.OH, win.OW, case.KH, case.KW, case.C), case.dtype)

            def call():
                np.copyto(buf, view(x).transpose(0, 1, 2, 4, 5, 3))
                return buf.reshape(case.output_shape)
            return Prepared(call)
        out = np.empty(case.output_shape, case.dtype)
        if case.groups == 1:
            w2 = np.ascontiguousarray(data["w"].reshape(-1, case.O))
            rows = case.output_shape[0] * case.output_shape[1] * case.output_shape[2]
            out2 = out.reshape(rows, case.O)

            def call():
                cols = view(x).transpose(0, 1, 2, 4, 5, 3).reshape(rows, -1)
                np.matmul(cols, w2, out=out2)
                return out
            return Prepared(call)
        wd = np.ascontiguousarray(data["w"][:, :, 0, :])  # depthwise (KH, KW, C)
        return Prepared(lambda: np.einsum("nhwcij,ijc->nhwc", view(x), wd, out=out))


def _numpy_windows(case):
    """A function mapping x to its (N, OH, OW, C, KH, KW) window view, zero-padded."""
    from numpy.lib.stride_tricks import sliding_window_view
    win = case.window
    pads = ((0, 0), (win.pad_top, win.pad_bottom), (win.pad_left, win.pad_right), (0, 0))

    def view(x):
        xp = np.pad(x, pads) if any(p for pair in pads for p in pair) else x
        v = sliding_window_view(xp, (case.KH, case.KW), axis=(1, 2))
        return v[:, ::case.SH, ::case.SW][:, :win.OH, :win.OW]
    return view


class ScipyEngine(ImageFilterEngine):
    """``scipy.ndimage.correlate`` (single-channel filters; single-threaded), reused output."""
    name = "scipy"

    def setup(self, threads):
        self.ndimage = import_library("scipy.ndimage")
        self.library = importlib.import_module("scipy")

    def filter_call(self, image, kernel, out, anchor):
        correlate = self.ndimage.correlate
        # ndimage's origin counts from the kernel's centre
        origin = (anchor[0] - kernel.shape[0] // 2, anchor[1] - kernel.shape[1] // 2)

        def call():
            correlate(image, kernel, output=out, mode="constant", cval=0.0, origin=origin)
            return out
        return call
