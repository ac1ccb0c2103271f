"""Model import and export: LSTM.from_onnx (against onnxruntime, the ONNX reference evaluator and ONNX's own
backend test cases), LSTM.from_keras (against Keras 3 on the torch backend), LSTM.from_torch through
torch.onnx.export, save/load (round trips and untrusted files), pickling (also through a spawn Pool), the
constructor extras peepholes / clip / input_forget, and that fastlstm never imports a framework by itself.

Conventions the comparisons rely on:
- ONNX's Y is (T, D, B, H) with layout=0 and (B, T, D, H) with layout=1; ours is (T, B, D*H) or (B, T, D*H).
  ONNX's Y_h / Y_c / initial_h / initial_c are (D, B, H), or (B, D, H) with layout=1; ours are always
  (D, B, H) (batch_first never applies to hx).
- onnxruntime does not implement layout=1 (nor float64 LSTMs): a layout=1 model is compared with
  onnxruntime running the same weights in a layout=0 model on transposed data, and with the ONNX reference
  evaluator (onnx.reference), which does implement layout=1 (but ignores clip, input_forget, sequence_lens).
"""
from __future__ import annotations

import json
import os
import pickle
import warnings

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest

import fastlstm
from conftest import assert_close, missing_peer, require, run_python

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

F32_TOL = 2e-5
F64_TOL = 1e-10


def _rng(*key) -> np.random.Generator:
    """A generator seeded from a test's parameters (reproducible, different per case)."""
    return np.random.default_rng([sum(map(ord, str(k))) + 1000 * i for i, k in enumerate(key)])


def _assert_same_forward(got, want, *, what: str = ""):
    """Bitwise equality of two ``output, (h_n, c_n)`` results, dtypes included."""
    for label, a, e in (("output", got[0], want[0]), ("h_n", got[1][0], want[1][0]), ("c_n", got[1][1], want[1][1])):
        assert a.dtype == e.dtype, f"{what} {label}: dtype {a.dtype} vs {e.dtype}"
        assert a.shape == e.shape, f"{what} {label}: shape {a.shape} vs {e.shape}"
        assert np.array_equal(a, e, equal_nan=True), f"{what} {label}: not bitwise equal"


def _assert_same_state(a: dict, b: dict, *, what: str = ""):
    assert list(a) == list(b), f"{what}: keys {list(a)} vs {list(b)}"
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, f"{what} {k}: {a[k].dtype}{a[k].shape} vs {b[k].dtype}{b[k].shape}"
        assert np.array_equal(a[k], b[k]), f"{what} {k}: values differ"


CONFIG_ATTRS = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "bidirectional", "proj_size",
                "dtype", "peepholes", "clip", "input_forget", "direction")


def _assert_same_config(a, b):
    for attr in CONFIG_ATTRS:
        assert getattr(a, attr) == getattr(b, attr), f"{attr}: {getattr(a, attr)!r} vs {getattr(b, attr)!r}"


# ==== ONNX helpers ================================================================================


def _onnx_weights(rng, I, H, D, dtype=np.float32, scale=0.5):
    """Random W (D, 4H, I), R (D, 4H, H), B (D, 8H), P (D, 3H) in ONNX's layout."""
    W = (rng.standard_normal((D, 4 * H, I)) * scale).astype(dtype)
    R = (rng.standard_normal((D, 4 * H, H)) * scale).astype(dtype)
    B = (rng.standard_normal((D, 8 * H)) * scale).astype(dtype)
    P = (rng.standard_normal((D, 3 * H)) * scale).astype(dtype)
    return W, R, B, P


def _onnx_model(W, R, B=None, P=None, *, direction="forward", layout=0, clip=None, input_forget=False,
                seqlen=False, init=False, hidden_size=True, activations=None, name="lstm"):
    """A one-node ONNX model: W, R, B, P initializers; X, sequence_lens, initial_h, initial_c graph inputs."""
    from onnx import TensorProto, helper, numpy_helper

    elem = TensorProto.DOUBLE if W.dtype == np.float64 else TensorProto.FLOAT
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R")]
    if B is not None:
        inits.append(numpy_helper.from_array(B, "B"))
    if P is not None:
        inits.append(numpy_helper.from_array(P, "P"))
    ins = ["X", "W", "R", "B" if B is not None else "", "sequence_lens" if seqlen else "",
           "initial_h" if init else "", "initial_c" if init else "", "P" if P is not None else ""]
    while ins[-1] == "":
        ins.pop()
    attrs = dict(direction=direction, layout=layout)
    if hidden_size:
        attrs["hidden_size"] = R.shape[2]
    if clip is not None:
        attrs["clip"] = float(clip)
    if input_forget:
        attrs["input_forget"] = 1
    if activations is not None:
        attrs["activations"] = activations
    node = helper.make_node("LSTM", ins, ["Y", "Y_h", "Y_c"], name=name, **attrs)
    graph_inputs = [helper.make_tensor_value_info("X", elem, None)]
    if seqlen:
        graph_inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, None))
    if init:
        graph_inputs += [helper.make_tensor_value_info(n, elem, None) for n in ("initial_h", "initial_c")]
    graph = helper.make_graph(
        [node], "one_lstm", graph_inputs, [helper.make_tensor_value_info(n, elem, None) for n in ("Y", "Y_h", "Y_c")],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model


def _ort_run(model, feeds):
    ort = require("onnxruntime")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _onnx_y_to_ours(Y, batch_first, layout=0):
    """ONNX Y -> our output layout: (T, B, D*H), or (B, T, D*H) when batch_first."""
    if layout == 1:  # (B, T, D, H)
        Y = Y.transpose(1, 2, 0, 3)  # -> (T, D, B, H)
    T, D, B, H = Y.shape
    out = Y.transpose(0, 2, 1, 3).reshape(T, B, D * H)
    return np.ascontiguousarray(out.transpose(1, 0, 2)) if batch_first else out


def _random_runtime(rng, T, B, I, H, D, dtype=np.float32, x_scale=1.0):
    x = (rng.standard_normal((T, B, I)) * x_scale).astype(dtype)  # time-major
    lens = rng.integers(1, T + 1, size=B).astype(np.int32)
    lens[0] = T
    lens[-1] = 1
    h0 = (rng.standard_normal((D, B, H)) * 0.5).astype(dtype)
    c0 = (rng.standard_normal((D, B, H)) * 0.5).astype(dtype)
    return x, lens, h0, c0


def _check_against_ort(rng, *, direction, layout, seqlen, init, bias, peepholes=False, clip=None,
                       input_forget=False, I=5, H=6, T=7, B=4, w_scale=0.5, x_scale=1.0):
    """Build one model, load it into fastlstm, compare Y, Y_h, Y_c with onnxruntime (layout 0)."""
    D = 2 if direction == "bidirectional" else 1
    W, R, Bias, P = _onnx_weights(rng, I, H, D, scale=w_scale)
    Bias = Bias if bias else None
    P = P if peepholes else None
    kw = dict(direction=direction, clip=clip, input_forget=input_forget, seqlen=seqlen, init=init)
    model = _onnx_model(W, R, Bias, P, layout=layout, **kw)
    ort_model = _onnx_model(W, R, Bias, P, layout=0, **kw)
    x, lens, h0, c0 = _random_runtime(rng, T, B, I, H, D, x_scale=x_scale)
    feeds = {"X": x}
    if seqlen:
        feeds["sequence_lens"] = lens
    if init:
        feeds["initial_h"], feeds["initial_c"] = h0, c0
    Y, Y_h, Y_c = _ort_run(ort_model, feeds)

    lstm = fastlstm.LSTM.from_onnx(model)
    assert lstm.direction == direction
    assert lstm.batch_first == (layout == 1)
    assert lstm.bias == bias and lstm.peepholes == peepholes and lstm.input_forget == input_forget
    assert lstm.clip == clip  # (clips here are exact in float32, the type of ONNX's attribute)
    assert lstm.dtype == np.float32 and (lstm.input_size, lstm.hidden_size) == (I, H)
    ours_x = np.ascontiguousarray(x.transpose(1, 0, 2)) if layout == 1 else x
    out, (hn, cn) = lstm(ours_x, (h0, c0) if init else None, lengths=lens if seqlen else None)
    assert out.dtype == np.float32
    assert_close(out, _onnx_y_to_ours(Y, layout == 1), atol=F32_TOL, name="Y")
    assert_close(hn, Y_h, atol=F32_TOL, name="Y_h")
    assert_close(cn, Y_c, atol=F32_TOL, name="Y_c")
    return Y, model


# ==== 1. from_onnx against onnxruntime =============================================================


@pytest.mark.parametrize("bias", [True, False], ids=["B", "noB"])
@pytest.mark.parametrize("init", [False, True], ids=["noinit", "init"])
@pytest.mark.parametrize("seqlen", [False, True], ids=["nolens", "lens"])
@pytest.mark.parametrize("layout", [0, 1], ids=["layout0", "layout1"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_from_onnx_matches_onnxruntime(direction, layout, seqlen, init, bias):
    require("onnx")
    _check_against_ort(_rng(direction, layout, seqlen, init, bias), direction=direction, layout=layout,
                       seqlen=seqlen, init=init, bias=bias)


EXTRAS = {
    "peepholes": dict(peepholes=True),
    "clip": dict(clip=0.75, w_scale=1.5, x_scale=2.0),  # pre-activations well beyond the clip
    "input_forget": dict(input_forget=True),
    "all": dict(peepholes=True, clip=0.875, input_forget=True, w_scale=1.5, x_scale=2.0),
}


@pytest.mark.parametrize("layout", [0, 1], ids=["layout0", "layout1"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("extra", list(EXTRAS))
def test_from_onnx_extras_match_onnxruntime(extra, direction, layout):
    require("onnx")
    kw = EXTRAS[extra]
    Y, _ = _check_against_ort(_rng(extra, direction, layout), direction=direction, layout=layout, seqlen=True,
                              init=True, bias=True, **kw)
    # the extra must matter for these data, or the comparison above would prove nothing about it
    plain = {k: v for k, v in kw.items() if k in ("w_scale", "x_scale")}
    Y_plain, _ = _check_against_ort(_rng(extra, direction, layout), direction=direction, layout=layout,
                                    seqlen=True, init=True, bias=True, **plain)
    assert np.abs(Y - Y_plain).max() > 1e-2, f"{extra} does not change onnxruntime's result here"


@pytest.mark.parametrize("peepholes", [False, True], ids=["nopeep", "peep"])
@pytest.mark.parametrize("layout", [0, 1], ids=["layout0", "layout1"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_from_onnx_matches_onnx_reference_evaluator_float64_and_layout1(direction, layout, peepholes):
    """onnx.reference runs layout=1 and float64 natively (onnxruntime does neither)."""
    require("onnx")
    from onnx.reference import ReferenceEvaluator

    rng = _rng("refeval", direction, layout, peepholes)
    I, H, T, B = 4, 5, 6, 3
    D = 2 if direction == "bidirectional" else 1
    for dtype, atol in ((np.float64, F64_TOL), (np.float32, F32_TOL)):
        W, R, Bias, P = _onnx_weights(rng, I, H, D, dtype)
        model = _onnx_model(W, R, Bias, P if peepholes else None, direction=direction, layout=layout, init=True)
        x, _, h0, c0 = _random_runtime(rng, T, B, I, H, D, dtype)
        if layout == 1:  # ONNX's own layout=1 shapes
            feeds = {"X": x.transpose(1, 0, 2).copy(), "initial_h": h0.transpose(1, 0, 2).copy(),
                     "initial_c": c0.transpose(1, 0, 2).copy()}
        else:
            feeds = {"X": x, "initial_h": h0, "initial_c": c0}
        Y, Y_h, Y_c = ReferenceEvaluator(model).run(None, feeds)
        if layout == 1:
            Y_h, Y_c = Y_h.transpose(1, 0, 2), Y_c.transpose(1, 0, 2)
        lstm = fastlstm.LSTM.from_onnx(model)
        assert lstm.dtype == dtype and lstm.direction == direction and lstm.batch_first == (layout == 1)
        out, (hn, cn) = lstm(feeds["X"], (h0, c0))
        assert out.dtype == dtype and hn.dtype == dtype and cn.dtype == dtype
        assert_close(out, _onnx_y_to_ours(Y, layout == 1, layout), atol=atol, name=f"{np.dtype(dtype)} Y")
        assert_close(hn, Y_h, atol=atol, name=f"{np.dtype(dtype)} Y_h")
        assert_close(cn, Y_c, atol=atol, name=f"{np.dtype(dtype)} Y_c")


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_from_onnx_float64_with_every_extra_matches_reference(direction):
    require("onnx")
    rng = _rng("f64", direction)
    I, H, T, B = 4, 5, 6, 3
    D = 2 if direction == "bidirectional" else 1
    W, R, Bias, P = _onnx_weights(rng, I, H, D, np.float64, scale=1.5)
    model = _onnx_model(W, R, Bias, P, direction=direction, layout=1, clip=0.75, input_forget=True,
                        seqlen=True, init=True)
    fast = fastlstm.LSTM.from_onnx(model)
    ref = fastlstm.reference.LSTM.from_onnx(model)
    assert fast.dtype == np.float64 and ref.dtype == np.float64
    assert (fast.direction, fast.peepholes, fast.clip, fast.input_forget) == (direction, True, 0.75, True)
    # float64 weights are taken without a float32 round trip: ONNX i, o, f, c -> ours i, f, g, o
    gates = [W[0][k * H:(k + 1) * H] for k in (0, 2, 3, 1)]
    assert np.array_equal(fast.weight_ih_l0, np.concatenate(gates))
    x, lens, h0, c0 = _random_runtime(rng, T, B, I, H, D, np.float64, x_scale=2.0)
    xb = np.ascontiguousarray(x.transpose(1, 0, 2))
    got = fast(xb, (h0, c0), lengths=lens)
    want = ref(xb, (h0, c0), lengths=lens)
    for a, e, name in ((got[0], want[0], "Y"), (got[1][0], want[1][0], "Y_h"), (got[1][1], want[1][1], "Y_c")):
        assert a.dtype == np.float64
        assert_close(a, e, atol=F64_TOL, name=name)


def test_from_onnx_hidden_size_inferred_and_checked():
    require("onnx")
    rng = _rng("hidden")
    W, R, Bias, _ = _onnx_weights(rng, 3, 4, 1)
    with_attr = fastlstm.LSTM.from_onnx(_onnx_model(W, R, Bias))
    inferred = fastlstm.LSTM.from_onnx(_onnx_model(W, R, Bias, hidden_size=False))
    assert inferred.hidden_size == 4
    _assert_same_state(inferred.state_dict(), with_attr.state_dict())
    wrong = _onnx_model(W, R, Bias)
    for a in wrong.graph.node[0].attribute:
        if a.name == "hidden_size":
            a.i = 5
    with pytest.raises(ValueError, match="hidden_size"):
        fastlstm.LSTM.from_onnx(wrong)


# ==== 2. ONNX's own backend test cases ============================================================

try:
    import onnx.backend.test.case.node.lstm as _onnx_lstm_cases

    ONNX_CASES = sorted(n for n in vars(_onnx_lstm_cases.LSTM) if n.startswith("export"))
except ImportError:  # onnx missing: one case that skips (fails under CI) through require
    _onnx_lstm_cases = None
    ONNX_CASES = ["onnx-not-installed"]


def _capture_onnx_case(monkeypatch, export_name):
    captured = []

    def expect(node, inputs, outputs, name, **kwargs):
        captured.append((node, list(inputs), list(outputs), name))

    monkeypatch.setattr(_onnx_lstm_cases, "expect", expect)
    getattr(_onnx_lstm_cases.LSTM, export_name)()
    assert captured, f"{export_name} called expect() no times"
    return captured


def _one_node_model(node, inputs, expected_outputs):
    """Wrap a captured node: W, R, B, P become initializers, the runtime inputs graph inputs."""
    import onnx
    from onnx import helper, numpy_helper

    present = [(pos, name) for pos, name in enumerate(node.input) if name]
    assert len(present) == len(inputs)
    values = {pos: value for (pos, _), value in zip(present, inputs)}
    inits, graph_inputs, feeds = [], [], {}
    for (pos, name), value in zip(present, inputs):
        if pos in (1, 2, 3, 7):
            inits.append(numpy_helper.from_array(value, name))
        else:
            graph_inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype),
                                                              value.shape))
            feeds[name] = value
    present_outputs = [name for name in node.output if name]
    assert len(present_outputs) == len(expected_outputs)
    outputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)
               for name, value in zip(present_outputs, expected_outputs)]
    graph = helper.make_graph([node], "backend_case", graph_inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, values


@pytest.mark.parametrize("export_name", ONNX_CASES)
def test_onnx_backend_cases(export_name, monkeypatch):
    require("onnx")
    from onnx import helper

    for node, inputs, outputs, case_name in _capture_onnx_case(monkeypatch, export_name):
        model, values = _one_node_model(node, inputs, outputs)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        layout = int(attrs.get("layout", 0))
        direction = attrs.get("direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        lstm = fastlstm.LSTM.from_onnx(model)
        assert lstm.direction == direction and lstm.batch_first == (layout == 1), case_name
        hx = None
        if 5 in values or 6 in values:
            h0, c0 = values[5], values[6]
            if layout == 1:
                h0, c0 = h0.transpose(1, 0, 2), c0.transpose(1, 0, 2)
            hx = (h0, c0)
        out, (hn, cn) = lstm(values[0], hx, lengths=values.get(4))
        ours = {0: out, 1: hn, 2: cn}
        present_outputs = [pos for pos, name in enumerate(node.output) if name]
        assert len(present_outputs) == len(outputs)
        for pos, expected in zip(present_outputs, outputs):
            if pos == 0:
                expected = _onnx_y_to_ours(expected, layout == 1, layout)
            elif layout == 1:
                expected = expected.transpose(1, 0, 2)
            assert_close(ours[pos], expected, atol=F32_TOL, name=f"{case_name} {node.output[pos]}")


def test_onnx_backend_cases_were_found():
    """The list above is read from onnx; make sure it is the known set (a new case would show up here)."""
    require("onnx")
    assert {"export_defaults", "export_initial_bias", "export_peepholes", "export_batchwise", "export_reverse",
            "export_bidirectional"} <= set(ONNX_CASES)


# ==== 3. from_onnx: node selection, where weights come from, unsupported nodes ====================


def _peer_model(num_layers, bidirectional=False, seed=0):
    from fastlstm import _peers

    model = fastlstm.LSTM(3, 4, num_layers, bidirectional=bidirectional, seed=seed)
    return model, _peers.onnx_model(model)


def _layer_state(model, layer):
    """The state dict of one layer of ``model`` renamed to layer 0."""
    return {k.replace(f"_l{layer}", "_l0"): v for k, v in model.state_dict().items() if f"_l{layer}" in k}


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_from_onnx_single_lstm_among_other_nodes(bidirectional):
    require("onnx")
    model, proto = _peer_model(1, bidirectional)
    assert len(proto.graph.node) > 1
    loaded = fastlstm.LSTM.from_onnx(proto)  # node=None: the only LSTM node
    _assert_same_state(loaded.state_dict(), model.state_dict(), what="round trip through ONNX gate order")
    x = _rng("among", bidirectional).standard_normal((5, 2, 3)).astype(np.float32)
    _assert_same_forward(loaded(x), model(x))
    ort_y = _ort_run(proto, {"X": x})[0]
    assert_close(loaded(x)[0], ort_y, atol=F32_TOL, name="full graph Y")


def test_from_onnx_node_selection_with_two_lstm_nodes():
    onnx = require("onnx")
    model, proto = _peer_model(2, bidirectional=True)
    stacked = fastlstm.LSTM.from_onnx(proto)  # node=None: the two chained nodes are one stacked model
    assert stacked.num_layers == 2
    _assert_same_state(stacked.state_dict(), model.state_dict(), what="node=None on a chain")
    lstm_nodes = [n for n in proto.graph.node if n.op_type == "LSTM"]
    for layer in (0, 1):
        for selector in (f"lstm{layer}", layer, layer - 2, np.int64(layer), lstm_nodes[layer]):
            loaded = fastlstm.LSTM.from_onnx(proto, node=selector)
            assert loaded.input_size == (3 if layer == 0 else 8), selector
            assert loaded.direction == "bidirectional" and loaded.num_layers == 1
            _assert_same_state(loaded.state_dict(), _layer_state(model, layer), what=f"node={selector!r}")
    # two nodes that do not feed one another: node=None is ambiguous, and the message lists them
    parallel = type(proto)()
    parallel.CopyFrom(proto)
    second = next(n for n in parallel.graph.node if n.name == "lstm1")
    second.input[0] = "X"
    second.input[1] = "W0"
    with pytest.raises(ValueError, match="2 LSTM nodes") as info:
        fastlstm.LSTM.from_onnx(parallel)
    assert "lstm0" in str(info.value) and "lstm1" in str(info.value)
    with pytest.raises(ValueError, match="lstm0"):  # the listing helps
        fastlstm.LSTM.from_onnx(proto, node="nope")
    with pytest.raises(ValueError, match="out of range"):
        fastlstm.LSTM.from_onnx(proto, node=2)
    reshape = next(n for n in proto.graph.node if n.op_type == "Reshape")
    with pytest.raises(ValueError, match="Reshape"):
        fastlstm.LSTM.from_onnx(proto, node=reshape)
    with pytest.raises(TypeError):
        fastlstm.LSTM.from_onnx(proto, node=True)
    with pytest.raises(TypeError):
        fastlstm.LSTM.from_onnx(proto, node=1.0)
    no_lstm = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["X"], ["Y"])], "g",
        [onnx.helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, None)],
        [onnx.helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)]))
    with pytest.raises(ValueError, match="0 LSTM nodes"):
        fastlstm.LSTM.from_onnx(no_lstm)
    with pytest.raises(TypeError):
        fastlstm.LSTM.from_onnx({"not": "a model"})


def _rewire(model, make_source):
    """Replace the initializer W of a one-node model by whatever ``make_source(W_array)`` builds.

    make_source returns (extra nodes placed before the LSTM, extra initializers, extra graph inputs).
    """
    from onnx import numpy_helper

    proto = type(model)()
    proto.CopyFrom(model)
    graph = proto.graph
    w_init = next(i for i in graph.initializer if i.name == "W")
    W = numpy_helper.to_array(w_init)
    graph.initializer.remove(w_init)
    nodes, inits, inputs = make_source(W)
    lstm_node = type(graph.node[0])()
    lstm_node.CopyFrom(graph.node[0])
    del graph.node[:]
    graph.node.extend(list(nodes) + [lstm_node])
    graph.initializer.extend(inits)
    graph.input.extend(inputs)
    return proto


def test_from_onnx_weight_sources():
    onnx = require("onnx")
    from onnx import helper, numpy_helper

    rng = _rng("sources")
    W, R, Bias, P = _onnx_weights(rng, 3, 4, 1)
    base = _onnx_model(W, R, Bias, P)
    want = fastlstm.LSTM.from_onnx(base)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    sources = {
        "graph input and initializer": lambda W: (
            [], [numpy_helper.from_array(W, "W")], [helper.make_tensor_value_info("W", onnx.TensorProto.FLOAT, W.shape)]),
        "Constant": lambda W: ([helper.make_node("Constant", [], ["W"], value=numpy_helper.from_array(W, "w"))], [], []),
        "Identity of initializer": lambda W: (
            [helper.make_node("Identity", ["W_init"], ["W"])], [numpy_helper.from_array(W, "W_init")], []),
        "Identity of Identity of Constant": lambda W: (
            [helper.make_node("Constant", [], ["W_c"], value=numpy_helper.from_array(W, "w")),
             helper.make_node("Identity", ["W_c"], ["W_i"]), helper.make_node("Identity", ["W_i"], ["W"])], [], []),
    }
    for label, make in sources.items():
        proto = _rewire(base, make)
        got = fastlstm.LSTM.from_onnx(proto)
        _assert_same_state(got.state_dict(), want.state_dict(), what=label)
        _assert_same_forward(got(x), want(x), what=label)
        y = _ort_run(proto, {"X": x})[0]  # the rewired graph still means the same thing
        assert_close(got(x)[0], _onnx_y_to_ours(y, False), atol=F32_TOL, name=label)


def test_from_onnx_computed_weights_rejected():
    require("onnx")
    from onnx import helper, numpy_helper

    rng = _rng("computed")
    W, R, Bias, P = _onnx_weights(rng, 3, 4, 1)
    base = _onnx_model(W, R, Bias, P)
    computed = _rewire(base, lambda W: (
        [helper.make_node("Add", ["W_a", "W_b"], ["W"])],
        [numpy_helper.from_array(W / 2, "W_a"), numpy_helper.from_array(W / 2, "W_b")], []))
    with pytest.raises(ValueError, match="computed") as info:
        fastlstm.LSTM.from_onnx(computed)
    assert "W" in str(info.value)
    # a weight that is only a graph input (fed at run time) is not loadable either
    runtime = _rewire(base, lambda W: ([], [], [helper.make_tensor_value_info("W", 1, W.shape)]))
    with pytest.raises(ValueError, match="'W'"):
        fastlstm.LSTM.from_onnx(runtime)


@pytest.mark.parametrize("activations,bad", [
    (["Sigmoid", "Tanh", "Relu"], "Relu"),
    (["HardSigmoid", "Tanh", "Tanh"], "HardSigmoid"),
    (["Sigmoid", "Elu", "Tanh"], "Elu"),
])
def test_from_onnx_non_default_activations_rejected(activations, bad):
    require("onnx")
    W, R, Bias, _ = _onnx_weights(_rng("act"), 3, 4, 1)
    with pytest.raises(ValueError, match=bad):
        fastlstm.LSTM.from_onnx(_onnx_model(W, R, Bias, activations=activations))


def test_from_onnx_explicit_default_activations_accepted():
    require("onnx")
    rng = _rng("defact")
    for direction, acts in (("forward", ["Sigmoid", "Tanh", "Tanh"]), ("bidirectional", ["Sigmoid", "Tanh", "Tanh"] * 2)):
        D = 2 if direction == "bidirectional" else 1
        W, R, Bias, _ = _onnx_weights(rng, 3, 4, D)
        got = fastlstm.LSTM.from_onnx(_onnx_model(W, R, Bias, direction=direction, activations=acts))
        want = fastlstm.LSTM.from_onnx(_onnx_model(W, R, Bias, direction=direction))
        _assert_same_state(got.state_dict(), want.state_dict())


def test_from_onnx_path(tmp_path):
    onnx = require("onnx")
    rng = _rng("path")
    W, R, Bias, P = _onnx_weights(rng, 3, 4, 2)
    model = _onnx_model(W, R, Bias, P, direction="bidirectional", clip=3.0)
    path = tmp_path / "lstm.onnx"
    onnx.save(model, str(path))
    want = fastlstm.LSTM.from_onnx(model)
    for p in (str(path), path):
        got = fastlstm.LSTM.from_onnx(p)
        _assert_same_config(got, want)
        _assert_same_state(got.state_dict(), want.state_dict())


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_from_onnx_torch_export(bidirectional, tmp_path):
    torch = require("torch")
    require("onnx")
    torch.manual_seed(0)
    module = torch.nn.LSTM(3, 5, bidirectional=bidirectional).eval()
    x = torch.randn(6, 2, 3)
    path = tmp_path / "torch_lstm.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # the TorchScript exporter works offline; the dynamo exporter needs onnxscript
            torch.onnx.export(module, (x,), str(path), dynamo=False)
        except ImportError as exc:
            missing_peer(f"torch.onnx.export needs a missing package: {exc}")
    loaded = fastlstm.LSTM.from_onnx(str(path))
    assert loaded.direction == ("bidirectional" if bidirectional else "forward")
    with torch.no_grad():
        y, (h, c) = module(x)
    out, (hn, cn) = loaded(x.numpy())
    assert_close(out, y.numpy(), atol=F32_TOL, name="output")
    assert_close(hn, h.numpy(), atol=F32_TOL, name="h_n")
    assert_close(cn, c.numpy(), atol=F32_TOL, name="c_n")
    # and the very same parameters as from_torch
    _assert_same_state(loaded.state_dict(), fastlstm.LSTM.from_torch(module).state_dict())


# ==== 4. from_keras ===============================================================================


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = require("keras")
    return keras


def _keras_run(keras, layer, x, initial_state=None):
    res = layer(x, initial_state=initial_state) if initial_state is not None else layer(x)
    return [keras.ops.convert_to_numpy(r) for r in res]


def _keras_layer(keras, H, I, *, random_weights=True, seed=0, **kwargs):
    layer = keras.layers.LSTM(H, return_sequences=True, return_state=True, **kwargs)
    layer.build((None, None, I))
    if random_weights:
        rng = np.random.default_rng(seed)
        layer.set_weights([(rng.standard_normal(w.shape) * 0.4).astype(w.dtype) for w in layer.get_weights()])
    return layer


def _check_keras(keras, layer, lstm, x, initial_state=None):
    y, h, c = _keras_run(keras, layer, x, initial_state)
    hx = None if initial_state is None else (initial_state[0][None], initial_state[1][None])
    out, (hn, cn) = lstm(x, hx)
    assert out.dtype == np.dtype(layer.dtype if isinstance(layer.dtype, str) else np.float32)
    assert_close(out, y, atol=F32_TOL, name="output")
    assert_close(hn, h[None], atol=F32_TOL, name="h_n")
    assert_close(cn, c[None], atol=F32_TOL, name="c_n")


@pytest.mark.parametrize("initial_state", [False, True], ids=["nostate", "state"])
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "nobias"])
def test_from_keras_layer_and_weights(use_bias, initial_state):
    keras = _keras()
    rng = _rng("keras", use_bias, initial_state)
    I, H, B, T = 4, 6, 3, 7
    layer = _keras_layer(keras, H, I, use_bias=use_bias, seed=int(use_bias) + 2 * int(initial_state))
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    state = None
    if initial_state:
        state = [(rng.standard_normal((B, H)) * 0.5).astype(np.float32) for _ in range(2)]
    from_layer = fastlstm.LSTM.from_keras(layer)
    from_list = fastlstm.LSTM.from_keras(layer.get_weights())
    for lstm in (from_layer, from_list):
        assert lstm.batch_first is True and lstm.bias == use_bias and lstm.dtype == np.float32
        assert (lstm.input_size, lstm.hidden_size, lstm.direction) == (I, H, "forward")
        _check_keras(keras, layer, lstm, x, state)
    _assert_same_state(from_layer.state_dict(), from_list.state_dict())


@pytest.mark.parametrize("unit_forget_bias", [True, False])
def test_from_keras_unit_forget_bias(unit_forget_bias):
    keras = _keras()
    I, H = 3, 5
    layer = keras.layers.LSTM(H, unit_forget_bias=unit_forget_bias, return_sequences=True, return_state=True)
    layer.build((None, None, I))  # keras' own initialisation: bias is zero except (maybe) the forget gate's ones
    lstm = fastlstm.LSTM.from_keras(layer)
    bias = lstm.bias_ih_l0 + lstm.bias_hh_l0
    expected = np.zeros(4 * H, np.float32)
    if unit_forget_bias:
        expected[H:2 * H] = 1.0
    assert np.array_equal(bias, expected)
    x = _rng("ufb", unit_forget_bias).standard_normal((2, 6, I)).astype(np.float32)
    _check_keras(keras, layer, lstm, x)


def test_from_keras_float64():
    keras = _keras()
    layer = _keras_layer(keras, 5, 3, dtype="float64")
    lstm = fastlstm.LSTM.from_keras(layer)
    assert lstm.dtype == np.float64
    assert fastlstm.LSTM.from_keras(layer.get_weights()).dtype == np.float64
    x = _rng("k64").standard_normal((2, 6, 3))
    y, h, c = _keras_run(keras, layer, x)
    out, (hn, cn) = lstm(x)
    assert out.dtype == np.float64
    assert_close(out, y, atol=F64_TOL, name="output")
    assert_close(hn[0], h, atol=F64_TOL, name="h_n")
    assert_close(cn[0], c, atol=F64_TOL, name="c_n")


@pytest.mark.parametrize("kwargs,match", [
    (dict(activation="relu"), "relu"),
    (dict(recurrent_activation="hard_sigmoid"), "hard_sigmoid"),
    (dict(activation="relu", recurrent_activation="hard_sigmoid"), "relu.*hard_sigmoid"),
    (dict(go_backwards=True), "go_backwards"),
])
def test_from_keras_unsupported_layers(kwargs, match):
    keras = _keras()
    layer = _keras_layer(keras, 4, 3, random_weights=False, **kwargs)
    with pytest.raises(ValueError, match=match):
        fastlstm.LSTM.from_keras(layer)


def test_from_keras_bad_arguments():
    keras = _keras()
    with pytest.raises(TypeError):
        fastlstm.LSTM.from_keras(keras.layers.Dense(3))
    with pytest.raises(ValueError):
        fastlstm.LSTM.from_keras([np.zeros((3, 16), np.float32)])
    with pytest.raises(ValueError):  # recurrent kernel not (H, 4H)
        fastlstm.LSTM.from_keras([np.zeros((3, 16), np.float32), np.zeros((4, 12), np.float32)])
    with pytest.raises(ValueError):  # bias of the wrong length
        fastlstm.LSTM.from_keras([np.zeros((3, 16), np.float32), np.zeros((4, 16), np.float32),
                                  np.zeros(12, np.float32)])
    with pytest.raises(ValueError, match="no weights"):  # unbuilt layer
        fastlstm.LSTM.from_keras(keras.layers.LSTM(4))


# ==== 5. save / load ==============================================================================

SAVE_CONFIGS = {
    "plain": dict(),
    "layers": dict(num_layers=3),
    "bidirectional": dict(num_layers=2, bidirectional=True),
    "reverse": dict(direction="reverse"),
    "reverse_layers": dict(num_layers=2, direction="reverse"),
    "proj": dict(num_layers=2, proj_size=3),
    "nobias": dict(bias=False),
    "peepholes": dict(peepholes=True, bidirectional=True),
    "clip": dict(clip=0.25),
    "input_forget": dict(input_forget=True),
    "float64": dict(dtype=np.float64),
    "batch_first": dict(batch_first=True),
    "everything": dict(num_layers=2, bidirectional=True, proj_size=2, bias=False, peepholes=True, clip=1.5,
                       input_forget=True, dtype=np.float64, batch_first=True),
}


def _config_model(name, seed=0):
    model = fastlstm.LSTM(4, 5, seed=seed, **SAVE_CONFIGS[name])
    # weights that no seed gives, so a load that re-initialises cannot pass
    rng = np.random.default_rng(seed + 99)
    model.load_state_dict({k: rng.standard_normal(v.shape) for k, v in model.state_dict().items()})
    return model


def _config_inputs(model, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 6, 4) if model.batch_first else (6, 3, 4)).astype(model.dtype)
    D = model.num_directions * model.num_layers
    hx = (rng.standard_normal((D, 3, model.proj_size or 5)).astype(model.dtype),
          rng.standard_normal((D, 3, 5)).astype(model.dtype))
    return x, hx, np.array([6, 2, 4])


SAVE_CASES = [(config, "model.fastlstm") for config in SAVE_CONFIGS] + [
    (config, filename) for config in ("plain", "everything") for filename in ("model", "model.npz", "weird name.bin")
]


@pytest.mark.parametrize("config,filename", SAVE_CASES)
def test_save_load_round_trip_bitwise(config, filename, tmp_path):
    model = _config_model(config)
    path = tmp_path / filename
    model.save(str(path) if config == "plain" else path)
    assert sorted(os.listdir(tmp_path)) == [filename], "the file must be written at exactly the given path"
    loaded = fastlstm.load(path)
    assert type(loaded) is fastlstm.LSTM
    _assert_same_config(loaded, model)
    _assert_same_state(loaded.state_dict(), model.state_dict())
    x, hx, lengths = _config_inputs(model)
    _assert_same_forward(loaded(x, hx, lengths=lengths), model(x, hx, lengths=lengths))
    _assert_same_forward(loaded(x), model(x))


def test_save_overwrites_and_load_reads_each_time(tmp_path):
    path = tmp_path / "m.bin"
    a, b = _config_model("plain", seed=1), _config_model("everything", seed=2)
    a.save(path)
    b.save(path)
    _assert_same_config(fastlstm.load(path), b)
    _assert_same_state(fastlstm.load(str(path)).state_dict(), b.state_dict())


def test_load_does_not_import_frameworks(tmp_path):
    model = _config_model("everything")
    path = tmp_path / "m.fl"
    model.save(path)
    x, hx, lengths = _config_inputs(model)
    np.savez(tmp_path / "io.npz", x=x, out=model(x, hx, lengths=lengths)[0], h=hx[0], c=hx[1], lengths=lengths)
    proc = run_python(
        f"""
        import sys
        import numpy as np
        import fastlstm
        m = fastlstm.load({str(path)!r})
        io = np.load({str(tmp_path / 'io.npz')!r})
        out = m(io["x"], (io["h"], io["c"]), lengths=io["lengths"])[0]
        assert np.array_equal(out, io["out"]), "loaded model differs in a fresh process"
        bad = sorted(k for k in sys.modules if k.split(".")[0] in ("torch", "keras", "onnx", "onnxruntime", "tensorflow", "jax"))
        print("imported:", bad)
        sys.exit(1 if bad else 0)
        """,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---- untrusted files ----


class _Payload:
    """Unpickling this runs open(marker, "w"): a file appearing proves code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _valid_arrays(model):
    from fastlstm import _interop

    header = {"format": "fastlstm", "version": _interop.FORMAT_VERSION, "config": model._config()}
    arrays = {"__header__": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
    arrays.update(model.state_dict())
    return arrays, header


def _write_npz(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)  # allow_pickle is on for writing: object arrays are pickled


@pytest.mark.parametrize("where", ["weight", "header", "extra"])
def test_load_rejects_npz_with_pickle_payload(where, tmp_path):
    model = _config_model("plain")
    marker = tmp_path / "PWNED"
    arrays, _ = _valid_arrays(model)
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(marker)
    key = {"weight": "weight_ih_l0", "header": "__header__", "extra": "zzz_extra"}[where]
    arrays[key] = evil
    path = tmp_path / "evil.npz"
    _write_npz(path, arrays)
    assert not marker.exists()
    with pytest.raises(ValueError):
        fastlstm.load(path)
    assert not marker.exists(), "loading the file executed code from it"


def test_load_rejects_pickle_files(tmp_path):
    marker = tmp_path / "PWNED"
    plain = tmp_path / "model.pkl"
    plain.write_bytes(pickle.dumps(_config_model("plain")))
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(_Payload(marker)))
    for path in (plain, evil):
        with pytest.raises(ValueError, match="pickle"):
            fastlstm.load(path)
    assert not marker.exists(), "loading the file executed code from it"
    # pickle as a stray .npy inside a zip archive is rejected too (covered above); a lone .npy is no model
    np.save(tmp_path / "array.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not a fastlstm file"):
        fastlstm.load(tmp_path / "array.npy")


def test_load_rejects_garbage(tmp_path):
    rng = np.random.default_rng(7)
    path = tmp_path / "random.bin"
    for k in range(5):
        data = rng.integers(0, 256, size=1000 + 37 * k, dtype=np.uint8).tobytes()
        if data[:2] in (b"PK", b"\x93N"):
            data = b"xx" + data
        path.write_bytes(data)
        with pytest.raises(ValueError):
            fastlstm.load(path)
    # corrupt archives and empty files: a clear ValueError (no crash, no hang)
    good = tmp_path / "good.fl"
    _config_model("everything").save(good)
    data = good.read_bytes()
    for label, content in (("truncated", data[: len(data) // 2]), ("empty", b""),
                           ("zip magic then garbage", b"PK\x03\x04" + bytes(range(256)) * 4)):
        path.write_bytes(content)
        with pytest.raises(ValueError, match="not a"):
            fastlstm.load(path)
    with pytest.raises((FileNotFoundError, OSError)):
        fastlstm.load(tmp_path / "does-not-exist")


def test_load_rejects_bad_headers(tmp_path):
    model = _config_model("peepholes")
    arrays, header = _valid_arrays(model)
    path = tmp_path / "bad.npz"

    def with_header(h):
        a = dict(arrays)
        a["__header__"] = np.frombuffer(json.dumps(h).encode(), dtype=np.uint8)
        return a

    _write_npz(path, arrays)  # the hand-written valid file loads
    _assert_same_state(fastlstm.load(path).state_dict(), model.state_dict())
    for version in (0, 2, 999, "1", None):
        _write_npz(path, with_header(dict(header, version=version)))
        with pytest.raises(ValueError, match="version"):
            fastlstm.load(path)
    for fmt in ("pytorch", None):
        _write_npz(path, with_header(dict(header, format=fmt)))
        with pytest.raises(ValueError, match="not a fastlstm file"):
            fastlstm.load(path)
    missing = dict(arrays)
    del missing["__header__"]
    _write_npz(path, missing)
    with pytest.raises(ValueError):
        fastlstm.load(path)
    bad_json = dict(arrays, __header__=np.frombuffer(b"{not json", dtype=np.uint8))
    _write_npz(path, bad_json)
    with pytest.raises(ValueError):
        fastlstm.load(path)
    missing_weight = dict(arrays)
    del missing_weight["weight_ph_l0_reverse"]
    _write_npz(path, missing_weight)
    with pytest.raises(ValueError, match="weight_ph_l0_reverse"):
        fastlstm.load(path)
    wrong_shape = dict(arrays, weight_hh_l0=np.zeros((3, 3), np.float32))
    _write_npz(path, wrong_shape)
    with pytest.raises(ValueError, match="weight_hh_l0"):
        fastlstm.load(path)
    bad_config = with_header(dict(header, config=dict(header["config"], clip=-1.0)))
    _write_npz(path, bad_config)
    with pytest.raises(ValueError, match="clip"):
        fastlstm.load(path)
    # a damaged config is the file's fault, not a programming error: ValueError, not KeyError/TypeError
    for config in ({k: v for k, v in header.items() if k != "config"}, dict(header, config=[1, 2]),
                   dict(header, config=dict(header["config"], unknown_argument=1)),
                   dict(header, config=dict(header["config"], hidden_size="12"))):
        _write_npz(path, with_header(config))
        with pytest.raises(ValueError, match="config"):
            fastlstm.load(path)
    # weights of strings or complex numbers (no pickle): the file's fault too
    shape = arrays["weight_ih_l0"].shape
    for bad in (np.full(shape, "x"), np.zeros(shape, np.complex64)):
        _write_npz(path, dict(arrays, weight_ih_l0=bad))
        with pytest.raises(ValueError, match="weight_ih_l0"):
            fastlstm.load(path)


def test_load_rejects_a_damaged_compression_method(tmp_path):
    """A saved file whose zip directory names an unknown compression method (one damaged byte): ValueError, as for
    every damaged file (zipfile raises NotImplementedError)."""
    path = tmp_path / "model.npz"
    fastlstm.LSTM(3, 5, seed=0).save(path)
    data = bytearray(path.read_bytes())
    entry = data.find(b"PK\x01\x02")     # the first central directory entry
    data[entry + 10] ^= 0xFF               # its compression method
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="compression"):
        fastlstm.load(path)


# ---- pickle ----


@pytest.mark.parametrize("config", list(SAVE_CONFIGS))
def test_pickle_round_trip(config):
    model = _config_model(config, seed=3)
    x, hx, lengths = _config_inputs(model, seed=3)
    want = model(x, hx, lengths=lengths)
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        clone = pickle.loads(pickle.dumps(model, protocol=protocol))
        assert type(clone) is fastlstm.LSTM
        _assert_same_config(clone, model)
        _assert_same_state(clone.state_dict(), model.state_dict())
        _assert_same_forward(clone(x, hx, lengths=lengths), want, what=f"protocol {protocol}")


def test_pickle_reference_model():
    model = fastlstm.reference.LSTM(3, 4, peepholes=True, clip=1.0, direction="reverse", seed=1)
    clone = pickle.loads(pickle.dumps(model))
    assert type(clone) is fastlstm.reference.LSTM
    _assert_same_config(clone, model)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    _assert_same_forward(clone(x), model(x))


def test_pickle_through_spawn_pool(tmp_path):
    proc = run_python(
        """
        import multiprocessing as mp
        import numpy as np
        import fastlstm

        if __name__ == "__main__":
            model = fastlstm.LSTM(4, 6, 2, bidirectional=True, peepholes=True, clip=2.0, input_forget=True, seed=5)
            rng = np.random.default_rng(0)
            xs = [rng.standard_normal((5 + k, 3, 4)).astype(np.float32) for k in range(4)]
            with mp.get_context("spawn").Pool(2) as pool:
                results = pool.map(model, xs)          # the model itself is the pickled callable
            for x, (out, (hn, cn)) in zip(xs, results):
                want, (hw, cw) = model(x)
                assert out.dtype == np.float32 and np.array_equal(out, want), "output differs in a worker"
                assert np.array_equal(hn, hw) and np.array_equal(cn, cw), "state differs in a worker"
            print("ok", len(results))
        """,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok 4" in proc.stdout


# ==== 6. no framework imports ======================================================================


def test_fastlstm_never_imports_frameworks(tmp_path):
    proc = run_python(
        f"""
        import pickle, sys
        import numpy as np
        import fastlstm
        m = fastlstm.LSTM(3, 4, 2, bidirectional=True, peepholes=True, clip=2.0, seed=0)
        x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
        out = m(x)[0]
        fastlstm.reference.LSTM(3, 4, seed=0)(x)
        fastlstm.LSTM(3, 4, seed=0).stream(2).step(x[0])
        m.save({str(tmp_path / 'm.fl')!r})
        assert np.array_equal(fastlstm.load({str(tmp_path / 'm.fl')!r})(x)[0], out)
        assert np.array_equal(pickle.loads(pickle.dumps(m))(x)[0], out)
        bad = sorted(k for k in sys.modules if k.split(".")[0] in ("torch", "keras", "onnx", "onnxruntime", "tensorflow", "jax"))
        print("imported:", bad)
        sys.exit(1 if bad else 0)
        """,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ==== 7. the constructor extras ====================================================================


@pytest.mark.parametrize("clip", [0, 0.0, -1, -0.5, float("inf"), float("-inf"), float("nan"), np.float32("nan")])
def test_clip_rejects_non_positive_or_non_finite(clip):
    for cls in (fastlstm.LSTM, fastlstm.reference.LSTM):
        with pytest.raises(ValueError, match="clip"):
            cls(3, 4, clip=clip)


@pytest.mark.parametrize("clip", ["a", [1.0], True, np.bool_(True), 1 + 2j, b"1"])
def test_clip_rejects_non_numbers(clip):
    with pytest.raises(TypeError, match="clip"):
        fastlstm.LSTM(3, 4, clip=clip)


@pytest.mark.parametrize("clip", [1, 0.5, np.float32(2.5), np.float64(1e-3), np.int64(3), 1e30])
def test_clip_accepts_positive_numbers(clip):
    m = fastlstm.LSTM(3, 4, clip=clip)
    assert isinstance(m.clip, float) and m.clip == float(clip)
    assert fastlstm.LSTM(3, 4).clip is None


@pytest.mark.parametrize("name", ["peepholes", "input_forget"])
@pytest.mark.parametrize("value", [1, 0, "yes", None])
def test_boolean_extras_are_type_checked(name, value):
    with pytest.raises(TypeError, match=name):
        fastlstm.LSTM(3, 4, **{name: value})


@pytest.mark.parametrize("num_layers,bidirectional,proj_size", [(1, False, 0), (2, True, 0), (3, False, 2), (2, True, 3)])
def test_peephole_parameters(num_layers, bidirectional, proj_size):
    H = 5
    model = fastlstm.LSTM(3, H, num_layers, bidirectional=bidirectional, proj_size=proj_size, peepholes=True, seed=4)
    plain = fastlstm.LSTM(3, H, num_layers, bidirectional=bidirectional, proj_size=proj_size, seed=4)
    state = model.state_dict()
    suffixes = ["", "_reverse"] if bidirectional else [""]
    ph = [f"weight_ph_l{k}{s}" for k in range(num_layers) for s in suffixes]
    assert sorted(set(state) - set(plain.state_dict())) == sorted(ph)
    assert set(plain.state_dict()) <= set(state)
    bound = 1 / np.sqrt(H)
    for name in ph:
        assert state[name].shape == (3, H) and state[name].dtype == np.float32
        assert getattr(model, name).shape == (3, H)
        assert np.all(np.abs(state[name]) <= bound) and np.ptp(state[name]) > 0, "initialised like the others"
    again = fastlstm.LSTM(3, H, num_layers, bidirectional=bidirectional, proj_size=proj_size, peepholes=True, seed=4)
    _assert_same_state(again.state_dict(), state, what="same seed")
    with pytest.raises(ValueError, match=ph[0]):  # a torch state dict lacks them
        model.load_state_dict(plain.state_dict())
    with pytest.raises(ValueError, match=ph[0]):
        plain.load_state_dict(state)
    with pytest.raises(ValueError, match=ph[0]):
        model.load_state_dict(dict(state, **{ph[0]: np.zeros((4, H))}))


EXTRA_CONFIGS = [
    dict(peepholes=True),
    dict(clip=0.5),
    dict(input_forget=True),
    dict(peepholes=True, clip=0.8, input_forget=True),
    dict(peepholes=True, num_layers=2, bidirectional=True, proj_size=3),
    dict(clip=0.3, num_layers=2, bidirectional=True, batch_first=True),
    dict(input_forget=True, direction="reverse", num_layers=2),
    dict(peepholes=True, clip=1.0, direction="reverse", proj_size=2),
    dict(peepholes=True, clip=0.6, input_forget=True, num_layers=2, bidirectional=True, dtype=np.float64),
    dict(peepholes=True, input_forget=True, dtype=np.float64, batch_first=True, bias=False),
]


@pytest.mark.parametrize("kwargs", EXTRA_CONFIGS, ids=lambda kw: ",".join(f"{k}={getattr(v, '__name__', v)}" for k, v in kw.items()))
def test_extras_match_reference_and_survive(kwargs, tmp_path):
    kwargs = dict(kwargs)
    num_layers = kwargs.pop("num_layers", 1)
    dtype = kwargs.get("dtype", np.float32)
    H, P = 6, kwargs.get("proj_size", 0)
    fast = fastlstm.LSTM(4, H, num_layers, seed=11, **kwargs)
    ref = fastlstm.reference.LSTM(4, H, num_layers, seed=11, **kwargs)
    # larger weights so that clipping and peepholes act
    rng = np.random.default_rng(12)
    state = {k: rng.standard_normal(v.shape) * 1.2 for k, v in fast.state_dict().items()}
    fast.load_state_dict(state)
    ref.load_state_dict(state)
    D = fast.num_directions * num_layers
    x = (rng.standard_normal((7, 3, 4)) * 2).astype(dtype)
    if fast.batch_first:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    hx = ((rng.standard_normal((D, 3, P or H)) * 0.5).astype(dtype), (rng.standard_normal((D, 3, H)) * 0.5).astype(dtype))
    lengths = np.array([7, 3, 1])
    atol = F64_TOL if dtype == np.float64 else F32_TOL
    for args in ((x, None, None), (x, hx, lengths)):
        got, want = fast(args[0], args[1], lengths=args[2]), ref(args[0], args[1], lengths=args[2])
        for label, a, e in (("output", got[0], want[0]), ("h_n", got[1][0], want[1][0]), ("c_n", got[1][1], want[1][1])):
            assert a.dtype == np.dtype(dtype)
            assert_close(a, e, atol=atol, name=label)
    # unbatched too
    x1 = x[:, 0] if not fast.batch_first else x[0]
    assert_close(fast(x1)[0], ref(x1)[0], atol=atol, name="unbatched output")

    want = fast(x, hx, lengths=lengths)
    # the extras are real: switching one off changes the result
    for extra, off in (("peepholes", False), ("clip", None), ("input_forget", False)):
        if kwargs.get(extra):
            cfg = dict(kwargs, **{extra: off})
            other = fastlstm.LSTM(4, H, num_layers, **cfg)
            other.load_state_dict({k: v for k, v in state.items() if extra != "peepholes" or "_ph_" not in k})
            assert np.abs(other(x, hx, lengths=lengths)[0] - want[0]).max() > 1e-3, f"{extra} has no effect"
    # survive state_dict / load_state_dict, save / load and pickle
    twin = fastlstm.LSTM(4, H, num_layers, **kwargs)
    twin.load_state_dict(fast.state_dict())
    _assert_same_forward(twin(x, hx, lengths=lengths), want, what="load_state_dict")
    fast.save(tmp_path / "m")
    for label, clone in (("save/load", fastlstm.load(tmp_path / "m")), ("pickle", pickle.loads(pickle.dumps(fast)))):
        _assert_same_config(clone, fast)
        assert (clone.peepholes, clone.clip, clone.input_forget) == (fast.peepholes, fast.clip, fast.input_forget)
        _assert_same_forward(clone(x, hx, lengths=lengths), want, what=label)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_input_forget_ignores_forget_gate_weights(dtype):
    """With f = 1 - i, the forget gate's own rows (i, f, g, o: rows H..2H) cannot matter."""
    H = 5
    model = fastlstm.LSTM(3, H, 2, bidirectional=True, input_forget=True, dtype=dtype, seed=1)
    x = np.random.default_rng(1).standard_normal((6, 2, 3)).astype(dtype)
    want = model(x)
    rng = np.random.default_rng(2)
    state = model.state_dict()
    for k, v in state.items():
        if k.startswith(("weight_ih", "weight_hh", "bias")):
            v[H:2 * H] = rng.standard_normal(v[H:2 * H].shape) * 3
    model.load_state_dict(state)
    got = model(x)
    for a, e in ((got[0], want[0]), (got[1][0], want[1][0]), (got[1][1], want[1][1])):
        assert_close(a, e, atol=F64_TOL if dtype == np.float64 else 1e-6, name="input_forget")


def test_reverse_direction_matches_backward_half_of_bidirectional():
    """A reverse-only LSTM (as ONNX makes) equals the backward half of a bidirectional one."""
    bi = fastlstm.LSTM(4, 5, bidirectional=True, peepholes=True, seed=3)
    rev = fastlstm.LSTM(4, 5, direction="reverse", peepholes=True)
    rev.load_state_dict({k.replace("_reverse", ""): v for k, v in bi.state_dict().items() if k.endswith("_reverse")})
    assert rev.direction == "reverse" and not rev.bidirectional and rev.num_directions == 1
    assert all(not k.endswith("_reverse") for k in rev.state_dict())
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 3, 4)).astype(np.float32)
    lengths = np.array([6, 2, 4])
    h0 = rng.standard_normal((2, 3, 5)).astype(np.float32)
    c0 = rng.standard_normal((2, 3, 5)).astype(np.float32)
    out_bi, (h_bi, c_bi) = bi(x, (h0, c0), lengths=lengths)
    out_rev, (h_rev, c_rev) = rev(x, (h0[1:], c0[1:]), lengths=lengths)
    assert_close(out_rev, out_bi[..., 5:], atol=1e-6, name="output")
    assert_close(h_rev, h_bi[1:], atol=1e-6, name="h_n")
    assert_close(c_rev, c_bi[1:], atol=1e-6, name="c_n")
    with pytest.raises(ValueError, match="direction"):
        fastlstm.LSTM(4, 5, direction="backward")
    with pytest.raises(ValueError):
        fastlstm.LSTM(4, 5, bidirectional=True, direction="reverse")
