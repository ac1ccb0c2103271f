"""fastlstm against torch.nn.LSTM, the semantics it promises: modules with random weights (torch.manual_seed)
converted by fastlstm.LSTM.from_torch, run under torch.inference_mode(); the full configuration grid, sizes
from 1 to a few hundred, lengths against pack_padded_sequence(enforce_sorted=False), state_dict parity.

torch is a peer: without it these tests skip, except under CI where they fail (see conftest.require).
"""
from __future__ import annotations

import numpy as np
import pytest

import fastlstm
from conftest import assert_bitwise_equal, assert_close, assert_forward_close, make_inputs, tol

DTYPES = [np.float32, np.float64]

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")


@pytest.fixture(scope="module")
def torch(require):
    return require("torch")


def torch_lstm(torch, I, H, L=1, *, seed=0, dtype=np.float32, **kwargs):
    torch.manual_seed(seed)
    tdtype = torch.float64 if np.dtype(dtype) == np.float64 else torch.float32
    return torch.nn.LSTM(I, H, L, dtype=tdtype, **kwargs).eval()


def torch_forward(torch, module, x, hx=None, lengths=None):
    """torch's answer as NumPy: ``output, (h_n, c_n)``; lengths through pack_padded_sequence."""
    with torch.inference_mode():
        tx = torch.from_numpy(np.ascontiguousarray(x))
        thx = None if hx is None else tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in hx)
        if lengths is None:
            out, (hn, cn) = module(tx, thx)
        else:
            T = x.shape[1] if module.batch_first else x.shape[0]
            packed = torch.nn.utils.rnn.pack_padded_sequence(
                tx, torch.as_tensor(np.asarray(lengths), dtype=torch.int64), batch_first=module.batch_first,
                enforce_sorted=False,
            )
            out, (hn, cn) = module(packed, thx)
            out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=module.batch_first, total_length=T)
        return out.numpy(), (hn.numpy(), cn.numpy())


# ---- the full grid ------------------------------------------------------------------------------


@pytest.mark.parametrize("lengths", [False, True], ids=["nolen", "len"])
@pytest.mark.parametrize("hx", [False, True], ids=["nohx", "hx"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tb", "bt"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("proj_size", [0, 6], ids=["noproj", "proj"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2, 3], ids=["L1", "L2", "L3"])
def test_grid_matches_torch(torch, num_layers, bidirectional, proj_size, bias, batch_first, dtype, hx, lengths):
    I, H, T, B = 5, 19, 6, 5
    seed = num_layers * 100 + bidirectional * 10 + proj_size + bias
    module = torch_lstm(
        torch, I, H, num_layers, seed=seed, dtype=dtype, bias=bias, batch_first=batch_first,
        bidirectional=bidirectional, proj_size=proj_size,
    )
    fast = fastlstm.LSTM.from_torch(module)
    args = make_inputs(fast, T, B, rng=np.random.default_rng(seed + 1000 * hx + 2000 * lengths), hx=hx, lengths=lengths)
    got = fast(args["x"], args["hx"], lengths=args["lengths"])
    want = torch_forward(torch, module, args["x"], args["hx"], args["lengths"])
    assert_forward_close(got, want, dtype)
    if lengths:  # torch's padded rows are zero too: exactly, not just close
        out = got[0].transpose(1, 0, 2) if batch_first else got[0]
        for b, L in enumerate(args["lengths"]):
            assert np.all(out[L:, b] == 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("hx", [False, True], ids=["nohx", "hx"])
@pytest.mark.parametrize("num_layers,bidirectional,proj_size", [(1, False, 0), (2, True, 4), (3, True, 0)])
def test_unbatched_matches_torch(torch, num_layers, bidirectional, proj_size, hx, dtype):
    module = torch_lstm(torch, 4, 10, num_layers, seed=5, dtype=dtype, bidirectional=bidirectional, proj_size=proj_size)
    fast = fastlstm.LSTM.from_torch(module)
    args = make_inputs(fast, 7, 1, rng=np.random.default_rng(6), hx=hx, unbatched=True)
    got = fast(args["x"], args["hx"])
    assert got[0].ndim == 2 and got[1][0].ndim == 2
    assert_forward_close(got, torch_forward(torch, module, args["x"], args["hx"]), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize(
    "I,H,P,T,B,L,bi,use_lengths",
    [
        (1, 1, 0, 1, 1, 1, False, False),
        (1, 1, 0, 1, 1, 1, True, True),
        (2, 2, 1, 1, 1, 3, True, False),
        (3, 7, 0, 9, 2, 2, True, True),
        (8, 33, 0, 5, 3, 1, False, True),
        (8, 70, 17, 4, 11, 2, True, True),
        (32, 128, 0, 10, 16, 2, False, False),
        (50, 300, 0, 6, 40, 1, True, True),
        (64, 256, 100, 5, 32, 2, True, True),
        (100, 200, 0, 40, 20, 1, False, True),
    ],
)
def test_sizes_match_torch(torch, I, H, P, T, B, L, bi, use_lengths, dtype):
    module = torch_lstm(torch, I, H, L, seed=H + T, dtype=dtype, bidirectional=bi, proj_size=P)
    fast = fastlstm.LSTM.from_torch(module)
    args = make_inputs(fast, T, B, rng=np.random.default_rng(H), hx=True, lengths=use_lengths)
    got = fast(args["x"], args["hx"], lengths=args["lengths"])
    assert_forward_close(got, torch_forward(torch, module, args["x"], args["hx"], args["lengths"]), dtype)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_lengths_with_padding_garbage_match_torch(torch, bidirectional):
    module = torch_lstm(torch, 3, 12, 2, seed=8, bidirectional=bidirectional, batch_first=True)
    fast = fastlstm.LSTM.from_torch(module)
    args = make_inputs(fast, 6, 4, rng=np.random.default_rng(9), hx=True, lengths=True)
    want = torch_forward(torch, module, args["x"], args["hx"], args["lengths"])
    x = args["x"].copy()
    for b, L in enumerate(args["lengths"]):
        x[b, L:] = np.nan  # batch_first: (B, T, I)
    got = fast(x, args["hx"], lengths=args["lengths"])
    assert_forward_close(got, want, np.float32)


# ---- from_torch ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tb", "bt"])
def test_from_torch_keeps_configuration(torch, batch_first, dtype):
    module = torch_lstm(torch, 3, 8, 2, seed=1, dtype=dtype, batch_first=batch_first, bidirectional=True,
                        proj_size=4, bias=False)
    fast = fastlstm.LSTM.from_torch(module)
    assert fast.batch_first is batch_first
    assert fast.dtype == np.dtype(dtype)
    assert (fast.input_size, fast.hidden_size, fast.num_layers, fast.proj_size) == (3, 8, 2, 4)
    assert fast.bidirectional is True and fast.direction == "bidirectional" and fast.bias is False
    for name, value in module.state_dict().items():
        got = getattr(fast, name)
        assert got.dtype == np.dtype(dtype)
        assert_bitwise_equal(got, value.detach().numpy(), name=name)


def test_from_torch_copies_the_weights(torch):
    module = torch_lstm(torch, 3, 8, seed=1)
    fast = fastlstm.LSTM.from_torch(module)
    before = fast.state_dict()
    with torch.no_grad():
        module.weight_ih_l0.add_(1.0)
    for name, value in fast.state_dict().items():
        assert_bitwise_equal(value, before[name], name=name)


def test_from_torch_rejects_other_modules(torch):
    for module in (torch.nn.GRU(3, 4), torch.nn.RNN(3, 4), torch.nn.Linear(3, 4), torch.nn.GRUCell(3, 4)):
        with pytest.raises(TypeError):
            fastlstm.LSTM.from_torch(module)
    with pytest.raises(TypeError):
        fastlstm.LSTM.from_torch(np.zeros((4, 3)))


@pytest.mark.parametrize("tdtype", ["float16", "bfloat16"])
def test_from_torch_rejects_half_precision(torch, tdtype):
    module = torch.nn.LSTM(3, 4).to(getattr(torch, tdtype))
    with pytest.raises(ValueError, match="dtype"):
        fastlstm.LSTM.from_torch(module)


def test_reference_from_torch(torch):
    module = torch_lstm(torch, 4, 9, 2, seed=2, dtype=np.float64, bidirectional=True, proj_size=3)
    ref = fastlstm.reference.LSTM.from_torch(module)
    assert isinstance(ref, fastlstm.reference.LSTM)
    args = make_inputs(ref, 5, 3, rng=np.random.default_rng(0), hx=True, lengths=True)
    assert_forward_close(ref(args["x"], args["hx"], lengths=args["lengths"]),
                         torch_forward(torch, module, args["x"], args["hx"], args["lengths"]), np.float64)


# ---- state_dict parity --------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("num_layers,bidirectional,proj_size", [(1, False, 0), (2, True, 0), (3, True, 3), (2, False, 5)])
def test_state_dict_keys_shapes_and_order_match_torch(torch, num_layers, bidirectional, proj_size, bias):
    kw = dict(bias=bias, bidirectional=bidirectional, proj_size=proj_size)
    module = torch.nn.LSTM(4, 8, num_layers, **kw)
    fast = fastlstm.LSTM(4, 8, num_layers, seed=0, **kw)
    want = [(k, tuple(v.shape)) for k, v in module.state_dict().items()]
    got = [(k, v.shape) for k, v in fast.state_dict().items()]
    assert got == want
    for k, shape in want:
        assert getattr(fast, k).shape == shape


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("num_layers,bidirectional,proj_size,bias", [(1, False, 0, True), (2, True, 3, False), (3, True, 0, True)])
def test_load_state_dict_from_torch(torch, num_layers, bidirectional, proj_size, bias, dtype):
    module = torch_lstm(torch, 4, 8, num_layers, seed=3, dtype=dtype, bidirectional=bidirectional,
                        proj_size=proj_size, bias=bias)
    fast = fastlstm.LSTM(4, 8, num_layers, seed=99, dtype=dtype, bidirectional=bidirectional,
                         proj_size=proj_size, bias=bias)
    fast.load_state_dict({k: v.numpy() for k, v in module.state_dict().items()})
    args = make_inputs(fast, 6, 3, rng=np.random.default_rng(1), hx=True, lengths=True)
    assert_forward_close(fast(args["x"], args["hx"], lengths=args["lengths"]),
                         torch_forward(torch, module, args["x"], args["hx"], args["lengths"]), dtype)
    # and back: torch loads fastlstm's state_dict and gives the same numbers
    other = torch_lstm(torch, 4, 8, num_layers, seed=4, dtype=dtype, bidirectional=bidirectional,
                       proj_size=proj_size, bias=bias)
    other.load_state_dict({k: torch.from_numpy(v) for k, v in fast.state_dict().items()})
    out_t, _ = torch_forward(torch, other, args["x"], args["hx"])
    out_f, _ = fast(args["x"], args["hx"])
    assert_close(out_f, out_t, atol=tol(dtype), name="output after loading fastlstm's weights into torch")
