"""Reduced-precision weights (lstm.quantize("bf16" | "int8")): every LSTM feature against the quantized oracle
(fastlstm.reference with the same rounding), the bitwise promises (threads, batching, lengths, streaming,
save/load, pickle, instruction sets), errors, and onnxruntime's DynamicQuantizeLSTM."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import (assert_bitwise_equal, assert_close, assert_forward_bitwise, assert_forward_close, call,
                      make_inputs, model_pair, require, run_python)

import fastlstm
from fastlstm import _cpu, _kernels, _quant

FORMATS = ["bf16", "int8"]
# |fast - oracle|: both compute with the same rounded weights and round x and h the same way; they differ by
# float32 accumulation (about 1e-6) and by an activation that lands on the other side of a rounding boundary
# (the kernels' h differs from the oracle's float64 h in its last bits): one term of one dot product moves
# by a bf16 ulp (2^-8 relative) or an int8 step (1/127 of the row's scale).
ATOL = {"bf16": 1e-3, "int8": 2e-4}

CONFIGS = [
    dict(input_size=40, hidden_size=50),
    dict(input_size=33, hidden_size=100, num_layers=2, bidirectional=True),
    dict(input_size=17, hidden_size=40, proj_size=13, num_layers=2),
    dict(input_size=21, hidden_size=36, proj_size=5, bidirectional=True),
    dict(input_size=8, hidden_size=20, peepholes=True, clip=2.0),
    dict(input_size=9, hidden_size=35, input_forget=True, bias=False, batch_first=True),
    dict(input_size=5, hidden_size=3),
]


def quantized_pair(fmt, seed=0, **config):
    fast, ref = model_pair(seed=seed, **config)
    return fast.quantize(fmt), ref.quantize(fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_matches_quantized_oracle(fmt, config):
    rng = np.random.default_rng(1)
    fast, ref = quantized_pair(fmt, **config)
    assert fast._packed.kernel_name.startswith(f"lstm/{fmt}/")
    for T, B, opts in ((9, 7, dict(lengths=True, hx=True)), (1, 1, {}), (6, 2, dict(lengths=True))):
        args = make_inputs(fast, T, B, rng=rng, **opts)
        assert_forward_close(call(fast, args), call(ref, args), np.float32, atol=ATOL[fmt], what=f"T={T} B={B}")


@pytest.mark.parametrize("fmt", FORMATS)
def test_reverse_only_and_unbatched(fmt):
    rng = np.random.default_rng(2)
    fast, ref = quantized_pair(fmt, input_size=6, hidden_size=18, direction="reverse")
    args = make_inputs(fast, 5, 1, rng=rng, unbatched=True)
    assert_forward_close(call(fast, args), call(ref, args), np.float32, atol=ATOL[fmt])


@pytest.mark.parametrize("fmt", FORMATS)
def test_oracle_is_the_quantized_computation(fmt):
    """The oracle itself: the quantized model's error against the float32 model is that of its format, and
    much larger than its distance from the fast kernels (so the tolerance above can tell them apart)."""
    rng = np.random.default_rng(3)
    fast, ref = model_pair(64, 96, seed=4)
    args = make_inputs(fast, 20, 3, rng=rng)
    exact, _ = call(ref, args)
    quant, _ = call(ref.quantize(fmt), args)
    kernel, _ = call(fast.quantize(fmt), args)
    err = np.abs(quant - exact).max()
    assert 1e-4 < err < 3e-2, err
    assert np.abs(kernel - quant).max() < err / 20


def test_rounding_rules():
    v = np.array([[1.0, -0.5, 0.25, 3e-3], [0, 0, 0, 0], [np.nan, 1, 2, 3]], np.float32)
    q = _quant.round_rows(v, "int8")
    assert_close(q[0], np.rint(v[0] * 127) / 127, atol=1e-7)
    assert np.array_equal(q[1], np.zeros(4)) and np.isnan(q[2]).all()
    small = v[:1] / 8  # its own scale: max |v| / 127
    assert_close(_quant.round_rows(small, "int8"), np.rint(small * 1016) / 1016, atol=1e-8)
    bits = _quant.bf16_bits(np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, np.nan, -np.inf], np.float32))
    # ties go to the even mantissa: 1 + 2^-8 -> 1, 1 + 3*2^-8 -> 1 + 2^-6
    assert list(bits[:3]) == [0x3F80, 0x3F80, 0x3F82] and np.isnan(_quant.bf16_values(bits[3])) and bits[4] == 0xFF80
    w = np.array([[0.5, -1.0, 0.25], [0, 0, 0]], np.float32)
    q8, s = _quant.quantize_matrix(w, "int8")
    assert q8.dtype == np.int8 and list(q8[0]) == [64, -127, 32] and list(q8[1]) == [0, 0, 0]
    assert s[0] == np.float32(1.0) / np.float32(127) and s[1] == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_weights_state_dict_and_load(fmt):
    m = fastlstm.LSTM(12, 24, proj_size=7, seed=5)
    q = m.quantize(fmt)
    assert m.weights == "float32" and q.weights == fmt and q.dtype == np.float32
    assert fastlstm.LSTM(3, 4, dtype=np.float64).weights == "float64"
    assert m._format is None and m._packed.kernel_name.startswith("lstm/f32/")  # m unchanged
    sd = q.state_dict()
    assert set(sd) == set(m.state_dict()) and all(v.dtype == np.float32 for v in sd.values())
    for name, value in sd.items():
        if name.startswith("bias"):
            assert_bitwise_equal(value, m.state_dict()[name])
        else:  # dequantized: within the format's rounding of the original
            rel = 2**-8 if fmt == "bf16" else 0.5 / 127
            bound = np.abs(m.state_dict()[name]) * rel if fmt == "bf16" else \
                np.abs(m.state_dict()[name]).max(axis=1, keepdims=True) * rel
            assert (np.abs(value - m.state_dict()[name]) <= bound * 1.0001).all(), name
            assert not np.array_equal(value, m.state_dict()[name])
    # load_state_dict quantizes what it is given: the same model as quantize()
    other = fastlstm.LSTM(12, 24, proj_size=7, seed=9).quantize(fmt)
    other.load_state_dict(m.state_dict())
    x = np.random.default_rng(0).standard_normal((5, 2, 12)).astype(np.float32)
    assert_forward_bitwise(other(x), q(x))
    # assigning a weight quantizes it
    other.weight_hh_l0 = np.zeros((96, 7))
    assert not np.array_equal(other(x)[0], q(x)[0]) and not other.weight_hh_l0.any()


def test_errors():
    m = fastlstm.LSTM(4, 8)
    for bad in ("fp16", "INT8", None, 8):
        with pytest.raises(ValueError, match="weights must be one of"):
            m.quantize(bad)
    with pytest.raises(ValueError, match="only float32 models"):
        fastlstm.LSTM(4, 8, dtype=np.float64).quantize("int8")
    with pytest.raises(ValueError, match="needs a float32 model"):
        fastlstm.LSTM(4, 8, dtype=np.float64, weights="bf16")
    with pytest.raises(ValueError, match="int8 weights: input_size"):
        fastlstm.LSTM(200000, 4, weights="int8")
    q = m.quantize("int8")
    with pytest.raises(ValueError, match="Missing key"):
        q.load_state_dict({})
    arrays = q._stored_arrays()
    arrays["weight_ih_l0"] = arrays["weight_ih_l0"].astype(np.int16)
    with pytest.raises(ValueError, match="weight_ih_l0: expected int8"):
        q._load_stored_arrays(arrays)
    del arrays["weight_ih_l0.scale"]
    with pytest.raises(ValueError, match="missing 'weight_ih_l0.scale'"):
        q._load_stored_arrays(arrays)


@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_again_and_repr(fmt):
    q = fastlstm.LSTM(6, 10, seed=1).quantize(fmt)
    assert repr(q) == f"LSTM(6, 10, weights={fmt!r})"
    again = q.quantize(fmt)  # the dequantized values are representable: the same stored weights
    for name, (qv, scale) in q._qparams.items():
        assert np.array_equal(again._qparams[name][0], qv)
    assert q.quantize("int8").weights == "int8"


@pytest.mark.parametrize("fmt", FORMATS)
def test_bitwise_across_thread_counts(fmt):
    rng = np.random.default_rng(6)
    q = fastlstm.LSTM(48, 160, 2, bidirectional=True, seed=2).quantize(fmt)
    p = fastlstm.LSTM(48, 160, proj_size=40, seed=3).quantize(fmt)
    try:
        for model in (q, p):
            args = make_inputs(model, 12, 5, rng=rng, lengths=True)
            results = []
            for n in (1, 2, 3):
                fastlstm.set_num_threads(n)
                results.append(call(model, args))
            for r in results[1:]:
                assert_forward_bitwise(r, results[0])
    finally:
        fastlstm.set_num_threads(_default_threads())


def _default_threads():
    from fastlstm import _threads

    return _threads.physical_cores()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("config", [dict(hidden_size=70), dict(hidden_size=24), dict(hidden_size=64, proj_size=20),
                                    dict(hidden_size=40, num_layers=2, bidirectional=True), dict(hidden_size=320)],
                         ids=str)
def test_sequence_bits_do_not_depend_on_its_batch(fmt, config):
    """A sequence alone, in batches of every size (other tile shapes, row splits) and padded inside a longer
    batch with lengths: the same bits. (H=320: on AMX tiles the recurrent dot products of one tile of rows take
    one pass over a block's weights, of more rows several: quant_impl.h, amx_sums.)"""
    rng = np.random.default_rng(7)
    q = fastlstm.LSTM(19, seed=8, **config).quantize(fmt)
    T = 11
    seq = rng.standard_normal((T, 1, 19)).astype(np.float32)
    alone, (h, c) = q(seq)
    for B in (2, 3, 4, 5, 8, 13, 260):  # 260: more than one group of rows (quant_impl.h)
        for pos in (0, B - 1):
            batch = rng.standard_normal((T + 3, B, 19)).astype(np.float32) * 3
            batch[:T, pos] = seq[:, 0]
            lengths = rng.integers(1, T + 4, size=B)
            lengths[pos] = T
            out, (hn, cn) = q(batch, lengths=lengths)
            assert_bitwise_equal(out[:T, pos], alone[:, 0], name=f"B={B} pos={pos}")
            assert_bitwise_equal(hn[:, pos], h[:, 0])
            assert_bitwise_equal(cn[:, pos], c[:, 0])
            full, _ = q(batch[:T])
            assert_bitwise_equal(full[:, pos], alone[:, 0], name=f"B={B} pos={pos} without lengths")


@pytest.mark.parametrize("fmt", FORMATS)
def test_streaming_is_bitwise_forward(fmt):
    rng = np.random.default_rng(9)
    for config in (dict(hidden_size=50), dict(hidden_size=48, proj_size=12, num_layers=2)):
        q = fastlstm.LSTM(10, seed=1, **config).quantize(fmt)
        args = make_inputs(q, 8, 3, rng=rng, hx=True)
        out, (hn, cn) = call(q, args)
        s = q.stream(batch_size=3, hx=args["hx"])
        steps = np.stack([s.step(args["x"][t]) for t in range(8)])
        assert_bitwise_equal(steps, out)
        assert_bitwise_equal(s.state[0], hn)
        assert_bitwise_equal(s.state[1], cn)


@pytest.mark.parametrize("fmt", FORMATS)
def test_save_load_and_pickle_are_bitwise(fmt, tmp_path):
    q = fastlstm.LSTM(14, 30, 2, proj_size=9, bidirectional=True, peepholes=True, seed=4).quantize(fmt)
    x = np.random.default_rng(0).standard_normal((6, 3, 14)).astype(np.float32)
    path = tmp_path / "model.npz"
    q.save(path)
    for back in (fastlstm.load(path), pickle.loads(pickle.dumps(q))):
        assert back.weights == fmt and back.peepholes and back.proj_size == 9
        for name, (qv, scale) in q._qparams.items():
            assert_bitwise_equal(back._qparams[name][0], qv, name=name)
            if scale is not None:
                assert_bitwise_equal(back._qparams[name][1], scale, name=name)
        assert_forward_bitwise(back(x), q(x))
    with np.load(path) as archive:
        assert archive["weight_hh_l0"].dtype == (np.uint16 if fmt == "bf16" else np.int8)
        assert ("weight_hh_l0.scale" in archive.files) == (fmt == "int8")


@pytest.mark.parametrize("fmt", FORMATS)
def test_nan_stays_in_its_row_and_empty_calls(fmt):
    q = fastlstm.LSTM(7, 20, seed=2).quantize(fmt)
    x = np.random.default_rng(1).standard_normal((5, 3, 7)).astype(np.float32)
    clean, _ = q(x)
    x[2, 1, 3] = np.nan
    out, (hn, cn) = q(x)
    assert np.isnan(out[2:, 1]).all() and np.isnan(cn[:, 1]).all()
    assert_bitwise_equal(out[:, [0, 2]], clean[:, [0, 2]])
    out, (hn, cn) = q(np.zeros((0, 2, 7), np.float32))
    assert out.shape == (0, 2, 20) and not hn.any()
    out, _ = q(np.zeros((4, 0, 7), np.float32))
    assert out.shape == (4, 0, 20)


def test_kernel_tables():
    """Every build has bf16 and int8 kernels; vdpbf16ps / vpdpbusd only where the CPU has them."""
    names = _kernels.feature_names()
    bit = {name: 1 << b for b, name in names.items()}
    for fmt in FORMATS:
        assert _kernels.kernel_table("lstm", fmt, 0)[0] == f"lstm/{fmt}/baseline"
        assert _cpu.kernels_for("lstm", fmt, 0)[1] == 16
    avx512 = sum(bit[n] for n in ("avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"))
    if "avx512f" in names.values():
        assert _kernels.kernel_table("lstm", "bf16", avx512)[0] == "lstm/bf16/avx2"
        assert _kernels.kernel_table("lstm", "bf16", avx512 | bit["avx512_bf16"])[0] == "lstm/bf16/avx512bf16"
        assert _kernels.kernel_table("lstm", "int8", avx512 | bit["avx512_vnni"])[0] == "lstm/int8/avx512vnni"
        amx = avx512 | bit["avx512_vnni"] | bit["amx_int8"]
        assert _kernels.kernel_table("lstm", "int8", amx)[0] == "lstm/int8/amx"


_ISA_SCRIPT = """
import numpy as np, fastlstm
rng = np.random.default_rng(0)
out = {}
for i, cfg in enumerate([dict(hidden_size=70, num_layers=2, bidirectional=True), dict(hidden_size=40, proj_size=11),
                         dict(hidden_size=33, peepholes=True, clip=1.5)]):
    x = rng.standard_normal((9, 5, 23)).astype(np.float32)
    for fmt in ("bf16", "int8"):
        q = fastlstm.LSTM(23, seed=i, **cfg).quantize(fmt)
        y, (h, c) = q(x, lengths=[9, 2, 5, 9, 1])
        out[f"{i}-{fmt}"] = np.concatenate([y.ravel(), h.ravel(), c.ravel()])
        out[f"{i}-{fmt}-kernel"] = np.array(q._packed.kernel_name)
np.savez(PATH, **out)
"""


def test_instruction_sets_agree(tmp_path):
    """Each FASTLSTM_ISA cap, in its own process: int8 bitwise equal everywhere (integer dot products, the same
    float operations; AMX tiles included where the CPU has them), bf16 within rounding of the native results."""
    results = {}
    for isa in ("amx", "avx512", "avx2", "baseline"):
        path = tmp_path / f"{isa}.npz"
        proc = run_python(_ISA_SCRIPT.replace("PATH", repr(str(path))), cwd=tmp_path, env={"FASTLSTM_ISA": isa})
        assert proc.returncode == 0, proc.stderr
        with np.load(path) as f:
            results[isa] = {k: f[k] for k in f.files}
    assert str(results["baseline"]["0-int8-kernel"]) == "lstm/int8/baseline"
    available = _cpu.available_isas()
    has_amx = "amx_int8" in _cpu.feature_names(_kernels.cpu_features())
    assert str(results["amx"]["0-int8-kernel"]).startswith("lstm/int8/amx") == has_amx
    for isa in ("avx2", "avx512", "amx"):
        if isa not in available and not (isa == "amx" and has_amx):
            continue
        if isa != "amx":
            assert str(results[isa]["0-bf16-kernel"]).startswith(f"lstm/bf16/{isa}")
        for key, value in results[isa].items():
            if key.endswith("-kernel"):
                continue
            if key.endswith("int8"):
                assert_bitwise_equal(value, results["baseline"][key], name=f"{isa} {key}")
            else:
                assert_close(value, results["baseline"][key], atol=1e-4, name=f"{isa} {key}")


def test_very_long_rows_do_not_overflow_a_stack(tmp_path):
    """Quantized rows too long for a thread's stack come from the heap: input_size 262144 in bf16 (its rows once
    took 10 MB of the calling thread's 8 MiB stack) and 131072 in a bidirectional step whose second direction runs
    on an OpenMP worker given a 2 MiB stack (OMP_STACKSIZE), bf16 and int8. In a process of its own: an overflow
    kills it."""
    code = """
        import numpy as np, fastlstm
        fastlstm.set_num_threads(2)
        for I, bidirectional, T, fmt in ((262144, False, 2, "bf16"), (131072, True, 1, "bf16"),
                                         (131072, True, 1, "int8")):
            base = fastlstm.LSTM(I, 16, bidirectional=bidirectional, seed=0)
            ref = fastlstm.reference.LSTM(I, 16, bidirectional=bidirectional)
            ref.load_state_dict(base.state_dict())
            x = np.random.default_rng(1).standard_normal((T, 1, I)).astype(np.float32)
            error = float(np.abs(base.quantize(fmt)(x)[0] - ref.quantize(fmt)(x)[0]).max())
            assert error < 1e-4, (I, fmt, error)
        print("ok")
    """
    done = run_python(code, cwd=tmp_path, env={"OMP_STACKSIZE": "2M"}, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stderr[-2000:])


# ---- onnxruntime's DynamicQuantizeLSTM ------------------------------------------------------------


def _quantized_onnx(tmp_path, torch_lstm, per_channel):
    torch = require("torch")
    require("onnx")
    quantization = require("onnxruntime.quantization")
    I = torch_lstm.input_size
    x = torch.randn(7, 2, I)
    path = tmp_path / "lstm.onnx"
    torch.onnx.export(torch_lstm, (x,), str(path), input_names=["x"], output_names=["y", "h", "c"],
                      opset_version=17, dynamo=False)
    qpath = tmp_path / "lstm_q.onnx"
    quantization.quantize_dynamic(str(path), str(qpath), per_channel=per_channel,
                                  weight_type=quantization.QuantType.QInt8, op_types_to_quantize=["LSTM"])
    return qpath


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_from_onnx_dynamic_quantize_lstm(tmp_path, per_channel, bidirectional):
    torch = require("torch")
    ort = require("onnxruntime")
    onnx = require("onnx")
    torch.manual_seed(0)
    module = torch.nn.LSTM(12, 32, bidirectional=bidirectional).eval()
    qpath = _quantized_onnx(tmp_path, module, per_channel)
    model = onnx.load(str(qpath))
    assert any(n.op_type == "DynamicQuantizeLSTM" for n in model.graph.node)
    q = fastlstm.LSTM.from_onnx(model)
    assert q.weights == "int8" and q.direction == ("bidirectional" if bidirectional else "forward")
    x = np.random.default_rng(0).standard_normal((7, 2, 12)).astype(np.float32)
    sess = ort.InferenceSession(str(qpath), providers=["CPUExecutionProvider"])
    y_ort = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    y, _ = q(x)
    with torch.no_grad():
        y_torch = module(torch.from_numpy(x))[0].numpy()
    # both are int8 models of the same weights: each within int8 rounding of float32, and of each other
    assert np.abs(y - y_torch).max() < 2e-2
    assert_close(y, y_ort.reshape(y.shape), atol=2e-2, name="fastlstm vs onnxruntime")
    # the weights are onnxruntime's int8 values and scales: within half a step of torch's float32 weights
    for name, value in q.state_dict().items():
        want = module.state_dict()[name].numpy()
        if name.startswith("weight"):
            step = q._qparams[name][1][:, None]
            assert (np.abs(value - want) <= step * 0.5001 + 1e-7).all(), name
        else:
            assert_bitwise_equal(value, want, name=name)
    ref = fastlstm.reference.LSTM.from_onnx(model)
    assert_forward_close(q(x), ref(x), np.float32, atol=ATOL["int8"])


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("bidirectional", [False, True])
def test_from_onnx_stacked_dynamic_quantize_lstm(tmp_path, bidirectional):
    """A stacked export, quantized: its DynamicQuantizeLSTM nodes feed one another through the export's glue and
    load as one int8 model of as many layers (a node chosen by index loads alone)."""
    torch = require("torch")
    ort = require("onnxruntime")
    onnx = require("onnx")
    torch.manual_seed(1)
    module = torch.nn.LSTM(12, 32, num_layers=3, bidirectional=bidirectional).eval()
    qpath = _quantized_onnx(tmp_path, module, per_channel=True)
    model = onnx.load(str(qpath))
    assert sum(n.op_type == "DynamicQuantizeLSTM" for n in model.graph.node) == 3
    q = fastlstm.LSTM.from_onnx(model)
    assert (q.weights, q.num_layers, q.input_size, q.bidirectional) == ("int8", 3, 12, bidirectional)
    for name, value in q.state_dict().items():
        want = module.state_dict()[name].numpy()
        if name.startswith("weight"):
            assert (np.abs(value - want) <= q._qparams[name][1][:, None] * 0.5001 + 1e-7).all(), name
        else:
            assert_bitwise_equal(value, want, name=name)
    x = np.random.default_rng(0).standard_normal((7, 2, 12)).astype(np.float32)
    sess = ort.InferenceSession(str(qpath), providers=["CPUExecutionProvider"])
    assert_close(q(x)[0], sess.run(None, {sess.get_inputs()[0].name: x})[0].reshape(7, 2, -1), atol=2e-2,
                 name="fastlstm vs onnxruntime")
    assert_forward_close(q(x), fastlstm.reference.LSTM.from_onnx(model)(x), np.float32, atol=ATOL["int8"])
    second = fastlstm.LSTM.from_onnx(model, node=1)
    assert (second.num_layers, second.input_size) == (1, 64 if bidirectional else 32)
    names = [n.name for n in model.graph.node if n.op_type == "DynamicQuantizeLSTM"]
    with pytest.raises(ValueError, match="DynamicQuantizeLSTM nodes: " + ", ".join(f"'{name}'" for name in names)):
        fastlstm.LSTM.from_onnx(model, node="no such node")   # the error lists the nodes a name can choose
    assert_bitwise_equal(second.state_dict()["weight_hh_l0"], q.state_dict()["weight_hh_l1"], name="node 1")


@pytest.mark.filterwarnings("ignore")
def test_from_onnx_dynamic_quantize_lstm_inside_a_subgraph(tmp_path):
    """An LSTM inside an If branch (as in silero-vad), quantized with EnableSubgraph: its DynamicQuantizeLSTM node
    reads the weights of its own graph and loads with node=None or by name, as the main graph's would."""
    torch = require("torch")
    ort = require("onnxruntime")
    onnx = require("onnx")
    quantization = require("onnxruntime.quantization")
    from onnx import TensorProto, helper

    torch.manual_seed(2)
    module = torch.nn.LSTM(6, 16).eval()
    qpath = _quantized_onnx(tmp_path, module, per_channel=False)   # the same LSTM in the main graph
    flat = onnx.load(str(tmp_path / "lstm.onnx"))
    branch = helper.make_graph(list(flat.graph.node), "then", [], [flat.graph.output[0]],
                               initializer=list(flat.graph.initializer))
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["x_out"])], "else", [],
                              [helper.make_tensor_value_info("x_out", TensorProto.FLOAT, None)])
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    branched = helper.make_node("If", ["cond"], ["out"], then_branch=branch, else_branch=other, name="if0")
    graph = helper.make_graph([branched], "main", [flat.graph.input[0], cond],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    wrapped = helper.make_model(graph, opset_imports=list(flat.opset_import))
    wrapped.ir_version = flat.ir_version
    onnx.save(wrapped, str(tmp_path / "if.onnx"))
    quantization.quantize_dynamic(str(tmp_path / "if.onnx"), str(tmp_path / "if_q.onnx"),
                                  weight_type=quantization.QuantType.QInt8, extra_options={"EnableSubgraph": True})
    model = onnx.load(str(tmp_path / "if_q.onnx"))
    then = next(a.g for a in model.graph.node[0].attribute if a.name == "then_branch")
    inner = [n for n in then.node if n.op_type == "DynamicQuantizeLSTM"]
    assert len(inner) == 1 and not any(n.op_type == "DynamicQuantizeLSTM" for n in model.graph.node)
    main = fastlstm.LSTM.from_onnx(str(qpath))
    for q in (fastlstm.LSTM.from_onnx(model), fastlstm.LSTM.from_onnx(model, node=inner[0].name),
              fastlstm.LSTM.from_onnx(model, node=0)):
        assert q.weights == "int8"
        for name, value in main.state_dict().items():
            assert_bitwise_equal(q.state_dict()[name], value, name=name)
    x = np.random.default_rng(3).standard_normal((7, 2, 6)).astype(np.float32)
    sess = ort.InferenceSession(str(tmp_path / "if_q.onnx"), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x, "cond": np.array(True)})[0].reshape(7, 2, -1)
    assert_close(q(x)[0], want, atol=2e-2, name="fastlstm vs onnxruntime")


# ---- the benchmark programs (benchmarks/quant_accuracy.py, quant_speed.py) ----------------------------


@pytest.mark.filterwarnings("ignore")
def test_quant_benchmark_programs_run():
    """Both programs on a small shape, so that they cannot rot: every runner present, errors of the right size."""
    import os
    import sys

    require("onnxruntime")
    require("openvino")
    bench_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks")
    if not os.path.exists(os.path.join(bench_dir, "quant_accuracy.py")):
        pytest.skip("the benchmarks directory is not beside the tests (installed tests only)")
    sys.path.insert(0, bench_dir)
    try:
        import quant_accuracy
        import quant_speed
    finally:
        sys.path.remove(bench_dir)
    found, precision = quant_accuracy.errors(20, 2, 16, 32, 1, False, seed=0)
    assert set(found) == {"fastlstm bf16", "fastlstm int8", "openvino default", "onnxruntime int8"}
    assert all(1e-5 < err < 5e-2 for err in found.values()), found
    assert precision in ("bf16", "f32")
    from fastlstm import _bench, _bench_sections

    for shape in (_bench.Shape(1, 2, 16, 32, streaming=True), _bench.Shape(5, 2, 16, 32)):
        runners = _bench_sections.quant_case(shape, threads=1, quick=True).calls  # quant_speed's runners
        times = quant_speed.measure(runners, rounds=1, block_seconds=0.001)
        assert set(times) == {"fastlstm f32", "fastlstm bf16", "fastlstm int8", "openvino default",
                              "onnxruntime int8"}
        assert all(len(t) == 1 and t[0] > 0 for t in times.values())
