/* team.h: the small shims a team of OpenMP threads needs around the kernels: OpenMP queries with serial
 * fallbacks, waiting (pause or yield hints, then giving the CPU up), the team's barrier, the per-step flags
 * of a direction's threads, and flushing denormals to zero. Used by the forward (_kernels.pyx) and by the
 * bench's probes (_probes.pyx), which measure the same hand-off.
 */
#ifndef FASTLSTM_TEAM_H
#define FASTLSTM_TEAM_H

#include <sched.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#ifndef FASTLSTM_X86
#define FASTLSTM_X86 1
#endif
#endif

/* pause instructions a barrier waiter spins before it starts yielding its CPU (~50 us: a pause took 25 ns on
   the 2-core test machine) */
#define LSTM_BARRIER_SPINS 2000

/* ---- OpenMP shims (serial fallbacks when built without OpenMP) --------------------------------- */

static inline int lstm_openmp_enabled(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
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

/* One check of a waiting loop: a pause for the first LSTM_BARRIER_SPINS checks, then the CPU is given up. */
static inline void lstm_wait_a_while(long spins) {
    if (spins < LSTM_BARRIER_SPINS) {
#if defined(FASTLSTM_X86)
        _mm_pause();
#elif defined(__aarch64__)
        __asm__ __volatile__("yield");
#endif
    } else {
        sched_yield();
    }
}

/* The team's barrier, met at the start of every layer (and mid-step with a projection). libgomp's own
   barrier took ~250-350 ns per crossing on the 2-core test machine, this one ~30 ns (both measured with
   2 threads crossing 200000 barriers in a loop): at B = 1 a step is a few hundred ns of work. The last
   thread to arrive resets the count and bumps the generation (release); the others spin on the generation
   (acquire), so every write before the barrier is visible after it. After ~50 us of spinning a waiter
   yields its CPU at each check, so a team member that was descheduled (more threads than free cores) gets
   to run. A NULL barrier is not met: the thread works alone (a row split, see _kernels.pyx). */
typedef struct {
    int arrived;
    char pad_arrived[64 - sizeof(int)];
    int generation;
    char pad_generation[64 - sizeof(int)];
} lstm_team_barrier;

static inline void lstm_barrier_init(lstm_team_barrier *bar) {
    memset(bar, 0, sizeof(*bar));
}

static inline void lstm_barrier_wait(lstm_team_barrier *bar) {
#ifdef _OPENMP
    const int team = omp_get_num_threads();
    if (team <= 1 || bar == NULL) return;
    const int gen = __atomic_load_n(&bar->generation, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&bar->arrived, 1, __ATOMIC_ACQ_REL) == team) {
        __atomic_store_n(&bar->arrived, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&bar->generation, gen + 1, __ATOMIC_RELEASE);
        return;
    }
    for (long spins = 0; __atomic_load_n(&bar->generation, __ATOMIC_ACQUIRE) == gen; spins++)
        lstm_wait_a_while(spins);
#else
    (void)bar;
#endif
}

/* The end of a time step among the threads of one direction (a sub-team): each thread publishes how many
   steps it has finished in its own cache line (lstm_step_publish), then waits until every other member has
   finished as many (lstm_step_wait); work that no other thread reads can go between the two.
   One store and one load per member instead of the team barrier's shared counter and generation, and the
   two directions of a layer, run by different threads, no longer wait for each other at every step.
   The store releases this thread's writes (its units of h and out); the loads acquire the others'. */
typedef struct {
    int steps;
    char pad[64 - sizeof(int)];
} lstm_step_flag;

static inline void lstm_step_publish(lstm_step_flag *flags, int tid, int steps) {
    __atomic_store_n(&flags[tid].steps, steps, __ATOMIC_RELEASE);
}

static inline void lstm_step_wait(const lstm_step_flag *flags, int tid, int first, int count, int steps) {
    for (int j = first; j < first + count; j++) {
        if (j == tid) continue;
        for (long spins = 0; __atomic_load_n(&flags[j].steps, __ATOMIC_ACQUIRE) < steps; spins++)
            lstm_wait_a_while(spins);
    }
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
