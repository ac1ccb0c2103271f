"""The kernel table of a packed model: chosen from its cell kind, weight format and CPU features when it is
packed, kept with it whatever happens to the feature cap later, and named by `python -m fastlstm info`."""
from __future__ import annotations

import re

import numpy as np
import pytest

import fastlstm
from fastlstm import _cpu, _kernels

from conftest import run_python


def test_feature_names_are_known_bits():
    names = _kernels.feature_names()
    assert {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "asimd", "dotprod", "bf16",
            "i8mm"} <= set(names.values())
    assert len(set(names.values())) == len(names)
    found = _kernels.cpu_features()
    assert found >> 32 == 0 and all(found >> bit & 1 == 0 for bit in range(32) if bit not in names)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_cpu_gets_baseline_kernels(dtype):
    name, vector_bytes, tile_rows = _kernels.kernel_table("lstm", np.dtype(dtype).name, 0)
    assert name == f"lstm/{'f32' if dtype == np.float32 else 'f64'}/baseline"
    assert vector_bytes == 16 and tile_rows >= 1


def test_kernel_table_keys_are_checked():
    with pytest.raises(ValueError, match="cell must be one of"):
        _kernels.kernel_table("rnn", "float32", 0)
    with pytest.raises(ValueError, match="weight_format must be one of"):
        _kernels.kernel_table("lstm", "float16", 0)


def test_a_packed_model_keeps_its_kernels_when_the_cap_changes():
    """A model packed before the cap changes keeps its kernels (and its bits); models packed after get the
    capped ones. The kernels and their packed layouts travel together: the old model never reads its weights
    with another table's block width."""
    widest = _cpu.available_isas()[-1]
    if widest == "baseline":
        pytest.skip("this CPU has only the baseline kernels")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 3, 12)).astype(np.float32)
    before = fastlstm.LSTM(12, 70, 2, seed=1)
    want = before(x)
    try:
        _cpu.set_cap("baseline")
        after = fastlstm.LSTM(12, 70, 2, seed=1)
        assert after._packed.kernel_name == "lstm/f32/baseline"
        assert before._packed.kernel_name == f"lstm/f32/{widest}"
        got = before(x)
        assert got[0].tobytes() == want[0].tobytes() and got[1][1].tobytes() == want[1][1].tobytes()
        np.testing.assert_allclose(after(x)[0], want[0], rtol=0, atol=2e-6)
        before.load_state_dict(before.state_dict())      # repacked now: under the cap
        assert before._packed.kernel_name == "lstm/f32/baseline"
    finally:
        _cpu.set_cap("")
    assert fastlstm.LSTM(12, 70)._packed.kernel_name == f"lstm/f32/{widest}"


def test_cap_values_are_checked():
    with pytest.raises(ValueError, match="FASTLSTM_ISA must be one of"):
        _cpu.set_cap("mmx")


def test_info_names_the_features_and_kernels(tmp_path):
    proc = run_python("import sys\nfrom fastlstm.__main__ import main\nsys.exit(main(['info']))", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "CPU features:" in out and "lstm float32: lstm/f32/" in out and "lstm float64: lstm/f64/" in out
    assert re.search(r"compiler: (gcc|clang) \d+\.\d+", out), out   # the default build's (.ci/clang.sh: clang's)
    proc = run_python("import sys\nfrom fastlstm.__main__ import main\nsys.exit(main(['info']))", cwd=tmp_path,
                      env={"FASTLSTM_ISA": "baseline"})
    assert "lstm float32: lstm/f32/baseline" in proc.stdout, proc.stdout
