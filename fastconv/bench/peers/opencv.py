"""OpenCV's image filter, for the single-channel cases."""
from . import ImageFilterEngine, import_library


class OpenCVEngine(ImageFilterEngine):
    """``cv2.filter2D`` (single-channel filters), zero border, reused ``dst``."""
    name = "opencv"

    def setup(self, threads):
        self.library = import_library("cv2")
        self.library.setNumThreads(threads)

    def filter_call(self, image, kernel, out, anchor):
        cv2 = self.library
        xy = (anchor[1], anchor[0])  # OpenCV's anchor is (x, y)
        return lambda: cv2.filter2D(image, -1, kernel, out, xy, 0, cv2.BORDER_CONSTANT)
