"""The oracles: an LSTM and a GRU computed step by step in float64 NumPy, straight from the gate equations.

    gates = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh          (gate order i, f, g, o)
    i, f, o = sigmoid(...);  g = tanh(...)
    c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t);  h_t = W_hr h_t when proj_size > 0

and the ONNX extras: peepholes add p_i * c_{t-1} and p_f * c_{t-1} to the i and f pre-activations and
p_o * c_t to o's; clip clips every pre-activation to [-clip, clip]; input_forget sets f = 1 - i.

The GRU (torch.nn.GRU, gate order r, z, n; linear_before_reset=False is ONNX's default):

    r = sigmoid(W_ir x_t + b_ir + W_hr h + b_hr);  z likewise;  h_t = (1 - z) * n + z * h_{t-1}
    n = tanh(W_in x_t + b_in + r * (W_hn h + b_hn))   or   tanh(W_in x_t + b_in + W_hn (r * h) + b_hn)

A quantized model (``quantize("bf16" | "int8")``) computes with its stored weights (bf16 values, or int8 q times
its row scale, in float64) and rounds at every step, by the rules of fastlstm._quant, the rows each weight matrix
multiplies: x, h and the LSTM projection's input; the GRU's r * h without linear_before_reset. In float64
otherwise: the oracle of the reduced-precision kernels.

They share parameter handling and validation with fastlstm.LSTM and fastlstm.GRU (fastlstm._base, _gru) but
none of their compute: no kernels, no packing, no BLAS calls of ours. They are slow on purpose; they are what
every path is tested against.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import numpy as np
from numpy.typing import DTypeLike

from . import _quant
from ._base import ForwardResult, LSTMBase, ValidatedCall
from ._gru import GRUBase

__all__ = ["LSTM", "GRU"]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    s: np.ndarray = 1.0 / (1.0 + np.exp(-z))
    return s


def _param64(model: LSTMBase, key: str) -> np.ndarray:
    """A parameter's values in float64: a quantized model's weight matrices exactly as stored."""
    if key in model._qparams:
        q, scale = model._qparams[key]
        return _quant.dequantize(q, scale, np.float64)
    return np.asarray(getattr(model, key), dtype=np.float64)


def _rounding(model: LSTMBase) -> Callable[[np.ndarray], np.ndarray]:
    """The values the kernels use for activation rows v (..., K): v itself, or rounded by the model's format."""
    fmt = model._format
    if fmt is None:
        return lambda v: v
    return lambda v: _quant.round_rows(v, fmt)


class LSTM(LSTMBase):
    """Reference LSTM: same constructor, parameters, loaders and call as fastlstm.LSTM (see its help)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bias: bool = True,
        batch_first: bool = False,
        bidirectional: bool = False,
        proj_size: int = 0,
        dtype: DTypeLike = np.float32,
        seed: Optional[int] = None,
        peepholes: bool = False,
        clip: Optional[float] = None,
        input_forget: bool = False,
        direction: Optional[str] = None,
        weights: Optional[str] = None,
    ) -> None:
        super().__init__(
            input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional,
            proj_size=proj_size, dtype=dtype, seed=seed, peepholes=peepholes, clip=clip,
            input_forget=input_forget, direction=direction, weights=weights,
        )

    def _forward_validated(self, call: ValidatedCall) -> ForwardResult:
        T, B = call.T, call.B
        x = np.asarray(call.x, dtype=np.float64)
        if not call.batched:
            x = x[:, None, :]
        elif self.batch_first:
            x = x.transpose(1, 0, 2)
        LD = self.num_layers * self.num_directions
        H, K = self.hidden_size, self.out_size
        h0 = np.zeros((LD, B, K)) if call.h0 is None else np.asarray(call.h0, np.float64).reshape(LD, B, K)
        c0 = np.zeros((LD, B, H)) if call.c0 is None else np.asarray(call.c0, np.float64).reshape(LD, B, H)
        lengths = np.full(B, T) if call.lengths is None else call.lengths.astype(np.int64)
        hn = h0.copy()
        cn = c0.copy()
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for d, sfx in enumerate(self._suffixes()):
                reverse = d == 1 or self.direction == "reverse"
                idx = layer * self.num_directions + d
                out, hn[idx], cn[idx] = self._run_direction(layer_input, layer, sfx, h0[idx], c0[idx], lengths, reverse)
                outputs.append(out)
            layer_input = np.concatenate(outputs, axis=2)
        output = layer_input
        if not call.batched:
            output, hn, cn = output[:, 0, :], hn[:, 0, :], cn[:, 0, :]
        elif self.batch_first:
            output = output.transpose(1, 0, 2)
        output, hn, cn = (np.ascontiguousarray(a, dtype=self.dtype) for a in (output, hn, cn))
        return output, (hn, cn)

    def _weights(
        self, layer: int, sfx: str
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
        def p(name: str) -> np.ndarray:
            return _param64(self, f"{name}_l{layer}{sfx}")

        H = self.hidden_size
        w_ih, w_hh = p("weight_ih"), p("weight_hh")
        b = p("bias_ih") + p("bias_hh") if self.bias else np.zeros(self._cell.num_gates * H)
        w_hr: Optional[np.ndarray] = p("weight_hr") if self.proj_size > 0 else None
        w_ph: Optional[np.ndarray] = p("weight_ph") if self.peepholes else None
        return w_ih, w_hh, b, w_hr, w_ph

    def _run_direction(
        self, x: np.ndarray, layer: int, sfx: str, h0: np.ndarray, c0: np.ndarray, lengths: np.ndarray, reverse: bool
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x (T, B, I) -> output (T, B, K), h_n (B, K), c_n (B, H); rows past lengths[b] stay zero."""
        T, B, _ = x.shape
        H = self.hidden_size
        w_ih, w_hh, b, w_hr, w_ph = self._weights(layer, sfx)
        clip = self.clip if self.clip is not None else np.inf
        rounded = _rounding(self)
        out = np.zeros((T, B, self.out_size))
        h, c = h0.copy(), c0.copy()
        steps = range(T - 1, -1, -1) if reverse else range(T)
        for t in steps:
            with np.errstate(all="ignore"):  # NaN and inf inputs propagate silently, like the kernels
                active = t < lengths  # (B,)
                gates = rounded(x[t]) @ w_ih.T + rounded(h) @ w_hh.T + b
                pre_i, pre_f = gates[:, 0:H], gates[:, H : 2 * H]
                pre_g, pre_o = gates[:, 2 * H : 3 * H], gates[:, 3 * H : 4 * H]
                if w_ph is not None:
                    pre_i = pre_i + w_ph[0] * c
                    pre_f = pre_f + w_ph[1] * c
                i = _sigmoid(np.clip(pre_i, -clip, clip))
                f = 1.0 - i if self.input_forget else _sigmoid(np.clip(pre_f, -clip, clip))
                g = np.tanh(np.clip(pre_g, -clip, clip))
                c_new = f * c + i * g
                if w_ph is not None:
                    pre_o = pre_o + w_ph[2] * c_new
                o = _sigmoid(np.clip(pre_o, -clip, clip))
                h_new = o * np.tanh(c_new)
                if w_hr is not None:
                    h_new = rounded(h_new) @ w_hr.T
                c = np.where(active[:, None], c_new, c)
                h = np.where(active[:, None], h_new, h)
                out[t] = np.where(active[:, None], h_new, 0.0)
        return out, h, c


class GRU(GRUBase):
    """Reference GRU: same constructor, parameters, loaders and call as fastlstm.GRU."""

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

    def _forward_validated(self, call: ValidatedCall) -> Any:   # (output, h_n): GRUBase.__call__ types it
        T, B = call.T, call.B
        x = np.asarray(call.x, dtype=np.float64)
        if not call.batched:
            x = x[:, None, :]
        elif self.batch_first:
            x = x.transpose(1, 0, 2)
        LD, H = self.num_layers * self.num_directions, self.hidden_size
        h0 = np.zeros((LD, B, H)) if call.h0 is None else np.asarray(call.h0, np.float64).reshape(LD, B, H)
        lengths = np.full(B, T) if call.lengths is None else call.lengths.astype(np.int64)
        hn = h0.copy()
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for d, sfx in enumerate(self._suffixes()):
                reverse = d == 1 or self.direction == "reverse"
                idx = layer * self.num_directions + d
                out, hn[idx] = self._run_direction(layer_input, layer, sfx, h0[idx], lengths, reverse)
                outputs.append(out)
            layer_input = np.concatenate(outputs, axis=2)
        output = layer_input
        if not call.batched:
            output, hn = output[:, 0, :], hn[:, 0, :]
        elif self.batch_first:
            output = output.transpose(1, 0, 2)
        return np.ascontiguousarray(output, dtype=self.dtype), np.ascontiguousarray(hn, dtype=self.dtype)

    def _run_direction(
        self, x: np.ndarray, layer: int, sfx: str, h0: np.ndarray, lengths: np.ndarray, reverse: bool
    ) -> Tuple[np.ndarray, np.ndarray]:
        """x (T, B, I) -> output (T, B, H), h_n (B, H); rows past lengths[b] stay zero."""
        T, B, _ = x.shape
        H = self.hidden_size
        def p(name: str) -> np.ndarray:
            return _param64(self, f"{name}_l{layer}{sfx}")

        w_ih, w_hh = p("weight_ih"), p("weight_hh")
        b_ih, b_hh = (p("bias_ih"), p("bias_hh")) if self.bias else (np.zeros(3 * H), np.zeros(3 * H))
        clip = self.clip if self.clip is not None else np.inf
        rounded = _rounding(self)
        out = np.zeros((T, B, H))
        h = h0.copy()
        steps = range(T - 1, -1, -1) if reverse else range(T)
        for t in steps:
            with np.errstate(all="ignore"):  # NaN and inf inputs propagate silently, like the kernels
                active = t < lengths
                gx = rounded(x[t]) @ w_ih.T + b_ih
                hq = rounded(h)
                r = _sigmoid(np.clip(gx[:, :H] + hq @ w_hh[:H].T + b_hh[:H], -clip, clip))
                z = _sigmoid(np.clip(gx[:, H : 2 * H] + hq @ w_hh[H : 2 * H].T + b_hh[H : 2 * H], -clip, clip))
                if self.linear_before_reset:
                    pre_n = gx[:, 2 * H :] + r * (hq @ w_hh[2 * H :].T + b_hh[2 * H :])
                else:
                    pre_n = gx[:, 2 * H :] + rounded(r * h) @ w_hh[2 * H :].T + b_hh[2 * H :]
                n = np.tanh(np.clip(pre_n, -clip, clip))
                h_new = (1.0 - z) * n + z * h
                h = np.where(active[:, None], h_new, h)
                out[t] = np.where(active[:, None], h_new, 0.0)
        return out, h
