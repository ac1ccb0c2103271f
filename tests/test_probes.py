"""The bench's probes of the machine's limits (fastlstm._probes) compute what they claim on every instruction
set and thread count, and say how a packed model's forward hands its steps between threads."""
from __future__ import annotations

import numpy as np
import pytest

import fastlstm
from fastlstm import _cpu, _kernels, _probes


@pytest.fixture(params=list(_cpu.ISAS))
def isa(request):
    """Each instruction set of the probes, when this CPU has it."""
    if request.param not in _cpu.available_isas():
        pytest.skip(f"this CPU lacks {request.param}")
    return request.param


@pytest.mark.parametrize("threads", [1, 2])
def test_probe_fma_computes_its_chains(isa, threads):
    lanes = _probes.vector_bytes(isa) // 4
    chains = _probes.probe_fma(1, 1, isa)[1] / (2 * lanes)
    assert chains == int(chains) and chains >= 8, "enough independent chains to cover the FMA latency"
    for rounds in (1, 2, 3, 7):
        # chain i after r rounds of acc * 0.5 + 1, from i: i / 2^r + 2 - 2^(1 - r), exact in float32 here
        want = lanes * sum(i / 2**rounds + 2 - 2 ** (1 - rounds) for i in range(int(chains)))
        got, flops = _probes.probe_fma(rounds, threads, isa)
        assert got == want, f"{isa}: rounds {rounds}: lanes sum {got}, want {want}"
        team = threads if fastlstm.openmp_enabled() else 1
        assert flops == 2 * rounds * chains * lanes * team
    got, _ = _probes.probe_fma(200, threads, isa)  # converged: every lane is 2
    assert got == 2 * chains * lanes


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_probe_read_sums_the_whole_buffer(isa, threads):
    granule = _probes.probe_read_granule()
    for units in (1, 2, 5, 64):
        data = (np.arange(units * granule) % 7).astype(np.float32)  # small integers: every sum is exact
        for offset in (0, 1):  # an unaligned buffer is read correctly too (only more slowly)
            buf = np.empty(units * granule + 1, np.float32)[offset : offset + units * granule]
            buf[:] = data
            for passes in (1, 2, 3):  # the sum of the last pass: forwards, backwards, forwards
                total, read = _probes.probe_read(buf, passes, threads, isa)
                assert total == float(data.sum(dtype=np.float64)), f"{isa}: {units} units, offset {offset}"
                assert read == passes * 4 * data.size


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_probe_handoff_sees_every_step_of_the_others(isa, threads):
    for n in (16, 48, 160):  # fewer lines than threads leaves a thread none of its own
        for steps in (1, 2, 7, 100):
            stale, reads, team = _probes.probe_handoff(steps, n, threads, isa)
            assert team == (threads if fastlstm.openmp_enabled() else 1)
            assert stale == 0, f"{isa}: n {n}, {steps} steps: {stale} values read were not the step's"
            assert reads == n * (team - 1) * steps


def test_step_handoffs_follow_the_team_split():
    """Steps are handed between threads only when a direction's units are split among two or more of them."""
    small = fastlstm.LSTM(32, 70, 2)._packed      # 5 blocks of units (AVX-512) or more
    assert _probes.step_handoffs(small, 100, 1, 1) == (0, 1)
    assert _probes.step_handoffs(small, 100, 1, 2) == (200, 2)
    assert _probes.step_handoffs(small, 1, 1, 2) == (2, 2)          # a streaming step: once per layer
    one_block = fastlstm.LSTM(8, 4)._packed         # one block of units: a team of one
    assert _probes.step_handoffs(one_block, 100, 1, 2) == (0, 1)
    rows = fastlstm.LSTM(8, 32)._packed             # few units, many rows: the rows are split
    assert _kernels.splits_rows(rows, 64, 2)
    assert _probes.step_handoffs(rows, 100, 64, 2) == (0, 1)
    bidir = fastlstm.LSTM(32, 256, bidirectional=True)._packed
    assert _probes.step_handoffs(bidir, 100, 1, 2) == (0, 1)        # a direction per thread
    assert _probes.step_handoffs(bidir, 100, 1, 3) == (100, 2)      # the reverse direction on two threads
    assert _probes.step_handoffs(bidir, 100, 1, 4) == (100, 2)


def test_probe_errors_name_the_argument():
    isa = _cpu.available_isas()[-1]
    granule = _probes.probe_read_granule()
    with pytest.raises(ValueError, match="rounds"):
        _probes.probe_fma(0, 1, isa)
    with pytest.raises(ValueError, match="num_threads"):
        _probes.probe_fma(1, 0, isa)
    with pytest.raises(TypeError, match="float32"):
        _probes.probe_read(np.zeros(granule), 1, 1, isa)
    with pytest.raises(TypeError, match="1-D"):
        _probes.probe_read(np.zeros((2, granule), np.float32), 1, 1, isa)
    with pytest.raises(TypeError, match="C-contiguous"):
        _probes.probe_read(np.zeros(2 * granule, np.float32)[::2], 1, 1, isa)
    with pytest.raises(ValueError, match=f"multiple of {granule}"):
        _probes.probe_read(np.zeros(granule + 1, np.float32), 1, 1, isa)
    with pytest.raises(ValueError, match=f"multiple of {granule}"):
        _probes.probe_read(np.zeros(0, np.float32), 1, 1, isa)
    with pytest.raises(ValueError, match="passes"):
        _probes.probe_read(np.zeros(granule, np.float32), 0, 1, isa)
    with pytest.raises(ValueError, match="num_threads"):
        _probes.probe_read(np.zeros(granule, np.float32), 1, 0, isa)
    with pytest.raises(ValueError, match="steps"):
        _probes.probe_handoff(0, 16, 2, isa)
    for n in (0, 15, 24):
        with pytest.raises(ValueError, match="multiple of 16"):
            _probes.probe_handoff(1, n, 2, isa)
    with pytest.raises(ValueError, match="num_threads"):
        _probes.probe_handoff(1, 16, 0, isa)


def test_probe_isa_must_exist_here():
    with pytest.raises(ValueError, match="isa must be one of"):
        _probes.probe_fma(1, 1, "mmx")
    missing = [isa for isa in _cpu.ISAS if isa not in _cpu.available_isas()]
    for isa in missing:
        with pytest.raises(ValueError, match="lacks"):
            _probes.probe_fma(1, 1, isa)
