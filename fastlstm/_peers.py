"""The peers fastlstm is compared with, built from the same weights: torch.nn.LSTM, onnxruntime and OpenVINO.

Each builder returns a callable ``run(x) -> output`` that runs the peer the way its users run it: torch under
``torch.inference_mode()``; onnxruntime with one ONNX LSTM node per layer; OpenVINO on the same ONNX graph
compiled for the input's shape, at the precision asked for (its default is bf16 on a CPU with AVX512-BF16, so a
float32 comparison asks for "f32"). A streaming ``step(x_t) -> h_t`` carries the state inside. Peers are imported
only here (and in _peers_gru, _peers_quant), only when asked for.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ._base import LSTMBase

# ONNX gate order is i, o, f, c; torch's is i, f, g(=c), o
TORCH_TO_ONNX_GATES = (0, 3, 1, 2)


def torch_to_onnx_gates(w: np.ndarray, hidden_size: int) -> np.ndarray:
    """Reorder the 4H gate rows (axis 0) of a torch-layout weight or bias to ONNX's order."""
    blocks = [w[g * hidden_size : (g + 1) * hidden_size] for g in TORCH_TO_ONNX_GATES]
    return np.concatenate(blocks, axis=0)


def torch_module(model: LSTMBase) -> Any:
    """A torch.nn.LSTM holding ``model``'s configuration and weights (forward or bidirectional)."""
    import torch

    if model.direction == "reverse":
        raise ValueError("torch has no reverse-only LSTM")
    dtype = torch.float64 if model.dtype == np.float64 else torch.float32
    module = torch.nn.LSTM(
        model.input_size,
        model.hidden_size,
        model.num_layers,
        bias=model.bias,
        batch_first=model.batch_first,
        bidirectional=model.bidirectional,
        proj_size=model.proj_size,
        dtype=dtype,
    )
    module.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return module.eval()


def torch_runner(model: LSTMBase, threads: Optional[int] = None) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    module = torch_module(model)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return np.asarray(module(torch.from_numpy(x))[0].numpy())

    return run


def onnx_model(model: LSTMBase, batch_first: bool = False) -> Any:
    """An ONNX graph of ``model``: one LSTM node per layer, all layers chained, input X, output Y.

    Projection (proj_size > 0) has no ONNX equivalent: ValueError.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if model.proj_size > 0:
        raise ValueError("ONNX's LSTM has no projection (proj_size)")
    H, D = model.hidden_size, model.num_directions
    elem = TensorProto.DOUBLE if model.dtype == np.float64 else TensorProto.FLOAT
    nodes, inits = [], []
    layer_in = "X"
    if batch_first:
        nodes.append(helper.make_node("Transpose", ["X"], ["X_tbi"], perm=[1, 0, 2]))
        layer_in = "X_tbi"
    state = model.state_dict()
    for layer in range(model.num_layers):
        Ws, Rs, Bs = [], [], []
        for sfx in model._suffixes():
            Ws.append(torch_to_onnx_gates(state[f"weight_ih_l{layer}{sfx}"], H))
            Rs.append(torch_to_onnx_gates(state[f"weight_hh_l{layer}{sfx}"], H))
            if model.bias:
                Bs.append(
                    np.concatenate(
                        [
                            torch_to_onnx_gates(state[f"bias_ih_l{layer}{sfx}"], H),
                            torch_to_onnx_gates(state[f"bias_hh_l{layer}{sfx}"], H),
                        ]
                    )
                )
        names = [f"W{layer}", f"R{layer}"] + ([f"B{layer}"] if model.bias else [])
        for name, arrs in zip(names, (Ws, Rs, Bs)):
            inits.append(numpy_helper.from_array(np.stack(arrs).astype(model.dtype), name))
        y = f"Y{layer}"
        nodes.append(
            helper.make_node(
                "LSTM", [layer_in] + names, [y], hidden_size=H, direction=model.direction, name=f"lstm{layer}"
            )
        )
        # Y (T, D, B, H) -> (T, B, D*H)
        nodes.append(helper.make_node("Transpose", [y], [f"{y}_t"], perm=[0, 2, 1, 3]))
        inits.append(numpy_helper.from_array(np.array([0, 0, D * H], dtype=np.int64), f"shape{layer}"))
        nodes.append(helper.make_node("Reshape", [f"{y}_t", f"shape{layer}"], [f"{y}_seq"]))
        layer_in = f"{y}_seq"
    out = layer_in
    if batch_first:
        nodes.append(helper.make_node("Transpose", [layer_in], ["Y_bt"], perm=[1, 0, 2]))
        out = "Y_bt"
    nodes.append(helper.make_node("Identity", [out], ["Y"]))
    graph = helper.make_graph(
        nodes,
        "fastlstm_peer",
        [helper.make_tensor_value_info("X", elem, [None, None, model.input_size])],
        [helper.make_tensor_value_info("Y", elem, [None, None, D * H])],
        initializer=inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    proto.ir_version = 8  # readable by every onnxruntime of the last years
    return proto


def ort_session(proto: Any, threads: Optional[int] = None) -> Any:
    """An onnxruntime CPU session of the ONNX graph ``proto`` on ``threads`` intra-op threads (None: its default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def ort_runner(model: LSTMBase, threads: Optional[int] = None) -> Callable[[np.ndarray], np.ndarray]:
    session = ort_session(onnx_model(model, batch_first=model.batch_first), threads)

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(["Y"], {"X": x})[0])

    return run


def torch_step_runner(model: LSTMBase, threads: Optional[int] = None) -> Callable[[np.ndarray], np.ndarray]:
    """One streaming step in torch: nn.LSTM on T=1 with the state carried in hx."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    module = torch_module(model)
    state: Dict[str, Any] = {}

    def step(x_t: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            y, state["hx"] = module(torch.from_numpy(x_t)[None], state.get("hx"))
            return np.asarray(y[0].numpy())

    return step


def step_onnx_model(model: LSTMBase) -> Any:
    """A one-node ONNX LSTM graph of a one-layer forward model without projection, for a streaming step: inputs
    X (1, B, I), h and c (1, B, H); outputs h_out and c_out (1, B, H)."""
    from onnx import TensorProto, helper, numpy_helper

    if model.num_layers != 1 or model.direction != "forward" or model.proj_size:
        raise ValueError("the streaming peers cover single-layer forward LSTMs without projection")
    H = model.hidden_size
    elem = TensorProto.DOUBLE if model.dtype == np.float64 else TensorProto.FLOAT
    state = model.state_dict()
    inits = [
        numpy_helper.from_array(torch_to_onnx_gates(state["weight_ih_l0"], H)[None], "W"),
        numpy_helper.from_array(torch_to_onnx_gates(state["weight_hh_l0"], H)[None], "R"),
    ]
    if model.bias:
        b = np.concatenate([torch_to_onnx_gates(state["bias_ih_l0"], H), torch_to_onnx_gates(state["bias_hh_l0"], H)])
        inits.append(numpy_helper.from_array(b[None], "B"))
    node = helper.make_node(
        "LSTM", ["X", "W", "R", "B" if model.bias else "", "", "h", "c"], ["", "h_out", "c_out"], hidden_size=H
    )

    def io(name: str, shape: List[Optional[int]]) -> Any:
        return helper.make_tensor_value_info(name, elem, shape)

    graph = helper.make_graph(
        [node],
        "fastlstm_step_peer",
        [io("X", [1, None, model.input_size]), io("h", [1, None, H]), io("c", [1, None, H])],
        [io("h_out", [1, None, H]), io("c_out", [1, None, H])],
        initializer=inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    proto.ir_version = 8
    return proto


def ort_state_stepper(session: Any, model: LSTMBase) -> Callable[[np.ndarray], np.ndarray]:
    """step(x_t (B, I)) -> h_t (B, H) on an onnxruntime session of a step_onnx_model graph (float32 or one
    quantized from it), the state carried from call to call, starting at zero."""
    carried: Dict[str, np.ndarray] = {}

    def step(x_t: np.ndarray) -> np.ndarray:
        if "h" not in carried:
            carried["h"] = carried["c"] = np.zeros((1, x_t.shape[0], model.hidden_size), model.dtype)
        carried["h"], carried["c"] = session.run(None, {"X": x_t[None], "h": carried["h"], "c": carried["c"]})
        h: np.ndarray = carried["h"][0]
        return h

    return step


def ort_step_runner(model: LSTMBase, threads: Optional[int] = None) -> Callable[[np.ndarray], np.ndarray]:
    """One streaming step in onnxruntime: a one-node LSTM graph with the state as inputs and outputs."""
    return ort_state_stepper(ort_session(step_onnx_model(model), threads), model)


# ---- OpenVINO -------------------------------------------------------------------------------------


def openvino_compiled(
    proto: Any, threads: Optional[int], precision: Optional[str], shapes: Optional[Dict[str, List[int]]] = None
) -> Any:
    """The ONNX graph ``proto`` compiled by OpenVINO for the CPU at ``precision`` ("f32", "bf16"; None: its default,
    bf16 on a CPU with AVX512-BF16), for latency, on ``threads`` threads; with static input ``shapes`` when given
    (as a latency-minded user compiles), else the graph's own (dynamic) shapes."""
    import openvino as ov

    core = ov.Core()
    ov_model = core.read_model(proto.SerializeToString(), b"")
    if shapes is not None:
        ov_model.reshape(shapes)
    config: Dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    return core.compile_model(ov_model, "CPU", config)


def openvino_precision(compiled: Any) -> str:
    """The precision OpenVINO chose for a compiled model ("bf16", "f32", ...)."""
    value = compiled.get_property("INFERENCE_PRECISION_HINT")
    return value.to_string() if hasattr(value, "to_string") else str(value)


def openvino_runner(
    model: LSTMBase, shape: Sequence[int], threads: Optional[int] = None, precision: Optional[str] = None
) -> Tuple[Callable[[np.ndarray], np.ndarray], str]:
    """OpenVINO forward of ``model``'s graph compiled for input ``shape`` (T, B, I) at ``precision`` (None: its
    default). Returns (run(x) -> (T, B, D*H), the precision it runs)."""
    compiled = openvino_compiled(onnx_model(model), threads, precision, {"X": list(shape)})
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        request.infer({"X": x})
        out: np.ndarray = request.get_output_tensor(0).data.copy()
        return out

    return run, openvino_precision(compiled)


def openvino_step_runner(
    model: LSTMBase, batch: int = 1, threads: Optional[int] = None, precision: Optional[str] = None
) -> Tuple[Callable[[np.ndarray], np.ndarray], str]:
    """OpenVINO streaming step at ``precision`` (None: its default), compiled for ``batch``: (step(x_t (B, I)) ->
    h_t (B, H), the state carried from zero; the precision it runs)."""
    H = model.hidden_size
    shapes = {"X": [1, batch, model.input_size], "h": [1, batch, H], "c": [1, batch, H]}
    compiled = openvino_compiled(step_onnx_model(model), threads, precision, shapes)
    request = compiled.create_infer_request()
    carried = {"h": np.zeros((1, batch, H), model.dtype), "c": np.zeros((1, batch, H), model.dtype)}

    def step(x_t: np.ndarray) -> np.ndarray:
        request.infer({"X": x_t[None], "h": carried["h"], "c": carried["c"]})
        carried["h"] = request.get_tensor("h_out").data.copy()
        carried["c"] = request.get_tensor("c_out").data.copy()
        h: np.ndarray = carried["h"][0]
        return h

    return step, openvino_precision(compiled)
