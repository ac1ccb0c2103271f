"""A team that meets every time step on a busy machine: when a member is not running, the waiter gives the team
up and reruns the call alone, and the process stops meeting for a while (team.h, "contention"). The results are
the bits of one thread whatever happens. Made deterministic by running a 2-thread team on one CPU: each member
then waits for the other's time slice, and a busy process on that CPU makes a member miss its time slices: the
first call gives its team up."""
from __future__ import annotations

import os
import sys
import time

import pytest

import fastlstm
from fastlstm import _probes

from conftest import run_python

ONE_CPU_SCRIPT = """
import ast, os, subprocess, sys
import numpy as np
cpu = min(os.sched_getaffinity(0))
os.sched_setaffinity(0, {cpu})   # before any thread starts: the team shares one CPU, with a busy process
busy = subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu}}}); any(iter(int, 1))"])
import fastlstm
from fastlstm import _kernels
rng = np.random.default_rng(0)
failures = []
assert _kernels.contention() == (0.0, 0.0), _kernels.contention()
for I, H, L, bidir, proj, B, fmt in ast.literal_eval(os.environ["MODELS"]):
    model = fastlstm.LSTM(I, H, L, bidirectional=bidir, proj_size=proj, seed=H)
    model = model.quantize(fmt) if fmt else model
    x = rng.standard_normal((40, B, I)).astype(np.float32)
    fastlstm.set_num_threads(1)
    want = model(x)
    fastlstm.set_num_threads(2)
    for call in range(3):
        got = model(x)
        for a, e in zip((got[0], got[1][0], got[1][1]), (want[0], want[1][0], want[1][1])):
            if a.tobytes() != e.tobytes():
                failures.append(f"H={H} {fmt or 'float32'} call {call}: not the bits of one thread")
    s = model.stream(B) if not bidir else None
    if s is not None:   # a stream's step updates its state in place: never given up, still right
        fastlstm.set_num_threads(1)
        ref = model.stream(B)
        fastlstm.set_num_threads(2)
        for t in range(5):
            if s.step(x[t]).tobytes() != ref.step(x[t]).tobytes():
                failures.append(f"H={H} stream step {t} differs")
busy.kill()
window, remaining = _kernels.contention()
if not window > 0:
    failures.append(f"no contention window opened on one CPU: {_kernels.contention()}")
if failures:
    sys.exit("\\n".join(failures))
print("ok", window, remaining)
"""


# (I, H, layers, bidirectional, proj_size, B, weight format) per model; only a process's first call finds no window
# open, so each list runs in a process of its own. bf16 at H=512 is 2 MiB of W_hh: a team of 2 takes the smaller
# chunks of a share that stays in L2, the rerun alone (which reads all of it) the default ones. int8 with 32 rows
# splits them (no meeting): its threads find their CPU taken and open the window themselves.
ONE_CPU_MODELS = {
    "float32": [(32, 70, 1, False, 0, 1, None), (64, 256, 2, False, 0, 3, None), (16, 96, 2, False, 40, 2, None),
                (16, 64, 1, True, 0, 1, None)],
    "quantized": [(64, 512, 1, False, 0, 2, "bf16"), (64, 256, 1, False, 0, 2, "int8")],
    "int8 rows split": [(64, 512, 1, False, 0, 32, "int8")],
}


@pytest.mark.skipif(not fastlstm.openmp_enabled(), reason="a serial build has no team")
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
@pytest.mark.parametrize("models", sorted(ONE_CPU_MODELS))
def test_a_team_on_one_cpu_gives_up_and_keeps_the_bits(tmp_path, models):
    proc = run_python(ONE_CPU_SCRIPT, cwd=tmp_path, env={"MODELS": repr(ONE_CPU_MODELS[models])}, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok"), proc.stdout


def test_contention_reports_no_window_in_a_fresh_process(tmp_path):
    proc = run_python("from fastlstm import _kernels\nprint(_kernels.contention())", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(0.0, 0.0)"


AFFINITY_SETTINGS = ("OMP_PROC_BIND", "OMP_PLACES", "GOMP_CPU_AFFINITY", "KMP_AFFINITY")


@pytest.mark.skipif(not fastlstm.openmp_enabled(), reason="a serial build has no team")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="moves threads with Linux's affinity calls")
def test_a_team_woken_on_one_cpu_starts_on_different_cpus():
    # Linux sometimes wakes an idle team's worker on the caller's CPU; the start of a call moves it off (team.h)
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("the process may run on one CPU only")
    if any(os.environ.get(name) for name in AFFINITY_SETTINGS):
        pytest.skip("the OpenMP runtime binds its threads to places (the probe cannot stack them)")
    allowed = os.sched_getaffinity(0)
    stacked = 0
    for _ in range(20):
        before, after = _probes.probe_team_start(2)
        assert min(before) >= 0, f"not a team of 2 on known CPUs: {before}"
        if before[0] != before[1]:   # the scheduler moved one before the start: no stacked start to check
            continue
        stacked += 1
        assert after[0] != after[1], f"still on one CPU after the start: {after}"
        assert set(after) <= allowed
        if stacked == 5:
            break
    if stacked == 0:
        pytest.skip("the probe could not stack the team on this machine")
    with pytest.raises(ValueError, match="num_threads must be >= 2, got 1"):
        _probes.probe_team_start(1)


LATE_MEMBER_SCRIPT = """
from fastlstm import _probes
BEHIND = 0.02
CLEAN = 0.5e-3   # a sample where the member lost no more than this of its CPU says what the rule says
clean_behind = []
for _ in range(20):
    late, team, member_cpu, waiter_cpu, wait = _probes.probe_late_member(False, BEHIND)
    assert team == 2, team
    if member_cpu > BEHIND - CLEAN and wait < BEHIND + 2e-3:   # (a sleeping waiter runs little: its own CPU
                                                               # time says nothing, a late wake-up does)
        clean_behind.append(late)
    if len(clean_behind) == 4:
        break
asleep = [_probes.probe_late_member(True, BEHIND) for _ in range(4)]
print(clean_behind, asleep)
assert all(late == 0 for late in clean_behind), f"a running member 20 ms behind was found late: {clean_behind}"
assert all(late == 1 and team == 2 for late, team, *_ in asleep), f"a member asleep 20 ms was not late: {asleep}"
print("ok" if clean_behind else "busy")
"""


@pytest.mark.skipif(not fastlstm.openmp_enabled(), reason="a serial build has no team")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the members' CPU-time clocks on Linux")
def test_a_member_behind_is_late_only_when_it_does_not_run(tmp_path):
    # team.h: a waiter reads the awaited member's CPU-time clock; a member that computes is not late however far
    # behind it is, one that is off its CPU (here asleep) is. In a child without numpy's OpenBLAS pool, whose
    # threads spin on the cores (which is lateness too); the running case counts only the samples in which no
    # other task took the member's CPU (a busy CI machine does that too).
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("the process may run on one CPU only")
    proc = run_python(LATE_MEMBER_SCRIPT, cwd=tmp_path, env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    if proc.stdout.strip().endswith("busy"):
        pytest.skip("other tasks took the threads' CPUs in every running sample: " + proc.stdout)
    assert proc.stdout.strip().endswith("ok"), proc.stdout


def test_a_busy_process_learns_how_to_run():
    # while a contention window is open, a call that would meet every step runs on one thread (0), meets anyway
    # (1) or splits its rows (2, large batches), whichever was fastest lately for that model and batch size (the
    # median of 3 calls each way, tried in turn first, a way over 115% of the fastest dropped from the first
    # tries), and tries the others in bursts of 3 calls once 64 of its calls' time has passed (team.h)
    def bursts(ways, way):
        return [way] * 3 in [ways[i:i + 3] for i in range(9, len(ways) - 2)]

    meets = _probes.probe_contended_choices([2e-5, 1e-5], 600)
    assert meets[:4] == [0, 1, 1, 1], meets[:4]           # one each first, one thread first; the slower no more
    assert meets[4:].count(1) >= 0.9 * 596, meets         # then mostly the fastest
    assert bursts(meets, 0), meets                        # and the slower in bursts
    alone = _probes.probe_contended_choices([1e-5, 2e-5], 600)
    assert alone[:4] == [0, 1, 0, 0], alone[:4]
    assert alone[4:].count(0) >= 0.9 * 596, alone
    assert bursts(alone, 1), alone
    close = _probes.probe_contended_choices([1.1e-5, 1e-5], 6)
    assert close == [0, 1, 0, 1, 0, 1], close             # within 115%: three calls each
    split = _probes.probe_contended_choices([2e-5, 3e-5, 1e-5], 1200)
    assert split[:5] == [0, 1, 2, 2, 2], split[:5]
    assert split[5:].count(2) >= 0.85 * 1195, split
    assert bursts(split, 0) and bursts(split, 1), split   # each slower way in turn
    started = time.perf_counter()
    slow = _probes.probe_contended_choices([2e-3, 1e-3], 30)   # the slower way's turn: after 128 ms
    if time.perf_counter() - started < 0.1:                    # (31 ms of calls, unless the machine stalled us)
        assert slow == [0] + [1] * 29, slow
    with pytest.raises(ValueError, match="calls"):
        _probes.probe_contended_choices([1e-3, 1e-3], 0)
    with pytest.raises(ValueError, match="times"):
        _probes.probe_contended_choices([1e-3], 5)


@pytest.mark.skipif(not (sys.platform.startswith("linux") and os.uname().machine == "x86_64"),
                    reason="asks x86-64 Linux for membarrier by its syscall number")
def test_a_step_does_not_fence_where_sleepers_can_fence_for_it():
    # team.h: a waiter that sleeps runs membarrier, so publishing a step stays a plain store (a fence at every
    # step cost 75 ns a hand-off here); where the kernel offers the private expedited command, no fence
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    membarrier_syscall, query, private_expedited = 324, 0, 1 << 3
    offered = libc.syscall(membarrier_syscall, query, 0, 0)
    if offered < 0 or not offered & private_expedited:
        pytest.skip(f"the kernel does not offer MEMBARRIER_CMD_PRIVATE_EXPEDITED: {offered}")
    assert _probes.changers_fence() is False
