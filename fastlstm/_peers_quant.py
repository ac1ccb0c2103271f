"""The int8 peer of fastlstm's reduced-precision models, built from the same float32 weights: onnxruntime's
int8 LSTM, the model's ONNX graph through ``onnxruntime.quantization.quantize_dynamic`` (QInt8 weights, per
channel unless asked otherwise), as its users make one.

The other reduced-precision peer, OpenVINO at its default precision (bf16 on a CPU with AVX512-BF16), is
``_peers.openvino_runner`` / ``openvino_step_runner`` with ``precision=None``. Peers are imported only inside the
builders.
"""
from __future__ import annotations

import logging
import os
import tempfile
from typing import Any, Callable, Optional

import numpy as np

from . import _peers
from ._base import LSTMBase


def ort_int8_session(proto: Any, threads: Optional[int] = None, per_channel: bool = True) -> Any:
    """An onnxruntime session of the float32 LSTM graph ``proto`` after quantize_dynamic (QInt8 weights, per
    channel or per tensor): its LSTM nodes become com.microsoft DynamicQuantizeLSTM nodes."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic's advice to pre-process the model, logged for every model
    try:
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = os.path.join(tmp, "f32.onnx"), os.path.join(tmp, "int8.onnx")
            onnx.save(proto, src)
            quantize_dynamic(src, dst, per_channel=per_channel, weight_type=QuantType.QInt8,
                             op_types_to_quantize=["LSTM"])
            quantized = onnx.load(dst)
    finally:
        root.setLevel(level)
    if not any(node.op_type == "DynamicQuantizeLSTM" for node in quantized.graph.node):
        raise RuntimeError("quantize_dynamic wrote no DynamicQuantizeLSTM node")
    return _peers.ort_session(quantized, threads)


def ort_int8_runner(
    model: LSTMBase, threads: Optional[int] = None, per_channel: bool = True
) -> Callable[[np.ndarray], np.ndarray]:
    """onnxruntime int8 (quantize_dynamic) forward of ``model``'s graph: run(x (T, B, I)) -> (T, B, D*H)."""
    session = ort_int8_session(_peers.onnx_model(model), threads, per_channel)

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(["Y"], {"X": x})[0])

    return run


def ort_int8_step_runner(
    model: LSTMBase, threads: Optional[int] = None, per_channel: bool = True
) -> Callable[[np.ndarray], np.ndarray]:
    """onnxruntime int8 streaming step of a one-layer forward model: step(x_t (B, I)) -> h_t (B, H), the state
    carried from zero."""
    return _peers.ort_state_stepper(ort_int8_session(_peers.step_onnx_model(model), threads, per_channel), model)
