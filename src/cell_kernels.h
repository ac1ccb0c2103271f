/* cell_kernels.h: instantiates cell_impl.h for float and double on every instruction set we ship
 * (AVX-512, AVX2+FMA, and the x86-64 baseline SSE2), picks one at run time from what the CPU supports,
 * and provides the small OpenMP and floating-point-mode shims the Cython driver needs.
 *
 * The package is compiled for the x86-64 baseline; the faster paths are compiled through
 * __attribute__((target)) and selected by lstm_select_isa(), so one portable wheel runs them all.
 */
#ifndef FASTLSTM_CELL_KERNELS_H
#define FASTLSTM_CELL_KERNELS_H

#include <sched.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FASTLSTM_X86 1
#endif

/* pause instructions a barrier waiter spins before it starts yielding its CPU (~50 us: a pause took 25 ns on
   the 2-core test machine) */
#define LSTM_BARRIER_SPINS 2000

/* the probes of cell_impl.h: independent FMA chains (12 covers 2 FMA units x 4 cycles of latency with room),
   and running sums of the read probe (covers 2 loads per cycle x 3 cycles of add latency) */
#define PROBE_CHAINS 12
#define PROBE_READ_SUMS 8

#define CAT3_(a, b, c) a##b##c
#define CAT3(a, b, c) CAT3_(a, b, c)

/* ---- instantiations ---------------------------------------------------------------------------- */

/* batch rows per register tile of the gate kernel, per instruction set (BT in cell_impl.h) */
#define BT_SSE2 2
#define BT_AVX2 2
#define BT_AVX512 4

#define VBYTES 16
#define BT BT_SSE2
#define ATTR
#define REAL float
#define WITH_PROBES
#define IREAL int32_t
#define SFX f32_base
#include "cell_impl.h"
#undef REAL
#undef WITH_PROBES
#undef IREAL
#undef SFX
#define REAL double
#define IREAL int64_t
#define SFX f64_base
#include "cell_impl.h"
#undef REAL
#undef IREAL
#undef SFX
#undef VBYTES
#undef BT
#undef ATTR

#ifdef FASTLSTM_X86
#define VBYTES 32
#define BT BT_AVX2
#define ATTR __attribute__((target("avx2,fma")))
#define REAL float
#define WITH_PROBES
#define IREAL int32_t
#define SFX f32_avx2
#include "cell_impl.h"
#undef REAL
#undef WITH_PROBES
#undef IREAL
#undef SFX
#define REAL double
#define IREAL int64_t
#define SFX f64_avx2
#include "cell_impl.h"
#undef REAL
#undef IREAL
#undef SFX
#undef VBYTES
#undef BT
#undef ATTR

#define VBYTES 64
#define BT BT_AVX512
#define ATTR __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")))
#define REAL float
#define WITH_PROBES
#define IREAL int32_t
#define SFX f32_avx512
#include "cell_impl.h"
#undef REAL
#undef WITH_PROBES
#undef IREAL
#undef SFX
#define REAL double
#define IREAL int64_t
#define SFX f64_avx512
#include "cell_impl.h"
#undef REAL
#undef IREAL
#undef SFX
#undef VBYTES
#undef BT
#undef ATTR
#endif

/* ---- run-time dispatch ------------------------------------------------------------------------- */

typedef void (*cell_blocks_f32_t)(const float *, const float *, long, const float *, float, int,
                                  const float *, long, float *, long, float *, long,
                                  const int *, int, int, int, int, int, int);
typedef void (*cell_blocks_f64_t)(const double *, const double *, long, const double *, double, int,
                                  const double *, long, double *, long, double *, long,
                                  const int *, int, int, int, int, int, int);
typedef void (*input_blocks_f32_t)(const float *, const float *, const float *, long, long, float *, long, long,
                                   const int *, int, int, int, int, int, int, int);
typedef void (*input_blocks_f64_t)(const double *, const double *, const double *, long, long, double *, long, long,
                                   const int *, int, int, int, int, int, int, int);
typedef void (*step_blocks_f32_t)(const float *, const float *, const float *, long, int, float *, long,
                                  const float *, const float *, float, int, const float *, long, float *, long,
                                  float *, long, const int *, int, int, int, int, int, int);
typedef void (*step_blocks_f64_t)(const double *, const double *, const double *, long, int, double *, long,
                                  const double *, const double *, double, int, const double *, long, double *, long,
                                  double *, long, const int *, int, int, int, int, int, int);
typedef void (*proj_blocks_f32_t)(const float *, const float *, long, float *, long, const int *, int, int, int, int, int);
typedef void (*proj_blocks_f64_t)(const double *, const double *, long, double *, long, const int *, int, int, int, int, int);
typedef float (*probe_fma_f32_t)(long);
typedef float (*probe_read_f32_t)(const float *, long, int);
typedef void (*probe_fill_f32_t)(float *, long, float);
typedef long (*probe_mismatches_f32_t)(const float *, long, float);

static struct {
    const char *name;
    int vector_bytes;
    int tile_rows;      /* BT: batch rows per register tile of cell_blocks */
    cell_blocks_f32_t cell_f32;
    cell_blocks_f64_t cell_f64;
    input_blocks_f32_t input_f32;
    input_blocks_f64_t input_f64;
    proj_blocks_f32_t proj_f32;
    proj_blocks_f64_t proj_f64;
    step_blocks_f32_t step_f32;
    step_blocks_f64_t step_f64;
    probe_fma_f32_t probe_fma_f32;
    probe_read_f32_t probe_read_f32;
    probe_fill_f32_t probe_fill_f32;
    probe_mismatches_f32_t probe_mismatches_f32;
} lstm_isa = {"sse2", 16, BT_SSE2, cell_blocks_f32_base, cell_blocks_f64_base, input_blocks_f32_base, input_blocks_f64_base,
             proj_blocks_f32_base, proj_blocks_f64_base, step_blocks_f32_base, step_blocks_f64_base,
             probe_fma_f32_base, probe_read_f32_base, probe_fill_f32_base, probe_mismatches_f32_base};

/* What the CPU supports: 2 = AVX-512, 1 = AVX2+FMA, 0 = baseline. */
static int lstm_cpu_isa_level(void) {
#ifdef FASTLSTM_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("fma"))
        return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

/* Select the kernels: the best the CPU supports, capped at max_level (-1: no cap). Returns the level used. */
static int lstm_select_isa(int max_level) {
    int level = lstm_cpu_isa_level();
    if (max_level >= 0 && level > max_level) level = max_level;
#ifdef FASTLSTM_X86
    if (level == 2) {
        lstm_isa.name = "avx512"; lstm_isa.vector_bytes = 64; lstm_isa.tile_rows = BT_AVX512;
        lstm_isa.cell_f32 = cell_blocks_f32_avx512; lstm_isa.cell_f64 = cell_blocks_f64_avx512;
        lstm_isa.input_f32 = input_blocks_f32_avx512; lstm_isa.input_f64 = input_blocks_f64_avx512;
        lstm_isa.proj_f32 = proj_blocks_f32_avx512; lstm_isa.proj_f64 = proj_blocks_f64_avx512;
        lstm_isa.step_f32 = step_blocks_f32_avx512; lstm_isa.step_f64 = step_blocks_f64_avx512;
        lstm_isa.probe_fma_f32 = probe_fma_f32_avx512; lstm_isa.probe_read_f32 = probe_read_f32_avx512;
        lstm_isa.probe_fill_f32 = probe_fill_f32_avx512; lstm_isa.probe_mismatches_f32 = probe_mismatches_f32_avx512;
        return 2;
    }
    if (level == 1) {
        lstm_isa.name = "avx2"; lstm_isa.vector_bytes = 32; lstm_isa.tile_rows = BT_AVX2;
        lstm_isa.cell_f32 = cell_blocks_f32_avx2; lstm_isa.cell_f64 = cell_blocks_f64_avx2;
        lstm_isa.input_f32 = input_blocks_f32_avx2; lstm_isa.input_f64 = input_blocks_f64_avx2;
        lstm_isa.proj_f32 = proj_blocks_f32_avx2; lstm_isa.proj_f64 = proj_blocks_f64_avx2;
        lstm_isa.step_f32 = step_blocks_f32_avx2; lstm_isa.step_f64 = step_blocks_f64_avx2;
        lstm_isa.probe_fma_f32 = probe_fma_f32_avx2; lstm_isa.probe_read_f32 = probe_read_f32_avx2;
        lstm_isa.probe_fill_f32 = probe_fill_f32_avx2; lstm_isa.probe_mismatches_f32 = probe_mismatches_f32_avx2;
        return 1;
    }
#endif
    lstm_isa.name = "sse2"; lstm_isa.vector_bytes = 16; lstm_isa.tile_rows = BT_SSE2;
    lstm_isa.cell_f32 = cell_blocks_f32_base; lstm_isa.cell_f64 = cell_blocks_f64_base;
    lstm_isa.input_f32 = input_blocks_f32_base; lstm_isa.input_f64 = input_blocks_f64_base;
    lstm_isa.proj_f32 = proj_blocks_f32_base; lstm_isa.proj_f64 = proj_blocks_f64_base;
    lstm_isa.step_f32 = step_blocks_f32_base; lstm_isa.step_f64 = step_blocks_f64_base;
    lstm_isa.probe_fma_f32 = probe_fma_f32_base; lstm_isa.probe_read_f32 = probe_read_f32_base;
    lstm_isa.probe_fill_f32 = probe_fill_f32_base; lstm_isa.probe_mismatches_f32 = probe_mismatches_f32_base;
    return 0;
}

static inline const char *lstm_isa_name(void) { return lstm_isa.name; }
static inline int lstm_vector_bytes(void) { return lstm_isa.vector_bytes; }
static inline int lstm_tile_rows(void) { return lstm_isa.tile_rows; }

/* the bench's probes (cell_impl.h) in float32 with the selected instruction set */
static inline float lstm_probe_fma(long rounds) { return lstm_isa.probe_fma_f32(rounds); }
static inline float lstm_probe_read(const float *p, long n, int descending) {
    return lstm_isa.probe_read_f32(p, n, descending);
}
static inline void lstm_probe_fill(float *p, long n, float value) { lstm_isa.probe_fill_f32(p, n, value); }
static inline long lstm_probe_mismatches(const float *p, long n, float value) {
    return lstm_isa.probe_mismatches_f32(p, n, value);
}
static inline int lstm_probe_chains(void) { return PROBE_CHAINS; }
static inline int lstm_probe_read_sums(void) { return PROBE_READ_SUMS; }

static inline void cell_blocks_f32(const float *w, const float *gx, long ldg, const float *peep, float clip,
                                   int input_forget, const float *h, long ldh, float *c, long ldc, float *hout, long ldo,
                                   const int *lengths, int t, int B, int K, int j0, int j1, int narrow) {
    lstm_isa.cell_f32(w, gx, ldg, peep, clip, input_forget, h, ldh, c, ldc, hout, ldo, lengths, t, B, K, j0, j1,
                      narrow);
}
static inline void cell_blocks_f64(const double *w, const double *gx, long ldg, const double *peep, double clip,
                                   int input_forget, const double *h, long ldh, double *c, long ldc, double *hout,
                                   long ldo, const int *lengths, int t, int B, int K, int j0, int j1, int narrow) {
    lstm_isa.cell_f64(w, gx, ldg, peep, clip, input_forget, h, ldh, c, ldc, hout, ldo, lengths, t, B, K, j0, j1,
                      narrow);
}
static inline void input_blocks_f32(const float *w, const float *bias, const float *x, long x_ts, long x_bs, float *gx,
                                    long g_ts, long g_bs, const int *lengths, int t0, int nsteps, int B, int n_in,
                                    int j0, int j1, int narrow) {
    lstm_isa.input_f32(w, bias, x, x_ts, x_bs, gx, g_ts, g_bs, lengths, t0, nsteps, B, n_in, j0, j1, narrow);
}
static inline void input_blocks_f64(const double *w, const double *bias, const double *x, long x_ts, long x_bs,
                                    double *gx, long g_ts, long g_bs, const int *lengths, int t0, int nsteps, int B,
                                    int n_in, int j0, int j1, int narrow) {
    lstm_isa.input_f64(w, bias, x, x_ts, x_bs, gx, g_ts, g_bs, lengths, t0, nsteps, B, n_in, j0, j1, narrow);
}
static inline void proj_blocks_f32(const float *w, const float *hc, long ldc, float *hout, long ldo,
                                   const int *lengths, int t, int B, int Kc, int q0, int q1) {
    lstm_isa.proj_f32(w, hc, ldc, hout, ldo, lengths, t, B, Kc, q0, q1);
}
static inline void proj_blocks_f64(const double *w, const double *hc, long ldc, double *hout, long ldo,
                                   const int *lengths, int t, int B, int Kc, int q0, int q1) {
    lstm_isa.proj_f64(w, hc, ldc, hout, ldo, lengths, t, B, Kc, q0, q1);
}

static inline void step_blocks_f32(const float *w_ih, const float *bias, const float *x, long x_bs, int n_in, float *gx,
                                   long ldg, const float *w_hh, const float *peep, float clip, int input_forget,
                                   const float *h, long ldh, float *c, long ldc, float *hout, long ldo,
                                   const int *lengths, int B, int K, int j0, int j1, int narrow, int descending) {
    lstm_isa.step_f32(w_ih, bias, x, x_bs, n_in, gx, ldg, w_hh, peep, clip, input_forget, h, ldh, c, ldc, hout, ldo,
                      lengths, B, K, j0, j1, narrow, descending);
}
static inline void step_blocks_f64(const double *w_ih, const double *bias, const double *x, long x_bs, int n_in,
                                   double *gx, long ldg, const double *w_hh, const double *peep, double clip,
                                   int input_forget, const double *h, long ldh, double *c, long ldc, double *hout,
                                   long ldo, const int *lengths, int B, int K, int j0, int j1, int narrow,
                                   int descending) {
    lstm_isa.step_f64(w_ih, bias, x, x_bs, n_in, gx, ldg, w_hh, peep, clip, input_forget, h, ldh, c, ldc, hout, ldo,
                      lengths, B, K, j0, j1, narrow, descending);
}

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
#ifdef FASTLSTM_X86
        _mm_pause();
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

static inline unsigned int lstm_ftz_enter(void) {
#ifdef FASTLSTM_X86
    unsigned int saved = _mm_getcsr();
    _mm_setcsr(saved | 0x8040u); /* FTZ (bit 15) and DAZ (bit 6) */
    return saved;
#else
    return 0;
#endif
}
static inline void lstm_ftz_leave(unsigned int saved) {
#ifdef FASTLSTM_X86
    _mm_setcsr(saved);
#else
    (void)saved;
#endif
}

#endif
