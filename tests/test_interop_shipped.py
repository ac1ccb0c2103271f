"""Models as they ship: LSTM nodes inside ONNX subgraphs (silero-vad keeps its LSTMs in If branches), weights
behind constant-only chains (Slice/Concat/Unsqueeze/... of initializers, as exporters write them), a chain of
LSTM nodes from one stacked torch LSTM (both torch.onnx exporters), nn.LSTMCell (plain and scripted), Keras'
Bidirectional(LSTM), and the hints for a ragged input and for loading a file that is not a fastlstm file.

Every ONNX model here is built in the test (onnx.helper or torch.onnx.export) and run by onnxruntime, the
oracle for what the graph means; the loaded fastlstm model must give the same numbers. The last tests use
the silero-vad package from PyPI when it is installed (it is optional: skipped when absent, also under CI).

Conventions: ONNX's Y is (T, D, B, H); ours is (T, B, D*H).
"""
from __future__ import annotations

import os
import warnings
import zipfile

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest

import fastlstm
from conftest import assert_close, require

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.filterwarnings("ignore:`torch.jit.(script|load)` is deprecated:DeprecationWarning"),
]

F32_TOL = 2e-5
F64_TOL = 1e-10
I, H, T, B = 3, 4, 6, 2


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng([sum(map(ord, str(k))) + 1000 * i for i, k in enumerate(key)])


def _assert_same_state(got: dict, want: dict, *, what: str = ""):
    assert list(got) == list(want), f"{what}: keys {list(got)} vs {list(want)}"
    for k in got:
        assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]), f"{what}: {k} differs"


def _y_to_ours(Y):
    """ONNX Y (T, D, B, H) -> (T, B, D*H)."""
    T_, D, B_, H_ = Y.shape
    return Y.transpose(0, 2, 1, 3).reshape(T_, B_, D * H_)


def _ort(model, feeds):
    ort = require("onnxruntime")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _onnx_weights(rng, I_=I, H_=H, D=1, scale=0.5):
    """W (D, 4H, I), R (D, 4H, H), B (D, 8H) in ONNX's layout and gate order, float32."""
    W = (rng.standard_normal((D, 4 * H_, I_)) * scale).astype(np.float32)
    R = (rng.standard_normal((D, 4 * H_, H_)) * scale).astype(np.float32)
    Bias = (rng.standard_normal((D, 8 * H_)) * scale).astype(np.float32)
    return W, R, Bias


def _model(nodes, inputs, outputs, inits=(), opset=17):
    from onnx import TensorProto, helper

    def info(name):
        return name if not isinstance(name, str) else helper.make_tensor_value_info(name, TensorProto.FLOAT, None)

    graph = helper.make_graph(list(nodes), "g", [info(i) for i in inputs], [info(o) for o in outputs],
                              initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


def _one_lstm(W, R, Bias, *, opset=17, **attrs):
    """A main graph holding one LSTM node on initializers W, R, B: the reference for the rewired models."""
    from onnx import helper, numpy_helper

    node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], name="lstm", hidden_size=R.shape[-1], **attrs)
    inits = [numpy_helper.from_array(a, n) for n, a in (("W", W), ("R", R), ("B", Bias))]
    return _model([node], ["X"], ["Y"], inits, opset)


def _x(rng, T_=T, B_=B, I_=I):
    return rng.standard_normal((T_, B_, I_)).astype(np.float32)


# ==== 1. LSTM nodes inside subgraphs ================================================================


def _silero_like_branch(prefix, W, R, Bias, opset):
    """An If branch computing an LSTM as silero-vad's export does: the weights are outer-scope initializers
    in torch's layout (rows i, f, g, o), sliced into ONNX's gate order (i, o, f, c), concatenated and
    unsqueezed inside the branch; the bias is two such chains concatenated."""
    from onnx import TensorProto, helper, numpy_helper

    H_ = R.shape[-1]
    nodes = []

    def const(name, values):
        nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(values, np.int64))))
        return name

    def onnx_order(source, tag):
        # torch rows [i, f, g, o] -> ONNX [i, o, f, g]: slices [0:H], [3H:4H], [H:3H]
        parts = []
        for k, (start, end) in enumerate(((0, H_), (3 * H_, 4 * H_), (H_, 3 * H_))):
            out = f"{prefix}{tag}_slice{k}"
            if opset < 10:
                nodes.append(helper.make_node("Slice", [source], [out], starts=[start], ends=[end], axes=[0]))
            else:
                nodes.append(helper.make_node("Slice", [source, const(f"{out}_s", [start]), const(f"{out}_e", [end]),
                                                        const(f"{out}_a", [0])], [out]))
            parts.append(out)
        nodes.append(helper.make_node("Concat", parts, [f"{prefix}{tag}_cat"], axis=0))
        return f"{prefix}{tag}_cat"

    def unsqueeze0(source, out):
        if opset < 13:
            nodes.append(helper.make_node("Unsqueeze", [source], [out], axes=[0]))
        else:
            nodes.append(helper.make_node("Unsqueeze", [source, const(f"{out}_axes", [0])], [out]))
        return out

    w = unsqueeze0(onnx_order(f"{prefix}weight_ih", "w"), f"{prefix}W")
    r = unsqueeze0(onnx_order(f"{prefix}weight_hh", "r"), f"{prefix}R")
    nodes.append(helper.make_node("Concat", [onnx_order(f"{prefix}bias_ih", "bi"), onnx_order(f"{prefix}bias_hh", "bh")],
                                  [f"{prefix}b_cat"], axis=0))
    b = unsqueeze0(f"{prefix}b_cat", f"{prefix}B")
    nodes.append(helper.make_node("LSTM", ["X", w, r, b], [f"{prefix}Y"], name=f"{prefix}rnn/LSTM", hidden_size=H_))
    branch = helper.make_graph(nodes, f"{prefix}branch", [],
                               [helper.make_tensor_value_info(f"{prefix}Y", TensorProto.FLOAT, None)])
    # the outer-scope initializers: torch's layout, from the ONNX weights (gate rows i, o, f, c -> i, f, c, o)
    to_torch = [0, 2, 3, 1]

    def torch_rows(a):
        return np.concatenate([a[g * H_:(g + 1) * H_] for g in to_torch])

    inits = [numpy_helper.from_array(torch_rows(W[0]), f"{prefix}weight_ih"),
             numpy_helper.from_array(torch_rows(R[0]), f"{prefix}weight_hh"),
             numpy_helper.from_array(torch_rows(Bias[0, :4 * H_]), f"{prefix}bias_ih"),
             numpy_helper.from_array(torch_rows(Bias[0, 4 * H_:]), f"{prefix}bias_hh")]
    return branch, inits


def _if_model(then_branch, else_branch, inits, opset, name="decoder/If"):
    from onnx import TensorProto, helper

    node = helper.make_node("If", ["cond"], ["out"], name=name, then_branch=then_branch, else_branch=else_branch)
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    return _model([node], ["X", cond], ["out"], inits, opset)


def _identity_branch(name):
    from onnx import TensorProto, helper

    return helper.make_graph([helper.make_node("Identity", ["X"], [name])], name, [],
                             [helper.make_tensor_value_info(name, TensorProto.FLOAT, None)])


@pytest.mark.parametrize("opset", [9, 11, 17], ids=lambda o: f"opset{o}")
def test_silero_like_lstm_in_if_branch_matches_onnxruntime(opset):
    """Slice with attributes (opset 9) or inputs (>= 10), Unsqueeze axes as attribute (< 13) or input."""
    require("onnx")
    rng = _rng("silero", opset)
    W, R, Bias = _onnx_weights(rng)
    branch, inits = _silero_like_branch("a/", W, R, Bias, opset)
    model = _if_model(branch, _identity_branch("passthrough"), inits, opset)
    lstm = fastlstm.LSTM.from_onnx(model)  # the main graph has no LSTM node: the only one in a subgraph
    assert (lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.direction) == (I, H, 1, "forward")
    _assert_same_state(lstm.state_dict(), fastlstm.LSTM.from_onnx(_one_lstm(W, R, Bias)).state_dict(),
                       what="folded branch weights vs plain initializers")
    x = _x(rng)
    (Y,) = _ort(model, {"X": x, "cond": np.array(True)})
    assert_close(lstm(x)[0], _y_to_ours(Y), atol=F32_TOL, name="Y of the If branch")
    by_name = fastlstm.LSTM.from_onnx(model, node="a/rnn/LSTM")
    _assert_same_state(by_name.state_dict(), lstm.state_dict(), what="selected by name")


def test_lstm_nodes_in_both_branches_listed_and_selectable():
    """Two LSTMs (then and else branch of an If nested in another If's branch, like silero-vad.onnx):
    node=None lists both with where they are; each loads by name and by index and matches onnxruntime."""
    require("onnx")
    from onnx import TensorProto, helper

    rng = _rng("branches")
    weights = {p: _onnx_weights(rng) for p in ("t/", "e/")}
    then_branch, then_inits = _silero_like_branch("t/", *weights["t/"], 17)
    else_branch, else_inits = _silero_like_branch("e/", *weights["e/"], 17)
    inner = helper.make_node("If", ["cond2"], ["inner_out"], name="inner", then_branch=then_branch,
                             else_branch=else_branch)
    outer_then = helper.make_graph([inner], "outer_then", [], [helper.make_tensor_value_info("inner_out", 1, None)])
    model = _if_model(outer_then, _identity_branch("skip"), then_inits + else_inits, 17, name="outer")
    model.graph.input.append(helper.make_tensor_value_info("cond2", TensorProto.BOOL, []))
    with pytest.raises(ValueError) as info:
        fastlstm.LSTM.from_onnx(model)
    message = str(info.value)
    # (onnx.helper stores a node's attributes sorted by name: else_branch comes first)
    for text in ("2 LSTM nodes", "node=", "0: 'e/rnn/LSTM' in If 'outer' then_branch > If 'inner' else_branch",
                 "1: 't/rnn/LSTM' in If 'outer' then_branch > If 'inner' then_branch"):
        assert text in message, f"{text!r} not in: {message}"
    x = _x(rng)
    for index, (prefix, cond2) in enumerate((("e/", False), ("t/", True))):
        (Y,) = _ort(model, {"X": x, "cond": np.array(True), "cond2": np.array(cond2)})
        for selector in (f"{prefix}rnn/LSTM", index, index - 2):
            lstm = fastlstm.LSTM.from_onnx(model, node=selector)
            assert_close(lstm(x)[0], _y_to_ours(Y), atol=F32_TOL, name=f"node={selector!r}")
        want = fastlstm.LSTM.from_onnx(_one_lstm(*weights[prefix]))
        _assert_same_state(fastlstm.LSTM.from_onnx(model, node=index).state_dict(), want.state_dict())
    with pytest.raises(ValueError, match="no LSTM node named 'nope'.*e/rnn/LSTM.*t/rnn/LSTM"):
        fastlstm.LSTM.from_onnx(model, node="nope")
    with pytest.raises(ValueError, match="out of range"):
        fastlstm.LSTM.from_onnx(model, node=2)


def _loop_model(body_nodes, body_extra_inputs=(), carried=(), inits=()):
    """A Loop running once (trip count M=1) whose body's scan output is the body's LSTM Y."""
    from onnx import TensorProto, helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"])] + list(body_nodes) +
        [helper.make_node("Identity", [c], [f"{c}_out"]) for c in carried],
        "body",
        [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])] + list(body_extra_inputs),
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, [])] +
        [helper.make_tensor_value_info(f"{c}_out", TensorProto.FLOAT, None) for c in carried] +
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
    )
    loop = helper.make_node("Loop", ["M", "keep_going"] + [f"{c}_init" for c in carried],
                            [f"{c}_final" for c in carried] + ["Ys"], name="loop", body=body)
    inputs = ["X", helper.make_tensor_value_info("M", TensorProto.INT64, []),
              helper.make_tensor_value_info("keep_going", TensorProto.BOOL, [])]
    inputs += [f"{c}_init" for c in carried]
    return _model([loop], inputs, [f"{c}_final" for c in carried] + ["Ys"], inits)


def test_lstm_in_loop_body_matches_onnxruntime_and_runtime_weights_are_named():
    require("onnx")
    from onnx import helper, numpy_helper

    rng = _rng("loop")
    W, R, Bias = _onnx_weights(rng, D=2)
    inits = [numpy_helper.from_array(a, n) for n, a in (("W", W), ("R", R), ("B", Bias))]
    body = [helper.make_node("Identity", ["W"], ["W_body"]),  # outer-scope initializers, read from the body
            helper.make_node("LSTM", ["X", "W_body", "R", "B"], ["Y"], name="body_lstm", hidden_size=H,
                             direction="bidirectional")]
    model = _loop_model(body, inits=inits)
    lstm = fastlstm.LSTM.from_onnx(model)
    assert lstm.direction == "bidirectional"
    x = _x(rng)
    (Ys,) = _ort(model, {"X": x, "M": np.array(1, np.int64), "keep_going": np.array(True)})
    assert_close(lstm(x)[0], _y_to_ours(Ys[0]), atol=F32_TOL, name="Y of the Loop body")
    # weights carried through the loop are values of the body's inputs: known only at run time
    carried = _loop_model(
        [helper.make_node("Identity", ["R"], ["R_body"]),
         helper.make_node("LSTM", ["X", "W_state", "R_body", "B"], ["Y"], name="body_lstm", hidden_size=H,
                          direction="bidirectional")],
        body_extra_inputs=[helper.make_tensor_value_info("W_state", 1, None)], carried=["W_state"], inits=inits[1:])
    with pytest.raises(ValueError) as info:
        fastlstm.LSTM.from_onnx(carried)
    message = str(info.value)
    for text in ("input W ('W_state')", "'body_lstm'", "an input of Loop 'loop' body", "run time"):
        assert text in message, f"{text!r} not in: {message}"


def test_node_selection_errors():
    require("onnx")
    from onnx import helper, numpy_helper

    rng = _rng("select")
    W, R, Bias = _onnx_weights(rng)
    inits = [numpy_helper.from_array(a, n) for n, a in (("W", W), ("R", R), ("B", Bias))]
    two = _model([helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y1"], name="same", hidden_size=H),
                  helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y2"], name="same", hidden_size=H)],
                 ["X"], ["Y1", "Y2"], inits)
    with pytest.raises(ValueError, match="2 LSTM nodes are named 'same'.*index"):
        fastlstm.LSTM.from_onnx(two, node="same")
    with pytest.raises(ValueError, match=r"2 LSTM nodes.*take their input from something other.*0: 'same' in the main graph"):
        fastlstm.LSTM.from_onnx(two)
    for k in (0, 1):
        _assert_same_state(fastlstm.LSTM.from_onnx(two, node=k).state_dict(),
                           fastlstm.LSTM.from_onnx(_one_lstm(W, R, Bias)).state_dict())
    with pytest.raises(TypeError, match="bool"):
        fastlstm.LSTM.from_onnx(two, node=True)
    empty = _model([helper.make_node("Identity", ["X"], ["Y"])], ["X"], ["Y"])
    with pytest.raises(ValueError, match="0 LSTM nodes"):
        fastlstm.LSTM.from_onnx(empty)


# ==== 2. weights behind constant-only chains ==========================================================


def _chain_cases(W):
    """name -> (opset, nodes producing "W" from the initializers/Constants below, initializers)."""
    from onnx import TensorProto, helper, numpy_helper

    def init(array, name):
        return numpy_helper.from_array(np.ascontiguousarray(array), name)

    def ints(values, name):
        return numpy_helper.from_array(np.array(values, np.int64), name)

    four_h = W.shape[1]
    flipped = W[:, ::-1, :]
    return {
        "Identity of Identity": (17, [helper.make_node("Identity", ["w0"], ["w1"]),
                                      helper.make_node("Identity", ["w1"], ["W"])], [init(W, "w0")]),
        "Unsqueeze axes attribute": (11, [helper.make_node("Unsqueeze", ["w0"], ["W"], axes=[0])], [init(W[0], "w0")]),
        "Unsqueeze axes input, negative": (13, [helper.make_node("Unsqueeze", ["w0", "ax"], ["W"])],
                                           [init(W[0], "w0"), ints([-3], "ax")]),
        "Squeeze axes attribute": (11, [helper.make_node("Squeeze", ["w0"], ["W"], axes=[0])], [init(W[None], "w0")]),
        "Squeeze axes input": (13, [helper.make_node("Squeeze", ["w0", "ax"], ["W"])],
                               [init(W[None, :, :, :, None], "w0"), ints([0, -1], "ax")]),
        "Squeeze all then Unsqueeze": (13, [helper.make_node("Squeeze", ["w0"], ["w1"]),
                                            helper.make_node("Unsqueeze", ["w1", "ax"], ["W"])],
                                       [init(W[None], "w0"), ints([0], "ax")]),
        "Reshape with 0 and -1": (14, [helper.make_node("Reshape", ["w0", "shape"], ["W"])],
                                  [init(W.reshape(1, -1), "w0"), ints([0, four_h, -1], "shape")]),
        "Reshape, shape from a Constant value_ints": (
            13, [helper.make_node("Constant", [], ["shape"], value_ints=[1, four_h, I]),
                 helper.make_node("Reshape", ["w0", "shape"], ["W"])], [init(W.reshape(-1), "w0")]),
        "Transpose": (17, [helper.make_node("Transpose", ["w0"], ["W"], perm=[2, 0, 1])],
                      [init(W.transpose(1, 2, 0), "w0")]),
        "Transpose without perm": (17, [helper.make_node("Transpose", ["w0"], ["W"])],
                                   [init(W.transpose(2, 1, 0), "w0")]),
        "Concat, negative axis": (17, [helper.make_node("Concat", ["wa", "wb"], ["W"], axis=-2)],
                                  [init(W[:, :5], "wa"), init(W[:, 5:], "wb")]),
        "Slice attributes (opset 9)": (9, [helper.make_node("Slice", ["w0"], ["W"], starts=[1], ends=[1 + four_h],
                                                            axes=[1])], [init(np.pad(W, ((0, 0), (1, 2), (0, 0))), "w0")]),
        "Slice inputs with negative step": (
            13, [helper.make_node("Slice", ["w0", "s", "e", "a", "st"], ["W"])],
            [init(flipped, "w0"), ints([-1], "s"), ints([-2**63], "e"), ints([1], "a"), ints([-1], "st")]),
        "Slice inputs, ends past the end": (
            13, [helper.make_node("Slice", ["w0", "s", "e"], ["W"])],
            [init(np.concatenate([W, W]), "w0"), ints([1], "s"), ints([2**63 - 1], "e")]),
        "Cast from float64": (17, [helper.make_node("Cast", ["w0"], ["W"], to=TensorProto.FLOAT)],
                              [init(W.astype(np.float64), "w0")]),
        "Constant value_floats, Reshape": (
            17, [helper.make_node("Constant", [], ["flat"], value_floats=W.reshape(-1).tolist()),
                 helper.make_node("Reshape", ["flat", "shape"], ["W"])], [ints(list(W.shape), "shape")]),
        "initializer also a graph input": (17, [], [init(W, "W")]),
    }


_CASES = list(_chain_cases(np.zeros((1, 4 * H, I), np.float32)))


@pytest.mark.parametrize("case", _CASES)
def test_weights_folded_from_constant_chains(case):
    """W behind each chain loads to exactly the initializer's values, and onnxruntime agrees on the graph."""
    require("onnx")
    from onnx import TensorProto, helper

    rng = _rng("chain", case)
    W, R, Bias = _onnx_weights(rng)
    opset, nodes, inits = _chain_cases(W)[case]
    base = _one_lstm(W, R, Bias)
    model = _one_lstm(W, R, Bias, opset=opset)
    graph = model.graph
    w_init = next(i for i in graph.initializer if i.name == "W")
    graph.initializer.remove(w_init)
    lstm_node = graph.node[0]
    kept = type(lstm_node)()
    kept.CopyFrom(lstm_node)
    del graph.node[:]
    graph.node.extend(list(nodes) + [kept])
    graph.initializer.extend(inits)
    if case == "initializer also a graph input":
        graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, list(W.shape)))
    got = fastlstm.LSTM.from_onnx(model)
    _assert_same_state(got.state_dict(), fastlstm.LSTM.from_onnx(base).state_dict(), what=case)
    x = _x(rng)
    (Y,) = _ort(model, {"X": x})
    assert_close(got(x)[0], _y_to_ours(Y), atol=F32_TOL, name=case)


def test_weights_depending_on_runtime_inputs_are_named():
    require("onnx")
    from onnx import helper, numpy_helper

    rng = _rng("runtime")
    W, R, Bias = _onnx_weights(rng)
    inits = [numpy_helper.from_array(a, n) for n, a in (("R", R), ("B", Bias))]

    def model_with(nodes, extra_inits, extra_inputs=()):
        lstm = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], name="enc", hidden_size=H)
        return _model(list(nodes) + [lstm], ["X"] + list(extra_inputs), ["Y"], inits + list(extra_inits))

    # part of W sliced from the data itself: depends on the graph input X
    from_x = model_with(
        [helper.make_node("Slice", ["X", "s", "e", "a"], ["x_part"], name="take_x"),
         helper.make_node("Reshape", ["x_part", "shape"], ["x_rows"], name="to_rows"),
         helper.make_node("Concat", ["w_rows", "x_rows"], ["w_all"], axis=1, name="join"),
         helper.make_node("Unsqueeze", ["w_all", "ax"], ["W"], name="add_axis")],
        [numpy_helper.from_array(W[0, :, :-1], "w_rows"), numpy_helper.from_array(np.array([0]), "s"),
         numpy_helper.from_array(np.array([1]), "e"), numpy_helper.from_array(np.array([0]), "a"),
         numpy_helper.from_array(np.array([4 * H, 1]), "shape"), numpy_helper.from_array(np.array([0]), "ax")])
    with pytest.raises(ValueError) as info:
        fastlstm.LSTM.from_onnx(from_x)
    message = str(info.value)
    for text in ("input W ('W') of LSTM node 'enc'", "'X' is an input of the main graph, known only at run time",
                 "through Unsqueeze 'add_axis' <- Concat 'join' <- Reshape 'to_rows' <- Slice 'take_x'", "Cast"):
        assert text in message, f"{text!r} not in: {message}"
    # an operator from_onnx does not evaluate (Add of two initializers)
    added = model_with([helper.make_node("Add", ["wa", "wb"], ["W"], name="sum")],
                       [numpy_helper.from_array(W / 2, "wa"), numpy_helper.from_array(W / 2, "wb")])
    with pytest.raises(ValueError, match=r"'W' is computed by a Add node \('sum'\), which from_onnx does not evaluate"):
        fastlstm.LSTM.from_onnx(added)
    # a name nothing defines
    with pytest.raises(ValueError, match="'W' is not defined by any node, initializer or graph input"):
        fastlstm.LSTM.from_onnx(model_with([], []))


# ==== 3. a chain of LSTM nodes: one stacked model ====================================================


def _export(module, x, path, exporter):
    import torch

    kwargs = {}
    if exporter == "dynamo-dynamic":  # T and B symbolic: the glue reshapes to sizes computed from Shape(Y)
        names = ("batch", "time") if module.batch_first else ("time", "batch")
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim(names[0]), 1: torch.export.Dim(names[1])},)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), dynamo=exporter != "legacy", **kwargs)


@pytest.mark.parametrize("batch_first", [False, True], ids=["tbi", "bti"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("exporter", ["legacy", "dynamo", "dynamo-dynamic"])
def test_stacked_torch_export_loads_as_one_model(exporter, bidirectional, batch_first, tmp_path):
    """torch.onnx.export writes one LSTM node per layer, joined by Squeeze (legacy, one direction) or
    Transpose + Reshape (to a constant shape, or one computed from Shape with dynamic shapes); node=None
    loads them as one stacked LSTM, equal to torch and onnxruntime."""
    torch = require("torch")
    onnx = require("onnx")
    if exporter != "legacy":
        try:  # the dynamo exporter needs onnxscript, which the test extras do not install: optional
            import onnxscript  # noqa: F401
        except ImportError:
            pytest.skip("the dynamo exporter of torch.onnx needs onnxscript, which is not installed")
    torch.manual_seed(0)
    module = torch.nn.LSTM(I, 5, num_layers=2, bidirectional=bidirectional, batch_first=batch_first).eval()
    x = torch.randn((B, T, I) if batch_first else (T, B, I))
    path = tmp_path / "stacked.onnx"
    _export(module, x, path, exporter)
    proto = onnx.load(str(path))
    assert sum(n.op_type == "LSTM" for n in proto.graph.node) == 2
    lstm = fastlstm.LSTM.from_onnx(path)
    assert lstm.num_layers == 2 and lstm.hidden_size == 5
    assert lstm.direction == ("bidirectional" if bidirectional else "forward")
    assert lstm.batch_first is False  # the LSTM nodes are time-major; the exporter transposes around them
    _assert_same_state(lstm.state_dict(), fastlstm.LSTM.from_torch(module).state_dict(), what="vs from_torch")
    if exporter == "dynamo-dynamic":  # another T and B than exported with, where the graph lets them vary
        # (torch 2.13 keeps a dim symbolic in the first dynamic export of a process, later ones may fix T)
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        assert any(d.dim_param for d in dims[:2]) and any(n.op_type == "Shape" for n in proto.graph.node)
        x = torch.randn(*[size + 1 if d.dim_param else size for size, d in zip(x.shape, dims)])
    x_tbi = x.transpose(0, 1) if batch_first else x
    out, (hn, cn) = lstm(x_tbi.contiguous().numpy())
    with torch.no_grad():
        y, (h, c) = module(x)
    y_tbi = y.transpose(0, 1) if batch_first else y
    assert_close(out, y_tbi.numpy(), atol=F32_TOL, name="output vs torch")
    assert_close(hn, h.numpy(), atol=F32_TOL, name="h_n vs torch")
    assert_close(cn, c.numpy(), atol=F32_TOL, name="c_n vs torch")
    ort_y, ort_h, ort_c = _ort(proto, {proto.graph.input[0].name: x.numpy()})
    ort_y_tbi = ort_y.transpose(1, 0, 2) if batch_first else ort_y
    assert_close(out, ort_y_tbi, atol=F32_TOL, name="output vs onnxruntime")
    assert_close(hn, ort_h, atol=F32_TOL, name="h_n vs onnxruntime")
    # one layer of the chain is still selectable alone
    layer1 = fastlstm.LSTM.from_onnx(path, node=1)
    assert layer1.num_layers == 1 and layer1.input_size == 5 * (2 if bidirectional else 1)


def _chained(layer_weights, glue, *, opset=17, direction="forward"):
    """LSTM nodes 'l0', 'l1', ... on X; glue(k, y_name) returns (nodes, initializers, next input name)."""
    from onnx import helper, numpy_helper

    nodes, inits, x_name = [], [], "X"
    for k, (W, R, Bias) in enumerate(layer_weights):
        names = [f"W{k}", f"R{k}"] + ([f"B{k}"] if Bias is not None else [])
        inits += [numpy_helper.from_array(a, n) for n, a in zip(names, (W, R, Bias))]
        nodes.append(helper.make_node("LSTM", [x_name] + names, [f"Y{k}"], name=f"l{k}",
                                      hidden_size=R.shape[-1], direction=direction))
        if k < len(layer_weights) - 1:
            more_nodes, more_inits, x_name = glue(k, f"Y{k}")
            nodes += more_nodes
            inits += more_inits
    return _model(nodes, ["X"], [f"Y{len(layer_weights) - 1}"], inits, opset)


def _transpose_reshape(k, y):
    from onnx import helper, numpy_helper

    return ([helper.make_node("Transpose", [y], [f"{y}_t"], perm=[0, 2, 1, 3]),
             helper.make_node("Reshape", [f"{y}_t", f"shape{k}"], [f"{y}_seq"])],
            [numpy_helper.from_array(np.array([0, 0, -1]), f"shape{k}")], f"{y}_seq")


def test_hand_built_chain_with_partial_bias_matches_onnxruntime():
    """Three layers, the middle one without B (zeros are the same thing), bidirectional."""
    require("onnx")
    rng = _rng("chain3")
    weights = [_onnx_weights(rng, I, H, 2), _onnx_weights(rng, 2 * H, H, 2), _onnx_weights(rng, 2 * H, H, 2)]
    weights[1] = (weights[1][0], weights[1][1], None)
    model = _chained(weights, _transpose_reshape, direction="bidirectional")
    lstm = fastlstm.LSTM.from_onnx(model)
    assert (lstm.num_layers, lstm.direction, lstm.bias) == (3, "bidirectional", True)
    assert not lstm.bias_ih_l1.any() and not lstm.bias_hh_l1_reverse.any()
    x = _x(rng)
    (Y,) = _ort(model, {"X": x})
    assert_close(lstm(x)[0], _y_to_ours(Y), atol=F32_TOL, name="3-layer chain")


def test_chains_that_are_not_one_stacked_model_are_explained():
    require("onnx")
    from onnx import helper, numpy_helper

    rng = _rng("badchain")
    bi = [_onnx_weights(rng, I, H, 2), _onnx_weights(rng, 2 * H, H, 2)]

    def reshape_only(k, y):  # (T, 2, B, H) -> (T, B?, ...) without the transpose: mixes directions and rows
        return ([helper.make_node("Reshape", [y, f"shape{k}"], [f"{y}_seq"], name="flatten")],
                [numpy_helper.from_array(np.array([0, -1, 2 * H]), f"shape{k}")], f"{y}_seq")

    cases = {
        "wrong glue": (_chained(bi, reshape_only, direction="bidirectional"),
                       "do not pass its output on unchanged"),
        "hidden sizes": (_chained([_onnx_weights(rng, I, H, 1), _onnx_weights(rng, H, H + 1, 1)], _transpose_reshape),
                         "hidden_size differs: 4 in 'l0', 5 in 'l1'"),
        "runtime glue": (_chained([_onnx_weights(rng, I, H, 1), _onnx_weights(rng, H, H, 1)],
                                  lambda k, y: ([helper.make_node("Squeeze", [y, "axes_in"], [f"{y}_s"])], [], f"{y}_s")),
                         "'axes_in' is not defined"),
    }
    for label, (model, reason) in cases.items():
        with pytest.raises(ValueError) as info:
            fastlstm.LSTM.from_onnx(model)
        message = str(info.value)
        for text in ("feed one another but do not make one stacked LSTM", reason, "0: 'l0' in the main graph"):
            assert text in message, f"{label}: {text!r} not in: {message}"
        fastlstm.LSTM.from_onnx(model, node="l1")  # each node still loads alone
    # one Y feeding two LSTM nodes
    W, R, Bias = _onnx_weights(rng)
    W2, R2, B2 = _onnx_weights(rng, H, H)
    inits = [numpy_helper.from_array(a, n) for n, a in (("W", W), ("R", R), ("B", Bias), ("W2", W2), ("R2", R2))]
    fork = _model([helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], name="a", hidden_size=H),
                   helper.make_node("Squeeze", ["Y", "ax"], ["Ys"]),
                   helper.make_node("LSTM", ["Ys", "W2", "R2"], ["Y1"], name="b", hidden_size=H),
                   helper.make_node("LSTM", ["Ys", "W2", "R2"], ["Y2"], name="c", hidden_size=H)],
                  ["X"], ["Y1", "Y2"], inits + [numpy_helper.from_array(np.array([1]), "ax")])
    with pytest.raises(ValueError, match="the output Y of 'a' feeds two LSTM nodes"):
        fastlstm.LSTM.from_onnx(fork)


def test_peer_graph_chain_loads_stacked():
    """fastlstm's own ONNX export of a stacked model (the bench's onnxruntime peer) loads back whole."""
    require("onnx")
    from fastlstm import _peers

    for bidirectional in (False, True):
        model = fastlstm.LSTM(3, 4, 3, bidirectional=bidirectional, seed=1)
        proto = _peers.onnx_model(model)
        loaded = fastlstm.LSTM.from_onnx(proto)
        assert loaded.num_layers == 3
        _assert_same_state(loaded.state_dict(), model.state_dict(), what=f"bidirectional={bidirectional}")
        x = _x(_rng("peer", bidirectional), I_=3)
        assert_close(loaded(x)[0], _ort(proto, {"X": x})[0], atol=F32_TOL, name="vs onnxruntime")


# ==== 4. torch.nn.LSTMCell and Keras' Bidirectional =================================================


@pytest.mark.parametrize("scripted", [False, True], ids=["module", "torchscript"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_from_torch_lstm_cell(bias, dtype, scripted):
    torch = require("torch")
    torch.manual_seed(1)
    torch_dtype = getattr(torch, dtype)
    cell = torch.nn.LSTMCell(I, H, bias=bias).to(torch_dtype).eval()
    if scripted:
        cell = torch.jit.script(cell)
    lstm = fastlstm.LSTM.from_torch(cell)
    assert (lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bias) == (I, H, 1, bias)
    assert lstm.dtype == np.dtype(dtype) and lstm.direction == "forward" and lstm.batch_first is False
    x = torch.randn(T, B, I, dtype=torch_dtype)
    h, c = torch.randn(B, H, dtype=torch_dtype), torch.randn(B, H, dtype=torch_dtype)
    out, (hn, cn) = lstm(x.numpy(), (h[None].numpy(), c[None].numpy()))
    steps = []
    with torch.no_grad():
        for t in range(T):
            h, c = cell(x[t], (h, c))
            steps.append(h)
    atol = F32_TOL if dtype == "float32" else F64_TOL
    assert_close(out, torch.stack(steps).numpy(), atol=atol, name="output vs the stepped cell")
    assert_close(hn[0], h.numpy(), atol=atol, name="h_n")
    assert_close(cn[0], c.numpy(), atol=atol, name="c_n")


def test_from_torch_rejects_other_modules():
    torch = require("torch")
    for module in (torch.nn.GRUCell(3, 4), torch.nn.Linear(3, 4), torch.jit.script(torch.nn.GRUCell(3, 4))):
        with pytest.raises(TypeError, match="torch.nn.LSTM or a torch.nn.LSTMCell"):
            fastlstm.LSTM.from_torch(module)
    with pytest.raises(ValueError, match="float16"):
        fastlstm.LSTM.from_torch(torch.nn.LSTMCell(3, 4).half())


def _bidirectional_keras(keras, *, merge_mode="concat", use_bias=True, seed=0):
    layer = keras.layers.Bidirectional(
        keras.layers.LSTM(H, return_sequences=True, return_state=True, use_bias=use_bias), merge_mode=merge_mode)
    layer.build((None, None, I))
    rng = np.random.default_rng(seed)
    layer.set_weights([(rng.standard_normal(w.shape) * 0.4).astype(w.dtype) for w in layer.get_weights()])
    return layer


@pytest.mark.parametrize("initial_state", [False, True], ids=["nostate", "state"])
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "nobias"])
def test_from_keras_bidirectional_concat(use_bias, initial_state):
    keras = require("keras")
    layer = _bidirectional_keras(keras, use_bias=use_bias, seed=int(use_bias))
    lstm = fastlstm.LSTM.from_keras(layer)
    assert (lstm.direction, lstm.batch_first, lstm.bias, lstm.input_size, lstm.hidden_size) == (
        "bidirectional", True, use_bias, I, H)
    rng = _rng("kbi", use_bias, initial_state)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    states = [(rng.standard_normal((B, H)) * 0.5).astype(np.float32) for _ in range(4)] if initial_state else None
    result = layer(x, initial_state=states) if states else layer(x)
    y, h_f, c_f, h_b, c_b = (keras.ops.convert_to_numpy(r) for r in result)
    hx = (np.stack([states[0], states[2]]), np.stack([states[1], states[3]])) if states else None
    out, (hn, cn) = lstm(x, hx)
    assert_close(out, y, atol=F32_TOL, name="output vs keras")
    assert_close(hn, np.stack([h_f, h_b]), atol=F32_TOL, name="h_n vs keras")
    assert_close(cn, np.stack([c_f, c_b]), atol=F32_TOL, name="c_n vs keras")


def test_from_keras_bidirectional_rejects_other_merge_modes_and_layers():
    keras = require("keras")
    for mode in ("sum", "mul", "ave", None):
        layer = _bidirectional_keras(keras, merge_mode=mode)
        with pytest.raises(ValueError, match=f"merge_mode={mode!r}"):
            fastlstm.LSTM.from_keras(layer)
    gru = keras.layers.Bidirectional(keras.layers.GRU(H, return_sequences=True))
    gru.build((None, None, I))
    with pytest.raises(TypeError, match="GRU"):
        fastlstm.LSTM.from_keras(gru)
    relu = keras.layers.Bidirectional(keras.layers.LSTM(H, activation="relu", return_sequences=True))
    relu.build((None, None, I))
    with pytest.raises(ValueError, match="activation='relu'"):
        fastlstm.LSTM.from_keras(relu)


# ==== 5. hints ======================================================================================


def test_ragged_input_suggests_padding_and_lengths():
    lstm = fastlstm.LSTM(I, H, seed=0)
    ragged = [np.zeros((5, I)), np.zeros((3, I))]
    with pytest.raises(ValueError, match="pad them to the longest and pass lengths=."):
        lstm(ragged)
    with pytest.raises(ValueError, match="pad them to the longest and pass lengths=."):
        fastlstm.reference.LSTM(I, H, seed=0)([[[1.0] * I] * 2, [[1.0] * I]])
    # the padded form works and matches the separate runs
    padded = np.zeros((2, 5, I), np.float32)
    rng = _rng("ragged")
    padded[0], padded[1, :3] = rng.standard_normal((5, I)), rng.standard_normal((3, I))
    bf = fastlstm.LSTM(I, H, batch_first=True, seed=0)
    out, _ = bf(padded, lengths=[5, 3])
    assert np.array_equal(out[1, :3], bf(padded[1:2, :3])[0][0]), "the short sequence, padded, is not itself"
    assert not out[1, 3:].any()


def test_load_explains_files_that_are_not_fastlstm_files(tmp_path):
    torch = require("torch")
    module = torch.nn.LSTM(I, H)
    checks = {}
    torch.save(module.state_dict(), tmp_path / "state.pt")
    torch.save(module, tmp_path / "module.pt")
    for name in ("state.pt", "module.pt"):
        with zipfile.ZipFile(tmp_path / name) as zf:
            assert any(n.endswith("data.pkl") for n in zf.namelist())
        checks[name] = "a PyTorch checkpoint written by torch.save"
    torch.save(module.state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    checks["legacy.pt"] = "Python pickle"
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("readme.txt", "hello")
    checks["other.zip"] = "a zip archive without a fastlstm header; it holds 'readme.txt'"
    (tmp_path / "model.onnx").write_bytes(_one_lstm(*_onnx_weights(_rng("onnxfile"))).SerializeToString()
                                          if _has("onnx") else b"\x08\x07\x12\x04test")
    checks["model.onnx"] = "neither a NumPy .npz archive nor anything fastlstm reads"
    (tmp_path / "empty.bin").write_bytes(b"")
    checks["empty.bin"] = "the file is empty"
    for name, detail in checks.items():
        with pytest.raises(ValueError) as info:
            fastlstm.load(tmp_path / name)
        message = str(info.value)
        for text in ("is not a fastlstm file", detail, "LSTM.save", "torch.load, then LSTM.from_torch(module)",
                     "LSTM.from_onnx"):
            assert text in message, f"{name}: {text!r} not in: {message}"
    # and what it suggests works for the torch checkpoint
    state = torch.load(tmp_path / "state.pt")
    restored = fastlstm.LSTM(I, H)
    restored.load_state_dict({k: v.numpy() for k, v in state.items()})
    _assert_same_state(restored.state_dict(), fastlstm.LSTM.from_torch(module).state_dict())


def _has(module_name):
    try:
        __import__(module_name)
    except ImportError:
        return False
    return True


# ==== 6. silero-vad from PyPI (optional) ============================================================


@pytest.fixture(scope="module")
def silero_data():
    pytest.importorskip("silero_vad", reason="silero-vad is an optional extra (pip install silero-vad)")
    import silero_vad

    return os.path.join(os.path.dirname(silero_vad.__file__), "data")


def test_silero_vad_onnx_models_load(silero_data):
    """silero_vad.onnx keeps four LSTM nodes in nested If branches (16 kHz and 8 kHz models); each loads by
    index and has exactly the weights of the LSTMCell in the package's TorchScript model."""
    torch = require("torch")
    require("onnx")
    jit = torch.jit.load(os.path.join(silero_data, "silero_vad.jit"), map_location="cpu")
    cell_16k = fastlstm.LSTM.from_torch(jit._model.decoder.rnn)
    cell_8k = fastlstm.LSTM.from_torch(jit._model_8k.decoder.rnn)
    path = os.path.join(silero_data, "silero_vad.onnx")
    with pytest.raises(ValueError, match="4 LSTM nodes.*If"):
        fastlstm.LSTM.from_onnx(path)
    loaded = [fastlstm.LSTM.from_onnx(path, node=k) for k in range(4)]
    matches = sorted(
        "16k" if _same(m, cell_16k) else "8k" if _same(m, cell_8k) else "neither" for m in loaded)
    assert matches == ["16k", "16k", "8k", "8k"], matches
    # the OpenVINO variant keeps one LSTM in its main graph, its weights behind Slice/Concat/Unsqueeze
    openvino = fastlstm.LSTM.from_onnx(os.path.join(silero_data, "silero_vad_openvino_16k.onnx"))
    assert _same(openvino, cell_16k)


def _same(a, b):
    return all(np.array_equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_silero_vad_lstm_matches_onnxruntime_and_torchscript(silero_data, tmp_path):
    """The OpenVINO variant's LSTM node, cut out with onnx.utils.extract_model (weight chains included), run
    by onnxruntime; and the TorchScript LSTMCell stepped: the loaded model gives both's numbers."""
    torch = require("torch")
    onnx = require("onnx")
    import onnx.utils

    src = os.path.join(silero_data, "silero_vad_openvino_16k.onnx")
    node = next(n for n in onnx.load(src).graph.node if n.op_type == "LSTM")
    cut = str(tmp_path / "silero_lstm.onnx")
    onnx.utils.extract_model(src, cut, [node.input[0], node.input[5], node.input[6]], [node.output[0]])
    extracted = onnx.load(cut)
    for info in extracted.graph.input:  # the export fixes T = 1 (one frame per call): let T and B vary
        for dim in info.type.tensor_type.shape.dim:
            dim.dim_param = "n"
    del extracted.graph.value_info[:]
    lstm = fastlstm.LSTM.from_onnx(extracted)
    rng = _rng("silero")
    x = rng.standard_normal((5, 2, 128)).astype(np.float32)
    h0, c0 = ((rng.standard_normal((1, 2, 128)) * 0.5).astype(np.float32) for _ in range(2))
    (Y,) = _ort(extracted, {node.input[0]: x, node.input[5]: h0, node.input[6]: c0})
    out, (hn, cn) = lstm(x, (h0, c0))
    assert_close(out, _y_to_ours(Y), atol=F32_TOL, name="vs onnxruntime")
    cell = torch.jit.load(os.path.join(silero_data, "silero_vad.jit"), map_location="cpu")._model.decoder.rnn
    h, c = torch.from_numpy(h0[0]), torch.from_numpy(c0[0])
    with torch.no_grad():
        for t in range(5):
            h, c = cell(torch.from_numpy(x[t]), (h, c))
    assert_close(hn[0], h.numpy(), atol=F32_TOL, name="h_n vs the TorchScript LSTMCell")
    assert_close(cn[0], c.numpy(), atol=F32_TOL, name="c_n vs the TorchScript LSTMCell")
