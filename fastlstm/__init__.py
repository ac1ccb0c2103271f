"""fastlstm: run trained LSTM networks fast on the CPU, with torch.nn.LSTM's semantics, NumPy in and out.

    import fastlstm
    lstm = fastlstm.LSTM(input_size=32, hidden_size=64, num_layers=2, seed=0)
    output, (h_n, c_n) = lstm(x)                    # x: (T, B, 32)
    lstm = fastlstm.LSTM.from_torch(torch_module)   # same numbers as the torch module

FASTLSTM_ISA=avx2|sse2 caps the instruction set the kernels use (default: the best this CPU has).
"""
import os as _os
from typing import Union

try:
    from . import _kernels
except ImportError as _exc:
    if _os.path.exists(_os.path.join(_os.path.dirname(__file__), "..", "setup.py")):
        raise ImportError(
            "fastlstm is being imported from its source tree, which holds no compiled kernels. Run from another "
            "directory to use the installed package (python -m puts the current directory first on sys.path), "
            "or build in place: python setup.py build_ext --inplace"
        ) from _exc
    raise

_ISA_LEVELS = {"avx512": 2, "avx2": 1, "sse2": 0}
_isa = _os.environ.get("FASTLSTM_ISA", "").strip().lower()
if _isa and _isa not in _ISA_LEVELS:
    raise ImportError(f"FASTLSTM_ISA must be one of {sorted(_ISA_LEVELS)}, got {_isa!r}")
_kernels.select_isa(_ISA_LEVELS.get(_isa, -1))

from . import reference  # noqa: E402
from ._lstm import LSTM  # noqa: E402
from ._threads import get_num_threads, set_num_threads  # noqa: E402

__version__ = "0.1.0"


def load(path: Union[str, "_os.PathLike[str]"]) -> LSTM:
    """Read a model written by ``LSTM.save(path)``; never unpickles (a file holding a pickle: ValueError)."""
    from . import _interop

    model: LSTM = _interop.load(LSTM, path)
    return model


def openmp_enabled() -> bool:
    """Whether the compiled kernels were built with OpenMP (else they run on one thread)."""
    return _kernels.openmp_enabled()


__all__ = ["LSTM", "load", "reference", "set_num_threads", "get_num_threads", "openmp_enabled", "__version__"]
