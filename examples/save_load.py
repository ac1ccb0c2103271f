"""Save a model to a portable file and load it back (no pickle: loading an untrusted file runs no code).

    python examples/save_load.py
"""
import os
import pickle
import tempfile

import numpy as np

import fastlstm

lstm = fastlstm.LSTM(8, 16, num_layers=2, bidirectional=True, proj_size=4, peepholes=True, clip=5.0, seed=0)
x = np.random.default_rng(0).standard_normal((20, 3, 8)).astype(np.float32)
out, (h_n, c_n) = lstm(x)

with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "encoder.fastlstm")  # written at exactly this path
    lstm.save(path)
    print(f"saved {lstm} to {os.path.basename(path)} ({os.path.getsize(path)} bytes)")
    loaded = fastlstm.load(path)
print("loaded:", loaded)

out2, (h2, c2) = loaded(x)
assert np.array_equal(out, out2) and np.array_equal(h_n, h2) and np.array_equal(c_n, c2)
assert all(np.array_equal(v, loaded.state_dict()[k]) for k, v in lstm.state_dict().items())
print("save/load round trip is bitwise identical")

clone = pickle.loads(pickle.dumps(lstm))  # LSTM objects also pickle (for multiprocessing, caches, ...)
assert np.array_equal(clone(x)[0], out)
print("pickle round trip is bitwise identical")
