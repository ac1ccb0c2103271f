"""Run GRUs with fastlstm: a torch.nn.GRU, the same GRU exported to ONNX, and a stream of frames.

    python examples/gru.py

No training: a randomly initialised torch GRU stands in for a trained one. fastlstm.GRU keeps the module's
configuration (layers, bidirectional, batch_first, dtype) and gives the same numbers as torch and as
onnxruntime running torch's ONNX export.
"""
import io

import numpy as np
import onnx
import onnxruntime
import torch

import fastlstm

torch.manual_seed(0)
module = torch.nn.GRU(input_size=16, hidden_size=32, num_layers=2, batch_first=True).eval()
gru = fastlstm.GRU.from_torch(module)  # torch is only needed for this conversion
print("converted:", gru)

rng = np.random.default_rng(0)
x = rng.standard_normal((4, 10, 16)).astype(np.float32)  # (batch, time, features): batch_first like the module
lengths = np.array([10, 7, 3, 1])                        # per-sequence lengths (pack_padded_sequence semantics)
out, h_n = gru(x, lengths=lengths)                       # hx and h_n are h alone: (layers * directions, B, H)

with torch.inference_mode():
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths),
                                                     batch_first=True, enforce_sorted=False)
    packed_out, t_h = module(packed)
    t_out, _ = torch.nn.utils.rnn.pad_packed_sequence(packed_out, batch_first=True, total_length=10)
for name, ours, theirs in (("output", out, t_out.numpy()), ("h_n", h_n, t_h.numpy())):
    d = np.abs(ours - theirs).max()
    print(f"max |fastlstm - torch| {name}: {d:.2e}")
    assert d < 2e-5, f"{name} differs from torch by {d}"

# torch's ONNX export of the stacked GRU (a chain of GRU nodes) loads as one stacked model
buffer = io.BytesIO()
time_major = torch.nn.GRU(16, 32, num_layers=2).eval()   # (time, batch, features), as ONNX's GRU
time_major.load_state_dict(module.state_dict())
x_tbi = np.ascontiguousarray(x.transpose(1, 0, 2))
torch.onnx.export(time_major, (torch.from_numpy(x_tbi),), buffer, dynamo=False, input_names=["x"])
from_onnx = fastlstm.GRU.from_onnx(onnx.load_from_string(buffer.getvalue()))
session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
d = np.abs(from_onnx(x_tbi)[0] - session.run(None, {"x": x_tbi})[0]).max()
print(f"max |fastlstm - onnxruntime| output of the ONNX export: {d:.2e}")
assert d < 2e-5

# streaming: one frame at a time, bitwise the same as the whole sequence
stream = gru.stream(batch_size=4)
frame_out = np.empty((4, 32), np.float32)
full, _ = gru(x)
for t in range(10):
    stream.step(x[:, t], out=frame_out)
    assert np.array_equal(frame_out, full[:, t])
assert np.array_equal(stream.state[-1], full[:, -1])   # s.state is h: (layers, B, H)
print("fastlstm.GRU matches torch and onnxruntime")
