"""fastlstm.GRU: every path against the float64 reference (fastlstm.reference.GRU) and against torch.nn.GRU,
the kernels of every instruction set, threads and streaming bitwise, the API rules shared with the LSTM (errors,
T = 0 / B = 0, unbatched, save/load, pickle), and the loaders: ONNX against onnxruntime, Keras against Keras.
"""
from __future__ import annotations

import itertools
import os
import pickle

import numpy as np
import pytest
from conftest import assert_bitwise_equal, assert_close, require, run_python, tol

import fastlstm
from fastlstm import _cpu, _kernels

F32_TOL = 2e-5


def gru_pair(I, H, L=1, *, seed=0, **kwargs):
    """(fastlstm.GRU, fastlstm.reference.GRU) with the same configuration and weights."""
    fast = fastlstm.GRU(I, H, L, seed=seed, **kwargs)
    ref = fastlstm.reference.GRU(I, H, L, seed=seed, **kwargs)
    for name, value in fast.state_dict().items():
        assert np.array_equal(value, getattr(ref, name)), name
    return fast, ref


def inputs(model, T, B, rng, *, hx=False, lengths=False, scale=1.0):
    """x in the model's layout, hx (L*D, B, H) or None, lengths (B,) with lengths[0] = T or None."""
    x = (rng.standard_normal((T, B, model.input_size)) * scale).astype(model.dtype)
    if model.batch_first:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    LD = model.num_layers * (2 if model.bidirectional else 1)
    h0 = (rng.standard_normal((LD, B, model.hidden_size)) * 0.5).astype(model.dtype) if hx else None
    lens = None
    if lengths:
        lens = rng.integers(1, T + 1, size=B)
        lens[0] = T
    return x, h0, lens


def check_result(got, want, dtype, what=""):
    out, hn = got
    out_e, hn_e = want
    for label, a, e in (("output", out, out_e), ("h_n", hn, hn_e)):
        assert isinstance(a, np.ndarray) and a.dtype == np.dtype(dtype), f"{what} {label}: {type(a)} {a.dtype}"
        assert_close(a, e, atol=tol(dtype), name=f"{what} {label}")


@pytest.fixture(params=_cpu.available_isas())
def isa(request):
    """Models packed in the test use the kernels of this instruction set (and of every narrower one)."""
    _cpu.set_cap(request.param)
    yield request.param
    _cpu.set_cap(os.environ.get("FASTLSTM_ISA", ""))


# ==== kernels and cell kind ========================================================================


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gru_kernel_tables_exist_for_every_isa(dtype, isa):
    name = _kernels.kernel_table("gru", np.dtype(dtype).name, _cpu.features())[0]
    assert name == f"gru/{'f32' if dtype == np.float32 else 'f64'}/{isa}"
    assert fastlstm.GRU(3, 5, dtype=dtype)._packed.kernel_name == name


# ==== against the reference: the grid ==============================================================

GRID = list(
    itertools.product(
        [1, 2],                                    # layers
        ["forward", "bidirectional", "reverse"],   # direction
        [True, False],                             # linear_before_reset
        [np.float32, np.float64],
    )
)


@pytest.mark.parametrize("L, direction, lbr, dtype", GRID)
def test_matches_reference(L, direction, lbr, dtype, isa):
    rng = np.random.default_rng(L * 7 + len(direction))
    for H, bias, batch_first, B, lengths, hx, clip in [
        (7, True, False, 1, False, False, None),
        (21, False, True, 3, True, True, None),
        (40, True, False, 9, True, False, 0.7),     # (one direction, few units, 2+ tiles of rows: rows split)
        (70, True, True, 9, False, True, None),
    ]:
        kw = dict(bias=bias, batch_first=batch_first, dtype=dtype, linear_before_reset=lbr, clip=clip)
        if direction == "reverse":
            if L > 1:
                continue
            kw["direction"] = "reverse"
        else:
            kw["bidirectional"] = direction == "bidirectional"
        fast, ref = gru_pair(6, H, L, seed=H, **kw)
        x, h0, lens = inputs(fast, 8, B, rng, hx=hx, lengths=lengths)
        want = ref(x, h0, lengths=lens)
        what = f"H={H} B={B} bias={bias} batch_first={batch_first} lengths={lengths} hx={hx} clip={clip}"
        for threads in (1, 2):
            fastlstm.set_num_threads(threads)
            try:
                got = fast(x, h0, lengths=lens)
            finally:
                fastlstm.set_num_threads(fastlstm._threads.physical_cores())
            check_result(got, want, dtype, f"{what} threads={threads}")
            got2 = fast(x, h0, lengths=lens)        # the cached call plan gives the same bits
            assert_bitwise_equal(got2[0], got[0], name="output via the call plan")
            assert_bitwise_equal(got2[1], got[1], name="h_n via the call plan")


@pytest.mark.parametrize("lbr", [True, False])
def test_rows_past_their_length_are_zero_and_state_is_the_last_valid(lbr):
    fast, ref = gru_pair(4, 9, 2, bidirectional=True, linear_before_reset=lbr)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 3, 4)).astype(np.float32)
    lens = np.array([6, 2, 4])
    out, hn = fast(x, lengths=lens)
    assert np.all(out[2:, 1] == 0) and np.all(out[4:, 2] == 0)
    for b in range(3):  # each row alone, cut to its length, gives the same numbers
        o_b, h_b = ref(x[: lens[b], b : b + 1])
        assert_close(out[: lens[b], b : b + 1], o_b, atol=F32_TOL, name=f"row {b}")
        assert_close(hn[:, b : b + 1], h_b, atol=F32_TOL, name=f"h_n row {b}")


@pytest.mark.parametrize("lbr", [True, False])
def test_large_units_many_blocks_and_batch_tiles(lbr):
    fast, ref = gru_pair(33, 160, seed=3, linear_before_reset=lbr)
    x, h0, lens = inputs(fast, 5, 11, np.random.default_rng(2), hx=True, lengths=True)
    check_result(fast(x, h0, lengths=lens), ref(x, h0, lengths=lens), np.float32)


def test_unbatched_matches_batched():
    fast, ref = gru_pair(3, 10, 2)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    h0 = rng.standard_normal((2, 10)).astype(np.float32)
    out, hn = fast(x, h0)
    assert out.shape == (5, 10) and hn.shape == (2, 10)
    check_result((out, hn), ref(x, h0), np.float32)
    out_b, hn_b = fast(x[:, None], h0[:, None])
    assert_bitwise_equal(out, out_b[:, 0])
    assert_bitwise_equal(hn, hn_b[:, 0])
    out_l, _ = fast(x, h0, lengths=[3])
    assert np.all(out_l[3:] == 0)


def test_empty_sequences_and_batches():
    gru = fastlstm.GRU(3, 4, 2, bidirectional=True, seed=0)
    out, hn = gru(np.zeros((0, 2, 3)))
    assert out.shape == (0, 2, 8) and hn.shape == (4, 2, 4) and not hn.any()
    h0 = np.ones((4, 2, 4), np.float32)
    out, hn = gru(np.zeros((0, 2, 3)), h0)
    assert_bitwise_equal(hn, h0)
    out, hn = gru(np.zeros((5, 0, 3)))
    assert out.shape == (5, 0, 8) and hn.shape == (4, 0, 4)
    with pytest.raises(ValueError, match="lengths"):
        gru(np.zeros((0, 2, 3)), lengths=[1, 1])


def test_nan_stays_in_its_row():
    gru = fastlstm.GRU(3, 20, seed=0)
    x = np.random.default_rng(0).standard_normal((4, 3, 3)).astype(np.float32)
    x[1, 1, 0] = np.nan
    out, hn = gru(x)
    assert np.isnan(out[1:, 1]).all() and np.isfinite(out[:, [0, 2]]).all() and np.isfinite(hn[:, [0, 2]]).all()


def test_outputs_are_new_arrays_and_inputs_untouched():
    gru = fastlstm.GRU(3, 5, seed=0)
    x = np.ones((4, 2, 3), np.float32)
    h0 = np.full((1, 2, 5), 0.5, np.float32)
    out1, hn1 = gru(x, h0)
    out2, hn2 = gru(x, h0)
    assert out1 is not out2 and not np.shares_memory(out1, out2) and not np.shares_memory(hn1, h0)
    assert (x == 1).all() and (h0 == 0.5).all()


@pytest.mark.parametrize("lbr", [True, False])
def test_threads_give_the_same_bits(lbr):
    gru = fastlstm.GRU(16, 96, 2, seed=1, linear_before_reset=lbr)
    bi = fastlstm.GRU(16, 48, 1, bidirectional=True, seed=1, linear_before_reset=lbr)
    small = fastlstm.GRU(16, 24, 1, seed=1, linear_before_reset=lbr)     # splits the rows among the threads
    x = np.random.default_rng(5).standard_normal((6, 9, 16)).astype(np.float32)
    lens = [6, 1, 3, 6, 2, 5, 4, 6, 1]
    results = {}
    try:
        for n in (1, 2, 3, 4):
            fastlstm.set_num_threads(n)
            results[n] = (gru(x, lengths=lens), bi(x, lengths=lens), gru(x[:1]), small(x, lengths=lens))
    finally:
        fastlstm.set_num_threads(fastlstm._threads.physical_cores())
    for n in (2, 3, 4):
        for (a, ha), (b, hb) in zip(results[1], results[n]):
            assert_bitwise_equal(b, a, name=f"output with {n} threads")
            assert_bitwise_equal(hb, ha, name=f"h_n with {n} threads")


@pytest.mark.parametrize("lbr", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("I, H, L, bidirectional", [(12, 40, 2, False), (10, 70, 1, True), (8, 130, 1, False)])
def test_a_sequence_has_the_same_bits_alone_in_a_batch_and_padded(isa, lbr, dtype, threads, I, H, L, bidirectional,
                                                                  monkeypatch):
    gru = fastlstm.GRU(I, H, L, bidirectional=bidirectional, dtype=dtype, seed=H, linear_before_reset=lbr)
    monkeypatch.setattr(fastlstm._threads, "_override", fastlstm._threads._override)
    monkeypatch.setattr(fastlstm._threads, "MIN_WORK_PER_THREAD", 1)   # a team of `threads` even for small work
    fastlstm.set_num_threads(threads)
    rng = np.random.default_rng(H)
    T, B = 9, 13
    x = rng.standard_normal((T, B, I)).astype(dtype)
    lengths = rng.integers(1, T + 1, B)
    lengths[5] = T
    batch_out, batch_h = gru(x, lengths=lengths)
    for b in (0, 5, 12):
        n = int(lengths[b])
        alone, h = gru(x[:n, b : b + 1])
        assert alone.tobytes() == batch_out[:n, b : b + 1].tobytes(), f"row {b}: alone vs in the batch"
        assert h.tobytes() == batch_h[:, b : b + 1].tobytes()
    for start, stop in ((0, 1), (0, 4), (3, 8), (5, 13)):   # chunks of the batch
        out, h = gru(x[:, start:stop], lengths=lengths[start:stop])
        assert out.tobytes() == batch_out[:, start:stop].tobytes(), f"chunk {start}:{stop}"
        assert h.tobytes() == batch_h[:, start:stop].tobytes()
    padded = np.concatenate([x, rng.standard_normal((4, B, I)).astype(dtype)])   # garbage past the lengths
    out, h = gru(padded, lengths=lengths)
    assert out[:T].tobytes() == batch_out.tobytes() and not out[T:].any() and h.tobytes() == batch_h.tobytes()


ONE_CPU_SCRIPT = """
import os, subprocess, sys
import numpy as np
cpu = min(os.sched_getaffinity(0))
os.sched_setaffinity(0, {cpu})   # before any thread starts: the team shares one CPU, with a busy process
busy = subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu}}}); any(iter(int, 1))"])
import fastlstm
from fastlstm import _kernels
rng = np.random.default_rng(0)
failures = []
assert _kernels.contention() == (0.0, 0.0), _kernels.contention()
for I, H, L, bidir, lbr, B in ((32, 70, 1, False, True, 1), (64, 256, 2, False, False, 3), (16, 64, 1, True, False, 1)):
    model = fastlstm.GRU(I, H, L, bidirectional=bidir, seed=H, linear_before_reset=lbr)
    x = rng.standard_normal((40, B, I)).astype(np.float32)
    fastlstm.set_num_threads(1)
    want = model(x)
    fastlstm.set_num_threads(2)
    for call in range(3):
        got = model(x)
        if got[0].tobytes() != want[0].tobytes() or got[1].tobytes() != want[1].tobytes():
            failures.append(f"H={H} linear_before_reset={lbr} call {call}: not the bits of one thread")
busy.kill()
if not _kernels.contention()[0] > 0:
    failures.append(f"no contention window opened on one CPU: {_kernels.contention()}")
if failures:
    sys.exit("\\n".join(failures))
print("ok")
"""


@pytest.mark.skipif(not fastlstm.openmp_enabled(), reason="a serial build has no team")
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_a_team_on_one_cpu_gives_up_and_keeps_the_bits(tmp_path):
    """A 2-thread team on one CPU beside a busy process: members miss their time slices, a waiter gives the team
    up (also at the split step's mid-step meeting) and reruns the call alone: the bits of one thread."""
    proc = run_python(ONE_CPU_SCRIPT, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stdout + proc.stderr


# ==== streaming ====================================================================================


@pytest.mark.parametrize("lbr", [True, False])
@pytest.mark.parametrize("B", [1, 4])
def test_stream_is_bitwise_the_forward(lbr, B):
    gru = fastlstm.GRU(12, 40, 2, seed=2, linear_before_reset=lbr)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((7, B, 12)).astype(np.float32)
    h0 = rng.standard_normal((2, B, 40)).astype(np.float32)
    out, hn = gru(x, h0)
    s = gru.stream(B, hx=h0)
    ys = [s.step(x[t]) for t in range(7)]
    assert_bitwise_equal(np.stack(ys), out, name="stepped outputs")
    state = s.state
    assert isinstance(state, np.ndarray)
    assert_bitwise_equal(state, hn, name="s.state")
    buf = np.empty((B, 40), np.float32)
    s.reset(h0)
    for t in range(7):
        assert s.step(x[t], out=buf) is buf
    assert_bitwise_equal(buf, out[-1])
    s.reset()
    assert not s.state.any()
    # a one-step forward call (the torch habit) is the same step
    o1, h1 = gru(x[:1], h0)
    assert_bitwise_equal(o1[0], out[0])


@pytest.mark.parametrize("lbr", [True, False])
def test_stream_fed_its_own_output_in_place(lbr):
    gru = fastlstm.GRU(24, 24, 2, seed=4, linear_before_reset=lbr)
    ref = fastlstm.reference.GRU(24, 24, 2, linear_before_reset=lbr)
    ref.load_state_dict(gru.state_dict())
    y = np.random.default_rng(7).standard_normal((3, 24)).astype(np.float32)
    s, h = gru.stream(3), None
    for _ in range(5):
        want, h = ref(y[None], h)       # (the reference reads y before the step overwrites it)
        assert s.step(y, out=y) is y    # x_t and out are the same array
        assert_close(y, want[0], atol=F32_TOL, name="output")
    assert_close(s.state, h, atol=F32_TOL, name="state")


def test_stream_errors():
    with pytest.raises(ValueError, match="only forward GRUs can stream"):
        fastlstm.GRU(3, 4, bidirectional=True).stream()
    s = fastlstm.GRU(3, 4).stream(2)
    with pytest.raises(ValueError, match=r"Expected hidden size \(1, 2, 4\)"):
        s.reset(np.zeros((1, 3, 4)))
    with pytest.raises(ValueError, match="x_t"):
        s.step(np.zeros((2, 5)))


# ==== torch ========================================================================================


@pytest.mark.parametrize("L, bidirectional, bias, batch_first, dtype", [
    (1, False, True, False, "float32"),
    (2, True, True, True, "float32"),
    (2, False, False, False, "float32"),
    (1, True, True, False, "float64"),
])
def test_from_torch_matches_torch(L, bidirectional, bias, batch_first, dtype):
    torch = require("torch")
    torch.manual_seed(0)
    tdtype = getattr(torch, dtype)
    module = torch.nn.GRU(10, 70, L, bias=bias, batch_first=batch_first, bidirectional=bidirectional, dtype=tdtype)
    gru = fastlstm.GRU.from_torch(module)
    assert (gru.num_layers, gru.bidirectional, gru.bias, gru.batch_first) == (L, bidirectional, bias, batch_first)
    assert gru.dtype == np.dtype(dtype) and gru.linear_before_reset
    D = 2 if bidirectional else 1
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 12, 10) if batch_first else (12, 5, 10)).astype(dtype)
    h0 = (rng.standard_normal((L * D, 5, 70)) * 0.5).astype(dtype)
    with torch.no_grad():
        want_out, want_h = module(torch.from_numpy(x), torch.from_numpy(h0))
    out, hn = gru(x, h0)
    atol = F32_TOL if dtype == "float32" else 1e-10
    assert_close(out, want_out.numpy(), atol=atol, name="output")
    assert_close(hn, want_h.numpy(), atol=atol, name="h_n")
    # lengths are pack_padded_sequence(enforce_sorted=False)
    lens = np.array([12, 3, 7, 1, 12])
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.from_numpy(x), torch.from_numpy(lens), batch_first=batch_first, enforce_sorted=False
    )
    with torch.no_grad():
        p_out, p_h = module(packed, torch.from_numpy(h0))
    want_out, _ = torch.nn.utils.rnn.pad_packed_sequence(p_out, batch_first=batch_first, total_length=12)
    out, hn = gru(x, h0, lengths=lens)
    assert_close(out, want_out.numpy(), atol=atol, name="output with lengths")
    assert_close(hn, p_h.numpy(), atol=atol, name="h_n with lengths")
    # unbatched
    with torch.no_grad():
        u_out, u_h = module(torch.from_numpy(x[0] if batch_first else x[:, 0]))
    out, hn = gru(x[0] if batch_first else x[:, 0])
    assert_close(out, u_out.numpy(), atol=atol, name="unbatched output")
    assert_close(hn, u_h.numpy(), atol=atol, name="unbatched h_n")


def test_from_torch_takes_a_gru_cell():
    torch = require("torch")
    torch.manual_seed(2)
    cell = torch.nn.GRUCell(6, 9)
    gru = fastlstm.GRU.from_torch(cell)
    assert (gru.num_layers, gru.input_size, gru.hidden_size, gru.bias) == (1, 6, 9, True)
    x = np.random.default_rng(3).standard_normal((4, 2, 6)).astype(np.float32)
    h = torch.zeros(2, 9)
    with torch.no_grad():
        for t in range(4):
            h = cell(torch.from_numpy(x[t]), h)
    assert_close(gru(x)[1][0], h.numpy(), atol=F32_TOL, name="h_n")
    assert not fastlstm.GRU.from_torch(torch.nn.GRUCell(2, 3, bias=False)).bias


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_from_torch_takes_scripted_modules():
    """A TorchScript GRU or GRUCell (as torch.jit.load gives) loads as the module itself does."""
    torch = require("torch")
    torch.manual_seed(4)
    x = np.random.default_rng(5).standard_normal((4, 2, 6)).astype(np.float32)
    for module in (torch.nn.GRU(6, 9, 2, bidirectional=True), torch.nn.GRUCell(6, 9)):
        scripted = fastlstm.GRU.from_torch(torch.jit.script(module))
        plain = fastlstm.GRU.from_torch(module)
        assert repr(scripted) == repr(plain)
        for got, want, name in zip(scripted(x), plain(x), ("output", "h_n")):
            assert_bitwise_equal(got, want, name=name)


def test_from_torch_rejects_other_modules():
    torch = require("torch")
    with pytest.raises(TypeError, match="torch.nn.GRU"):
        fastlstm.GRU.from_torch(torch.nn.LSTM(2, 3))
    with pytest.raises(TypeError, match="torch.nn.GRU"):
        fastlstm.GRU.from_torch(torch.jit.script(torch.nn.LSTM(2, 3)))
    with pytest.raises(ValueError, match="float16"):
        fastlstm.GRU.from_torch(torch.nn.GRU(2, 3).half())


# ==== API: parameters, errors, save/load, pickle ===================================================


def test_parameters_have_torch_names_and_shapes():
    gru = fastlstm.GRU(5, 4, 2, bidirectional=True)
    shapes = {k: v.shape for k, v in gru.state_dict().items()}
    assert shapes["weight_ih_l0"] == (12, 5) and shapes["weight_hh_l0"] == (12, 4)
    assert shapes["weight_ih_l1_reverse"] == (12, 8) and shapes["bias_hh_l1_reverse"] == (12,)
    assert len(shapes) == 16
    assert "bias_ih_l0" not in fastlstm.GRU(5, 4, bias=False).state_dict()
    assert repr(fastlstm.GRU(5, 4, linear_before_reset=False)) == "GRU(5, 4, linear_before_reset=False)"
    with pytest.raises(AttributeError):          # the configuration is read-only, as the LSTM's
        gru.linear_before_reset = False
    with pytest.raises(AttributeError, match="read-only"):
        gru.hidden_size = 3
    # assigning a parameter repacks the weights
    gru = fastlstm.GRU(2, 3, seed=0)
    x = np.ones((2, 1, 2), np.float32)
    before = gru(x)[0]
    gru.bias_hh_l0 = gru.bias_hh_l0 + 1
    assert not np.array_equal(gru(x)[0], before)


def test_errors_use_the_lstm_rules():
    gru = fastlstm.GRU(3, 4, 2)
    with pytest.raises(ValueError, match="GRU: Expected input to be 2D or 3D, got 4D instead"):
        gru(np.zeros((1, 1, 1, 3)))
    with pytest.raises(ValueError, match="input.size\\(-1\\) must be equal to input_size. Expected 3, got 2"):
        gru(np.zeros((2, 1, 2)))
    with pytest.raises(ValueError, match=r"Expected hidden size \(2, 1, 4\), got \(1, 1, 4\)"):
        gru(np.zeros((2, 1, 3)), np.zeros((1, 1, 4)))
    with pytest.raises(ValueError, match="For batched 3-D input, hx should also be 3-D"):
        gru(np.zeros((2, 1, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="For unbatched 2-D input, hx should also be 2-D"):
        gru(np.zeros((2, 3)), np.zeros((2, 1, 4)))
    with pytest.raises(TypeError, match="bool"):
        gru(np.zeros((2, 1, 3), bool))
    with pytest.raises(ValueError, match="lengths: expected 1 <= lengths"):
        gru(np.zeros((2, 2, 3)), lengths=[3, 1])
    with pytest.raises(TypeError, match="hidden_size should be of type int"):
        fastlstm.GRU(3, 4.0)
    with pytest.raises(ValueError, match="hidden_size must be greater than zero"):
        fastlstm.GRU(3, 0)
    with pytest.raises(TypeError, match="linear_before_reset should be of type bool"):
        fastlstm.GRU(3, 4, linear_before_reset=1)
    with pytest.raises(ValueError, match="clip must be a positive finite number"):
        fastlstm.GRU(3, 4, clip=-1.0)
    for cls in (fastlstm.GRU, fastlstm.reference.GRU):   # torch's GRU has no proj_size either
        with pytest.raises(TypeError, match=r"^GRU\.__init__\(\) got an unexpected keyword argument 'proj_size'$"):
            cls(3, 4, proj_size=2)
    with pytest.raises(ValueError, match="Missing key"):
        gru.load_state_dict({})
    for cls in (fastlstm.GRU, fastlstm.reference.GRU):   # (tests/test_gru_quantize.py: the quantized GRU)
        with pytest.raises(ValueError, match="only float32 models can be quantized"):
            cls(3, 4, dtype=np.float64).quantize("bf16")


@pytest.mark.parametrize("lbr", [True, False])
def test_save_load_and_pickle_round_trip(tmp_path, lbr):
    gru = fastlstm.GRU(4, 6, 2, bidirectional=True, batch_first=True, dtype=np.float64, seed=3,
                       linear_before_reset=lbr, clip=2.5)
    x = np.random.default_rng(8).standard_normal((2, 5, 4))
    want = gru(x)
    path = tmp_path / "model.flstm"
    gru.save(path)
    loaded = fastlstm.load(path)
    assert type(loaded) is fastlstm.GRU and repr(loaded) == repr(gru)
    assert loaded.linear_before_reset == lbr and loaded.clip == 2.5
    for name, value in gru.state_dict().items():
        assert_bitwise_equal(loaded.state_dict()[name], value, name=name)
    got = loaded(x)
    assert_bitwise_equal(got[0], want[0])
    unpickled = pickle.loads(pickle.dumps(gru))
    assert type(unpickled) is fastlstm.GRU
    assert_bitwise_equal(unpickled(x)[1], want[1])
    # an LSTM file still loads as an LSTM
    lstm = fastlstm.LSTM(4, 6)
    lstm.save(tmp_path / "lstm")
    assert type(fastlstm.load(tmp_path / "lstm")) is fastlstm.LSTM


# ==== ONNX =========================================================================================


def _onnx_gru(W, R, Bias, *, direction, layout, lbr, clip, seqlen, init, dtype=np.float32):
    from onnx import TensorProto, helper, numpy_helper

    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R")]
    ins = ["X", "W", "R"]
    if Bias is not None:
        inits.append(numpy_helper.from_array(Bias, "B"))
    ins.append("B" if Bias is not None else "")
    ins.append("sequence_lens" if seqlen else "")
    ins.append("initial_h" if init else "")
    attrs = dict(hidden_size=R.shape[2], direction=direction, linear_before_reset=int(lbr))
    if layout:
        attrs["layout"] = 1
    if clip is not None:
        attrs["clip"] = clip
    node = helper.make_node("GRU", ins, ["Y", "Y_h"], name="the_gru", **attrs)
    graph_inputs = [helper.make_tensor_value_info("X", elem, None)]
    if seqlen:
        graph_inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, None))
    if init:
        graph_inputs.append(helper.make_tensor_value_info("initial_h", elem, None))
    graph = helper.make_graph(
        [node], "one_gru", graph_inputs, [helper.make_tensor_value_info(n, elem, None) for n in ("Y", "Y_h")],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model


def _y_to_ours(Y, batch_first):
    T, D, B, H = Y.shape
    out = Y.transpose(0, 2, 1, 3).reshape(T, B, D * H)
    return np.ascontiguousarray(out.transpose(1, 0, 2)) if batch_first else out


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("lbr", [True, False])
@pytest.mark.parametrize("layout, seqlen, init, bias, clip", [
    (0, False, False, True, None),
    (0, True, True, True, None),
    (1, True, True, False, None),
    (0, True, False, True, 0.75),   # (exact in float32, the type of the attribute)
])
def test_from_onnx_matches_onnxruntime(direction, lbr, layout, seqlen, init, bias, clip):
    ort = require("onnxruntime")
    require("onnx")
    rng = np.random.default_rng(9)
    D = 2 if direction == "bidirectional" else 1
    I, H, T, B = 5, 19, 7, 4
    W = (rng.standard_normal((D, 3 * H, I)) * 0.5).astype(np.float32)
    R = (rng.standard_normal((D, 3 * H, H)) * 0.5).astype(np.float32)
    Bias = (rng.standard_normal((D, 6 * H)) * 0.5).astype(np.float32) if bias else None
    kw = dict(direction=direction, lbr=lbr, clip=clip, seqlen=seqlen, init=init)
    model = _onnx_gru(W, R, Bias, layout=layout, **kw)
    ort_model = _onnx_gru(W, R, Bias, layout=0, **kw)   # onnxruntime runs layout 0 only
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    lens = np.array([T, 3, 1, 5], np.int32)
    h0 = (rng.standard_normal((D, B, H)) * 0.5).astype(np.float32)
    feeds = {"X": x}
    if seqlen:
        feeds["sequence_lens"] = lens
    if init:
        feeds["initial_h"] = h0
    session = ort.InferenceSession(ort_model.SerializeToString(), providers=["CPUExecutionProvider"])
    Y, Y_h = session.run(None, feeds)
    gru = fastlstm.GRU.from_onnx(model)
    assert gru.direction == direction and gru.batch_first == (layout == 1) and gru.bias == bias
    assert gru.linear_before_reset == lbr and gru.clip == clip
    ours_x = np.ascontiguousarray(x.transpose(1, 0, 2)) if layout == 1 else x
    out, hn = gru(ours_x, h0 if init else None, lengths=lens if seqlen else None)
    assert_close(out, _y_to_ours(Y, layout == 1), atol=F32_TOL, name="Y")
    assert_close(hn, Y_h, atol=F32_TOL, name="Y_h")
    ref = fastlstm.reference.GRU.from_onnx(model)
    check_result((out, hn), ref(ours_x, h0 if init else None, lengths=lens if seqlen else None), np.float32)


def test_from_onnx_reads_what_torch_exports(tmp_path):
    torch = require("torch")
    ort = require("onnxruntime")
    require("onnx")
    torch.manual_seed(1)
    for layers, bidirectional in ((1, True), (3, False), (2, True)):
        module = torch.nn.GRU(6, 11, layers, bidirectional=bidirectional)
        x = torch.randn(5, 2, 6)
        path = tmp_path / f"gru{layers}.onnx"
        torch.onnx.export(module, (x,), str(path), dynamo=False, input_names=["x"])
        gru = fastlstm.GRU.from_onnx(str(path))   # a stacked export: a chain of GRU nodes, one model
        assert gru.linear_before_reset and gru.bidirectional == bidirectional and gru.num_layers == layers
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        want = session.run(None, {"x": x.numpy()})
        out, hn = gru(x.numpy())
        assert_close(out, want[0], atol=F32_TOL, name="output")
        assert_close(hn, want[1], atol=F32_TOL, name="h_n")
        with torch.no_grad():
            assert_close(out, module(x)[0].numpy(), atol=F32_TOL, name="output vs torch")
        if layers > 1:
            one = fastlstm.GRU.from_onnx(str(path), node=1)    # a named node: that layer alone
            assert one.num_layers == 1 and one.input_size == 11 * (2 if bidirectional else 1)


def test_from_onnx_node_selection_and_errors():
    require("onnx")
    from onnx import helper

    rng = np.random.default_rng(10)
    W = rng.standard_normal((1, 12, 3)).astype(np.float32)
    R = rng.standard_normal((1, 12, 4)).astype(np.float32)
    model = _onnx_gru(W, R, None, direction="forward", layout=0, lbr=False, clip=None, seqlen=False, init=False)
    assert fastlstm.GRU.from_onnx(model, node="the_gru").hidden_size == 4
    assert fastlstm.GRU.from_onnx(model, node=0).hidden_size == 4
    with pytest.raises(ValueError, match="no GRU node named 'other'"):
        fastlstm.GRU.from_onnx(model, node="other")
    second = helper.make_node("GRU", ["X", "W", "R"], ["Y2"], name="second", hidden_size=4)
    model.graph.node.append(second)
    with pytest.raises(ValueError, match="2 GRU nodes \\(the_gru, second\\)"):
        fastlstm.GRU.from_onnx(model)
    assert fastlstm.GRU.from_onnx(model, node=second).hidden_size == 4
    bad = _onnx_gru(W, R, None, direction="forward", layout=0, lbr=False, clip=None, seqlen=False, init=False)
    bad.graph.node[0].attribute.append(helper.make_attribute("activations", ["Relu", "Tanh"]))
    with pytest.raises(ValueError, match="unsupported activations"):
        fastlstm.GRU.from_onnx(bad)
    with pytest.raises(TypeError, match="ModelProto"):
        fastlstm.GRU.from_onnx(42)


# ==== Keras ========================================================================================


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    return require("keras")


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("use_bias", [True, False])
def test_from_keras_matches_keras(reset_after, use_bias):
    keras = _keras()
    keras.utils.set_random_seed(0)
    layer = keras.layers.GRU(13, reset_after=reset_after, use_bias=use_bias, return_sequences=True,
                             return_state=True, bias_initializer="random_normal")
    x = np.random.default_rng(11).standard_normal((3, 6, 5)).astype(np.float32)
    h0 = (np.random.default_rng(12).standard_normal((3, 13)) * 0.5).astype(np.float32)
    want_out, want_h = (np.asarray(keras.ops.convert_to_numpy(a)) for a in layer(x, initial_state=[h0]))
    # a weights list says reset_after by its bias shape; without a bias it is read as Keras' default (True)
    # unless reset_after= says otherwise
    told = dict(reset_after=reset_after)
    sources = [(layer, {}), (layer, told), (layer.get_weights(), told)]
    if use_bias or reset_after:
        sources.append((layer.get_weights(), {}))
    for source, kwargs in sources:
        gru = fastlstm.GRU.from_keras(source, **kwargs)
        assert gru.batch_first and gru.linear_before_reset == reset_after and gru.bias == use_bias
        out, hn = gru(x, h0[None])
        assert_close(out, want_out, atol=F32_TOL, name="output")
        assert_close(hn[0], want_h, atol=F32_TOL, name="h_n")


def test_from_keras_bidirectional_and_errors():
    keras = _keras()
    keras.utils.set_random_seed(1)
    layer = keras.layers.Bidirectional(keras.layers.GRU(7, return_sequences=True))
    x = np.random.default_rng(13).standard_normal((2, 5, 4)).astype(np.float32)
    want = np.asarray(keras.ops.convert_to_numpy(layer(x)))
    gru = fastlstm.GRU.from_keras(layer)
    assert gru.bidirectional
    assert_close(gru(x)[0], want, atol=F32_TOL, name="output")
    relu = keras.layers.GRU(3, activation="relu")
    relu(x)
    with pytest.raises(ValueError, match="activation='relu'"):
        fastlstm.GRU.from_keras(relu)
    backwards = keras.layers.GRU(3, go_backwards=True)
    backwards(x)
    with pytest.raises(ValueError, match="go_backwards"):
        fastlstm.GRU.from_keras(backwards)
    with pytest.raises(ValueError, match="bias has shape"):
        fastlstm.GRU.from_keras([np.zeros((4, 9)), np.zeros((3, 9)), np.zeros((2, 8))])
    with pytest.raises(ValueError, match="kernel"):
        fastlstm.GRU.from_keras([np.zeros((4, 8)), np.zeros((3, 9))])
    with pytest.raises(ValueError, match="reset_after=False given, the layer has True"):
        fastlstm.GRU.from_keras(layer.forward_layer, reset_after=False)
    with pytest.raises(ValueError, match="bias has shape"):   # a (2, 3H) bias is reset_after=True's
        fastlstm.GRU.from_keras([np.zeros((4, 9)), np.zeros((3, 9)), np.zeros((2, 9))], reset_after=False)
    with pytest.raises(TypeError, match="reset_after"):
        fastlstm.GRU.from_keras([np.zeros((4, 9)), np.zeros((3, 9))], reset_after="no")
