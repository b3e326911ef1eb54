"""ONNX Runtime: a one-node ONNX model per case, run by its CPU execution provider.

Each case is built in memory with the ``onnx`` package's helper API -- one
``Conv`` (explicit ``pads``, ``strides``, ``dilations``, ``group``; the filter
as an initializer), ``Relu`` or ``MaxPool`` node on NCHW tensors -- and
loaded into an ``InferenceSession`` with ``intra_op_num_threads`` set to the
run's thread count (one inter-op thread, sequential execution).  Only
``session.run`` is timed; the NCHW input is made once beforehand, and the
result is turned back to NHWC outside the timing.  ``MaxPool``'s padding
never wins a window, as in TensorFlow.
"""
import numpy as np

from . import Engine, Prepared, import_library, nchw, nhwc

#: the ONNX operator set the models declare (ONNX Runtime has run it since 1.12)
OPSET = 17


class OnnxRuntimeEngine(Engine):
    """``onnxruntime.InferenceSession.run`` on a one-node model, NCHW (ReLU: any layout)."""
    name = "onnxruntime"

    def setup(self, threads):
        self.onnx = import_library("onnx")
        self.library = import_library("onnxruntime")
        self.threads = threads

    def supports(self, case):  # the models declare float32 tensors
        return case.op in ("conv2d", "relu", "max_pool2d") and case.dtype == "float32"

    def prepare(self, case, data):
        win = case.window
        pads = [win.pad_top, win.pad_left, win.pad_bottom, win.pad_right]
        strides, kernel = [case.SH, case.SW], [case.KH, case.KW]
        if case.op == "relu":  # element-wise: the NHWC array as it is
            session = self._session("Relu", data["x"].shape, case.output_shape)
            x = data["x"]
            return Prepared(lambda: session.run(None, {"x": x}), lambda out: out[0])
        x = nchw(data["x"])
        N, OH, OW, C = case.output_shape
        out_shape = (N, C, OH, OW)
        if case.op == "conv2d":
            w = np.ascontiguousarray(data["w"].transpose(3, 2, 0, 1))  # OIHW
            session = self._session("Conv", x.shape, out_shape, w, kernel_shape=kernel,
                                    pads=pads, strides=strides, dilations=[1, 1],
                                    group=case.groups)
        elif case.op == "max_pool2d":
            session = self._session("MaxPool", x.shape, out_shape, kernel_shape=kernel,
                                    pads=pads, strides=strides)
        else:
            raise ValueError(f"unknown op {case.op!r}")
        return Prepared(lambda: session.run(None, {"x": x}), lambda out: nhwc(out[0]))

    def _session(self, op, in_shape, out_shape, weight=None, **attributes):
        """An inference session of the one-node model ``y = op(x[, w])``."""
        onnx, ort = self.onnx, self.library
        helper, float32 = onnx.helper, onnx.TensorProto.FLOAT
        inputs, initializers = ["x"], []
        if weight is not None:
            inputs.append("w")
            initializers.append(onnx.numpy_helper.from_array(weight, "w"))
        graph = helper.make_graph(
            [helper.make_node(op, inputs, ["y"], **attributes)], f"fastconv_bench_{op}",
            [helper.make_tensor_value_info("x", float32, list(in_shape))],
            [helper.make_tensor_value_info("y", float32, list(out_shape))], initializers)
        opset = helper.make_opsetid("", OPSET)
        model = helper.make_model(graph, opset_imports=[opset],
                                  ir_version=helper.find_min_ir_version_for([opset]))
        onnx.checker.check_model(model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        return ort.InferenceSession(model.SerializeToString(), options,
                                    providers=["CPUExecutionProvider"])
