"""Streaming: feed an LSTM one time step at a time, keeping its state between calls.

A Stream owns its state and workspace, so streams are independent of each other and of the model's own
calls. A step is one native call for all layers with the GIL released; with ``out=`` it allocates nothing.
"""
from __future__ import annotations

import threading
import weakref
from typing import Any, Optional, Tuple

import numpy as np

from . import _kernels, _threads
from ._base import _INT_MAX, _as_numeric_array, _check_hx_pair


class Stream(_kernels.StreamCore):
    """State of one streaming run of a forward LSTM (or GRU) over ``batch_size`` sequences.

    Create with ``lstm.stream(batch_size=1, hx=None)``. Stepping through a sequence gives the same numbers
    as one forward call over it. ``step`` (from the native base class) takes the common call, arrays of the
    model's dtype and the stream's shapes, without leaving C; any other call comes to ``_step_checked``.
    """

    def __init__(self, model: Any, batch_size: int = 1, hx: Optional[Any] = None) -> None:
        if model.direction != "forward":
            raise ValueError(
                f"stream: only forward {model._cell.name.upper()}s can stream, this one is {model.direction!r}"
            )
        if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)):
            raise TypeError(f"stream: batch_size should be of type int, got: {type(batch_size).__name__}")
        if batch_size < 1:
            raise ValueError(f"stream: batch_size must be a positive integer, got {batch_size!r}")
        if batch_size > _INT_MAX:  # the kernels count rows in a C int
            raise ValueError(f"stream: batch_size must be at most {_INT_MAX}, got {batch_size}")
        self.batch_size = B = int(batch_size)
        super().__init__(model, B, _thread_count(model, B))
        self.reset(hx)
        with _live_lock:
            _live.add(self)

    def __reduce__(self) -> Tuple[Any, ...]:
        """Pickle the model (shared with other objects pickled alongside it), the batch size and the state:
        the steps of an unpickled stream give bitwise what this stream's next steps give."""
        return (_unpickle, (self._model, self.batch_size, self._h, self._c))

    def reset(self, hx: Optional[Any] = None) -> None:
        """Start over from (h_0, c_0) shaped (num_layers, B, H_out) and (num_layers, B, H) (a GRU's: h_0 alone);
        zeros if None."""
        if hx is None:
            self._h[...] = 0
            self._c[...] = 0
            return
        if len(self._model._cell.state) == 1:
            h0 = _as_numeric_array("hx", hx)
            if h0.shape != self._h.shape:
                raise ValueError(f"Expected hidden size {self._h.shape}, got {tuple(h0.shape)}")
            self._h[...] = h0
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
    def state(self) -> Any:
        """Copies of (h, c), shaped like the (h_n, c_n) of a forward call; a GRU's: a copy of h."""
        if len(self._model._cell.state) == 1:
            return self._h.copy()
        return self._h.copy(), self._c.copy()

    def _step_checked(self, x_t: Any, out: Optional[np.ndarray]) -> np.ndarray:
        """step() of any other call: x_t converted to the model's dtype, or an error naming the argument."""
        B, dtype = self.batch_size, self._model.dtype
        x_shape, out_shape = (B, self._model.input_size), (B, self._model.out_size)
        x = _as_numeric_array("x_t", x_t)
        if x.shape != x_shape:
            raise ValueError(f"x_t: expected shape {x_shape} (batch_size, input_size), got {x.shape}")
        x = np.ascontiguousarray(x, dtype=dtype)
        if out is None:
            out = np.empty(out_shape, dtype)
        elif not (type(out) is np.ndarray and out.dtype == dtype and out.shape == out_shape
                  and out.flags.c_contiguous and out.flags.writeable):
            raise ValueError(
                f"out must be a writable C-contiguous {dtype} array of shape {out_shape}, got "
                + (f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__)
            )
        self._run(x, out)
        return out


def _thread_count(model: Any, batch_size: int) -> int:
    """Threads for a step of ``batch_size`` rows of ``model`` under the current thread setting."""
    return _threads.stream_threads(model.hidden_size, model.out_size, model.input_size, batch_size)


def _unpickle(model: Any, batch_size: int, h: np.ndarray, c: np.ndarray) -> Stream:
    """A stream of ``model`` over ``batch_size`` rows whose state is (h, c) (a GRU's: h; its c is scratch)."""
    return Stream(model, batch_size, (h, c) if len(model._cell.state) == 2 else h)


# Every live stream, so that a change of the thread setting (set_num_threads, a threadpoolctl limit) reaches
# the streams made before it: a step reads its thread count from the stream.
_live: "weakref.WeakSet[Stream]" = weakref.WeakSet()
_live_lock = threading.Lock()


def _follow_thread_setting() -> None:
    with _live_lock:
        streams = list(_live)
    for stream in streams:
        stream._threads = _thread_count(stream._model, stream.batch_size)


_threads._on_change.append(_follow_thread_setting)
