"""Hostile arrays for every entry point that takes data: the forward call (x, hx, lengths), Stream.step (x_t,
out=), Stream.reset / lstm.stream(batch_size, hx), load_state_dict and parameter assignment.

Rejected kinds (void, structured, strings, ...), converted kinds (float16, big-endian, int8, uint64), odd
layouts (zero, negative and large strides, Fortran order, misaligned data, read-only), sizes that cannot be
allocated or would overflow, lengths that would wrap when narrowed to int32, h/c mix-ups of projected models,
NaN and inf in x, hx and the weights, and out= buffers that alias the input.

What the tests in test_api.py, test_reference.py and test_stream.py already cover is not repeated here. The
cases most likely to crash (huge sizes, misaligned data, zero strides, non-finite weights) run in a child
process (conftest.run_python), so that a segfault fails one test instead of ending the run.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastlstm
from conftest import (
    assert_bitwise_equal,
    assert_forward_bitwise,
    assert_forward_close,
    call,
    make_inputs,
    model_pair,
    run_python,
)

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["f32", "f64"]


def _subprocess_ok(tmp_path, code, expected_lines, timeout=120):
    """Run ``code`` in a child process; it must exit with 0 and print every one of ``expected_lines``."""
    proc = run_python(code, cwd=tmp_path, timeout=timeout)
    report = f"exit code {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, "child process failed (a negative code is a signal, e.g. -11 SIGSEGV)\n" + report
    lines = proc.stdout.splitlines()
    for line in expected_lines:
        assert line in lines, f"{line!r} missing from the child's output\n" + report
    return proc


def _rows_except(a, row, axis):
    return np.delete(a, row, axis=axis)


# ---- kinds that must be rejected ----------------------------------------------------------------

REJECTED = {
    "void": lambda shape: np.zeros(shape, "V4"),
    "structured": lambda shape: np.zeros(shape, [("a", np.float32)]),
    "structured-f8": lambda shape: np.zeros(shape, [("a", np.float64), ("b", np.float64)]),
    "unicode": lambda shape: np.full(shape, "0.5"),
    "bytes": lambda shape: np.full(shape, b"0.5", dtype="S3"),
    "bool": lambda shape: np.ones(shape, bool),
    "complex": lambda shape: np.zeros(shape, np.complex128),
    "object": lambda shape: np.ones(shape, object),
    "timedelta": lambda shape: np.zeros(shape, "m8[s]"),
}


@pytest.mark.parametrize("kind", ["void", "structured", "structured-f8"])
def test_forward_rejects_void_and_structured(kind):
    """test_api covers bool/complex/object/strings for x and hx; void and structured records here."""
    m = fastlstm.LSTM(3, 4, proj_size=2, seed=0)
    x = np.zeros((5, 2, 3), np.float32)
    with pytest.raises(TypeError, match="input") as info:
        m(REJECTED[kind]((5, 2, 3)))
    assert str(np.dtype(REJECTED[kind]((1,)).dtype)) in str(info.value), info.value
    with pytest.raises(TypeError, match=r"hx\[0\]"):
        m(x, (REJECTED[kind]((1, 2, 2)), np.zeros((1, 2, 4))))
    with pytest.raises(TypeError, match=r"hx\[1\]"):
        m(x, (np.zeros((1, 2, 2)), REJECTED[kind]((1, 2, 4))))


@pytest.mark.parametrize("kind", list(REJECTED))
def test_stream_rejects_kinds(kind):
    m = fastlstm.LSTM(3, 4, 2, proj_size=2, seed=0)
    s = m.stream(2)
    before = s.state
    with pytest.raises(TypeError, match="x_t"):
        s.step(REJECTED[kind]((2, 3)))
    with pytest.raises(TypeError, match=r"hx\[0\]"):
        s.reset((REJECTED[kind]((2, 2, 2)), np.zeros((2, 2, 4))))
    with pytest.raises(TypeError, match=r"hx\[1\]"):
        s.reset((np.zeros((2, 2, 2)), REJECTED[kind]((2, 2, 4))))
    with pytest.raises(TypeError, match=r"hx\[0\]"):
        m.stream(2, (REJECTED[kind]((2, 2, 2)), np.zeros((2, 2, 4))))
    # a failed step or reset leaves the state as it was
    for a, b in zip(s.state, before):
        assert_bitwise_equal(a, b, name="state after a rejected call")


@pytest.mark.parametrize("kind", list(REJECTED))
def test_parameters_reject_kinds(kind):
    m = fastlstm.LSTM(3, 4, proj_size=2, seed=0)
    before = m.state_dict()
    sd = m.state_dict()
    sd["weight_hr_l0"] = REJECTED[kind]((2, 4))
    with pytest.raises(TypeError, match="weight_hr_l0"):
        m.load_state_dict(sd)
    with pytest.raises(TypeError, match="bias_hh_l0"):
        m.bias_hh_l0 = REJECTED[kind]((16,))
    for name, v in m.state_dict().items():
        assert_bitwise_equal(v, before[name], name=f"{name} after a rejected load")


def test_ragged_nested_lists_name_the_argument():
    """np.asarray of a ragged list raises numpy's own ValueError; the contract wants the argument named."""
    m = fastlstm.LSTM(3, 4, seed=0)
    s = m.stream(2)
    sd = m.state_dict()
    sd["bias_ih_l0"] = [[0.0] * 16, [0.0] * 3]
    cases = [
        ("input", lambda: m([[1.0, 2.0, 3.0], [1.0, 2.0]])),
        ("hx[0]", lambda: m(np.zeros((2, 3)), ([[0.0] * 4, [0.0]], np.zeros((1, 4))))),
        ("x_t", lambda: s.step([[1.0, 2.0, 3.0], [1.0]])),
        ("bias_ih_l0", lambda: m.load_state_dict(sd)),
    ]
    problems = []
    for name, fn in cases:
        try:
            fn()
        except (TypeError, ValueError) as exc:
            if name not in str(exc):
                problems.append(f"{name}: {type(exc).__name__}: {exc}")
        else:
            problems.append(f"{name}: no error")
    assert not problems, "errors that do not name the argument:\n" + "\n".join(problems)


# ---- kinds that are converted -------------------------------------------------------------------

CONVERTED = ["float16", ">f4", ">f8", "int8", "uint64", "<f4", "longdouble"]


def _as_kind(a, kind):
    if np.dtype(kind).kind in "iu":
        return np.round(a * 2).clip(0 if np.dtype(kind).kind == "u" else -4, 4).astype(kind)
    return a.astype(kind)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind", CONVERTED)
def test_forward_converts_kinds(kind, dtype):
    fast, ref = model_pair(3, 12, 2, seed=2, bidirectional=True, proj_size=5, dtype=dtype)
    args = make_inputs(fast, 5, 3, rng=np.random.default_rng(3), hx=True, lengths=True)
    x = _as_kind(args["x"], kind)
    h0, c0 = (_as_kind(a, kind) for a in args["hx"])
    lengths = args["lengths"].astype(">i8" if kind.startswith(">") else np.int64)
    saved = [a.copy() for a in (x, h0, c0, lengths)]
    got = fast(x, (h0, c0), lengths=lengths)
    native = (x.astype(dtype), (h0.astype(dtype), c0.astype(dtype)))
    assert_forward_bitwise(got, fast(*native, lengths=args["lengths"]), what=f"{kind} vs model dtype")
    assert_forward_close(got, ref(*native, lengths=args["lengths"]), dtype, what=kind)
    for a, s in zip((x, h0, c0, lengths), saved):
        assert a.dtype == s.dtype and a.tobytes() == s.tobytes(), f"{kind} input changed by the call"



@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind", CONVERTED)
def test_stream_converts_kinds(kind, dtype):
    m = fastlstm.LSTM(4, 9, 2, proj_size=3, seed=4, dtype=dtype)
    rng = np.random.default_rng(5)
    xs = rng.standard_normal((4, 3, 4))
    hx = (rng.standard_normal((2, 3, 3)), rng.standard_normal((2, 3, 9)))
    conv_x = _as_kind(xs, kind)
    conv_h = tuple(_as_kind(a, kind) for a in hx)
    want, (hn, cn) = m(conv_x.astype(dtype), tuple(a.astype(dtype) for a in conv_h))
    for label, s in (("stream(hx)", m.stream(3, conv_h)), ("reset(hx)", m.stream(3))):
        if label == "reset(hx)":
            s.reset(list(conv_h))
        steps = np.stack([s.step(conv_x[t]) for t in range(4)])
        assert steps.dtype == np.dtype(dtype)
        assert_bitwise_equal(steps, want, name=f"{kind} {label} steps")
        assert_bitwise_equal(s.state[0], hn, name=f"{kind} {label} h")
        assert_bitwise_equal(s.state[1], cn, name=f"{kind} {label} c")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind", CONVERTED)
def test_parameters_convert_kinds(kind, dtype):
    fast, ref = model_pair(3, 6, 1, seed=6, proj_size=2, bidirectional=True, dtype=dtype)
    rng = np.random.default_rng(7)
    values = {name: _as_kind(rng.uniform(-1, 1, v.shape), kind) for name, v in fast.state_dict().items()}
    saved = {name: v.copy() for name, v in values.items()}
    fast.load_state_dict(values)
    ref.load_state_dict({name: v.astype(dtype) for name, v in values.items()})
    for name, v in values.items():
        assert getattr(fast, name).dtype == np.dtype(dtype)
        assert_bitwise_equal(getattr(fast, name), v.astype(dtype), name=name)
        assert v.tobytes() == saved[name].tobytes(), f"source {name} changed by load_state_dict"
    args = make_inputs(fast, 4, 2, rng=rng, hx=True)
    assert_forward_close(call(fast, args), call(ref, args), dtype, what=f"weights loaded from {kind}")
    # assignment converts the same way
    fast.weight_hh_l0_reverse = _as_kind(rng.uniform(-1, 1, (24, 2)), kind)
    ref.weight_hh_l0_reverse = fast.weight_hh_l0_reverse
    assert fast.weight_hh_l0_reverse.dtype == np.dtype(dtype)
    assert_forward_close(call(fast, args), call(ref, args), dtype, what=f"weight assigned from {kind}")


# ---- layouts (in process; misaligned and zero strides are in a child process below) -------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_hx_and_lengths_layouts(dtype):
    """Negative strides, Fortran order, steps and read-only hx and lengths, batched and unbatched."""
    fast, ref = model_pair(3, 10, 2, seed=8, bidirectional=True, proj_size=4, dtype=dtype, batch_first=True)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((8, 6, 3)).astype(dtype)  # B = 8, T = 6
    hbig = rng.standard_normal((4, 16, 8)).astype(dtype)
    cbig = rng.standard_normal((4, 16, 20)).astype(dtype)
    lens_big = np.full(16, 9, np.int64)  # 9 > T: read one of these and the call fails
    lens_big[1::2] = [6, 4, 3, 6, 1, 5, 2, 6][::-1]
    h0, c0, lengths = hbig[::-1, ::-2, 1::2], np.asfortranarray(cbig[:, 1::2, ::-2]), lens_big[::-2]
    assert lengths.max() <= 6 and h0.strides[0] < 0 and not c0.flags.c_contiguous
    want = ref(x, (np.ascontiguousarray(h0), np.ascontiguousarray(c0)), lengths=np.ascontiguousarray(lengths))
    frozen = [np.array(a) for a in (x, h0, c0, lengths)]
    for a in frozen:
        a.flags.writeable = False
    saved = [a.copy() for a in (x, hbig, cbig, lens_big)]
    x_neg = np.ascontiguousarray(x[::-1, ::-1])[::-1, ::-1]  # equal to x, negative strides
    assert x_neg.strides[0] < 0 and x_neg.strides[1] < 0
    got = fast(x_neg, (h0, c0), lengths=lengths)
    assert_forward_close(got, want, dtype, what="strided hx and lengths")
    assert_forward_bitwise(fast(frozen[0], (frozen[1], frozen[2]), lengths=frozen[3]), got, what="read-only")
    for a, s in zip((x, hbig, cbig, lens_big), saved):
        assert_bitwise_equal(a, s, name="input after the call")
    # unbatched: 2-D hx with negative strides
    xu = x[2, ::-1]
    hu, cu = h0[:, 2, ::-1], c0[:, 2, ::-1]
    assert_forward_close(fast(xu, (hu, cu)), ref(xu.copy(), (hu.copy(), cu.copy())), dtype, what="unbatched")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_stream_layouts(dtype):
    """x_t and reset hx non-contiguous, reversed, Fortran, transposed, read-only: the same steps."""
    m = fastlstm.LSTM(5, 9, 2, seed=10, dtype=dtype)
    rng = np.random.default_rng(11)
    big = rng.standard_normal((6, 8, 10)).astype(dtype)
    xs = np.ascontiguousarray(big[:, ::2, ::2])  # (6, 4, 5)
    hx = (rng.standard_normal((2, 4, 9)).astype(dtype), rng.standard_normal((2, 4, 9)).astype(dtype))
    want = m(xs, hx)
    views = {
        "strided": lambda t: big[t, ::2, ::2],
        "reversed": lambda t: np.ascontiguousarray(xs[t][::-1, ::-1])[::-1, ::-1],
        "fortran": lambda t: np.asfortranarray(xs[t]),
        "transposed": lambda t: np.ascontiguousarray(xs[t].T).T,
        "read-only": lambda t: np.frombuffer(xs[t].tobytes(), dtype).reshape(4, 5),
    }
    hx_views = (np.ascontiguousarray(hx[0][:, ::-1])[:, ::-1], np.asfortranarray(hx[1]))
    saved = big.copy()
    for label, view in views.items():
        s = m.stream(4)
        s.reset(hx_views)
        out = np.empty((4, 9), dtype)
        steps = []
        for t in range(6):
            x_t = view(t)
            assert s.step(x_t, out=out) is out
            steps.append(out.copy())
        assert_bitwise_equal(np.stack(steps), want[0], name=f"{label} steps")
        assert_bitwise_equal(s.state[0], want[1][0], name=f"{label} h")
        assert_bitwise_equal(s.state[1], want[1][1], name=f"{label} c")
    assert_bitwise_equal(big, saved, name="x after stepping")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_parameter_layouts(dtype):
    """Weights from negative-stride, Fortran, strided and read-only arrays: copied right, sources untouched."""
    fast, ref = model_pair(4, 8, 2, seed=12, proj_size=3, dtype=dtype)
    rng = np.random.default_rng(13)
    sd = {}
    sources = {}
    for i, (name, v) in enumerate(fast.state_dict().items()):
        base = rng.uniform(-0.5, 0.5, tuple(2 * n for n in v.shape))
        src = [base[::-2, ::-2] if v.ndim == 2 else base[::-2],
               np.asfortranarray(base[1::2, ::2]) if v.ndim == 2 else base[1::2],
               base[::2].T.T[:, ::2] if v.ndim == 2 else base[::2]][i % 3]
        if i % 2:
            src = np.array(src, order="F" if v.ndim == 2 else "C")
            src.flags.writeable = False
        sd[name] = src
        sources[name] = (src, src.copy())
    fast.load_state_dict(sd)
    ref.load_state_dict({k: np.ascontiguousarray(v) for k, v in sd.items()})
    for name, (src, copy) in sources.items():
        assert_bitwise_equal(getattr(fast, name), copy.astype(dtype), name=name)
        assert_bitwise_equal(src, copy, name=f"source of {name}")
    fast.weight_hh_l1 = sd["weight_hh_l1"][::-1, ::-1]
    ref.weight_hh_l1 = np.ascontiguousarray(sd["weight_hh_l1"][::-1, ::-1])
    args = make_inputs(fast, 5, 3, rng=rng, hx=True, lengths=True)
    assert_forward_close(call(fast, args), call(ref, args), dtype)


# ---- child processes: what their scripts share ------------------------------------------------

_CHILD_PRELUDE = r"""
import numpy as np
import fastlstm
from fastlstm.reference import LSTM as Ref

def same(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()

def report(name, ok):
    print(name, "ok" if ok else "MISMATCH", flush=True)

def flat(result):  # (output, (h_n, c_n)) -> (output, h_n, c_n)
    return (result[0],) + tuple(result[1])

def same_forward(got, want):
    return all(same(a, b) for a, b in zip(flat(got), flat(want)))

def close_forward(got, want, atol):
    return all(np.allclose(a, b, rtol=0, atol=atol) for a, b in zip(flat(got), flat(want)))
"""


# ---- child process: misaligned data -------------------------------------------------------------

_MISALIGNED = _CHILD_PRELUDE + r"""

def misaligned(a, writeable=True):
    a = np.ascontiguousarray(a)
    buf = bytearray(a.nbytes + 1)
    m = np.frombuffer(buf, a.dtype, count=a.size, offset=1).reshape(a.shape)
    m[...] = a
    if not writeable:
        m = np.frombuffer(bytes(buf), a.dtype, count=a.size, offset=1).reshape(a.shape)
    assert a.dtype.itemsize == 1 or not m.flags.aligned
    return m

rng = np.random.default_rng(0)
for dtype in (np.float32, np.float64):
    dn = np.dtype(dtype).name
    atol = 2e-5 if dtype == np.float32 else 1e-10
    kw = dict(num_layers=2, bidirectional=True, proj_size=5, seed=1, dtype=dtype)
    fast, ref = fastlstm.LSTM(3, 20, **kw), Ref(3, 20, **kw)
    x = rng.standard_normal((6, 4, 3)).astype(dtype)
    h = rng.standard_normal((4, 4, 5)).astype(dtype)
    c = rng.standard_normal((4, 4, 20)).astype(dtype)
    lengths = np.array([6, 2, 3, 1])
    want = fast(x, (h, c), lengths=lengths)
    refr = ref(x, (h, c), lengths=lengths)
    for writeable in (True, False):
        xm, hm, cm = misaligned(x, writeable), misaligned(h, writeable), misaligned(c, writeable)
        lm = misaligned(lengths.astype(np.int32), writeable)
        got = fast(xm, (hm, cm), lengths=lm)
        ok = same_forward(got, want) and close_forward(got, refr, atol)
        ok = ok and same(xm, x) and same(hm, h) and same(cm, c)
        report(f"{dn} forward writeable={writeable}", ok)
    # unbatched and batch_first
    got = fast(misaligned(x[:, 1]), (misaligned(h[:, 1]), misaligned(c[:, 1])))
    w = fast(x[:, 1].copy(), (h[:, 1].copy(), c[:, 1].copy()))
    report(f"{dn} unbatched", same_forward(got, w))
    bf = fastlstm.LSTM(3, 20, batch_first=True, seed=2, dtype=dtype)
    xb = np.ascontiguousarray(x.transpose(1, 0, 2))
    report(f"{dn} batch_first", same(bf(misaligned(xb))[0], bf(xb)[0]))
    # streams: misaligned x_t, out=, reset hx
    sm = fastlstm.LSTM(3, 20, 2, proj_size=5, seed=3, dtype=dtype)
    wo, (wh, wc) = sm(x, (h[:2], c[:2]))
    s = sm.stream(4)
    s.reset((misaligned(h[:2]), misaligned(c[:2])))
    out = misaligned(np.zeros((4, 5), dtype))
    ok = True
    for t in range(6):
        r = s.step(misaligned(x[t]), out=out)
        ok = ok and r is out and same(np.array(out), wo[t])
    ok = ok and same(s.state[0], wh) and same(s.state[1], wc)
    report(f"{dn} stream", ok)
    # parameters from misaligned arrays
    a, b = fastlstm.LSTM(3, 20, **kw), fastlstm.LSTM(3, 20, **kw)
    values = {k: rng.uniform(-0.3, 0.3, v.shape).astype(dtype) for k, v in a.state_dict().items()}
    a.load_state_dict(values)
    b.load_state_dict({k: misaligned(v) for k, v in values.items()})
    b.weight_hh_l1_reverse = misaligned(values["weight_hh_l1_reverse"])
    ok = all(same(b.state_dict()[k], v) for k, v in values.items())
    r1, r2 = a(x, (h, c)), b(x, (h, c))
    report(f"{dn} parameters", ok and same_forward(r1, r2))
"""


def test_misaligned_arrays_in_child(tmp_path):
    expected = []
    for dn in ("float32", "float64"):
        expected += [f"{dn} forward writeable=True ok", f"{dn} forward writeable=False ok", f"{dn} unbatched ok",
                     f"{dn} batch_first ok", f"{dn} stream ok", f"{dn} parameters ok"]
    _subprocess_ok(tmp_path, _MISALIGNED, expected)


# ---- child process: zero strides ----------------------------------------------------------------

_ZERO_STRIDES = _CHILD_PRELUDE + r"""

rng = np.random.default_rng(1)
for dtype in (np.float32, np.float64):
    dn = np.dtype(dtype).name
    atol = 2e-5 if dtype == np.float32 else 1e-10
    kw = dict(num_layers=2, bidirectional=True, proj_size=4, seed=5, dtype=dtype)
    fast, ref = fastlstm.LSTM(3, 11, **kw), Ref(3, 11, **kw)
    row = rng.standard_normal(3).astype(dtype)
    cases = {
        "x all one element": np.broadcast_to(dtype(0.7), (5, 4, 3)),
        "x one row": np.broadcast_to(row, (5, 4, 3)),
        "x one step": np.broadcast_to(rng.standard_normal((1, 4, 3)).astype(dtype), (5, 4, 3)),
        "x one sequence": np.broadcast_to(rng.standard_normal((5, 1, 3)).astype(dtype), (5, 4, 3)),
    }
    h = np.broadcast_to(rng.standard_normal((4, 1, 4)).astype(dtype), (4, 4, 4))
    c = np.broadcast_to(dtype(-0.3), (4, 4, 11))
    lengths = np.broadcast_to(np.int64(3), (4,))
    for name, x in cases.items():
        assert 0 in x.strides
        for use_hx, use_len in ((False, False), (True, True)):
            args = ((h, c) if use_hx else None,)
            kwargs = dict(lengths=lengths if use_len else None)
            got = fast(x, *args, **kwargs)
            dense = fast(np.ascontiguousarray(x), *(((h.copy(), c.copy()),) if use_hx else (None,)),
                         lengths=None if not use_len else lengths.copy())
            want = ref(np.ascontiguousarray(x), *args, **kwargs)
            ok = same_forward(got, dense) and close_forward(got, want, atol)
            # rows that saw the same input and state are equal (the batch axis was broadcast)
            if name in ("x all one element", "x one row", "x one sequence"):
                ok = ok and all(same(got[0][:, b], got[0][:, 0]) for b in range(4))
            report(f"{dn} {name} hx={use_hx}", ok)
    # unbatched, zero-stride time axis
    xu = np.broadcast_to(row, (6, 3))
    gu = fast(xu)
    report(f"{dn} unbatched", same(gu[0], fast(np.ascontiguousarray(xu))[0]))
    # a stream stepping a broadcast x_t, reset from broadcast hx
    sm = fastlstm.LSTM(3, 11, 2, seed=6, dtype=dtype)
    hs = np.broadcast_to(dtype(0.2), (2, 4, 11))
    s = sm.stream(4, (hs, hs))
    steps = np.stack([s.step(np.broadcast_to(row, (4, 3))) for _ in range(5)])
    report(f"{dn} stream", same(steps, sm(np.ascontiguousarray(np.broadcast_to(row, (5, 4, 3))), (hs.copy(), hs.copy()))[0]))
    # parameters from broadcast arrays
    m1, m2 = fastlstm.LSTM(3, 11, seed=7, dtype=dtype), fastlstm.LSTM(3, 11, seed=7, dtype=dtype)
    sd = {k: np.broadcast_to(dtype(0.05 * (i + 1)), v.shape) for i, (k, v) in enumerate(m1.state_dict().items())}
    m1.load_state_dict(sd)
    m2.load_state_dict({k: np.ascontiguousarray(v) for k, v in sd.items()})
    m1.weight_hh_l0 = np.broadcast_to(np.linspace(-1, 1, 11), (44, 11))
    m2.weight_hh_l0 = np.ascontiguousarray(np.broadcast_to(np.linspace(-1, 1, 11), (44, 11)))
    x = rng.standard_normal((4, 2, 3)).astype(dtype)
    report(f"{dn} parameters", same(m1(x)[0], m2(x)[0]) and all(m1.state_dict()[k].flags.c_contiguous for k in sd))
"""


def test_zero_strides_in_child(tmp_path):
    expected = []
    for dn in ("float32", "float64"):
        for name in ("x all one element", "x one row", "x one step", "x one sequence"):
            expected += [f"{dn} {name} hx=False ok", f"{dn} {name} hx=True ok"]
        expected += [f"{dn} unbatched ok", f"{dn} stream ok", f"{dn} parameters ok"]
    _subprocess_ok(tmp_path, _ZERO_STRIDES, expected)


# ---- child process: sizes that cannot be allocated or would overflow ----------------------------

_HUGE = r"""
import resource
import numpy as np
import fastlstm

# a hard cap on the address space: an allocation the machine could not make fails here too, quickly and
# without touching memory, and a size that slipped through validation cannot take the machine down
limit = 3 << 30
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

def attempt(name, fn, allowed=(MemoryError, ValueError), needle=None):
    try:
        fn()
    except allowed as exc:
        if needle is not None and needle not in str(exc):
            print(name, "UNCLEAR", type(exc).__name__, str(exc)[:300], flush=True)
        else:
            print(name, "raised", flush=True)
    except BaseException as exc:
        print(name, "WRONG", type(exc).__name__, str(exc)[:300], flush=True)
    else:
        print(name, "RETURNED", flush=True)

f32 = np.float32(0.5)
m = fastlstm.LSTM(3, 64, seed=0)
attempt("output does not fit", lambda: m(np.broadcast_to(f32, (10**7, 10**4, 3))))
attempt("output does not fit, batch_first", lambda: fastlstm.LSTM(3, 64, batch_first=True, seed=0)(
    np.broadcast_to(f32, (10**4, 10**7, 3))))
attempt("output does not fit, lengths", lambda: m(np.broadcast_to(f32, (10**7, 10**4, 3)),
                                                  lengths=np.broadcast_to(np.int64(1), (10**4,))))
# T * B * H beyond int32 while x itself is small: I = 1, H = 1024, T * B = 2**21
big = fastlstm.LSTM(1, 1024, seed=0)
attempt("T*B*H over int32", lambda: big(np.broadcast_to(f32, (2**11, 2**10, 1))))
attempt("T*B*4H over int32, bidirectional", lambda: fastlstm.LSTM(1, 300, bidirectional=True, seed=0)(
    np.broadcast_to(f32, (2**12, 2**11, 1))))
attempt("T at int32 max", lambda: m(np.broadcast_to(f32, (2**31 - 1, 1, 3))))
attempt("B at int32 max", lambda: m(np.broadcast_to(f32, (1, 2**31 - 1, 3))))
attempt("T and B at int32 max", lambda: m(np.broadcast_to(f32, (2**31 - 1, 2**31 - 1, 3))))
attempt("T over int32 unbatched", lambda: m(np.broadcast_to(f32, (2**31, 3))))
attempt("T*B*I over int64", lambda: m(np.broadcast_to(f32, (2**40, 2**30, 3))))
attempt("hx for a huge batch", lambda: m(np.broadcast_to(f32, (1, 2**33, 3)),
                                        (np.broadcast_to(f32, (1, 2**33, 64)),) * 2))
attempt("empty T with a huge batch", lambda: m(np.broadcast_to(f32, (0, 2**30, 3))))
attempt("stream batch 2**31", lambda: m.stream(2**31))
attempt("stream batch 2**40", lambda: m.stream(2**40))
attempt("stream batch 2**62", lambda: m.stream(2**62))
attempt("stream batch 2**64", lambda: m.stream(2**64))
sd = m.state_dict()
sd["weight_ih_l0"] = np.broadcast_to(f32, (10**6, 10**6))
attempt("load_state_dict huge wrong shape", lambda: m.load_state_dict(sd), allowed=(ValueError,), needle="weight_ih_l0")
attempt("assign huge wrong shape", lambda: setattr(m, "bias_ih_l0", np.broadcast_to(f32, (2**40,))),
        allowed=(ValueError,), needle="bias_ih_l0")
attempt("model with a huge hidden size", lambda: fastlstm.LSTM(3, 2**20, seed=0))
attempt("model with hidden size 2**31", lambda: fastlstm.LSTM(3, 2**31, seed=0))
# the model still works after all that
x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
ok = np.array_equal(m(x)[0], fastlstm.LSTM(3, 64, seed=0)(x)[0])
print("still works", "ok" if ok else "MISMATCH", flush=True)
"""


def test_huge_sizes_in_child(tmp_path):
    names = [
        "output does not fit", "output does not fit, batch_first", "output does not fit, lengths",
        "T*B*H over int32", "T*B*4H over int32, bidirectional", "T at int32 max", "B at int32 max",
        "T and B at int32 max", "T over int32 unbatched", "T*B*I over int64", "hx for a huge batch",
        "empty T with a huge batch", "stream batch 2**31", "stream batch 2**40", "stream batch 2**62",
        "stream batch 2**64", "load_state_dict huge wrong shape", "assign huge wrong shape",
        "model with a huge hidden size", "model with hidden size 2**31",
    ]
    _subprocess_ok(tmp_path, _HUGE, [f"{n} raised" for n in names] + ["still works ok"])


# ---- lengths ------------------------------------------------------------------------------------


@pytest.mark.parametrize("lengths,exc", [
    (np.array([2**32 + 3, 3]), ValueError),  # 3 once narrowed to int32
    (np.array([-(2**32) + 3, 3]), ValueError),  # 3 once narrowed to int32
    (np.array([2**31, 3]), ValueError),  # negative in int32
    (np.array([2**64 - 1, 3], np.uint64), ValueError),
    (np.array([2**63 + 3, 3], np.uint64), ValueError),
    ([2**70, 3], (ValueError, TypeError)),
    (np.array([3, 3], np.float16), TypeError),
    (np.array([True, True]), TypeError),
    (np.array([[3], [3]]), ValueError),  # (B, 1)
    (np.array([[3, 3]]), ValueError),  # (1, B)
    (np.array(3), ValueError),  # 0-d for a batched input
    (np.broadcast_to(np.int64(6), (2,)), ValueError),
    (np.array([3, 3, 3])[::2].reshape(2, 1), ValueError),
    (np.array(["3", "3"]), TypeError),
    (np.array([b"3", b"3"]), TypeError),
    (np.array([3, 3], object), TypeError),
    (np.zeros(2, "V8"), TypeError),
    (np.array([3 + 0j, 3]), TypeError),
    ({3, 2}, TypeError),
])
def test_hostile_lengths(lengths, exc):
    m = fastlstm.LSTM(3, 4, bidirectional=True, seed=0)
    with pytest.raises(exc) as info:
        m(np.zeros((5, 2, 3), np.float32), lengths=lengths)
    assert "lengths" in str(info.value), info.value


def test_lengths_values_in_the_message():
    m = fastlstm.LSTM(3, 4, seed=0)
    with pytest.raises(ValueError) as info:
        m(np.zeros((5, 2, 3), np.float32), lengths=np.array([2**32 + 3, 3]))
    assert str(2**32 + 3) in str(info.value), "the given value should be named, not its int32 wrap-around"


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_lengths_layouts_and_kinds_are_read_right(dtype):
    """Valid lengths as zero-stride, reversed, big-endian, read-only, uint8: same bits as a plain list."""
    fast, ref = model_pair(3, 9, 2, seed=14, bidirectional=True, proj_size=4, dtype=dtype)
    args = make_inputs(fast, 6, 4, rng=np.random.default_rng(15), hx=True)
    values = [6, 1, 4, 2]
    want = fast(args["x"], args["hx"], lengths=values)
    assert_forward_close(want, ref(args["x"], args["hx"], lengths=values), dtype)
    frozen = np.array(values)
    frozen.flags.writeable = False
    for label, lengths in {
        "reversed": np.array(values[::-1])[::-1],
        "strided": np.array([6, 0, 1, 0, 4, 0, 2, 0])[::2],
        "big-endian": np.array(values, ">i4"),
        "read-only": frozen,
        "uint8": np.array(values, np.uint8),
        "tuple of numpy ints": tuple(np.int16(v) for v in values),
    }.items():
        assert_forward_bitwise(fast(args["x"], args["hx"], lengths=lengths), want, what=label)
    all_two = fast(args["x"], args["hx"], lengths=np.broadcast_to(np.int8(2), (4,)))
    assert_forward_bitwise(all_two, fast(args["x"], args["hx"], lengths=[2, 2, 2, 2]), what="zero-stride")


# ---- hx mix-ups with a projection ---------------------------------------------------------------


@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
def test_projection_h_and_c_swapped(unbatched):
    """(c_0, h_0) instead of (h_0, c_0): hidden[0] is named with the expected and the given shape."""
    m = fastlstm.LSTM(3, 8, 2, proj_size=3, bidirectional=True, seed=0)
    B = 1 if unbatched else 2
    h = np.zeros((4, 3) if unbatched else (4, B, 3))
    c = np.zeros((4, 8) if unbatched else (4, B, 8))
    x = np.zeros((5, 3) if unbatched else (5, B, 3))
    for pair in ((c, h), [c, h]):
        with pytest.raises(ValueError) as info:
            m(x, pair)
        msg = str(info.value)
        assert "hidden[0]" in msg and str(h.shape) in msg and str(c.shape) in msg, msg
    with pytest.raises(ValueError) as info:
        m(x, (h, h))  # h twice: c_0 has the projected size
    msg = str(info.value)
    assert "hidden[1]" in msg and str(c.shape) in msg and str(h.shape) in msg, msg
    m(x, [h, c])  # the right order works, as a list too


def test_projection_stream_hx_mixups():
    m = fastlstm.LSTM(3, 8, 2, proj_size=3, seed=0)
    h, c = np.full((2, 4, 3), 0.1), np.full((2, 4, 8), -0.2)
    for make in (lambda hx: m.stream(4, hx), lambda hx: m.stream(4).reset(hx)):
        with pytest.raises(ValueError) as info:
            make((c, h))
        msg = str(info.value)
        assert "hidden[0]" in msg and "(2, 4, 3)" in msg and "(2, 4, 8)" in msg, msg
        with pytest.raises(ValueError) as info:
            make((h, h))
        msg = str(info.value)
        assert "hidden[1]" in msg and "(2, 4, 8)" in msg and "(2, 4, 3)" in msg, msg
        with pytest.raises(ValueError, match=r"hidden\[0\]"):
            make((h[:, :1], c[:, :1]))  # batch 1 where the stream has 4: no broadcasting
        with pytest.raises(ValueError, match=r"hidden\[0\]"):
            make((h[0], c[0]))  # 2-D
    # a list pair works for stream() and reset(), and is copied
    x = np.random.default_rng(0).standard_normal((3, 4, 3)).astype(np.float32)
    want = m(x, (h, c))[0]
    s = m.stream(4, [h, c])
    s2 = m.stream(4)
    s2.reset([h, c])
    h[...] = 5.0  # the streams hold copies
    for stream in (s, s2):
        assert_bitwise_equal(np.stack([stream.step(x[t]) for t in range(3)]), want, name="steps from a list hx")


def test_hx_not_a_pair_names_what_was_given():
    """TypeError for anything but a pair, in forward, stream() and reset(); the message says what came.

    (test_api checks the TypeError of forward for some of these; the contract also wants the given value.)
    """
    m = fastlstm.LSTM(3, 8, proj_size=3, seed=0)
    h, c = np.zeros((1, 2, 3)), np.zeros((1, 2, 8))
    cases = {  # hx -> what the message should mention about it
        "tuple of 3": ((h, c, c), "3"),
        "list of 3": ([h, c, c], "3"),
        "tuple of 1": ((h,), "1"),
        "str": ("hc", "str"),
        "stacked array": (np.zeros((2, 1, 2, 3)), "ndarray"),
        "dict": ({"h": h, "c": c}, "dict"),
        "generator": ((a for a in (h, c)), "generator"),
    }
    problems = []
    for case, (value, given) in cases.items():
        for label, fn in (("forward", lambda: m(np.zeros((5, 2, 3)), value)),
                          ("stream", lambda: m.stream(2, value)),
                          ("reset", lambda: m.stream(2).reset(value))):
            try:
                fn()
            except TypeError as exc:
                msg = str(exc)
                if "hx" not in msg or given not in msg:
                    problems.append(f"{label}, hx = {case}: {msg!r} does not mention {given!r}")
            except Exception as exc:  # noqa: BLE001 -- reported below
                problems.append(f"{label}, hx = {case}: {type(exc).__name__} instead of TypeError: {exc}")
            else:
                problems.append(f"{label}, hx = {case}: accepted")
    assert not problems, f"{len(problems)} unclear hx errors:\n" + "\n".join(problems)


# ---- NaN and inf --------------------------------------------------------------------------------

NONFINITE = [np.nan, np.inf, -np.inf]


@pytest.mark.parametrize("bad", NONFINITE, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("config", [
    dict(num_layers=2, bidirectional=True, proj_size=4, batch_first=True),
    dict(num_layers=3, peepholes=True, clip=2.0),
    dict(input_forget=True, bidirectional=True, dtype=np.float64),
], ids=["L2-bi-proj-bf", "L3-peep-clip", "coupled-bi-f64"])
def test_nonfinite_x_and_hx_stay_in_their_row_bitwise(bad, config):
    """Every other row is bitwise the same call with the non-finite value replaced by a finite one."""
    fast, ref = model_pair(3, 20, seed=16, **config)
    dtype = fast.dtype
    T, B, row = 6, 5, 3
    args = make_inputs(fast, T, B, rng=np.random.default_rng(17), hx=True, lengths=True)
    args["lengths"][row] = T
    clean = call(fast, args)
    b_axis = 0 if fast.batch_first else 1
    x = args["x"].copy()
    x[(row, 2, 1) if fast.batch_first else (2, row, 1)] = bad
    h0, c0 = (a.copy() for a in args["hx"])
    h1, c1 = h0.copy(), c0.copy()
    h1[-1, row, 0] = bad
    c1[0, row, 5] = bad
    for label, dirty in (("x", dict(args, x=x)), ("h_0", dict(args, hx=(h1, c0))), ("c_0", dict(args, hx=(h0, c1))),
                         ("x, h_0 and c_0", dict(args, x=x, hx=(h1, c1)))):
        got = call(fast, dirty)  # never raises
        for name, a, e, axis in (("output", got[0], clean[0], b_axis), ("h_n", got[1][0], clean[1][0], 1),
                                 ("c_n", got[1][1], clean[1][1], 1)):
            assert_bitwise_equal(_rows_except(a, row, axis), _rows_except(e, row, axis),
                                 name=f"{label}={bad}: {name} of the other rows")
        assert_forward_close(got, call(ref, dirty), dtype, equal_nan=True, what=f"{label}={bad} vs reference")
    # the dirty row really saw it
    out = call(fast, dict(args, x=x))[0]
    assert not np.isfinite(np.take(out, row, axis=b_axis)).all() or not np.isnan(bad)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_nonfinite_in_stream_stays_in_its_row(dtype):
    m = fastlstm.LSTM(4, 20, 2, proj_size=6, seed=18, dtype=dtype)
    rng = np.random.default_rng(19)
    xs = rng.standard_normal((5, 4, 4)).astype(dtype)
    clean = m.stream(4)
    dirty = m.stream(4)
    h = np.zeros((2, 4, 6))
    c = np.zeros((2, 4, 20))
    c[1, 2, 3] = np.inf
    dirty.reset((h, c))
    clean.reset((h, np.zeros_like(c)))
    for t in range(5):
        x_t = xs[t].copy()
        if t == 1:
            x_t[0, 2] = np.nan
        a, b = dirty.step(x_t), clean.step(xs[t])
        assert_bitwise_equal(a[[1, 3]], b[[1, 3]], name=f"step {t}: clean rows")
    assert np.isnan(dirty.state[0][:, 0]).any() and not np.isfinite(dirty.state[1][:, 2]).all()
    dirty.reset()
    clean.reset()
    for t in range(5):
        assert_bitwise_equal(dirty.step(xs[t]), clean.step(xs[t]), name=f"after reset, step {t}")


@pytest.mark.parametrize("config", [
    dict(peepholes=True, clip=1.5, input_forget=True, num_layers=2),
    dict(direction="reverse", proj_size=3),
    dict(bidirectional=True, batch_first=True, num_layers=2),
], ids=["extras", "reverse-proj", "bi-bf"])
def test_nonfinite_padding_changes_nothing(config):
    """NaN/inf past lengths (test_reference covers plain models; here the ONNX extras and reverse-only)."""
    fast, _ = model_pair(3, 18, seed=20, **config)
    args = make_inputs(fast, 6, 4, rng=np.random.default_rng(21), hx=True, lengths=True)
    args["lengths"] = np.array([6, 1, 3, 5])
    want = call(fast, args)
    x_tb = args["x"].transpose(1, 0, 2) if fast.batch_first else args["x"]
    for pad in (np.nan, np.inf, -np.inf, np.finfo(fast.dtype).max):
        x = np.copy(x_tb)
        for b, L in enumerate(args["lengths"]):
            x[L:, b] = pad
        dirty = dict(args, x=x.transpose(1, 0, 2) if fast.batch_first else x)
        assert_forward_bitwise(call(fast, dirty), want, what=f"padding {pad}")
    # unbatched with a length
    xu = x_tb[:, 1].copy()
    wu = fast(xu, lengths=[3])
    xu[3:] = np.nan
    assert_forward_bitwise(fast(xu, lengths=[3]), wu, what="unbatched padding")


def test_workspace_reuse_after_nonfinite_call():
    """A NaN/inf call leaves nothing behind in the pooled workspaces: later smaller calls are clean."""
    kw = dict(num_layers=3, bidirectional=True, proj_size=7, seed=22)
    m = fastlstm.LSTM(5, 20, **kw)
    fresh = fastlstm.LSTM(5, 20, **kw)
    rng = np.random.default_rng(23)
    m(np.full((9, 7, 5), np.nan, np.float32),
      (np.full((6, 7, 7), np.inf, np.float32), np.full((6, 7, 20), -np.inf, np.float32)))
    m(np.full((9, 7, 5), np.inf, np.float32))
    for T, B in ((9, 7), (3, 2), (1, 1), (8, 5)):
        args = make_inputs(m, T, B, rng=rng, hx=True, lengths=True)
        got = call(m, args)
        for a in (got[0],) + got[1]:
            assert np.isfinite(a).all(), f"T={T}, B={B}: a clean call after a NaN one gave non-finite values"
        assert_forward_bitwise(got, call(fresh, args), what=f"T={T}, B={B} after a NaN call")


_NONFINITE_WEIGHTS = r"""
import numpy as np
import fastlstm
from fastlstm.reference import LSTM as Ref

def close(a, b, atol):
    return a.shape == b.shape and a.dtype == b.dtype and np.allclose(a, b, rtol=0, atol=atol, equal_nan=True)

rng = np.random.default_rng(2)
for dtype in (np.float32, np.float64):
    dn = np.dtype(dtype).name
    atol = 2e-5 if dtype == np.float32 else 1e-10
    kw = dict(num_layers=2, bidirectional=True, proj_size=5, seed=9, dtype=dtype)
    x = rng.standard_normal((5, 3, 4)).astype(dtype)
    hx = (rng.standard_normal((4, 3, 5)).astype(dtype), rng.standard_normal((4, 3, 12)).astype(dtype))
    for name, index, value in [("weight_ih_l0", (3, 1), np.nan), ("weight_hh_l1_reverse", (40, 2), np.inf),
                               ("bias_ih_l0", (7,), -np.inf), ("weight_hr_l1", (0, 11), np.nan),
                               ("bias_hh_l1", (slice(None),), np.nan)]:
        fast, ref = fastlstm.LSTM(4, 12, **kw), Ref(4, 12, **kw)
        w = getattr(fast, name).copy()
        w[index] = value
        setattr(fast, name, w)
        setattr(ref, name, w)
        got = fast(x, hx, lengths=[5, 2, 4])
        want = ref(x, hx, lengths=[5, 2, 4])
        ok = all(close(a, b, atol) for a, b in zip((got[0],) + got[1], (want[0],) + want[1]))
        if np.isnan(value):
            ok = ok and not all(np.isfinite(a).all() for a in (got[0],) + got[1])
        else:  # an infinite weight saturates gates: finite results, but not the clean ones
            clean = fastlstm.LSTM(4, 12, **kw)(x, hx, lengths=[5, 2, 4])
            ok = ok and not all(np.array_equal(a, b) for a, b in zip((got[0],) + got[1], (clean[0],) + clean[1]))
        print(dn, name, value, "ok" if ok else "MISMATCH", flush=True)
    # all weights NaN, then clean again: forward and a stream
    fast = fastlstm.LSTM(4, 12, 2, proj_size=5, seed=10, dtype=dtype)
    clean = fast.state_dict()
    s = fast.stream(3)
    fast.load_state_dict({k: np.full(v.shape, np.nan) for k, v in clean.items()})
    out, (h, c) = fast(x)
    y = s.step(x[0])
    ok = np.isnan(out).all() and np.isnan(y).all() and np.isnan(s.state[1]).all()
    fast.load_state_dict(clean)
    s.reset()
    ref = Ref(4, 12, 2, proj_size=5, seed=10, dtype=dtype)
    ok = ok and close(fast(x)[0], ref(x)[0], atol) and close(s.step(x[0]), ref(x[:1])[0][0], atol)
    print(dn, "all NaN then clean", "ok" if ok else "MISMATCH", flush=True)
"""


def test_nonfinite_weights_in_child(tmp_path):
    expected = []
    for dn in ("float32", "float64"):
        expected += [f"{dn} weight_ih_l0 nan ok", f"{dn} weight_hh_l1_reverse inf ok", f"{dn} bias_ih_l0 -inf ok",
                     f"{dn} weight_hr_l1 nan ok", f"{dn} bias_hh_l1 nan ok", f"{dn} all NaN then clean ok"]
    _subprocess_ok(tmp_path, _NONFINITE_WEIGHTS, expected)


# ---- Stream arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [0, -1], ids=repr)
def test_stream_batch_size_rejected(batch_size):
    m = fastlstm.LSTM(3, 4, seed=0)
    with pytest.raises(ValueError) as info:
        m.stream(batch_size)
    assert "batch_size" in str(info.value) and repr(batch_size) in str(info.value), info.value


@pytest.mark.parametrize("batch_size", [1.5, True, False, np.float64(2.0), "2", None, np.bool_(True)], ids=repr)
def test_stream_batch_size_of_the_wrong_type(batch_size):
    # as the constructor's sizes: the wrong type is a TypeError naming the argument and the type given
    m = fastlstm.LSTM(3, 4, seed=0)
    with pytest.raises(TypeError) as info:
        m.stream(batch_size)
    assert "batch_size" in str(info.value) and type(batch_size).__name__ in str(info.value), info.value


def test_stream_batch_size_numpy_integer():
    m = fastlstm.LSTM(3, 4, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 3, 3)).astype(np.float32)
    s = m.stream(np.int16(3))
    assert s.batch_size == 3 and type(s.batch_size) is int
    assert_bitwise_equal(np.stack([s.step(x[t]) for t in range(2)]), m(x)[0], name="steps")


@pytest.mark.parametrize("shape", [(3,), (1, 2, 3), (3, 2), (2, 4), (0, 3), (2, 3, 1), ()], ids=str)
def test_step_x_wrong_shapes(shape):
    m = fastlstm.LSTM(3, 4, batch_first=True, seed=0)
    s = m.stream(2)
    with pytest.raises(ValueError) as info:
        s.step(np.zeros(shape, np.float32))
    assert "x_t" in str(info.value) and "(2, 3)" in str(info.value) and str(shape) in str(info.value), info.value


class _Sub(np.ndarray):
    pass


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.asmatrix
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("bad", ["list", "big-endian", "fortran", "sliced", "3-D", "1-D", "int", "subclass",
                                 "read-only view", "matrix", "other dtype", "zero strides"])
def test_step_out_rejected(bad, dtype):
    m = fastlstm.LSTM(3, 4, proj_size=2, seed=0, dtype=dtype)
    s = m.stream(2)
    other = np.float64 if dtype == np.float32 else np.float32
    wide = np.zeros((2, 4), dtype)
    ro = np.zeros((2, 2), dtype)
    out = {
        "list": [[0.0, 0.0], [0.0, 0.0]],
        "big-endian": np.zeros((2, 2), np.dtype(dtype).newbyteorder(">")),
        "fortran": np.zeros((2, 2), dtype, order="F"),
        "sliced": wide[:, ::2],
        "3-D": np.zeros((1, 2, 2), dtype),
        "1-D": np.zeros(4, dtype),
        "int": np.zeros((2, 2), np.int32 if dtype == np.float32 else np.int64),
        "subclass": np.zeros((2, 2), dtype).view(_Sub),
        "read-only view": ro[...],
        "matrix": np.asmatrix(np.zeros((2, 2), dtype)),
        "other dtype": np.zeros((2, 2), other),
        "zero strides": np.broadcast_to(np.zeros(2, dtype), (2, 2)),
    }[bad]
    if bad == "read-only view":
        ro.flags.writeable = False
        out = ro[...]
    before = s.state
    with pytest.raises(ValueError, match="out"):
        s.step(np.ones((2, 3)), out=out)
    for a, b in zip(s.state, before):
        assert_bitwise_equal(a, b, name="state after a rejected out")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_step_out_is_reused_across_steps_and_streams(dtype):
    """One out buffer for many steps of two streams: each step returns that very object with the step's values."""
    m = fastlstm.LSTM(3, 7, 2, proj_size=4, seed=1, dtype=dtype)
    xs = np.random.default_rng(2).standard_normal((5, 2, 3)).astype(dtype)
    want = m(xs)[0]
    a, b = m.stream(2), m.stream(2)
    out = np.full((2, 4), np.nan, dtype)
    base = out.__array_interface__["data"][0]
    for t in range(5):
        assert a.step(xs[t], out=out) is out
        assert_bitwise_equal(out, want[t], name=f"stream a step {t}")
        assert b.step(xs[t][::-1], out=out) is out
        assert_bitwise_equal(out, want[t][::-1], name=f"stream b step {t}")
    assert out.__array_interface__["data"][0] == base


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_step_out_aliasing_x_t(dtype, monkeypatch):
    """Feeding the output back as the next input, in place (autoregressive decoding): ``y = s.step(y, out=y)``.

    out= is a C-contiguous writable array of the right shape and dtype, so it is accepted; the step must then
    compute from x_t as it was on entry (like NumPy's ufuncs with an out= that overlaps an input), whatever
    the thread count (or refuse the overlap with ValueError). Anything else is a silently wrong answer.
    """
    from fastlstm import _threads

    monkeypatch.setattr(_threads, "_override", _threads._override)
    # streaming steps start a team only above a crossover; lower it so that this small model steps on
    # every thread allowed (results must not depend on that)
    monkeypatch.setattr(_threads, "MIN_STEP_WORK_PER_THREAD", 1, raising=False)
    n = 128
    m = fastlstm.LSTM(n, n, seed=3, dtype=dtype)  # input_size == hidden_size: y can be x
    rng = np.random.default_rng(4)
    start = rng.standard_normal((4, n)).astype(dtype)
    try:
        probe = start.copy()
        m.stream(4).step(probe, out=probe)
    except ValueError as exc:  # refusing the overlap is a valid answer too
        assert "out" in str(exc), exc
        return
    for threads in (1, 2, 3, 4):  # 3 threads split the blocks unevenly: thread 0 finishes first
        fastlstm.set_num_threads(threads)
        for trial in range(4):
            ref_stream, in_place = m.stream(4), m.stream(4)
            y_ref = start + trial
            y = y_ref.copy()
            for t in range(6):
                y_ref = ref_stream.step(y_ref)  # a new array every step
                assert in_place.step(y, out=y) is y
                assert_bitwise_equal(y, y_ref, name=f"{threads} thread(s), trial {trial}, step {t}: out=x_t")


def test_stream_of_reverse_models_rejected_before_batch_size():
    """reverse/bidirectional: ValueError on stream() even with a valid hx (test_stream covers the bare call)."""
    for kw, LD in ((dict(direction="reverse"), 1), (dict(bidirectional=True), 2)):
        m = fastlstm.LSTM(3, 4, **kw)
        with pytest.raises(ValueError, match="forward"):
            m.stream(2, (np.zeros((LD, 2, 4)), np.zeros((LD, 2, 4))))


@pytest.mark.parametrize("shape_h,shape_c", [
    ((3, 2, 4), (2, 2, 4)), ((2, 2, 4), (2, 3, 4)), ((2, 4), (2, 4)), ((2, 2, 4, 1), (2, 2, 4)),
    ((2, 1, 4), (2, 1, 4)), ((2, 2, 5), (2, 2, 4)), ((), ()),
], ids=str)
def test_stream_reset_wrong_shapes(shape_h, shape_c):
    """Reset with wrong shapes: ValueError naming the tensor with both shapes, and the state untouched."""
    m = fastlstm.LSTM(3, 4, 2, seed=0)
    s = m.stream(2)
    s.step(np.ones((2, 3)))
    before = s.state
    with pytest.raises(ValueError) as info:
        s.reset((np.zeros(shape_h), np.zeros(shape_c)))
    msg = str(info.value)
    which, given = ("hidden[0]", shape_h) if shape_h != (2, 2, 4) else ("hidden[1]", shape_c)
    assert which in msg and "(2, 2, 4)" in msg and str(given) in msg, msg
    for a, b in zip(s.state, before):
        assert_bitwise_equal(a, b, name="state after a failed reset")
