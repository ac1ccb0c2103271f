/* gru_test.c: the GRU kernel tables (src/gru_impl.h) checked against a plain C GRU, without Python, so that they
 * can be run where the package is not built (an aarch64 binary under qemu-user, clang builds).
 *
 * Each case is one GRU direction run the way src/_kernels.pyx's _direction composes the kernels on one thread:
 * the input kernel over all steps, then the cell kernel per step (and the finish kernel when the step is split,
 * linear_before_reset = 0), or the step kernel per step (a stream's fused step); rows past their length keep
 * their state and output zeros. Every float and double GRU table this CPU can run (the bf16 and int8 ones are
 * tested through Python, against fastlstm.reference's rounding), both linear_before_reset
 * settings, with and without clip; must match the float64 reference within 1e-5 (float) or 1e-12 (double)
 * relative to max(1, |value|).
 *
 * Exit status: 0 when everything matched, 1 otherwise.
 * Build: cc -O2 -Wall -Wextra -Isrc tests/native/gru_test.c -lm -o gru_test
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cell_kernels.h"

static double sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }
static double clipped(double v, double clip) { return clip > 0 ? fmin(clip, fmax(-clip, v)) : v; }

/* The reference: torch.nn.GRU's equations in double. w_ih (3H, I), w_hh (3H, H), b_ih, b_hh (3H,) rows r, z, n;
   x (T, B, I); h (B, H) updated in place; out (T, B, H). */
static void reference(int T, int B, int I, int H, const double *w_ih, const double *w_hh, const double *b_ih,
                      const double *b_hh, int lbr, double clip, const int *len, const double *x, double *h,
                      double *out) {
    double *hn = malloc(sizeof(double) * H), *rh = malloc(sizeof(double) * H);
    for (int t = 0; t < T; t++)
        for (int b = 0; b < B; b++) {
            double *hb = h + b * H;
            const double *xb = x + ((long)t * B + b) * I;
            for (int j = 0; j < H; j++) {   /* r first, for all units (r * h feeds n without lbr) */
                double s = b_ih[j] + b_hh[j];
                for (int k = 0; k < I; k++) s += w_ih[(long)j * I + k] * xb[k];
                for (int k = 0; k < H; k++) s += w_hh[(long)j * H + k] * hb[k];
                rh[j] = sigmoid(clipped(s, clip));
            }
            for (int j = 0; j < H; j++) {
                double z = b_ih[H + j] + b_hh[H + j], xn = b_ih[2 * H + j], hh = b_hh[2 * H + j];
                for (int k = 0; k < I; k++) {
                    z += w_ih[(long)(H + j) * I + k] * xb[k];
                    xn += w_ih[(long)(2 * H + j) * I + k] * xb[k];
                }
                for (int k = 0; k < H; k++) {
                    z += w_hh[(long)(H + j) * H + k] * hb[k];
                    hh += w_hh[(long)(2 * H + j) * H + k] * (lbr ? hb[k] : rh[k] * hb[k]);
                }
                z = sigmoid(clipped(z, clip));
                double n = tanh(clipped(lbr ? xn + rh[j] * hh : xn + hh, clip));
                hn[j] = (1 - z) * n + z * hb[j];
            }
            for (int j = 0; j < H; j++) {
                if (t < len[b]) hb[j] = hn[j];
                out[((long)t * B + b) * H + j] = t < len[b] ? hn[j] : 0.0;
            }
        }
    free(hn);
    free(rh);
}

/* n doubles to the kernels' element type (float unless is_double), 64-byte aligned; zero filled past n. */
static void *typed(const double *src, long n, int is_double) {
    size_t bytes = ((size_t)n * (is_double ? 8 : 4) + 63) / 64 * 64 + 64;
    void *p = aligned_alloc(64, bytes);
    memset(p, 0, bytes);
    for (long i = 0; i < n; i++) {
        if (is_double) ((double *)p)[i] = src[i];
        else ((float *)p)[i] = (float)src[i];
    }
    return p;
}
static double get(const void *p, long i, int is_double) {
    return is_double ? ((const double *)p)[i] : ((const float *)p)[i];
}

static int run_case(const lstm_kernel_table *table, int is_double, int T, int B, int I, int H, int lbr, double clip,
                    int fused, unsigned seed) {
    srand(seed);
    const int V = table->vector_bytes / (is_double ? 8 : 4), NB = (H + V - 1) / V, Hp = NB * V;
    double *w_ih = malloc(sizeof(double) * 3 * H * I), *w_hh = malloc(sizeof(double) * 3 * H * H);
    double *b_ih = malloc(sizeof(double) * 3 * H), *b_hh = malloc(sizeof(double) * 3 * H);
    double *x = malloc(sizeof(double) * T * B * I), *h = calloc((size_t)B * H, sizeof(double));
    double *out = malloc(sizeof(double) * T * B * H);
    int *len = malloc(sizeof(int) * B);
#define RND() ((double)rand() / RAND_MAX - 0.5)
    for (int i = 0; i < 3 * H * I; i++) w_ih[i] = RND();
    for (int i = 0; i < 3 * H * H; i++) w_hh[i] = RND();
    for (int i = 0; i < 3 * H; i++) b_ih[i] = RND(), b_hh[i] = RND();
    for (int i = 0; i < T * B * I; i++) x[i] = 2 * RND();
    for (int i = 0; i < B * H; i++) h[i] = RND();
    for (int b = 0; b < B; b++) len[b] = b == 0 ? T : 1 + rand() % T;
    /* packed as src/gru_impl.h says */
    double *wi = calloc((size_t)NB * I * 3 * V, sizeof(double)), *wh = calloc((size_t)NB * H * 3 * V, sizeof(double));
    double *bias = calloc((size_t)NB * 3 * V, sizeof(double)), *bhn = calloc((size_t)NB * V, sizeof(double));
    for (int j = 0; j < NB; j++)
        for (int g = 0; g < 3; g++)
            for (int v = 0; v < V; v++) {
                int u = j * V + v;
                if (u >= H) continue;
                for (int k = 0; k < I; k++) wi[(((long)j * I + k) * 3 + g) * V + v] = w_ih[(long)(g * H + u) * I + k];
                for (int k = 0; k < H; k++) {
                    long at = lbr ? (((long)j * H + k) * 3 + g) * V + v
                                  : (long)j * H * 3 * V + (g < 2 ? ((long)k * 2 + g) * V : (long)H * 2 * V + (long)k * V) + v;
                    wh[at] = w_hh[(long)(g * H + u) * H + k];
                }
                bias[((long)j * 3 + g) * V + v] = b_ih[g * H + u] + (g < 2 || !lbr ? b_hh[g * H + u] : 0.0);
                if (g == 2) bhn[(long)j * V + v] = b_hh[2 * H + u];
            }
    void *k_wi = typed(wi, (long)NB * I * 3 * V, is_double), *k_wh = typed(wh, (long)NB * H * 3 * V, is_double);
    void *k_bias = typed(bias, (long)NB * 3 * V, is_double), *k_bhn = typed(bhn, (long)NB * V, is_double);
    void *k_x = typed(x, (long)T * B * I, is_double);
    double *zeros = calloc((size_t)T * B * 3 * Hp + 2 * B * Hp, sizeof(double));
    void *gx = typed(zeros, (long)T * B * 3 * Hp, is_double), *hbuf = typed(zeros, 2L * B * Hp, is_double);
    void *rh = typed(zeros, (long)B * Hp, is_double);
    for (int b = 0; b < B; b++)
        for (int u = 0; u < H; u++) {
            if (is_double) ((double *)hbuf)[(long)b * Hp + u] = h[b * H + u];
            else ((float *)hbuf)[(long)b * Hp + u] = (float)h[b * H + u];
        }
    reference(T, B, I, H, w_ih, w_hh, b_ih, b_hh, lbr, clip, len, x, h, out);

    const lstm_layer layer = {k_wi, k_wh, k_bias, NULL, NULL, I, H, H, -1, clip, 0, lbr ? k_bhn : NULL, !lbr};
    const lstm_rows rows = {len, B};
    const lstm_blocks blocks = {0, NB};
    const long G = 3L * Hp, es = is_double ? 8 : 4;
    lstm_chunk chunk = {k_x, (long)B * I, I, gx, (long)B * G, G};
    if (!fused) table->input(&layer, &rows, &chunk, 0, T, blocks);
    double worst = 0;
    int bad = 0;
    for (int t = 0; t < T; t++) {
        char *h_prev = (char *)hbuf + (t % 2) * B * Hp * es, *h_next = (char *)hbuf + ((t + 1) % 2) * B * Hp * es;
        const lstm_state state = {h_prev, Hp, rh, Hp, h_next, Hp};
        const char *g_t = fused ? (char *)gx : (char *)gx + (long)t * B * G * es;
        if (fused) {
            chunk.x = (char *)k_x + (long)t * B * I * es;
            table->step(&layer, &rows, &chunk, &state, blocks, t & 1);
        } else {
            table->cell(&layer, &rows, g_t, G, &state, t, blocks);
        }
        if (layer.split_step) table->finish(&layer, &rows, g_t, G, &state, fused ? 0 : t, blocks);
        for (int b = 0; b < B; b++) {
            if (t >= len[b]) memcpy(h_next + (long)b * Hp * es, h_prev + (long)b * Hp * es, (size_t)Hp * es);
            for (int u = 0; u < H; u++) {
                double got = t < len[b] ? get(h_next, (long)b * Hp + u, is_double) : 0.0;
                double want = out[((long)t * B + b) * H + u], err = fabs(got - want) / fmax(1.0, fabs(want));
                if (err > worst) worst = err;
                if (err > (is_double ? 1e-12 : 1e-5) && bad++ < 3)
                    printf("  at t=%d b=%d u=%d: got %.17g, expected %.17g\n", t, b, u, got, want);
            }
        }
    }
    printf("%s %s H=%d I=%d B=%d T=%d linear_before_reset=%d clip=%g %s: max error %.2g\n", bad ? "FAIL" : "ok  ",
           table->name, H, I, B, T, lbr, clip, fused ? "step kernel" : "input + cell kernels", worst);
    free(w_ih), free(w_hh), free(b_ih), free(b_hh), free(x), free(h), free(out), free(len), free(wi), free(wh);
    free(bias), free(bhn), free(k_wi), free(k_wh), free(k_bias), free(k_bhn), free(k_x), free(zeros), free(gx);
    free(hbuf), free(rh);
    return bad != 0;
}

int main(void) {
    const unsigned features = lstm_cpu_features();
    int failed = 0, checks = 0;
    unsigned long mode = lstm_ftz_enter();
#define GRU_CASES(cell, fmt, needs, table)                                                                      \
    if ((cell) == LSTM_CELL_GRU && ((fmt) == LSTM_FORMAT_F32 || (fmt) == LSTM_FORMAT_F64)                       \
        && ((needs) & ~features) == 0) {                                                                         \
        const int shapes[][4] = {{5, 1, 3, 7}, {6, 5, 9, 40}, {4, 3, 16, 70}, {3, 9, 5, 33}};                    \
        for (int s = 0; s < 4; s++)                                                                             \
            for (int lbr = 0; lbr < 2; lbr++)                                                                   \
                for (int fused = 0; fused < 2; fused++) {                                                       \
                    const int T = fused ? 1 + shapes[s][0] % 2 : shapes[s][0];                                  \
                    failed += run_case(&table, (fmt) == LSTM_FORMAT_F64, T, shapes[s][1],                       \
                                       shapes[s][2], shapes[s][3], lbr, s == 2 ? 0.75 : 0.0, fused, 17u * s + lbr); \
                    checks++;                                                                                   \
                }                                                                                               \
    }
    LSTM_INSTANCES(GRU_CASES)
#undef GRU_CASES
    lstm_ftz_leave(mode);
    printf("gru_test: %d of %d checks failed\n", failed, checks);
    return failed != 0;
}
