"""Streaming: Stream.step gives the same numbers as one forward call; out= allocates nothing; state/reset."""
import tracemalloc

import numpy as np
import pytest

import fastlstm

CONFIGS = [
    dict(),
    dict(num_layers=3),
    dict(num_layers=2, proj_size=3),
    dict(peepholes=True, clip=0.8, input_forget=True),
    dict(num_layers=2, dtype=np.float64),
    dict(batch_first=True, bias=False),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("with_hx", [False, True])
def test_steps_equal_forward_bitwise(config, batch, with_hx):
    rng = np.random.default_rng(0)
    model = fastlstm.LSTM(6, 9, seed=1, **config)
    T, L = 7, model.num_layers
    x = rng.standard_normal((T, batch, 6)).astype(model.dtype)
    hx = (rng.standard_normal((L, batch, model.out_size)), rng.standard_normal((L, batch, 9))) if with_hx else None
    x_call = x.transpose(1, 0, 2) if model.batch_first else x
    output, (h_n, c_n) = model(x_call, hx)
    stream = model.stream(batch, hx)
    steps = np.stack([stream.step(x[t]) for t in range(T)])
    expected = output.transpose(1, 0, 2) if model.batch_first else output
    assert np.array_equal(steps, expected)
    h, c = stream.state
    assert np.array_equal(h, h_n) and np.array_equal(c, c_n)


def test_steps_match_reference_and_torch_shapes():
    rng = np.random.default_rng(1)
    model = fastlstm.LSTM(4, 5, 2, seed=3)
    ref = fastlstm.reference.LSTM(4, 5, 2, seed=3)
    x = rng.standard_normal((6, 2, 4)).astype(np.float32)
    stream = model.stream(2)
    steps = np.stack([stream.step(x[t]) for t in range(6)])
    np.testing.assert_allclose(steps, ref(x)[0], atol=2e-5)
    assert steps.shape == (6, 2, 5)


def test_out_is_returned_and_written():
    model = fastlstm.LSTM(3, 4, seed=0)
    stream = model.stream(2)
    out = np.empty((2, 4), np.float32)
    x = np.ones((2, 3), np.float32)
    result = stream.step(x, out=out)
    assert result is out
    np.testing.assert_array_equal(out, model(x[None])[0][0])


def test_step_with_out_allocates_no_array_data():
    model = fastlstm.LSTM(16, 32, 2, seed=0)
    stream = model.stream(3)
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    out = np.empty((3, 32), np.float32)
    stream.step(x, out=out)  # first step: nothing lazy left
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(50):
            stream.step(x, out=out)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    numpy_data = [tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)]
    grown = after.filter_traces(numpy_data).compare_to(before.filter_traces(numpy_data), "filename")
    assert sum(stat.count_diff for stat in grown) == 0
    # while a step without out= allocates its result
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        kept = [stream.step(x) for _ in range(5)]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = after.filter_traces(numpy_data).compare_to(before.filter_traces(numpy_data), "filename")
    assert sum(stat.count_diff for stat in grown) >= len(kept)


def test_state_is_a_copy_and_reset():
    rng = np.random.default_rng(2)
    model = fastlstm.LSTM(3, 4, 2, seed=0)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    stream = model.stream(2)
    first = stream.step(x).copy()
    h, c = stream.state
    h[...] = 99.0
    assert not np.array_equal(stream.state[0], h)
    stream.step(x)
    stream.reset()
    np.testing.assert_array_equal(stream.step(x), first)
    hx = (rng.standard_normal((2, 2, 4)), rng.standard_normal((2, 2, 4)))
    stream.reset(hx)
    np.testing.assert_array_equal(stream.step(x), model(x[None], hx)[0][0])


def test_streams_are_independent():
    rng = np.random.default_rng(3)
    model = fastlstm.LSTM(3, 4, seed=0)
    xs = rng.standard_normal((5, 1, 3)).astype(np.float32)
    a, b = model.stream(), model.stream()
    outs_a = []
    for t in range(5):
        outs_a.append(a.step(xs[t]).copy())
        b.step(xs[4 - t])
        model(rng.standard_normal((3, 2, 3)))
    np.testing.assert_array_equal(np.stack(outs_a), model(xs)[0])


def test_stream_follows_parameter_assignment():
    model = fastlstm.LSTM(3, 4, seed=0)
    stream = model.stream()
    x = np.ones((1, 3), np.float32)
    stream.step(x)
    model.weight_hh_l0 = np.zeros((16, 4))
    stream.reset()
    np.testing.assert_array_equal(stream.step(x), model(x[None])[0][0])


class _Subclass(np.ndarray):
    pass


def _misaligned(a):
    """a's values in an array whose data starts one byte past an aligned address (C-contiguous, unaligned)."""
    buf = np.zeros(a.nbytes + 1, np.uint8)
    view = np.frombuffer(buf.data, a.dtype, a.size, offset=1).reshape(a.shape)
    view[...] = a
    return view


STEP_INPUTS = {
    "byte-swapped": lambda x: x.astype(x.dtype.newbyteorder()),
    "strided": lambda x: np.repeat(x, 2, axis=1)[:, ::2],
    "fortran": lambda x: np.asfortranarray(x),
    "unaligned": _misaligned,
    "float64": lambda x: x.astype(np.float64),
    "list": lambda x: x.tolist(),
    "subclass": lambda x: x.view(_Subclass),
}


@pytest.mark.parametrize("kind", STEP_INPUTS)
@pytest.mark.parametrize("with_out", [False, True])
def test_every_kind_of_step_input_gives_the_same_bits(kind, with_out):
    # step() runs plain arrays of the model's dtype and shapes without leaving C and hands every other input
    # to the checked path: both must give the bits of the plain call
    rng = np.random.default_rng(4)
    model = fastlstm.LSTM(5, 7, 2, seed=2)
    plain, other = model.stream(3), model.stream(3)
    for _ in range(4):
        x = rng.standard_normal((3, 5)).astype(np.float32)
        expected = plain.step(x).copy()
        out = np.full((3, 7), np.nan, np.float32) if with_out else None
        got = other.step(STEP_INPUTS[kind](x), out=out)
        assert np.array_equal(got, expected)
        assert got is out or not with_out
    for a, b in zip(plain.state, other.state):
        assert np.array_equal(a, b)


def test_bad_out_with_a_plain_input():
    stream = fastlstm.LSTM(3, 4).stream(2)
    x = np.ones((2, 3), np.float32)
    frozen = np.empty((2, 4), np.float32)
    frozen.flags.writeable = False
    swapped = np.empty((2, 4), np.dtype(np.float32).newbyteorder())
    for bad in (np.empty((2, 5), np.float32), np.empty((4, 2), np.float32).T, frozen, swapped, [[0.0] * 4] * 2):
        with pytest.raises(ValueError, match="out must be"):
            stream.step(x, out=bad)


@pytest.mark.parametrize("direction", ["bidirectional", "reverse"])
def test_only_forward_models_stream(direction):
    model = fastlstm.LSTM(3, 4, direction=direction)
    with pytest.raises(ValueError, match="forward"):
        model.stream()


def test_step_errors():
    model = fastlstm.LSTM(3, 4)
    stream = model.stream(2)
    with pytest.raises(ValueError, match=r"x_t: expected shape \(2, 3\)"):
        stream.step(np.ones((1, 3)))
    with pytest.raises(TypeError, match="x_t"):
        stream.step(np.ones((2, 3), dtype=bool))
    for bad in (np.empty((2, 5), np.float32), np.empty((2, 4), np.float64), np.empty((4, 2), np.float32).T):
        with pytest.raises(ValueError, match="out must be"):
            stream.step(np.ones((2, 3)), out=bad)
    frozen = np.empty((2, 4), np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="out must be"):
        stream.step(np.ones((2, 3)), out=frozen)
    with pytest.raises(ValueError, match="batch_size"):
        model.stream(0)
    for wrong_type in (2.0, True, "2", None):
        with pytest.raises(TypeError, match="batch_size"):
            model.stream(wrong_type)
    with pytest.raises(ValueError, match="batch_size must be at most 2147483647"):
        model.stream(2**31)  # before any allocation: the kernels count rows in a C int
    with pytest.raises(ValueError, match=r"Expected hidden\[0\] size"):
        stream.reset((np.zeros((1, 3, 4)), np.zeros((1, 2, 4))))
