/* gru_quant_impl.h: the GRU kernels for reduced-precision weights (bf16 or int8) on one instruction set.
 *
 * Included by quant_impl.h (when GRU_QTABLE_NAME is defined: "gru/int8/avx512vnni", ...) after its LSTM kernels,
 * so it runs on that instantiation's machinery: quant_rows (the run-time rounding of activation rows), qdot (the
 * dot products of a block of ng gate vectors, here 3, 2 or 1), QDOT_ROWS, group_rows and qinput_gate_blocks (the
 * input projection). The float math (activations, the update) is cell_impl.h's without fused multiply-adds, as for
 * the LSTM: int8 results are the same bits on every instruction set. Defines the table FN(gru_table).
 *
 * The cell is gru_impl.h's (gate order r, z, n). Numerics as quant_impl.h's, with these activation rows rounded
 * at run time, each with its own scale (int8) per batch row: x (the input projection), h_{t-1} (the r, z sums, and
 * W_hn h with linear_before_reset) and, without linear_before_reset, r * h_{t-1} (W_hn (r * h)).
 *
 * Not instantiated with QAMX (its buffers of rows have no AMX_PAD rows, and the tiles take blocks of 4 or 1 gate
 * vectors): on CPUs with AMX a GRU runs the AVX-512 (vpdpbusd / vdpbf16ps) kernels.
 *
 * Packed layouts (fastlstm/_gru.py, pack_gru_direction_quant; blocks as quant_impl.h's, none narrow):
 *   w_ih     per block j, one block of 3 gate vectors (r, z, n) over I: FN(block_bytes)(I, 3) bytes
 *   w_hh     per block j, FN(block_bytes)(K, 3) bytes: linear_before_reset: one block of 3 gate vectors (r, z, n);
 *            otherwise a block of 2 (r, z) followed by a block of 1 (n), as the two halves of a step read them
 *   bias     (NB, 3, V) and bias_hn (NB, V) float32, gx per batch row (NB, 3, V): as gru_impl.h's
 */

#if QAMX
#error "gru_quant_impl.h has no AMX kernels"
#endif

/* bytes of one block of W_hh (either layout) */
static inline long FN(gru_hh_bytes)(int K) { return FN(block_bytes)(K, 3); }

/* Gate sums and update of block j for n rows (tiles of QBT) from quantized h_{t-1} rows hq (n, ldq), scales hs:
   linear_before_reset: h' to o0; otherwise the first half of the step: r * h_{t-1} to rh0, z to o0. g0 gx rows
   (n, NB*3V) stride ldg; h0 h_{t-1} rows (n, K) stride ldh; rh0 (n, Hp) stride ldc; o0 (n, Hp) stride ldo. Rows
   with active[r] == 0 are untouched. */
ATTR static void FN(gru_qcell_block)(const lstm_layer *layer, int j, const QEL *hq, long ldq, const float *hs, int n,
                                     const float *g0, long ldg, const float *h0, long ldh, float *rh0, long ldc,
                                     float *o0, long ldo, const unsigned char *active)
{
    const int K = layer->out_size;
    const char *wj = (const char *)layer->w_hh + j * FN(gru_hh_bytes)(K);
    const float clip = (float)layer->clip;
    const long hj = (long)j * VL;
    VEC pre[QBT][4];
    for (int r0 = 0; r0 < n; r0 += QBT) {
        const int nr = n - r0 < QBT ? n - r0 : QBT;
        int any = 0;
        for (int r = 0; r < nr; r++) any |= active[r0 + r];
        if (!any) continue;
        const float *gj = g0 + r0 * ldg + (long)j * 3 * VL;
        if (layer->split_step) {
#define QNG 2
            QDOT_ROWS(nr, wj, FN(groups)(K), hq + r0 * ldq, ldq, hs + r0, gj, ldg, pre)
#undef QNG
            for (int r = 0; r < nr; r++) {
                if (!active[r0 + r]) continue;
                const long row = r0 + r;
                VEC gate_r = FN(vsigmoid)(FN(vclip)(pre[r][0], clip));
                FN(vstore)(rh0 + row * ldc + hj, gate_r * FN(vload)(h0 + row * ldh + hj));
                FN(vstore)(o0 + row * ldo + hj, FN(vsigmoid)(FN(vclip)(pre[r][1], clip)));
            }
        } else {
            float init[QBT][3 * VL];    /* the sums' starting values: gx_r, gx_z, b_hn (r multiplies the n sum) */
            for (int r = 0; r < nr; r++) {
                memcpy(init[r], gj + r * ldg, 2 * VBYTES);
                memcpy(init[r] + 2 * VL, (const float *)layer->bias_hn + hj, VBYTES);
            }
#define QNG 3
            QDOT_ROWS(nr, wj, FN(groups)(K), hq + r0 * ldq, ldq, hs + r0, init[0], 3 * VL, pre)
#undef QNG
            for (int r = 0; r < nr; r++) {
                if (!active[r0 + r]) continue;
                const long row = r0 + r;
                VEC gate_r = FN(vsigmoid)(FN(vclip)(pre[r][0], clip));
                VEC gate_z = FN(vsigmoid)(FN(vclip)(pre[r][1], clip));
                VEC gate_n = FN(vtanh)(FN(vclip)(FN(vload)(gj + r * ldg + 2 * VL) + gate_r * pre[r][2], clip));
                VEC h_prev = FN(vload)(h0 + row * ldh + hj);
                FN(vstore)(o0 + row * ldo + hj, (1.0f - gate_z) * gate_n + gate_z * h_prev);
            }
        }
    }
}

/* One time step t of blocks [first, end) (the `cell` kernel kind), as gru_impl.h's gru_cell_blocks: each group of
   rows rounds its h_{t-1} once, then runs the blocks, alternating their order from step to step. */
ATTR static void FN(gru_qcell_blocks)(const lstm_layer *layer, const lstm_rows *rows, const void *gx_any, long ldg,
                                      const lstm_state *state, int t, lstm_blocks blocks)
{
    const float *gx = (const float *)gx_any, *h = (const float *)state->h;
    float *rh = (float *)state->c, *hout = (float *)state->hout;
    const long ldh = state->ldh, ldc = state->ldc, ldo = state->ldo;
    const int B = rows->count, K = layer->out_size, j0 = blocks.first, j1 = blocks.end, descending = t & 1;
    const long ldq = (long)FN(groups)(K) * QK;
    const int G = FN(group_rows)(ldq);
    QEL hq[G * ldq];
    float hs[G];
    unsigned char active[G];
    for (int b0 = 0; b0 < B; b0 += G) {
        const int n = B - b0 < G ? B - b0 : G;
        int any = 0;
        for (int r = 0; r < n; r++) any |= active[r] = t < rows->lengths[b0 + r];
        if (!any) continue;
        FN(quant_rows)(h + b0 * ldh, ldh, n, K, hq, ldq, hs);
        for (int jj = j0; jj < j1; jj++) {
            const int j = descending ? j1 - 1 - (jj - j0) : jj;
            FN(gru_qcell_block)(layer, j, hq, ldq, hs, n, gx + b0 * ldg, ldg, h + b0 * ldh, ldh, rh + b0 * ldc, ldc,
                                hout + b0 * ldo, ldo, active);
        }
    }
}

/* The second half of a split step t for blocks [first, end) (the `finish` kernel kind), after every thread of the
   direction has run the first: n = tanh(gx_n + W_hn (r * h_{t-1})) from all of r * h (state->c), each row rounded
   once per group, and h' written over z in state->hout. Arguments as for gru_qcell_blocks. */
ATTR static void FN(gru_qfinish_blocks)(const lstm_layer *layer, const lstm_rows *rows, const void *gx_any, long ldg,
                                        const lstm_state *state, int t, lstm_blocks blocks)
{
    const float *gx = (const float *)gx_any, *h = (const float *)state->h, *rh = (const float *)state->c;
    float *hout = (float *)state->hout;
    const long ldh = state->ldh, ldc = state->ldc, ldo = state->ldo;
    const int B = rows->count, K = layer->out_size, j0 = blocks.first, j1 = blocks.end, descending = t & 1;
    const float clip = (float)layer->clip;
    const long ldq = (long)FN(groups)(K) * QK;
    const int G = FN(group_rows)(ldq);
    QEL rq[G * ldq];
    float rs[G];
    unsigned char active[G];
    VEC pre[QBT][4];
    for (int b0 = 0; b0 < B; b0 += G) {
        const int n = B - b0 < G ? B - b0 : G;
        int any = 0;
        for (int r = 0; r < n; r++) any |= active[r] = t < rows->lengths[b0 + r];
        if (!any) continue;
        FN(quant_rows)(rh + b0 * ldc, ldc, n, K, rq, ldq, rs);
        for (int jj = j0; jj < j1; jj++) {
            const int j = descending ? j1 - 1 - (jj - j0) : jj;
            const char *wn = (const char *)layer->w_hh + j * FN(gru_hh_bytes)(K) + FN(block_bytes)(K, 2);
            const long hj = (long)j * VL;
            for (int r0 = 0; r0 < n; r0 += QBT) {
                const int nr = n - r0 < QBT ? n - r0 : QBT;
                int any_tile = 0;
                for (int r = 0; r < nr; r++) any_tile |= active[r0 + r];
                if (!any_tile) continue;
                const long first = b0 + r0;
#define QNG 1
                QDOT_ROWS(nr, wn, FN(groups)(K), rq + r0 * ldq, ldq, rs + r0, gx + first * ldg + (long)j * 3 * VL + 2 * VL,
                          ldg, pre)
#undef QNG
                for (int r = 0; r < nr; r++) {
                    if (!active[r0 + r]) continue;
                    VEC gate_n = FN(vtanh)(FN(vclip)(pre[r][0], clip));
                    float *o = hout + (first + r) * ldo + hj;
                    VEC gate_z = FN(vload)(o);
                    FN(vstore)(o, (1.0f - gate_z) * gate_n + gate_z * FN(vload)(h + (first + r) * ldh + hj));
                }
            }
        }
    }
}

/* Input projection of blocks [first, end) (the `input` kernel kind): quant_impl.h's, with 3 gates per block. */
ATTR static void FN(gru_qinput_blocks)(const lstm_layer *layer, const lstm_rows *rows, const lstm_chunk *chunk,
                                       int t0, int nsteps, lstm_blocks blocks)
{
    FN(qinput_gate_blocks)(layer, rows, chunk, t0, nsteps, blocks, 3);
}

/* One time step (T = 1, the `step` kernel kind), as quant_impl.h's qstep_blocks: per group of rows, x and h rounded
   once, then for each block its input projection (into the gx scratch) and its gate sums (all of the step with
   linear_before_reset, else its first half; the driver then runs `finish` on the same scratch). */
ATTR static void FN(gru_qstep_blocks)(const lstm_layer *layer, const lstm_rows *rows, const lstm_chunk *chunk,
                                      const lstm_state *state, lstm_blocks blocks, int descending)
{
    const float *x = (const float *)chunk->x, *h = (const float *)state->h;
    float *gx = (float *)chunk->gx, *rh = (float *)state->c, *hout = (float *)state->hout;
    const int B = rows->count, n_in = layer->input_size, K = layer->out_size, j0 = blocks.first, j1 = blocks.end;
    const long ldx = (long)FN(groups)(n_in) * QK, ldq = (long)FN(groups)(K) * QK, ldg = chunk->g_bs;
    const long ldh = state->ldh, ldc = state->ldc, ldo = state->ldo;
    const int G = FN(group_rows)(ldx + ldq);
    QEL xq[G * ldx], hq[G * ldq];
    float xs[G], hs[G];
    float *gr[G];
    unsigned char active[G];
    for (int b0 = 0; b0 < B; b0 += G) {
        const int n = B - b0 < G ? B - b0 : G;
        for (int r = 0; r < n; r++) {
            active[r] = 0 < rows->lengths[b0 + r];
            gr[r] = gx + (b0 + r) * ldg;
        }
        FN(quant_rows)(x + b0 * chunk->x_bs, chunk->x_bs, n, n_in, xq, ldx, xs);
        FN(quant_rows)(h + b0 * ldh, ldh, n, K, hq, ldq, hs);
        for (int jj = j0; jj < j1; jj++) {
            const int j = descending ? j1 - 1 - (jj - j0) : jj;
            FN(qinput_block)(layer, j, xq, ldx, xs, n, gr, 3);
            FN(gru_qcell_block)(layer, j, hq, ldq, hs, n, gx + b0 * ldg, ldg, h + b0 * ldh, ldh, rh + b0 * ldc, ldc,
                                hout + b0 * ldo, ldo, active);
        }
    }
}

/* the GRU kernel table of this instantiation (no projection) */
static const lstm_kernel_table FN(gru_table) = {GRU_QTABLE_NAME, VBYTES, QBT, FN(gru_qinput_blocks),
                                                FN(gru_qcell_blocks), FN(gru_qstep_blocks), 0,
                                                FN(gru_qfinish_blocks)};
