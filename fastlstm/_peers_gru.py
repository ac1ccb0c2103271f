"""The GRU peers fastlstm.GRU is compared with, built from the same weights: torch.nn.GRU, onnxruntime's GRU
and OpenVINO (asked for f32: on CPUs with AVX512-BF16 its default precision is bf16).

Each builder returns ``run(x) -> output`` for a whole sequence, or ``step(x_t) -> h_t`` for one streaming step
with the state carried inside (as users run them: torch on T=1 with hx; ONNX graphs with the state as inputs
and outputs). Peers are imported only here, only when asked for.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import numpy as np

from . import _peers

# ONNX's gate blocks are z, r, h; torch's r, z, n (the same permutation both ways)
TORCH_TO_ONNX_GRU_GATES = (1, 0, 2)


def torch_to_onnx_gru_gates(w: np.ndarray, hidden_size: int) -> np.ndarray:
    """Reorder the 3H gate rows (axis 0) of a torch-layout GRU weight or bias to ONNX's order."""
    return np.concatenate([w[g * hidden_size : (g + 1) * hidden_size] for g in TORCH_TO_ONNX_GRU_GATES], axis=0)


def torch_gru(model: Any) -> Any:
    """A torch.nn.GRU holding ``model``'s configuration and weights (linear_before_reset models only)."""
    import torch

    if model.direction == "reverse" or not model.linear_before_reset:
        raise ValueError("torch.nn.GRU has no reverse-only GRU and no linear_before_reset=False")
    module = torch.nn.GRU(
        model.input_size, model.hidden_size, model.num_layers, bias=model.bias, batch_first=model.batch_first,
        bidirectional=model.bidirectional, dtype=torch.float64 if model.dtype == np.float64 else torch.float32,
    )
    module.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return module.eval()


def torch_runner(model: Any, threads: Optional[int] = None) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    module = torch_gru(model)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out: np.ndarray = module(torch.from_numpy(x))[0].numpy()
            return out

    return run


def torch_step_runner(model: Any, threads: Optional[int] = None) -> Callable[[np.ndarray], np.ndarray]:
    """One streaming step in torch: nn.GRU on T=1 with the state carried in hx."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    module = torch_gru(model)
    state: Dict[str, Any] = {}

    def step(x_t: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            y, state["hx"] = module(torch.from_numpy(x_t)[None], state.get("hx"))
            out: np.ndarray = y[0].numpy()
            return out

    return step


def onnx_model(model: Any, *, with_state: bool = False) -> Any:
    """An ONNX graph of ``model`` (time-major): one GRU node per layer, input X (T, B, I), output Y (T, B, D*H).
    with_state: a single-layer graph that also takes h (D, B, H) and returns h_out (a streaming step)."""
    from onnx import TensorProto, helper, numpy_helper

    H, D = model.hidden_size, model.num_directions
    elem = TensorProto.DOUBLE if model.dtype == np.float64 else TensorProto.FLOAT
    if with_state and model.num_layers != 1:
        raise ValueError("the streaming graph covers single-layer GRUs")
    nodes, inits, layer_in = [], [], "X"
    state = model.state_dict()
    for layer in range(model.num_layers):
        Ws, Rs, Bs = [], [], []
        for sfx in model._suffixes():
            Ws.append(torch_to_onnx_gru_gates(state[f"weight_ih_l{layer}{sfx}"], H))
            Rs.append(torch_to_onnx_gru_gates(state[f"weight_hh_l{layer}{sfx}"], H))
            if model.bias:
                Bs.append(np.concatenate([torch_to_onnx_gru_gates(state[f"bias_{k}_l{layer}{sfx}"], H)
                                          for k in ("ih", "hh")]))
        names = [f"W{layer}", f"R{layer}"] + ([f"B{layer}"] if model.bias else [""])
        for name, arrs in zip(names, (Ws, Rs, Bs)):
            if name:
                inits.append(numpy_helper.from_array(np.stack(arrs).astype(model.dtype), name))
        y = f"Y{layer}"
        ins = [layer_in] + names + (["", "h"] if with_state else [])
        outs = [y, "h_out"] if with_state else [y]
        nodes.append(helper.make_node("GRU", ins, outs, hidden_size=H, direction=model.direction,
                                      linear_before_reset=int(model.linear_before_reset), name=f"gru{layer}"))
        nodes.append(helper.make_node("Transpose", [y], [f"{y}_t"], perm=[0, 2, 1, 3]))   # (T, B, D, H)
        inits.append(numpy_helper.from_array(np.array([0, 0, D * H], dtype=np.int64), f"shape{layer}"))
        nodes.append(helper.make_node("Reshape", [f"{y}_t", f"shape{layer}"], [f"{y}_seq"]))
        layer_in = f"{y}_seq"
    nodes.append(helper.make_node("Identity", [layer_in], ["Y"]))
    def io(name: str, shape: Any) -> Any:
        return helper.make_tensor_value_info(name, elem, shape)

    inputs, outputs = [io("X", [None, None, model.input_size])], [io("Y", [None, None, D * H])]
    if with_state:
        inputs.append(io("h", [D, None, H]))
        outputs.append(io("h_out", [D, None, H]))
    graph = helper.make_graph(nodes, "fastlstm_gru_peer", inputs, outputs, initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    proto.ir_version = 8
    return proto


def ort_runner(model: Any, threads: Optional[int] = None) -> Callable[[np.ndarray], np.ndarray]:
    """onnxruntime on a time-major x (T, B, I)."""
    session = _peers.ort_session(onnx_model(model), threads)
    return lambda x: session.run(["Y"], {"X": x})[0]


def ort_step_runner(model: Any, threads: Optional[int] = None) -> Callable[[np.ndarray], np.ndarray]:
    """One streaming step in onnxruntime: a one-node GRU graph with the state as input and output."""
    session = _peers.ort_session(onnx_model(model, with_state=True), threads)
    carried: Dict[str, np.ndarray] = {}

    def step(x_t: np.ndarray) -> np.ndarray:
        if "h" not in carried:
            carried["h"] = np.zeros((1, x_t.shape[0], model.hidden_size), model.dtype)
        _, carried["h"] = session.run(None, {"X": x_t[None], "h": carried["h"]})
        h: np.ndarray = carried["h"][0]
        return h

    return step


def openvino_runner(model: Any, threads: Optional[int] = None) -> Callable[[np.ndarray], np.ndarray]:
    """OpenVINO (f32) on a time-major x (T, B, I)."""
    request = _peers.openvino_compiled(onnx_model(model), threads, "f32").create_infer_request()
    return lambda x: request.infer({"X": x})[0]


def openvino_step_runner(model: Any, threads: Optional[int] = None) -> Callable[[np.ndarray], np.ndarray]:
    """One streaming step in OpenVINO (f32): the one-node GRU graph with the state as input and output."""
    request = _peers.openvino_compiled(onnx_model(model, with_state=True), threads, "f32").create_infer_request()
    carried: Dict[str, np.ndarray] = {}

    def step(x_t: np.ndarray) -> np.ndarray:
        if "h" not in carried:
            carried["h"] = np.zeros((1, x_t.shape[0], model.hidden_size), model.dtype)
        result = request.infer({"X": x_t[None], "h": carried["h"]})
        carried["h"] = result[1]
        h: np.ndarray = carried["h"][0]
        return h

    return step
