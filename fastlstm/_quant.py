"""Reduced-precision weights (bf16, int8): how values are rounded, in one place.

Shared by the models (their stored weights, fastlstm._lstm packs them for the kernels in src/quant_impl.h) and by
the oracle (fastlstm.reference, which applies the same run-time rounding of x and h in float64 arithmetic).
Nothing here computes an LSTM.

- bf16: float32 -> bfloat16 by rounding to the nearest even (NaN stays NaN); weights, x and h alike.
- int8 weights: symmetric, one scale per output row n: s_n = max|W[n, :]| / 127 (float32), q = rint(W / s_n)
  clipped to [-127, 127]; an all-zero row has s_n = 0 and q = 0.
- int8 activations (x, h, the projection's input; at run time, per batch row v, in float32): s = max|v| / 127 and
  q = rint(v * (127 / max|v|)). A row holding NaN or inf gets q = 0 and s = NaN.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import numpy.typing

FORMATS = ("bf16", "int8")
# largest dot-product length whose int32 sum cannot overflow (127 * 127 * K < 2^31)
INT8_MAX_LENGTH = 131072


def check_format(weights: str) -> str:
    """``weights`` if it is a reduced-precision format ("bf16", "int8"), else ValueError naming it."""
    if not isinstance(weights, str) or weights not in FORMATS:
        raise ValueError(f"weights must be one of {list(FORMATS)}, got {weights!r}")
    return weights


def bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 (nearest even), as uint16 bit patterns."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    return np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), rounded)


def bf16_values(bits: np.ndarray) -> np.ndarray:
    """The float32 values of bfloat16 bit patterns."""
    return (np.asarray(bits, dtype=np.uint32) << 16).view(np.float32)


def quantize_matrix(w: np.ndarray, weights: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """A weight matrix (N, K) in the format: (bf16 bits uint16, None) or (int8 q, float32 scales (N,))."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    if weights == "bf16":
        return bf16_bits(w), None
    with np.errstate(invalid="ignore", divide="ignore"):
        amax = np.abs(w).max(axis=1) if w.shape[1] else np.zeros(w.shape[0], np.float32)
        scale = (amax / np.float32(127)).astype(np.float32)
        q = np.where(scale[:, None] > 0, np.rint(np.clip(w / scale[:, None], -127, 127)), 0)
    return np.nan_to_num(q).astype(np.int8), scale


def dequantize(q: np.ndarray, scale: Optional[np.ndarray], dtype: "np.typing.DTypeLike" = np.float32) -> np.ndarray:
    """The values a stored matrix stands for: bf16 bits -> their values; int8 -> q * scale per row."""
    if scale is None:
        return bf16_values(q).astype(dtype)
    result: np.ndarray = (q.astype(dtype) * scale.astype(dtype)[:, None]).astype(dtype)
    return result


def round_rows(v: np.ndarray, weights: str) -> np.ndarray:
    """The values the kernels use for activation rows v (..., K) (float64 result): bf16-rounded, or int8
    dequantized (q * s, see the module docstring)."""
    v32 = np.asarray(v, dtype=np.float64).astype(np.float32)
    if weights == "bf16":
        return bf16_values(bf16_bits(v32)).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        bad = ~np.all(np.isfinite(v32), axis=-1)
        amax = np.where(bad, np.float32(0), np.abs(np.where(np.isfinite(v32), v32, 0)).max(axis=-1, initial=0))
        amax = amax.astype(np.float32)
        zero = amax == 0
        inv = np.where(zero, np.float32(0), np.float32(127) / np.where(zero, np.float32(1), amax))
        s = np.where(zero, np.float32(0), amax / np.float32(127)).astype(np.float32)
        f = np.clip((v32 * inv.astype(np.float32)[..., None]).astype(np.float32), -127, 127)
        q = np.where(bad[..., None], 0, np.rint(np.nan_to_num(f)))
        s = np.where(bad, np.nan, s.astype(np.float64))
    return q * s[..., None]
