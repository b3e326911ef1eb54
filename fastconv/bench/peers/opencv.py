"""OpenCV's image filter, for the single-channel cases."""
import numpy as np

from . import Engine, Prepared, import_library
from .numpy_scipy import single_channel_result


class OpenCVEngine(Engine):
    """``cv2.filter2D`` (single-channel filters), zero border, reused ``dst``."""
    name = "opencv"

    def setup(self, threads):
        self.library = import_library("cv2")
        self.library.setNumThreads(threads)

    def supports(self, case):
        return case.single_channel_filter

    def prepare(self, case, data):
        cv2 = self.library
        src = np.ascontiguousarray(data["x"][0, :, :, 0])
        k = np.ascontiguousarray(data["w"][:, :, 0, 0])
        dst = np.empty_like(src)
        win = case.window
        # (x, y): where the output pixel sits in the kernel; VALID filters the whole image
        # and keeps the interior
        anchor = (0, 0) if case.padding == "VALID" else (win.pad_left, win.pad_top)
        return Prepared(lambda: cv2.filter2D(src, -1, k, dst, anchor, 0, cv2.BORDER_CONSTANT),
                        lambda d: single_channel_result(d, win))
