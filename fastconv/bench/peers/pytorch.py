"""PyTorch's ``torch.nn.functional`` on NCHW or channels_last tensors."""
import numpy as np

from ..suite import BACKWARD_OPS, CS231N_OPS, CS231N_POOL, cs231n_arrays, cs231n_pack
from . import Engine, Prepared, import_library, nchw, nhwc


class TorchEngine(Engine):
    """``torch.nn.functional`` on NCHW tensors, or on channels_last ones."""

    def __init__(self, channels_last=False):
        self.channels_last = channels_last
        self.name = "torch-cl" if channels_last else "torch"

    def setup(self, threads):
        torch = import_library("torch")
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # only settable before the first parallel work
            pass
        self.library = torch

    def supports(self, case):
        if case.op in CS231N_OPS:
            return not self.channels_last  # the course's NCHW arrays, as a student has them
        if case.op == "relu_backward":
            return not self.channels_last  # layout-free: one row is enough
        if case.op in BACKWARD_OPS:
            return True
        if case.op == "relu":
            return not self.channels_last  # layout-free: one row is enough
        if case.op == "im2col":
            return not self.channels_last  # F.unfold is NCHW-only
        return case.op in ("conv2d", "max_pool2d")

    def _tensor(self, nchw_array):
        t = self.library.from_numpy(nchw_array)
        if self.channels_last:
            return t.contiguous(memory_format=self.library.channels_last)
        return t.contiguous()

    def prepare(self, case, data):
        torch = self.library
        F = torch.nn.functional
        x_nhwc = data["x"]
        if case.op in CS231N_OPS:
            return self._prepare_cs231n(case, data)
        if case.op in BACKWARD_OPS:
            return self._prepare_backward(case, data)
        if case.op == "relu":
            x = torch.from_numpy(x_nhwc)
            buf = torch.empty_like(x)
            return Prepared(lambda: torch.clamp_min(x, 0, out=buf), np.asarray)
        win = case.window
        symmetric = win.pad_top == win.pad_bottom and win.pad_left == win.pad_right
        if case.op == "max_pool2d" or symmetric:
            padding = (win.pad_top, win.pad_left)
        else:  # pre-pad once, outside the timing (favours PyTorch)
            x_nhwc = np.pad(x_nhwc, ((0, 0), (win.pad_top, win.pad_bottom),
                                     (win.pad_left, win.pad_right), (0, 0)))
            padding = (0, 0)
        x = self._tensor(nchw(x_nhwc))
        stride, k = (case.SH, case.SW), (case.KH, case.KW)
        if case.op == "conv2d":
            w = self._tensor(np.ascontiguousarray(data["w"].transpose(3, 2, 0, 1)))  # OIHW
            g = case.groups
            return Prepared(lambda: F.conv2d(x, w, None, stride, padding, 1, g), nhwc)
        if case.op == "max_pool2d":
            return Prepared(lambda: F.max_pool2d(x, k, stride, padding), nhwc)
        if case.op == "im2col":
            N, C, KH, KW = case.N, case.C, case.KH, case.KW

            def result(t):  # (N, C*KH*KW, L) ordered (c, kh, kw) -> rows ordered (kh, kw, c)
                a = t.numpy().reshape(N, C, KH, KW, win.OH, win.OW)
                return a.transpose(0, 4, 5, 2, 3, 1).reshape(case.output_shape)
            return Prepared(lambda: F.unfold(x, k, 1, padding, stride), result)
        raise ValueError(f"unknown op {case.op!r}")

    def _prepare_backward(self, case, data):
        """``torch.autograd.grad``: the forward graph built once (outside the timing), each
        call one backward through it with ``dy`` as the upstream gradient."""
        torch = self.library
        F = torch.nn.functional
        forward = BACKWARD_OPS[case.op]
        if forward == "relu":
            x = torch.from_numpy(data["x"].copy()).requires_grad_()
            y = F.relu(x)
            dy = torch.from_numpy(data["dy"])
            return Prepared(lambda: torch.autograd.grad(y, x, dy, retain_graph=True)[0],
                            lambda t: t.numpy())
        win = case.window
        x_nhwc, crop = data["x"], None
        symmetric = win.pad_top == win.pad_bottom and win.pad_left == win.pad_right
        if forward == "max_pool2d" or symmetric:
            padding = (win.pad_top, win.pad_left)
        else:  # pre-pad once, outside the timing (favours PyTorch); crop the gradient
            x_nhwc = np.pad(x_nhwc, ((0, 0), (win.pad_top, win.pad_bottom),
                                     (win.pad_left, win.pad_right), (0, 0)))
            padding, crop = (0, 0), (win.pad_top, win.pad_left)
        x = self._tensor(nchw(x_nhwc)).requires_grad_()
        dy = self._tensor(nchw(data["dy"]))
        stride, k = (case.SH, case.SW), (case.KH, case.KW)
        if forward == "max_pool2d":
            y = F.max_pool2d(x, k, stride, padding)
        else:
            w = self._tensor(np.ascontiguousarray(data["w"].transpose(3, 2, 0, 1)))  # OIHW
            w.requires_grad_()
            y = F.conv2d(x, w, None, stride, padding, 1, case.groups)
        if case.op == "conv2d_grad_filters":
            return Prepared(lambda: torch.autograd.grad(y, w, dy, retain_graph=True)[0],
                            lambda t: t.detach().numpy().transpose(2, 3, 1, 0))
        H, W = case.H, case.W

        def result(t):
            g = nhwc(t.detach().numpy())
            if crop is not None:
                g = g[:, crop[0]:crop[0] + H, crop[1]:crop[1] + W]
            return g
        return Prepared(lambda: torch.autograd.grad(y, x, dy, retain_graph=True)[0], result)

    def _prepare_cs231n(self, case, data):
        """A CS231n row in PyTorch: each call is the forward (``F.conv2d`` with the bias; the
        sandwich adds ``F.relu`` and ``F.max_pool2d``) on leaf tensors that require grad,
        then ``torch.autograd.grad`` of the output with ``dout`` as upstream gradient."""
        torch = self.library
        F = torch.nn.functional
        x, w, b, dout, conv_param = cs231n_arrays(case, data)
        x, w, b = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
        dout = torch.from_numpy(dout)
        stride, pad = conv_param["stride"], conv_param["pad"]
        grad = torch.autograd.grad
        if case.op == "cs231n_conv":
            def call():
                y = F.conv2d(x, w, b, stride, pad)
                return (y, *grad(y, (x, w, b), dout))
        else:
            k, s = (CS231N_POOL["pool_height"], CS231N_POOL["pool_width"]), CS231N_POOL["stride"]

            def call():
                y = F.max_pool2d(F.relu(F.conv2d(x, w, b, stride, pad)), k, s)
                return (y, *grad(y, (x, w, b), dout))
        return Prepared(call, lambda res: cs231n_pack(*(t.detach().numpy() for t in res)))
