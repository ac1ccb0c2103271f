"""Loading trained LSTMs from Keras 3 and ONNX, and the portable fastlstm file format.

Each framework is imported only inside the function that needs it. The file format is a NumPy .npz archive
(a zip of .npy arrays) read with allow_pickle=False, so a file can never run code when loaded.
"""
from __future__ import annotations

import json
import os
import zipfile
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

FORMAT_NAME = "fastlstm"
FORMAT_VERSION = 1

# ONNX orders the gate blocks i, o, f, c; ours (torch's) are i, f, g(=c), o.
ONNX_TO_TORCH_GATES = (0, 2, 3, 1)
# ONNX peepholes P are i, o, f; ours are i, f, o.
ONNX_TO_OURS_PEEPHOLES = (0, 2, 1)
_ONNX_DEFAULT_ACTIVATIONS = ("Sigmoid", "Tanh", "Tanh")


def _reorder_blocks(a: np.ndarray, order: Sequence[int], n: int) -> np.ndarray:
    """Reorder consecutive blocks of n rows (axis 0) of a."""
    return np.concatenate([a[k * n : (k + 1) * n] for k in order], axis=0)


# ---- Keras -------------------------------------------------------------------------------------


def from_keras(cls, layer_or_weights: Any):
    """Build from a Keras 3 ``LSTM`` layer or its ``get_weights()`` list.

    Keras stores kernel (I, 4H), recurrent_kernel (H, 4H) and bias (4H,) (absent with use_bias=False), gates
    in the order i, f, c, o (torch's order). The bias already holds unit_forget_bias's ones. The result is
    batch_first=True, like Keras. A layer must use activation tanh and recurrent_activation sigmoid, and
    not go_backwards (its outputs come back reversed, which no torch-style LSTM returns): ValueError.
    """
    if isinstance(layer_or_weights, (list, tuple)):
        weights = list(layer_or_weights)
        dtype = None
    else:
        layer = layer_or_weights
        if not hasattr(layer, "get_weights") or not hasattr(layer, "recurrent_activation"):
            raise TypeError(
                f"from_keras expects a keras.layers.LSTM or its get_weights() list, got {type(layer).__name__}"
            )
        bad = []
        for attr, expected in (("activation", "tanh"), ("recurrent_activation", "sigmoid")):
            name = getattr(getattr(layer, attr), "__name__", str(getattr(layer, attr)))
            if name != expected:
                bad.append(f"{attr}={name!r} (expected {expected!r})")
        if bad:
            raise ValueError("from_keras: unsupported activations: " + ", ".join(bad))
        if getattr(layer, "go_backwards", False):
            raise ValueError("from_keras: go_backwards=True is not supported (its output sequence is reversed)")
        weights = layer.get_weights()
        if not weights:
            raise ValueError("from_keras: the layer has no weights yet (build it or call it once first)")
        dtype = np.asarray(weights[0]).dtype
    if len(weights) not in (2, 3):
        raise ValueError(
            f"from_keras: expected [kernel, recurrent_kernel(, bias)], got a list of {len(weights)} arrays"
        )
    kernel, recurrent = (np.asarray(w) for w in weights[:2])
    if kernel.ndim != 2 or recurrent.ndim != 2 or recurrent.shape[1] != 4 * recurrent.shape[0]:
        raise ValueError(
            "from_keras: expected kernel (I, 4H) and recurrent_kernel (H, 4H), got "
            f"{kernel.shape} and {recurrent.shape}"
        )
    H = recurrent.shape[0]
    if kernel.shape[1] != 4 * H:
        raise ValueError(f"from_keras: kernel has shape {kernel.shape}, expected (I, {4 * H})")
    has_bias = len(weights) == 3
    if has_bias and np.asarray(weights[2]).shape != (4 * H,):
        raise ValueError(f"from_keras: bias has shape {np.asarray(weights[2]).shape}, expected ({4 * H},)")
    dtype = np.float64 if (dtype or kernel.dtype) == np.float64 else np.float32
    model = cls(kernel.shape[0], H, bias=has_bias, batch_first=True, dtype=dtype)
    state = {"weight_ih_l0": kernel.T, "weight_hh_l0": recurrent.T}
    if has_bias:
        state["bias_ih_l0"] = np.asarray(weights[2])
        state["bias_hh_l0"] = np.zeros(4 * H)
    model.load_state_dict(state)
    return model


# ---- ONNX --------------------------------------------------------------------------------------


def _constant_value(node) -> np.ndarray:
    from onnx import helper, numpy_helper

    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
            return np.asarray(helper.get_attribute_value(attr))
    raise ValueError(f"from_onnx: Constant node {node.name!r} has no tensor value")


def _static_values(graph) -> Dict[str, Any]:
    """name -> how to get its value: initializers, Constant outputs, and Identity of those."""
    from onnx import numpy_helper

    values: Dict[str, Any] = {init.name: (lambda init=init: numpy_helper.to_array(init)) for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}

    def resolve(name: str, seen=()):
        if name in values:
            return values[name]()
        node = producers.get(name)
        if node is None or name in seen:
            return None
        if node.op_type == "Constant":
            return _constant_value(node)
        if node.op_type == "Identity":
            return resolve(node.input[0], seen + (name,))
        return None

    return resolve


def _select_node(graph, node):
    lstm_nodes = [n for n in graph.node if n.op_type == "LSTM"]
    listing = ", ".join(f"{k}: {n.name or '(unnamed)'}" for k, n in enumerate(lstm_nodes)) or "none"
    if node is None:
        if len(lstm_nodes) != 1:
            raise ValueError(
                f"from_onnx: the main graph has {len(lstm_nodes)} LSTM nodes ({listing}); pass node= to choose"
            )
        return lstm_nodes[0]
    if isinstance(node, bool):
        raise TypeError("from_onnx: node must be None, a name, an index or a NodeProto")
    if isinstance(node, (int, np.integer)):
        if not -len(lstm_nodes) <= node < len(lstm_nodes):
            raise ValueError(f"from_onnx: node index {node} out of range; LSTM nodes: {listing}")
        return lstm_nodes[node]
    if isinstance(node, str):
        matches = [n for n in lstm_nodes if n.name == node]
        if not matches:
            raise ValueError(f"from_onnx: no LSTM node named {node!r}; LSTM nodes: {listing}")
        return matches[0]
    if hasattr(node, "op_type"):
        if node.op_type != "LSTM":
            raise ValueError(f"from_onnx: node {node.name!r} is a {node.op_type}, not an LSTM")
        return node
    raise TypeError(f"from_onnx: node must be None, a name, an index or a NodeProto, got {type(node).__name__}")


def from_onnx(cls, model: Any, node: Any = None):
    """Build from one LSTM node of an ONNX model (a ModelProto or a path); see fastlstm.LSTM.from_onnx."""
    import onnx
    from onnx import helper

    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(os.fspath(model))
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"from_onnx expects an onnx.ModelProto or a path, got {type(model).__name__}")
    graph = model.graph
    lstm = _select_node(graph, node)
    attrs = {a.name: helper.get_attribute_value(a) for a in lstm.attribute}
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"from_onnx: unknown direction {direction!r}")
    D = 2 if direction == "bidirectional" else 1
    activations = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
    if activations and activations != list(_ONNX_DEFAULT_ACTIVATIONS) * D:
        raise ValueError(
            f"from_onnx: unsupported activations {activations}; only the defaults "
            f"{list(_ONNX_DEFAULT_ACTIVATIONS)} per direction are supported"
        )
    if attrs.get("activation_alpha") or attrs.get("activation_beta"):
        raise ValueError("from_onnx: activation_alpha / activation_beta are not supported")
    layout = int(attrs.get("layout", 0))
    if layout not in (0, 1):
        raise ValueError(f"from_onnx: layout must be 0 or 1, got {layout}")
    clip = attrs.get("clip")
    input_forget = bool(attrs.get("input_forget", 0))

    resolve = _static_values(graph)
    inputs = list(lstm.input) + [""] * (8 - len(lstm.input))

    def weight(position: int, label: str) -> Optional[np.ndarray]:
        name = inputs[position]
        if not name:
            return None
        value = resolve(name)
        if value is None:
            raise ValueError(
                f"from_onnx: input {label} ({name!r}) of node {lstm.name!r} is computed in the graph; "
                "only initializers, Constant nodes or Identity of those can be loaded"
            )
        return np.asarray(value)

    W, R, B, P = weight(1, "W"), weight(2, "R"), weight(3, "B"), weight(7, "P")
    if W is None or R is None:
        raise ValueError("from_onnx: the LSTM node has no W or R input")
    if W.ndim != 3 or R.ndim != 3 or W.shape[0] != D or R.shape[0] != D:
        raise ValueError(f"from_onnx: W {W.shape} and R {R.shape} must be (D={D}, 4H, I) and (D, 4H, H)")
    H = int(attrs.get("hidden_size", R.shape[2]))
    if R.shape[1:] != (4 * H, H) or W.shape[1] != 4 * H:
        raise ValueError(f"from_onnx: hidden_size={H} does not match W {W.shape} and R {R.shape}")
    if B is not None and B.shape != (D, 8 * H):
        raise ValueError(f"from_onnx: B has shape {B.shape}, expected ({D}, {8 * H})")
    if P is not None and P.shape != (D, 3 * H):
        raise ValueError(f"from_onnx: P has shape {P.shape}, expected ({D}, {3 * H})")
    if W.dtype not in (np.float32, np.float64):
        raise ValueError(f"from_onnx: weights must be float32 or float64, got {W.dtype}")
    result = cls(
        W.shape[2],
        H,
        bias=B is not None,
        batch_first=layout == 1,
        dtype=W.dtype,
        peepholes=P is not None,
        clip=None if clip is None else float(clip),
        input_forget=input_forget,
        direction=direction,
    )
    state = {}
    for d, sfx in enumerate(["", "_reverse"][:D]):
        state[f"weight_ih_l0{sfx}"] = _reorder_blocks(W[d], ONNX_TO_TORCH_GATES, H)
        state[f"weight_hh_l0{sfx}"] = _reorder_blocks(R[d], ONNX_TO_TORCH_GATES, H)
        if B is not None:
            state[f"bias_ih_l0{sfx}"] = _reorder_blocks(B[d, : 4 * H], ONNX_TO_TORCH_GATES, H)
            state[f"bias_hh_l0{sfx}"] = _reorder_blocks(B[d, 4 * H :], ONNX_TO_TORCH_GATES, H)
        if P is not None:
            state[f"weight_ph_l0{sfx}"] = P[d].reshape(3, H)[list(ONNX_TO_OURS_PEEPHOLES)]
    result.load_state_dict(state)
    return result


# ---- the fastlstm file ----------------------------------------------------------------------------


def save(model: Any, path: Union[str, os.PathLike]) -> None:
    """Write config and weights to ``path`` exactly (no suffix added): an .npz archive without pickles."""
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "cell": model._cell.name, "config": model._config()}
    arrays = {"__header__": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
    arrays.update(model.state_dict())
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def load(cls, path: Union[str, os.PathLike]):
    """Read a file written by ``save`` into cls, or into cls[cell] when cls maps the header's cell kind ("lstm"
    when absent) to a class. Never unpickles: a file holding a pickle is rejected (ValueError)."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{os.fspath(path)!r} is not a fastlstm file: {exc}") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{os.fspath(path)!r} is not a fastlstm file")
    with archive:
        try:
            header = json.loads(bytes(archive["__header__"]).decode())
            arrays = {name: archive[name] for name in archive.files if name != "__header__"}
        except (KeyError, ValueError, UnicodeDecodeError, EOFError, zipfile.BadZipFile, OSError) as exc:
            raise ValueError(f"{os.fspath(path)!r} is not a readable fastlstm file: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise ValueError(f"{os.fspath(path)!r} is not a fastlstm file")
    if header.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{os.fspath(path)!r} has format version {header.get('version')}; this fastlstm reads {FORMAT_VERSION}"
        )
    config: Dict[str, Any] = dict(header["config"])
    if isinstance(cls, dict):
        cell = header.get("cell", "lstm")
        if cell not in cls:
            raise ValueError(f"{os.fspath(path)!r} holds a {cell!r} model; this fastlstm reads {sorted(cls)}")
        cls = cls[cell]
    model = cls(**config)
    model.load_state_dict(arrays)
    return model
