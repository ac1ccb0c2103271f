/* packing.c: an LSTM direction's torch-layout weights packed into the layout the micro-kernels read, written
 * from the layout's description (top of src/cell_impl.h) the way fastlstm/_packing.py builds it, for a block
 * width of V elements (V = vector bytes / element size: 4 floats or 2 doubles for the 16-byte baseline).
 *
 *   w_hh (NB, K, 4, V): w_hh[j, k, g, v] = W_hh[g*H + j*V + v, k]; w_ih (NB, I, 4, V) the same for W_ih
 *   bias (NB, 4, V) in the same order; peep (NB, 3, V): rows i, f, o; w_hr (NP, H, V): W_hr[q*V + v, k]
 *   units past H (and projected units past P) are zero.
 *   A narrow last block (0 < H mod V <= V/2) holds V/2 units with two gates per vector: its slot of w_ih and
 *   w_hh starts with (n, 2, V), vector 0 = [i | f], vector 1 = [g | o]; bias the same in its first 2V;
 *   peep [p_i | p_f], [0 | p_o].
 */
#include <stdlib.h>
#include <string.h>

#include "native_test.h"

void *kt_alloc(size_t n, size_t elem_size) {
    size_t bytes = (n * elem_size + 63) / 64 * 64;
    void *p = aligned_alloc(64, bytes > 0 ? bytes : 64);
    if (p) memset(p, 0, bytes > 0 ? bytes : 64);
    return p;
}

/* The row of the (4H, n) torch layout at position pos in [0, 4V) of block j's slot (g*V + v), or -1 for a
   padding position. */
static long slot_row(const kt_lstm *p, const kt_packed *w, int j, int pos) {
    const int H = p->H, V = w->V, half = V / 2;
    int gate, unit;
    if (w->narrow && j == w->NB - 1) {
        if (pos >= 2 * V) return -1;
        const int pair = pos / V, lane = pos % V;       /* vector 0 = [i | f], vector 1 = [g | o] */
        gate = 2 * pair + lane / half;
        unit = j * V + lane % half;
    } else {
        gate = pos / V;
        unit = j * V + pos % V;
    }
    return unit < H ? (long)gate * H + unit : -1;
}

/* src (4H, n) -> dst (NB, n, 4, V); a narrow last slot starts with (n, 2, V) */
static void pack_gates(const kt_lstm *p, const kt_packed *w, const double *src, int n, double *dst) {
    const int V = w->V;
    for (int j = 0; j < w->NB; j++) {
        const int positions = w->narrow && j == w->NB - 1 ? 2 * V : 4 * V;
        double *slot = dst + (size_t)j * n * 4 * V;
        for (int k = 0; k < n; k++)
            for (int pos = 0; pos < positions; pos++) {
                const long row = slot_row(p, w, j, pos);
                slot[(size_t)k * positions + pos] = row < 0 ? 0 : src[row * n + k];
            }
    }
}

int kt_pack(const kt_lstm *p, int V, kt_packed *w) {
    const int H = p->H, K = kt_out_size(p), half = V / 2;
    memset(w, 0, sizeof(*w));
    w->V = V;
    w->NB = (H + V - 1) / V;
    w->NP = (p->P + V - 1) / V;
    w->narrow = H % V > 0 && H % V <= half;
    w->n_w_ih = (size_t)w->NB * p->I * 4 * V;
    w->n_w_hh = (size_t)w->NB * K * 4 * V;
    w->n_bias = (size_t)w->NB * 4 * V;
    w->n_peep = p->peep ? (size_t)w->NB * 3 * V : 0;
    w->n_w_hr = (size_t)w->NP * H * V;
    w->w_ih = kt_alloc(w->n_w_ih, sizeof(double));
    w->w_hh = kt_alloc(w->n_w_hh, sizeof(double));
    w->bias = kt_alloc(w->n_bias, sizeof(double));
    if (p->peep) w->peep = kt_alloc(w->n_peep, sizeof(double));
    if (p->P > 0) w->w_hr = kt_alloc(w->n_w_hr, sizeof(double));
    if (!w->w_ih || !w->w_hh || !w->bias || (p->peep && !w->peep) || (p->P > 0 && !w->w_hr)) {
        kt_packed_free(w);
        return -1;
    }
    pack_gates(p, w, p->w_ih, p->I, w->w_ih);
    pack_gates(p, w, p->w_hh, K, w->w_hh);
    for (int j = 0; j < w->NB; j++)
        for (int pos = 0; pos < 4 * V; pos++) {
            const long row = slot_row(p, w, j, pos);
            w->bias[(size_t)j * 4 * V + pos] = row < 0 ? 0 : p->bias[row];
        }
    if (p->peep) {
        for (int j = 0; j < w->NB; j++) {
            double *slot = w->peep + (size_t)j * 3 * V;
            if (w->narrow && j == w->NB - 1) {
                for (int lane = 0; lane < half; lane++) {
                    const int unit = j * V + lane;
                    if (unit >= H) continue;
                    slot[lane] = p->peep[unit];                      /* [p_i | p_f] */
                    slot[half + lane] = p->peep[H + unit];
                    slot[V + half + lane] = p->peep[2 * H + unit];   /* [0 | p_o] */
                }
            } else {
                for (int g = 0; g < 3; g++)
                    for (int v = 0; v < V; v++) {
                        const int unit = j * V + v;
                        slot[g * V + v] = unit < H ? p->peep[(size_t)g * H + unit] : 0;
                    }
            }
        }
    }
    if (p->P > 0) {
        for (int q = 0; q < w->NP; q++)
            for (int k = 0; k < H; k++)
                for (int v = 0; v < V; v++) {
                    const int row = q * V + v;
                    w->w_hr[((size_t)q * H + k) * V + v] = row < p->P ? p->w_hr[(size_t)row * H + k] : 0;
                }
    }
    return 0;
}

void kt_packed_free(kt_packed *w) {
    free(w->w_ih);
    free(w->w_hh);
    free(w->bias);
    free(w->peep);
    free(w->w_hr);
    memset(w, 0, sizeof(*w));
}
