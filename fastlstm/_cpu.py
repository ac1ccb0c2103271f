"""The CPU features fastlstm's kernels may use, and the kernels a model is packed for.

The features are this CPU's (found at run time by the compiled module), capped by the environment variable
FASTLSTM_ISA, read once at import: "amx" (no cap), "avx512" (AVX-512 with its VNNI and BF16 extensions, no AMX
tiles), "avx2" (AVX2, FMA, AVX-VNNI), "baseline" (the
architecture's baseline vectors: SSE2 on x86-64, ASIMD on aarch64; "sse2" is accepted as a synonym). A model is
packed for the kernels these features select (see _kernels.kernel_table) and keeps them: changing the cap later
(tests do, through set_cap) never changes a packed model's kernels or its bits.
"""
from __future__ import annotations

import os
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

import numpy as np

from . import _kernels

# FASTLSTM_ISA's values: the feature names each allows (None: every feature)
_AVX512_FEATURES = frozenset({"avx2", "fma", "avx_vnni", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_bf16",
                              "avx512_vnni"})
ISA_CAPS: Dict[str, Optional[FrozenSet[str]]] = {
    "amx": None,
    "avx512": _AVX512_FEATURES,
    "avx2": frozenset({"avx2", "fma", "avx_vnni"}),
    "baseline": frozenset({"asimd"}),
    "sse2": frozenset({"asimd"}),
}

# instruction sets of the x86 kernels and the features each needs, narrowest first (aarch64 runs "baseline")
ISAS: Dict[str, FrozenSet[str]] = {
    "baseline": frozenset(),
    "avx2": frozenset({"avx2", "fma"}),
    "avx512": frozenset({"avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"}),
}

_cap: Optional[FrozenSet[str]] = None


def _mask(names: FrozenSet[str]) -> int:
    return sum(1 << bit for bit, name in _kernels.feature_names().items() if name in names)


def set_cap(isa: str) -> None:
    """Cap the features that models packed from now on may use, by a FASTLSTM_ISA value ("" for no cap)."""
    global _cap
    isa = isa.strip().lower()
    if isa and isa not in ISA_CAPS:
        raise ValueError(f"FASTLSTM_ISA must be one of {sorted(ISA_CAPS)}, got {isa!r}")
    _cap = ISA_CAPS[isa] if isa else None


def feature_names(mask: int) -> List[str]:
    """The names of the features in a bit mask, in bit order."""
    return [name for bit, name in sorted(_kernels.feature_names().items()) if mask >> bit & 1]


def available_isas() -> List[str]:
    """The instruction sets of ISAS this CPU has (whatever the cap), narrowest first."""
    have = set(feature_names(_kernels.cpu_features()))
    return [isa for isa, needs in ISAS.items() if needs <= have]


def features() -> int:
    """The features models packed now may use: this CPU's, within the cap."""
    found = _kernels.cpu_features()
    return found if _cap is None else found & _mask(_cap)


def kernels_for(cell: str, dtype: Any, found: Optional[int] = None) -> Tuple[str, int, int]:
    """(name, vector_bytes, tile_rows) of the kernels a model of this cell kind and dtype (or weight format:
    "bf16", "int8") is packed for on features ``found`` (default: features())."""
    fmt = dtype if isinstance(dtype, str) and dtype in ("bf16", "int8") else np.dtype(dtype).name
    table = _kernels.kernel_table(cell, fmt, features() if found is None else found)
    if table is None:  # (every build has kernels for every cell kind and format: a defensive check)
        raise ValueError(f"no {cell} kernels for {fmt}")
    return table


set_cap(os.environ.get("FASTLSTM_ISA", ""))
