"""Threads: set_num_threads/get_num_threads/OMP_NUM_THREADS/openmp_enabled, threadpoolctl, results bitwise
identical for any thread count, one LSTM object called from many Python threads at once, and a forked child
process.

Every test leaves the thread setting as it found it (the autouse fixture below).
"""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import fastlstm
from fastlstm import _threads
from conftest import assert_forward_bitwise, assert_forward_close, make_inputs, model_pair, run_python


@pytest.fixture(autouse=True)
def restore_thread_setting(monkeypatch):
    """Put back set_num_threads' override, a threadpoolctl limit and the crossover after each test."""
    monkeypatch.setattr(_threads, "_override", _threads._override)
    monkeypatch.setattr(_threads, "_limited", _threads._limited)
    monkeypatch.setattr(_threads, "_unlimited", _threads._unlimited)
    monkeypatch.setattr(_threads, "MIN_WORK_PER_THREAD", _threads.MIN_WORK_PER_THREAD)
    monkeypatch.setattr(_threads, "MIN_STEP_WORK_PER_THREAD", _threads.MIN_STEP_WORK_PER_THREAD)
    yield


def block_width(dtype) -> int:
    """Hidden units per block of the selected kernels: a team never has more threads than blocks."""
    return fastlstm._packing.block_width(dtype)


# ---- settings -----------------------------------------------------------------------------------


def test_set_and_get_num_threads():
    for n in (1, 3, 2, np.int64(4), 64):
        fastlstm.set_num_threads(n)
        got = fastlstm.get_num_threads()
        assert got == int(n) and type(got) is int


@pytest.mark.parametrize("n", [0, -1, -100])
def test_set_num_threads_below_one(n):
    fastlstm.set_num_threads(2)
    with pytest.raises(ValueError):
        fastlstm.set_num_threads(n)
    assert fastlstm.get_num_threads() == 2


@pytest.mark.parametrize("n", [2.0, "2", None, [2], 1.5])
def test_set_num_threads_type(n):
    with pytest.raises(TypeError):
        fastlstm.set_num_threads(n)


def test_openmp_enabled_is_bool():
    assert type(fastlstm.openmp_enabled()) is bool
    assert fastlstm.openmp_enabled() == fastlstm._kernels.openmp_enabled()


def test_default_thread_count_is_positive():
    n = fastlstm.get_num_threads()
    assert type(n) is int and n >= 1


_CHILD_THREADS = """
import sys
import numpy as np
import fastlstm
print("threads", fastlstm.get_num_threads())
fastlstm.set_num_threads(1)
print("after set", fastlstm.get_num_threads())
"""


@pytest.mark.parametrize("env,expected", [("3", 3), ("1", 1), ("5,2", 5)])
def test_omp_num_threads_is_honoured(tmp_path, env, expected):
    proc = run_python(_CHILD_THREADS, env={"OMP_NUM_THREADS": env}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"threads {expected}\n" in proc.stdout, proc.stdout
    assert "after set 1\n" in proc.stdout, proc.stdout  # set_num_threads overrides it


def test_without_omp_num_threads(tmp_path):
    proc = run_python(_CHILD_THREADS, unset=["OMP_NUM_THREADS"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    n = int(proc.stdout.split("threads ")[1].split()[0])
    assert n >= 1


def test_omp_num_threads_does_not_change_results(tmp_path):
    """Processes with OMP_NUM_THREADS=1 and =2 give this process's bits."""
    fast, _ = model_pair(16, 256, 2, seed=5, bidirectional=True, proj_size=64)
    args = make_inputs(fast, 6, 8, rng=np.random.default_rng(6), hx=True, lengths=True)
    want = fast(args["x"], args["hx"], lengths=args["lengths"])
    np.savez(tmp_path / "in.npz", x=args["x"], h=args["hx"][0], c=args["hx"][1], lengths=args["lengths"])
    code = """
        import sys
        import numpy as np
        import fastlstm
        d = np.load("in.npz")
        m = fastlstm.LSTM(16, 256, 2, bidirectional=True, proj_size=64, seed=5)
        out, (h, c) = m(d["x"], (d["h"], d["c"]), lengths=d["lengths"])
        np.savez(sys.argv[1] if len(sys.argv) > 1 else "out_%d.npz" % fastlstm.get_num_threads(), out=out, h=h, c=c)
    """
    for n in (1, 2):
        proc = run_python(code, env={"OMP_NUM_THREADS": str(n)}, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        got = np.load(tmp_path / f"out_{n}.npz")
        assert_forward_bitwise((got["out"], (got["h"], got["c"])), want, what=f"OMP_NUM_THREADS={n}")


# ---- threadpoolctl ------------------------------------------------------------------------------


def fastlstm_pools(threadpoolctl):
    """threadpoolctl's entries for fastlstm's thread setting."""
    return [info for info in threadpoolctl.threadpool_info() if info["internal_api"] == "fastlstm"]


def test_threadpool_info_lists_fastlstm(require):
    threadpoolctl = require("threadpoolctl")
    for n in (3, 1):
        fastlstm.set_num_threads(n)
        pools = fastlstm_pools(threadpoolctl)
        assert len(pools) == 1, threadpoolctl.threadpool_info()
        (pool,) = pools
        assert pool["user_api"] == "openmp" and pool["version"] == fastlstm.__version__, pool
        assert os.path.realpath(pool["filepath"]) == os.path.realpath(fastlstm._kernels.__file__), pool
        assert pool["num_threads"] == n == fastlstm.get_num_threads(), pool


@pytest.mark.parametrize("setting", [None, 4], ids=["default", "set_num_threads-4"])
@pytest.mark.parametrize("how", ["int", "user_api", "dict", "prefix", "decorator"])
def test_threadpool_limits_caps_and_restores(require, monkeypatch, setting, how):
    """threadpool_limits(1) makes get_num_threads(), forward calls (checked and planned) and streams made before
    the limit use 1 thread; leaving it puts back exactly the setting from before."""
    threadpoolctl = require("threadpoolctl")
    monkeypatch.setattr(_threads, "_default", 4)  # the default without a setting, whatever this machine has
    monkeypatch.setattr(_threads, "_override", None)  # (whatever earlier tests set; restored after)
    if setting is not None:
        fastlstm.set_num_threads(setting)
    before = _threads._override
    m = fastlstm.LSTM(8, 256, seed=0)
    stream = m.stream(8)
    assert stream._threads == _threads.stream_threads(256, 256, 8, 8) > 1
    assert _threads.effective_threads(256, 256, 8, steps=10) == 4
    limit = {"int": lambda: threadpoolctl.threadpool_limits(1),
             "user_api": lambda: threadpoolctl.threadpool_limits(1, user_api="openmp"),
             "dict": lambda: threadpoolctl.threadpool_limits({"openmp": 1}),
             "prefix": lambda: threadpoolctl.threadpool_limits({"_kernels": 1})}.get(how)
    state = {}

    def inside():
        state["threads"] = fastlstm.get_num_threads()
        state["effective"] = _threads.effective_threads(256, 256, 8, steps=10)
        state["stream"] = stream._threads
        state["info"] = [p["num_threads"] for p in fastlstm_pools(threadpoolctl)]

    if how == "decorator":
        threadpoolctl.threadpool_limits.wrap(limits=1)(inside)()
    else:
        with limit():
            inside()
    assert state == dict(threads=1, effective=1, stream=1, info=[1])
    assert _threads._override is before and not _threads._limited
    assert fastlstm.get_num_threads() == 4 and stream._threads > 1


def test_threadpool_limits_other_apis_and_higher_limits(require):
    """A BLAS limit leaves fastlstm alone; a limit sets the count, as it does OpenMP's and BLAS's (also above the
    setting); limits nest."""
    threadpoolctl = require("threadpoolctl")
    fastlstm.set_num_threads(3)
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        assert fastlstm.get_num_threads() == 3
    with threadpoolctl.threadpool_limits(5):
        assert fastlstm.get_num_threads() == 5
    assert fastlstm.get_num_threads() == 3
    with threadpoolctl.threadpool_limits(2):
        assert fastlstm.get_num_threads() == 2
        with threadpoolctl.threadpool_limits(1):
            assert fastlstm.get_num_threads() == 1
        assert fastlstm.get_num_threads() == 2
    assert fastlstm.get_num_threads() == 3 and _threads._override == 3 and not _threads._limited


def test_set_num_threads_inside_a_limit(require):
    """An explicit set_num_threads replaces the limit in force and leaving the block puts back the count from
    before it, as omp_set_num_threads and threadpool_limits do for OpenMP."""
    threadpoolctl = require("threadpoolctl")
    fastlstm.set_num_threads(3)
    with threadpoolctl.threadpool_limits(1):
        fastlstm.set_num_threads(2)
        assert fastlstm.get_num_threads() == 2
    assert fastlstm.get_num_threads() == 3


_LIMITED_PROCESS = """
import os
import numpy as np
import fastlstm
import threadpoolctl

def os_threads():
    return len(os.listdir("/proc/self/task"))

m = fastlstm.LSTM(16, 256, seed=0)
x = np.random.default_rng(0).standard_normal((20, 8, 16)).astype(np.float32)
stream = m.stream(8)  # made before the limit
start = os_threads()
with threadpoolctl.threadpool_limits(1):
    print("threads", fastlstm.get_num_threads())
    want = m(x)[0]
    m(x)              # the planned call
    m(x[:1])          # a forward of one step
    stream.step(x[0])
    print("new OS threads inside", os_threads() - start)
assert np.array_equal(m(x)[0], want)
print("threads after", fastlstm.get_num_threads())
print("new OS threads after", os_threads() - start)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_threadpool_limits_really_runs_one_thread(require, tmp_path):
    """In a fresh process on 2 threads, calls under threadpool_limits(1) start no OpenMP worker (libgomp starts
    its pool at the first parallel region); the first call after the limit does."""
    require("threadpoolctl")
    if not fastlstm.openmp_enabled():
        pytest.skip("serial build: no thread pool")
    proc = run_python(_LIMITED_PROCESS, env={"OMP_NUM_THREADS": "2"}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "threads 1\n" in proc.stdout and "new OS threads inside 0\n" in proc.stdout, proc.stdout
    assert "threads after 2\n" in proc.stdout and "new OS threads after 1\n" in proc.stdout, proc.stdout


def test_set_num_threads_reaches_streams_made_before():
    m = fastlstm.LSTM(8, 256, seed=0)
    fastlstm.set_num_threads(4)
    stream = m.stream(8)
    assert stream._threads == 4
    fastlstm.set_num_threads(1)
    assert stream._threads == 1


# ---- bitwise identical for any thread count -----------------------------------------------------

LARGE_CONFIGS = [
    # I, H, P, L, bidirectional, batch_first, T, B, hx, lengths
    (32, 256, 0, 1, False, False, 8, 8, False, True),
    (16, 256, 100, 2, True, False, 5, 8, True, True),
    (64, 300, 0, 2, True, True, 4, 5, True, False),
    (24, 512, 0, 1, False, False, 3, 1, True, False),
    (8, 256, 0, 1, True, True, 40, 9, False, True),
]


def config_id(config) -> str:
    return "I{}-H{}-P{}-L{}-bi{}-bf{}-T{}-B{}".format(*config[:8])


def case(config, dtype, data_seed):
    """(fast, ref, H, P, B, args) for a config row (I, H, P, L, bidirectional, batch_first, T, B, hx, lengths)."""
    I, H, P, L, bi, bf, T, B, hx, lengths = config
    fast, ref = model_pair(I, H, L, seed=H + B, proj_size=P, bidirectional=bi, batch_first=bf, dtype=dtype)
    args = make_inputs(fast, T, B, rng=np.random.default_rng(data_seed), hx=hx, lengths=lengths)
    return fast, ref, H, P, B, args


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("config", LARGE_CONFIGS, ids=config_id)
def test_bitwise_identical_across_thread_counts(config, dtype):
    fast, ref, H, P, B, args = case(config, dtype, data_seed=config[1] * config[7])
    results = {}
    for n in (1, 2, 3):
        fastlstm.set_num_threads(n)
        # with the default crossover this work is large enough that n threads really run
        assert _threads.effective_threads(H, P or H, B) == n, "too little work for n threads: grow the config"
        assert -(-H // block_width(dtype)) >= n, "fewer blocks than threads: grow H"
        results[n] = fast(args["x"], args["hx"], lengths=args["lengths"])
    for n in (2, 3):
        assert_forward_bitwise(results[n], results[1], what=f"{n} threads vs 1")
    assert_forward_close(results[3], ref(args["x"], args["hx"], lengths=args["lengths"]), dtype)


SMALL_CONFIGS = [
    (3, 70, 0, 1, False, False, 5, 1, True, False),
    (3, 70, 20, 2, True, False, 4, 3, True, True),
    (5, 17, 0, 3, True, True, 6, 5, False, True),
    (4, 33, 5, 2, False, True, 5, 2, True, True),
    (2, 48, 47, 1, True, False, 7, 4, True, True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("config", SMALL_CONFIGS, ids=config_id)
def test_small_shapes_on_many_threads(config, dtype):
    """With the crossover at 1, even tiny problems split their blocks over every thread."""
    _threads.MIN_WORK_PER_THREAD = 1
    fast, ref, H, P, B, args = case(config, dtype, data_seed=config[1] + config[2])
    want = ref(args["x"], args["hx"], lengths=args["lengths"])
    nblocks = -(-H // block_width(dtype))
    results = {}
    for n in sorted({1, 2, 3, 4, nblocks, nblocks + 1}):
        fastlstm.set_num_threads(n)
        assert _threads.effective_threads(H, P or H, B) == n
        results[n] = fast(args["x"], args["hx"], lengths=args["lengths"])
        assert_forward_close(results[n], want, dtype, what=f"{n} threads vs the reference")
    for n, got in results.items():
        assert_forward_bitwise(got, results[1], what=f"{n} threads vs 1")


ROW_SPLIT_CONFIGS = [
    # I, H, P, L, bidirectional, batch_first, T, B, hx, lengths: one direction, H <= 48, two tiles of rows at least
    (3, 16, 0, 1, False, False, 9, 8, True, True),
    (5, 40, 0, 2, False, True, 6, 13, True, True),
    (4, 33, 7, 2, False, False, 5, 9, False, True),
    (2, 48, 0, 3, False, False, 4, 33, True, False),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("config", ROW_SPLIT_CONFIGS, ids=config_id)
def test_row_split_gives_the_bits_of_the_unit_split(config, dtype):
    """Few units and a batch: the team splits whole tiles of rows instead of units (_kernels.splits_rows). Any
    thread count, either split, forward calls and streaming steps: the same bits."""
    _threads.MIN_WORK_PER_THREAD = _threads.MIN_STEP_WORK_PER_THREAD = 1
    fast, ref, H, P, B, args = case(config, dtype, data_seed=config[1] * config[7])
    assert fastlstm._kernels.splits_rows(fast._packed, B, 2), "the measured rule must pick rows for this config"
    call = lambda: fast(args["x"], args["hx"], lengths=args["lengths"])  # noqa: E731
    fastlstm.set_num_threads(1)
    want = call()
    assert_forward_close(want, ref(args["x"], args["hx"], lengths=args["lengths"]), dtype)
    try:
        for mode in (-1, 0, 1):
            fastlstm._kernels.set_row_split(mode)
            for n in (2, 3, 4):
                fastlstm.set_num_threads(n)
                assert_forward_bitwise(call(), want, what=f"split mode {mode}, {n} threads")
    finally:
        fastlstm._kernels.set_row_split(-1)
    if args["lengths"] is None and not fast.batch_first:  # streaming steps, on 2 threads: the bits of a forward
        fastlstm.set_num_threads(2)
        stream = fast.stream(B, args["hx"])
        steps = np.stack([stream.step(x_t) for x_t in args["x"]])
        assert_forward_bitwise((steps, stream.state), want, what="streaming steps")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_int8_splits_rows_where_it_pays(cell):
    """int8 weights split the rows of a batch of two tiles or more when W_hh is small (a thread reading all of it
    keeps it in its L2) or each thread gets 12 rows or more; bf16 and float32 of the same shape split units. Every
    split and thread count: the same bits, forward calls and streaming steps."""
    _threads.MIN_WORK_PER_THREAD = _threads.MIN_STEP_WORK_PER_THREAD = 1
    make = fastlstm.GRU if cell == "gru" else fastlstm.LSTM
    small = make(24, 128, seed=3)            # int8 W_hh of 64 KiB (LSTM) or 48 KiB (GRU)
    large = make(8, 1024, seed=3)            # 4 MiB or 3 MiB
    q = small.quantize("int8")
    tile = q._packed.tile_rows
    # small W_hh: two tiles of rows, and a tile per thread
    assert fastlstm._kernels.splits_rows(q._packed, 2 * tile, 2)
    assert not fastlstm._kernels.splits_rows(q._packed, 2 * tile - 1, 2)
    assert not fastlstm._kernels.splits_rows(q._packed, 2 * tile, 3)
    assert not fastlstm._kernels.splits_rows(small._packed, 8 * tile, 2)
    assert not fastlstm._kernels.splits_rows(small.quantize("bf16")._packed, 8 * tile, 2)
    # large W_hh: also 12 rows per thread
    q_large = large.quantize("int8")
    for B, n in ((8, 2), (24, 2), (24, 3), (36, 3), (48, 4), (44, 4)):
        want_split = B >= 2 * tile and -(-B // tile) >= n and B >= 12 * n
        assert fastlstm._kernels.splits_rows(q_large._packed, B, n) == want_split, (B, n)
    B = 3 * tile + 1
    x = np.random.default_rng(5).standard_normal((7, B, 24)).astype(np.float32)
    lengths = np.arange(B) % 7 + 1

    assert q._packed.team(B, 2)[1], "the forward on 2 threads splits rows"
    fastlstm.set_num_threads(1)
    want = q(x, lengths=lengths)
    try:
        for mode in (-1, 0, 1):
            fastlstm._kernels.set_row_split(mode)
            for n in (2, 3):
                fastlstm.set_num_threads(n)
                assert_forward_bitwise(q(x, lengths=lengths), want, what=f"split mode {mode}, {n} threads")
    finally:
        fastlstm._kernels.set_row_split(-1)
    fastlstm.set_num_threads(1)
    full = q(x)
    fastlstm.set_num_threads(2)
    stream = q.stream(B)
    steps = np.stack([stream.step(x_t) for x_t in x])
    assert_forward_bitwise((steps, stream.state), full, what="streaming steps")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_batch_of_one_on_many_threads(bidirectional, dtype):
    """B = 1 split over up to 5 threads gives the same bits as 1 thread, with a length shorter than T (the
    steps past it carry the state), two chunks of the input projection (T = 900) and a second layer."""
    _threads.MIN_WORK_PER_THREAD = 1
    fast, ref = model_pair(3, 70, 2, seed=11, bidirectional=bidirectional, dtype=dtype)
    T = 900
    args = make_inputs(fast, T, 1, rng=np.random.default_rng(11), hx=True)
    lengths = np.array([T - 7])
    want = ref(args["x"], args["hx"], lengths=lengths)
    results = {}
    for n in (1, 2, 3, 4, 5):
        fastlstm.set_num_threads(n)
        assert _threads.effective_threads(70, 70, 1, fast.num_directions, steps=T) == n
        results[n] = fast(args["x"], args["hx"], lengths=lengths)
        assert_forward_close(results[n], want, dtype, what=f"{n} threads vs the reference")
    for n in (2, 3, 4, 5):
        assert_forward_bitwise(results[n], results[1], what=f"{n} threads vs 1")
    assert np.all(results[1][0][T - 7:] == 0), "outputs past the length must be zero"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("config", [dict(num_layers=2), dict(proj_size=20), dict(bidirectional=True)],
                         ids=["L2", "proj", "bi"])
def test_single_steps_on_many_threads(config, dtype):
    """A single time step runs each block's input projection right before its step, in an order that alternates
    from call to call: forwards of T = 1 (the torch habit lstm(x_t[None], hx)) and streaming steps on 1 to 4
    threads give the same bits, and for one direction the bits of one forward over the sequence."""
    _threads.MIN_STEP_WORK_PER_THREAD = 1
    fast, ref = model_pair(5, 70, seed=3, dtype=dtype, **config)
    T, B = 5, 2
    args = make_inputs(fast, T, B, rng=np.random.default_rng(3), hx=True)
    results = {}
    for n in (1, 2, 3, 4):
        fastlstm.set_num_threads(n)
        assert _threads.effective_threads(70, fast.out_size, B, fast.num_directions, steps=1, input_size=5) == n
        hx, outputs = args["hx"], []
        for t in range(T):
            out, hx = fast(args["x"][t : t + 1], hx)
            outputs.append(out[0])
        results[n] = (np.stack(outputs), hx)
        assert_forward_bitwise(results[n], results[1], what=f"forwards of T = 1 on {n} threads vs 1")
        if not fast.bidirectional:
            stream = fast.stream(B, args["hx"])
            steps = np.stack([stream.step(args["x"][t]) for t in range(T)])
            assert_forward_bitwise((steps, stream.state), results[1], what=f"stream on {n} threads")
    if fast.bidirectional:  # each call is a sequence of one step; the reference chained the same way
        hx, outputs = args["hx"], []
        for t in range(T):
            out, hx = ref(args["x"][t : t + 1], hx)
            outputs.append(out[0])
        assert_forward_close(results[1], (np.stack(outputs), hx), dtype)
    else:
        assert_forward_bitwise(results[1], fast(args["x"], args["hx"]), what="steps vs one forward")
        assert_forward_close(results[1], ref(args["x"], args["hx"]), dtype)


def test_single_step_forward_uses_the_streaming_rule():
    """A forward of T = 1 pays for starting the team with one step to amortise it, like a streaming step."""
    fastlstm.set_num_threads(2)
    for H, K, I, B, D in [(70, 70, 32, 1, 1), (128, 128, 128, 1, 2), (512, 512, 256, 1, 1), (256, 64, 16, 8, 1)]:
        got = _threads.effective_threads(H, K, B, D, steps=1, input_size=I)
        assert got == _threads.stream_threads(H, K, I, B * D), (H, K, I, B, D)
    assert _threads.effective_threads(70, 70, 1, steps=1, input_size=32) == 1
    assert _threads.effective_threads(70, 70, 1, steps=100, input_size=32) == 2


def test_effective_threads_never_exceeds_the_setting():
    for n in (1, 2, 5):
        fastlstm.set_num_threads(n)
        for H, K, B in [(1, 1, 1), (256, 256, 8), (1024, 1024, 64), (17, 5, 0)]:
            t = _threads.effective_threads(H, K, B)
            assert 1 <= t <= n


# ---- many Python threads, one model -------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("omp_threads", [1, 2])
def test_concurrent_calls_on_one_model(omp_threads, dtype):
    n_threads, calls_per_thread = 8, 6
    fastlstm.set_num_threads(omp_threads)
    fast, _ = model_pair(12, 96, 2, seed=40, bidirectional=True, proj_size=40, dtype=dtype)
    rng = np.random.default_rng(41)
    jobs = []  # (args, expected) per thread, each call with its own shapes
    for i in range(n_threads):
        mine = []
        for j in range(calls_per_thread):
            T = int(rng.integers(1, 12))
            B = int(rng.integers(1, 10))
            unbatched = (i + j) % 5 == 4
            args = make_inputs(fast, T, 1 if unbatched else B, rng=rng, hx=bool((i + j) % 2),
                               lengths=bool((i + j) % 3), unbatched=unbatched)
            mine.append(args)
        jobs.append(mine)
    # the same calls made alone, one after the other
    expected = [[fast(a["x"], a["hx"], lengths=a["lengths"]) for a in mine] for mine in jobs]
    barrier = threading.Barrier(n_threads)
    results = [[None] * calls_per_thread for _ in range(n_threads)]
    errors = []

    def worker(i):
        try:
            barrier.wait(timeout=60)
            for _ in range(2):  # twice, so that calls overlap with other threads' calls of other shapes
                for j, a in enumerate(jobs[i]):
                    results[i][j] = fast(a["x"], a["hx"], lengths=a["lengths"])
        except BaseException as exc:  # reported below, with the thread it happened in
            errors.append((i, exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "worker threads did not finish"
    assert not errors, errors
    for i in range(n_threads):
        for j in range(calls_per_thread):
            assert_forward_bitwise(results[i][j], expected[i][j], what=f"thread {i} call {j}")


# ---- fork ---------------------------------------------------------------------------------------

_FORK_SCRIPT = """
import os, signal, sys, time
import numpy as np
import fastlstm
import threadpoolctl

fastlstm.set_num_threads(2)
m = fastlstm.LSTM(16, 256, seed=0)
x = np.random.default_rng(0).standard_normal((5, 8, 16)).astype(np.float32)
want = m(x)[0]  # the parent has run a multi-threaded forward before forking
pid = os.fork()
if pid == 0:
    got = m(x)[0]
    if not np.array_equal(got, want):
        os._exit(3)
    pools = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["internal_api"] == "fastlstm"]
    if fastlstm.get_num_threads() != 1 or pools != [1]:  # what the kernels use there
        os._exit(4)
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fastlstm.set_num_threads(1)          # what it does anyway: no warning
        quiet = not caught
        fastlstm.set_num_threads(3)          # more than it can: says so, and still computes on one thread
    told = [str(w.message) for w in caught if w.category is RuntimeWarning]
    ok = quiet and len(told) == 1 and "set_num_threads(3)" in told[0] and "spawn" in told[0]
    os._exit(0 if ok and fastlstm.get_num_threads() == 1 and np.array_equal(m(x)[0], want) else 5)
deadline = time.monotonic() + 10  # a healthy child needs milliseconds
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    if time.monotonic() > deadline:
        os.kill(pid, signal.SIGKILL)  # our own child, by its id
        os.waitpid(pid, 0)
        sys.exit("forked child hung in a multi-threaded forward")
    time.sleep(0.05)
code = os.waitstatus_to_exitcode(status)
if code != 0:
    sys.exit(f"forked child failed with exit code {code}")
if not np.array_equal(m(x)[0], want):
    sys.exit("the parent's result changed after the fork")
print("fork ok")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")
def test_forward_in_forked_child(require, tmp_path):
    """GNU libgomp's pool breaks after fork without exec (DESIGN.md): the child must still compute, on one
    thread, and get_num_threads() and threadpoolctl say 1 there; set_num_threads(n > 1) there warns."""
    require("threadpoolctl")
    if not fastlstm.openmp_enabled():
        pytest.skip("serial build: nothing to break")
    proc = run_python(_FORK_SCRIPT, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fork ok" in proc.stdout
