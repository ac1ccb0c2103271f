"""fastlstm: run trained LSTM networks fast on the CPU, with torch.nn.LSTM's semantics, NumPy in and out.

    import fastlstm
    lstm = fastlstm.LSTM(input_size=32, hidden_size=64, num_layers=2, seed=0)
    output, (h_n, c_n) = lstm(x)                    # x: (T, B, 32)
    lstm = fastlstm.LSTM.from_torch(torch_module)   # same numbers as the torch module

FASTLSTM_ISA=avx2|baseline caps the CPU features the kernels use (default: the best this CPU has).
"""
import os as _os

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

try:
    from . import _cpu  # reads FASTLSTM_ISA: the CPU features models may use
except ValueError as _exc:
    raise ImportError(str(_exc)) from None

from . import reference  # noqa: E402
from ._lstm import LSTM  # noqa: E402
from ._threads import get_num_threads, set_num_threads  # noqa: E402

__version__ = "0.1.0"


def load(path) -> LSTM:
    """Read a model written by ``LSTM.save(path)``; never unpickles (a file holding a pickle: ValueError)."""
    from . import _interop

    return _interop.load(LSTM, path)


def openmp_enabled() -> bool:
    """Whether the compiled kernels were built with OpenMP (else they run on one thread)."""
    return _kernels.openmp_enabled()


__all__ = ["LSTM", "load", "reference", "set_num_threads", "get_num_threads", "openmp_enabled", "__version__"]
