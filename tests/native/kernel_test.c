/* kernel_test.c: fastlstm's micro-kernels (src/cell_kernels.h) checked against a plain C reference, without
 * Python, so that the kernels can be tested where the package is not built: a cross-compiled aarch64 binary
 * under qemu-user (.ci/aarch64.sh), clang (.ci/clang.sh).
 *
 * Every case is one LSTM direction run the way src/_kernels.pyx's _direction composes the kernels: the input
 * kernel over a chunk of steps, then the cell kernel per step, or the step kernel (both fused, as a stream's
 * steps run), and the projection kernel with proj_size > 0; rows past their length carry their state. Teams
 * of OpenMP threads split the blocks of units (with team.h's barrier and step flags) or the rows of the batch,
 * as _thread_forward does. Each case runs in float and double with every kernel table this CPU can run, on
 * one thread and on a team, on weights packed by packing.c, and must match the reference (float64 libm,
 * reference.c) within 1e-5 (float) or 1e-12 (double) relative to max(1, |value|); the team, and each row of the
 * batch run alone, must match the batch on one thread bit for bit. The first mismatches are printed with their
 * indices. Also checked: a model gets the best table (and the baseline without CPU features), and the kernels'
 * floating-point mode (lstm_ftz_enter / lstm_ftz_leave) flushes subnormals and restores the caller's mode.
 *
 * Exit status: 0 when everything matched, 1 otherwise.
 * Build (as the CI scripts do): cc -O2 -fopenmp -Isrc tests/native/kernel_test.c tests/native/reference.c
 *     tests/native/packing.c -lm -o kernel_test
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cell_kernels.h"
#include "native_test.h"

/* ---- adapters: the only code in this file that names a kernel or knows a kernel's arguments ---------- */

/* One direction's packed weights, in the element type of its kernel table (is_double: double, else float). */
typedef struct {
    const lstm_kernel_table *table;
    lstm_layer layer;           /* the weights and cell parameters as the kernels read them */
    int is_double;
    int V, NB, NP, narrow;      /* block width, blocks of units and of projected units, last block narrow */
    int I, H, K, P;
} kt_dir;

/* The LSTM kernel tables of a dtype that this CPU can run, best first (out[0] is the one a model gets); returns
   how many, at most max. */
static int kt_tables(int is_double, const lstm_kernel_table **out, int max) {
    const unsigned features = lstm_cpu_features();
    const int format = is_double ? LSTM_FORMAT_F64 : LSTM_FORMAT_F32;
    int n = 0;
#define KT_TABLE(cell, fmt, needs, table)                                                                       \
    if ((cell) == LSTM_CELL_LSTM && (fmt) == format && ((needs) & ~features) == 0 && n < max)                  \
        out[n++] = &table;
    LSTM_INSTANCES(KT_TABLE)
#undef KT_TABLE
    return n;
}

/* The table a model of this dtype is packed with on this CPU, and with no CPU feature at all (the baseline). */
static const lstm_kernel_table *kt_selected(int is_double, int baseline) {
    return lstm_select_kernels(LSTM_CELL_LSTM, is_double ? LSTM_FORMAT_F64 : LSTM_FORMAT_F32,
                               baseline ? 0u : lstm_cpu_features());
}

/* the input kernel: gx[s, b] (NB*4V) = bias + W_ih x[s, b] for steps t0 + s, s < nsteps, of rows b < B with
   t0 + s < lengths[b], blocks [j0, j1); x[s, b] at x + s*x_ts + b*x_bs, gx[s, b] at gx + s*g_ts + b*g_bs */
static void kt_input(const kt_dir *d, const void *x, long x_ts, long x_bs, void *gx, long g_ts, long g_bs,
                     const int *lengths, int t0, int nsteps, int B, int j0, int j1) {
    const lstm_rows rows = {lengths, B};
    const lstm_chunk chunk = {x, x_ts, x_bs, gx, g_ts, g_bs};
    const lstm_blocks blocks = {j0, j1};
    d->table->input(&d->layer, &rows, &chunk, t0, nsteps, blocks);
}

/* the cell kernel: one step t of blocks [j0, j1) for rows b < B with t < lengths[b]: gx (B, 4Hp) stride ldg,
   h (B, K) stride ldh read; c (B, Hp) stride ldc updated; hout (B, Hp) stride ldo written */
static void kt_cell(const kt_dir *d, const void *gx, long ldg, const void *h, long ldh, void *c, long ldc,
                    void *hout, long ldo, const int *lengths, int t, int B, int j0, int j1) {
    const lstm_rows rows = {lengths, B};
    const lstm_state state = {h, ldh, c, ldc, hout, ldo};
    const lstm_blocks blocks = {j0, j1};
    d->table->cell(&d->layer, &rows, gx, ldg, &state, t, blocks);
}

/* the step kernel: input projection and cell of one step fused per block, rows b < B with 0 < lengths[b]:
   x rows (B, I) stride x_bs; gx (B, 4Hp) stride ldg scratch; the rest as kt_cell; blocks in descending order
   when descending */
static void kt_step(const kt_dir *d, const void *x, long x_bs, void *gx, long ldg, const void *h, long ldh,
                    void *c, long ldc, void *hout, long ldo, const int *lengths, int B, int j0, int j1,
                    int descending) {
    const lstm_rows rows = {lengths, B};
    const lstm_chunk chunk = {x, 0, x_bs, gx, 0, ldg};
    const lstm_state state = {h, ldh, c, ldc, hout, ldo};
    const lstm_blocks blocks = {j0, j1};
    d->table->step(&d->layer, &rows, &chunk, &state, blocks, descending);
}

/* the projection kernel: hout[b, q*V:(q+1)*V] = W_hr hc[b] for projection blocks [q0, q1), rows b < B with
   t < lengths[b]; hc (B, H) stride ldc, hout stride ldo */
static void kt_proj(const kt_dir *d, const void *hc, long ldc, void *hout, long ldo, const int *lengths, int t,
                    int B, int q0, int q1) {
    const lstm_rows rows = {lengths, B};
    const lstm_blocks blocks = {q0, q1};
    d->table->proj(&d->layer, &rows, hc, ldc, hout, ldo, t, blocks);
}

/* ---- the composition of _direction, for one thread of a team ----------------------------------------- */

#define KT_MAX_B 64

/* One direction's run: its arrays (in the kernels' dtype) and workspace, shared by the team. */
typedef struct {
    const kt_dir *d;
    int T, B, ldb;              /* steps; rows this run computes; rows in the arrays and buffers */
    int reverse, fused, chunk;  /* fused: step_blocks every step; else input_blocks per chunk of steps */
    const int *lengths;         /* (B,) */
    const void *x;              /* x[t, b] (I,) at x + t*x_ts + b*x_bs */
    long x_ts, x_bs;
    const void *h0, *c0;        /* (B, K), (B, H) */
    void *out;                  /* out[t, b] (K,) at out + t*out_ts + b*out_bs */
    long out_ts, out_bs;
    void *hn, *cn;              /* (B, K), (B, H) */
    void *gx, *h, *c, *hc;      /* (chunk, ldb, 4Hp); (2, ldb, ldh); (ldb, Hp); (ldb, Hp) or NULL */
    lstm_team_barrier *barrier; /* NULL: the thread works alone */
    lstm_step_flag *flags;      /* one per thread of the team */
} kt_run;

#define AT(p, i) ((char *)(p) + (long)(i) * es)

/* Blocks [j0, j1) and projection blocks [q0, q1) of every step, as thread tid of threads [first, first + count)
   of the direction: the steps of _direction in src/_kernels.pyx. */
static void kt_direction(const kt_run *r, int j0, int j1, int q0, int q1, int tid, int first, int count) {
    const kt_dir *d = r->d;
    const long es = d->is_double ? sizeof(double) : sizeof(float);
    const int T = r->T, B = r->B, ldb = r->ldb, K = d->K, H = d->H, P = d->P, V = d->V;
    const long Hp = (long)d->NB * V, G = 4 * Hp, ldh = P > 0 ? (long)d->NP * V : Hp;
    const int u0 = (P > 0 ? q0 : j0) * V;
    const int u1 = P > 0 ? (q1 * V < P ? q1 * V : P) : (j1 * V < H ? j1 * V : H);
    const int cu0 = j0 * V, cu1 = j1 * V < H ? j1 * V : H;
    void *hout = P > 0 ? r->hc : NULL;
    int step_lengths[KT_MAX_B], steps = 0;
    for (int b = 0; b < B; b++) {
        if (u1 > u0) memcpy(AT(r->h, (long)b * ldh + u0), AT(r->h0, (long)b * K + u0), (u1 - u0) * es);
        if (cu1 > cu0) memcpy(AT(r->c, (long)b * Hp + cu0), AT(r->c0, (long)b * H + cu0), (cu1 - cu0) * es);
    }
    lstm_barrier_wait(r->barrier, NULL, 0);
    for (int ci = 0; ci < (T + r->chunk - 1) / r->chunk; ci++) {
        int t_lo = ci * r->chunk, t_hi = t_lo + r->chunk < T ? t_lo + r->chunk : T;
        if (r->reverse) {
            t_hi = T - ci * r->chunk;
            t_lo = t_hi - r->chunk > 0 ? t_hi - r->chunk : 0;
        }
        if (!r->fused)
            kt_input(d, AT(r->x, t_lo * r->x_ts), r->x_ts, r->x_bs, r->gx, ldb * G, G, r->lengths, t_lo, t_hi - t_lo,
                     B, j0, j1);
        for (int s = 0; s < t_hi - t_lo; s++) {
            const int t = r->reverse ? t_hi - 1 - s : t_lo + s;
            void *h_prev = AT(r->h, (steps % 2) * ldb * ldh), *h_next = AT(r->h, ((steps + 1) % 2) * ldb * ldh);
            void *cell_out = P > 0 ? hout : h_next;
            const long ldo = P > 0 ? Hp : ldh;
            if (r->fused) {        /* a step of a stream: the rows still running have length 1 */
                for (int b = 0; b < B; b++) step_lengths[b] = t < r->lengths[b];
                kt_step(d, AT(r->x, t * r->x_ts), r->x_bs, r->gx, G, h_prev, ldh, r->c, Hp, cell_out, ldo,
                        step_lengths, B, j0, j1, steps & 1);
            } else {
                kt_cell(d, AT(r->gx, (t - t_lo) * ldb * G), G, h_prev, ldh, r->c, Hp, cell_out, ldo, r->lengths, t,
                        B, j0, j1);
            }
            if (P > 0) {
                lstm_barrier_wait(r->barrier, NULL, 0);
                kt_proj(d, hout, Hp, h_next, ldh, r->lengths, t, B, q0, q1);
            }
            for (int b = 0; b < B; b++)
                if (t >= r->lengths[b] && u1 > u0)
                    memcpy(AT(h_next, b * ldh + u0), AT(h_prev, b * ldh + u0), (u1 - u0) * es);
            steps++;
            lstm_step_publish(r->flags, tid, steps);
            for (int b = 0; b < B; b++) {
                char *row = AT(r->out, t * r->out_ts + b * r->out_bs);
                if (u1 <= u0) continue;
                if (t < r->lengths[b]) memcpy(row + u0 * es, AT(h_next, b * ldh + u0), (u1 - u0) * es);
                else memset(row + u0 * es, 0, (u1 - u0) * es);
            }
            lstm_step_wait(r->flags, tid, first, count, steps, NULL, 0);
        }
    }
    const void *h_last = AT(r->h, (steps % 2) * ldb * ldh);
    for (int b = 0; b < B; b++) {
        if (u1 > u0) memcpy(AT(r->hn, (long)b * K + u0), AT(h_last, b * ldh + u0), (u1 - u0) * es);
        if (cu1 > cu0) memcpy(AT(r->cn, (long)b * H + cu0), AT(r->c, b * Hp + cu0), (cu1 - cu0) * es);
    }
}

/* Thread tid of a team of nt: its share of the units (blocks), or with row_split its tiles of rows of the
   batch with all their units, working alone; as _thread_forward in src/_kernels.pyx, in the kernels'
   floating-point mode. */
static void kt_thread(const kt_run *run, int tid, int nt, int row_split) {
    const kt_dir *d = run->d;
    const long es = d->is_double ? sizeof(double) : sizeof(float);
    const long Hp = (long)d->NB * d->V, ldh = d->P > 0 ? (long)d->NP * d->V : Hp;
    kt_run rows;
    int first = 0, count = nt, sub_tid = tid;
    if (row_split && nt >= 2) {
        const int bt = d->table->tile_rows, tiles = (run->B + bt - 1) / bt;
        const int b0 = tiles * tid / nt * bt, b1 = tiles * (tid + 1) / nt * bt;
        rows = *run;
        rows.B = (b1 < run->B ? b1 : run->B) - b0;
        rows.lengths += b0;
        rows.x = AT(run->x, b0 * run->x_bs);
        rows.h0 = AT(run->h0, (long)b0 * d->K);
        rows.c0 = AT(run->c0, (long)b0 * d->H);
        rows.out = AT(run->out, b0 * run->out_bs);
        rows.hn = AT(run->hn, (long)b0 * d->K);
        rows.cn = AT(run->cn, (long)b0 * d->H);
        rows.gx = AT(run->gx, b0 * 4 * Hp);
        rows.h = AT(run->h, b0 * ldh);
        rows.c = AT(run->c, b0 * Hp);
        rows.hc = run->hc ? AT(run->hc, b0 * Hp) : NULL;
        rows.barrier = NULL;
        run = &rows;
        first = tid;
        count = 1;
        sub_tid = 0;
    }
    const int j0 = d->NB * sub_tid / count, j1 = d->NB * (sub_tid + 1) / count;
    const int q0 = d->NP * sub_tid / count, q1 = d->NP * (sub_tid + 1) / count;
    const unsigned long saved_mode = lstm_ftz_enter();
    kt_direction(run, j0, j1, q0, q1, tid, first, count);
    lstm_ftz_leave(saved_mode);
}

/* The run on a team of up to `threads` threads; returns the team size used. */
static int kt_run_team(kt_run *run, int threads, int row_split) {
    lstm_team_barrier barrier;
    lstm_barrier_init(&barrier);
    run->barrier = &barrier;
    memset(run->flags, 0, threads * sizeof(lstm_step_flag));
    int team = 1;
#ifdef _OPENMP
    if (threads > 1) {
#pragma omp parallel num_threads(threads)
        {
            kt_thread(run, omp_get_thread_num(), omp_get_num_threads(), row_split);
#pragma omp single
            team = omp_get_num_threads();
        }
        return team;
    }
#endif
    kt_thread(run, 0, 1, row_split);
    return team;
}

#undef AT

/* ---- cases ----------------------------------------------------------------------------------------- */

typedef struct {
    int H, I, P, B, T;
    int peepholes, input_forget, reverse, masked, batch_first;
    double clip;                /* 0: none */
    double scale;               /* of the inputs: large values saturate the gates and clamp exp */
    int fused, chunk;           /* fused: step_blocks every step; else input_blocks per chunk of steps */
    int threads, row_split;     /* the team of the second run, splitting units, or rows with row_split */
} kt_case;

static const kt_case CASES[] = {
    /*  H   I   P  B   T  peep if rev mask bf  clip  scale fused chunk threads rows */
    {1, 3, 0, 1, 5, 0, 0, 0, 0, 0, 0, 1, 0, 2, 2, 0},
    {1, 1, 0, 3, 4, 1, 0, 0, 1, 0, 0, 1, 0, 3, 2, 0},
    {7, 5, 0, 1, 6, 0, 0, 0, 0, 0, 0.4, 1, 0, 4, 2, 0},
    {7, 5, 3, 5, 7, 1, 0, 0, 1, 0, 0, 1, 0, 3, 2, 0},
    {7, 7, 1, 3, 4, 0, 0, 1, 1, 0, 0, 1, 1, 1, 2, 0},
    {7, 5, 5, 5, 5, 1, 1, 0, 1, 0, 0.5, 1, 1, 1, 2, 0},
    {1, 2, 0, 2, 3, 0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 0},
    {70, 13, 0, 4, 9, 0, 0, 0, 1, 0, 0, 1, 0, 4, 2, 0},
    {70, 13, 0, 3, 5, 1, 1, 1, 1, 0, 0.4, 1, 0, 2, 3, 0},
    {70, 9, 20, 2, 6, 1, 0, 0, 1, 0, 0, 1, 0, 6, 2, 0},
    {70, 13, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 0},
    {70, 13, 0, 3, 6, 1, 0, 1, 1, 0, 0, 1, 1, 1, 2, 0},
    {70, 3, 4, 9, 12, 0, 0, 0, 1, 0, 0, 1, 0, 5, 2, 1},
    {16, 8, 0, 9, 5, 1, 0, 1, 1, 0, 0, 1, 0, 5, 3, 1},
    {33, 4, 0, 6, 4, 0, 1, 0, 1, 1, 0, 1, 0, 4, 2, 0},
    {40, 6, 0, 5, 5, 1, 0, 0, 0, 0, 0, 40, 0, 5, 2, 0},
};

/* xorshift64*: a fixed sequence of uniforms in [-1, 1) */
static double uniform(uint64_t *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (double)((*state * 2685821657736338717ull) >> 11) / 4503599627370496.0 - 1.0;
}

/* n values uniform in [-a, a), rounded to float when as_float (so that both sides see the same inputs) */
static double *random_array(size_t n, double a, uint64_t *state, int as_float) {
    double *v = malloc(sizeof(double) * (n > 0 ? n : 1));
    for (size_t i = 0; i < n; i++) {
        v[i] = a * uniform(state);
        if (as_float) v[i] = (float)v[i];
    }
    return v;
}

/* a copy of n doubles in the kernels' dtype, 64-byte aligned */
static void *typed_copy(const double *src, size_t n, int is_double) {
    void *dst = kt_alloc(n, is_double ? sizeof(double) : sizeof(float));
    for (size_t i = 0; i < n; i++) {
        if (is_double) ((double *)dst)[i] = src[i];
        else ((float *)dst)[i] = (float)src[i];
    }
    return dst;
}

/* n elements of size es, all NaN (every bit set): the workspace and the outputs start as garbage, as a
   workspace reused from the model's pool does, so a kernel reading what it did not write shows */
static void *poisoned(size_t n, size_t es) {
    void *p = kt_alloc(n, es);
    memset(p, 0xFF, n * es);
    return p;
}

static double typed_get(const void *p, size_t i, int is_double) {
    return is_double ? ((const double *)p)[i] : ((const float *)p)[i];
}

/* Compare got with want (n values of shape dims[0..ndim)), |got - want| <= tol * max(1, |want|); prints the
   first mismatches with their indices. Returns the number of mismatches; *max_err gets the largest error. */
static long compare(const char *label, const char *what, const double *got, const double *want, int ndim,
                    const int *dims, const char *const *names, double tol, double *max_err) {
    long bad = 0, n = 1;
    for (int a = 0; a < ndim; a++) n *= dims[a];
    for (long i = 0; i < n; i++) {
        const double err = fabs(got[i] - want[i]), bound = tol * (fabs(want[i]) > 1 ? fabs(want[i]) : 1);
        if (err > *max_err || err != err) *max_err = err;
        if (err <= bound) continue;
        if (bad++ < 5) {
            char index[128];
            int len = 0;
            long rest = i, stride = n;
            for (int a = 0; a < ndim; a++) {
                stride /= dims[a];
                len += snprintf(index + len, sizeof(index) - len, "%s%s=%ld", a ? ", " : "", names[a], rest / stride);
                rest %= stride;
            }
            printf("MISMATCH %s: %s[%s]: kernel %.17g, reference %.17g (error %.3g, tolerance %.3g)\n", label, what,
                   index, got[i], want[i], err, bound);
        }
    }
    if (bad > 5) printf("MISMATCH %s: %s: %ld of %ld values in all\n", label, what, bad, n);
    return bad;
}

/* One case in one dtype with every kernel table this CPU can run. Returns the number of failed runs and adds
   the number of runs to *runs. */
static int run_case(int ci, const kt_case *kc, int is_double, int *runs) {
    const int T = kc->T, B = kc->B, I = kc->I, H = kc->H, P = kc->P, K = P > 0 ? P : H;
    const int as_float = !is_double;
    const size_t es = is_double ? sizeof(double) : sizeof(float);
    uint64_t state = 0x9E3779B97F4A7C15ull ^ (uint64_t)(ci + 1) * 0xBF58476D1CE4E5B9ull;
    const double a = 2.0 / sqrt((double)(I + K + 1));
    int lengths[KT_MAX_B];
    for (int b = 0; b < B; b++) lengths[b] = kc->masked ? 1 + (T - 1 + 5 * b) % T : T;
    double *w_ih = random_array((size_t)4 * H * I, a, &state, as_float);
    double *w_hh = random_array((size_t)4 * H * K, a, &state, as_float);
    double *bias = random_array((size_t)4 * H, 0.5, &state, as_float);
    double *peep = kc->peepholes ? random_array((size_t)3 * H, 0.7, &state, as_float) : NULL;
    double *w_hr = P > 0 ? random_array((size_t)P * H, 2.0 / sqrt((double)H), &state, as_float) : NULL;
    double *x = random_array((size_t)T * B * I, 1.5 * kc->scale, &state, as_float);
    double *h0 = random_array((size_t)B * K, 1.0, &state, as_float);
    double *c0 = random_array((size_t)B * H, 1.0, &state, as_float);
    const kt_lstm p = {T, B, I, H, P, kc->input_forget, kc->reverse, kc->clip, w_ih, w_hh, bias, peep, w_hr,
                       x, h0, c0, lengths};
    double *ref_out = malloc(sizeof(double) * T * B * K), *ref_hn = malloc(sizeof(double) * B * K);
    double *ref_cn = malloc(sizeof(double) * B * H);
    kt_reference(&p, ref_out, ref_hn, ref_cn);

    /* x and out in the kernels' layout: (T, B, .) or, batch_first, (B, T, .) */
    const long x_ts = kc->batch_first ? I : (long)B * I, x_bs = kc->batch_first ? (long)T * I : I;
    const long out_ts = kc->batch_first ? K : (long)B * K, out_bs = kc->batch_first ? (long)T * K : K;
    double *x_laid = malloc(sizeof(double) * T * B * I);
    for (int t = 0; t < T; t++)
        for (int b = 0; b < B; b++)
            memcpy(x_laid + t * x_ts + b * x_bs, x + ((size_t)t * B + b) * I, sizeof(double) * I);
    void *x_k = typed_copy(x_laid, (size_t)T * B * I, is_double);
    void *h0_k = typed_copy(h0, (size_t)B * K, is_double), *c0_k = typed_copy(c0, (size_t)B * H, is_double);
    double *got_out = malloc(sizeof(double) * T * B * K), *got_hn = malloc(sizeof(double) * B * K);
    double *got_cn = malloc(sizeof(double) * B * H);

    int failures = 0;
    const lstm_kernel_table *tables[16];
    const int ntables = kt_tables(is_double, tables, 16);
    for (int ti = 0; ti < ntables; ti++) {
        const lstm_kernel_table *table = tables[ti];
        const int V = table->vector_bytes / (int)es;
        kt_packed packed;
        if (kt_pack(&p, V, &packed) != 0) {
            printf("FAIL: out of memory\n");
            exit(1);
        }
        void *w_ih_k = typed_copy(packed.w_ih, packed.n_w_ih, is_double);
        void *w_hh_k = typed_copy(packed.w_hh, packed.n_w_hh, is_double);
        void *bias_k = typed_copy(packed.bias, packed.n_bias, is_double);
        void *peep_k = peep ? typed_copy(packed.peep, packed.n_peep, is_double) : NULL;
        void *w_hr_k = P > 0 ? typed_copy(packed.w_hr, packed.n_w_hr, is_double) : NULL;
        const kt_dir d = {table,
                          {w_ih_k, w_hh_k, bias_k, peep_k, w_hr_k, I, H, K, packed.narrow ? packed.NB - 1 : -1,
                           kc->clip, kc->input_forget, NULL, 0},
                          is_double, V, packed.NB, packed.NP, packed.narrow, I, H, K, P};
        const long Hp = (long)packed.NB * V, ldh = P > 0 ? (long)packed.NP * V : Hp;
        const int chunk = kc->fused ? 1 : kc->chunk;
        void *gx = poisoned((size_t)chunk * B * 4 * Hp, es), *h = poisoned((size_t)2 * B * ldh, es);
        void *c = poisoned((size_t)B * Hp, es), *hc = P > 0 ? poisoned((size_t)B * Hp, es) : NULL;
        void *out_k[3], *hn_k[3], *cn_k[3];
        lstm_step_flag *flags = kt_alloc((size_t)kc->threads, sizeof(lstm_step_flag));
        char label[200];
        snprintf(label, sizeof(label), "%s H=%d I=%d P=%d B=%d T=%d%s%s%s%s%s%s%s clip=%g x%g", table->name,
                 H, I, P, B, T, packed.narrow ? " narrow" : "",
                 kc->peepholes ? " peepholes" : "", kc->input_forget ? " input_forget" : "",
                 kc->reverse ? " reverse" : "", kc->masked ? " lengths" : "", kc->batch_first ? " batch_first" : "",
                 kc->fused ? " fused" : "", kc->clip, kc->scale);
        /* pass 0: the batch on one thread; pass 1: on a team splitting units (or rows); pass 2: each row of
           the batch alone, on one thread */
        for (int pass = 0; pass < 3; pass++) {
            out_k[pass] = poisoned((size_t)T * B * K, es);
            hn_k[pass] = poisoned((size_t)B * K, es);
            cn_k[pass] = poisoned((size_t)B * H, es);
            if (pass == 2 && B == 1) continue;
            int team = 1;
            for (int b = 0; b < (pass == 2 ? B : 1); b++) {
                const int rows = pass == 2 ? 1 : B;
                kt_run run = {&d, T, rows, rows, kc->reverse, kc->fused, chunk, lengths + b,
                              (const char *)x_k + b * x_bs * es, x_ts, x_bs, (const char *)h0_k + (size_t)b * K * es,
                              (const char *)c0_k + (size_t)b * H * es, (char *)out_k[pass] + b * out_bs * es, out_ts,
                              out_bs, (char *)hn_k[pass] + (size_t)b * K * es, (char *)cn_k[pass] + (size_t)b * H * es,
                              gx, h, c, hc, NULL, flags};
                team = kt_run_team(&run, pass == 1 ? kc->threads : 1, kc->row_split);
            }
            char run_label[260];
            snprintf(run_label, sizeof(run_label), "%s, %s%d thread%s%s", label, pass == 2 ? "each row alone, " : "",
                     team, team > 1 ? "s" : "", team > 1 && kc->row_split ? " (rows)" : "");
            for (int t = 0; t < T; t++)
                for (int b = 0; b < B; b++)
                    for (int k = 0; k < K; k++)
                        got_out[((size_t)t * B + b) * K + k] = typed_get(out_k[pass], t * out_ts + b * out_bs + k,
                                                                         is_double);
            for (size_t i = 0; i < (size_t)B * K; i++) got_hn[i] = typed_get(hn_k[pass], i, is_double);
            for (size_t i = 0; i < (size_t)B * H; i++) got_cn[i] = typed_get(cn_k[pass], i, is_double);
            const double tol = is_double ? 1e-12 : 1e-5;
            const int out_dims[3] = {T, B, K}, hn_dims[2] = {B, K}, cn_dims[2] = {B, H};
            const char *const out_names[3] = {"t", "b", "k"}, *const state_names[2] = {"b", "k"};
            double max_err = 0;
            long bad = compare(run_label, "out", got_out, ref_out, 3, out_dims, out_names, tol, &max_err);
            bad += compare(run_label, "h_n", got_hn, ref_hn, 2, hn_dims, state_names, tol, &max_err);
            bad += compare(run_label, "c_n", got_cn, ref_cn, 2, cn_dims, state_names, tol, &max_err);
            if (pass > 0 && (pass == 2 || team > 1) &&
                (memcmp(out_k[0], out_k[pass], (size_t)T * B * K * es) ||
                 memcmp(hn_k[0], hn_k[pass], (size_t)B * K * es) || memcmp(cn_k[0], cn_k[pass], (size_t)B * H * es))) {
                printf("MISMATCH %s: the results differ from the batch's on one thread (bits)\n", run_label);
                bad++;
            }
            printf("%s %s: max error %.2g\n", bad ? "FAIL" : "ok  ", run_label, max_err);
            failures += bad > 0;
            (*runs)++;
        }
        for (int pass = 0; pass < 3; pass++) {
            free(out_k[pass]);
            free(hn_k[pass]);
            free(cn_k[pass]);
        }
        free(flags);
        free(gx);
        free(h);
        free(c);
        free(hc);
        free(w_ih_k);
        free(w_hh_k);
        free(bias_k);
        free(peep_k);
        free(w_hr_k);
        kt_packed_free(&packed);
    }
    free(w_ih);
    free(w_hh);
    free(bias);
    free(peep);
    free(w_hr);
    free(x);
    free(h0);
    free(c0);
    free(x_laid);
    free(x_k);
    free(h0_k);
    free(c0_k);
    free(ref_out);
    free(ref_hn);
    free(ref_cn);
    free(got_out);
    free(got_hn);
    free(got_cn);
    return failures;
}

/* ---- the kernels' floating-point mode -------------------------------------------------------------- */

/* products whose result is subnormal, and a subnormal operand times a large number, in float and double;
   noinline and volatile so that none is folded or moved across the mode switches */
__attribute__((noinline)) static int subnormals_survive(void) {
    volatile float f_tiny = 1e-30f, f_small = 1e-10f, f_sub = 1e-40f, f_big = 1e30f;
    volatile double d_tiny = 1e-300, d_small = 1e-20, d_sub = 1e-310, d_big = 1e300;
    volatile float f_out = f_tiny * f_small, f_in = f_sub * f_big;
    volatile double d_out = d_tiny * d_small, d_in = d_sub * d_big;
    return (f_out != 0) + (f_in != 0) + (d_out != 0) + (d_in != 0);
}

static int check_ftz(void) {
    const int before = subnormals_survive();
    const unsigned long saved = lstm_ftz_enter();
    const int inside = subnormals_survive();
    lstm_ftz_leave(saved);
    const int after = subnormals_survive();
    const int ok = before == 4 && inside == 0 && after == 4;
    printf("%s floating-point mode: subnormal results and operands kept before the kernels' mode %d of 4, flushed "
           "inside it %d of 4, kept after it %d of 4\n", ok ? "ok  " : "FAIL", before, 4 - inside, after);
    return !ok;
}

/* A model gets the best table its CPU runs (the first of kt_tables), and the baseline with no features. */
static int check_selection(void) {
    int bad = 0;
    for (int is_double = 0; is_double < 2; is_double++) {
        const lstm_kernel_table *tables[16];
        const int n = kt_tables(is_double, tables, 16);
        const lstm_kernel_table *best = kt_selected(is_double, 0), *baseline = kt_selected(is_double, 1);
        if (n == 0 || best != tables[0] || baseline != tables[n - 1]) {
            printf("FAIL selection (%s): chose %s and, without features, %s\n", is_double ? "f64" : "f32",
                   best ? best->name : "none", baseline ? baseline->name : "none");
            bad = 1;
        } else {
            printf("ok   selection (%s): %s; without features %s; this CPU runs", is_double ? "f64" : "f32",
                   best->name, baseline->name);
            for (int i = 0; i < n; i++) printf(" %s", tables[i]->name);
            printf("\n");
        }
    }
    return bad;
}

int main(void) {
    const unsigned features = lstm_cpu_features();
    int failures = 0, checks = 2, runs = 0;
    printf("CPU features:");
    for (int bit = 0; bit < 32; bit++) {
        const char *name = lstm_feature_name(bit);
        if (features >> bit & 1) printf(" %s", name ? name : "(unnamed)");
    }
    printf("%s; OpenMP %s\n", features ? "" : " none", lstm_openmp_enabled() ? "on" : "off");
    failures += check_selection();
    failures += check_ftz();
    for (int ci = 0; ci < (int)(sizeof(CASES) / sizeof(CASES[0])); ci++)
        for (int is_double = 0; is_double < 2; is_double++) failures += run_case(ci, &CASES[ci], is_double, &runs);
    printf("kernel_test: %d of %d checks failed\n", failures, checks + runs);
    return failures ? 1 : 0;
}
