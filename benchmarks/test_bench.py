"""fastlstm vs reference vs torch vs onnxruntime, one pytest-benchmark group per shape of `fastlstm bench`."""
import importlib.util

import numpy as np
import pytest

import fastlstm
from fastlstm import _bench, _peers

PEERS = ["fastlstm", "reference", "torch", "onnxruntime"]


def _runner(name, shape):
    """A zero-argument callable running one forward (or one streaming step) of ``shape`` in ``name``."""
    rng = np.random.default_rng(0)
    model = fastlstm.LSTM(shape.I, shape.H, shape.layers, bidirectional=shape.bidirectional, seed=0)
    if name in ("torch", "onnxruntime") and importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed")
    if shape.streaming:
        x = rng.standard_normal((shape.B, shape.I)).astype(np.float32)
        if name == "fastlstm":
            stream, out = model.stream(shape.B), np.empty((shape.B, model.out_size), np.float32)
            return lambda: stream.step(x, out=out)
        if name == "torch":
            step = _peers.torch_step_runner(model)
        elif name == "onnxruntime":
            step = _peers.ort_step_runner(model)
        else:
            pytest.skip("the reference has no streaming step")
        return lambda: step(x)
    x = rng.standard_normal((shape.T, shape.B, shape.I)).astype(np.float32)
    if name == "fastlstm":
        return lambda: model(x)
    if name == "reference":
        if shape.T * shape.B * shape.H > 100 * 4 * 256:
            pytest.skip("the reference is too slow for this shape")
        ref = fastlstm.reference.LSTM(shape.I, shape.H, shape.layers, bidirectional=shape.bidirectional, seed=0)
        return lambda: ref(x)
    run = _peers.torch_runner(model) if name == "torch" else _peers.ort_runner(model)
    return lambda: run(x)


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("shape", _bench.SHAPES, ids=lambda s: s.name.replace(" ", ""))
def test_forward(benchmark, shape, peer):
    benchmark.group = shape.name
    benchmark.name = peer
    benchmark(_runner(peer, shape))
