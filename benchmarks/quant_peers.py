"""The reduced-precision peers of fastlstm's bf16 and int8 models, built from the same float32 weights:

- OpenVINO at its default precision (bf16 on a CPU with AVX512-BF16: what its users get without asking), or
  at f32 when asked (``precision="f32"``);
- onnxruntime int8: the model's ONNX graph through ``onnxruntime.quantization.quantize_dynamic`` (QInt8 weights,
  per channel unless asked otherwise), as its users make an int8 LSTM.

Each builder returns ``run(x) -> output`` (a forward over (T, B, I)) or ``step(x_t) -> y_t`` (one streaming step of
a one-layer forward LSTM, the state carried). Used by benchmarks/quant_speed.py and quant_accuracy.py; the peers are
imported only inside the builders.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Callable, Optional

import numpy as np

from fastlstm import _peers


def _step_proto(model: Any):
    """A one-node ONNX LSTM graph of a one-layer forward model: inputs X (1, B, I), h, c; outputs h_out, c_out."""
    from onnx import TensorProto, helper, numpy_helper

    if model.num_layers != 1 or model.direction != "forward" or model.proj_size:
        raise ValueError("the streaming peers cover one-layer forward LSTMs without projection")
    H, state = model.hidden_size, model.state_dict()
    inits = [
        numpy_helper.from_array(_peers.torch_to_onnx_gates(state["weight_ih_l0"], H)[None], "W"),
        numpy_helper.from_array(_peers.torch_to_onnx_gates(state["weight_hh_l0"], H)[None], "R"),
        numpy_helper.from_array(np.concatenate([_peers.torch_to_onnx_gates(state["bias_ih_l0"], H),
                                                _peers.torch_to_onnx_gates(state["bias_hh_l0"], H)])[None], "B"),
    ]
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "h", "c"], ["", "h_out", "c_out"], hidden_size=H)
    io = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)  # noqa: E731
    graph = helper.make_graph(
        [node], "step", [io("X", [1, None, model.input_size]), io("h", [1, None, H]), io("c", [1, None, H])],
        [io("h_out", [1, None, H]), io("c_out", [1, None, H])], initializer=inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    proto.ir_version = 8
    return proto


def _ort_int8_session(proto, threads: Optional[int], per_channel: bool):
    import logging

    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process, printed for every model

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "f32.onnx"), os.path.join(tmp, "int8.onnx")
        onnx.save(proto, src)
        quantize_dynamic(src, dst, per_channel=per_channel, weight_type=QuantType.QInt8, op_types_to_quantize=["LSTM"])
        quantized = onnx.load(dst)
    if not any(n.op_type == "DynamicQuantizeLSTM" for n in quantized.graph.node):
        raise RuntimeError("quantize_dynamic wrote no DynamicQuantizeLSTM node")
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(quantized.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def ort_int8_runner(model: Any, threads: Optional[int] = None, per_channel: bool = True) -> Callable:
    """onnxruntime int8 (quantize_dynamic) forward of ``model``'s graph: run(x (T, B, I)) -> (T, B, D*H)."""
    session = _ort_int8_session(_peers.onnx_model(model), threads, per_channel)
    return lambda x: session.run(["Y"], {"X": x})[0]


def ort_int8_step_runner(model: Any, threads: Optional[int] = None, per_channel: bool = True) -> Callable:
    """onnxruntime int8 streaming step: step(x_t (B, I)) -> h (B, H)."""
    session = _ort_int8_session(_step_proto(model), threads, per_channel)
    H, carried = model.hidden_size, {}

    def step(x_t: np.ndarray) -> np.ndarray:
        if "h" not in carried:
            carried["h"] = carried["c"] = np.zeros((1, x_t.shape[0], H), np.float32)
        carried["h"], carried["c"] = session.run(None, {"X": x_t[None], "h": carried["h"], "c": carried["c"]})
        return carried["h"][0]

    return step


def _openvino_compiled(proto, shapes, threads: Optional[int], precision: Optional[str]):
    import onnx
    import openvino as ov

    core = ov.Core()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        onnx.save(proto, path)
        ov_model = core.read_model(path)
    ov_model.reshape(shapes)  # static shapes, as a latency-minded user compiles
    config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = core.compile_model(ov_model, "CPU", config)
    return compiled, compiled.create_infer_request()


def openvino_precision(compiled) -> str:
    """The precision OpenVINO chose for a compiled model ("bf16", "f32", ...)."""
    value = compiled.get_property("INFERENCE_PRECISION_HINT")
    return value.to_string() if hasattr(value, "to_string") else str(value)


def openvino_runner(model: Any, shape, threads: Optional[int] = None, precision: Optional[str] = None):
    """OpenVINO forward of ``model``'s graph compiled for input ``shape`` (T, B, I) at ``precision`` (None: its
    default). Returns (run(x) -> (T, B, D*H), the precision it runs)."""
    compiled, request = _openvino_compiled(_peers.onnx_model(model), {"X": list(shape)}, threads, precision)

    def run(x: np.ndarray) -> np.ndarray:
        request.infer({"X": x})
        return request.get_output_tensor(0).data.copy()

    return run, openvino_precision(compiled)


def openvino_step_runner(model: Any, batch: int = 1, threads: Optional[int] = None, precision: Optional[str] = None):
    """OpenVINO streaming step at ``precision`` (None: its default): (step(x_t (B, I)) -> h (B, H), precision)."""
    H = model.hidden_size
    shapes = {"X": [1, batch, model.input_size], "h": [1, batch, H], "c": [1, batch, H]}
    compiled, request = _openvino_compiled(_step_proto(model), shapes, threads, precision)
    carried = {"h": np.zeros((1, batch, H), np.float32), "c": np.zeros((1, batch, H), np.float32)}

    def step(x_t: np.ndarray) -> np.ndarray:
        request.infer({"X": x_t[None], "h": carried["h"], "c": carried["c"]})
        carried["h"] = request.get_tensor("h_out").data.copy()
        carried["c"] = request.get_tensor("c_out").data.copy()
        return carried["h"][0]

    return step, openvino_precision(compiled)
