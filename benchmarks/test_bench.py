"""The shapes of ``python -m fastlstm bench`` as pytest-benchmark groups: one group per section and shape, one
benchmark per runner (see conftest.py)."""
import functools

import numpy as np
import pytest
from conftest import missing_peer

import fastlstm
from fastlstm import _bench, _bench_sections, _peers

F32_RUNNERS = ["fastlstm", "reference", "torch", "onnxruntime", "openvino f32"]
QUANT_SECTION, GRU_SECTION, MODELS_SECTION = _bench_sections.SECTIONS


def _require(peer):
    """Skip (fail under CI) a benchmark of a peer whose modules are not all installed."""
    if peer in _bench.PEER_NEEDS and not _bench.available(peer):
        missing_peer(f"{peer} needs {' and '.join(_bench.PEER_NEEDS[peer])}, not all installed")


def _f32_runner(name, shape):
    """A zero-argument callable running one forward (or one streaming step) of ``shape`` in ``name``."""
    _require(name)
    rng = np.random.default_rng(0)
    model = fastlstm.LSTM(shape.I, shape.H, shape.layers, bidirectional=shape.bidirectional, seed=0)
    threads = fastlstm.get_num_threads()
    if shape.streaming:
        x = rng.standard_normal((shape.B, shape.I)).astype(np.float32)
        if name == "fastlstm":
            step = _bench_sections.stream_stepper(model, shape.B)
        elif name == "reference":
            pytest.skip("the reference has no streaming step")
        else:
            step = _bench.peer_steppers(model, shape.B, threads)[name]
        return lambda: step(x)
    x = rng.standard_normal((shape.T, shape.B, shape.I)).astype(np.float32)
    if name == "fastlstm":
        return lambda: model(x)
    if name == "reference":
        if shape.T * shape.B * shape.H > 100 * 4 * 256:
            pytest.skip("the reference is too slow for this shape")
        ref = fastlstm.reference.LSTM(shape.I, shape.H, shape.layers, bidirectional=shape.bidirectional, seed=0)
        return lambda: ref(x)
    if name == "openvino f32":
        run = _peers.openvino_runner(model, x.shape, threads, "f32")[0]
    else:
        run = _peers.torch_runner(model, threads) if name == "torch" else _peers.ort_runner(model, threads)
    return lambda: run(x)


@pytest.mark.parametrize("peer", F32_RUNNERS)
@pytest.mark.parametrize("shape", _bench.SHAPES, ids=lambda s: s.name.replace(" ", ""))
def test_forward(benchmark, shape, peer):
    benchmark.group = shape.name
    benchmark.name = peer
    benchmark(_f32_runner(peer, shape))


# one case (all runners of a shape) at a time: the tests run shape by shape
@functools.lru_cache(maxsize=1)
def _quant_case(shape_index):
    return _bench_sections.quant_case(_bench_sections.QUANT_SHAPES[shape_index], fastlstm.get_num_threads(), True)


@functools.lru_cache(maxsize=1)
def _gru_case(shape_index):
    return _bench_sections.gru_case(_bench_sections.GRU_SHAPES[shape_index], fastlstm.get_num_threads(), True)


@pytest.mark.parametrize("runner", QUANT_SECTION.runners)
@pytest.mark.parametrize("index", range(len(_bench_sections.QUANT_SHAPES)),
                         ids=[s.name.replace(" ", "") for s in _bench_sections.QUANT_SHAPES])
def test_quant(benchmark, index, runner):
    _require(runner)
    benchmark.group = f"quant: {_bench_sections.QUANT_SHAPES[index].name}"
    benchmark.name = runner
    benchmark(_quant_case(index).calls[runner])


@pytest.mark.parametrize("runner", GRU_SECTION.runners)
@pytest.mark.parametrize("index", range(len(_bench_sections.GRU_SHAPES)),
                         ids=[s.name.replace(" ", "") for s in _bench_sections.GRU_SHAPES])
def test_gru(benchmark, index, runner):
    _require(runner)
    benchmark.group = f"gru: {_bench_sections.GRU_SHAPES[index].name}"
    benchmark.name = runner
    benchmark(_gru_case(index).calls[runner])


@functools.lru_cache(maxsize=1)
def _model_cases():
    from fastlstm import _bench_models

    return _bench_models.case_runners(quick=True)


@pytest.mark.parametrize("runner", MODELS_SECTION.runners)
@pytest.mark.parametrize("case", _bench_sections.MODEL_CASES)
def test_models(benchmark, case, runner):
    _require("torch")
    import torch

    torch.set_num_threads(fastlstm.get_num_threads())
    model_case = _model_cases()[case]
    benchmark.group = f"models: {case}"
    benchmark.name = runner
    with torch.inference_mode():
        benchmark(model_case.torch_call if runner == "torch" else model_case.accelerated_call)
