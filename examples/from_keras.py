"""Run a Keras 3 LSTM layer with fastlstm.

    KERAS_BACKEND=torch python examples/from_keras.py

Any Keras backend works for the layer; fastlstm only reads its weights (kernel, recurrent_kernel, bias).
The result is batch_first=True, like Keras. Keras' initial_state=[h, c] becomes hx=(h[None], c[None]).
Bidirectional(LSTM(...)) with merge_mode="concat" (Keras' default) becomes a bidirectional LSTM.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import fastlstm  # noqa: E402

units, features = 24, 8
layer = keras.layers.LSTM(units, return_sequences=True, return_state=True)
layer.build((None, None, features))

lstm = fastlstm.LSTM.from_keras(layer)  # or fastlstm.LSTM.from_keras(layer.get_weights())
print("converted:", lstm)

rng = np.random.default_rng(0)
x = rng.standard_normal((3, 12, features)).astype(np.float32)  # (batch, time, features)
h0 = rng.standard_normal((3, units)).astype(np.float32)
c0 = rng.standard_normal((3, units)).astype(np.float32)

y, h, c = (keras.ops.convert_to_numpy(t) for t in layer(x, initial_state=[h0, c0]))
out, (h_n, c_n) = lstm(x, (h0[None], c0[None]))

for name, ours, theirs in (("output", out, y), ("h", h_n[0], h), ("c", c_n[0], c)):
    d = np.abs(ours - theirs).max()
    print(f"max |fastlstm - keras ({keras.backend.backend()})| {name}: {d:.2e}")
    assert d < 2e-5, f"{name} differs from keras by {d}"
print("fastlstm matches keras")

# Bidirectional(LSTM): the backward layer's weights are the _reverse parameters, outputs side by side
bi_layer = keras.layers.Bidirectional(keras.layers.LSTM(units, return_sequences=True), merge_mode="concat")
bi_layer.build((None, None, features))
bi = fastlstm.LSTM.from_keras(bi_layer)
d = np.abs(bi(x)[0] - keras.ops.convert_to_numpy(bi_layer(x))).max()
print(f"Bidirectional as {bi}: max |fastlstm - keras| output: {d:.2e}")
assert d < 2e-5, f"Bidirectional output differs from keras by {d}"
