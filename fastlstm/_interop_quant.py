"""Loading onnxruntime's int8 LSTMs: com.microsoft DynamicQuantizeLSTM nodes, as
``onnxruntime.quantization.quantize_dynamic`` writes them, into int8 models (fastlstm._quant's format).

The node's inputs: X, W (D, I, 4H) and R (D, H, 4H) int8 (transposed against the LSTM op's W and R), B, then
sequence_lens, initial_h, initial_c, P as for the LSTM op, then W_scale, W_zero_point, R_scale, R_zero_point:
per tensor (D,) or per output channel (D, 4H). Gate order i, o, f, c as in ONNX. The int8 values and scales
are kept as they are (zero points must be 0: symmetric weights), so the model computes with exactly
onnxruntime's weights; x and h are quantized at run time by fastlstm's rules (per batch row), not
onnxruntime's (per call). Nodes that feed one another (a stacked export, quantized) load as one stacked model,
found and checked as _interop stacks LSTM nodes.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Type, TypeVar

import numpy as np

if TYPE_CHECKING:
    from ._base import LSTMBase

_Model = TypeVar("_Model", bound="LSTMBase")

OP_TYPE = "DynamicQuantizeLSTM"
# ONNX orders the gate blocks i, o, f, c; ours (torch's) are i, f, g(=c), o; peepholes i, o, f -> i, f, o
_GATES = (0, 2, 3, 1)
_PEEPHOLES = (0, 2, 1)


def load_quantized(cls: Type[_Model], model: Any, node: Any) -> Tuple[Any, Optional[_Model]]:
    """(the ModelProto, the int8 model) when ``node`` selects a DynamicQuantizeLSTM node: a NodeProto of that
    type, the name of one (in any graph of the model), or None / an index when the main graph has no LSTM node
    and such nodes instead (or, with none in the main graph either, when only its subgraphs have such nodes and
    no LSTM node: what quantize_dynamic's EnableSubgraph makes of an LSTM inside an If branch); (the ModelProto,
    None) otherwise (the caller then loads an LSTM node). ``model`` is a ModelProto or a path."""
    import onnx

    from . import _interop

    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(os.fspath(model))
    if not isinstance(model, onnx.ModelProto):
        return model, None
    found = _interop._find_lstm_nodes(model.graph, OP_TYPE)
    if not found:
        return model, None
    lstm = _interop._find_lstm_nodes(model.graph)
    in_main = [f for f in found if f.scope.parent is None]
    # the nodes None and an index choose among: the main graph's, else its subgraphs' when no LSTM node competes
    candidates = in_main if in_main else ([] if lstm else found)
    has_lstm = any(f.scope.parent is None for f in lstm) or not candidates
    listing = ", ".join(f.describe(k) for k, f in enumerate(candidates or found))
    chosen = None
    if hasattr(node, "op_type"):
        if node.op_type == OP_TYPE:
            main = _interop._Scope(model.graph, None, "the main graph")   # (a node of another model: its names)
            chosen = next((f for f in found if f.node == node), _interop._Found(node, main))
    elif isinstance(node, str):
        chosen = next((f for f in found if f.node.name == node), None)
    elif not has_lstm and node is None:
        if len(candidates) != 1:
            return model, _stacked(cls, candidates, listing)
        chosen = candidates[0]
    elif not has_lstm and isinstance(node, (int, np.integer)) and not isinstance(node, bool):
        if not -len(candidates) <= node < len(candidates):
            raise ValueError(f"from_onnx: node index {node} out of range; {OP_TYPE} nodes: {listing}")
        chosen = candidates[node]
    if chosen is None:
        return model, None
    return model, _build(cls, [_read_node(chosen)])


def _stacked(cls: Type[_Model], found: List[Any], listing: str) -> _Model:
    """The stacked int8 model of DynamicQuantizeLSTM nodes (of one graph) when they feed one another (what
    quantize_dynamic makes of a stacked export), as _interop.from_onnx stacks LSTM nodes; else ValueError."""
    from . import _interop

    order, links, why = _interop._stack_order(found)
    if order is not None:
        layers = [_read_node(found[k]) for k in order]
        why = _interop._stack_problem(layers, [links[k] for k in order[1:]], *_interop._head_sizes(found[order[0]], 0))
        if not why:
            return _build(cls, layers)
        why = "they feed one another but do not make one stacked LSTM: " + why
    where = "the main graph has" if found[0].scope.parent is None else "the model's subgraphs have"
    raise ValueError(
        f"from_onnx: {where} {len(found)} {OP_TYPE} nodes, which do not load as one model ({why}). "
        f"Pass node= (a name or an index) to load one of: {listing}"
    )


def _constants(scope: Any) -> Callable[[str], Optional[np.ndarray]]:
    """name -> value of the initializers and Constant outputs (and Identity of those) that a node of the scope's
    graph sees: its own graph's, then those of the graphs around it (an _interop._Scope); None for anything else.
    The float loader's folder, evaluating Identity only."""
    from . import _interop

    folder = _interop._Folder(("Identity",))

    def resolve(name: str) -> Optional[np.ndarray]:
        try:
            return folder.value(scope, name)
        except _interop._NotConstant:
            return None

    return resolve


class _QuantNode(NamedTuple):
    """One DynamicQuantizeLSTM node: its configuration, and its parameters as layer 0 of an int8 model
    (fastlstm._quant's stored arrays: int8 matrices with their row scales, float32 biases and peepholes)."""

    name: str
    direction: str
    hidden_size: int
    input_size: int
    clip: Optional[float]
    input_forget: bool
    arrays: Dict[str, np.ndarray]
    layout: int = 0  # the op has no layout attribute: Y is (T, D, B, H)

    @property
    def num_directions(self) -> int:
        return 2 if self.direction == "bidirectional" else 1

    @property
    def weight_dtype(self) -> np.dtype:
        return np.dtype(np.int8)


def _build(cls: Type[_Model], layers: List[_QuantNode]) -> _Model:
    """The int8 model of one node, or of stacked nodes (checked by _interop._stack_problem); a layer without the
    biases or peepholes another layer has gets zeros there."""
    first = layers[0]
    D, H = first.num_directions, first.hidden_size
    bias = any(any(k.startswith("bias_") for k in layer.arrays) for layer in layers)
    peepholes = any(any(k.startswith("weight_ph_") for k in layer.arrays) for layer in layers)
    model = cls(first.input_size, H, len(layers), bias=bias, dtype=np.float32, peepholes=peepholes,
                clip=first.clip, input_forget=first.input_forget, direction=first.direction, weights="int8")
    arrays: Dict[str, np.ndarray] = {}
    for k, layer in enumerate(layers):
        for d, sfx in enumerate(["", "_reverse"][:D]):
            if bias:
                for name in ("bias_ih", "bias_hh"):
                    arrays[f"{name}_l{k}{sfx}"] = np.zeros(4 * H, np.float32)
            if peepholes:
                arrays[f"weight_ph_l{k}{sfx}"] = np.zeros((3, H), np.float32)
        arrays.update({name.replace("_l0", f"_l{k}", 1): a for name, a in layer.arrays.items()})
    model._load_stored_arrays(arrays)
    return model


def _read_node(found: Any) -> _QuantNode:
    """One DynamicQuantizeLSTM node (an _interop._Found: the node and its graph), checked."""
    from onnx import helper

    node = found.node

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"from_onnx: unknown direction {direction!r}")
    D = 2 if direction == "bidirectional" else 1
    activations = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
    if activations and activations != ["Sigmoid", "Tanh", "Tanh"] * D:
        raise ValueError(f"from_onnx: unsupported activations {activations} of {OP_TYPE} node {node.name!r}")
    if attrs.get("activation_alpha") or attrs.get("activation_beta"):
        raise ValueError("from_onnx: activation_alpha / activation_beta are not supported")
    resolve = _constants(found.scope)
    inputs = list(node.input) + [""] * (12 - len(node.input))

    def value(position: int, label: str) -> Optional[np.ndarray]:
        name = inputs[position]
        if not name:
            return None
        v = resolve(name)
        if v is None:
            raise ValueError(
                f"from_onnx: input {label} ({name!r}) of {OP_TYPE} node {node.name!r} is computed in the graph; "
                "only initializers, Constant nodes or Identity of those can be loaded"
            )
        return np.asarray(v)

    W, R, B, P = value(1, "W"), value(2, "R"), value(3, "B"), value(7, "P")
    scales = [value(8, "W_scale"), value(9, "W_zero_point"), value(10, "R_scale"), value(11, "R_zero_point")]
    if W is None or R is None or scales[0] is None or scales[2] is None:
        raise ValueError(f"from_onnx: {OP_TYPE} node {node.name!r} lacks W, R or their scales")
    if W.dtype != np.int8 or R.dtype != np.int8:
        raise ValueError(f"from_onnx: {OP_TYPE} weights must be int8 (QInt8), got {W.dtype} and {R.dtype}")
    if W.ndim != 3 or R.ndim != 3 or W.shape[0] != D or R.shape[0] != D:
        raise ValueError(f"from_onnx: W {W.shape} and R {R.shape} must be (D={D}, I, 4H) and (D, H, 4H)")
    H = int(attrs["hidden_size"]) if "hidden_size" in attrs else R.shape[1]
    if R.shape[1:] != (H, 4 * H) or W.shape[2] != 4 * H:
        raise ValueError(f"from_onnx: hidden_size={H} does not match W {W.shape} and R {R.shape}")
    for zp in (scales[1], scales[3]):
        if zp is not None and np.any(zp != 0):
            raise ValueError(f"from_onnx: {OP_TYPE} node {node.name!r} has nonzero weight zero points "
                             "(fastlstm's int8 weights are symmetric)")
    if B is not None and B.shape != (D, 8 * H):
        raise ValueError(f"from_onnx: B has shape {B.shape}, expected ({D}, {8 * H})")
    if P is not None and P.shape != (D, 3 * H):
        raise ValueError(f"from_onnx: P has shape {P.shape}, expected ({D}, {3 * H})")
    clip = attrs.get("clip")

    def gates(a: np.ndarray) -> np.ndarray:  # (4H, ...) in ONNX's gate order -> ours
        return np.concatenate([a[k * H : (k + 1) * H] for k in _GATES], axis=0)

    def row_scales(scale: np.ndarray, d: int) -> np.ndarray:
        s = np.asarray(scale, np.float32)
        if s.shape not in ((D,), (D, 4 * H)):
            raise ValueError(f"from_onnx: weight scales must be ({D},) or ({D}, {4 * H}), got {s.shape}")
        return gates(np.broadcast_to(s[d].reshape(-1), (4 * H,)).copy())

    arrays: Dict[str, np.ndarray] = {}
    for d, sfx in enumerate(["", "_reverse"][:D]):
        arrays[f"weight_ih_l0{sfx}"] = np.ascontiguousarray(gates(W[d].T))
        arrays[f"weight_ih_l0{sfx}.scale"] = row_scales(scales[0], d)
        arrays[f"weight_hh_l0{sfx}"] = np.ascontiguousarray(gates(R[d].T))
        arrays[f"weight_hh_l0{sfx}.scale"] = row_scales(scales[2], d)
        if B is not None:
            arrays[f"bias_ih_l0{sfx}"] = gates(B[d, : 4 * H].astype(np.float32))
            arrays[f"bias_hh_l0{sfx}"] = gates(B[d, 4 * H :].astype(np.float32))
        if P is not None:
            arrays[f"weight_ph_l0{sfx}"] = P[d].reshape(3, H)[list(_PEEPHOLES)].astype(np.float32)
    return _QuantNode(node.name, direction, H, int(W.shape[1]), None if clip is None else float(clip),
                      bool(attrs.get("input_forget", 0)), arrays)
