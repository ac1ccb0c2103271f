"""Loading trained LSTMs from PyTorch, Keras 3 and ONNX, and the portable fastlstm file format.

Each framework is imported only inside the function that needs it. ONNX weights are read without
onnxruntime: initializers, Constant nodes and the constant-only chains exporters put in front of an LSTM
node (Unsqueeze, Slice, Concat, ...) are evaluated here with NumPy. The file format is a NumPy .npz archive
(a zip of .npy arrays) read with allow_pickle=False, so a file can never run code when loaded.
"""
from __future__ import annotations

import json
import os
import zipfile
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Type, TypeVar, Union

import numpy as np

if TYPE_CHECKING:
    from ._base import LSTMBase
    from ._interop_quant import _QuantNode

_Model = TypeVar("_Model", bound="LSTMBase")
_Path = Union[str, "os.PathLike[str]"]

FORMAT_NAME = "fastlstm"
FORMAT_VERSION = 1

# ONNX orders the gate blocks i, o, f, c; ours (torch's) are i, f, g(=c), o.
ONNX_TO_TORCH_GATES = (0, 2, 3, 1)
# ONNX peepholes P are i, o, f; ours are i, f, o.
ONNX_TO_OURS_PEEPHOLES = (0, 2, 1)
_ONNX_DEFAULT_ACTIVATIONS = ("Sigmoid", "Tanh", "Tanh")
# operators whose output from_onnx computes when all their inputs are constants
_FOLDED_OPS = ("Identity", "Unsqueeze", "Reshape", "Squeeze", "Transpose", "Concat", "Slice", "Cast")
# operators an exporter puts between stacked LSTM nodes, from Y (T, D, B, H) to the next X (T, B, D*H)
_GLUE_OPS = ("Identity", "Transpose", "Reshape", "Squeeze", "Unsqueeze")
# operators the glue's shape computations use (an export with dynamic shapes reshapes to Shape(Y)-derived sizes)
_SHAPE_OPS = ("Shape", "Gather", "Add", "Sub", "Mul")
_ONNX_DOMAINS = ("", "ai.onnx")


def _reorder_blocks(a: np.ndarray, order: Sequence[int], n: int) -> np.ndarray:
    """Reorder consecutive blocks of n rows (axis 0) of a."""
    return np.concatenate([a[k * n : (k + 1) * n] for k in order], axis=0)


# ---- PyTorch -----------------------------------------------------------------------------------


def torch_weights(module: Any) -> Dict[str, np.ndarray]:
    """A torch RNN module's weights by their names in its state_dict, as NumPy arrays, as its forward uses them:
    a pruned or parametrized weight (torch.nn.utils.prune, torch.nn.utils.parametrize) is the one computed from
    its parts, not the parts. Scripted modules: their state_dict."""
    import torch

    with torch.no_grad():
        if isinstance(module, torch.jit.ScriptModule):
            tensors = dict(module.state_dict())
        else:
            names = getattr(module, "_flat_weights_names", None) or ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            tensors = {name: getattr(module, name, None) for name in names}
        return {name: t.detach().cpu().numpy() for name, t in tensors.items() if t is not None}


def from_torch(cls: Type[_Model], module: Any) -> _Model:
    """Build from a ``torch.nn.LSTM`` (same configuration, batch_first, dtype and weights) or a
    ``torch.nn.LSTMCell`` (a one-layer LSTM: the cell stepped over a sequence gives its output), also when
    scripted (TorchScript, as in models loaded with torch.jit.load). float16/bfloat16: ValueError."""
    import torch

    if isinstance(module, torch.nn.LSTM):
        kind = "LSTM"
    elif isinstance(module, torch.nn.LSTMCell):
        kind = "LSTMCell"
    elif isinstance(module, torch.jit.ScriptModule) and getattr(module, "original_name", None) in ("LSTM", "LSTMCell"):
        kind = module.original_name
    else:
        raise TypeError(f"from_torch expects a torch.nn.LSTM or a torch.nn.LSTMCell, got {type(module).__name__}")
    dtype = (module.weight_ih_l0 if kind == "LSTM" else module.weight_ih).dtype
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"from_torch: dtype must be torch.float32 or torch.float64, got {dtype}")
    # the cell's weight_ih, weight_hh, bias_ih, bias_hh are layer 0's
    state = {name + ("_l0" if kind == "LSTMCell" else ""): a for name, a in torch_weights(module).items()}
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    if kind == "LSTM":
        model = cls(
            module.input_size,
            module.hidden_size,
            module.num_layers,
            bias=module.bias,
            batch_first=module.batch_first,
            bidirectional=module.bidirectional,
            proj_size=module.proj_size,
            dtype=np_dtype,
        )
    else:
        model = cls(module.input_size, module.hidden_size, bias=module.bias, dtype=np_dtype)
    model.load_state_dict(state)
    return model


# ---- Keras -------------------------------------------------------------------------------------


def _keras_lstm_weights(layer: Any, role: str) -> List[np.ndarray]:
    """The get_weights() of a Keras LSTM layer, after checking what fastlstm can compute."""
    if not hasattr(layer, "get_weights") or not hasattr(layer, "recurrent_activation"):
        raise TypeError(
            "from_keras expects a keras.layers.LSTM, a Bidirectional(LSTM) or an LSTM's get_weights() list, "
            f"got {role}{type(layer).__name__}"
        )
    if not any(c.__name__ == "LSTM" for c in type(layer).__mro__):
        raise TypeError(f"from_keras expects an LSTM layer, got {role}{type(layer).__name__}")
    bad = []
    for attr, expected in (("activation", "tanh"), ("recurrent_activation", "sigmoid")):
        name = getattr(getattr(layer, attr), "__name__", str(getattr(layer, attr)))
        if name != expected:
            bad.append(f"{attr}={name!r} (expected {expected!r})")
    if bad:
        raise ValueError(f"from_keras: unsupported activations of {role}{type(layer).__name__}: " + ", ".join(bad))
    weights = layer.get_weights()
    if not weights:
        raise ValueError("from_keras: the layer has no weights yet (build it or call it once first)")
    return [np.asarray(w) for w in weights]


def _check_keras_weights(weights: Sequence[Any]) -> Tuple[int, int, bool]:
    """(input size, hidden size, has bias) of one LSTM's [kernel, recurrent_kernel(, bias)]."""
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
    return kernel.shape[0], H, has_bias


def from_keras(cls: Type[_Model], layer_or_weights: Any) -> _Model:
    """Build from a Keras 3 ``LSTM`` layer, a ``Bidirectional(LSTM(...))`` or an LSTM's ``get_weights()`` list.

    Keras stores kernel (I, 4H), recurrent_kernel (H, 4H) and bias (4H,) (absent with use_bias=False), gates
    in the order i, f, c, o (torch's order). The bias already holds unit_forget_bias's ones. The result is
    batch_first=True, like Keras. A layer must use activation tanh and recurrent_activation sigmoid, and
    not go_backwards (its outputs come back reversed, which no torch-style LSTM returns): ValueError.
    ``Bidirectional`` with merge_mode "concat" gives a bidirectional LSTM (its backward layer's weights are
    the ``_reverse`` parameters); other merge modes: ValueError.
    """
    directions: List[List[Any]]
    if isinstance(layer_or_weights, (list, tuple)):
        directions = [list(layer_or_weights)]
    elif hasattr(layer_or_weights, "forward_layer") and hasattr(layer_or_weights, "backward_layer"):
        wrapper = layer_or_weights  # keras.layers.Bidirectional
        merge_mode = getattr(wrapper, "merge_mode", None)
        if merge_mode != "concat":
            raise ValueError(
                f"from_keras: Bidirectional merge_mode={merge_mode!r} is not supported; only 'concat' (the forward "
                "and backward outputs side by side, as in a bidirectional torch LSTM) is"
            )
        forward, backward = wrapper.forward_layer, wrapper.backward_layer
        if getattr(forward, "go_backwards", False) or not getattr(backward, "go_backwards", False):
            raise ValueError(
                "from_keras: a Bidirectional whose forward layer has go_backwards=True is not supported"
            )
        directions = [
            _keras_lstm_weights(forward, "Bidirectional forward_layer "),
            _keras_lstm_weights(backward, "Bidirectional backward_layer "),
        ]
    else:
        layer = layer_or_weights
        directions = [_keras_lstm_weights(layer, "")]
        if getattr(layer, "go_backwards", False):
            raise ValueError("from_keras: go_backwards=True is not supported (its output sequence is reversed)")
    shapes = [_check_keras_weights(weights) for weights in directions]
    if len(set(shapes)) != 1:
        raise ValueError(
            "from_keras: Bidirectional's two layers differ in (input size, units, use_bias): "
            f"{shapes[0]} vs {shapes[1]}"
        )
    I, H, has_bias = shapes[0]
    dtype = np.float64 if np.asarray(directions[0][0]).dtype == np.float64 else np.float32
    model = cls(I, H, bias=has_bias, batch_first=True, bidirectional=len(directions) == 2, dtype=dtype)
    state: Dict[str, Any] = {}
    for weights, sfx in zip(directions, ["", "_reverse"]):
        state[f"weight_ih_l0{sfx}"] = np.asarray(weights[0]).T
        state[f"weight_hh_l0{sfx}"] = np.asarray(weights[1]).T
        if has_bias:
            state[f"bias_ih_l0{sfx}"] = np.asarray(weights[2])
            state[f"bias_hh_l0{sfx}"] = np.zeros(4 * H)
    model.load_state_dict(state)
    return model


# ---- ONNX: where names are defined ----------------------------------------------------------------


class _Scope:
    """One graph of an ONNX model (the main graph or a subgraph) inside the graphs around it.

    A node of a subgraph (an If branch, a Loop or Scan body) may read any name of the graphs around it: a
    name is looked up here first, then outwards.
    """

    def __init__(self, graph: Any, parent: Optional[_Scope], where: str) -> None:
        self.graph = graph
        self.parent = parent
        self.where = where
        self.initializers = {t.name: t for t in graph.initializer}
        self.producers = {out: node for node in graph.node for out in node.output if out}
        self.inputs = {i.name for i in graph.input}

    def lookup(self, name: str) -> Tuple[str, Any, _Scope]:
        """("initializer", TensorProto, scope), ("node", NodeProto, scope), ("input", None, scope) or
        ("missing", None, self): what defines ``name`` and in which graph."""
        scope: Optional[_Scope] = self
        while scope is not None:
            if name in scope.initializers:  # also when listed as a graph input: the initializer is its value
                return "initializer", scope.initializers[name], scope
            if name in scope.producers:
                return "node", scope.producers[name], scope
            if name in scope.inputs:
                return "input", None, scope
            scope = scope.parent
        return "missing", None, self

    def static_shape(self, name: str) -> Optional[List[Optional[int]]]:
        """The dims recorded for tensor ``name`` (None for a symbolic dim), or None if nothing is recorded."""
        scope: Optional[_Scope] = self
        while scope is not None:
            g = scope.graph
            for info in list(g.input) + list(g.value_info) + list(g.output):
                if info.name == name and info.type.tensor_type.HasField("shape"):
                    dims = info.type.tensor_type.shape.dim
                    return [d.dim_value if d.HasField("dim_value") else None for d in dims]
            scope = scope.parent
        return None


class _Found(NamedTuple):
    """An LSTM node and the graph holding it."""

    node: Any
    scope: _Scope

    def describe(self, index: int) -> str:
        where = "the main graph" if self.scope.parent is None else self.scope.where
        return f"{index}: {self.node.name or '(unnamed)'!r} in {where}"


def _find_lstm_nodes(graph: Any, op_type: str = "LSTM") -> List[_Found]:
    """Every LSTM node of the model (or, with op_type "DynamicQuantizeLSTM", every node of com.microsoft's int8
    LSTM): the main graph's first, then each subgraph's, depth first."""
    from onnx import AttributeProto

    found: List[_Found] = []
    domains = _ONNX_DOMAINS if op_type == "LSTM" else ("com.microsoft",)

    def walk(scope: _Scope) -> None:
        found.extend(_Found(n, scope) for n in scope.graph.node if n.op_type == op_type and n.domain in domains)
        for n in scope.graph.node:
            for attr in n.attribute:
                if attr.type == AttributeProto.GRAPH:
                    subgraphs = [(attr.name, attr.g)]
                else:
                    subgraphs = [(f"{attr.name}[{k}]", g) for k, g in enumerate(attr.graphs)]
                for label, sub in subgraphs:
                    where = f"{n.op_type} {n.name or '(unnamed)'!r} {label}"
                    walk(_Scope(sub, scope, where if scope.parent is None else f"{scope.where} > {where}"))

    walk(_Scope(graph, None, "the main graph"))
    return found


# ---- ONNX: constants computed without a runtime ----------------------------------------------------


class _NotConstant(Exception):
    """A tensor's value depends on something other than initializers and Constant nodes."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.via: List[str] = []  # the nodes between the tensor asked for and the reason, nearest last


def _constant_value(node: Any) -> np.ndarray:
    from onnx import helper, numpy_helper

    for attr in node.attribute:
        if attr.name == "value":
            return np.asarray(numpy_helper.to_array(attr.t))
        if attr.name in ("value_float", "value_floats"):
            return np.asarray(helper.get_attribute_value(attr), dtype=np.float32)
        if attr.name in ("value_int", "value_ints"):
            return np.asarray(helper.get_attribute_value(attr), dtype=np.int64)
    raise ValueError(f"from_onnx: Constant node {node.name!r} has no tensor value")


def _ints(value: Optional[np.ndarray]) -> Optional[List[int]]:
    return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]


def _slice(start: int, end: int, step: int, dim: int) -> slice:
    """ONNX Slice's clamping rules for one axis, as a Python slice."""
    if step == 0:
        raise ValueError("Slice step must not be 0")
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return slice(start, end if end >= 0 else None, step)


def _apply(node: Any, args: List[Optional[np.ndarray]]) -> np.ndarray:
    """One node of _FOLDED_OPS or _SHAPE_OPS on NumPy values. Axes come from attributes (older opsets) or
    inputs (newer)."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    op = node.op_type
    x = args[0]
    extra = args[1:] + [None] * 4
    try:
        if x is None:
            raise ValueError("its first input is missing")
        if op == "Identity":
            return x
        if op == "Transpose":
            perm = attrs.get("perm")
            return np.transpose(x, list(perm) if perm else None)
        if op == "Cast":
            return x.astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))
        if op == "Concat":
            return np.concatenate([a for a in args if a is not None], axis=int(attrs["axis"]))
        if op == "Shape":
            return np.array(x.shape, dtype=np.int64)[attrs.get("start", 0) : attrs.get("end")]
        if op in ("Gather", "Add", "Sub", "Mul"):
            other = extra[0]
            if other is None:
                raise ValueError("its second input is missing")
            if op == "Gather":
                return np.take(x, other, axis=int(attrs.get("axis", 0)))
            return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[op](x, other)  # type: ignore[no-any-return]
        if op in ("Unsqueeze", "Squeeze"):
            axes = list(attrs["axes"]) if "axes" in attrs else _ints(extra[0])
            if op == "Squeeze":
                return np.squeeze(x, axis=None if axes is None else tuple(axes))
            if axes is None:
                raise ValueError("Unsqueeze needs axes")
            return np.expand_dims(x, tuple(axes))
        if op == "Reshape":
            shape: List[int] = _ints(extra[0]) or list(attrs["shape"])  # the attribute: opset 1
            if not attrs.get("allowzero", 0):
                shape = [x.shape[k] if d == 0 else d for k, d in enumerate(shape)]
            return np.reshape(x, shape)
        if op == "Slice":
            if "starts" in attrs:  # opset < 10: attributes
                bounds = [attrs["starts"], attrs["ends"], attrs.get("axes"), None]
                starts, ends, slice_axes, steps = (_ints(None if v is None else np.asarray(v)) for v in bounds)
            else:
                starts, ends, slice_axes, steps = (_ints(v) for v in extra[:4])
            if starts is None or ends is None:
                raise ValueError("Slice needs starts and ends")
            index = [slice(None)] * x.ndim
            for axis, start, end, step in zip(
                slice_axes if slice_axes is not None else range(len(starts)),
                starts,
                ends,
                steps if steps is not None else [1] * len(starts),
            ):
                index[axis] = _slice(start, end, step, x.shape[axis])
            return x[tuple(index)]
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise ValueError(f"from_onnx: cannot evaluate {op} node {node.name!r}: {exc}") from exc
    raise ValueError(f"from_onnx: {op} is not one of the operators from_onnx evaluates")


class _Folder:
    """Values of tensors computed from initializers and Constant nodes alone, evaluated with NumPy.

    ``ops`` are the operators it evaluates; ``bound`` gives values to tensors, keyed by (id of the scope
    defining them, name): a probe tensor standing for a runtime value.
    """

    def __init__(
        self, ops: Tuple[str, ...] = _FOLDED_OPS, bound: Optional[Dict[Tuple[int, str], np.ndarray]] = None
    ) -> None:
        self._ops = ops
        self._cache: Dict[Tuple[int, str], np.ndarray] = dict(bound or {})

    def value(self, scope: _Scope, name: str) -> np.ndarray:
        """The value of ``name`` as seen from ``scope``; _NotConstant if it is not a constant."""
        from onnx import numpy_helper

        kind, obj, owner = scope.lookup(name)
        key = (id(owner), name)
        if key in self._cache:
            return self._cache[key]
        if kind == "initializer":
            value = np.asarray(numpy_helper.to_array(obj))
        elif kind == "input":
            raise _NotConstant(f"{name!r} is an input of {owner.where}, known only at run time")
        elif kind == "missing":
            raise _NotConstant(f"{name!r} is not defined by any node, initializer or graph input")
        elif obj.domain in _ONNX_DOMAINS and obj.op_type == "Constant":
            value = _constant_value(obj)
        elif obj.domain in _ONNX_DOMAINS and obj.op_type in self._ops:
            try:
                args = [self.value(owner, i) if i else None for i in obj.input]
            except _NotConstant as exc:
                exc.via.append(f"{obj.op_type} {obj.name or '(unnamed)'!r}")
                raise
            value = _apply(obj, args)
        else:
            raise _NotConstant(
                f"{name!r} is computed by a {obj.op_type} node ({obj.name or 'unnamed'!r}), which from_onnx does "
                "not evaluate"
            )
        self._cache[key] = value
        return value


# ---- ONNX: one LSTM node --------------------------------------------------------------------------


class _OnnxLSTM(NamedTuple):
    """An LSTM node's configuration and weights, in ONNX's layout."""

    name: str
    direction: str
    layout: int
    hidden_size: int
    clip: Optional[float]
    input_forget: bool
    W: np.ndarray  # (D, 4H, I), gates i, o, f, c
    R: np.ndarray  # (D, 4H, H)
    B: Optional[np.ndarray]  # (D, 8H): [Wb, Rb]
    P: Optional[np.ndarray]  # (D, 3H): i, o, f

    @property
    def num_directions(self) -> int:
        return 2 if self.direction == "bidirectional" else 1

    @property
    def input_size(self) -> int:
        return int(self.W.shape[2])

    @property
    def weight_dtype(self) -> np.dtype:
        return self.W.dtype


def _read_lstm(found: _Found, folder: _Folder) -> _OnnxLSTM:
    from onnx import helper

    lstm = found.node
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
    inputs = list(lstm.input) + [""] * (8 - len(lstm.input))

    def weight(position: int, label: str) -> Optional[np.ndarray]:
        name = inputs[position]
        if not name:
            return None
        try:
            return folder.value(found.scope, name)
        except _NotConstant as exc:
            via = f" (through {' <- '.join(reversed(exc.via))})" if exc.via else ""
            raise ValueError(
                f"from_onnx: input {label} ({name!r}) of LSTM node {lstm.name!r} is not a constant: {exc.reason}{via}; "
                "weights must be initializers, Constant outputs, or chains of "
                f"{', '.join(_FOLDED_OPS)} on those"
            ) from None

    W, R, B, P = weight(1, "W"), weight(2, "R"), weight(3, "B"), weight(7, "P")
    if W is None or R is None:
        raise ValueError(f"from_onnx: the LSTM node {lstm.name!r} has no W or R input")
    if W.ndim != 3 or R.ndim != 3 or W.shape[0] != D or R.shape[0] != D:
        raise ValueError(f"from_onnx: W {W.shape} and R {R.shape} must be (D={D}, 4H, I) and (D, 4H, H)")
    H = int(attrs.get("hidden_size") or R.shape[2])
    if R.shape[1:] != (4 * H, H) or W.shape[1] != 4 * H:
        raise ValueError(f"from_onnx: hidden_size={H} does not match W {W.shape} and R {R.shape}")
    if B is not None and B.shape != (D, 8 * H):
        raise ValueError(f"from_onnx: B has shape {B.shape}, expected ({D}, {8 * H})")
    if P is not None and P.shape != (D, 3 * H):
        raise ValueError(f"from_onnx: P has shape {P.shape}, expected ({D}, {3 * H})")
    if W.dtype not in (np.float32, np.float64):
        raise ValueError(f"from_onnx: weights must be float32 or float64, got {W.dtype}")
    return _OnnxLSTM(
        lstm.name, direction, layout, H, None if clip is None else float(clip), bool(attrs.get("input_forget", 0)),
        W, R, B, P,
    )


# ---- ONNX: LSTM nodes stacked by an exporter --------------------------------------------------------


# what stacking reads of a node: an LSTM node's, or a com.microsoft DynamicQuantizeLSTM node's (_interop_quant)
_StackedNode = Union["_OnnxLSTM", "_QuantNode"]


def _head_sizes(head: _Found, layout: int) -> Tuple[int, int]:
    """(T, B) of the first stacked node's input as the model records them, else 7 and 3 (for _check_link)."""
    dims = head.scope.static_shape(head.node.input[0])
    t_axis, b_axis = (0, 1) if layout == 0 else (1, 0)
    known = dims if dims and len(dims) == 3 else [None, None, None]
    return known[t_axis] or 7, known[b_axis] or 3


class _Link(NamedTuple):
    """How the Y of one LSTM node reaches the X of the next (``found``) in a stacked export."""

    y_name: str
    found: _Found
    steps: str  # the glue nodes, for messages


def _glue_from(found: _Found) -> Optional[_Link]:
    """Follow found's X back through _GLUE_OPS to the Y output of an LSTM node of the same op type (LSTM, or
    com.microsoft DynamicQuantizeLSTM) in the same graph, or None when X comes from anything else."""
    steps: List[str] = []
    name = found.node.input[0] if found.node.input else ""
    while name:
        kind, node, owner = found.scope.lookup(name)
        if kind != "node" or owner is not found.scope:
            return None
        if node.op_type == found.node.op_type and node.domain == found.node.domain:  # an LSTM node of its kind
            return _Link(name, found, " -> ".join(reversed(steps)) or "nothing") if node.output[0] == name else None
        if node.domain not in _ONNX_DOMAINS or node.op_type not in _GLUE_OPS:
            return None
        steps.append(f"{node.op_type} {node.name!r}")
        name = node.input[0] if node.input else ""
    return None


def _stack_order(candidates: List[_Found]) -> Tuple[Optional[List[int]], Dict[int, _Link], str]:
    """The order in which LSTM nodes of one graph feed one another (each one's Y, through glue, is the
    next one's X), with the link into each but the first; or (None, {}, why not)."""
    if len({id(f.scope) for f in candidates}) != 1:
        return None, {}, "they are in different graphs"
    by_output = {f.node.output[0]: k for k, f in enumerate(candidates) if f.node.output and f.node.output[0]}
    links: Dict[int, _Link] = {}  # node k -> how the node feeding it reaches it
    for k, f in enumerate(candidates):
        link = _glue_from(f)
        if link is not None and link.y_name in by_output:
            links[k] = link
    heads = [k for k in range(len(candidates)) if k not in links]
    if len(heads) != 1:
        names = ", ".join(repr(candidates[k].node.name) for k in heads)
        return None, {}, f"{len(heads)} of them ({names}) take their input from something other than an LSTM's Y"
    following: Dict[int, int] = {}
    for k, link in links.items():
        source = by_output[link.y_name]
        if source in following:
            return None, {}, f"the output Y of {candidates[source].node.name!r} feeds two LSTM nodes"
        following[source] = k
    order = heads
    while order[-1] in following:
        order.append(following[order[-1]])
    return order, links, ""


def _check_link(prev: _StackedNode, link: _Link, T: int, B: int) -> str:
    """Why the nodes between prev and the next LSTM do not turn prev's Y into that LSTM's input (T, B, D*H),
    or "" when they do.

    Checked by evaluating the next LSTM's X from a tensor of distinct numbers standing for Y, for T and B as
    recorded in the model (exporters with static shapes write Reshapes to those) or else 7 and 3.
    """
    D, H = prev.num_directions, prev.hidden_size
    probe: np.ndarray = np.arange(T * D * B * H, dtype=np.float64)
    if prev.layout == 0:  # Y (T, D, B, H) -> (T, B, D*H)
        probe = probe.reshape(T, D, B, H)
        want = probe.transpose(0, 2, 1, 3).reshape(T, B, D * H)
    else:  # Y (B, T, D, H) -> (B, T, D*H)
        probe = probe.reshape(B, T, D, H)
        want = probe.reshape(B, T, D * H)
    scope = link.found.scope
    evaluator = _Folder(_FOLDED_OPS + _SHAPE_OPS, {(id(scope), link.y_name): probe})
    try:
        value = evaluator.value(scope, link.found.node.input[0])
    except _NotConstant as exc:
        return f"the nodes between {prev.name!r} and the next LSTM ({link.steps}) cannot be evaluated: {exc.reason}"
    except ValueError as exc:
        return f"the nodes between {prev.name!r} and the next LSTM ({link.steps}) cannot be evaluated: {exc}"
    if value.shape != want.shape or not np.array_equal(value, want):
        return (
            f"the nodes between {prev.name!r} and the next LSTM ({link.steps}) do not pass its output on unchanged "
            f"(Y {'(T, D, B, H)' if prev.layout == 0 else '(B, T, D, H)'} to its sequence of D*H features)"
        )
    return ""


def _stack_problem(layers: Sequence[_StackedNode], links: List[_Link], T: int, B: int) -> str:
    """Why LSTM nodes feeding one another do not make one stacked LSTM, or "" when they do."""
    first = layers[0]
    for layer in layers[1:]:
        for attr in ("direction", "layout", "hidden_size", "clip", "input_forget"):
            mine, theirs = getattr(layer, attr), getattr(first, attr)
            if mine != theirs:
                return f"{attr} differs: {theirs!r} in {first.name!r}, {mine!r} in {layer.name!r}"
        if layer.weight_dtype != first.weight_dtype:
            return f"their weights' dtypes differ: {first.weight_dtype} and {layer.weight_dtype}"
        expected = first.num_directions * first.hidden_size
        if layer.input_size != expected:
            return f"{layer.name!r} takes {layer.input_size} input features, the layer before it gives {expected}"
    for prev, link in zip(layers, links):
        why = _check_link(prev, link, T, B)
        if why:
            return why
    return ""


# ---- ONNX: choosing the nodes and building the model -------------------------------------------------


def _choose_node(found: List[_Found], node: Any, main: _Scope, listing: str) -> _Found:
    if isinstance(node, (bool, np.bool_)):
        raise TypeError("from_onnx: node must be None, a name, an index or a NodeProto, got bool")
    if isinstance(node, (int, np.integer)):
        if not -len(found) <= node < len(found):
            raise ValueError(f"from_onnx: node index {node} out of range; LSTM nodes: {listing}")
        return found[int(node)]
    if isinstance(node, str):
        matches = [k for k, f in enumerate(found) if f.node.name == node]
        if not matches:
            raise ValueError(f"from_onnx: no LSTM node named {node!r}; LSTM nodes: {listing}")
        if len(matches) > 1:
            raise ValueError(
                f"from_onnx: {len(matches)} LSTM nodes are named {node!r} "
                f"({'; '.join(found[k].describe(k) for k in matches)}); pass node= as an index"
            )
        return found[matches[0]]
    if hasattr(node, "op_type") and hasattr(node, "input"):
        if node.op_type != "LSTM":
            raise ValueError(f"from_onnx: node {node.name!r} is a {node.op_type}, not an LSTM")
        # a node of this model is read in its own graph; any other NodeProto reads the main graph's names
        return next((f for f in found if f.node == node), _Found(node, main))
    raise TypeError(f"from_onnx: node must be None, a name, an index or a NodeProto, got {type(node).__name__}")


def from_onnx(cls: Type[_Model], model: Any, node: Any = None) -> _Model:
    """Build from an LSTM node of an ONNX model (a ModelProto or a path), or from a chain of LSTM nodes that
    feed one another (a stacked export); see fastlstm.LSTM.from_onnx."""
    import onnx

    from . import _interop_quant

    model, quantized = _interop_quant.load_quantized(cls, model, node)  # onnxruntime's int8 DynamicQuantizeLSTM
    if quantized is not None:
        return quantized
    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(os.fspath(model))
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"from_onnx expects an onnx.ModelProto or a path, got {type(model).__name__}")
    found = _find_lstm_nodes(model.graph)
    main = _Scope(model.graph, None, "the main graph")
    listing = "; ".join(f.describe(k) for k, f in enumerate(found)) or "none"
    int8_nodes = _find_lstm_nodes(model.graph, _interop_quant.OP_TYPE)   # (selectable by name)
    if int8_nodes:
        listing += f"; {_interop_quant.OP_TYPE} nodes: " + ", ".join(repr(f.node.name) for f in int8_nodes)
    folder = _Folder()
    if node is not None:
        return _build(cls, [_read_lstm(_choose_node(found, node, main, listing), folder)])
    in_main = [f for f in found if f.scope.parent is None]
    candidates = in_main or found
    if len(candidates) == 1:
        return _build(cls, [_read_lstm(candidates[0], folder)])
    if not candidates:
        raise ValueError("from_onnx: the model has 0 LSTM nodes (none in the main graph or any subgraph)")
    where = "the main graph has" if in_main else "the main graph has none and its subgraphs have"
    order, links, why = _stack_order(candidates)
    if order is not None:
        layers = [_read_lstm(candidates[k], folder) for k in order]
        sizes = _head_sizes(candidates[order[0]], layers[0].layout)
        why = _stack_problem(layers, [links[k] for k in order[1:]], *sizes)
        if not why:
            return _build(cls, layers)
        why = "they feed one another but do not make one stacked LSTM: " + why
    raise ValueError(
        f"from_onnx: {where} {len(candidates)} LSTM nodes, which do not load as one model ({why}). "
        f"Pass node= (a name or an index) to load one of: {listing}"
    )


def _build(cls: Type[_Model], layers: List[_OnnxLSTM]) -> _Model:
    """The model of one LSTM node, or of stacked nodes (checked by _stack_problem)."""
    first = layers[0]
    D, H, dtype = first.num_directions, first.hidden_size, first.W.dtype
    bias = any(layer.B is not None for layer in layers)
    peepholes = any(layer.P is not None for layer in layers)
    result = cls(
        first.W.shape[2],
        H,
        len(layers),
        bias=bias,
        batch_first=first.layout == 1,
        dtype=dtype,
        peepholes=peepholes,
        clip=first.clip,
        input_forget=first.input_forget,
        direction=first.direction,
    )
    state: Dict[str, np.ndarray] = {}
    for k, layer in enumerate(layers):
        # a layer without B or P (when another has them) is the same as one with zeros there
        Bias = layer.B if layer.B is not None else np.zeros((D, 8 * H), dtype)
        P = layer.P if layer.P is not None else np.zeros((D, 3 * H), dtype)
        for d, sfx in enumerate(["", "_reverse"][:D]):
            state[f"weight_ih_l{k}{sfx}"] = _reorder_blocks(layer.W[d], ONNX_TO_TORCH_GATES, H)
            state[f"weight_hh_l{k}{sfx}"] = _reorder_blocks(layer.R[d], ONNX_TO_TORCH_GATES, H)
            if bias:
                state[f"bias_ih_l{k}{sfx}"] = _reorder_blocks(Bias[d, : 4 * H], ONNX_TO_TORCH_GATES, H)
                state[f"bias_hh_l{k}{sfx}"] = _reorder_blocks(Bias[d, 4 * H :], ONNX_TO_TORCH_GATES, H)
            if peepholes:
                state[f"weight_ph_l{k}{sfx}"] = P[d].reshape(3, H)[list(ONNX_TO_OURS_PEEPHOLES)]
    result.load_state_dict(state)
    return result


# ---- the fastlstm file ----------------------------------------------------------------------------


def save(model: LSTMBase, path: _Path) -> None:
    """Write config and weights to ``path`` exactly (no suffix added): an .npz archive without pickles."""
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "cell": model._cell.name, "config": model._config()}
    arrays: Dict[str, Any] = {"__header__": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
    arrays.update(model._stored_arrays())
    with open(path, "wb") as f:
        np.savez(f, **arrays)


_OTHER_FORMATS = (
    "fastlstm.load reads only files written by LSTM.save or GRU.save. For a PyTorch checkpoint use torch.load, then "
    "LSTM.from_torch(module) for an nn.LSTM or nn.LSTMCell, or LSTM(...).load_state_dict(state) for its state "
    "dict; for ONNX use LSTM.from_onnx(path), for Keras LSTM.from_keras(layer)"
)


def _not_fastlstm(path: _Path, what: str) -> ValueError:
    return ValueError(f"{os.fspath(path)!r} is not a fastlstm file ({what}). {_OTHER_FORMATS}")


def _unreadable_kind(path: _Path, exc: Exception) -> str:
    """What a file that np.load refused looks like, from its first bytes."""
    with open(path, "rb") as f:
        start = f.read(4)
    if not start:
        return "the file is empty"
    if start[:1] == b"\x80":
        return "it holds a Python pickle, which fastlstm never loads since unpickling can run code"
    if start[:2] == b"PK":
        return f"a damaged zip archive: {exc}"
    if start == b"\x89HDF":
        return "an HDF5 file, such as a Keras .h5 model"
    return "neither a NumPy .npz archive nor anything fastlstm reads"


def _archive_kind(names: List[str]) -> str:
    """What a zip archive without a fastlstm header holds."""
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return "a zip archive holding data.pkl: a PyTorch checkpoint written by torch.save"
    if "config.json" in names and any(n.endswith(".weights.h5") for n in names):
        return "a Keras .keras archive"
    shown = ", ".join(repr(n) for n in names[:4]) + (", ..." if len(names) > 4 else "")
    return f"a zip archive without a fastlstm header; it holds {shown or 'nothing'}"


def load(cls: Union[Type[_Model], Dict[str, Type[_Model]]], path: _Path) -> _Model:
    """Read a file written by ``save`` into cls, or into cls[cell] when cls maps the header's cell kind ("lstm"
    when absent) to a class. Never unpickles: a file holding a pickle is rejected (ValueError), and so is any
    other file, with a hint of how to load what it seems to hold (a torch checkpoint, ...)."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile, NotImplementedError) as exc:
        raise _not_fastlstm(path, _unreadable_kind(path, exc)) from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _not_fastlstm(path, "a single NumPy array (.npy)")
    with archive:
        if "__header__" not in archive.files:
            with zipfile.ZipFile(path) as zf:
                raise _not_fastlstm(path, _archive_kind(zf.namelist()))
        try:
            header = json.loads(bytes(archive["__header__"]).decode())
            arrays = {name: archive[name] for name in archive.files if name != "__header__"}
        except (KeyError, ValueError, UnicodeDecodeError, EOFError, zipfile.BadZipFile, OSError,
                NotImplementedError) as exc:   # (NotImplementedError: a damaged zip's compression method)
            raise ValueError(f"{os.fspath(path)!r} is not a readable fastlstm file: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise _not_fastlstm(path, "its header names another format")
    if header.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{os.fspath(path)!r} has format version {header.get('version')}; this fastlstm reads {FORMAT_VERSION}"
        )
    config = header.get("config")
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise ValueError(f"{os.fspath(path)!r} is not a readable fastlstm file: its header's config is "
                         f"{type(config).__name__}, expected a mapping of constructor arguments")
    if isinstance(cls, dict):
        cell = header.get("cell", "lstm")
        if not isinstance(cell, str) or cell not in cls:
            raise ValueError(f"{os.fspath(path)!r} holds a {cell!r} model; this fastlstm reads {sorted(cls)}")
        cls = cls[cell]
    try:
        model = cls(**config)
    except TypeError as exc:  # an argument the constructor does not take, or of a type it refuses
        raise ValueError(f"{os.fspath(path)!r} is not a readable fastlstm file: its config {config} is refused: "
                         f"{exc}") from exc
    try:
        model._load_stored_arrays(arrays)
    except TypeError as exc:  # a stored array of strings, complex numbers, ...
        raise ValueError(f"{os.fspath(path)!r} is not a readable fastlstm file: {exc}") from exc
    return model
