"""Streaming: feed an LSTM one time step at a time, keeping its state between calls.

A Stream owns its state and workspace, so streams are independent of each other and of the model's own
calls. A step is one native call for all layers with the GIL released; with ``out=`` it allocates nothing.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from . import _kernels, _packing, _threads
from ._base import _as_numeric_array, _check_hx_pair


class Stream:
    """State of one streaming run of a forward LSTM over ``batch_size`` sequences.

    Create with ``lstm.stream(batch_size=1, hx=None)``. Stepping through a sequence gives the same numbers
    as one forward call over it.
    """

    def __init__(self, model: Any, batch_size: int = 1, hx: Optional[Tuple[Any, Any]] = None) -> None:
        if model.direction != "forward":
            raise ValueError(f"stream: only forward LSTMs can stream, this one is {model.direction!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"stream: batch_size must be a positive integer, got {batch_size!r}")
        self._model = model
        self.batch_size = B = int(batch_size)
        LD = model.num_layers
        self._h = np.zeros((LD, B, model.out_size), model.dtype)
        self._c = np.zeros((LD, B, model.hidden_size), model.dtype)
        self._lengths = np.ones(B, np.int32)
        self._x_shape = (B, model.input_size)
        self._out_shape = (B, model.out_size)
        self._threads = _threads.stream_threads(model.hidden_size, model.out_size, model.input_size, B)
        self._packed = None
        self._workspace = None
        self.reset(hx)

    def _check_packed(self):
        """The model's packed weights; the workspace follows them (parameters may have been reassigned)."""
        packed = self._model._packed
        if packed is not self._packed:
            self._workspace = _packing._aligned_empty((packed.workspace_size(1, self.batch_size),), self._model.dtype)
            self._packed = packed
        return packed

    def reset(self, hx: Optional[Tuple[Any, Any]] = None) -> None:
        """Start over from (h_0, c_0) shaped (num_layers, B, H_out) and (num_layers, B, H); zeros if None."""
        if hx is None:
            self._h[...] = 0
            self._c[...] = 0
            return
        h0, c0 = _check_hx_pair(hx)
        h0, c0 = _as_numeric_array("hx[0]", h0), _as_numeric_array("hx[1]", c0)
        if h0.shape != self._h.shape:
            raise ValueError(f"Expected hidden[0] size {self._h.shape}, got {tuple(h0.shape)}")
        if c0.shape != self._c.shape:
            raise ValueError(f"Expected hidden[1] size {self._c.shape}, got {tuple(c0.shape)}")
        self._h[...] = h0
        self._c[...] = c0

    @property
    def state(self) -> Tuple[np.ndarray, np.ndarray]:
        """Copies of (h, c), shaped like the (h_n, c_n) of a forward call."""
        return self._h.copy(), self._c.copy()

    def step(self, x_t: Any, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Advance one time step: x_t (B, I) -> y_t (B, H_out), whatever batch_first is.

        With ``out`` (C-contiguous, (B, H_out), the model's dtype, writable) the result is written there and
        ``out`` itself is returned; nothing is allocated.
        """
        dtype = self._model.dtype
        if not (type(x_t) is np.ndarray and x_t.dtype == dtype and x_t.shape == self._x_shape
                and x_t.flags.c_contiguous):
            x_t = self._convert_input(x_t)
        if out is None:
            out = np.empty(self._out_shape, dtype)
        elif not (type(out) is np.ndarray and out.dtype == dtype and out.shape == self._out_shape
                  and out.flags.c_contiguous and out.flags.writeable):
            raise ValueError(
                f"out must be a writable C-contiguous {dtype} array of shape {self._out_shape}, got "
                + (f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__)
            )
        packed = self._check_packed()
        threads = 1 if _threads._forked_child else self._threads
        _kernels.stream_step(packed, x_t, out, self._h, self._c, self._lengths, self._workspace, threads)
        return out

    def _convert_input(self, x_t: Any) -> np.ndarray:
        arr = _as_numeric_array("x_t", x_t)
        if arr.shape != self._x_shape:
            raise ValueError(f"x_t: expected shape {self._x_shape} (batch_size, input_size), got {arr.shape}")
        return np.ascontiguousarray(arr, dtype=self._model.dtype)
