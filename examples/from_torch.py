"""Run a torch.nn.LSTM with fastlstm: convert once, then call it on NumPy arrays.

    python examples/from_torch.py

No training: a randomly initialised torch LSTM stands in for a trained one. fastlstm keeps the module's
configuration (layers, bidirectional, proj_size, batch_first, dtype) and gives the same numbers.
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
