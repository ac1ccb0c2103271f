"""The parts of ``python -m fastlstm bench`` that are not timing: the bytes and FLOPs of a shape match the model's
parameters, and the fraction of the limit follows from the numbers it is given (the probes of the machine's
limits: test_probes.py)."""
from __future__ import annotations

import numpy as np
import pytest

import fastlstm
from fastlstm import _bench, _probes

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
    want_handoffs, _ = _probes.step_handoffs(model._packed, shape.T, shape.B,
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

