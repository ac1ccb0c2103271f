"""Probes of this machine's limits for ``python -m fastlstm bench`` (not used by a forward): the FMA throughput,
the read bandwidth of a buffer of weights, and the hand-off of a time step between threads, each on a team of
OpenMP threads without the GIL and on a chosen instruction set (probes.h). Also how a packed model's forward
hands its steps between threads (step_handoffs), which the bench adds to a row's limit.
"""
from cython.parallel cimport parallel
cimport numpy as cnp
import numpy as np

from . import _cpu

cnp.import_array()

cdef extern from "probes.h" nogil:
    ctypedef struct probe_table:
        float (*fma)(long rounds) noexcept nogil
        float (*read)(const float *p, long n, int descending) noexcept nogil
        void (*fill)(float *p, long n, float value) noexcept nogil
        long (*mismatches)(const float *p, long n, float value) noexcept nogil
    const probe_table *probe_select(int isa, int *vector_bytes)
    int probe_chains()
    int probe_read_sums()
    int lstm_thread_id()
    int lstm_team_size()
    ctypedef struct lstm_step_flag:
        int steps
    void lstm_step_publish(lstm_step_flag *flags, int tid, int steps)
    ctypedef struct lstm_team_state:
        int late, abort, can_abort, clocked, stacked
    int lstm_step_wait(lstm_step_flag *flags, int tid, int first, int count, int steps,
                       lstm_team_state *state, int may_abort)
    ctypedef struct lstm_team_barrier:
        pass
    void lstm_barrier_init(lstm_team_barrier *bar)
    void lstm_sleep_setup()
    int lstm_changers_fence
    int lstm_contended_way(long model, long rows, long steps, int ways)
    void lstm_contended_record(long model, long rows, int way, long long ns_per_step)
    long long lstm_now_ns()
    void probe_stacked_start(lstm_team_barrier *bar, int *master_cpu, int *before, int *after)
    void probe_member_behind(lstm_team_barrier *bar, lstm_team_state *state, lstm_step_flag *flags, int sleeps,
                             long long behind_ns, long long *times, int *team)

lstm_sleep_setup()   # the hand-offs measured as the forward's (team.h)


cdef const probe_table *_select(str isa, int *vector_bytes) except NULL:
    """The probes of ``isa`` (a key of fastlstm._cpu.ISAS, which this CPU must have)."""
    names = list(_cpu.ISAS)
    if isa not in names:
        raise ValueError(f"isa must be one of {names}, got {isa!r}")
    if isa not in _cpu.available_isas():
        raise ValueError(f"isa {isa!r}: this CPU lacks it (it has {_cpu.available_isas()})")
    return probe_select(names.index(isa), vector_bytes)


def vector_bytes(str isa):
    """The vector width in bytes of the probes of ``isa``."""
    cdef int vb = 0
    _select(isa, &vb)
    return vb


cdef void _probe_fma_thread(const probe_table *p, long rounds, float *first, int *team) noexcept nogil:
    """One thread's share of probe_fma: its FMA chains; thread 0 also reports its sum and the team size."""
    cdef float value = p.fma(rounds)
    if lstm_thread_id() == 0:
        first[0] = value
        team[0] = lstm_team_size()


def probe_fma(long rounds, int num_threads, str isa):
    """Run the FMA-throughput probe (probe_fma in probe_impl.h) on a team of up to num_threads threads, without
    the GIL: each thread does `rounds` rounds of independent float32 vector FMAs on instruction set ``isa``.

    Returns (lanes_sum, flops): thread 0's sum of its lanes (chain i's lanes end at i / 2**rounds + 2 -
    2**(1 - rounds)) and the floating-point operations of the whole team (2 per lane of every FMA).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    cdef int vb = 0
    cdef const probe_table *p = _select(isa, &vb)
    cdef float first = 0
    cdef int team = 1
    with nogil:
        if num_threads == 1:
            first = p.fma(rounds)
        else:
            with parallel(num_threads=num_threads):
                _probe_fma_thread(p, rounds, &first, &team)
    return float(first), 2.0 * rounds * probe_chains() * (vb // 4) * team


def probe_read_granule():
    """probe_read reads buffers in units of this many float32 elements (its running sums of the widest vector)."""
    return probe_read_sums() * 16


cdef void _probe_read_thread(const probe_table *p, const float *data, long g, long units, long passes,
                             float *sums) noexcept nogil:
    """One thread's share of probe_read: its contiguous range of units (of g = probe_read_granule() elements),
    read `passes` times, backwards every other pass; the sum of its last pass goes to sums[thread]."""
    cdef int tid = lstm_thread_id(), team = lstm_team_size()
    cdef long u0 = units * tid // team, u1 = units * (tid + 1) // team, k
    cdef float value = 0
    for k in range(passes):
        value = p.read(data + u0 * g, (u1 - u0) * g, k & 1)
    sums[tid] = value


def probe_read(cnp.ndarray buf, long passes, int num_threads, str isa):
    """Run the read-bandwidth probe (probe_read in probe_impl.h) on instruction set ``isa`` without the GIL:
    each thread of a team of up to num_threads sums its own contiguous share of buf `passes` times, as a forward
    streams its slice of the weights every step: forwards, then backwards, and so on (the steps alternate their
    block order, so that what one step read last is still cached when the next starts).

    buf : ndarray (n,) float32, C-contiguous, n a multiple of probe_read_granule() (64-byte aligned to measure)
    Returns (total, bytes): the sum of buf over the team's last passes and the bytes the team read.
    """
    cdef long g = probe_read_granule()
    if not isinstance(buf, np.ndarray) or buf.dtype != np.float32 or buf.ndim != 1 or not buf.flags.c_contiguous:
        raise TypeError("buf must be a 1-D C-contiguous float32 ndarray")
    if buf.shape[0] == 0 or buf.shape[0] % g:
        raise ValueError(f"buf must hold a positive multiple of {g} elements, got {buf.shape[0]}")
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    cdef int vb = 0
    cdef const probe_table *p = _select(isa, &vb)
    cdef cnp.ndarray sums = np.zeros(num_threads, np.float32)
    cdef const float *data = <const float *> cnp.PyArray_DATA(buf)
    cdef float *sums_data = <float *> cnp.PyArray_DATA(sums)
    cdef long units = buf.shape[0] // g
    with nogil:
        if num_threads == 1:
            _probe_read_thread(p, data, g, units, passes, sums_data)
        else:
            with parallel(num_threads=num_threads):
                _probe_read_thread(p, data, g, units, passes, sums_data)
    return float(sums.sum(dtype=np.float64)), 4.0 * buf.shape[0] * passes


cdef void _probe_handoff_thread(const probe_table *p, float *buf, long n, long steps, lstm_step_flag *flags,
                                long *stale, int *team_size) noexcept nogil:
    """One thread's share of probe_handoff: at step s it writes s into its range of cache lines of buf's half
    s % 2, publishes the step, waits for the others' and reads the rest of that half, which they wrote,
    counting the values that are not s into stale[thread]; thread 0 also reports the team size."""
    cdef int tid = lstm_thread_id(), team = lstm_team_size()
    cdef long lines = n // 16, e0 = lines * tid // team * 16, e1 = lines * (tid + 1) // team * 16, s, wrong = 0
    cdef float *half
    for s in range(1, steps + 1):
        half = buf + (s % 2) * n
        p.fill(half + e0, e1 - e0, s)
        lstm_step_publish(flags, tid, s)
        lstm_step_wait(flags, tid, 0, team, s, NULL, 0)
        wrong += p.mismatches(half, e0, s) + p.mismatches(half + e1, n - e1, s)
    stale[tid] = wrong
    if tid == 0:
        team_size[0] = team


def probe_handoff(long steps, long n, int num_threads, str isa):
    """Run the hand-off probe on instruction set ``isa`` without the GIL: a team of up to num_threads threads
    passes `steps` empty time steps to each other the way the threads of a direction end every step of a
    forward: each writes its share of an h of n float32 values (n a multiple of 16, whole cache lines; two
    buffers, used in turn), publishes its step count (lstm_step_publish), waits for the others'
    (lstm_step_wait) and reads their shares. Its time per step is what a step costs beyond its work.

    Returns (stale, reads, team): how many of the values read were not the step's (0 when every thread saw
    every other's writes of every step), how many were read (n * (team - 1) * steps) and the team size.
    """
    if steps < 1 or steps >= 1 << 24:  # step counts are stored exactly in float32
        raise ValueError(f"steps must be in [1, 2**24), got {steps}")
    if n < 1 or n % 16:
        raise ValueError(f"n must be a positive multiple of 16, got {n}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    cdef int vb = 0
    cdef const probe_table *p = _select(isa, &vb)
    from ._packing import _aligned_empty
    cdef cnp.ndarray halves = _aligned_empty((2 * n,), np.float32)
    cdef cnp.ndarray flag_lines = _aligned_empty((num_threads * sizeof(lstm_step_flag),), np.uint8)
    cdef cnp.ndarray stale = np.zeros(num_threads, np.int64)
    cdef float *buf = <float *> cnp.PyArray_DATA(halves)
    cdef lstm_step_flag *flags = <lstm_step_flag *> cnp.PyArray_DATA(flag_lines)
    cdef long *stale_data = <long *> cnp.PyArray_DATA(stale)
    cdef int team = 1
    with nogil:
        if num_threads == 1:
            _probe_handoff_thread(p, buf, n, steps, flags, stale_data, &team)
        else:
            with parallel(num_threads=num_threads):
                _probe_handoff_thread(p, buf, n, steps, flags, stale_data, &team)
    return int(stale.sum()), n * (team - 1) * steps, team


def step_handoffs(packed, long T, long B, int num_threads):
    """How a forward of the packed model over T steps and B rows on up to num_threads threads hands its time
    steps from thread to thread (lstm_step_wait) on its critical path. Returns (handoffs, team): once per step
    and layer among the `team` threads of a direction when its units are split among two or more; (0, 1) when
    each thread runs alone (a team of one, the batch's rows split, or a bidirectional layer's directions on one
    thread each)."""
    _, _, widest = packed.team(B, num_threads)
    if widest < 2:
        return 0, 1
    return T * packed.num_layers, widest


def probe_team_start(int num_threads):
    """Start a team of num_threads OpenMP threads the way a forward does (lstm_team_start in team.h) after
    moving every member onto the master's CPU, as Linux sometimes wakes an idle team. Returns two lists: each
    member's CPU before the start and after it (-1 where the system cannot say). After it, no two members
    should share a CPU while the process may run on enough others."""
    if num_threads < 2:
        raise ValueError(f"num_threads must be >= 2, got {num_threads}")
    cdef lstm_team_barrier bar
    lstm_barrier_init(&bar)
    cpus = np.full((2, num_threads), -2, np.intc)
    cdef int[:, ::1] slots = cpus
    cdef int *before = &slots[0, 0]
    cdef int *after = &slots[1, 0]
    cdef int master_cpu = -1
    with nogil, parallel(num_threads=num_threads):
        probe_stacked_start(&bar, &master_cpu, before, after)
    return cpus[0].tolist(), cpus[1].tolist()


def probe_late_member(bint sleeps, double behind_s):
    """Whether a team of 2 threads finds its second member late (team.h) when that member finishes its step
    behind_s seconds after the first, running all along (sleeps False: it is behind, not late) or asleep
    (sleeps True: off its CPU, as when another task has it). Returns (late waits counted, team size, the second
    member's CPU seconds over its part, the first's CPU seconds over its wait, the wait's seconds): on a busy
    machine a running member may lose its CPU too, and then it is late."""
    if not 0 < behind_s <= 1:
        raise ValueError(f"behind_s must be in (0, 1], got {behind_s}")
    cdef lstm_team_barrier bar
    lstm_barrier_init(&bar)
    cdef lstm_team_state state
    state.late, state.abort, state.can_abort, state.clocked, state.stacked = 0, 0, 0, 0, 0
    flag_lines = np.zeros(2 * sizeof(lstm_step_flag), np.uint8)
    cdef unsigned char[::1] flag_bytes = flag_lines
    cdef lstm_step_flag *flags = <lstm_step_flag *> &flag_bytes[0]
    cdef long long behind_ns = <long long> (behind_s * 1e9)
    cdef long long times[3]
    times[0] = times[1] = times[2] = 0
    cdef int team = 0
    with nogil, parallel(num_threads=2):
        probe_member_behind(&bar, &state, flags, sleeps, behind_ns, times, &team)
    return state.late, team, times[0] / 1e9, times[1] / 1e9, times[2] / 1e9


cdef long _choice_keys = 0


def probe_contended_choices(times_s, int calls):
    """The ways a busy process's forwards of one new model and batch size take (team.h, lstm_contended_way): for
    each of `calls` one-step calls, its way (0: one thread, 1: meeting every step, 2: rows split), each call of
    way w taking times_s[w] seconds (spent waiting on the clock; two times: no row split) and recorded so. A key
    of its own per probe, in this module's own copy of the table (the forward's, in _kernels, is not touched)."""
    times = [float(t) for t in times_s]
    if calls < 1 or len(times) not in (2, 3) or not all(0 < t <= 1 for t in times):
        raise ValueError(f"calls >= 1 and 2 or 3 times in (0, 1] needed, got {calls}, {times_s!r}")
    global _choice_keys
    _choice_keys += 1
    cdef long key = -_choice_keys    # not a packed model's serial number (those count up from 1)
    cdef int ways = (1 << len(times)) - 1
    cdef long long took, until
    chosen = []
    for _ in range(calls):
        way = lstm_contended_way(key, 1, 1, ways)
        took = <long long> (times[way] * 1e9)
        until = lstm_now_ns() + took
        while lstm_now_ns() < until:
            pass
        lstm_contended_record(key, 1, way, took)
        chosen.append(way)
    return chosen


def changers_fence():
    """Whether a thread that changes a word others may sleep on fences at each change (team.h: it does not when
    the sleepers can fence for it with membarrier, registered at import)."""
    return bool(lstm_changers_fence)
