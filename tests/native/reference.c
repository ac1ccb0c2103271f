/* reference.c: one LSTM direction in plain scalar C (float64, libm), straight from the gate equations, as
 * fastlstm/reference.py computes it:
 *
 *   gates = W_ih x_t + W_hh h_{t-1} + b                     (rows i, f, g, o)
 *   peepholes: pre_i += p_i c_{t-1}, pre_f += p_f c_{t-1}, pre_o += p_o c_t
 *   every pre-activation clipped to [-clip, clip] when clip > 0; input_forget: f = 1 - i
 *   c_t = f c_{t-1} + i g;  h_t = o tanh(c_t);  h_t = W_hr h_t with a projection
 *
 * Rows past their length keep their state and output zeros. No vector code, nothing of src/.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "native_test.h"

static double sigmoid(double z) { return 1.0 / (1.0 + exp(-z)); }

static double clipped(double z, double clip) {
    if (clip <= 0) return z;
    return z < -clip ? -clip : z > clip ? clip : z;
}

void kt_reference(const kt_lstm *p, double *out, double *hn, double *cn) {
    const int T = p->T, B = p->B, I = p->I, H = p->H, K = kt_out_size(p);
    double *gates = malloc(sizeof(double) * 4 * H), *hcell = malloc(sizeof(double) * H);
    double *h = malloc(sizeof(double) * K), *c = malloc(sizeof(double) * H);
    for (int b = 0; b < B; b++) {
        memcpy(h, p->h0 + (size_t)b * K, sizeof(double) * K);
        memcpy(c, p->c0 + (size_t)b * H, sizeof(double) * H);
        for (int s = 0; s < T; s++) {
            const int t = p->reverse ? T - 1 - s : s;
            double *o_row = out + ((size_t)t * B + b) * K;
            if (t >= p->lengths[b]) {
                for (int k = 0; k < K; k++) o_row[k] = 0;
                continue;
            }
            const double *x = p->x + ((size_t)t * B + b) * I;
            for (int r = 0; r < 4 * H; r++) {
                double sum = p->bias[r];
                for (int i = 0; i < I; i++) sum += p->w_ih[(size_t)r * I + i] * x[i];
                for (int k = 0; k < K; k++) sum += p->w_hh[(size_t)r * K + k] * h[k];
                gates[r] = sum;
            }
            for (int u = 0; u < H; u++) {
                double pre_i = gates[u], pre_f = gates[H + u], pre_g = gates[2 * H + u], pre_o = gates[3 * H + u];
                if (p->peep) {
                    pre_i += p->peep[u] * c[u];
                    pre_f += p->peep[H + u] * c[u];
                }
                const double gi = sigmoid(clipped(pre_i, p->clip));
                const double gf = p->input_forget ? 1.0 - gi : sigmoid(clipped(pre_f, p->clip));
                const double gg = tanh(clipped(pre_g, p->clip));
                c[u] = gf * c[u] + gi * gg;
                if (p->peep) pre_o += p->peep[2 * H + u] * c[u];
                hcell[u] = sigmoid(clipped(pre_o, p->clip)) * tanh(c[u]);
            }
            if (p->P > 0) {
                for (int q = 0; q < p->P; q++) {
                    double sum = 0;
                    for (int u = 0; u < H; u++) sum += p->w_hr[(size_t)q * H + u] * hcell[u];
                    h[q] = sum;
                }
            } else {
                memcpy(h, hcell, sizeof(double) * H);
            }
            memcpy(o_row, h, sizeof(double) * K);
        }
        memcpy(hn + (size_t)b * K, h, sizeof(double) * K);
        memcpy(cn + (size_t)b * H, c, sizeof(double) * H);
    }
    free(gates);
    free(hcell);
    free(h);
    free(c);
}
