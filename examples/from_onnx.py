"""Load an LSTM node from an ONNX model and check it against onnxruntime.

    python examples/from_onnx.py

The model here is built by hand (a bidirectional LSTM node with peepholes and clip), saved to a file and
loaded from that path. ONNX's runtime inputs map to call arguments: sequence_lens -> lengths=,
initial_h / initial_c -> hx=. ONNX's Y is (T, D, B, H); fastlstm's output is (T, B, D*H).
"""
import os
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import fastlstm

I, H, D = 6, 10, 2
rng = np.random.default_rng(0)
weights = {
    "W": rng.standard_normal((D, 4 * H, I)) * 0.5,  # gates i, o, f, c
    "R": rng.standard_normal((D, 4 * H, H)) * 0.5,
    "B": rng.standard_normal((D, 8 * H)) * 0.5,     # [Wb, Rb]
    "P": rng.standard_normal((D, 3 * H)) * 0.5,     # peepholes i, o, f
}
node = helper.make_node(
    "LSTM", ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"], ["Y", "Y_h", "Y_c"],
    name="encoder", hidden_size=H, direction="bidirectional", clip=3.0,
)
graph = helper.make_graph(
    [node], "example",
    [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, None, I]),
     helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [None]),
     helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, [D, None, H]),
     helper.make_tensor_value_info("initial_c", TensorProto.FLOAT, [D, None, H])],
    [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "Y_h", "Y_c")],
    initializer=[numpy_helper.from_array(w.astype(np.float32), name) for name, w in weights.items()],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
model.ir_version = 8

with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "lstm.onnx")
    onnx.save(model, path)
    lstm = fastlstm.LSTM.from_onnx(path)  # or from_onnx(model, node="encoder")
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
print("loaded:", lstm, "direction:", lstm.direction)

T, B = 9, 4
x = rng.standard_normal((T, B, I)).astype(np.float32)
lengths = np.array([9, 5, 2, 7], dtype=np.int32)
h0 = rng.standard_normal((D, B, H)).astype(np.float32)
c0 = rng.standard_normal((D, B, H)).astype(np.float32)

Y, Y_h, Y_c = session.run(None, {"X": x, "sequence_lens": lengths, "initial_h": h0, "initial_c": c0})
out, (h_n, c_n) = lstm(x, (h0, c0), lengths=lengths)

Y = Y.transpose(0, 2, 1, 3).reshape(T, B, D * H)  # (T, D, B, H) -> (T, B, D*H)
for name, ours, theirs in (("Y", out, Y), ("Y_h", h_n, Y_h), ("Y_c", c_n, Y_c)):
    d = np.abs(ours - theirs).max()
    print(f"max |fastlstm - onnxruntime| {name}: {d:.2e}")
    assert d < 2e-5, f"{name} differs from onnxruntime by {d}"
print("fastlstm matches onnxruntime")
