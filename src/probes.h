/* probes.h: the bench's probes of this machine's limits (`python -m fastlstm bench`), not part of a forward:
 * FMA throughput, read bandwidth, and the writes and reads of the hand-off probe, in float32 on each
 * instruction set (probe_impl.h), chosen per call by name.
 */
#ifndef FASTLSTM_PROBES_H
#define FASTLSTM_PROBES_H

#include <stdint.h>
#include <string.h>
#include "team.h"
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

/* independent FMA chains (12 covers 2 FMA units x 4 cycles of latency with room), and running sums of the
   read probe (covers 2 loads per cycle x 3 cycles of add latency) */
#define PROBE_CHAINS 12
#define PROBE_READ_SUMS 8

#define CAT3_(a, b, c) a##b##c
#define CAT3(a, b, c) CAT3_(a, b, c)

typedef struct {
    float (*fma)(long rounds);
    float (*read)(const float *p, long n, int descending);
    void (*fill)(float *p, long n, float value);
    long (*mismatches)(const float *p, long n, float value);
} probe_table;

#define VBYTES 16
#define ATTR
#define SFX baseline
#include "probe_impl.h"
#undef VBYTES
#undef ATTR
#undef SFX
#ifdef FASTLSTM_X86
#define VBYTES 32
#define ATTR __attribute__((target("avx2,fma")))
#define SFX avx2
#include "probe_impl.h"
#undef VBYTES
#undef ATTR
#undef SFX
#define VBYTES 64
#define ATTR __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")))
#define SFX avx512
#include "probe_impl.h"
#undef VBYTES
#undef ATTR
#undef SFX
#endif

/* The probes of instruction set `isa` (0 baseline, 1 avx2, 2 avx512: the order of fastlstm._cpu.ISAS), with its vector width in bytes; the
   caller checks the CPU has it. */
static inline const probe_table *probe_select(int isa, int *vector_bytes) {
#ifdef FASTLSTM_X86
    if (isa == 2) { *vector_bytes = 64; return &probe_table_avx512; }
    if (isa == 1) { *vector_bytes = 32; return &probe_table_avx2; }
#endif
    (void)isa;
    *vector_bytes = 16;
    return &probe_table_baseline;
}

static inline int probe_chains(void) { return PROBE_CHAINS; }
static inline int probe_read_sums(void) { return PROBE_READ_SUMS; }

/* One member's part of the start of a call with its team stacked on one CPU (probe_team_start in _probes.pyx):
   the master says its CPU, every other member moves onto it (affinity {that CPU}, then back to the mask it had:
   it stays there until moved), and the team starts as a forward's does (lstm_team_start); each member's CPU
   before and after. */
static inline void probe_stacked_start(lstm_team_barrier *bar, int *master_cpu, int *before, int *after) {
    const int tid = lstm_thread_id();
    if (tid == 0) *master_cpu = lstm_current_cpu();
    lstm_barrier_wait(bar, NULL, 0);
#if defined(FASTLSTM_CPU_AFFINITY)
    cpu_set_t had, there;
    if (tid != 0 && *master_cpu >= 0 && sched_getaffinity(0, sizeof(had), &had) == 0) {
        CPU_ZERO(&there);
        CPU_SET(*master_cpu, &there);
        lstm_move_via(&there, &had);
    }
#endif
    before[tid] = lstm_current_cpu();
    lstm_team_start(bar, NULL);
    after[tid] = lstm_current_cpu();
}

/* One member's part of a wait for a member that is behind (probe_late_member in _probes.pyx): member 1 either
   runs (spins on the clock) or sleeps for `behind_ns` before it finishes its step, while member 0 waits for it
   the way a forward's step waits (lstm_step_wait on the team's state, not giving the team up). times: member
   1's CPU time over its part, member 0's CPU time over its wait and the wait's length (ns); *team: the team's
   size. */
static inline long long probe_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
static inline void probe_member_behind(lstm_team_barrier *bar, lstm_team_state *state, lstm_step_flag *flags,
                                       int sleeps, long long behind_ns, long long *times, int *team) {
    const int tid = lstm_thread_id();
    if (tid == 0) *team = lstm_team_size();
    lstm_team_start(bar, state);
    if (tid == 1) {
        const long long cpu0 = probe_cpu_ns();
        if (sleeps) {
            struct timespec ts = {(time_t)(behind_ns / 1000000000LL), (long)(behind_ns % 1000000000LL)};
            nanosleep(&ts, NULL);
        } else {
            const long long until = lstm_now_ns() + behind_ns;
            while (lstm_now_ns() < until) lstm_pause();
        }
        times[0] = probe_cpu_ns() - cpu0;
    }
    lstm_step_publish(flags, tid, 1);
    if (tid == 0) {
        const long long cpu0 = probe_cpu_ns(), wall0 = lstm_now_ns();
        lstm_step_wait(flags, 0, 0, lstm_team_size(), 1, state, 0);
        times[1] = probe_cpu_ns() - cpu0;
        times[2] = lstm_now_ns() - wall0;
    }
}

#endif
