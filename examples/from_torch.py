"""Run a torch.nn.LSTM with fastlstm: convert once, then call it on NumPy arrays.

    python examples/from_torch.py

No training: a randomly initialised torch LSTM stands in for a trained one. fastlstm keeps the module's
configuration (layers, bidirectional, proj_size, batch_first, dtype) and gives the same numbers. A
torch.nn.LSTMCell (plain or TorchScript, as in silero-vad's model) becomes a one-layer LSTM: one call runs the
loop over time steps that a module's forward would write around the cell.
"""
import numpy as np
import torch

import fastlstm

torch.manual_seed(0)
module = torch.nn.LSTM(input_size=16, hidden_size=32, num_layers=2, bidirectional=True, batch_first=True).eval()

lstm = fastlstm.LSTM.from_torch(module)  # torch is only needed for this conversion
print("converted:", lstm)

rng = np.random.default_rng(0)
x = rng.standard_normal((4, 10, 16)).astype(np.float32)  # (batch, time, features): batch_first like the module
lengths = np.array([10, 7, 3, 1])                        # per-sequence lengths (pack_padded_sequence semantics)

out, (h_n, c_n) = lstm(x, lengths=lengths)

with torch.inference_mode():
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths),
                                                     batch_first=True, enforce_sorted=False)
    packed_out, (t_h, t_c) = module(packed)
    t_out, _ = torch.nn.utils.rnn.pad_packed_sequence(packed_out, batch_first=True, total_length=10)

diffs = {
    "output": np.abs(out - t_out.numpy()).max(),
    "h_n": np.abs(h_n - t_h.numpy()).max(),
    "c_n": np.abs(c_n - t_c.numpy()).max(),
}
print("output", out.shape, "h_n", h_n.shape, "c_n", c_n.shape)
for name, d in diffs.items():
    print(f"max |fastlstm - torch| {name}: {d:.2e}")
    assert d < 2e-5, f"{name} differs from torch by {d}"
print("fastlstm matches torch")

# an nn.LSTMCell, stepped over time in Python by the module that holds it, is a one-layer LSTM
cell = torch.nn.LSTMCell(16, 32).eval()
seq = fastlstm.LSTM.from_torch(cell)  # time-major like the cell's loop: x is (time, batch, features)
x_t = np.ascontiguousarray(x.transpose(1, 0, 2))
h = c = torch.zeros(4, 32)
with torch.inference_mode():
    for step in torch.from_numpy(x_t):
        h, c = cell(step, (h, c))
out, (h_n, c_n) = seq(x_t)
d = max(np.abs(h_n[0] - h.numpy()).max(), np.abs(c_n[0] - c.numpy()).max())
print(f"LSTMCell as {seq}: max |fastlstm - stepped cell| {d:.2e}")
assert d < 2e-5, f"the cell differs by {d}"
