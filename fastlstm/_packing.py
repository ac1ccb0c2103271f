"""Packing of torch-layout parameters into the layouts the micro-kernels read (see src/cell_impl.h).

Done once when parameters are set, never per call. V is the block width of the kernels the model is packed
for (their vector width in elements); hidden units are padded to a multiple of V with zero weights. When the last block
would be at most half full it is packed narrow: V/2 units with two gates per vector (see src/cell_impl.h).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from . import _cpu


def block_width(dtype: np.dtype, cell: str = "lstm") -> int:
    """Hidden units per block of the kernels a model of this cell kind and dtype would be packed for now."""
    return _cpu.kernels_for(cell, dtype)[1] // np.dtype(dtype).itemsize


def _aligned_empty(shape: Tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Zeroed C-contiguous array whose data starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    raw = np.zeros(n + 64 // dtype.itemsize, dtype=dtype)
    offset = (-raw.ctypes.data % 64) // dtype.itemsize
    return raw[offset : offset + n].reshape(shape)


def narrow_last_block(hidden_size: int, V: int) -> bool:
    """Whether the last block of units is packed narrow: it would be at most half full (0 < H mod V <= V/2)."""
    return 0 < hidden_size % V <= V // 2


def gate_rows(hidden_size: int, V: int, narrow: bool = True, num_gates: int = 4) -> np.ndarray:
    """Row index into the (num_gates*H, ...) torch layout for every packed row (j, g, v); -1 for padding units.

    A narrow last block of an LSTM lists its 2V rows first ([i | f], [g | o], V/2 units each), then 2V of padding
    (only when ``narrow`` allows it: the reduced-precision layouts and the GRU's have no narrow block).
    """
    NB = -(-hidden_size // V)
    j, g, v = np.meshgrid(np.arange(NB), np.arange(num_gates), np.arange(V), indexing="ij")
    unit = j * V + v
    rows = np.where(unit < hidden_size, g * hidden_size + unit, -1)
    if narrow and num_gates == 4 and narrow_last_block(hidden_size, V):
        half = V // 2
        pair, lane = np.divmod(np.arange(2 * V), V)           # vector 0 = gates i, f; vector 1 = g, o
        gate, unit = 2 * pair + lane // half, (NB - 1) * V + lane % half
        rows[NB - 1] = -1
        rows[NB - 1].reshape(-1)[: 2 * V] = np.where(unit < hidden_size, gate * hidden_size + unit, -1)
    return rows.reshape(-1)


def _take_rows(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """a[rows] with zero rows where rows == -1."""
    out = np.zeros((rows.size,) + a.shape[1:], dtype=a.dtype)
    valid = rows >= 0
    out[valid] = a[rows[valid]]
    return out


def pack_direction(
    w_ih: np.ndarray,
    w_hh: np.ndarray,
    bias: np.ndarray,
    peep: Optional[np.ndarray],
    w_hr: Optional[np.ndarray],
    V: int,
    narrow: bool = True,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """Pack one layer-direction (``narrow=False``: no narrow last block).

    w_ih (4H, I), w_hh (4H, K), bias (4H,) = b_ih + b_hh, peep (3, H) rows i, f, o or None, w_hr (P, H) or None
    -> w_ih_p (NB, I, 4, V); w_hh_p (NB, K, 4, V); bias_p (NB, 4, V); peep_p (NB, 3, V);
       w_hr_p (NP, H, V). A narrow last block fills the front of its slot: (n, 2, V) of w_ih_p / w_hh_p, (2, V)
       of bias_p, and [p_i | p_f], [0 | p_o] of peep_p.
    """
    dtype = w_ih.dtype
    H = w_hh.shape[0] // 4
    NB = -(-H // V)
    rows = gate_rows(H, V, narrow)
    narrow = narrow and narrow_last_block(H, V)

    def pack_gates(w: np.ndarray) -> np.ndarray:  # (4H, n) -> (NB, n, 4, V)
        n = w.shape[1]
        packed = _aligned_empty((NB, n, 4, V), dtype)
        packed[...] = _take_rows(w, rows).reshape(NB, 4, V, n).transpose(0, 3, 1, 2)
        if narrow:  # the last slot's first 2V packed rows become (n, 2, V)
            last = _take_rows(w, rows.reshape(NB, 4 * V)[-1, : 2 * V])
            packed[-1] = 0
            packed[-1].reshape(-1)[: n * 2 * V] = last.reshape(2, V, n).transpose(2, 0, 1).reshape(-1)
        return packed

    w_ih_p, w_hh_p = pack_gates(w_ih), pack_gates(w_hh)
    bias_p = _aligned_empty((NB, 4, V), dtype)
    bias_p[...] = _take_rows(bias[:, None], rows).reshape(NB, 4, V)
    peep_p = None
    if peep is not None:
        padded = np.zeros((3, NB * V), dtype=dtype)
        padded[:, :H] = peep
        peep_p = _aligned_empty((NB, 3, V), dtype)
        peep_p[...] = padded.reshape(3, NB, V).transpose(1, 0, 2)
        if narrow:
            half, last = V // 2, peep_p[-1].copy()                 # rows i, f, o of V lanes, V/2 real
            peep_p[-1] = 0
            peep_p[-1, 0, :half], peep_p[-1, 0, half:] = last[0, :half], last[1, :half]
            peep_p[-1, 1, half:] = last[2, :half]
    w_hr_p = None
    if w_hr is not None:
        P = w_hr.shape[0]
        NP = -(-P // V)
        padded = np.zeros((NP * V, H), dtype=dtype)
        padded[:P] = w_hr
        w_hr_p = _aligned_empty((NP, H, V), dtype)
        w_hr_p[...] = padded.reshape(NP, V, H).transpose(0, 2, 1)
    return w_ih_p, w_hh_p, bias_p, peep_p, w_hr_p


def _pack_quant_gates(q: np.ndarray, scale: Optional[np.ndarray], rows: np.ndarray, ng: int, V: int) -> np.ndarray:
    """Blocks of ng gate vectors of a stored matrix q (N, K) (bf16 bits, or int8 with scales (N,)), packed rows
    `rows` (-1: padding): bf16 (NB, K2, ng, V, 2) uint16; int8 (NB, block bytes) uint8, each block a header of
    scales (ng, V) float32 and corrections (ng, V) int32 (-128 * the row sums) then (K4, ng, V, 4) int8 (see
    src/quant_impl.h)."""
    group = 2 if scale is None else 4
    NB, K = rows.size // (ng * V), q.shape[1]
    Kp = -(-K // group) * group
    w = np.zeros((rows.size, Kp), dtype=q.dtype)
    w[:, :K] = _take_rows(q, rows)
    w = w.reshape(NB, ng, V, Kp // group, group).transpose(0, 3, 1, 2, 4)
    if scale is None:
        packed = _aligned_empty(w.shape, np.dtype(np.uint16))
        packed[...] = w
        return packed
    header_scale = _take_rows(scale[:, None], rows).reshape(NB, ng * V).astype(np.float32)
    corr = (-128 * _take_rows(q.astype(np.int32).sum(axis=1)[:, None], rows)).reshape(NB, ng * V).astype(np.int32)
    packed = _aligned_empty((NB, 8 * ng * V + w[0].size), np.dtype(np.uint8))
    packed[:, : 4 * ng * V] = header_scale.view(np.uint8)
    packed[:, 4 * ng * V : 8 * ng * V] = corr.view(np.uint8)
    packed[:, 8 * ng * V :] = w.reshape(NB, -1).view(np.uint8)
    return packed


def pack_direction_quant(
    w_ih: Tuple[np.ndarray, Optional[np.ndarray]],
    w_hh: Tuple[np.ndarray, Optional[np.ndarray]],
    bias: np.ndarray,
    peep: Optional[np.ndarray],
    w_hr: Optional[Tuple[np.ndarray, Optional[np.ndarray]]],
    V: int,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray], Optional[np.ndarray], int]:
    """Pack one layer-direction of a bf16 or int8 model (layouts at the top of src/quant_impl.h).

    w_ih, w_hh, w_hr: stored matrices (q, scale) as fastlstm._quant.quantize_matrix makes them (scale None for
    bf16); bias (4H,) and peep (3, H) float32 as for pack_direction. No block is narrow.
    -> (w_ih_p, w_hh_p, bias_p, peep_p, w_hr_p, input size).
    """
    H = w_hh[0].shape[0] // 4
    rows = gate_rows(H, V, narrow=False)
    bias32 = np.asarray(bias, dtype=np.float32)
    _, _, bias_p, peep_p, _ = pack_direction(
        np.zeros((4 * H, 0), np.float32), np.zeros((4 * H, 0), np.float32), bias32,
        None if peep is None else np.asarray(peep, np.float32), None, V, narrow=False,
    )
    w_hr_p = None
    if w_hr is not None:
        P = w_hr[0].shape[0]
        NP = -(-P // V)
        w_hr_p = _pack_quant_gates(w_hr[0], w_hr[1], np.where(np.arange(NP * V) < P, np.arange(NP * V), -1), 1, V)
    return (_pack_quant_gates(w_ih[0], w_ih[1], rows, 4, V), _pack_quant_gates(w_hh[0], w_hh[1], rows, 4, V),
            bias_p, peep_p, w_hr_p, w_ih[0].shape[1])
