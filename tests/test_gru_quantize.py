"""Reduced-precision GRUs (gru.quantize("bf16" | "int8"), src/gru_quant_impl.h): every GRU feature against the
quantized oracle (fastlstm.reference.GRU(...).quantize(fmt), the same rounding in float64) on every instruction set
and both linear_before_reset settings, and the bitwise promises (instruction sets for int8, threads, batching,
lengths, streaming, save/load, pickle)."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from conftest import assert_bitwise_equal, assert_close

import fastlstm
from fastlstm import _cpu, _kernels

FORMATS = ["bf16", "int8"]
# |fast - oracle|, as for the LSTM (tests/test_quantize.py): float32 accumulation, and an activation landing on
# the other side of a rounding boundary (one term of one dot product moves by a bf16 ulp or an int8 step). int8
# allows more than the LSTM's 2e-4: without linear_before_reset r * h is a third rounded row, whose r the kernels
# compute in float32 and the oracle in float64, so more of its elements can land across a boundary.
ATOL = {"bf16": 1e-3, "int8": 5e-4}

CONFIGS = [
    dict(input_size=40, hidden_size=50),
    dict(input_size=33, hidden_size=100, num_layers=2, bidirectional=True),
    dict(input_size=17, hidden_size=40, clip=1.5, bias=False, batch_first=True),
    dict(input_size=5, hidden_size=3),
    dict(input_size=6, hidden_size=18, direction="reverse"),
    dict(input_size=64, hidden_size=64, num_layers=2, bidirectional=True),   # lengths that fit AMX tiles
    dict(input_size=128, hidden_size=128, clip=2.0),
]


def _config_id(config):
    return "-".join(f"{k}{v}" for k, v in config.items())


def quantized_pair(fmt, *, seed=0, **config):
    """(fastlstm.GRU, fastlstm.reference.GRU), both quantized to fmt from the same float32 weights."""
    fast = fastlstm.GRU(seed=seed, **config)
    ref = fastlstm.reference.GRU(seed=seed, **config)
    return fast.quantize(fmt), ref.quantize(fmt)


def random_call(model, T, B, rng, *, hx=False, lengths=False):
    """(x in the model's layout, h_0 or None, lengths with lengths[0] = T or None)."""
    x = rng.standard_normal((T, B, model.input_size)).astype(np.float32)
    if model.batch_first:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    LD = model.num_layers * (2 if model.bidirectional else 1)
    h0 = (rng.standard_normal((LD, B, model.hidden_size)) * 0.5).astype(np.float32) if hx else None
    lens = None
    if lengths:
        lens = rng.integers(1, T + 1, size=B)
        lens[0] = T
    return x, h0, lens


def assert_gru_bitwise(got, want, what=""):
    for label, a, e in zip(("output", "h_n"), got, want):
        assert_bitwise_equal(a, e, name=f"{what} {label}")


def _isas():
    """The instruction sets of this CPU the GRU's kernels can be capped to, narrowest first ("amx": no cap, where the
    CPU has AMX tiles)."""
    has_amx = {"amx_int8", "amx_bf16"} <= set(_cpu.feature_names(_kernels.cpu_features()))
    return _cpu.available_isas() + (["amx"] if has_amx else [])


@pytest.fixture(params=_isas())
def isa(request):
    """Models packed in the test use the kernels of this instruction set (AMX tiles, or vdpbf16ps / vpdpbusd where
    the CPU has them with AVX-512, else the widening fallbacks)."""
    _cpu.set_cap(request.param)
    yield request.param
    _cpu.set_cap(os.environ.get("FASTLSTM_ISA", ""))


@pytest.mark.parametrize("lbr", [True, False], ids=["lbr", "no-lbr"])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
def test_matches_quantized_oracle(config, fmt, lbr, isa):
    rng = np.random.default_rng(1)
    fast, ref = quantized_pair(fmt, linear_before_reset=lbr, **config)
    assert fast._packed.kernel_name.startswith(f"gru/{fmt}/{isa}")
    assert fast.weights == ref.weights == fmt
    for T, B, opts in ((9, 7, dict(lengths=True, hx=True)), (1, 1, {}), (6, 5, dict(lengths=True)), (1, 3, {})):
        x, h0, lens = random_call(fast, T, B, rng, **opts)
        got, want = fast(x, h0, lengths=lens), ref(x, h0, lengths=lens)
        for label, a, e in zip(("output", "h_n"), got, want):
            assert a.dtype == np.float32
            assert_close(a, e, atol=ATOL[fmt], name=f"T={T} B={B} {label}")
    x = rng.standard_normal((4, config["input_size"])).astype(np.float32)      # unbatched
    for a, e in zip(fast(x), ref(x)):
        assert_close(a, e, atol=ATOL[fmt])


@pytest.mark.parametrize("lbr", [True, False], ids=["lbr", "no-lbr"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_oracle_is_the_quantized_computation(fmt, lbr):
    """The quantized oracle's error against the float32 model is that of its format, and much larger than its
    distance from the kernels (so the tolerance above can tell a wrong rounding rule from a right one)."""
    rng = np.random.default_rng(3)
    fast = fastlstm.GRU(64, 96, seed=4, linear_before_reset=lbr)
    ref = fastlstm.reference.GRU(64, 96, seed=4, linear_before_reset=lbr)
    x = rng.standard_normal((20, 3, 64)).astype(np.float32)
    exact, _ = ref(x)
    quant, _ = ref.quantize(fmt)(x)
    kernel, _ = fast.quantize(fmt)(x)
    err = np.abs(quant - exact).max()
    assert 1e-4 < err < 3e-2, err
    assert np.abs(kernel - quant).max() < err / 20


@pytest.mark.parametrize("fmt", FORMATS)
def test_weights_state_dict_load_and_repr(fmt):
    m = fastlstm.GRU(12, 24, seed=5, linear_before_reset=False)
    q = m.quantize(fmt)
    assert m.weights == "float32" and q.weights == fmt and q.dtype == np.float32 and not q.linear_before_reset
    assert m._format is None and m._packed.kernel_name.startswith("gru/f32/")  # m unchanged
    assert repr(q) == f"GRU(12, 24, weights={fmt!r}, linear_before_reset=False)"
    sd = q.state_dict()
    assert set(sd) == set(m.state_dict()) and all(v.dtype == np.float32 for v in sd.values())
    for name, value in sd.items():
        if name.startswith("bias"):
            assert_bitwise_equal(value, m.state_dict()[name])
        else:  # dequantized: within the format's rounding of the original
            original = m.state_dict()[name]
            bound = np.abs(original) * 2**-8 if fmt == "bf16" else np.abs(original).max(axis=1, keepdims=True) / 254
            assert (np.abs(value - original) <= bound * 1.0001).all(), name
            assert not np.array_equal(value, original)
    other = fastlstm.GRU(12, 24, seed=9, linear_before_reset=False).quantize(fmt)
    other.load_state_dict(m.state_dict())           # quantizes what it is given: the same model as quantize()
    x = np.random.default_rng(0).standard_normal((5, 2, 12)).astype(np.float32)
    assert_gru_bitwise(other(x), q(x))
    other.weight_hh_l0 = np.zeros((72, 24))        # assigning a weight quantizes it
    assert not np.array_equal(other(x)[0], q(x)[0]) and not other.weight_hh_l0.any()
    again = q.quantize(fmt)                         # the dequantized values are representable: the same bits
    assert_gru_bitwise(again(x), q(x))
    with pytest.raises(ValueError, match="only float32 models"):
        fastlstm.GRU(4, 8, dtype=np.float64).quantize(fmt)
    with pytest.raises(ValueError, match="weights must be one of"):
        m.quantize("fp16")


@pytest.mark.parametrize("lbr", [True, False], ids=["lbr", "no-lbr"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_bitwise_across_thread_counts(fmt, lbr):
    rng = np.random.default_rng(6)
    models = [fastlstm.GRU(48, 160, 2, bidirectional=True, seed=2, linear_before_reset=lbr).quantize(fmt),
              fastlstm.GRU(48, 200, seed=3, linear_before_reset=lbr).quantize(fmt),
              fastlstm.GRU(64, 256, seed=4, linear_before_reset=lbr).quantize(fmt)]
    try:
        for model in models:
            for T in (12, 1):
                x, h0, lens = random_call(model, T, 5, rng, hx=True, lengths=True)
                results = []
                for n in (1, 2, 3):
                    fastlstm.set_num_threads(n)
                    results.append(model(x, h0, lengths=lens))
                for n, r in zip((2, 3), results[1:]):
                    assert_gru_bitwise(r, results[0], what=f"T={T} {n} threads")
    finally:
        from fastlstm import _threads

        fastlstm.set_num_threads(_threads.physical_cores())


@pytest.mark.parametrize("lbr", [True, False], ids=["lbr", "no-lbr"])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("config", [dict(hidden_size=70), dict(hidden_size=24), dict(hidden_size=128),
                                    dict(hidden_size=40, num_layers=2, bidirectional=True)], ids=_config_id)
def test_sequence_bits_do_not_depend_on_its_batch(config, fmt, lbr):
    """A sequence alone, in batches of every size (other tile shapes, row splits, more than one group of rows) and
    padded inside a longer batch with lengths: the same bits."""
    rng = np.random.default_rng(7)
    q = fastlstm.GRU(19, seed=8, linear_before_reset=lbr, **config).quantize(fmt)
    T = 11
    seq = rng.standard_normal((T, 1, 19)).astype(np.float32)
    alone, h = q(seq)
    for B in (2, 3, 5, 8, 260):   # 260: more than one group of rows (quant_impl.h)
        for pos in (0, B - 1):
            batch = rng.standard_normal((T + 3, B, 19)).astype(np.float32) * 3
            batch[:T, pos] = seq[:, 0]
            lengths = rng.integers(1, T + 4, size=B)
            lengths[pos] = T
            out, hn = q(batch, lengths=lengths)
            assert_bitwise_equal(out[:T, pos], alone[:, 0], name=f"B={B} pos={pos}")
            assert_bitwise_equal(hn[:, pos], h[:, 0], name=f"B={B} pos={pos} h_n")
            full, _ = q(batch[:T])
            assert_bitwise_equal(full[:, pos], alone[:, 0], name=f"B={B} pos={pos} without lengths")


@pytest.mark.parametrize("lbr", [True, False], ids=["lbr", "no-lbr"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_streaming_is_bitwise_forward(fmt, lbr):
    rng = np.random.default_rng(9)
    for config in (dict(hidden_size=50), dict(hidden_size=48, num_layers=2)):
        q = fastlstm.GRU(10, seed=1, linear_before_reset=lbr, **config).quantize(fmt)
        x, h0, _ = random_call(q, 8, 3, rng, hx=True)
        out, hn = q(x, h0)
        s = q.stream(batch_size=3, hx=h0)
        steps = np.stack([s.step(x[t]) for t in range(8)])
        assert_bitwise_equal(steps, out)
        assert_bitwise_equal(s.state, hn)
    # a stream fed its own output in place (x_t and out one array: the input kernel, then the cell kernel)
    q = fastlstm.GRU(24, 24, 2, seed=4, linear_before_reset=lbr).quantize(fmt)
    y = rng.standard_normal((3, 24)).astype(np.float32)
    s, inputs = q.stream(3), []
    for _ in range(5):
        inputs.append(y.copy())
        assert s.step(y, out=y) is y
    out, hn = q(np.stack(inputs))
    assert_bitwise_equal(y, out[-1])
    assert_bitwise_equal(s.state, hn)


@pytest.mark.parametrize("fmt", FORMATS)
def test_save_load_and_pickle_are_bitwise(fmt, tmp_path):
    q = fastlstm.GRU(14, 30, 2, bidirectional=True, clip=3.0, linear_before_reset=False, seed=4).quantize(fmt)
    x = np.random.default_rng(0).standard_normal((6, 3, 14)).astype(np.float32)
    path = tmp_path / "gru.npz"
    q.save(path)
    for back in (fastlstm.load(path), pickle.loads(pickle.dumps(q))):
        assert type(back) is fastlstm.GRU and back.weights == fmt and not back.linear_before_reset
        assert back.clip == 3.0
        for name, (qv, scale) in q._qparams.items():
            assert_bitwise_equal(back._qparams[name][0], qv, name=name)
            if scale is not None:
                assert_bitwise_equal(back._qparams[name][1], scale, name=name)
        assert_gru_bitwise(back(x), q(x))
    with np.load(path) as archive:
        assert archive["weight_hh_l0"].dtype == (np.uint16 if fmt == "bf16" else np.int8)
        assert ("weight_hh_l0.scale" in archive.files) == (fmt == "int8")


@pytest.mark.parametrize("lbr", [True, False], ids=["lbr", "no-lbr"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_nan_stays_in_its_row_and_empty_calls(fmt, lbr):
    q = fastlstm.GRU(7, 20, seed=2, linear_before_reset=lbr).quantize(fmt)
    x = np.random.default_rng(1).standard_normal((5, 3, 7)).astype(np.float32)
    clean, _ = q(x)
    x[2, 1, 3] = np.nan
    out, hn = q(x)
    assert np.isnan(out[2:, 1]).all() and np.isnan(hn[:, 1]).all()
    assert_bitwise_equal(out[:, [0, 2]], clean[:, [0, 2]])
    out, hn = q(np.zeros((0, 2, 7), np.float32))
    assert out.shape == (0, 2, 20) and not hn.any()
    out, _ = q(np.zeros((4, 0, 7), np.float32))
    assert out.shape == (4, 0, 20)


def test_kernel_tables():
    """Every build has bf16 and int8 GRU kernels; AMX tiles, vdpbf16ps / vpdpbusd only where the CPU has them."""
    names = _kernels.feature_names()
    bit = {name: 1 << b for b, name in names.items()}
    for fmt in FORMATS:
        assert _kernels.kernel_table("gru", fmt, 0)[0] == f"gru/{fmt}/baseline"
    if "avx512f" in names.values():
        avx512 = sum(bit[n] for n in ("avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"))
        assert _kernels.kernel_table("gru", "bf16", avx512)[0] == "gru/bf16/avx2"
        assert _kernels.kernel_table("gru", "int8", avx512)[0] == "gru/int8/avx2"
        assert _kernels.kernel_table("gru", "bf16", avx512 | bit["avx512_bf16"])[0] == "gru/bf16/avx512bf16"
        assert _kernels.kernel_table("gru", "int8", avx512 | bit["avx512_vnni"])[0] == "gru/int8/avx512vnni"
        amx = avx512 | bit["avx512_vnni"] | bit["avx512_bf16"] | bit["amx_int8"] | bit["amx_bf16"]
        assert _kernels.kernel_table("gru", "int8", amx)[0] == "gru/int8/amx"
        assert _kernels.kernel_table("gru", "bf16", amx)[0] == "gru/bf16/amx"


@pytest.mark.parametrize("lbr", [True, False], ids=["lbr", "no-lbr"])
def test_instruction_sets_agree(lbr):
    """int8: bitwise the same on every instruction set (exact integer dot products, the same float operations);
    bf16: within float32 rounding of each other (the tiles, vdpbf16ps and its emulation sum the same products)."""
    results = {}
    try:
        for isa_name in _isas():
            _cpu.set_cap(isa_name)
            rng = np.random.default_rng(0)           # the same inputs for every instruction set
            for I, H in ((23, 70), (64, 128)):     # (the second's lengths fit AMX tiles)
                x = rng.standard_normal((9, 5, I)).astype(np.float32)
                h0 = (rng.standard_normal((4, 5, H)) * 0.5).astype(np.float32)
                for fmt in FORMATS:
                    q = fastlstm.GRU(I, H, 2, bidirectional=True, seed=1, linear_before_reset=lbr).quantize(fmt)
                    assert q._packed.kernel_name.startswith(f"gru/{fmt}/{isa_name}")
                    out, hn = q(x, h0, lengths=[9, 2, 5, 9, 1])
                    results[isa_name, fmt, H] = np.concatenate([out.ravel(), hn.ravel()])
    finally:
        _cpu.set_cap(os.environ.get("FASTLSTM_ISA", ""))
    for (isa_name, fmt, H), value in results.items():
        if fmt == "int8":
            assert_bitwise_equal(value, results["baseline", fmt, H], name=f"{isa_name} int8 H={H}")
        else:
            assert_close(value, results["baseline", fmt, H], atol=1e-4, name=f"{isa_name} bf16 H={H}")
