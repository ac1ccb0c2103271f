"""A sequence's result is bitwise the same alone, in any batch of others and padded inside a longer batch with
lengths= (API.md, "Forward"): how data is chunked, in one process or on a cluster, never changes a bit. Checked
on every instruction set this CPU has (packed under each cap in turn), both dtypes, every layer kind, and with
the team splitting units or rows."""
from __future__ import annotations

import numpy as np
import pytest

import fastlstm
from fastlstm import _cpu, _threads

CONFIGS = [  # I, H, layers, bidirectional, proj_size, extras
    (6, 7, 1, False, 0, {}),
    (12, 40, 2, False, 0, {}),        # few units: with a batch the team splits rows
    (10, 70, 1, True, 0, {}),
    (9, 33, 2, False, 13, {}),
    (8, 130, 1, False, 0, dict(peepholes=True, clip=1.5)),
]


@pytest.fixture(params=list(_cpu.ISAS))
def isa(request):
    if request.param not in _cpu.available_isas():
        pytest.skip(f"this CPU lacks {request.param}")
    _cpu.set_cap(request.param)
    yield request.param
    _cpu.set_cap("")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("config", range(len(CONFIGS)))
@pytest.mark.parametrize("threads", [1, 2])
def test_a_sequence_has_the_same_bits_alone_in_a_batch_and_padded(isa, dtype, config, threads, monkeypatch):
    I, H, L, bidir, proj, extras = CONFIGS[config]
    model = fastlstm.LSTM(I, H, L, bidirectional=bidir, proj_size=proj, dtype=dtype, seed=config, **extras)
    assert model._packed.kernel_name.endswith("/" + isa)
    monkeypatch.setattr(_threads, "_override", _threads._override)
    monkeypatch.setattr(_threads, "MIN_WORK_PER_THREAD", 1)   # a team of `threads` even for small work
    fastlstm.set_num_threads(threads)
    rng = np.random.default_rng(config)
    T, B = 9, 13
    x = rng.standard_normal((T, B, I)).astype(dtype)
    lengths = rng.integers(1, T + 1, B)
    lengths[5] = T
    batch_out, (batch_h, batch_c) = model(x, lengths=lengths)
    for b in (0, 5, 12):
        n = int(lengths[b])
        alone, (h, c) = model(x[:n, b : b + 1])
        assert alone.tobytes() == batch_out[:n, b : b + 1].tobytes(), f"row {b}: alone vs in the batch"
        assert h.tobytes() == batch_h[:, b : b + 1].tobytes() and c.tobytes() == batch_c[:, b : b + 1].tobytes()
    for start, stop in ((0, 1), (0, 4), (3, 8), (5, 13), (1, 3)):  # chunks of the batch
        out, (h, c) = model(x[:, start:stop], lengths=lengths[start:stop])
        assert out.tobytes() == batch_out[:, start:stop].tobytes(), f"chunk {start}:{stop}"
        assert h.tobytes() == batch_h[:, start:stop].tobytes() and c.tobytes() == batch_c[:, start:stop].tobytes()
    padded = np.concatenate([x, rng.standard_normal((4, B, I)).astype(dtype)])  # longer, garbage past lengths
    out, (h, c) = model(padded, lengths=lengths)
    assert out[:T].tobytes() == batch_out.tobytes() and not out[T:].any()
    assert h.tobytes() == batch_h.tobytes() and c.tobytes() == batch_c.tobytes()
