"""The parts of ``python -m fastlstm bench`` that are not timing: the probes of the machine's limits compute
what they claim on every instruction set, the bytes and FLOPs of a shape match the model's parameters, and
the fraction of the limit follows from the numbers it is given."""
from __future__ import annotations

import numpy as np
import pytest

import fastlstm
from fastlstm import _bench, _kernels

LEVELS = [("avx512", 2), ("avx2", 1), ("sse2", 0)]


@pytest.fixture(params=LEVELS, ids=[name for name, _ in LEVELS])
def isa(request):
    """Each instruction set this CPU has selected in turn (the probes hold no packed weights), then the one
    selected at import restored."""
    name, level = request.param
    if _kernels.cpu_isa_level() < level:
        pytest.skip(f"this CPU lacks {name}")
    before = dict(LEVELS)[_kernels.isa_name()]
    _kernels.select_isa(level)
    yield name
    _kernels.select_isa(before)


@pytest.mark.parametrize("threads", [1, 2])
def test_probe_fma_computes_its_chains(isa, threads):
    lanes = _kernels.vector_bytes() // 4
    chains = _kernels.probe_fma(1, 1)[1] / (2 * lanes)
    assert chains == int(chains) and chains >= 8, "enough independent chains to cover the FMA latency"
    for rounds in (1, 2, 3, 7):
        # chain i after r rounds of acc * 0.5 + 1, from i: i / 2^r + 2 - 2^(1 - r), exact in float32 here
        want = lanes * sum(i / 2**rounds + 2 - 2 ** (1 - rounds) for i in range(int(chains)))
        got, flops = _kernels.probe_fma(rounds, threads)
        assert got == want, f"{isa}: rounds {rounds}: lanes sum {got}, want {want}"
        team = threads if fastlstm.openmp_enabled() else 1
        assert flops == 2 * rounds * chains * lanes * team
    got, _ = _kernels.probe_fma(200, threads)  # converged: every lane is 2
    assert got == 2 * chains * lanes


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_probe_read_sums_the_whole_buffer(isa, threads):
    granule = _kernels.probe_read_granule()
    for units in (1, 2, 5, 64):
        data = (np.arange(units * granule) % 7).astype(np.float32)  # small integers: every sum is exact
        for offset in (0, 1):  # an unaligned buffer is read correctly too (only more slowly)
            buf = np.empty(units * granule + 1, np.float32)[offset : offset + units * granule]
            buf[:] = data
            for passes in (1, 2, 3):  # the sum of the last pass: forwards, backwards, forwards
                total, read = _kernels.probe_read(buf, passes, threads)
                assert total == float(data.sum(dtype=np.float64)), f"{isa}: {units} units, offset {offset}"
                assert read == passes * 4 * data.size


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_probe_handoff_sees_every_step_of_the_others(isa, threads):
    for n in (16, 48, 160):  # fewer lines than threads leaves a thread none of its own
        for steps in (1, 2, 7, 100):
            stale, reads, team = _kernels.probe_handoff(steps, n, threads)
            assert team == (threads if fastlstm.openmp_enabled() else 1)
            assert stale == 0, f"{isa}: n {n}, {steps} steps: {stale} values read were not the step's"
            assert reads == n * (team - 1) * steps


def test_step_handoffs_follow_the_team_split():
    """Steps are handed between threads only when a direction's units are split among two or more of them."""
    small = fastlstm.LSTM(32, 70, 2)._packed      # 5 blocks of units (AVX-512) or more
    assert _kernels.step_handoffs(small, 100, 1, 1) == (0, 1)
    assert _kernels.step_handoffs(small, 100, 1, 2) == (200, 2)
    assert _kernels.step_handoffs(small, 1, 1, 2) == (2, 2)          # a streaming step: once per layer
    one_block = fastlstm.LSTM(8, 4)._packed         # one block of units: a team of one
    assert _kernels.step_handoffs(one_block, 100, 1, 2) == (0, 1)
    rows = fastlstm.LSTM(8, 32)._packed             # few units, many rows: the rows are split
    assert _kernels.splits_rows(rows, 64)
    assert _kernels.step_handoffs(rows, 100, 64, 2) == (0, 1)
    bidir = fastlstm.LSTM(32, 256, bidirectional=True)._packed
    assert _kernels.step_handoffs(bidir, 100, 1, 2) == (0, 1)        # a direction per thread
    assert _kernels.step_handoffs(bidir, 100, 1, 3) == (100, 2)      # the reverse direction on two threads
    assert _kernels.step_handoffs(bidir, 100, 1, 4) == (100, 2)


def test_probe_errors_name_the_argument():
    granule = _kernels.probe_read_granule()
    with pytest.raises(ValueError, match="rounds"):
        _kernels.probe_fma(0, 1)
    with pytest.raises(ValueError, match="num_threads"):
        _kernels.probe_fma(1, 0)
    with pytest.raises(TypeError, match="float32"):
        _kernels.probe_read(np.zeros(granule), 1, 1)
    with pytest.raises(TypeError, match="1-D"):
        _kernels.probe_read(np.zeros((2, granule), np.float32), 1, 1)
    with pytest.raises(TypeError, match="C-contiguous"):
        _kernels.probe_read(np.zeros(2 * granule, np.float32)[::2], 1, 1)
    with pytest.raises(ValueError, match=f"multiple of {granule}"):
        _kernels.probe_read(np.zeros(granule + 1, np.float32), 1, 1)
    with pytest.raises(ValueError, match=f"multiple of {granule}"):
        _kernels.probe_read(np.zeros(0, np.float32), 1, 1)
    with pytest.raises(ValueError, match="passes"):
        _kernels.probe_read(np.zeros(granule, np.float32), 0, 1)
    with pytest.raises(ValueError, match="num_threads"):
        _kernels.probe_read(np.zeros(granule, np.float32), 1, 0)
    with pytest.raises(ValueError, match="steps"):
        _kernels.probe_handoff(0, 16, 2)
    for n in (0, 15, 24):
        with pytest.raises(ValueError, match="multiple of 16"):
            _kernels.probe_handoff(1, n, 2)
    with pytest.raises(ValueError, match="num_threads"):
        _kernels.probe_handoff(1, 16, 0)


@pytest.mark.parametrize("shape", _bench.SHAPES, ids=lambda s: s.name.replace(" ", ""))
def test_shape_bytes_and_flops_match_the_model(shape):
    model = fastlstm.LSTM(shape.I, shape.H, shape.layers, bidirectional=shape.bidirectional)
    params = model.state_dict()
    w_hh = [v for k, v in params.items() if k.startswith("weight_hh")]
    w_ih = [v for k, v in params.items() if k.startswith("weight_ih")]
    if shape.streaming:
        assert shape.step_weight_bytes() == 4 * sum(w.size for w in w_hh + w_ih)
    else:  # one layer's W_hh per step, every direction; all layers have the same hidden size
        assert shape.step_weight_bytes() * shape.layers == 4 * sum(w.size for w in w_hh)
    per_step_rows = sum(w.size for w in w_hh + w_ih)  # multiply-adds per row and step, all layers
    assert shape.flops() == 2 * shape.T * shape.B * per_step_rows


def test_limit_fraction_takes_the_slower_limit():
    row = _bench.Row("s", gflop=2.0, weight_gb=3.0, batch=1, read_gbps=100.0, median_ms={"fastlstm": 40.0})
    # FLOPs at 200 GFLOP/s: 10 ms; bytes at 100 GB/s: 30 ms, the slower: 30 / 40
    assert _bench.limit_fraction(row, 200.0) == (30.0 / 40.0, "read")
    # at 50 GFLOP/s the FLOPs take 40 ms: the whole time
    assert _bench.limit_fraction(row, 50.0) == (1.0, "FMA")
    table = _bench.format_table([row], 50.0)
    assert "% of limit" in table.splitlines()[0] and "100% FMA" in table.splitlines()[2]
    assert "% of limit" not in _bench.format_table([row])


def test_limit_fraction_adds_the_handoffs():
    row = _bench.Row("s", gflop=2.0, weight_gb=3.0, batch=1, read_gbps=100.0, handoffs=100, handoff_us=50.0,
                     median_ms={"fastlstm": 40.0})
    # 30 ms of reads, then 100 hand-offs of 50 us: 35 ms
    assert _bench.limit_fraction(row, 200.0) == (35.0 / 40.0, "read+handoff")
    assert "88% read+handoff" in _bench.format_table([row], 200.0).splitlines()[2]


def test_finish_row_separates_the_probes_from_the_implementations():
    shape = _bench.Shape(10, 1, 32, 70)
    model = fastlstm.LSTM(shape.I, shape.H, seed=0)
    row, probes = _bench.new_row(shape, model, threads=2)
    want_handoffs, _ = _kernels.step_handoffs(model._packed, shape.T, shape.B,
                                              fastlstm._threads.effective_threads(70, 70, 1, steps=10, input_size=32))
    assert row.handoffs == want_handoffs
    assert ("handoff probe" in probes.calls) == (want_handoffs > 0)
    for call in probes.calls.values():
        call()  # the probes run
    medians = {"fastlstm": 2e-3, "torch": 5e-3, "read probe": 1e-3, "handoff probe": 4e-4}
    if not want_handoffs:
        del medians["handoff probe"]
    _bench.finish_row(row, medians, probes)
    assert row.median_ms == {"fastlstm": 2.0, "torch": 5.0}
    assert row.read_gbps == probes.read_bytes / 1e-3 / 1e9
    assert row.handoff_us == (4e-4 * 1e6 / probes.handoff_steps if want_handoffs else 0.0)

