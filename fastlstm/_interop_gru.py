"""Loading trained GRUs from Keras 3 and ONNX into fastlstm.GRU (or fastlstm.reference.GRU).

Keras and ONNX order the gate blocks z, r, h; torch's (ours) are r, z, n. Each framework is imported only inside
the function that needs it (onnx's helpers only; keras never: a layer is read through its attributes).
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple, Type, TypeVar

import numpy as np

from ._base import LSTMBase
from ._interop import _FOLDED_OPS, _Folder, _NotConstant, _Scope, _reorder_blocks

_Model = TypeVar("_Model", bound=LSTMBase)

# Keras' and ONNX's gate blocks z, r, h -> ours r, z, n
ZRH_TO_TORCH_GATES = (1, 0, 2)
_ONNX_DEFAULT_GRU_ACTIVATIONS = ("Sigmoid", "Tanh")


def _keras_activation_problems(layer: Any) -> List[str]:
    bad = []
    for attr, expected in (("activation", "tanh"), ("recurrent_activation", "sigmoid")):
        name = getattr(getattr(layer, attr), "__name__", str(getattr(layer, attr)))
        if name != expected:
            bad.append(f"{attr}={name!r} (expected {expected!r})")
    return bad


def _keras_gru_state(
    weights: List[Any], reset_after: Optional[bool], sfx: str = ""
) -> Tuple[Dict[str, np.ndarray], int, int, bool, bool, np.dtype[Any]]:
    """(state dict entries of one direction, input size, hidden size, bias, reset_after) from a Keras GRU's
    [kernel (I, 3H), recurrent_kernel (H, 3H)(, bias (2, 3H) or (3H,))]."""
    if len(weights) not in (2, 3):
        raise ValueError(
            f"from_keras: expected [kernel, recurrent_kernel(, bias)], got a list of {len(weights)} arrays"
        )
    kernel, recurrent = (np.asarray(w) for w in weights[:2])
    if kernel.ndim != 2 or recurrent.ndim != 2 or recurrent.shape[1] != 3 * recurrent.shape[0]:
        raise ValueError(
            "from_keras: expected kernel (I, 3H) and recurrent_kernel (H, 3H), got "
            f"{kernel.shape} and {recurrent.shape}"
        )
    H = recurrent.shape[0]
    if kernel.shape[1] != 3 * H:
        raise ValueError(f"from_keras: kernel has shape {kernel.shape}, expected (I, {3 * H})")
    state = {
        f"weight_ih_l0{sfx}": _reorder_blocks(kernel.T, ZRH_TO_TORCH_GATES, H),
        f"weight_hh_l0{sfx}": _reorder_blocks(recurrent.T, ZRH_TO_TORCH_GATES, H),
    }
    has_bias = len(weights) == 3
    if has_bias:
        bias = np.asarray(weights[2])
        shape_after = (2, 3 * H)
        if reset_after is None:
            reset_after = bias.shape == shape_after
        expected = shape_after if reset_after else (3 * H,)
        if bias.shape != expected:
            raise ValueError(
                f"from_keras: bias has shape {bias.shape}, expected {expected} "
                f"(reset_after={reset_after}: (2, 3H) with reset_after=True, (3H,) without)"
            )
        b_ih, b_hh = (bias[0], bias[1]) if reset_after else (bias, np.zeros(3 * H, bias.dtype))
        state[f"bias_ih_l0{sfx}"] = _reorder_blocks(b_ih, ZRH_TO_TORCH_GATES, H)
        state[f"bias_hh_l0{sfx}"] = _reorder_blocks(b_hh, ZRH_TO_TORCH_GATES, H)
    elif reset_after is None:
        reset_after = True  # Keras' default
    return state, kernel.shape[0], H, has_bias, bool(reset_after), kernel.dtype


def from_keras(cls: Type[_Model], layer_or_weights: Any, reset_after: Optional[bool] = None) -> _Model:
    """Build from a Keras 3 ``GRU`` layer, a ``Bidirectional(GRU(...))`` with merge_mode "concat", or a GRU's
    ``get_weights()`` list; see fastlstm.GRU.from_keras. The result is batch_first=True, like Keras.

    reset_after=True (Keras' default, bias (2, 3H): input and recurrent biases) is linear_before_reset=True;
    reset_after=False (bias (3H,)) is linear_before_reset=False. ``reset_after`` None reads it from the layer,
    or from a list's bias shape (True when it has no bias); given, it must agree with them. Activations other
    than tanh / sigmoid, go_backwards, and other merge modes: ValueError.
    """
    if reset_after is not None and not isinstance(reset_after, (bool, np.bool_)):
        raise TypeError(f"from_keras: reset_after must be a bool or None, got {type(reset_after).__name__}")
    state: Dict[str, np.ndarray] = {}
    if isinstance(layer_or_weights, (list, tuple)):
        state, I, H, has_bias, reset_after, dtype = _keras_gru_state(list(layer_or_weights), reset_after)
        bidirectional = False
    else:
        layer = layer_or_weights
        inner = [layer]
        bidirectional = hasattr(layer, "forward_layer") and hasattr(layer, "backward_layer")
        if bidirectional:
            if getattr(layer, "merge_mode", None) != "concat":
                raise ValueError(
                    f"from_keras: Bidirectional merge_mode must be 'concat', got {getattr(layer, 'merge_mode', None)!r}"
                )
            inner = [layer.forward_layer, layer.backward_layer]
        for part, expect_backwards in zip(inner, (False, True)):
            if not hasattr(part, "get_weights") or not hasattr(part, "reset_after"):
                raise TypeError(
                    "from_keras expects a keras.layers.GRU (or Bidirectional of one) or its get_weights() list, "
                    f"got {type(part).__name__}"
                )
            if reset_after is not None and bool(part.reset_after) != reset_after:
                raise ValueError(f"from_keras: reset_after={reset_after} given, the layer has {part.reset_after}")
            bad = _keras_activation_problems(part)
            if bad:
                raise ValueError("from_keras: unsupported activations: " + ", ".join(bad))
            if bool(getattr(part, "go_backwards", False)) != (bidirectional and expect_backwards):
                raise ValueError("from_keras: go_backwards=True is not supported (its output sequence is reversed)")
        sizes: Optional[Tuple[int, int, bool, bool]] = None
        for part, sfx in zip(inner, ("", "_reverse")):
            weights = part.get_weights()
            if not weights:
                raise ValueError("from_keras: the layer has no weights yet (build it or call it once first)")
            entries, I, H, has_bias, reset_after, dtype = _keras_gru_state(weights, bool(part.reset_after), sfx)
            if sizes not in (None, (I, H, has_bias, reset_after)):
                raise ValueError("from_keras: the forward and backward GRUs of the Bidirectional layer differ")
            sizes = (I, H, has_bias, reset_after)
            state.update(entries)
    model = cls(  # type: ignore[call-arg]  # (cls is a GRU class: it takes linear_before_reset)
        I,
        H,
        bias=has_bias,
        batch_first=True,
        bidirectional=bidirectional,
        dtype=np.float64 if dtype == np.float64 else np.float32,
        linear_before_reset=reset_after,
    )
    model.load_state_dict(state)
    return model


# ---- ONNX --------------------------------------------------------------------------------------


def _gru_nodes(model: Any) -> List[Tuple[Any, _Scope]]:
    """(node, _Scope) of every GRU node of the model: the main graph's first, then each subgraph's (If/Loop/Scan
    bodies), depth first."""
    from onnx import AttributeProto

    found: List[Tuple[Any, _Scope]] = []

    def walk(scope: _Scope) -> None:
        found.extend((n, scope) for n in scope.graph.node if n.op_type == "GRU")
        for n in scope.graph.node:
            for attr in n.attribute:
                subs = [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)
                for sub in subs:
                    walk(_Scope(sub, scope, f"{n.op_type} {n.name or '(unnamed)'!r} {attr.name}"))

    walk(_Scope(model.graph, None, "the main graph"))
    return found


def _select_gru(model: Any, node: Any) -> Tuple[Any, _Scope]:
    """(the GRU node chosen by ``node``, the _Scope of the graph holding it)."""
    everywhere = _gru_nodes(model)
    main = [(n, s) for n, s in everywhere if s.parent is None]
    listing = ", ".join(f"{k}: {n.name or '(unnamed)'}" for k, (n, _) in enumerate(main)) or "none"
    if node is None:
        candidates = main or everywhere
        if len(candidates) != 1:
            names = ", ".join(n.name or "(unnamed)" for n, _ in candidates) or "none"
            where = "main graph" if main else "model (main graph and subgraphs)"
            raise ValueError(
                f"from_onnx: the {where} has {len(candidates)} GRU nodes ({names}); pass node= to choose"
            )
        return candidates[0]
    if isinstance(node, (bool, np.bool_)):
        raise TypeError("from_onnx: node must be None, a name, an index or a NodeProto")
    if isinstance(node, (int, np.integer)):
        if not -len(main) <= node < len(main):
            raise ValueError(f"from_onnx: node index {node} out of range; GRU nodes: {listing}")
        return main[int(node)]
    if isinstance(node, str):
        for n, scope in everywhere:
            if n.name == node:
                return n, scope
        raise ValueError(f"from_onnx: no GRU node named {node!r}; GRU nodes: {listing}")
    if hasattr(node, "op_type"):
        if node.op_type != "GRU":
            raise ValueError(f"from_onnx: node {node.name!r} is a {node.op_type}, not a GRU")
        # a node of this model is read in its own graph; any other NodeProto reads the main graph's names
        return next(((n, s) for n, s in everywhere if n == node), (node, _Scope(model.graph, None, "the main graph")))
    raise TypeError(f"from_onnx: node must be None, a name, an index or a NodeProto, got {type(node).__name__}")


_CHAIN_GLUE = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity")


def _gru_chain(graph: Any, nodes: List[Any]) -> Optional[List[Any]]:
    """The GRU nodes of ``graph`` in layer order when each feeds the next through shape-only glue (what
    torch.onnx.export writes for a stacked nn.GRU: Squeeze, or Transpose and Reshape, of Y; Shape nodes may read
    the way too), else None."""
    consumers: Dict[str, List[Any]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    ids = {id(n) for n in nodes}

    def next_gru(n: Any) -> Any:
        tensor = n.output[0] if n.output else ""
        while tensor:
            users = [u for u in consumers.get(tensor, []) if u.op_type != "Shape"]   # (torch sizes h_0 by Shape)
            if len(users) != 1:
                return None
            user = users[0]
            if user.op_type == "GRU" and id(user) in ids and user.input[0] == tensor:
                return user
            if user.op_type not in _CHAIN_GLUE:
                return None
            tensor = user.output[0]
        return None

    fed = {id(m) for m in (next_gru(n) for n in nodes) if m is not None}
    firsts = [n for n in nodes if id(n) not in fed]
    if len(firsts) != 1:
        return None
    chain = [firsts[0]]
    while len(chain) < len(nodes):
        following = next_gru(chain[-1])
        if following is None:
            return None
        chain.append(following)
    return chain


def _read_gru_node(
    gru: Any, scope: _Scope, folder: _Folder
) -> Tuple[Dict[str, Any], np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """(settings, W, R, B) of one ONNX GRU node; settings: direction, layout, clip, linear_before_reset, H."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in gru.attribute}
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"from_onnx: unknown direction {direction!r}")
    D = 2 if direction == "bidirectional" else 1
    activations = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
    if activations and activations != list(_ONNX_DEFAULT_GRU_ACTIVATIONS) * D:
        raise ValueError(
            f"from_onnx: unsupported activations {activations}; only the defaults "
            f"{list(_ONNX_DEFAULT_GRU_ACTIVATIONS)} per direction are supported"
        )
    if attrs.get("activation_alpha") or attrs.get("activation_beta"):
        raise ValueError("from_onnx: activation_alpha / activation_beta are not supported")
    layout = int(attrs.get("layout", 0))
    if layout not in (0, 1):
        raise ValueError(f"from_onnx: layout must be 0 or 1, got {layout}")
    clip = attrs.get("clip")
    inputs = list(gru.input) + [""] * (6 - len(gru.input))

    def weight(position: int, label: str) -> Optional[np.ndarray]:
        name = inputs[position]
        if not name:
            return None
        try:
            return np.asarray(folder.value(scope, name))
        except _NotConstant as exc:
            raise ValueError(
                f"from_onnx: input {label} ({name!r}) of GRU node {gru.name!r} is not a constant: {exc.reason}; "
                f"weights must be initializers, Constant outputs, or chains of {', '.join(_FOLDED_OPS)} on those"
            ) from None

    W, R, B = weight(1, "W"), weight(2, "R"), weight(3, "B")
    if W is None or R is None:
        raise ValueError("from_onnx: the GRU node has no W or R input")
    if W.ndim != 3 or R.ndim != 3 or W.shape[0] != D or R.shape[0] != D:
        raise ValueError(f"from_onnx: W {W.shape} and R {R.shape} must be (D={D}, 3H, I) and (D, 3H, H)")
    H = int(attrs.get("hidden_size") or R.shape[2])
    if R.shape[1:] != (3 * H, H) or W.shape[1] != 3 * H:
        raise ValueError(f"from_onnx: hidden_size={H} does not match W {W.shape} and R {R.shape}")
    if B is not None and B.shape != (D, 6 * H):
        raise ValueError(f"from_onnx: B has shape {B.shape}, expected ({D}, {6 * H})")
    if W.dtype not in (np.float32, np.float64):
        raise ValueError(f"from_onnx: weights must be float32 or float64, got {W.dtype}")
    settings = dict(
        direction=direction,
        batch_first=layout == 1,
        clip=None if clip is None else float(clip),
        linear_before_reset=bool(attrs.get("linear_before_reset", 0)),
        hidden_size=H,
    )
    return settings, W, R, B


def from_onnx(cls: Type[_Model], model: Any, node: Any = None) -> _Model:
    """Build from one GRU node of an ONNX model (a ModelProto or a path), or from a chain of GRU nodes feeding
    one another (a stacked torch export) when no node is named; see fastlstm.GRU.from_onnx.

    ONNX: W (D, 3H, I), R (D, 3H, H), B (D, 6H) = [Wb, Rb], gates z, r, h; linear_before_reset (default 0)
    decides where Rb_h sits, as our linear_before_reset. Weights must be initializers, Constant outputs or
    chains of constant-only ops on those (the LSTM loader's folding, fastlstm._interop._Folder), in the node's
    graph or the graphs around it.
    """
    import onnx

    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(os.fspath(model))
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"from_onnx expects an onnx.ModelProto or a path, got {type(model).__name__}")
    main = [n for n in model.graph.node if n.op_type == "GRU"]
    chain = _gru_chain(model.graph, main) if node is None and len(main) > 1 else None
    if chain is not None:
        nodes, scope = chain, _Scope(model.graph, None, "the main graph")
    else:
        selected, scope = _select_gru(model, node)
        nodes = [selected]
    folder = _Folder()
    layers = [_read_gru_node(n, scope, folder) for n in nodes]
    settings, W0, _, B0 = layers[0]
    H, D = settings["hidden_size"], W0.shape[0]
    for k, (other, W, _, B) in enumerate(layers[1:], 1):
        if other != settings or W.shape[2] != D * H or (B is None) != (B0 is None) or W.dtype != W0.dtype:
            raise ValueError(
                f"from_onnx: the chained GRU nodes {[n.name for n in nodes]} differ (layer {k}: {other}, "
                f"W {W.shape}, bias {B is not None}; layer 0: {settings}, bias {B0 is not None}); pass node="
            )
    if settings["batch_first"] and len(layers) > 1:
        raise ValueError("from_onnx: a chain of GRU nodes with layout=1 is not supported; pass node=")
    del settings["hidden_size"]
    result = cls(W0.shape[2], H, len(layers), bias=B0 is not None, dtype=W0.dtype, **settings)
    state = {}
    for layer, (_, W, R, B) in enumerate(layers):
        for d, sfx in enumerate(["", "_reverse"][:D]):
            state[f"weight_ih_l{layer}{sfx}"] = _reorder_blocks(W[d], ZRH_TO_TORCH_GATES, H)
            state[f"weight_hh_l{layer}{sfx}"] = _reorder_blocks(R[d], ZRH_TO_TORCH_GATES, H)
            if B is not None:
                state[f"bias_ih_l{layer}{sfx}"] = _reorder_blocks(B[d, : 3 * H], ZRH_TO_TORCH_GATES, H)
                state[f"bias_hh_l{layer}{sfx}"] = _reorder_blocks(B[d, 3 * H :], ZRH_TO_TORCH_GATES, H)
    result.load_state_dict(state)
    return result
