"""fastlstm.LSTM: torch.nn.LSTM's forward semantics on NumPy arrays, computed by the native kernels.

Python does the checking (fastlstm._base), the conversion of inputs to the model's dtype and layout, and the
bookkeeping of workspaces; one call into fastlstm._kernels then runs every layer and direction with the GIL
released. After a first checked call, calls with the same batch and input size go to a cached
_kernels.ForwardPlan, which checks and converts them in C the same way (or hands them back to Python).
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Dict, List, Optional, Tuple, Type, cast

import numpy as np
from numpy.typing import DTypeLike

from . import _cpu, _kernels, _packing, _threads
from ._base import ForwardResult, LSTMBase, ValidatedCall
from ._stream import Stream

__all__ = ["LSTM", "NativeModel"]

# workspaces kept per model for reuse by later calls (one per concurrently running call)
_MAX_POOLED_WORKSPACES = 8
# zero states, full-length arrays and call plans kept per model, for the shapes of recent calls
_MAX_CACHED_CONSTANTS = 16


class NativeModel(LSTMBase):
    """What the fast classes (fastlstm.LSTM, fastlstm.GRU) share: packed weights, workspaces, cached call plans,
    the forward through the native kernels and streaming. A subclass's cell kind (``_cell``) says whether its
    state is (h, c) or h alone; a cell other than the LSTM packs its own weights (``_parameters_changed``)."""

    _lock: threading.Lock
    _workspaces: List[np.ndarray]  # free workspaces, taken and given back by the calls
    _constants: Dict[Tuple[Any, ...], Any]  # zero states, full lengths and ForwardPlans by shape
    _packed: _kernels.PackedModel
    _state_sizes: Tuple[int, int, int, int]  # (L*D, H, H_out, D*H_out)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        object.__setattr__(self, "_lock", threading.Lock())
        object.__setattr__(self, "_workspaces", [])
        object.__setattr__(self, "_constants", {})
        super().__init__(*args, **kwargs)

    # ---- packing ------------------------------------------------------------------------------

    def _parameters_changed(self) -> None:
        cell, dtype, features = self._cell, np.dtype(self.dtype), _cpu.features()
        if self._format is not None:
            self._pack_quantized(self._format, features)
            return
        V = _cpu.kernels_for(cell.name, dtype, features)[1] // dtype.itemsize
        arrays = []
        for layer in range(self.num_layers):
            for sfx in self._suffixes():
                name: Callable[[str], str] = lambda p: f"{p}_l{layer}{sfx}"  # noqa: E731
                if self.bias:
                    bias = cell.folded_bias(self._params[name("bias_ih")].astype(dtype), self._params[name("bias_hh")])
                else:
                    bias = np.zeros(cell.num_gates * self.hidden_size, dtype=dtype)
                w_hr = self._params[name("weight_hr")] if self.proj_size > 0 else None
                w_ph = self._params[name("weight_ph")] if self.peepholes else None
                arrays.append(
                    _packing.pack_direction(
                        self._params[name("weight_ih")], self._params[name("weight_hh")], bias, w_ph, w_hr, V
                    )
                )
        packed = _kernels.PackedModel(
            cell.name,
            dtype.name,
            features,
            self.num_layers,
            self.num_directions,
            self.hidden_size,
            self.proj_size,
            _packing.narrow_last_block(self.hidden_size, V),
            0.0 if self.clip is None else self.clip,
            self.input_forget,
            self.direction == "reverse",
            tuple(arrays),
        )
        self._packed_with(packed)

    def _pack_quantized(self, weights: str, features: int) -> None:
        """Pack a bf16 or int8 model's stored weights for its kernels (src/quant_impl.h)."""
        cell = self._cell
        V = _cpu.kernels_for(cell.name, weights, features)[1] // 4
        arrays = []
        for layer in range(self.num_layers):
            for sfx in self._suffixes():
                name: Callable[[str], str] = lambda p: f"{p}_l{layer}{sfx}"  # noqa: E731
                if self.bias:
                    bias = cell.folded_bias(self._params[name("bias_ih")], self._params[name("bias_hh")])
                else:
                    bias = np.zeros(cell.num_gates * self.hidden_size, dtype=np.float32)
                w_hr = self._qparams[name("weight_hr")] if self.proj_size > 0 else None
                w_ph = self._params[name("weight_ph")] if self.peepholes else None
                arrays.append(
                    _packing.pack_direction_quant(
                        self._qparams[name("weight_ih")], self._qparams[name("weight_hh")], bias, w_ph, w_hr, V
                    )
                )
        self._packed_with(_kernels.PackedModel(
            cell.name, weights, features, self.num_layers, self.num_directions, self.hidden_size,
            self.proj_size, False, 0.0 if self.clip is None else self.clip, self.input_forget,
            self.direction == "reverse", tuple(arrays),
        ))

    def _packed_with(self, packed: "_kernels.PackedModel") -> None:
        """Run with these packed weights from now on."""
        object.__setattr__(self, "_packed", packed)
        LD = self.num_layers * self.num_directions
        sizes = (LD, self.hidden_size, self.out_size, self.num_directions * self.out_size)
        object.__setattr__(self, "_state_sizes", sizes)  # (L*D, H, H_out, D*H_out)

    # ---- workspaces ---------------------------------------------------------------------------

    def _acquire_workspace(self, size: int) -> np.ndarray:
        """A workspace of at least ``size`` elements that no other running call holds.

        list.pop and list.append are atomic under the GIL, so the pool needs no lock.
        """
        try:
            ws = self._workspaces.pop()
        except IndexError:
            ws = None
        if ws is None or ws.size < size:  # none free, or too small for this call: let it go
            ws = _packing._aligned_empty((size,), self.dtype)
        return ws

    def _release_workspace(self, ws: np.ndarray) -> None:
        if len(self._workspaces) < _MAX_POOLED_WORKSPACES:
            self._workspaces.append(ws)

    def _cached(self, key: Tuple[Any, ...], make: Callable[[], Any]) -> Any:
        """A cached value (zero states, full lengths), made read-only: steady-state calls allocate only their
        outputs."""
        value = self._constants.get(key)
        if value is None:
            value = make()
            for arr in value if isinstance(value, tuple) else (value,):
                arr.flags.writeable = False
            self._cache(key, value)
        return value

    def _c_size(self) -> int:
        """The last axis of c: hidden_size, or 0 for a cell without a cell state (the kernels get an empty c)."""
        return self.hidden_size if len(self._cell.state) == 2 else 0

    def _zero_states(self, B: int) -> Tuple[np.ndarray, np.ndarray]:
        """Cached read-only zero (h_0, c_0) for B rows, shaped (L*D, B, H_out) and (L*D, B, H) (c empty for a
        GRU)."""
        LD, _, K, _ = self._state_sizes
        C = self._c_size()
        zeros: Tuple[np.ndarray, np.ndarray] = self._cached(
            ("state", B), lambda: (np.zeros((LD, B, K), self.dtype), np.zeros((LD, B, C), self.dtype)))
        return zeros

    def _cache(self, key: Tuple[Any, ...], value: Any) -> None:
        with self._lock:
            if len(self._constants) >= _MAX_CACHED_CONSTANTS:
                self._constants.clear()
            self._constants[key] = value

    # ---- forward ------------------------------------------------------------------------------

    def __call__(self, x: Any, hx: Optional[Tuple[Any, Any]] = None, *, lengths: Any = None) -> ForwardResult:
        # The common call (an array, hx None or a pair of arrays, lengths None or B valid integers; see
        # ForwardPlan) in one native call once a call of the same batch and input size has been checked and its
        # plan cached.
        if type(x) is np.ndarray:
            shape = x.shape  # the key without the time axis, as _plan_key makes it (inline: no call)
            plan = self._constants.get(("plan-bf", shape[0], shape[2]) if self.batch_first and len(shape) == 3
                                       else ("plan",) + shape[1:])
            if plan is not None:
                result: Optional[ForwardResult] = plan.run(self, x, hx, lengths)
                if result is not None:
                    return result
        return super().__call__(x, hx, lengths=lengths)

    __call__.__doc__ = LSTMBase.__call__.__doc__
    forward = __call__

    def _forward_validated(self, call: ValidatedCall) -> ForwardResult:
        dtype, packed = self.dtype, self._packed
        T, B = call.T, call.B
        LD, H, K, DK = self._state_sizes
        C, has_c = self._c_size(), len(self._cell.state) == 2
        x = call.x
        if not (x.dtype == dtype and x.flags.c_contiguous):
            x = np.ascontiguousarray(x, dtype=dtype)
        if not call.batched:
            x = x.reshape(T, 1, self.input_size)
        if call.h0 is None:
            h0, c0 = self._zero_states(B)
        else:
            h0 = np.ascontiguousarray(call.h0, dtype).reshape(LD, B, K)
            c0 = np.ascontiguousarray(call.c0, dtype).reshape(LD, B, H) if has_c else self._zero_states(B)[1]
        batch_first = self.batch_first and call.batched
        out = np.empty((B, T, DK) if batch_first else (T, B, DK), dtype)
        if T == 0 or B == 0:
            hn, cn = h0.copy(), c0.copy()
        else:
            hn = np.empty((LD, B, K), dtype)
            cn = np.empty((LD, B, C), dtype)
            if call.lengths is None:
                lengths = self._cached(("lengths", B, T), lambda: np.full(B, T, np.int32))
            else:
                lengths = np.ascontiguousarray(call.lengths, np.int32)
            ws = self._acquire_workspace(packed.workspace_size(T, B))
            try:
                threads = _threads.effective_threads(H, K, B, self.num_directions, steps=T, input_size=self.input_size)
                _kernels.forward(packed, x, batch_first, h0, c0, lengths, out, hn, cn, ws, threads)
            finally:
                self._release_workspace(ws)
            self._make_plan(call, out.shape)  # for the next call of this shape
        if not call.batched:
            out, hn, cn = out.reshape(T, DK), hn.reshape(LD, K), cn.reshape(LD, C)
        if not has_c:  # a GRU: (output, h_n), as fastlstm.GRU.__call__ says
            return cast(ForwardResult, (out, hn))
        return out, (hn, cn)

    def _make_plan(self, call: ValidatedCall, out_shape: Tuple[int, ...]) -> None:
        """Cache the ForwardPlan of call's layout and batch (all T) unless one for the current weights exists."""
        key = _plan_key(call.x.shape, self.batch_first)
        plan = self._constants.get(key)
        if plan is not None and plan.packed is self._packed:
            return
        LD, H, K, DK = self._state_sizes
        B, T, C = call.B, call.T, self._c_size()
        h_shape: Tuple[int, ...]
        c_shape: Tuple[int, ...]
        if call.batched:
            h_shape, c_shape = (LD, B, K), (LD, B, C)
        else:
            out_shape, h_shape, c_shape = (T, DK), (LD, K), (LD, C)
        thread_args = (H, K, B, self.num_directions, self.input_size)
        h0, c0 = self._zero_states(B)
        self._cache(key, _kernels.ForwardPlan(self._packed, self.batch_first, call.x.shape, out_shape, h_shape, c_shape,
                                              h0, c0, thread_args, _MAX_POOLED_WORKSPACES))

    # ---- streaming ----------------------------------------------------------------------------

    def stream(self, batch_size: int = 1, hx: Optional[Any] = None) -> "Stream":
        """A new, independent stream over ``batch_size`` sequences (forward LSTMs only).

        ``s.step(x_t, out=None)`` advances one step (x_t (B, I) -> y_t (B, H_out)); ``s.state`` gives copies of
        (h, c); ``s.reset(hx=None)`` starts over. Stepping gives the same numbers as one forward call.
        """
        return Stream(self, batch_size, hx)


class LSTM(NativeModel):
    """A stacked, optionally bidirectional and projected LSTM for CPU inference, with torch.nn.LSTM's semantics.

    Parameters
    ----------
    input_size : int
        I, the size of each time step of x.
    hidden_size : int
        H, the number of units.
    num_layers : int
        Stacked layers, each feeding its output sequence to the next.
    bias : bool
        Whether the layers have biases ``bias_ih_l{k}`` and ``bias_hh_l{k}``.
    batch_first : bool
        Batched input and output are (B, T, ...) instead of (T, B, ...); hx never is.
    bidirectional : bool
        Each layer also runs from the end of the sequence; outputs are concatenated.
    proj_size : int
        P > 0 projects h to size P with ``weight_hr_l{k}`` (P < H).
    dtype : float32 or float64
        The parameters', the computation's and the results' dtype.
    seed : int or None
        Parameters are drawn from uniform(-1/sqrt(H), 1/sqrt(H)), like torch, reproducibly from this seed.
    peepholes, clip, input_forget
        The ONNX LSTM's extras: ``peepholes`` adds parameters ``weight_ph_l{k}`` (3, H), rows i, f, o;
        ``clip`` clips every gate pre-activation to [-clip, clip]; ``input_forget`` sets f = 1 - i.
    direction : "forward", "reverse", "bidirectional" or None
        None follows ``bidirectional``; "reverse" is a one-direction LSTM that runs from the end of each
        sequence (as ONNX's direction="reverse"), with the plain ``_l{k}`` parameter names.

    Parameters are attributes with torch's names, shapes and gate order (i, f, g, o), e.g.
    ``weight_ih_l0`` (4H, I). They are read-only arrays: assign a new array to the attribute, or use
    ``load_state_dict``, to change them (the packed copy the kernels read is rebuilt then). The
    configuration (``hidden_size``, ``batch_first``, ...) is read-only: for another one, construct a new
    LSTM and ``load_state_dict`` into it.

    Call it as ``output, (h_n, c_n) = lstm(x, hx=None, *, lengths=None)``.
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


def _plan_key(shape: Tuple[int, ...], batch_first: bool) -> Tuple[Any, ...]:
    """The key of the cached ForwardPlan for an input of this shape: the shape without its time axis (axis 1 of
    a batch-first batch, else axis 0), and the layout."""
    return ("plan-bf", shape[0], shape[2]) if batch_first and len(shape) == 3 else ("plan",) + shape[1:]
