"""fastlstm.LSTM against its oracle, fastlstm.reference.LSTM (float64 NumPy, step by step), built from the
same seed: every forward path (layers x directions x projection x bias x layout x dtype x hx x lengths),
unbatched and empty inputs, odd and larger sizes, input kinds, lengths semantics, NaN/inf, and every
instruction set the CPU has (FASTLSTM_ISA is read at import time, so each ISA runs in a subprocess).
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import fastlstm
from fastlstm._lstm import _plan_key
from conftest import (
    assert_bitwise_equal,
    assert_close,
    assert_forward_bitwise,
    assert_forward_close,
    call,
    make_inputs,
    model_pair,
    run_python,
    tol,
)

DTYPES = [np.float32, np.float64]


def _rng(*key) -> np.random.Generator:
    """A generator seeded from a test's parameters: every case has its own, reproducible data."""
    seed = [int(k) if isinstance(k, (bool, int, np.integer)) else sum(map(ord, str(k))) for k in key]
    return np.random.default_rng(seed)


# ---- the full grid ------------------------------------------------------------------------------


@pytest.mark.parametrize("lengths", [False, True], ids=["nolen", "len"])
@pytest.mark.parametrize("hx", [False, True], ids=["nohx", "hx"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tb", "bt"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("proj_size", [0, 5], ids=["noproj", "proj"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2, 3], ids=["L1", "L2", "L3"])
def test_grid_matches_reference(num_layers, bidirectional, proj_size, bias, batch_first, dtype, hx, lengths):
    I, H, T, B = 4, 17, 6, 5
    fast, ref = model_pair(
        I, H, num_layers, seed=num_layers * 7 + proj_size, bias=bias, batch_first=batch_first,
        bidirectional=bidirectional, proj_size=proj_size, dtype=dtype,
    )
    rng = _rng(num_layers, bidirectional, proj_size, bias, batch_first, hx, lengths)
    args = make_inputs(fast, T, B, rng=rng, hx=hx, lengths=lengths)
    got = call(fast, args)
    want = call(ref, args)
    D = 2 if bidirectional else 1
    K = proj_size or H
    out_shape = (B, T, D * K) if batch_first else (T, B, D * K)
    assert got[0].shape == out_shape
    assert got[1][0].shape == (D * num_layers, B, K)
    assert got[1][1].shape == (D * num_layers, B, H)
    assert_forward_close(got, want, dtype)


# ---- unbatched input ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("lengths", [False, True], ids=["nolen", "len"])
@pytest.mark.parametrize("hx", [False, True], ids=["nohx", "hx"])
@pytest.mark.parametrize(
    "num_layers,bidirectional,proj_size,batch_first",
    [(1, False, 0, False), (2, True, 0, True), (3, True, 3, False), (2, False, 4, True)],
)
def test_unbatched_matches_reference_and_batched(num_layers, bidirectional, proj_size, batch_first, hx, lengths, dtype):
    I, H, T = 3, 9, 7
    fast, ref = model_pair(
        I, H, num_layers, seed=3, bidirectional=bidirectional, proj_size=proj_size, batch_first=batch_first, dtype=dtype
    )
    args = make_inputs(fast, T, 1, rng=_rng(num_layers, hx, lengths), hx=hx, lengths=lengths, unbatched=True)
    if lengths:
        args["lengths"] = np.array([T - 2])  # shape (1,), shorter than T
    got = call(fast, args)
    want = call(ref, args)
    D = 2 if bidirectional else 1
    K = proj_size or H
    assert got[0].shape == (T, D * K)
    assert got[1][0].shape == (D * num_layers, K)
    assert got[1][1].shape == (D * num_layers, H)
    assert_forward_close(got, want, dtype)
    # the same call with a batch axis of 1 gives the same numbers
    x3 = args["x"][None] if batch_first else args["x"][:, None]
    hx3 = None if args["hx"] is None else (args["hx"][0][:, None], args["hx"][1][:, None])
    out3, (h3, c3) = fast(x3, hx3, lengths=args["lengths"])
    out3 = out3[0] if batch_first else out3[:, 0]
    assert_forward_close(got, (out3, (h3[:, 0], c3[:, 0])), dtype, what="unbatched vs batched B=1")


def test_unbatched_lengths_scalar_and_list():
    fast, ref = model_pair(2, 5, 1, seed=1, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((6, 2))
    want = ref(x, lengths=[4])
    for lengths in ([4], (4,), np.array([4], np.int16)):
        assert_forward_close(fast(x, lengths=lengths), want, np.float64, what=f"lengths={lengths!r}")


# ---- empty inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("hx", [False, True], ids=["nohx", "hx"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tb", "bt"])
@pytest.mark.parametrize("num_layers,bidirectional,proj_size", [(1, False, 0), (2, True, 3)])
@pytest.mark.parametrize("T,B", [(0, 3), (4, 0), (0, 0)])
def test_empty_time_or_batch(T, B, num_layers, bidirectional, proj_size, batch_first, hx, dtype):
    I, H = 3, 6
    fast, ref = model_pair(
        I, H, num_layers, seed=2, bidirectional=bidirectional, proj_size=proj_size, batch_first=batch_first, dtype=dtype
    )
    args = make_inputs(fast, T, B, rng=np.random.default_rng(5), hx=hx)
    out, (hn, cn) = call(fast, args)
    D = 2 if bidirectional else 1
    K = proj_size or H
    assert out.shape == ((B, T, D * K) if batch_first else (T, B, D * K))
    assert out.dtype == np.dtype(dtype)
    if hx:
        h0, c0 = args["hx"]
    else:
        h0, c0 = np.zeros((D * num_layers, B, K), dtype), np.zeros((D * num_layers, B, H), dtype)
    assert_bitwise_equal(hn, h0, name="h_n")
    assert_bitwise_equal(cn, c0, name="c_n")
    if hx:
        assert not np.shares_memory(hn, h0) and not np.shares_memory(cn, c0), "h_n/c_n must be new arrays"
    assert_forward_close((out, (hn, cn)), call(ref, args), dtype)


@pytest.mark.parametrize("hx", [False, True], ids=["nohx", "hx"])
def test_empty_unbatched(hx):
    fast, _ = model_pair(3, 6, 2, seed=2, bidirectional=True)
    args = make_inputs(fast, 0, 1, rng=np.random.default_rng(1), hx=hx, unbatched=True)
    out, (hn, cn) = call(fast, args)
    assert out.shape == (0, 12)
    assert hn.shape == (4, 6) and cn.shape == (4, 6)
    if hx:
        assert_bitwise_equal(hn, args["hx"][0], name="h_n")
        assert_bitwise_equal(cn, args["hx"][1], name="c_n")
    else:
        assert not hn.any() and not cn.any()


@pytest.mark.parametrize("lengths", [np.zeros(0, np.int64), []], ids=["int-array", "list"])
def test_empty_batch_with_empty_lengths(lengths):
    fast, _ = model_pair(3, 6, 1, seed=2)
    out, (hn, cn) = fast(np.zeros((5, 0, 3), np.float32), lengths=lengths)
    assert out.shape == (5, 0, 6) and hn.shape == (1, 0, 6) and cn.shape == (1, 0, 6)


# ---- sizes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize(
    "I,H,P,T,B,L,bi",
    [
        (1, 1, 0, 1, 1, 1, False),
        (1, 1, 0, 1, 1, 2, True),
        (2, 2, 1, 1, 1, 2, True),
        (3, 7, 0, 3, 2, 1, False),
        (5, 17, 0, 4, 3, 2, True),
        (4, 33, 16, 5, 4, 1, True),
        (6, 70, 0, 3, 9, 2, False),
        (6, 70, 33, 4, 7, 1, True),
        (40, 300, 0, 5, 40, 1, False),
        (64, 256, 100, 4, 17, 2, True),
        (16, 48, 0, 60, 40, 1, True),  # several chunks of the input projection
    ],
)
def test_sizes_match_reference(I, H, P, T, B, L, bi, dtype):
    fast, ref = model_pair(I, H, L, seed=H + P, bidirectional=bi, proj_size=P, dtype=dtype)
    args = make_inputs(fast, T, B, rng=_rng(I, H, P, T, B), hx=True, lengths=B > 1)
    assert_forward_close(call(fast, args), call(ref, args), dtype)


@pytest.mark.parametrize("H", [1, 7, 17, 33, 70])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_hidden_sizes_not_multiple_of_16(H, dtype):
    P = H // 3
    fast, ref = model_pair(5, H, 2, seed=H, bidirectional=True, proj_size=P, dtype=dtype)
    args = make_inputs(fast, 5, 6, rng=_rng(H), hx=True, lengths=True)
    assert_forward_close(call(fast, args), call(ref, args), dtype)


def _zero_padded(model: fastlstm.LSTM, hidden_size: int) -> fastlstm.LSTM:
    """A one-layer model with hidden_size >= model.hidden_size whose extra units have all-zero weights: its
    first model.hidden_size units compute exactly what the model's do (the extra units stay at h = c = 0)."""
    H, H2 = model.hidden_size, hidden_size
    kw = dict(peepholes=model.peepholes, clip=model.clip, input_forget=model.input_forget, dtype=model.dtype)
    padded = fastlstm.LSTM(model.input_size, H2, **kw)
    state = {}
    for name, value in model.state_dict().items():
        grown = np.zeros_like(padded.state_dict()[name])
        if name.startswith("weight_ph"):                     # (3, H)
            grown[:, :H] = value
        else:                                                # (4H,) or (4H, n) in gate blocks, n = I or H
            columns = (slice(0, value.shape[1]),) if value.ndim == 2 else ()
            grown.reshape((4, H2) + grown.shape[1:])[(slice(None), slice(0, H)) + columns] = value.reshape(
                (4, H) + value.shape[1:])
        state[name] = grown
    padded.load_state_dict(state)
    return padded


@pytest.mark.parametrize("extras", [{}, dict(peepholes=True, clip=0.8), dict(peepholes=True, input_forget=True)],
                         ids=["plain", "peep-clip", "peep-coupled"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_narrow_last_block_computes_the_bits_of_a_full_one(dtype, extras):
    """A last block at most half full is packed narrow (two gates per vector, see _packing.narrow_last_block).
    Its units must come out bit for bit as they do from a full block: compare with the same model padded
    with zero-weight units to a whole number of blocks. (Thread counts: test_threads, H = 17, 33, 70.)
    H is a multiple of 4, so that the 4 partial sums over k of a batch row alone (B = 5 ends with one) group
    the same terms in both models."""
    from fastlstm import _packing
    V = _packing.block_width(dtype)
    if V < 8:
        pytest.skip(f"blocks of {V} units: no narrow hidden size is a multiple of 4")
    H = 3 * V + V // 2
    assert _packing.narrow_last_block(H, V) and not _packing.narrow_last_block(4 * V, V)
    model, ref = model_pair(6, H, seed=H, dtype=dtype, **extras)
    padded = _zero_padded(model, 4 * V)
    rng = _rng("narrow", dtype, len(extras))
    x = rng.standard_normal((9, 5, 6)).astype(dtype)
    hx = (rng.standard_normal((1, 5, H)).astype(dtype), rng.standard_normal((1, 5, H)).astype(dtype))
    hx_padded = tuple(np.concatenate([a, np.zeros((1, 5, 4 * V - H), dtype)], axis=-1) for a in hx)
    lengths = [9, 3, 9, 1, 6]
    got = model(x, hx, lengths=lengths)
    out_p, (h_p, c_p) = padded(x, hx_padded, lengths=lengths)
    for name, a, e in zip(("output", "h_n", "c_n"), (got[0], *got[1]), (out_p, h_p, c_p)):
        assert_bitwise_equal(a, np.ascontiguousarray(e[..., :H]), name=name)
    assert_forward_close(got, ref(x, hx, lengths=lengths), dtype)


# ---- input kinds --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("int_dtype", [np.int8, np.uint8, np.int32, np.int64])
def test_integer_input_arrays(int_dtype, dtype):
    fast, ref = model_pair(3, 9, 2, seed=4, dtype=dtype, bidirectional=True)
    rng = np.random.default_rng(11)
    x = rng.integers(0, 4, size=(5, 2, 3)).astype(int_dtype)
    h0 = rng.integers(-2, 3, size=(4, 2, 9)).astype(int_dtype if np.dtype(int_dtype).kind == "i" else np.int16)
    c0 = rng.integers(-2, 3, size=(4, 2, 9)).astype(np.int64)
    got = fast(x, (h0, c0))
    assert got[0].dtype == np.dtype(dtype)
    assert_forward_bitwise(got, fast(x.astype(dtype), (h0.astype(dtype), c0.astype(dtype))), what="int vs float")
    assert_forward_close(got, ref(x, (h0, c0)), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_python_lists(dtype):
    fast, ref = model_pair(3, 6, 1, seed=4, dtype=dtype, proj_size=2)
    args = make_inputs(fast, 4, 3, rng=np.random.default_rng(2), hx=True, lengths=True)
    as_arrays = call(fast, args)
    x, (h0, c0), lengths = args["x"].tolist(), (args["hx"][0].tolist(), args["hx"][1].tolist()), args["lengths"].tolist()
    as_lists = fast(x, [h0, c0], lengths=tuple(lengths))
    assert_forward_bitwise(as_lists, as_arrays, what="lists vs arrays")
    assert_forward_close(as_lists, ref(x, (h0, c0), lengths=lengths), dtype)
    # an unbatched nested list of Python ints
    ints = [[1, 0, -1], [2, 3, 4]]
    assert_forward_close(fast(ints), ref(ints), dtype, what="list of ints")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_model_dtype_conversion_of_inputs(dtype):
    """x and hx of the other float dtype are converted to the model's dtype."""
    fast, _ = model_pair(3, 8, 1, seed=9, dtype=dtype)
    other = np.float64 if dtype == np.float32 else np.float32
    args = make_inputs(fast, 4, 2, rng=np.random.default_rng(3), hx=True)
    x, (h0, c0) = args["x"], args["hx"]
    got = fast(x.astype(other), (h0.astype(other), c0.astype(other)))
    want = fast(x.astype(other).astype(dtype), (h0.astype(other).astype(dtype), c0.astype(other).astype(dtype)))
    assert_forward_bitwise(got, want)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tb", "bt"])
def test_non_contiguous_and_readonly_inputs(batch_first, dtype):
    fast, ref = model_pair(4, 10, 2, seed=6, batch_first=batch_first, bidirectional=True, dtype=dtype)
    rng = np.random.default_rng(8)
    big = rng.standard_normal((12, 10, 8)).astype(dtype)
    views = {
        "strided": big[::2, ::2, ::2],
        "reversed": big[::-2, 1::2, 4:],
        "fortran": np.asfortranarray(big[:6, :5, :4]),
        "transposed": np.ascontiguousarray(big[:5, :6, :4].transpose(1, 0, 2)).transpose(1, 0, 2),
    }
    hbig = rng.standard_normal((4, 10, 20)).astype(dtype)
    for label, x in views.items():
        B = x.shape[0] if batch_first else x.shape[1]
        h0 = hbig[:, :B, ::2]
        c0 = np.asfortranarray(hbig[:, :B, 1::2])
        ro = [np.array(a) for a in (x, h0, c0)]
        for a in ro:
            a.flags.writeable = False
        want = ref(np.ascontiguousarray(x), (np.ascontiguousarray(h0), np.ascontiguousarray(c0)))
        assert_forward_close(fast(x, (h0, c0)), want, dtype, what=label)
        assert_forward_close(fast(ro[0], (ro[1], ro[2])), want, dtype, what=label + " read-only")


# ---- returned arrays are new, inputs are not modified -------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
def test_results_are_new_arrays_and_inputs_untouched(unbatched, dtype):
    fast, ref = model_pair(3, 8, 2, seed=12, dtype=dtype, proj_size=3, bidirectional=True)
    B = 1 if unbatched else 4
    rng = np.random.default_rng(13)
    a1 = make_inputs(fast, 5, B, rng=rng, hx=True, lengths=True, unbatched=unbatched)
    a2 = make_inputs(fast, 5, B, rng=rng, hx=True, lengths=True, unbatched=unbatched)
    saved = [np.copy(a) for a in (a1["x"], a1["hx"][0], a1["hx"][1], a1["lengths"])]
    r1 = call(fast, a1)
    for a, s in zip((a1["x"], a1["hx"][0], a1["hx"][1], a1["lengths"]), saved):
        assert_bitwise_equal(a, s, name="input after the call")
    out1, (hn1, cn1) = r1
    for res in (out1, hn1, cn1):
        for inp in (a1["x"], a1["hx"][0], a1["hx"][1]):
            assert not np.shares_memory(res, inp)
    assert not np.shares_memory(out1, hn1) and not np.shares_memory(hn1, cn1) and not np.shares_memory(out1, cn1)
    kept = [np.copy(a) for a in (out1, hn1, cn1)]
    r2 = call(fast, a2)  # a later call (reusing any cached workspace) leaves r1 alone
    for a, k in zip((out1, hn1, cn1), kept):
        assert_bitwise_equal(a, k, name="earlier result after a later call")
    for res2 in (r2[0], r2[1][0], r2[1][1]):
        for res1 in (out1, hn1, cn1):
            assert not np.shares_memory(res1, res2)
    # mutating a result changes nothing in later calls
    for a in (out1, hn1, cn1):
        a[...] = np.nan
    assert_forward_bitwise(call(fast, a2), r2, what="after mutating earlier results")
    assert_forward_close(call(fast, a1), call(ref, a1), dtype)


@pytest.mark.parametrize("batch_first", [False, True], ids=["tb", "bt"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_repeated_call_of_one_shape(dtype, batch_first):
    """The second call of a shape takes the cached plan (fastlstm.LSTM.__call__): new arrays with the same bits,
    the weights of the moment, and other kinds of call served in full."""
    fast, ref = model_pair(5, 19, 2, seed=4, bidirectional=True, batch_first=batch_first, dtype=dtype)
    rng = _rng("plan", dtype, batch_first)
    x = rng.standard_normal((3, 7, 5) if batch_first else (7, 3, 5)).astype(dtype)
    first = fast(x)
    assert _plan_key(x.shape, batch_first) in fast._constants, "the first call of a shape must leave its plan"
    second = fast(x)
    assert_forward_bitwise(second, first, what="second call of the shape")
    assert all(a is not b for a, b in zip((first[0], *first[1]), (second[0], *second[1])))
    assert_forward_close(second, ref(x), dtype)
    # new weights: the plan holds shapes and zero states only
    state = {k: v * 0.5 for k, v in fast.state_dict().items()}
    fast.load_state_dict(state)
    ref.load_state_dict(state)
    for attempt in ("first", "second"):  # the first call makes the new plan, the second takes it
        assert_forward_close(fast(x), ref(x), dtype, what=f"{attempt} call after load_state_dict")
    # the same shape in another dtype, in Fortran order, with hx or with lengths: the same numbers
    for variant in (x.astype(np.float32 if dtype == np.float64 else np.float64), np.asfortranarray(x)):
        assert_forward_close(fast(variant), ref(variant), dtype, what=f"{variant.dtype} {variant.flags.c_contiguous}")
    B = x.shape[0] if batch_first else x.shape[1]
    hx = (rng.standard_normal((4, B, 19)).astype(dtype), rng.standard_normal((4, B, 19)).astype(dtype))
    assert_forward_close(fast(x, hx), ref(x, hx), dtype, what="with hx")
    assert_forward_close(fast(x, lengths=[7, 2, 5]), ref(x, lengths=[7, 2, 5]), dtype, what="with lengths")
    with pytest.raises(ValueError, match="input_size"):
        fast(np.zeros(x.shape[:2] + (6,), dtype))


HX_VARIANTS = {
    "list": lambda h: h,  # (the pair itself becomes a list below)
    "read-only": lambda h: _read_only(h.copy()),
    "other dtype": lambda h: h.astype(np.float64 if h.dtype == np.float32 else np.float32),
    "strided": lambda h: np.repeat(h, 2, axis=-1)[..., ::2],
    "byte-swapped": lambda h: h.astype(h.dtype.newbyteorder()),
    "nested lists": lambda h: h.tolist(),
}


def _read_only(a):
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_repeated_call_with_hx(dtype, batched):
    """Calls with hx take the cached plan too when hx is a pair of arrays of the model's dtype in C order, batched
    or not: the torch habit of stepping with ``lstm(x_t[None], hx)`` gives the bits of one call over the
    sequence, and every other kind of hx gives the bits of the same values converted first."""
    fast, ref = model_pair(4, 21, 2, seed=6, proj_size=5, dtype=dtype)
    rng = _rng("plan hx", dtype, batched)
    T, B = 6, 3 if batched else 1
    rows = (B,) if batched else ()
    x = rng.standard_normal((T, *rows, 4)).astype(dtype)
    hx = (rng.standard_normal((2, *rows, 5)).astype(dtype), rng.standard_normal((2, *rows, 21)).astype(dtype))
    whole = fast(x, hx)
    assert_forward_close(whole, ref(x, hx), dtype)
    outputs, state = [], hx
    for t in range(T):  # the first step is checked and leaves the plan of shape (1, B, 4); the others take it
        out, state = fast(x[t:t + 1], state)
        outputs.append(out)
    assert _plan_key((1, *rows, 4), False) in fast._constants
    assert_forward_bitwise((np.concatenate(outputs), state), whole, what="steps with hx")
    step = (x[:1], hx)
    first = fast(*step)
    for kind, convert in HX_VARIANTS.items():
        h0, c0 = convert(hx[0]), convert(hx[1])
        pair = [h0, c0] if kind == "list" else (h0, c0)
        converted = tuple(np.asarray(h, dtype) for h in (h0, c0))
        assert_forward_bitwise(fast(x[:1], pair), fast(x[:1], converted), what=kind)
    assert_forward_bitwise(fast(*step), first, what="after the variants")
    with pytest.raises(ValueError, match=r"Expected hidden\[0\] size"):
        fast(x[:1], (hx[0][..., :2], hx[1]))
    with pytest.raises(ValueError, match=r"Expected hidden\[1\] size"):
        fast(x[:1], (hx[0], hx[1][..., :20]))
    with pytest.raises(TypeError, match="hx must be a tuple"):
        fast(x[:1], (hx[0], hx[1], hx[1]))
    with pytest.raises(TypeError, match="hx must be a tuple"):
        fast(x[:1], hx[0])


LENGTHS_KINDS = {
    "int32": lambda v: np.array(v, np.int32),
    "int64": lambda v: np.array(v, np.int64),
    "list": list,
    "tuple": tuple,
    "int16 (checked path)": lambda v: np.array(v, np.int16),
    "list of numpy ints": lambda v: [np.int64(a) for a in v],
    "list of bools and ints (checked path)": lambda v: [True if a == 1 else a for a in v],
}
X_KINDS = {
    "float64": lambda x: x.astype(np.float64),
    "float32": lambda x: x.astype(np.float32),
    "int": lambda x: (x * 4).astype(np.int64),
    "fortran": np.asfortranarray,
    "byte-swapped": lambda x: x.astype(x.dtype.newbyteorder()),
    "strided": lambda x: np.repeat(x, 2, axis=-1)[..., ::2],
}


@pytest.mark.parametrize("B", [5, 70], ids=["B5", "B70"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_repeated_call_with_lengths_and_converted_inputs(dtype, B):
    """The cached plan also takes lengths (int32/int64 arrays, lists or tuples of ints; on the stack up to 64
    rows, in an array beyond) and inputs of another dtype or layout, converted as the checked path converts
    them: every kind gives the bits of the checked call, and every bad value still raises the checked path's
    error."""
    fast, ref = model_pair(3, 12, 2, seed=8, dtype=dtype)

    def checked(*args, **kwargs):
        """The call on a copy of the model, whose first call of a shape takes the checked path."""
        return pickle.loads(pickle.dumps(fast))(*args, **kwargs)

    rng = _rng("plan lengths", dtype, B)
    T = 6
    x = rng.standard_normal((T, B, 3)).astype(dtype)
    values = [int(v) for v in rng.integers(1, T + 1, B)]
    first = fast(x, lengths=np.array(values))  # checked: leaves the plan of x's shape
    assert _plan_key(x.shape, False) in fast._constants
    assert_forward_close(first, ref(x, lengths=values), dtype)
    for kind, make in LENGTHS_KINDS.items():
        assert_forward_bitwise(fast(x, lengths=make(values)), first, what=f"lengths as {kind}")
    hx = fast(x)[1]
    for kind, convert in X_KINDS.items():
        assert_forward_bitwise(fast(convert(x), hx), checked(convert(x), hx), what=f"x as {kind}")
        hx_kind = tuple(convert(h) for h in hx)
        assert_forward_bitwise(fast(x, hx_kind, lengths=values), checked(x, hx_kind, lengths=values),
                               what=f"hx as {kind}")
    bad = [0] + values[1:]
    with pytest.raises(ValueError, match="lengths: expected 1 <= lengths"):
        fast(x, lengths=np.array(bad))
    with pytest.raises(ValueError, match="lengths: expected 1 <= lengths"):
        fast(x, lengths=[T + 1] + values[1:])
    with pytest.raises(ValueError, match=r"lengths: expected shape \(%d,\)" % B):
        fast(x, lengths=values[1:])
    with pytest.raises(TypeError, match="lengths must be integers"):
        fast(x, lengths=np.ones(B, bool))
    with pytest.raises(TypeError, match="lengths must be integers"):
        fast(x, lengths=[1.5] * B)
    with pytest.raises(TypeError, match="lengths must be integers"):  # np.asarray makes this float64
        fast(x, lengths=[np.uint64(values[0])] + values[1:])
    with pytest.raises(TypeError, match="input must hold integers or floats"):
        fast(x.astype(np.complex64))


@pytest.mark.parametrize("layout", ["time-major", "batch-first", "unbatched"])
def test_calls_of_any_length_share_one_plan(layout):
    """A plan is kept per batch and input size, not per T: calls of other lengths (T = 1 too, with its own
    thread rule) take it and give the bits of the checked call; T = 0 still takes the checked path."""
    batch_first = layout == "batch-first"
    fast = fastlstm.LSTM(3, 20, 2, seed=9, batch_first=batch_first, proj_size=6)
    rng = _rng("plan T", layout)
    B = 5

    def make(T):
        if layout == "unbatched":
            return rng.standard_normal((T, 3)).astype(np.float32)
        return rng.standard_normal((B, T, 3) if batch_first else (T, B, 3)).astype(np.float32)

    fast(make(4))
    keys = [k for k in fast._constants if k[0].startswith("plan")]
    assert len(keys) == 1
    for T in (1, 9, 2, 1, 30):
        x = make(T)
        checked = pickle.loads(pickle.dumps(fast))  # a copy: its first call of a shape is checked
        plain = fast(x)
        assert_forward_bitwise(plain, checked(x), what=f"T={T}")
        lengths = None if layout == "unbatched" else [T] + [max(1, T - b) for b in range(1, B)]
        hx = plain[1]
        want = pickle.loads(pickle.dumps(fast))(x, hx, lengths=lengths)
        assert_forward_bitwise(fast(x, hx, lengths=lengths), want, what=f"T={T} with hx and lengths")
    assert [k for k in fast._constants if k[0].startswith("plan")] == keys, "one plan serves every T"
    empty = make(0)
    out, (h_n, c_n) = fast(empty)
    assert out.shape == empty.shape[:-1] + (6,) and not h_n.any() and not c_n.any()


def test_plan_follows_a_changed_batch_first():
    """batch_first may be changed between calls: a square input (T == B) then takes the other layout's plan."""
    fast = fastlstm.LSTM(3, 10, seed=10)
    x = _rng("batch_first flip").standard_normal((4, 4, 3)).astype(np.float32)
    fast(x)
    fast.batch_first = True
    assert_forward_bitwise(fast(x), pickle.loads(pickle.dumps(fast))(x), what="batch-first after the flip")
    fast.batch_first = False
    assert_forward_bitwise(fast(x), pickle.loads(pickle.dumps(fast))(x), what="time-major again")


def test_plan_follows_the_thread_settings(monkeypatch):
    """A plan keeps its thread counts (for T = 1 and T > 1) until set_num_threads changes the setting (or the
    process forks)."""
    from fastlstm import _threads

    monkeypatch.setattr(_threads, "_override", _threads._override)
    asked = []
    real = _threads.effective_threads
    monkeypatch.setattr(_threads, "effective_threads", lambda *a, **k: asked.append(a) or real(*a, **k))
    model = fastlstm.LSTM(3, 40, seed=0)
    x = np.ones((5, 2, 3), np.float32)
    expected = model(x)  # checked: asks once, and leaves the plan
    for _ in range(3):
        assert_forward_bitwise(model(x), expected)
    assert len(asked) == 3, "the plan asks (for T = 1 and T > 1) at its first run only"
    fastlstm.set_num_threads(1)
    assert_forward_bitwise(model(x), expected)
    assert_forward_bitwise(model(x), expected)
    assert len(asked) == 5, "a new setting is asked about once"
    monkeypatch.setattr(_threads, "_forked_child", True)
    assert_forward_bitwise(model(x), expected)
    assert len(asked) == 7


# ---- NaN and inf --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("bidirectional,proj_size,num_layers", [(False, 0, 1), (True, 0, 2), (True, 4, 2)])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_input_stays_in_its_row(bad, bidirectional, proj_size, num_layers, dtype):
    I, H, T, B = 3, 20, 6, 5
    fast, ref = model_pair(I, H, num_layers, seed=21, bidirectional=bidirectional, proj_size=proj_size, dtype=dtype)
    args = make_inputs(fast, T, B, rng=np.random.default_rng(22), hx=True, lengths=True)
    clean = call(ref, args)
    row = 2
    dirty = dict(args, x=args["x"].copy())
    dirty["x"][3, row, 1] = bad
    got = call(fast, dirty)  # never raises
    others = [b for b in range(B) if b != row]
    out, (hn, cn) = got
    assert_close(out[:, others], clean[0][:, others], atol=tol(dtype), name="output of clean rows")
    assert_close(hn[:, others], clean[1][0][:, others], atol=tol(dtype), name="h_n of clean rows")
    assert_close(cn[:, others], clean[1][1][:, others], atol=tol(dtype), name="c_n of clean rows")
    # the dirty row agrees with the reference, NaN where it has NaN
    assert_forward_close(got, call(ref, dirty), dtype, equal_nan=True, what="with non-finite input")
    if np.isnan(bad) and args["lengths"][row] > 3:
        assert np.isnan(out[3, row]).any(), "a NaN at a valid step must show in that step's output"
    # the model is not poisoned for later calls
    assert_forward_close(call(fast, args), clean, dtype, what="clean call after a non-finite one")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_all_nan_input_and_state_never_raise(dtype):
    fast, _ = model_pair(3, 20, 2, seed=1, bidirectional=True, proj_size=7, dtype=dtype)
    x = np.full((4, 3, 3), np.nan, dtype)
    h = (np.full((4, 3, 7), np.inf, dtype), np.full((4, 3, 20), -np.inf, dtype))
    out, (hn, cn) = fast(x, h, lengths=[4, 1, 2])
    assert out.shape == (4, 3, 14) and hn.shape == (4, 3, 7) and cn.shape == (4, 3, 20)
    assert np.all(out[1:, 1] == 0) and np.all(out[2:, 2] == 0), "rows past lengths must be zero even with NaN"


# ---- lengths semantics --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tb", "bt"])
@pytest.mark.parametrize("num_layers,bidirectional,proj_size", [(1, False, 0), (1, True, 0), (2, True, 5), (3, False, 4)])
def test_lengths_semantics(num_layers, bidirectional, proj_size, batch_first, dtype):
    I, H, T, B = 4, 18, 7, 6
    fast, ref = model_pair(
        I, H, num_layers, seed=31, bidirectional=bidirectional, proj_size=proj_size, batch_first=batch_first, dtype=dtype
    )
    rng = np.random.default_rng(32)
    args = make_inputs(fast, T, B, rng=rng, hx=True, lengths=True)
    lengths = np.array([T, 1, 3, T - 1, 2, 5])
    args["lengths"] = lengths
    out, (hn, cn) = got = call(fast, args)
    assert_forward_close(got, call(ref, args), dtype)
    tb_out = out.transpose(1, 0, 2) if batch_first else out
    x_tb = args["x"].transpose(1, 0, 2) if batch_first else args["x"]
    for b in range(B):
        L = lengths[b]
        assert np.all(tb_out[L:, b] == 0), f"row {b}: output past lengths[b] = {L} must be exactly zero"
        # each sequence on its own, cut to its length, gives the same output and final state
        xb = x_tb[:L, b : b + 1]
        if batch_first:
            xb = xb.transpose(1, 0, 2)
        ob, (hb, cb) = fast(xb, (args["hx"][0][:, b : b + 1], args["hx"][1][:, b : b + 1]))
        ob = ob[0] if batch_first else ob[:, 0]
        assert_close(tb_out[:L, b], ob, atol=tol(dtype), name=f"output row {b} vs the sequence alone")
        assert_close(hn[:, b], hb[:, 0], atol=tol(dtype), name=f"h_n row {b} vs the sequence alone")
        assert_close(cn[:, b], cb[:, 0], atol=tol(dtype), name=f"c_n row {b} vs the sequence alone")
    # the padding is never read: NaN or huge values there change no bit of any result
    for pad in (np.nan, 1e30, -np.inf):
        padded = dict(args, x=np.copy(args["x"]))
        xp = padded["x"].transpose(1, 0, 2) if batch_first else padded["x"]
        for b in range(B):
            xp[lengths[b] :, b] = pad
        assert_forward_bitwise(call(fast, padded), got, what=f"padding filled with {pad}")
    # lengths all equal to T is the same as no lengths
    full = dict(args, lengths=np.full(B, T))
    assert_forward_bitwise(call(fast, full), call(fast, dict(args, lengths=None)), what="lengths == T")


@pytest.mark.parametrize("lengths_kind", ["list", "tuple", "int8", "uint16", "int32", "int64", "uint64"])
def test_lengths_accepts_any_integer_sequence(lengths_kind):
    fast, ref = model_pair(3, 7, 1, seed=3, bidirectional=True)
    args = make_inputs(fast, 5, 4, rng=np.random.default_rng(4), hx=False)
    values = [5, 2, 1, 4]
    lengths = {"list": values, "tuple": tuple(values)}.get(lengths_kind)
    if lengths is None:
        lengths = np.array(values, dtype=lengths_kind)
    got = fast(args["x"], lengths=lengths)
    assert_forward_bitwise(got, fast(args["x"], lengths=np.array(values, np.int64)), what=lengths_kind)
    assert_forward_close(got, ref(args["x"], lengths=values), np.float32)


# ---- every instruction set, each in its own process ---------------------------------------------

_ISA_SCRIPT = """
import sys
import numpy as np
import fastlstm
from fastlstm import _threads

isa = sys.argv[1] if len(sys.argv) > 1 else {isa!r}
for dtype, width in (("float32", 4), ("float64", 8)):
    packed = fastlstm.LSTM(3, 40, dtype=dtype)._packed
    assert packed.kernel_name == f"lstm/{{dtype[5:] and 'f' + dtype[5:]}}/{{isa}}", (isa, packed.kernel_name)
    assert packed.block == {{"avx512": 64, "avx2": 32, "baseline": 16}}[isa] // width, packed.block
failures = []
configs = [
    # I, H, P, L, bidirectional, batch_first, T, B, hx, lengths, extras (H = 17 has a narrow last block on
    # every instruction set and dtype)
    (3, 1, 0, 1, False, False, 4, 1, False, False, {{}}),
    (4, 7, 0, 2, True, False, 6, 5, True, True, {{}}),
    (5, 17, 5, 2, True, True, 5, 3, True, True, {{}}),
    (6, 33, 0, 3, False, True, 4, 9, False, True, {{}}),
    (8, 70, 20, 1, True, False, 5, 4, True, False, {{}}),
    (16, 40, 0, 1, False, False, 30, 40, False, True, {{}}),
    (10, 130, 0, 1, True, False, 3, 6, True, True, {{}}),
    (4, 17, 0, 1, True, False, 6, 3, True, True, dict(peepholes=True, clip=0.9)),
    (4, 17, 0, 2, False, False, 6, 5, True, True, dict(peepholes=True, input_forget=True)),
]
for dtype in (np.float32, np.float64):
    for i, (I, H, P, L, bi, bf, T, B, use_hx, use_len, extras) in enumerate(configs):
        kw = dict(bidirectional=bi, batch_first=bf, proj_size=P, dtype=dtype, seed=100 + i, **extras)
        fast = fastlstm.LSTM(I, H, L, **kw)
        ref = fastlstm.reference.LSTM(I, H, L, **kw)
        rng = np.random.default_rng(i)
        D, K = (2 if bi else 1), (P or H)
        x = rng.standard_normal((B, T, I) if bf else (T, B, I)).astype(dtype)
        hx = None
        if use_hx:
            hx = (rng.standard_normal((D * L, B, K)).astype(dtype), rng.standard_normal((D * L, B, H)).astype(dtype))
        lengths = rng.integers(1, T + 1, size=B) if use_len else None
        want = ref(x, hx, lengths=lengths)
        atol = 2e-5 if dtype == np.float32 else 1e-10
        results = []
        for threads, min_work in ((1, _threads.MIN_WORK_PER_THREAD), (2, 1), (3, 1)):
            fastlstm.set_num_threads(threads)
            _threads.MIN_WORK_PER_THREAD = min_work
            got = fast(x, hx, lengths=lengths)
            results.append(got)
            for name, a, e in (("output", got[0], want[0]), ("h_n", got[1][0], want[1][0]),
                               ("c_n", got[1][1], want[1][1])):
                bad = ~np.isclose(a.astype(np.float64), e.astype(np.float64), rtol=0, atol=atol)
                if a.shape != e.shape or a.dtype != np.dtype(dtype) or bad.any():
                    first = [(tuple(int(v) for v in j), float(a[tuple(j)]), float(e[tuple(j)]))
                             for j in np.argwhere(bad)[:5]] if a.shape == e.shape else []
                    failures.append(f"{{np.dtype(dtype).name}} config {{i}} threads {{threads}} {{name}}: "
                                    f"shape {{a.shape}} vs {{e.shape}}, dtype {{a.dtype}}, "
                                    f"{{int(bad.sum()) if a.shape == e.shape else '?'}} differ, first {{first}}")
        for threads, got in zip((2, 3), results[1:]):
            for a, e in zip((got[0], got[1][0], got[1][1]), (results[0][0], results[0][1][0], results[0][1][1])):
                if a.tobytes() != e.tobytes():
                    failures.append(f"{{np.dtype(dtype).name}} config {{i}}: {{threads}} threads not bitwise "
                                    f"equal to 1 thread")
if failures:
    sys.exit("\\n".join(failures[:20]))
print("ok", isa)
"""


@pytest.mark.parametrize("isa", ["avx512", "avx2", "baseline"])
def test_every_isa_matches_reference(isa, tmp_path):
    if isa not in fastlstm._cpu.available_isas():
        pytest.skip(f"this CPU lacks {isa}")
    proc = run_python(_ISA_SCRIPT.format(isa=isa), env={"FASTLSTM_ISA": isa}, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, f"FASTLSTM_ISA={isa}:\n{proc.stdout}\n{proc.stderr}"
    assert f"ok {isa}" in proc.stdout


# ---- denormals and the caller's floating-point mode ---------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_denormal_inputs_and_callers_fp_mode(dtype):
    """Denormals are flushed inside the kernels only: results match the reference, and the calling thread
    still computes denormals afterwards."""
    tiny = np.finfo(dtype).smallest_normal
    fast, ref = model_pair(3, 20, 2, seed=50, bidirectional=True, dtype=dtype)
    rng = np.random.default_rng(51)
    x = (rng.standard_normal((6, 4, 3)) * tiny / 7).astype(dtype)  # all subnormal (or zero)
    h0 = (rng.standard_normal((4, 4, 20)) * tiny / 3).astype(dtype)
    c0 = (rng.standard_normal((4, 4, 20)) * tiny / 3).astype(dtype)
    assert np.all(np.abs(x) < tiny)
    got = fast(x, (h0, c0))
    assert_forward_close(got, ref(x, (h0, c0)), dtype)
    sub = np.array([tiny], dtype) / dtype(16)
    assert sub[0] != 0, "the caller's thread flushes denormals to zero after a forward call"


@pytest.mark.parametrize("T,B", [(0, 2), (3, 0)])
def test_empty_results_have_the_model_dtype(T, B):
    fast, _ = model_pair(3, 5, 1, seed=0, dtype=np.float32)
    h0, c0 = np.ones((1, B, 5), np.float64) / 3, np.ones((1, B, 5), np.int64)
    out, (hn, cn) = fast(np.zeros((T, B, 3), np.float64), (h0, c0))
    assert out.dtype == hn.dtype == cn.dtype == np.float32
    assert_bitwise_equal(hn, h0.astype(np.float32), name="h_n")
    assert_bitwise_equal(cn, c0.astype(np.float32), name="c_n")
