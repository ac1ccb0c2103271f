/* team.h: the small shims a team of OpenMP threads needs around the kernels: OpenMP queries with serial
 * fallbacks, waiting (pause hints, then sleeping until woken), the team's barrier, the per-step flags
 * of a direction's threads, and flushing denormals to zero. Used by the forward (_kernels.pyx) and by the
 * bench's probes (_probes.pyx), which measure the same hand-off.
 */
#ifndef FASTLSTM_TEAM_H
#define FASTLSTM_TEAM_H

#include <limits.h>
#include <sched.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
/* which CPU a thread is on, and its affinity: glibc declares these with _GNU_SOURCE, which Python.h defines
   before any system header (a C program without it gets the fallbacks: see lstm_team_start) */
#if defined(__linux__) && defined(_GNU_SOURCE)
#define FASTLSTM_CPU_AFFINITY 1
#include <pthread.h>
#endif
/* a waiter sleeps on the word it waits for (a futex), woken by the member that changes it; the fence that makes
   this safe is the waiter's (membarrier) where the kernel has it (see lstm_sleep_on) */
#if defined(__linux__) && defined(_GNU_SOURCE)
#define FASTLSTM_FUTEX 1
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#if defined(__has_include)
#if __has_include(<linux/membarrier.h>)
#include <linux/membarrier.h>
#define FASTLSTM_MEMBARRIER_H 1
#endif
#endif
/* no membarrier header (its commands are enum constants: the header is tested), or no syscall number: the
   changers fence. (The private expedited command needs Linux 4.14; older kernels refuse it at run time.) */
#if !defined(FASTLSTM_MEMBARRIER_H) || !defined(__NR_membarrier)
#define FASTLSTM_NO_MEMBARRIER 1
#endif
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#ifndef FASTLSTM_X86
#define FASTLSTM_X86 1
#endif
#endif

/* A waiter spins (pause instructions) for LSTM_SPIN_NS, then sleeps on the word it waits for until the member that
   changes it wakes it (lstm_sleep_on; at most LSTM_SLEEP_NS at a time; where it cannot, it yields its CPU at each
   check), so that a member that was descheduled (more threads than free cores) gets to run. Sleeping, not yielding:
   with two busy processes on the 2 CPUs here, a team whose waiters yielded ran T=100 B=1 H=512 in 11-16 ms, one
   whose waiters slept in 6.4 ms (one thread: 9-16 ms; onnxruntime's team: 7.7-8.0 ms). Linux (EEVDF) runs a woken
   sleeper soon, while each yield put the waiter behind the busy processes. Waits are timed by the clock, read from
   the LSTM_CLOCK_SPINS-th check on (every 16th check while spinning), so a short wait costs no clock read: a pause
   takes 10 ns on one of this project's machines (Intel Xeon) and 25 ns on another (AMD Zen 4). A wait finds a
   member late (it was not running: another process or the hypervisor had a core) when one of the waiter's yields
   (where it cannot sleep) lasted LSTM_TAKEN_NS (another task ran on its CPU meanwhile), or when, once it has slept
   or yielded for LSTM_LATE_NS, the members it waits for have lost more than a third of the CPU time they could have
   had since it stopped spinning (their CPU was taken; read every LSTM_CHECK_NS from their CPU-time clocks, which
   they publish at the call's start); where the clocks cannot be read, a wait of LSTM_LATE_NS is late. A member that
   runs but is behind is not late. The thresholds are above the blips of an idle machine's own tasks: on the quiet
   VM here (Linux 6.18) kernel threads (kdamond) took a member's CPU for 0.75-1 ms every half second; counted (at a
   yield of 100 us, or a wait of 0.5 ms, as this file once did; or at 1 ms of CPU lost in any wait, as tried), they
   gave up one large call in a few and kept the later ones off their meetings for seconds (T=50 B=64 H=1024 bf16:
   74-80 ms instead of 57). A busy process sharing a member's CPU takes half of it in time slices of 1.5 ms or more
   there (the scheduler's base slice on 2 CPUs), so it is still found late. (Time the hypervisor steals counts as
   lost only where the guest kernel accounts steal time.) A wait spinning longer than LSTM_SPIN_NS alone is not late
   either: the first steps of a call whose weights are not yet in a member's caches, or a worker the OpenMP runtime
   had put to sleep, made waits of more than 50 us on an idle VM here (counted, at 50 us as this file once did, they
   put most quiet calls on one thread). A late wait gives the team up altogether: the waiter reruns the call alone
   (_kernels.pyx), and for a while the process's teams meet only where that was the faster way (see "contention"
   below). */
#define LSTM_SPIN_NS 50000LL
#define LSTM_SLEEP_NS 1000000L
#define LSTM_CLOCK_SPINS 256
#define LSTM_TAKEN_NS 1000000LL
#define LSTM_LATE_NS 3000000LL
#define LSTM_CHECK_NS 250000LL
/* How long the window a late call opens lasts (calls in it choose how to run): doubled at each late call up to the
   maximum, halved at each call whose team met on time. A late call costs up to a time slice of the machine's
   scheduler (measured 3-25 ms here with other processes running), so the windows grow long enough to make that
   rare. The minimum is short: another library's thread pool spinning on the cores for a while after its own calls
   (torch's, OpenVINO's) made a late call now and then in a process that also runs them, and a 50 ms minimum then
   kept fastlstm's streaming steps on one thread most of the time (benchmarks/contention.py with 1 and 2 busy
   processes measured the same with 10 ms as with 50; 1 ms put a busy machine's calls at 1.44x one thread). */
#define LSTM_CONTENTION_MIN_NS 10000000LL
#define LSTM_CONTENTION_MAX_NS 5000000000LL
/* the shortest window in calls (of the late call's length): 32 kept a quiet stretch after one late call of a
   10 ms forward on one thread for 0.3 s */
#define LSTM_CONTENTION_CALLS 8

/* a clock's reading in ns, -1 when it cannot be read */
static inline long long lstm_clock_ns(clockid_t clock) {
    struct timespec ts;
    if (clock_gettime(clock, &ts) != 0) return -1;
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline long long lstm_now_ns(void) { return lstm_clock_ns(CLOCK_MONOTONIC); }

/* ---- OpenMP shims (serial fallbacks when built without OpenMP) --------------------------------- */

static inline int lstm_openmp_enabled(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
/* the compiler that built this module, for `python -m fastlstm info` */
static inline const char *lstm_compiler(void) {
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#else
    return "unknown";
#endif
}
static inline int lstm_thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}
static inline int lstm_team_size(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

/* The clock of one wait (zeros at its start): when it was first timed, when it stopped spinning (to sleep or
   yield), the awaited members' CPU time then (-1: not known), when to read it next, whether it has stopped
   spinning, and whether it
   found a member late. */
typedef struct {
    long long since, yielded, ran, next_check;
    int yielding, late;
} lstm_wait_clock;

#define LSTM_TEAM_CPUS 64   /* the members whose CPUs and CPU-time clocks a team keeps (lstm_team_start) */

/* What the members of one forward's team share about lateness: how many waits found a member late (for the
   contention window below), whether a waiter has given up on the team (abort: every member stops at its next
   wait and the waiter reruns the call alone), whether this call may be given up (its outputs do not alias
   its inputs, so a rerun reads inputs no member writes), and the members' CPU-time clocks: `clocked` of them,
   0 before the team started and in teams of more than LSTM_TEAM_CPUS (whose waits then use the LSTM_LATE_NS
   rule); a member whose clock id cannot be had stores (clockid_t)-1, which clock_gettime refuses; and whether
   two members share a CPU that they cannot leave (stacked: the user's affinity allows no other; see
   lstm_team_start), which makes every counted wait late. */
typedef struct {
    int late;
    int abort;
    int can_abort;
    int clocked;
    int stacked;
#if defined(FASTLSTM_CPU_AFFINITY)
    clockid_t cpu_clock[LSTM_TEAM_CPUS];
#endif
} lstm_team_state;

/* The CPU time (ns) the members a wait is for have run: member `awaited`, or with -1 every member but `self`
   (*count: how many); -1 when it cannot be read. */
static inline long long lstm_awaited_cpu_ns(const lstm_team_state *state, int awaited, int self, int *count) {
    *count = 0;
#if defined(FASTLSTM_CPU_AFFINITY)
    if (state == NULL || awaited >= state->clocked || state->clocked == 0) return -1;
    const int first = awaited < 0 ? 0 : awaited, end = awaited < 0 ? state->clocked : awaited + 1;
    long long total = 0;
    for (int j = first; j < end; j++) {
        if (j == self) continue;
        const long long ns = lstm_clock_ns(state->cpu_clock[j]);
        if (ns < 0) return -1;
        total += ns;
        ++*count;
    }
    return total;
#else
    (void)state;
    (void)awaited;
    (void)self;
    return -1;
#endif
}

/* Sleeping on a word needs a store-load fence on both sides: a sleeper raises its count, then reads the word
   again; the thread that changed the word reads the count after its change; so either the sleeper sees the change
   or the changer sees the sleeper. On the changer's side (every step) a fence costs the cross-core trip of the
   word's cache line (a hand-off between two threads took 314 instead of 240 ns per step here), so the sleeper
   (after 50 us of waiting) makes every thread of the process run one for it: membarrier's private expedited
   command, registered once per process (lstm_sleep_setup, at import). Where the kernel refuses it, the changers
   fence (lstm_changers_fence), as they do where the kernel refuses the barrier at run time.
   Without futexes nobody sleeps, and the changers need no fence either. Each extension module including this
   file has its own flag and registers for itself (the registration is per process: the second is a no-op). */
#if defined(FASTLSTM_FUTEX)
static int lstm_changers_fence = 1;
#else
static int lstm_changers_fence = 0;
#endif

static inline void lstm_sleep_setup(void) {
#if defined(FASTLSTM_FUTEX) && !defined(FASTLSTM_NO_MEMBARRIER)
    if (syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0)
        __atomic_store_n(&lstm_changers_fence, 0, __ATOMIC_RELAXED);
#endif
}

/* Publish a word others may sleep on (release; a full fence where the sleepers cannot fence for us). */
static inline void lstm_store_waking(int *word, int value) {
    if (__atomic_load_n(&lstm_changers_fence, __ATOMIC_RELAXED))
        __atomic_store_n(word, value, __ATOMIC_SEQ_CST);
    else
        __atomic_store_n(word, value, __ATOMIC_RELEASE);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);   /* the compiler keeps the store before the sleepers' count is read */
}

/* Sleep until *word is no longer `seen` (woken by lstm_wake_sleepers after the change, or after LSTM_SLEEP_NS at
   most), counted in *sleepers meanwhile; where threads cannot sleep on a word (no futex, or word NULL), yield the
   CPU instead. Returns whether it slept. */
static inline int lstm_sleep_on(int *word, int seen, int *sleepers) {
#if defined(FASTLSTM_FUTEX)
    if (word != NULL) {
        __atomic_fetch_add(sleepers, 1, __ATOMIC_SEQ_CST);
#if !defined(FASTLSTM_NO_MEMBARRIER)
        if (!__atomic_load_n(&lstm_changers_fence, __ATOMIC_RELAXED) &&
            syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0)
            __atomic_store_n(&lstm_changers_fence, 1, __ATOMIC_RELAXED);   /* refused now: the changers fence */
#endif
        if (__atomic_load_n(word, __ATOMIC_SEQ_CST) == seen) {
            struct timespec timeout = {0, LSTM_SLEEP_NS};
            syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, seen, &timeout, NULL, 0);
        }
        __atomic_fetch_sub(sleepers, 1, __ATOMIC_SEQ_CST);
        return 1;
    }
#endif
    (void)word;
    (void)seen;
    (void)sleepers;
    sched_yield();
    return 0;
}

/* After changing *word (lstm_store_waking): wake whoever sleeps on it (lstm_sleep_on). */
static inline void lstm_wake_sleepers(int *word, int *sleepers) {
#if defined(FASTLSTM_FUTEX)
    if (__atomic_load_n(sleepers, __ATOMIC_SEQ_CST) > 0)
        syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#else
    (void)word;
    (void)sleepers;
#endif
}

static inline void lstm_pause(void) {
#if defined(FASTLSTM_X86)
    _mm_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* One check of a waiting loop (spins: the checks before it) for member `awaited` (-1: every member but `self`) of
   the team sharing state (NULL: lateness does not matter): a pause while the wait is shorter than LSTM_SPIN_NS,
   then the CPU is given up. Returns whether the wait has found a member late. */
static inline int lstm_wait_a_while(long spins, lstm_wait_clock *clock, const lstm_team_state *state, int awaited,
                                    int self, int *word, int seen, int *sleepers) {
    int count;
    if (!clock->yielding) {
        lstm_pause();
        if (spins < LSTM_CLOCK_SPINS || (spins & 15)) return 0;
        const long long now = lstm_now_ns();
        if (clock->since == 0) {
            clock->since = now;
        } else if (now - clock->since > LSTM_SPIN_NS) {
            clock->yielding = 1;
            clock->yielded = now;
            clock->ran = lstm_awaited_cpu_ns(state, awaited, self, &count);
            clock->next_check = now + LSTM_CHECK_NS;
        }
        return 0;
    }
    const long long before = lstm_now_ns();
    const int slept = lstm_sleep_on(word, seen, sleepers);
    if (word != NULL && __atomic_load_n(word, __ATOMIC_ACQUIRE) != seen) return clock->late;   /* it came */
    const long long now = lstm_now_ns();
    if (clock->late) return 1;
    if (!slept && now - before > LSTM_TAKEN_NS) {
        clock->late = 1;
    } else if (clock->ran < 0) {
        clock->late = now - clock->since > LSTM_LATE_NS;
    } else if (now - clock->yielded >= LSTM_LATE_NS && now >= clock->next_check) {
        const long long ran = lstm_awaited_cpu_ns(state, awaited, self, &count);
        const long long could = (long long)count * (now - clock->yielded);   /* CPU time the members could have had */
        if (ran < 0)
            clock->ran = -1;   /* the clocks failed: the LSTM_LATE_NS rule from now on */
        else if (3 * (could - (ran - clock->ran)) > could)
            clock->late = 1;
        clock->next_check = now + LSTM_CHECK_NS;
    }
    return clock->late;
}

/* what a wait returns: the others arrived; the team was given up; this waiter found a member late and may give
   the team up (lstm_team_abort) */
enum { LSTM_WAIT_DONE = 0, LSTM_WAIT_ABORTED = 1, LSTM_WAIT_LATE = 2 };

/* One check of a waiting loop that found the others (awaited, self: see lstm_wait_a_while) not there yet:
   LSTM_WAIT_ABORTED when the team was given up; LSTM_WAIT_LATE once the wait has found a member late, when the
   call can be given up and this waiter has not declined to (may_abort); else LSTM_WAIT_DONE to keep waiting. A
   late wait is counted in state->late once (*noted). */
static inline int lstm_wait_check(long spins, lstm_wait_clock *clock, int *noted, lstm_team_state *state,
                                  int may_abort, int awaited, int self, int *word, int seen, int *sleepers) {
    if (state == NULL) {
        lstm_wait_a_while(spins, clock, NULL, awaited, self, word, seen, sleepers);
        return LSTM_WAIT_DONE;
    }
    if (__atomic_load_n(&state->abort, __ATOMIC_ACQUIRE)) return LSTM_WAIT_ABORTED;
    const int late = lstm_wait_a_while(spins, clock, state, awaited, self, word, seen, sleepers) ||
                     __atomic_load_n(&state->stacked, __ATOMIC_RELAXED);
    if (late && !*noted) {
        *noted = 1;
        __atomic_fetch_add(&state->late, 1, __ATOMIC_RELAXED);
    }
    if (late && may_abort && state->can_abort) return LSTM_WAIT_LATE;
    return LSTM_WAIT_DONE;
}

/* Give the team up: 1 for the one waiter that does (it then reruns the call alone), 0 when another did. */
static inline int lstm_team_abort(lstm_team_state *state) {
    int expected = 0;
    return __atomic_compare_exchange_n(&state->abort, &expected, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* The team's barrier, met at the start of every layer (and mid-step with a projection). libgomp's own
   barrier took ~250-350 ns per crossing on the 2-core test machine, this one ~30 ns (both measured with
   2 threads crossing 200000 barriers in a loop): at B = 1 a step is a few hundred ns of work. The last
   thread to arrive resets the count and bumps the generation (release); the others spin on the generation
   (acquire), so every write before the barrier is visible after it. After ~50 us of spinning a waiter
   sleeps on the generation (yields at the call's uncounted start: see lstm_team_start), so a team member
   that was descheduled (more threads than free cores) gets to run. A NULL barrier is not met: the thread works
   alone (a row split, see _kernels.pyx). */
typedef struct {
    int arrived;
    char pad_arrived[64 - sizeof(int)];
    int generation;
    char pad_generation[64 - sizeof(int)];
    int sleepers;               /* waiters asleep on the generation (a line of its own: see lstm_step_flag) */
    char pad_sleepers[64 - sizeof(int)];
    int cpu[LSTM_TEAM_CPUS];    /* the CPU each member started the call on (lstm_team_start) */
    int came[LSTM_TEAM_CPUS];   /* each member's last barrier: the generation it ended (gen + 1) */
} lstm_team_barrier;

/* A member other than self that has not yet come to the barrier ending generation `gen` - 1 (-1: none). */
static inline int lstm_barrier_absent(const lstm_team_barrier *bar, int team, int self, int gen) {
    for (int j = 0; j < team && j < LSTM_TEAM_CPUS; j++)
        if (j != self && __atomic_load_n(&bar->came[j], __ATOMIC_RELAXED) != gen) return j;
    return -1;
}

static inline void lstm_barrier_init(lstm_team_barrier *bar) {
    memset(bar, 0, sizeof(*bar));
}

/* Meet the team (state: see lstm_wait_check; NULL for none). Returns an LSTM_WAIT_* code; a barrier left
   early (not DONE) is broken: the team must be given up. */
static inline int lstm_barrier_wait(lstm_team_barrier *bar, lstm_team_state *state, int may_abort) {
#ifdef _OPENMP
    const int team = omp_get_num_threads();
    if (team <= 1 || bar == NULL) return LSTM_WAIT_DONE;
    const int gen = __atomic_load_n(&bar->generation, __ATOMIC_ACQUIRE);
    const int self = omp_get_thread_num();
    if (self < LSTM_TEAM_CPUS) __atomic_store_n(&bar->came[self], gen + 1, __ATOMIC_RELAXED);
    if (__atomic_add_fetch(&bar->arrived, 1, __ATOMIC_ACQ_REL) == team) {
        __atomic_store_n(&bar->arrived, 0, __ATOMIC_RELAXED);
        lstm_store_waking(&bar->generation, gen + 1);
        lstm_wake_sleepers(&bar->generation, &bar->sleepers);
        return LSTM_WAIT_DONE;
    }
    /* the wait's lateness is about one member that has not come (a member that came sleeps and runs no more;
       counted, it looked late): when it comes, the wait starts over for another */
    int awaited = team <= LSTM_TEAM_CPUS ? lstm_barrier_absent(bar, team, self, gen + 1) : -1, noted = 0, code;
    lstm_wait_clock clock = {0, 0, 0, 0, 0, 0};
    for (long spins = 0; __atomic_load_n(&bar->generation, __ATOMIC_ACQUIRE) == gen; spins++) {
        if ((code = lstm_wait_check(spins, &clock, &noted, state, may_abort, awaited, self,
                                    state != NULL ? &bar->generation : NULL, gen, &bar->sleepers)) != LSTM_WAIT_DONE)
            return code;
        if (awaited >= 0 && __atomic_load_n(&bar->came[awaited], __ATOMIC_RELAXED) == gen + 1) {
            const int next = lstm_barrier_absent(bar, team, self, gen + 1);
            if (next >= 0) {
                awaited = next;
                clock = (lstm_wait_clock){0, 0, 0, 0, 0, 0};
            }
        }
    }
    return LSTM_WAIT_DONE;
#else
    (void)bar;
    (void)state;
    (void)may_abort;
    return LSTM_WAIT_DONE;
#endif
}

/* The CPU this thread runs on, or -1 where the system cannot say. */
static inline int lstm_current_cpu(void) {
#if defined(FASTLSTM_CPU_AFFINITY)
    return sched_getcpu();
#else
    return -1;
#endif
}

#if defined(FASTLSTM_CPU_AFFINITY)
/* Move this thread onto the CPUs of `via`: its affinity is set to them, which moves it, then back to `had`, the
   mask it had (which the kernel accepted before; the scheduler does not move it back). */
static inline void lstm_move_via(const cpu_set_t *via, const cpu_set_t *had) {
    if (sched_setaffinity(0, sizeof(*via), via) == 0) sched_setaffinity(0, sizeof(*had), had);
}
#endif

/* Move this thread off the CPUs the other members of its team run on (cpus[0, members), its own at tid): its
   affinity is set to the CPUs it may run on minus theirs, which moves it, then back to the mask it had, which
   the scheduler does not undo. Nothing happens when no other allowed CPU is left (the user pinned it): returns 0
   then (the team stays stacked), else 1. */
static inline int lstm_team_unstack(const int *cpus, int members, int tid) {
#if defined(FASTLSTM_CPU_AFFINITY)
    cpu_set_t had, elsewhere;
    if (sched_getaffinity(0, sizeof(had), &had) != 0) return 1;
    elsewhere = had;
    for (int j = 0; j < members; j++)
        if (j != tid && cpus[j] >= 0 && cpus[j] < CPU_SETSIZE) CPU_CLR(cpus[j], &elsewhere);
    if (CPU_COUNT(&elsewhere) == 0) return 0;
    lstm_move_via(&elsewhere, &had);
#else
    (void)cpus;
    (void)members;
    (void)tid;
#endif
    return 1;
}

/* The start of a call: the team meets without counting lateness (a worker the OpenMP runtime put to sleep
   between calls takes a while to wake, and it was not taken away by another task), each member saying which CPU
   it is on and (state, when not NULL) its CPU-time clock for the waits' lateness; a worker that finds an earlier
   member on its own CPU moves off the members' CPUs. On an idle
   2-vCPU VM (the Intel Xeon here) Linux woke a sleeping worker on the caller's CPU in about one call in three
   after a 50 ms pause, with the other CPU idle; the two then took turns on one CPU, a wait's yield lasted
   0.1-3.4 ms (the other member's time slice, or the OpenMP runtime spinning in it), and an idle machine's
   call was found late. Members beyond LSTM_TEAM_CPUS are not compared, and a larger team publishes no clocks.
   Its waits yield rather than sleep: a worker slow to come out of the OpenMP runtime's sleep is not taken away,
   and a quiet call's start should not wait for a wake-up on top of it. */
static inline void lstm_team_start(lstm_team_barrier *bar, lstm_team_state *state) {
#ifdef _OPENMP
    const int tid = omp_get_thread_num(), team = omp_get_num_threads();
    const int members = team < LSTM_TEAM_CPUS ? team : LSTM_TEAM_CPUS;
    const int cpu = lstm_current_cpu();
    if (tid < members) bar->cpu[tid] = cpu;   /* published by the barrier's release, as the clocks below */
#if defined(FASTLSTM_CPU_AFFINITY)
    if (state != NULL) {
        if (tid == 0) state->clocked = team <= LSTM_TEAM_CPUS ? team : 0;
        if (tid < members && pthread_getcpuclockid(pthread_self(), &state->cpu_clock[tid]) != 0)
            state->cpu_clock[tid] = (clockid_t)-1;   /* clock_gettime fails on it: the wait's clock rule */
    }
#endif
    lstm_barrier_wait(bar, NULL, 0);
    if (tid == 0 || tid >= members || cpu < 0) return;
    for (int j = 0; j < tid; j++)
        if (bar->cpu[j] == cpu) {
            /* pinned together: the waits find the team late (a 2-thread team on one CPU beside a busy process
               took 4.8 ms a call where one thread took 0.027, its waiters sleeping in turn at every step) */
            if (!lstm_team_unstack(bar->cpu, members, tid) && state != NULL)
                __atomic_store_n(&state->stacked, 1, __ATOMIC_RELAXED);
            return;
        }
#else
    (void)bar;
#endif
    (void)state;
}

/* The end of a time step among the threads of one direction (a sub-team): each thread publishes how many
   steps it has finished in its own cache line (lstm_step_publish), then waits until every other member has
   finished as many (lstm_step_wait); work that no other thread reads can go between the two.
   One store and one load per member instead of the team barrier's shared counter and generation, and the
   two directions of a layer, run by different threads, no longer wait for each other at every step.
   The store releases this thread's writes (its units of h and out); the loads acquire the others'. */
typedef struct {
    int steps;
    char pad_steps[64 - sizeof(int)];
    int sleepers;       /* waiters asleep on steps: a line of its own, which a publisher reads at every step */
    char pad_sleepers[64 - sizeof(int)];
} lstm_step_flag;

static inline void lstm_step_publish(lstm_step_flag *flags, int tid, int steps) {
    lstm_store_waking(&flags[tid].steps, steps);
    lstm_wake_sleepers(&flags[tid].steps, &flags[tid].sleepers);
}

/* Wait until members [first, first + count) other than tid have finished `steps` steps (state: see
   lstm_wait_check; NULL for none). Returns an LSTM_WAIT_* code. */
static inline int lstm_step_wait(lstm_step_flag *flags, int tid, int first, int count, int steps,
                                 lstm_team_state *state, int may_abort) {
    for (int j = first; j < first + count; j++) {
        if (j == tid) continue;
        lstm_wait_clock clock = {0, 0, 0, 0, 0, 0};
        int noted = 0, code, seen;
        for (long spins = 0; (seen = __atomic_load_n(&flags[j].steps, __ATOMIC_ACQUIRE)) < steps; spins++)
            if ((code = lstm_wait_check(spins, &clock, &noted, state, may_abort, j, tid, &flags[j].steps, seen,
                                        &flags[j].sleepers)) != LSTM_WAIT_DONE)
                return code;
    }
    return LSTM_WAIT_DONE;
}

/* ---- contention: while the machine is busy, a call that would meet every step (or an int8 model's row split)
   takes the fastest way ---- */

/* Until when (CLOCK_MONOTONIC ns, 0: not contended) teams do not meet, and the current length of that window.
   Shared by every call of the process; updated with relaxed atomics (a lost update only shifts a window). */
static long long lstm_contended_until = 0;
static long long lstm_contention_window = 0;

/* Whether a forward that would meet every step (or split an int8 model's rows) should choose how it runs (a
   recent call found its team late: lstm_contended_way). The clock is read only while a window is open. */
static inline int lstm_team_contended(void) {
    const long long until = __atomic_load_n(&lstm_contended_until, __ATOMIC_RELAXED);
    if (until == 0) return 0;
    if (lstm_now_ns() < until) return 1;
    __atomic_store_n(&lstm_contended_until, 0, __ATOMIC_RELAXED);   /* the window is over: try meeting again */
    return 0;
}

/* After a forward whose team met every step (or timed its row split's shares) and took call_ns: late != 0 when a
   member was found late (opens the window, at least twice the last one and LSTM_CONTENTION_CALLS calls long, capped),
   else the window's length halves. With a window open, such forwards run the way lstm_contended_way chooses (one
   thread, meeting, or a row split); after it, a team meets again (a late member then costs one call at most about its
   time on one thread, plus the wait that found it late: the call is given up and rerun, see _kernels.pyx). */
static inline void lstm_team_report(int late, long long call_ns) {
    long long window = __atomic_load_n(&lstm_contention_window, __ATOMIC_RELAXED);
    if (late) {
        window = 2 * window > LSTM_CONTENTION_CALLS * call_ns ? 2 * window : LSTM_CONTENTION_CALLS * call_ns;
        if (window < LSTM_CONTENTION_MIN_NS) window = LSTM_CONTENTION_MIN_NS;
        if (window > LSTM_CONTENTION_MAX_NS) window = LSTM_CONTENTION_MAX_NS;
        __atomic_store_n(&lstm_contention_window, window, __ATOMIC_RELAXED);
        __atomic_store_n(&lstm_contended_until, lstm_now_ns() + window, __ATOMIC_RELAXED);
    } else if (window) {
        __atomic_store_n(&lstm_contention_window, window / 2 < LSTM_CONTENTION_MIN_NS ? 0 : window / 2,
                         __ATOMIC_RELAXED);
    }
}

/* An int8 model's row split (_kernels.pyx) never waits between its threads, so no wait finds a member late: instead
   the threads start together (lstm_team_start: a worker woken on another member's CPU moves off it, or the team is
   found stacked, which is late), then each times its share of the call, by the clock and by its own CPU time
   (lstm_share_start at its start, lstm_share_end at its end), and counts it late in state->late when it lost
   LSTM_TAKEN_NS and a third of the time (its CPU was taken; the blips of an idle machine's kernel threads, under
   1 ms, are not); the call then reports late (lstm_team_report). A share shorter than the scheduler's time slice is
   found late only when it was taken off its CPU midway. Measured: int8 T=100 B=8 H=512, whose rows are split, took
   5.7 ms under one busy process on the 2 CPUs here without this (the thread sharing the busy CPU set the pace),
   3.6 ms meeting (whose late waits let the window choose the way). */
typedef struct {
    long long wall, cpu;     /* cpu -1: this thread's CPU time cannot be read */
} lstm_share_clock;

static inline lstm_share_clock lstm_share_start(void) {
    lstm_share_clock clock = {lstm_now_ns(), lstm_clock_ns(CLOCK_THREAD_CPUTIME_ID)};
    return clock;
}
static inline void lstm_share_end(lstm_share_clock start, lstm_team_state *state) {
    const long long cpu = lstm_clock_ns(CLOCK_THREAD_CPUTIME_ID), wall = lstm_now_ns() - start.wall;
    if (state == NULL || start.cpu < 0 || cpu < 0) return;
    const long long lost = wall - (cpu - start.cpu);
    if (lost >= LSTM_TAKEN_NS && 3 * lost >= wall) __atomic_fetch_add(&state->late, 1, __ATOMIC_RELAXED);
}

/* While a window is open, how a forward that would meet every step (or split an int8 model's rows) runs is learnt per
   model and batch size from the calls themselves, among the ways it can: on one thread, meeting every step anyway
   (not given up: see _kernels.pyx), or with a large batch's rows split among the threads (2 register tiles of rows
   per thread at least; the end of the call waits for the slowest). Each way's estimate is the median time per step of
   its last LSTM_CONTENDED_BURST calls (a busy machine's call times scatter: one slow call in a moving average kept a
   faster way off for a while). A new key first tries the ways in turn, up to LSTM_CONTENDED_BURST calls each, a way
   whose calls took over LSTM_CONTENDED_CLOSE per cent of the fastest's no more (T=100 B=32 H=512 under two busy
   processes: 102 ms a call on one thread, 80 split, 69 meeting; 3 tries of each made a short job of 7 calls take
   1.4-1.5x the fastest way's time); then the fastest way runs, and another (in turn) a burst again once as much time
   has passed as LSTM_CONTENDED_EXPLORE of its calls take (a few per cent of the time spent in it), so that a change
   in the load is seen: a slower way's call can cost a time slice of the scheduler, 20 times a T=100 H=70 call. Which
   way wins depends on the load: with one busy process on 2 CPUs, one thread has a CPU to itself while a team's member
   (or a row split's thread) shares the busy one (one thread wins at T=100 B=4 H=256); with two busy processes a
   thread of any way gets half a CPU, and a team meets without collapse when its waiters sleep (lstm_sleep_on: a woken
   sleeper runs soon), which wins at B=1 H=512 (two threads' halves of the weights fit their L2s, where one thread
   streams them all from L3). Keys are kept for LSTM_CONTENDED_KEYS (model, rows) pairs, the least recently used
   replaced; entries unused for LSTM_CONTENDED_STALE_NS (since a call's end) start over. Every extension module
   including this file keeps a table of its own. */
enum { LSTM_WAY_ALONE = 0, LSTM_WAY_MEET = 1, LSTM_WAY_SPLIT = 2, LSTM_WAYS = 3 };   /* (one thread tried first) */
#define LSTM_CONTENDED_KEYS 16
#define LSTM_CONTENDED_BURST 3
#define LSTM_CONTENDED_EXPLORE 64
#define LSTM_CONTENDED_CLOSE 115
#define LSTM_CONTENDED_STALE_NS 1000000000LL
typedef struct {
    long model;                 /* the model's serial number (never reused, unlike its address) */
    long rows;
    long long ns_per_step[LSTM_WAYS][LSTM_CONTENDED_BURST];   /* each way's last calls (LSTM_WAY_*) */
    int count[LSTM_WAYS];       /* calls recorded each way (up to LSTM_CONTENDED_BURST) */
    int next[LSTM_WAYS];        /* where each way's next time goes */
    int burst;                  /* calls left in the current burst of a slower way */
    int burst_way;              /* that way */
    int explore_from;           /* the way after which the next burst's way is looked for */
    long long used;             /* when last chosen (lstm_now_ns) */
    long long explored;         /* when the last burst of a slower way began */
} lstm_contended_entry;

static lstm_contended_entry lstm_contended_table[LSTM_CONTENDED_KEYS];
static int lstm_contended_lock = 0;

/* Whether this thread got the table's lock (a holder preempted on a busy machine could keep a spinning thread
   waiting for a time slice: a call that does not get it runs on one thread, a time that does not is dropped). */
static inline int lstm_contended_acquire(void) {
    return !__atomic_exchange_n(&lstm_contended_lock, 1, __ATOMIC_ACQUIRE);
}
static inline void lstm_contended_release(void) {
    __atomic_store_n(&lstm_contended_lock, 0, __ATOMIC_RELEASE);
}

/* The entry of (model, rows), made anew (least recently used replaced) if missing or, when `fresh`, stale; with
   the lock held. */
static inline lstm_contended_entry *lstm_contended_find(long model, long rows, long long now, int fresh) {
    lstm_contended_entry *oldest = &lstm_contended_table[0];
    for (int i = 0; i < LSTM_CONTENDED_KEYS; i++) {
        lstm_contended_entry *e = &lstm_contended_table[i];
        if (e->model == model && e->rows == rows && (!fresh || now - e->used < LSTM_CONTENDED_STALE_NS)) return e;
        if (e->used < oldest->used) oldest = e;
    }
    memset(oldest, 0, sizeof(*oldest));
    oldest->model = model;
    oldest->rows = rows;
    oldest->explored = now;
    return oldest;
}

/* One way's estimate (ns per step): the median of its recorded calls (the mean of two). */
static inline long long lstm_contended_estimate(const lstm_contended_entry *e, int way) {
    const long long *t = e->ns_per_step[way];
    if (e->count[way] == 1) return t[0];
    if (e->count[way] == 2) return (t[0] + t[1]) / 2;
    const long long lo = t[0] < t[1] ? t[0] : t[1], hi = t[0] < t[1] ? t[1] : t[0];
    return t[2] < lo ? lo : t[2] > hi ? hi : t[2];
}

/* With a window open: the way (LSTM_WAY_*) this forward of `model` on `rows` rows and `steps` steps runs, among
   those in `ways` (bit i: way i can run; LSTM_WAY_MEET always can). */
static inline int lstm_contended_way(long model, long rows, long steps, int ways) {
    const long long now = lstm_now_ns();
    ways |= 1 << LSTM_WAY_MEET;
    if (!lstm_contended_acquire()) return LSTM_WAY_ALONE;
    lstm_contended_entry *e = lstm_contended_find(model, rows, now, 1);
    /* first tries: in turn (the enum's order), up to LSTM_CONTENDED_BURST calls each way, a way whose calls so
       far took over LSTM_CONTENDED_CLOSE per cent of the fastest's no more */
    long long fastest = LLONG_MAX;
    for (int w = 0; w < LSTM_WAYS; w++)
        if ((ways >> w & 1) && e->count[w] > 0 && lstm_contended_estimate(e, w) < fastest)
            fastest = lstm_contended_estimate(e, w);
    int way = -1;
    for (int w = 0; w < LSTM_WAYS; w++)
        if ((ways >> w & 1) && e->count[w] < (way < 0 ? LSTM_CONTENDED_BURST : e->count[way]) &&
            (e->count[w] == 0 || lstm_contended_estimate(e, w) * 100 <= LSTM_CONTENDED_CLOSE * fastest))
            way = w;
    if (way < 0 && e->burst > 0 && (ways >> e->burst_way & 1)) {
        way = e->burst_way;
        e->burst--;
    }
    if (way < 0) {
        int best = LSTM_WAY_MEET;
        for (int w = 0; w < LSTM_WAYS; w++)
            if ((ways >> w & 1) && lstm_contended_estimate(e, w) < lstm_contended_estimate(e, best)) best = w;
        way = best;
        int other = e->explore_from;   /* the next way after the last explored one, other than the best */
        do other = (other + 1) % LSTM_WAYS; while (other == best || !(ways >> other & 1));
        if (now - e->explored > (long long)LSTM_CONTENDED_EXPLORE * steps * lstm_contended_estimate(e, other)) {
            way = e->burst_way = e->explore_from = other;
            e->burst = LSTM_CONTENDED_BURST - 1;
            e->explored = now;
        }
    }
    e->used = now;
    lstm_contended_release();
    return way;
}

/* After a forward that ran the way lstm_contended_way chose: its time per step. */
static inline void lstm_contended_record(long model, long rows, int way, long long ns_per_step) {
    const long long now = lstm_now_ns();
    if (!lstm_contended_acquire()) return;
    lstm_contended_entry *e = lstm_contended_find(model, rows, now, 0);
    e->used = now;
    e->ns_per_step[way][e->next[way]] = ns_per_step;
    e->next[way] = (e->next[way] + 1) % LSTM_CONTENDED_BURST;
    if (e->count[way] < LSTM_CONTENDED_BURST) e->count[way]++;
    lstm_contended_release();
}

/* ---- denormals: flush to zero inside the kernels, restore the caller's mode after --------------- */

static inline unsigned long lstm_ftz_enter(void) {
#if defined(FASTLSTM_X86)
    unsigned int saved = _mm_getcsr();
    _mm_setcsr(saved | 0x8040u); /* FTZ (bit 15) and DAZ (bit 6) */
    return saved;
#elif defined(__aarch64__)
    unsigned long saved;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(saved));
    __asm__ __volatile__("msr fpcr, %0" : : "r"(saved | (1ul << 24))); /* FZ: inputs and results flushed */
    return saved;
#else
    return 0;
#endif
}
static inline void lstm_ftz_leave(unsigned long saved) {
#if defined(FASTLSTM_X86)
    _mm_setcsr((unsigned int)saved);
#elif defined(__aarch64__)
    __asm__ __volatile__("msr fpcr, %0" : : "r"(saved));
#else
    (void)saved;
#endif
}

#endif
