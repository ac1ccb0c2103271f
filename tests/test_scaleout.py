"""Scale-out: pickling (models rebuilt straight from their weights, streams with their state), hx error messages,
and local Dask and Ray clusters (bounded in time, always shut down): workers follow the OMP_NUM_THREADS=1 that
Dask's nanny and Ray set, and their results are bitwise those of one process for the same chunking.

The examples examples/dask_batch.py and examples/ray_batch.py run in tests/test_examples.py.
"""
from __future__ import annotations

import copy
import os
import pickle
import re

import numpy as np
import pytest

import fastlstm
from fastlstm import _base
from conftest import assert_bitwise_equal, assert_forward_bitwise, make_inputs, model_pair

# ---- pickling models ----------------------------------------------------------------------------

CONFIGS = [
    dict(),
    dict(num_layers=2, bidirectional=True, proj_size=5, batch_first=True),
    dict(num_layers=2, bias=False, dtype=np.float64, peepholes=True, clip=3.0, input_forget=True),
]
CONFIG_IDS = ["plain", "bi-proj-bf", "f64-extras"]


@pytest.mark.parametrize("cls", [fastlstm.LSTM, fastlstm.reference.LSTM], ids=["fast", "reference"])
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_unpickling_adopts_the_saved_weights(cls, config, monkeypatch):
    """Unpickling draws no random weights and packs once, adopting the saved arrays (read-only, no copy)."""
    model = cls(6, 20, seed=1, **config)
    model.weight_hh_l0 = model.weight_hh_l0 * 3  # an assigned parameter survives
    data = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    packs = []
    original = cls._parameters_changed
    monkeypatch.setattr(cls, "_parameters_changed", lambda self: (packs.append(1), original(self))[1])
    monkeypatch.setattr(np.random, "default_rng", None)  # any random initialisation would fail
    clone = pickle.loads(data)
    monkeypatch.undo()
    assert type(clone) is cls and len(packs) == 1
    assert clone._config() == model._config()
    for name, value in model.state_dict().items():
        assert_bitwise_equal(getattr(clone, name), value, name=name)
        assert not getattr(clone, name).flags.writeable, name
    args = make_inputs(model, 7, 3, rng=np.random.default_rng(2), hx=True, lengths=True)
    if model.batch_first:
        args["x"] = np.ascontiguousarray(args["x"])
    assert_forward_bitwise(clone(args["x"], args["hx"], lengths=args["lengths"]),
                           model(args["x"], args["hx"], lengths=args["lengths"]))


def test_pickle_is_about_the_size_of_the_weights():
    model = fastlstm.LSTM(64, 128, num_layers=2, bidirectional=True, seed=0)
    weights = sum(v.nbytes for v in model.state_dict().values())
    size = len(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    assert weights <= size <= weights + 8192, (size, weights)


def test_pickle_with_out_of_band_buffers():
    """Protocol 5 with out-of-band buffers (as Dask and Ray send arrays): the weights travel as the buffers,
    read-only, and the model adopts them."""
    model = fastlstm.LSTM(6, 32, num_layers=2, seed=2)
    buffers = []
    data = pickle.dumps(model, protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == len(model.state_dict()) and len(data) < 4096
    frozen = [memoryview(bytes(b.raw())).toreadonly() for b in buffers]
    clone = pickle.loads(data, buffers=frozen)
    x = np.random.default_rng(3).standard_normal((5, 2, 6)).astype(np.float32)
    assert_forward_bitwise(clone(x), model(x))


def test_unpickling_checks_what_it_is_given():
    """A pickle whose weights do not fit its configuration fails with the parameter's name, not in the kernels."""
    model = fastlstm.LSTM(4, 8, seed=0)
    reconstruct, (cls, config, params) = model.__reduce__()
    bad = dict(params, weight_hh_l0=np.zeros((32, 7), np.float32))
    with pytest.raises(ValueError, match=re.escape("weight_hh_l0: expected shape (32, 8), got (32, 7)")):
        reconstruct(cls, config, bad)
    missing = {k: v for k, v in params.items() if k != "bias_hh_l0"}
    with pytest.raises(ValueError, match="expected the names"):
        reconstruct(cls, config, missing)
    with pytest.raises(ValueError, match="hidden_size"):
        reconstruct(cls, dict(config, hidden_size=0), params)


# ---- pickling streams ---------------------------------------------------------------------------

STREAM_MODELS = {
    "plain": lambda: fastlstm.LSTM(5, 24, seed=3),
    "L2-proj": lambda: fastlstm.LSTM(5, 24, 2, proj_size=7, seed=3),
    "f64-peep": lambda: fastlstm.LSTM(5, 24, dtype=np.float64, peepholes=True, seed=3),
    "gru-L2": lambda: fastlstm.GRU(5, 24, 2, seed=3),   # a GRU's state is h alone
    "gru-int8": lambda: fastlstm.GRU(5, 24, linear_before_reset=False, seed=3).quantize("int8"),
}


def _states(stream):
    return stream.state if isinstance(stream.state, tuple) else (stream.state,)


@pytest.mark.parametrize("kind", sorted(STREAM_MODELS))
@pytest.mark.parametrize("steps_before", [0, 1, 4])
def test_stream_pickles_with_its_state(kind, steps_before):
    """A stream pickled before or after steps continues bitwise as the original does, and independently of it."""
    model = STREAM_MODELS[kind]()
    B, T = 3, 8
    args = make_inputs(model, T, B, rng=np.random.default_rng(4), hx=True)
    stream = model.stream(B, args["hx"])
    for t in range(steps_before):
        stream.step(args["x"][t])
    clone = pickle.loads(pickle.dumps(stream, protocol=pickle.HIGHEST_PROTOCOL))
    assert type(clone) is fastlstm._stream.Stream and clone.batch_size == B
    for want, got in zip(_states(stream), _states(clone)):
        assert_bitwise_equal(got, want, name="state")
    ours = [clone.step(args["x"][t]) for t in range(steps_before, T)]     # the clone first: independent
    theirs = [stream.step(args["x"][t]) for t in range(steps_before, T)]
    assert_bitwise_equal(np.stack(ours), np.stack(theirs), name="steps after unpickling")
    for want, got in zip(_states(stream), _states(clone)):
        assert_bitwise_equal(got, want, name="final state")
    out = np.empty((B, model.out_size), model.dtype)
    assert clone.step(args["x"][0], out=out) is out


def test_stream_and_model_pickled_together_share_the_model():
    model = fastlstm.LSTM(4, 16, seed=0)
    stream = model.stream(2)
    stream.step(np.ones((2, 4), np.float32))
    model2, stream2 = pickle.loads(pickle.dumps((model, stream)))
    assert stream2._model is model2


def test_stream_copies_are_independent():
    """copy.copy shares the model and copies the state; copy.deepcopy copies the model too."""
    model = fastlstm.LSTM(4, 16, seed=0)
    stream = model.stream(2)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    stream.step(x)
    shallow, deep = copy.copy(stream), copy.deepcopy(stream)
    assert shallow._model is model and deep._model is not model
    want = stream.step(x)
    for other in (shallow, deep):
        assert_bitwise_equal(other.step(x), want, name="step of a copy")
        for a, b in zip(other.state, stream.state):
            assert_bitwise_equal(a, b, name="state of a copy")


# ---- hx error messages --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [fastlstm.LSTM, fastlstm.reference.LSTM], ids=["fast", "reference"])
def test_hx_ndim_errors_name_the_shapes(cls):
    """torch's words, then the expected and the given shapes."""
    model = cls(3, 6, num_layers=2, proj_size=4, seed=0)
    x2, x3 = np.zeros((5, 3), np.float32), np.zeros((5, 2, 3), np.float32)
    h3, c3 = np.zeros((2, 1, 4)), np.zeros((2, 1, 6))
    with pytest.raises(ValueError) as info:
        model(x2, (h3, c3))
    assert str(info.value) == (
        "For unbatched 2-D input, hx and cx should also be 2-D but got (3-D, 3-D) tensors: expected hx[0] of "
        "shape (2, 4) and hx[1] of shape (2, 6) for input of shape (5, 3), got (2, 1, 4) and (2, 1, 6)")
    with pytest.raises(ValueError) as info:
        model(x3, (np.zeros((2, 4)), np.zeros((2, 2, 6))))
    assert str(info.value) == (
        "For batched 3-D input, hx and cx should also be 3-D but got (2-D, 3-D) tensors: expected hx[0] of "
        "shape (2, 2, 4) and hx[1] of shape (2, 2, 6) for input of shape (5, 2, 3), got (2, 4) and (2, 2, 6)")


def test_gru_hx_ndim_errors_name_the_shapes():
    """The same for a GRU's hx (h_0 alone), e.g. an LSTM's (h, c) pair passed to it."""
    model = fastlstm.GRU(3, 6, num_layers=2, seed=0)
    x3 = np.zeros((5, 2, 3), np.float32)
    with pytest.raises(ValueError) as info:
        model(x3, (np.zeros((2, 2, 6)), np.zeros((2, 2, 6))))
    assert str(info.value) == (
        "For batched 3-D input, hx should also be 3-D but got 4-D tensor: expected hx of shape (2, 2, 6) for input "
        "of shape (5, 2, 3), got (2, 2, 2, 6)")
    with pytest.raises(ValueError, match=r"expected hx of shape \(2, 6\) for input of shape \(5, 3\), got \(2, 1, 6\)"):
        model(x3[:, 0], np.zeros((2, 1, 6)))


# ---- Dask ---------------------------------------------------------------------------------------


def encode(chunk, model):
    """What the Dask example computes per chunk: each sequence's outputs averaged over time."""
    out, _ = model(chunk)
    return out.mean(axis=1)


def worker_threads():
    """What a worker process reports: fastlstm's thread count, OMP_NUM_THREADS and threadpoolctl's view."""
    import threadpoolctl

    pools = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["internal_api"] == "fastlstm"]
    return fastlstm.get_num_threads(), os.environ.get("OMP_NUM_THREADS"), pools


@pytest.fixture(scope="module")
def dask_client(require):
    """A local cluster of 2 worker processes with one thread each, under a nanny (Dask's default)."""
    require("dask.array")
    distributed = require("distributed")
    require("threadpoolctl")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  worker_class=distributed.Nanny) as cluster, \
            distributed.Client(cluster, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        yield client


def test_dask_workers_follow_the_nanny(dask_client):
    """The nanny sets OMP_NUM_THREADS=1 and fastlstm follows it in every worker (threadpoolctl agrees)."""
    reports = dask_client.run(worker_threads)
    assert len(reports) == 2
    assert all(report == (1, "1", [1]) for report in reports.values()), reports


@pytest.mark.parametrize("chunk", [50, 37, 1])
def test_dask_map_blocks_is_bitwise_one_process(dask_client, chunk):
    import dask.array as da

    model = fastlstm.LSTM(8, 48, num_layers=2, bidirectional=True, batch_first=True, seed=5)
    x = np.random.default_rng(6).standard_normal((120, 9, 8)).astype(np.float32)
    # a key of its own: with the default content hash, the three cases would scatter to one key, which the
    # scheduler may still be releasing for the previous case
    remote = dask_client.scatter(model, broadcast=True, hash=False)
    dx = da.from_array(x, chunks=(chunk, -1, -1))
    encoded = dx.map_blocks(encode, remote, drop_axis=1, chunks=(dx.chunks[0], (96,)), dtype=np.float32,
                            meta=np.empty((0, 0), np.float32))
    got = dask_client.compute(encoded).result(timeout=120)
    want = np.concatenate([encode(x[lo:lo + chunk], model) for lo in range(0, len(x), chunk)])
    assert_bitwise_equal(got, want, name=f"chunks of {chunk}")


# ---- Ray ----------------------------------------------------------------------------------------


def test_ray_actors_follow_ray_and_match_one_process(require, tmp_path, monkeypatch):
    """Ray gives an actor of num_cpus=1 OMP_NUM_THREADS=1 and fastlstm follows it; a model shipped with ray.put
    gives the bits of this process. One short-lived local Ray, always shut down."""
    ray = require("ray")
    require("threadpoolctl")
    monkeypatch.chdir(tmp_path)  # Ray puts the driver's directory on its workers' sys.path: not the source tree
    model = fastlstm.LSTM(8, 48, num_layers=2, batch_first=True, seed=7)
    x = np.random.default_rng(8).standard_normal((2, 30, 9, 8)).astype(np.float32)

    class Encoder:  # defined here, so that it travels by value (the workers cannot import this test module)
        def __init__(self, model):
            self.model = model

        def threads(self):
            import threadpoolctl

            pools = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["internal_api"] == "fastlstm"]
            return fastlstm.get_num_threads(), os.environ.get("OMP_NUM_THREADS"), pools

        def encode(self, chunk):
            return self.model(chunk)[0].mean(axis=1)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        remote_model = ray.put(model)
        actors = [ray.remote(num_cpus=1)(Encoder).remote(remote_model) for _ in range(2)]
        reports = ray.get([a.threads.remote() for a in actors], timeout=180)
        results = ray.get([a.encode.remote(chunk) for a, chunk in zip(actors, x)], timeout=180)
    finally:
        ray.shutdown()
    assert all(report == (1, "1", [1]) for report in reports), reports
    for chunk, got in zip(x, results):
        assert_bitwise_equal(got, encode(chunk, model), name="actor result")
