"""fastlstm.LSTM: torch.nn.LSTM's forward semantics on NumPy arrays, computed by the native kernels.

Python does the checking (fastlstm._base), the conversion of inputs to the model's dtype and layout, and the
bookkeeping of workspaces; one call into fastlstm._kernels then runs every layer and direction with the GIL
released. After a first checked call, calls with the same batch and input size go to a cached
_kernels.ForwardPlan, which checks and converts them in C the same way (or hands them back to Python).
"""
from __future__ import annotations

import threading
from typing import Any, List, Optional

import numpy as np

from . import _cpu, _kernels, _packing, _threads
from ._base import LSTMBase, ValidatedCall
from ._stream import Stream

__all__ = ["LSTM"]

# workspaces kept per model for reuse by later calls (one per concurrently running call)
_MAX_POOLED_WORKSPACES = 8
# zero states, full-length arrays and call plans kept per model, for the shapes of recent calls
_MAX_CACHED_CONSTANTS = 16


class LSTM(LSTMBase):
    """A stacked, optionally bidirectional and projected LSTM for CPU inference.

    ``fastlstm.LSTM(input_size, hidden_size, num_layers=1, *, bias=True, batch_first=False,
    bidirectional=False, proj_size=0, dtype=np.float32, seed=None, peepholes=False, clip=None,
    input_forget=False)``

    Beyond torch, the ONNX LSTM's extras: ``peepholes`` adds parameters ``weight_ph_l{k}`` (3, H), rows
    i, f, o; ``clip`` clips every gate pre-activation to [-clip, clip]; ``input_forget`` sets f = 1 - i.

    Parameters are attributes with torch's names, shapes and gate order (i, f, g, o), e.g.
    ``weight_ih_l0`` (4H, I). They are read-only arrays: assign a new array to the attribute, or use
    ``load_state_dict``, to change them (the packed copy the kernels read is rebuilt then).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        object.__setattr__(self, "_lock", threading.Lock())
        object.__setattr__(self, "_workspaces", [])
        object.__setattr__(self, "_constants", {})
        super().__init__(*args, **kwargs)

    # ---- packing ------------------------------------------------------------------------------

    def _parameters_changed(self) -> None:
        cell, dtype, features = self._cell, np.dtype(self.dtype), _cpu.features()
        V = _cpu.kernels_for(cell.name, dtype, features)[1] // dtype.itemsize
        arrays = []
        for layer in range(self.num_layers):
            for sfx in self._suffixes():
                name = lambda p: f"{p}_l{layer}{sfx}"  # noqa: E731
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

    def _cached(self, key: tuple, make) -> Any:
        """A cached value (zero states, full lengths), made read-only: steady-state calls allocate only their
        outputs."""
        value = self._constants.get(key)
        if value is None:
            value = make()
            for arr in value if isinstance(value, tuple) else (value,):
                arr.flags.writeable = False
            self._cache(key, value)
        return value

    def _zero_states(self, B: int) -> tuple:
        """Cached read-only zero (h_0, c_0) for B rows, shaped (L*D, B, H_out) and (L*D, B, H)."""
        LD, H, K, _ = self._state_sizes
        return self._cached(("state", B), lambda: (np.zeros((LD, B, K), self.dtype), np.zeros((LD, B, H), self.dtype)))

    def _cache(self, key: tuple, value: Any) -> None:
        with self._lock:
            if len(self._constants) >= _MAX_CACHED_CONSTANTS:
                self._constants.clear()
            self._constants[key] = value

    # ---- forward ------------------------------------------------------------------------------

    def __call__(self, x: Any, hx: Optional[Any] = None, *, lengths: Any = None):
        # The common call (an array, hx None or a pair of arrays, lengths None or B valid integers; see
        # ForwardPlan) in one native call once a call of the same batch and input size has been checked and its
        # plan cached.
        if type(x) is np.ndarray:
            shape = x.shape  # the key without the time axis, as _plan_key makes it (inline: no call)
            plan = self._constants.get(("plan-bf", shape[0], shape[2]) if self.batch_first and len(shape) == 3
                                       else ("plan",) + shape[1:])
            if plan is not None:
                result = plan.run(self, x, hx, lengths)
                if result is not None:
                    return result
        return super().__call__(x, hx, lengths=lengths)

    __call__.__doc__ = LSTMBase.__call__.__doc__
    forward = __call__

    def _forward_validated(self, call: ValidatedCall):
        dtype, packed = self.dtype, self._packed
        T, B = call.T, call.B
        LD, H, K, DK = self._state_sizes
        x = call.x
        if not (x.dtype == dtype and x.flags.c_contiguous):
            x = np.ascontiguousarray(x, dtype=dtype)
        if not call.batched:
            x = x.reshape(T, 1, self.input_size)
        if call.h0 is None:
            h0, c0 = self._zero_states(B)
        else:
            h0 = np.ascontiguousarray(call.h0, dtype).reshape(LD, B, K)
            c0 = np.ascontiguousarray(call.c0, dtype).reshape(LD, B, H)
        batch_first = self.batch_first and call.batched
        out = np.empty((B, T, DK) if batch_first else (T, B, DK), dtype)
        if T == 0 or B == 0:
            hn, cn = h0.copy(), c0.copy()
        else:
            hn = np.empty((LD, B, K), dtype)
            cn = np.empty((LD, B, H), dtype)
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
            return out.reshape(T, DK), (hn.reshape(LD, K), cn.reshape(LD, H))
        return out, (hn, cn)

    def _make_plan(self, call: ValidatedCall, out_shape: tuple) -> None:
        """Cache the ForwardPlan of call's layout and batch (all T) unless one for the current weights exists."""
        key = _plan_key(call.x.shape, self.batch_first)
        plan = self._constants.get(key)
        if plan is not None and plan.packed is self._packed:
            return
        LD, H, K, DK = self._state_sizes
        B, T = call.B, call.T
        if call.batched:
            shapes = (call.x.shape, out_shape, (LD, B, K), (LD, B, H))
        else:
            shapes = (call.x.shape, (T, DK), (LD, K), (LD, H))
        thread_args = (H, K, B, self.num_directions, self.input_size)
        self._cache(key, _kernels.ForwardPlan(self._packed, self.batch_first, *shapes, *self._zero_states(B),
                                              thread_args, _MAX_POOLED_WORKSPACES))

    # ---- streaming ----------------------------------------------------------------------------

    def stream(self, batch_size: int = 1, hx: Optional[Any] = None) -> "Stream":
        """A new, independent stream over ``batch_size`` sequences (forward LSTMs only).

        ``s.step(x_t, out=None)`` advances one step (x_t (B, I) -> y_t (B, H_out)); ``s.state`` gives copies of
        (h, c); ``s.reset(hx=None)`` starts over. Stepping gives the same numbers as one forward call.
        """
        return Stream(self, batch_size, hx)


def _plan_key(shape: tuple, batch_first: bool) -> tuple:
    """The key of the cached ForwardPlan for an input of this shape: the shape without its time axis (axis 1 of
    a batch-first batch, else axis 0), and the layout (a model's batch_first may be changed between calls)."""
    return ("plan-bf", shape[0], shape[2]) if batch_first and len(shape) == 3 else ("plan",) + shape[1:]
