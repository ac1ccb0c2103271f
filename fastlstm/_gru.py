"""fastlstm.GRU: torch.nn.GRU's forward semantics on NumPy arrays, computed by the native kernels (src/gru_impl.h).

GRUBase holds what the fast class and the oracle (fastlstm.reference.GRU) share on top of fastlstm._base:
the configuration (linear_before_reset; no projection, peepholes or coupled gates), torch's GRU loader and the
Keras and ONNX loaders (fastlstm._interop_gru). GRU adds the packing of its weights to the LSTM's machinery
(fastlstm._lstm.NativeModel: workspaces, call plans, threads, streaming).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, TypeVar, cast

import numpy as np
from numpy.typing import DTypeLike

from . import _cpu, _interop, _kernels
from ._base import LSTMBase, _check_bool
from ._cells import GRU_CELL
from ._lstm import NativeModel
from ._packing import _aligned_empty, _pack_quant_gates, _take_rows, gate_rows

__all__ = ["GRU", "GRUBase", "pack_gru_direction", "pack_gru_direction_quant"]

_GRU = TypeVar("_GRU", bound="GRUBase")
# what a GRU call returns: output, h_n
GRUResult = Tuple[np.ndarray, np.ndarray]


class GRUBase(LSTMBase):
    """Configuration and parameters of a (possibly stacked, bidirectional) GRU; gate order r, z, n."""

    _cell = GRU_CELL
    _linear_before_reset: bool

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bias: bool = True,
        batch_first: bool = False,
        bidirectional: bool = False,
        dtype: DTypeLike = np.float32,
        seed: Optional[int] = None,
        linear_before_reset: bool = True,
        clip: Optional[float] = None,
        direction: Optional[str] = None,
        weights: Optional[str] = None,
    ) -> None:
        # set before the parameters are made: packing them reads it
        object.__setattr__(self, "_linear_before_reset", _check_bool("linear_before_reset", linear_before_reset))
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias=bias,
            batch_first=batch_first,
            bidirectional=bidirectional,
            dtype=dtype,
            seed=seed,
            clip=clip,
            direction=direction,
            weights=weights,
        )

    @property
    def linear_before_reset(self) -> bool:
        """Whether r multiplies W_hn h + b_hn (torch, Keras reset_after=True) rather than h before W_hn (ONNX's
        default)."""
        return self._linear_before_reset

    def __call__(  # type: ignore[override]
        self, x: Any, hx: Any = None, *, lengths: Any = None
    ) -> GRUResult:
        """Run the GRU over a sequence.

        Parameters
        ----------
        x : array-like (T, B, I), (B, T, I) when batch_first, or unbatched (T, I)
        hx : optional h_0 of shape (D*num_layers, B, H), without the B axis for unbatched input
        lengths : optional integers (B,), 1 <= lengths[b] <= T; rows past a length are zero in the
            output and h_n is the state at the last valid step

        Returns
        -------
        output : ndarray (T, B, D*H) (batch-first or unbatched like x)
        h_n : ndarray shaped like h_0
        """
        return cast(GRUResult, super().__call__(x, hx, lengths=lengths))

    forward = __call__  # type: ignore[assignment]

    def _config(self) -> Dict[str, Any]:
        config = super()._config()
        for lstm_only in ("proj_size", "peepholes", "input_forget"):
            del config[lstm_only]
        config["linear_before_reset"] = self.linear_before_reset
        return config

    def __repr__(self) -> str:
        text = super().__repr__()
        return text[:-1] + ", linear_before_reset=False)" if not self.linear_before_reset else text

    @classmethod
    def from_torch(cls: "type[_GRU]", module: Any) -> "_GRU":
        """Build from a ``torch.nn.GRU`` (same configuration, batch_first, dtype and weights) or a
        ``torch.nn.GRUCell`` (a one-layer GRU: call it on (T, B, I) sequences, hx (1, B, H)), also when scripted
        (TorchScript, as in models loaded with torch.jit.load).

        torch is imported only here. float16/bfloat16 modules: ValueError (convert them first).
        """
        import torch

        scripted = getattr(module, "original_name", None) if isinstance(module, torch.jit.ScriptModule) else None
        cell = isinstance(module, torch.nn.GRUCell) or scripted == "GRUCell"
        if not (cell or isinstance(module, torch.nn.GRU) or scripted == "GRU"):
            raise TypeError(f"from_torch expects a torch.nn.GRU or torch.nn.GRUCell, got {type(module).__name__}")
        weight = module.weight_ih if cell else module.weight_ih_l0
        dtype = {torch.float32: np.float32, torch.float64: np.float64}.get(weight.dtype)
        if dtype is None:
            raise ValueError(f"from_torch: dtype must be torch.float32 or torch.float64, got {weight.dtype}")
        if cell:
            model = cls(module.input_size, module.hidden_size, bias=module.bias, dtype=dtype)
        else:
            model = cls(
                module.input_size,
                module.hidden_size,
                module.num_layers,
                bias=module.bias,
                batch_first=module.batch_first,
                bidirectional=module.bidirectional,
                dtype=dtype,
            )
        state = _interop.torch_weights(module)
        if cell:  # weight_ih -> weight_ih_l0, ...
            state = {f"{name}_l0": value for name, value in state.items()}
        model.load_state_dict(state)
        return model

    @classmethod
    def from_keras(cls: "type[_GRU]", layer_or_weights: Any, reset_after: Optional[bool] = None) -> "_GRU":
        """Build from a Keras 3 ``GRU`` layer or its ``get_weights()`` list; returns batch_first=True.

        kernel (I, 3H), recurrent_kernel (H, 3H), bias (2, 3H) with reset_after=True (linear_before_reset) or
        (3H,) with reset_after=False; gate order z, r, h. ``reset_after`` None reads it from the layer or the
        bias shape; a list without a bias is read as Keras' default (True) unless ``reset_after=False`` is
        passed. Activations other than tanh / sigmoid: ValueError.
        """
        from . import _interop_gru

        return _interop_gru.from_keras(cls, layer_or_weights, reset_after)

    @classmethod
    def from_onnx(cls: "type[_GRU]", model: Any, node: Any = None) -> "_GRU":
        """Build from a GRU node of an ONNX model (``onnx.ModelProto`` or a path).

        ``node``: None (the only GRU node of the main graph, else of its subgraphs), a node name, an index among
        the main graph's GRU nodes, or a NodeProto. Supported: direction, layout (1 gives batch_first=True),
        hidden_size, linear_before_reset, clip; gate order z, r, h; B = [Wb, Rb]. sequence_lens and initial_h
        are runtime data: pass lengths= and hx=.
        """
        from . import _interop_gru

        return _interop_gru.from_onnx(cls, model, node)


def pack_gru_direction(
    w_ih: np.ndarray, w_hh: np.ndarray, b_ih: Optional[np.ndarray], b_hh: Optional[np.ndarray], V: int,
    linear_before_reset: bool,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, None, None, Optional[np.ndarray]]:
    """Pack one GRU layer-direction for the kernels of src/gru_impl.h (layouts at its top).

    w_ih (3H, I), w_hh (3H, H), b_ih, b_hh (3H,) or None (no bias), gate order r, z, n ->
    (w_ih_p (NB, I, 3, V), w_hh_p (NB, 3*H*V), bias_p (NB, 3, V), None, None, bias_hn_p (NB, V) or None): the
    PackedModel entry of a GRU. With linear_before_reset, b_hn stays out of the folded bias (it sits inside the
    reset product); without it, it folds into n's and the recurrent n rows follow the r, z rows of each block.
    """
    dtype = w_ih.dtype
    H = w_hh.shape[0] // 3
    NB = -(-H // V)
    rows = gate_rows(H, V, narrow=False, num_gates=3)     # torch row of every packed (j, g, v), -1: padding

    def pack(w: np.ndarray) -> np.ndarray:  # (3H, n) -> (NB, n, 3, V)
        return _take_rows(w, rows).reshape(NB, 3, V, w.shape[1]).transpose(0, 3, 1, 2)

    w_ih_p = _aligned_empty((NB, w_ih.shape[1], 3, V), dtype)
    w_ih_p[...] = pack(w_ih)
    K = w_hh.shape[1]
    w_hh_p = _aligned_empty((NB, 3 * K * V), dtype)
    recurrent = pack(w_hh)
    if linear_before_reset:
        w_hh_p[...] = recurrent.reshape(NB, -1)
    else:  # per block: (K, 2, V) of r, z, then (K, 1, V) of n
        w_hh_p[:, : 2 * K * V] = recurrent[:, :, :2].reshape(NB, -1)
        w_hh_p[:, 2 * K * V :] = recurrent[:, :, 2:].reshape(NB, -1)
    if b_ih is None or b_hh is None:
        b_ih = b_hh = np.zeros(3 * H, dtype)
    bias = b_ih.astype(dtype) + b_hh
    if linear_before_reset:
        bias[2 * H :] = b_ih[2 * H :]
    bias_p = _aligned_empty((NB, 3, V), dtype)
    bias_p[...] = _take_rows(bias[:, None], rows).reshape(NB, 3, V)
    bias_hn_p: Optional[np.ndarray] = None
    if linear_before_reset:
        bias_hn_p = _aligned_empty((NB, V), dtype)
        bias_hn_p.reshape(-1)[:H] = b_hh[2 * H :]
    return w_ih_p, w_hh_p, bias_p, None, None, bias_hn_p


def pack_gru_direction_quant(
    w_ih: Tuple[np.ndarray, Optional[np.ndarray]], w_hh: Tuple[np.ndarray, Optional[np.ndarray]],
    b_ih: Optional[np.ndarray], b_hh: Optional[np.ndarray], V: int, linear_before_reset: bool,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, None, None, Optional[np.ndarray], int]:
    """Pack one layer-direction of a bf16 or int8 GRU for the kernels of src/gru_quant_impl.h (layouts at its top).

    w_ih, w_hh: stored matrices (q, scale) as fastlstm._quant.quantize_matrix makes them (scale None for bf16),
    gate order r, z, n; b_ih, b_hh (3H,) float32 or None -> (w_ih_p, w_hh_p, bias_p, None, None, bias_hn_p or None,
    input size): the PackedModel entry. Biases as pack_gru_direction packs them.
    """
    H, I = w_hh[0].shape[0] // 3, w_ih[0].shape[1]
    _, _, bias_p, _, _, bias_hn_p = pack_gru_direction(
        np.zeros((3 * H, 0), np.float32), np.zeros((3 * H, 0), np.float32), b_ih, b_hh, V, linear_before_reset)
    rows = gate_rows(H, V, narrow=False, num_gates=3)
    w_ih_p = _pack_quant_gates(w_ih[0], w_ih[1], rows, 3, V)
    if linear_before_reset:
        w_hh_p = _pack_quant_gates(w_hh[0], w_hh[1], rows, 3, V)
    else:  # per block: the block of gates r, z, then the block of gate n
        NB = rows.size // (3 * V)
        by_gate = rows.reshape(NB, 3, V)
        halves = [_pack_quant_gates(w_hh[0], w_hh[1], by_gate[:, gates].reshape(-1), ng, V).reshape(NB, -1)
                  for gates, ng in ((slice(0, 2), 2), (slice(2, 3), 1))]
        w_hh_p = _aligned_empty((NB, halves[0].shape[1] + halves[1].shape[1]), halves[0].dtype)
        w_hh_p[:, : halves[0].shape[1]] = halves[0]
        w_hh_p[:, halves[0].shape[1] :] = halves[1]
    return w_ih_p, w_hh_p, bias_p, None, None, bias_hn_p, I



class GRU(GRUBase, NativeModel):  # type: ignore[misc]  # (its call returns (output, h_n): GRUBase.__call__)
    """A stacked, optionally bidirectional GRU for CPU inference, with torch.nn.GRU's semantics.

    ``fastlstm.GRU(input_size, hidden_size, num_layers=1, *, bias=True, batch_first=False,
    bidirectional=False, dtype=np.float32, seed=None, linear_before_reset=True, clip=None)``

    ``output, h_n = gru(x, hx=None, *, lengths=None)``: x (T, B, I) ((B, T, I) when batch_first, or unbatched
    (T, I)); hx is h_0 alone, (D*num_layers, B, H); output (T, B, D*H); lengths as for fastlstm.LSTM.

    Parameters are attributes with torch's names, shapes and gate order (r, z, n), e.g. ``weight_ih_l0``
    (3H, I); n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) * n + z * h.
    ``linear_before_reset=False`` (ONNX's default GRU, Keras' reset_after=False) computes
    n = tanh(W_in x + b_in + W_hn (r * h) + b_hn). ``clip`` clips every gate pre-activation to [-clip, clip]
    (ONNX's attribute). Streams (``gru.stream()``), threads, save/load and pickle work as for fastlstm.LSTM;
    a stream's ``state`` is h.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bias: bool = True,
        batch_first: bool = False,
        bidirectional: bool = False,
        dtype: DTypeLike = np.float32,
        seed: Optional[int] = None,
        linear_before_reset: bool = True,
        clip: Optional[float] = None,
        direction: Optional[str] = None,
        weights: Optional[str] = None,
    ) -> None:
        super().__init__(
            input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional,
            dtype=dtype, seed=seed, linear_before_reset=linear_before_reset, clip=clip, direction=direction,
            weights=weights,
        )

    def _parameters_changed(self) -> None:
        features, fmt = _cpu.features(), self.weights      # "float32", "float64", "bf16" or "int8"
        V = _cpu.kernels_for(self._cell.name, fmt, features)[1] // np.dtype(self.dtype).itemsize
        arrays: List[Tuple[Any, ...]] = []
        for layer in range(self.num_layers):
            for sfx in self._suffixes():
                params, w_ih, w_hh = self._params, f"weight_ih_l{layer}{sfx}", f"weight_hh_l{layer}{sfx}"
                b_ih, b_hh = params.get(f"bias_ih_l{layer}{sfx}"), params.get(f"bias_hh_l{layer}{sfx}")
                entry: Tuple[Any, ...]
                if self._format is None:
                    entry = pack_gru_direction(params[w_ih], params[w_hh], b_ih, b_hh, V, self.linear_before_reset)
                else:
                    entry = pack_gru_direction_quant(self._qparams[w_ih], self._qparams[w_hh], b_ih, b_hh, V,
                                                     self.linear_before_reset)
                arrays.append(entry)
        packed = _kernels.PackedModel(
            self._cell.name,
            fmt,
            features,
            self.num_layers,
            self.num_directions,
            self.hidden_size,
            0,
            False,
            0.0 if self.clip is None else self.clip,
            False,
            self.direction == "reverse",
            tuple(arrays),
            self.linear_before_reset,
        )
        object.__setattr__(self, "_packed", packed)
        LD, H = self.num_layers * self.num_directions, self.hidden_size
        object.__setattr__(self, "_state_sizes", (LD, H, H, self.num_directions * H))
