"""Shared helpers of fastlstm's test suite: the report header, optional peers, comparisons that say where
they differ, model pairs (fast + reference with the same weights) and subprocesses running the same package.

The tests import the installed fastlstm (this directory has no __init__.py, so the source tree is not put
on sys.path by pytest). Run pytest with ``python -P -m pytest`` or the ``pytest`` script from a checkout:
plain ``python -m pytest`` puts the working directory first on sys.path, which imports an in-tree build.
The header printed at the start of every run shows which fastlstm was imported.
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from typing import Any, Dict, Optional, Sequence

import numpy as np
import pytest

# ---- report header ------------------------------------------------------------------------------


def pytest_report_header(config):
    try:
        import fastlstm
        from fastlstm import _cpu, _kernels
    except Exception as exc:  # the tests will fail with the full error; say it up front too
        return [f"fastlstm: import failed: {type(exc).__name__}: {exc}"]
    lines = [
        f"fastlstm {fastlstm.__version__} from {os.path.dirname(fastlstm.__file__)}",
        f"fastlstm: kernels={_cpu.kernels_for('lstm', np.dtype(np.float32))[0]} "
        f"(cpu features {' '.join(_cpu.feature_names(_kernels.cpu_features()))}), "
        f"openmp_enabled={fastlstm.openmp_enabled()}, get_num_threads={fastlstm.get_num_threads()}, "
        f"FASTLSTM_ISA={os.environ.get('FASTLSTM_ISA', '')!r}, CI={os.environ.get('CI', '')!r}",
    ]
    pkg_parent = os.path.realpath(os.path.dirname(os.path.dirname(fastlstm.__file__)))
    if pkg_parent == os.path.realpath(str(config.rootpath)):
        lines.append("fastlstm: WARNING: imported from the source tree under test, not an installed build")
    return lines


# ---- optional peers -----------------------------------------------------------------------------


def require(module_name: str):
    """Import a peer (torch, onnxruntime, ...) for a parity test.

    Missing: the test is skipped, except under CI (environment variable CI set and non-empty), where parity
    tests must run, so the test fails instead.
    """
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        missing_peer(f"{module_name} cannot be imported: {type(exc).__name__}: {exc}. Install it (for torch: "
                     f"torch==2.13.0, CPU build) so that the parity tests run.")


def missing_peer(reason: str):
    """Skip a parity test that lacks a peer package, or fail it under CI (CI set and non-empty)."""
    if os.environ.get("CI", ""):
        pytest.fail(f"required when CI is set (CI={os.environ['CI']!r}): {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(name="require", scope="session")
def require_fixture():
    """``require("torch")`` inside a test or fixture: the module, or skip (fail under CI) when it is missing."""
    return require


# ---- comparisons that report where they differ --------------------------------------------------

TOLERANCE = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-10}


def tol(dtype) -> float:
    """Absolute tolerance against the float64 reference or torch for a model of ``dtype``."""
    return TOLERANCE[np.dtype(dtype)]


def _describe(actual: np.ndarray, expected: np.ndarray, bad: np.ndarray, limit: int = 5) -> str:
    idx = np.argwhere(bad)
    lines = []
    for i in idx[:limit]:
        i = tuple(int(v) for v in i)
        a, e = actual[i], expected[i]
        lines.append(f"    at {i}: got {a!r}, expected {e!r}, diff {abs(float(a) - float(e)):.3g}")
    return "\n".join(lines)


def assert_close(actual, expected, *, atol: float, rtol: float = 0.0, name: str = "array", equal_nan: bool = False):
    """Elementwise |actual - expected| <= atol + rtol*|expected|; on failure, the first differing elements."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape}, expected {expected.shape}"
    a64 = actual.astype(np.float64)
    e64 = expected.astype(np.float64)
    ok = np.isclose(a64, e64, rtol=rtol, atol=atol, equal_nan=equal_nan)
    if not ok.all():
        bad = ~ok
        with np.errstate(invalid="ignore"):
            diff = np.abs(a64 - e64)
        finite = diff[np.isfinite(diff)]
        worst = f"{finite.max():.3g}" if finite.size else "n/a"
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {bad.size} elements differ (atol={atol:g}, rtol={rtol:g}, "
            f"max finite |diff|={worst}); first ones:\n{_describe(actual, expected, bad)}"
        )


def assert_bitwise_equal(actual, expected, *, name: str = "array"):
    """Same shape, dtype and bits (NaNs included); on failure, the first differing elements."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape}, expected {expected.shape}"
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype}, expected {expected.dtype}"
    uint = np.dtype(f"u{actual.dtype.itemsize}")
    bad = np.ascontiguousarray(actual).view(uint) != np.ascontiguousarray(expected).view(uint)
    if bad.any():
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {bad.size} elements are not bitwise equal; first ones:\n"
            f"{_describe(actual, expected, bad)}"
        )


def assert_forward_close(got, want, dtype, *, atol: Optional[float] = None, equal_nan: bool = False, what: str = ""):
    """Compare two ``output, (h_n, c_n)`` results; dtypes must be the model's."""
    atol = tol(dtype) if atol is None else atol
    out, (hn, cn) = got
    out_e, (hn_e, cn_e) = want
    prefix = f"{what}: " if what else ""
    for label, a, e in (("output", out, out_e), ("h_n", hn, hn_e), ("c_n", cn, cn_e)):
        assert isinstance(a, np.ndarray), f"{prefix}{label} is {type(a).__name__}, not an ndarray"
        assert a.dtype == np.dtype(dtype), f"{prefix}{label} dtype {a.dtype}, expected {np.dtype(dtype)}"
        assert_close(a, e, atol=atol, name=prefix + label, equal_nan=equal_nan)


def assert_forward_bitwise(got, want, *, what: str = ""):
    """Compare two ``output, (h_n, c_n)`` (LSTM) or ``output, h_n`` (GRU) results bit for bit."""
    def arrays(result):
        out, state = result
        return [out, *(state if isinstance(state, tuple) else (state,))]

    prefix = f"{what}: " if what else ""
    got_arrays, want_arrays = arrays(got), arrays(want)
    assert len(got_arrays) == len(want_arrays), f"{prefix}{len(got_arrays)} arrays, expected {len(want_arrays)}"
    for label, a, e in zip(("output", "h_n", "c_n"), got_arrays, want_arrays):
        assert_bitwise_equal(a, e, name=prefix + label)


# ---- models and inputs --------------------------------------------------------------------------


def model_pair(input_size: int, hidden_size: int, num_layers: int = 1, *, seed: int = 0, **kwargs: Any):
    """(fastlstm.LSTM, fastlstm.reference.LSTM) with the same configuration and the same weights."""
    import fastlstm

    fast = fastlstm.LSTM(input_size, hidden_size, num_layers, seed=seed, **kwargs)
    ref = fastlstm.reference.LSTM(input_size, hidden_size, num_layers, seed=seed, **kwargs)
    for name, value in fast.state_dict().items():  # the same seed must give the same weights
        assert np.array_equal(value, getattr(ref, name)), f"seed {seed} gave different {name} in the reference"
    return fast, ref


def make_inputs(
    model,
    T: int,
    B: int,
    *,
    rng: np.random.Generator,
    hx: bool = False,
    lengths: bool = False,
    unbatched: bool = False,
    scale: float = 1.0,
    pad_value: Optional[float] = None,
) -> Dict[str, Any]:
    """Random call arguments for ``model`` in its dtype: {"x": ..., "hx": ... or None, "lengths": ... or None};
    hx is (h_0, c_0), or h_0 alone for a GRU.

    With lengths, the first row has the full length T (so every padding layout occurs) and the others are
    random in [1, T]; ``pad_value`` fills the time steps past each length (x is then a copy).
    """
    dtype = model.dtype
    D = 2 if model.bidirectional else 1
    LD = D * model.num_layers
    K = model.proj_size or model.hidden_size
    H = model.hidden_size
    I = model.input_size
    x = (rng.standard_normal((T, B, I)) * scale).astype(dtype)
    lens = None
    if lengths:
        lens = rng.integers(1, T + 1, size=B) if T > 0 else np.zeros(B, np.int64)
        if B > 0 and T > 0:
            lens[0] = T
        if pad_value is not None:
            for b in range(B):
                x[lens[b] :, b, :] = pad_value
    h = None
    if hx:
        h = (
            (rng.standard_normal((LD, B, K)) * 0.5).astype(dtype),
            (rng.standard_normal((LD, B, H)) * 0.5).astype(dtype),
        )
    if unbatched:
        assert B == 1
        x = x[:, 0, :]
        if h is not None:
            h = (h[0][:, 0, :], h[1][:, 0, :])
    elif model.batch_first:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    if h is not None and len(model._cell.state) == 1:  # a GRU's state is h alone
        h = h[0]
    return {"x": x, "hx": h, "lengths": lens}


def call(model, args: Dict[str, Any]):
    return model(args["x"], args["hx"], lengths=args["lengths"])


# ---- subprocesses running this same fastlstm ----------------------------------------------------


def package_parent() -> str:
    """The directory holding the fastlstm package these tests imported."""
    import fastlstm

    return os.path.dirname(os.path.dirname(os.path.abspath(fastlstm.__file__)))


def run_python(code: str, *, cwd, env: Optional[Dict[str, str]] = None, unset: Sequence[str] = (),
               check_package: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that imports the same fastlstm as this process.

    ``cwd`` should be an empty directory (``python -c`` puts it first on sys.path). With ``check_package``
    the child first checks that it imported the expected package (which imports fastlstm before ``code``).
    """
    import fastlstm

    child_env = dict(os.environ)
    for name in unset:
        child_env.pop(name, None)
    child_env.update(env or {})
    child_env["PYTHONPATH"] = os.pathsep.join(
        [package_parent()] + [p for p in child_env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    expected = os.path.abspath(fastlstm.__file__)
    preamble = textwrap.dedent(
        f"""
        import os as _os, sys as _sys
        import fastlstm as _f
        if _os.path.abspath(_f.__file__) != {expected!r}:
            _sys.exit("child imported " + _f.__file__ + " instead of " + {expected!r})
        del _f
        """
    ) if check_package else ""
    return subprocess.run(
        [sys.executable, "-c", preamble + textwrap.dedent(code)],
        env=child_env,
        cwd=str(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
