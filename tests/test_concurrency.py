"""Concurrency: one LSTM object used from 8 Python threads at once (forward calls of every configuration, and
streams, each thread with its own), two models at once, thread settings changed while calls run, and streams
interleaved with each other and with the model's own calls in one thread.

Every result must be bitwise equal (np.array_equal) to the same call made alone and sequentially beforehand.
test_threads.py covers one configuration with 6 calls per thread; here every configuration gets 30+ calls
per thread, and streams, several models and changing settings join in. Threads start together at a
threading.Barrier; a worker that hangs fails the test (join with a timeout) instead of the run.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import fastlstm
from fastlstm import _threads
from conftest import assert_bitwise_equal, assert_forward_bitwise, make_inputs, model_pair

N_THREADS = 8
CALLS = 30
JOIN_TIMEOUT = 120


@pytest.fixture(autouse=True)
def restore_thread_setting(monkeypatch):
    """Put back set_num_threads' override after each test."""
    monkeypatch.setattr(_threads, "_override", _threads._override)
    yield


def run_together(worker, n=N_THREADS):
    """Run worker(i) for i < n on n threads released together by a barrier; return their results.

    Any exception in a worker fails the test with the worker's index; a worker still running after
    JOIN_TIMEOUT seconds fails it as a hang.
    """
    barrier = threading.Barrier(n)
    results = [None] * n
    errors = []

    def target(i):
        try:
            barrier.wait(timeout=60)
            results[i] = worker(i)
        except BaseException as exc:  # reported below, with the thread it happened in
            errors.append((i, f"{type(exc).__name__}: {exc}"))
            barrier.abort()

    threads = [threading.Thread(target=target, args=(i,), daemon=True, name=f"worker-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=JOIN_TIMEOUT)
    hung = [t.name for t in threads if t.is_alive()]
    assert not hung, f"workers did not finish within {JOIN_TIMEOUT} s (hang?): {hung}"
    assert not errors, f"errors in worker threads: {sorted(errors)[:5]}"
    return results


def run_beside_mutator(work, mutate):
    """work(i) on N_THREADS - 1 threads while the last thread calls mutate(n) for n = 0, 1, ... (0.2 ms apart)
    until they are done. Returns the workers' results and how many times mutate ran."""
    stop = threading.Event()
    lock = threading.Lock()
    finished = []

    def worker(i):
        if i == N_THREADS - 1:
            count = 0
            deadline = time.monotonic() + JOIN_TIMEOUT / 2
            while not stop.is_set() and time.monotonic() < deadline:
                mutate(count)
                count += 1
                time.sleep(0.0002)
            return count
        try:
            return work(i)
        finally:
            with lock:
                finished.append(i)
                if len(finished) == N_THREADS - 1:
                    stop.set()

    results = run_together(worker)
    return results[:-1], results[-1]


def one_thread(fn):
    """fn() under set_num_threads(1): the sequential results every concurrent result must equal bitwise.

    Results do not depend on the thread count (the contract), so this loses nothing; and it keeps these
    reference runs cheap on a busy machine, where a team of OpenMP threads waiting at a barrier every step
    for a descheduled member is slow.
    """
    old = _threads._override
    fastlstm.set_num_threads(1)
    try:
        return fn()
    finally:
        _threads._override = old


def as_tuple(result):
    out, (h, c) = result
    return out, h, c


def plan_calls(model, n_threads, calls, seed, *, lengths=True, max_T=8, max_B=6):
    """Per thread, ``calls`` argument sets of varied shapes (some unbatched, some with hx, some with lengths)."""
    rng = np.random.default_rng(seed)
    jobs = []
    for i in range(n_threads):
        mine = []
        for j in range(calls):
            unbatched = (i + j) % 7 == 3
            T = int(rng.integers(1, max_T + 1))
            B = 1 if unbatched else int(rng.integers(1, max_B + 1))
            args = make_inputs(model, T, B, rng=rng, hx=(i + j) % 2 == 0,
                               lengths=lengths and (i + j) % 3 != 0, unbatched=unbatched)
            for a in (args["x"],) + (args["hx"] or ()):
                a.flags.writeable = False  # shared read-only between the sequential and concurrent runs
            mine.append(args)
        jobs.append(mine)
    return jobs


def forward_all(model, mine):
    return [as_tuple(model(a["x"], a["hx"], lengths=a["lengths"])) for a in mine]


def assert_all_equal(got, want, what):
    """got[i][j] == want[i][j] (output, h_n, c_n) with np.array_equal; on failure, where and how they differ."""
    assert len(got) == len(want), f"{what}: {len(got)} threads' results, expected {len(want)}"
    for i, (g_thread, w_thread) in enumerate(zip(got, want)):
        assert len(g_thread) == len(w_thread), f"{what}: thread {i} has {len(g_thread)} results, not {len(w_thread)}"
        for j, (g, w) in enumerate(zip(g_thread, w_thread)):
            for name, a, e in zip(("output", "h_n", "c_n"), g, w):
                if not np.array_equal(a, e, equal_nan=True) or a.dtype != e.dtype:
                    assert_bitwise_equal(a, e, name=f"{what}: thread {i} call {j} {name}")


CONFIGS = {
    "L2": dict(num_layers=2),
    "bi": dict(bidirectional=True),
    "L2-bi-proj": dict(num_layers=2, bidirectional=True, proj_size=12),
    "batch_first-L2": dict(num_layers=2, batch_first=True),
    "f64-L3-bi": dict(num_layers=3, bidirectional=True, dtype=np.float64),
    "reverse-proj": dict(direction="reverse", proj_size=20),
    "extras": dict(peepholes=True, clip=0.9, input_forget=True, num_layers=2),
}


# ---- one model, 8 threads, every configuration --------------------------------------------------


@pytest.mark.parametrize("setting", [None, 1, 16], ids=["default-threads", "set_num_threads-1", "set_num_threads-16"])
@pytest.mark.parametrize("config", list(CONFIGS), ids=list(CONFIGS))
def test_one_model_many_threads(config, setting):
    """30 calls of varied shapes per thread; with 16 threads allowed, even 8 concurrent calls get teams of 2."""
    model, _ = model_pair(8, 64, seed=3, **CONFIGS[config])
    jobs = plan_calls(model, N_THREADS, CALLS, seed=len(config), max_T=10)
    want = one_thread(lambda: [forward_all(model, mine) for mine in jobs])  # alone, one after the other
    saved = [[a["x"].copy() for a in mine] for mine in jobs]
    if setting is not None:
        fastlstm.set_num_threads(setting)
    got = run_together(lambda i: forward_all(model, jobs[i]))
    assert_all_equal(got, want, f"{config}, threads={setting or 'default'}")
    for mine, kept in zip(jobs, saved):
        for a, k in zip(mine, kept):
            assert np.array_equal(a["x"], k, equal_nan=True), "an input changed"


def test_every_thread_the_same_call():
    """8 threads making the very same call (same input arrays) at once, over and over."""
    model, _ = model_pair(8, 64, seed=4, num_layers=2, bidirectional=True, proj_size=16)
    args = make_inputs(model, 7, 5, rng=np.random.default_rng(5), hx=True, lengths=True)
    want = one_thread(lambda: as_tuple(model(args["x"], args["hx"], lengths=args["lengths"])))
    got = run_together(lambda i: [as_tuple(model(args["x"], args["hx"], lengths=args["lengths"]))
                                  for _ in range(CALLS)])
    assert_all_equal(got, [[want] * CALLS] * N_THREADS, "same call")


def test_thread_setting_changed_while_calls_run():
    """One thread flips set_num_threads between 1, 2 and 4 while seven others call: the bits never change."""
    model, _ = model_pair(8, 96, seed=6, num_layers=2, bidirectional=True, proj_size=32)
    jobs = plan_calls(model, N_THREADS - 1, CALLS, seed=7)
    want = one_thread(lambda: [forward_all(model, mine) for mine in jobs])
    results, flips = run_beside_mutator(lambda i: forward_all(model, jobs[i]),
                                        lambda n: fastlstm.set_num_threads((1, 2, 4)[n % 3]))
    assert flips > 0
    assert_all_equal(results, want, "while set_num_threads changes")


# ---- streams ------------------------------------------------------------------------------------

STREAM_CONFIGS = {
    "L2-proj": dict(num_layers=2, proj_size=12),
    "f64-L3": dict(num_layers=3, dtype=np.float64),
    "extras-batch_first": dict(peepholes=True, clip=1.2, input_forget=True, batch_first=True),
}


def plan_streams(model, n_threads, steps, seed):
    rng = np.random.default_rng(seed)
    L, K, H, I = model.num_layers, model.out_size, model.hidden_size, model.input_size
    plans = []
    for i in range(n_threads):
        B = 1 + i % 4
        xs = rng.standard_normal((steps, B, I)).astype(model.dtype)
        hx = None
        if i % 2:
            hx = (rng.standard_normal((L, B, K)).astype(model.dtype), rng.standard_normal((L, B, H)).astype(model.dtype))
        plans.append((B, xs, hx))
    return plans


def run_stream(model, plan, use_out):
    B, xs, hx = plan
    s = model.stream(B, hx)
    out = np.empty((B, model.out_size), model.dtype) if use_out else None
    steps = []
    for t in range(len(xs)):
        y = s.step(xs[t], out=out)
        steps.append(y.copy() if use_out else y)
    h, c = s.state
    return np.stack(steps), h, c


@pytest.mark.parametrize("setting", [None, 1, "teams"], ids=["default-threads", "set_num_threads-1", "teams-of-2"])
@pytest.mark.parametrize("config", list(STREAM_CONFIGS), ids=list(STREAM_CONFIGS))
def test_streams_in_threads(config, setting, monkeypatch):
    """Each of 8 threads makes its own stream of one model and steps it 32 times (half with out=).

    "teams": 2 threads allowed and the streaming crossover lowered, so every step of these small models
    starts a team of 2: eight teams at once."""
    model, _ = model_pair(6, 48, seed=8, **STREAM_CONFIGS[config])
    plans = plan_streams(model, N_THREADS, 32, seed=9)
    want = one_thread(lambda: [run_stream(model, p, use_out=False) for p in plans])
    for (B, xs, hx), w in zip(plans, want):  # and the stream is the forward call
        x_call = xs.transpose(1, 0, 2) if model.batch_first else xs
        out, (h, c) = one_thread(lambda: model(x_call, hx))
        assert_bitwise_equal(w[0], out.transpose(1, 0, 2) if model.batch_first else out, name="steps vs forward")
    if setting == "teams":
        monkeypatch.setattr(_threads, "MIN_STEP_WORK_PER_THREAD", 1, raising=False)
        fastlstm.set_num_threads(2)
    elif setting is not None:
        fastlstm.set_num_threads(setting)
    got = run_together(lambda i: run_stream(model, plans[i], use_out=i % 2 == 0))
    assert_all_equal([[g] for g in got], [[w] for w in want], f"streams {config}")


def test_streams_and_forward_calls_mixed_in_threads():
    """Four threads stream while four others call the same model's forward."""
    model, _ = model_pair(6, 40, seed=10, num_layers=2, proj_size=10)
    plans = plan_streams(model, N_THREADS, 35, seed=11)
    jobs = plan_calls(model, N_THREADS, CALLS, seed=12)
    want_streams = one_thread(lambda: [run_stream(model, p, use_out=True) for p in plans])
    want_calls = one_thread(lambda: [forward_all(model, mine) for mine in jobs])

    def worker(i):
        if i % 2:
            return [run_stream(model, plans[i], use_out=True)]
        return forward_all(model, jobs[i])

    got = run_together(worker)
    want = [[want_streams[i]] if i % 2 else want_calls[i] for i in range(N_THREADS)]
    assert_all_equal(got, want, "streams mixed with forward calls")


# ---- two models at once -------------------------------------------------------------------------


@pytest.mark.parametrize("setting", [None, 1, 16], ids=["default-threads", "set_num_threads-1", "set_num_threads-16"])
def test_two_models_in_parallel(setting):
    """Threads 0-3 on one model, 4-7 on another (different dtype, layout and shape), streams included."""
    a, _ = model_pair(8, 64, seed=13, num_layers=2, bidirectional=True, proj_size=24)
    b, _ = model_pair(5, 40, seed=14, num_layers=3, batch_first=True, dtype=np.float64)
    models = [a] * 4 + [b] * 4
    jobs = [plan_calls(m, 1, CALLS, seed=15 + i)[0] for i, m in enumerate(models)]
    plans = {i: plan_streams(b, 1, 30, seed=30 + i)[0] for i in (5, 7)}
    want = one_thread(lambda: [forward_all(m, mine) for m, mine in zip(models, jobs)])
    want_streams = one_thread(lambda: {i: run_stream(b, p, use_out=True) for i, p in plans.items()})
    if setting is not None:
        fastlstm.set_num_threads(setting)

    def worker(i):
        results = forward_all(models[i], jobs[i])
        if i in plans:
            results.append(run_stream(b, plans[i], use_out=True))
        return results

    got = run_together(worker)
    for i in plans:
        want[i] = want[i] + [want_streams[i]]
    assert_all_equal(got, want, "two models")


# ---- streams interleaved in one thread ----------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_streams_interleaved_are_independent(dtype):
    """Three streams of one model, stepped in turn, between calls of the model itself and of a second model,
    a reset of one of them, and a shared out= buffer: each gives the bits it gives when run alone."""
    model, _ = model_pair(5, 36, seed=16, num_layers=2, proj_size=9, dtype=dtype)
    other, _ = model_pair(5, 36, seed=17, num_layers=2, proj_size=9, dtype=dtype)
    rng = np.random.default_rng(18)
    steps = 12
    specs = []
    for B, with_hx in ((3, True), (1, False), (3, False)):
        xs = rng.standard_normal((steps, B, 5)).astype(dtype)
        hx = (rng.standard_normal((2, B, 9)).astype(dtype), rng.standard_normal((2, B, 36)).astype(dtype)) \
            if with_hx else None
        specs.append((B, xs, hx))
    reset_hx = (rng.standard_normal((2, 1, 9)), rng.standard_normal((2, 1, 36)))
    calls = [make_inputs(m, int(rng.integers(1, 9)), int(rng.integers(1, 6)), rng=rng, hx=True, lengths=True)
             for m in [model, other] * steps]

    # each alone
    alone = []
    for k, (B, xs, hx) in enumerate(specs):
        s = model.stream(B, hx)
        ys = []
        for t in range(steps):
            if k == 1 and t == 6:
                s.reset(reset_hx)
            ys.append(s.step(xs[t]).copy())
        alone.append((np.stack(ys),) + s.state)
    calls_alone = [as_tuple(m(a["x"], a["hx"], lengths=a["lengths"])) for m, a in zip([model, other] * steps, calls)]

    # interleaved
    streams = [model.stream(B, hx) for B, _, hx in specs]
    outs = {1: np.empty((1, 9), dtype), 3: np.empty((3, 9), dtype)}  # shared by the streams of a batch size
    ys = [[] for _ in specs]
    calls_mixed = []
    for t in range(steps):
        for k, ((B, xs, _), s) in enumerate(zip(specs, streams)):
            if k == 1 and t == 6:
                s.reset(reset_hx)
            ys[k].append(s.step(xs[t], out=outs[B]).copy())
            if k == 1:
                a = calls[2 * t]
                calls_mixed.append(as_tuple(model(a["x"], a["hx"], lengths=a["lengths"])))
        a = calls[2 * t + 1]
        calls_mixed.append(as_tuple(other(a["x"], a["hx"], lengths=a["lengths"])))
        if t == 4:
            model.stream(2).step(np.ones((2, 5)))  # a stream made and dropped in between
    for k in range(len(specs)):
        got = (np.stack(ys[k]),) + streams[k].state
        for name, g, w in zip(("steps", "h", "c"), got, alone[k]):
            assert_bitwise_equal(g, w, name=f"stream {k} interleaved vs alone: {name}")
    assert_all_equal([calls_mixed], [calls_alone], "forward calls between stream steps")
    # and an alone stream still equals one forward call
    B, xs, hx = specs[0]
    out, (h, c) = model(xs, hx)
    assert_forward_bitwise((alone[0][0], (alone[0][1], alone[0][2])), (out, (h, c)), what="stream 0 vs forward")


def test_parameters_reassigned_while_calls_run():
    """One thread keeps assigning every parameter its own value again (a repack each time) while the others call
    and stream: the packed weights change identity under them, never value, so no bit may change."""
    model, _ = model_pair(6, 48, seed=19, num_layers=2, proj_size=12)
    jobs = plan_calls(model, N_THREADS - 1, CALLS, seed=20)
    plans = plan_streams(model, N_THREADS - 1, 30, seed=21)
    want = one_thread(lambda: [forward_all(model, mine) + [run_stream(model, p, use_out=True)]
                               for mine, p in zip(jobs, plans)])
    values = model.state_dict()
    names = list(values)

    def reassign(n):
        name = names[n % len(names)]
        setattr(model, name, values[name])

    results, repacks = run_beside_mutator(
        lambda i: forward_all(model, jobs[i]) + [run_stream(model, plans[i], use_out=True)], reassign)
    assert repacks > 0
    assert_all_equal(results, want, "while parameters are reassigned")


def test_calls_in_flight_counted_while_running_and_released_after():
    """The kernel counts running forward calls (concurrent calls share the threads) and never leaks a count."""
    from fastlstm import _kernels

    model = fastlstm.LSTM(16, 64, seed=0)
    x = np.random.default_rng(0).standard_normal((20000, 1, 16)).astype(np.float32)
    seen = set()
    worker = threading.Thread(target=lambda: [model(x) for _ in range(3)])
    worker.start()
    while worker.is_alive():
        seen.add(_kernels.calls_in_flight())
        time.sleep(0.0005)
    worker.join()
    assert 1 in seen, f"a running call was never counted (saw {sorted(seen)})"
    assert _kernels.calls_in_flight() == 0
    run_together(lambda i: model(x[:50]))
    assert _kernels.calls_in_flight() == 0
