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
 * With QAMX the dot products of a matrix whose length fits the tiles (amx_fits) take them for every row, whatever
 * the batch, as quant_impl.h's LSTM kernels do; the buffers of rounded rows have AMX_PAD rows more than they use.
 *
 * Packed layouts (fastlstm/_gru.py, pack_gru_direction_quant; blocks as quant_impl.h's, none narrow):
 *   w_ih     per block j, one block of 3 gate vectors (r, z, n) over I: FN(block_bytes)(I, 3) bytes
 *   w_hh     per block j, FN(block_bytes)(K, 3) bytes: linear_before_reset: one block of 3 gate vectors (r, z, n);
 *            otherwise a block of 2 (r, z) followed by a block of 1 (n), as the two halves of a step read them
 *   bias     (NB, 3, V) and bias_hn (NB, V) float32, gx per batch row (NB, 3, V): as gru_impl.h's
 */

/* bytes of one block of W_hh (either layout) */
static inline long FN(gru_hh_bytes)(int K) { return FN(block_bytes)(K, 3); }

/* The updates of one row of one block from its gate sums pre (V lanes each), h_prev its h_{t-1} (V,):
   full (linear_before_reset; pre r, z, W_hn h + b_hn; gx_n (V,)): h' to out;
   first half (pre r, z): r * h_{t-1} to rh, z to out;
   second half (pre n, b_in + b_hn + gx_n included; out holding z): h' over z. */
ATTR static inline __attribute__((always_inline)) void FN(gru_q_full)(const VEC *pre, const float *gx_n,
                                                                       const float *h_prev, float clip, float *out)
{
    VEC gate_r = FN(vsigmoid)(FN(vclip)(pre[0], clip));
    VEC gate_z = FN(vsigmoid)(FN(vclip)(pre[1], clip));
    VEC gate_n = FN(vtanh)(FN(vclip)(FN(vload)(gx_n) + gate_r * pre[2], clip));
    FN(vstore)(out, (1.0f - gate_z) * gate_n + gate_z * FN(vload)(h_prev));
}
ATTR static inline __attribute__((always_inline)) void FN(gru_q_first)(const VEC *pre, const float *h_prev,
                                                                        float clip, float *rh, float *out)
{
    FN(vstore)(rh, FN(vsigmoid)(FN(vclip)(pre[0], clip)) * FN(vload)(h_prev));
    FN(vstore)(out, FN(vsigmoid)(FN(vclip)(pre[1], clip)));
}
ATTR static inline __attribute__((always_inline)) void FN(gru_q_second)(const VEC *pre, const float *h_prev,
                                                                         float clip, float *out)
{
    VEC gate_n = FN(vtanh)(FN(vclip)(pre[0], clip));
    VEC gate_z = FN(vload)(out);
    FN(vstore)(out, (1.0f - gate_z) * gate_n + gate_z * FN(vload)(h_prev));
}

/* the starting values of a row's gate sums with linear_before_reset: gx_r, gx_z (gx (2V,)), and b_hn (V,) (r
   multiplies the n sum, so gx_n stays out) */
ATTR static inline void FN(gru_q_init)(float *init, const float *gx, const float *bias_hn)
{
    memcpy(init, gx, 2 * VBYTES);
    memcpy(init + 2 * VL, bias_hn, VBYTES);
}

/* Gate sums and update of block j for n rows (tiles of QBT) from quantized h_{t-1} rows hq (n, ldq), scales hs:
   linear_before_reset: h' to o0; otherwise the first half of the step: r * h_{t-1} to rh0, z to o0. g0 gx rows
   (n, NB*3V) stride ldg; h0 h_{t-1} rows (n, K) stride ldh; rh0 (n, Hp) stride ldc; o0 (n, Hp) stride ldo. Rows
   with active[r] == 0 are untouched. */
ATTR static void FN(gru_qcell_block)(const lstm_layer *layer, int j, const QEL *hq, long ldq, const float *hs, int n,
                                     const float *g0, long ldg, const float *h0, long ldh, float *rh0, long ldc,
                                     float *o0, long ldo, const unsigned char *active)
{
    const int K = layer->out_size, split = layer->split_step;
    const char *wj = (const char *)layer->w_hh + j * FN(gru_hh_bytes)(K);
    const long hj = (long)j * VL;
    const float clip = (float)layer->clip, *hn_bias = split ? 0 : (const float *)layer->bias_hn + hj;
    const float *gj = g0 + (long)j * 3 * VL;
    VEC pre[QBT][4];
#if QAMX
    if (FN(amx_fits)(K)) {
        FN(amx_sum) sums[(n + 2 * AMX_ROWS - 1) / AMX_ROWS * AMX_ROWS][4 * VL] __attribute__((aligned(64)));
        FN(amx_sums)(wj, FN(groups)(K), hq, ldq, n, active, sums, split ? 2 : 3);
        for (long r = 0; r < n; r++) {
            if (!active[r]) continue;
            if (split) {
                FN(amx_pre)(sums[r], wj, hs[r], gj + r * ldg, pre[0], 2);
                FN(gru_q_first)(pre[0], h0 + r * ldh + hj, clip, rh0 + r * ldc + hj, o0 + r * ldo + hj);
            } else {
                float init[3 * VL];
                FN(gru_q_init)(init, gj + r * ldg, hn_bias);
                FN(amx_pre)(sums[r], wj, hs[r], init, pre[0], 3);
                FN(gru_q_full)(pre[0], gj + r * ldg + 2 * VL, h0 + r * ldh + hj, clip, o0 + r * ldo + hj);
            }
        }
        return;
    }
#endif
    for (int r0 = 0; r0 < n; r0 += QBT) {
        const int nr = n - r0 < QBT ? n - r0 : QBT;
        int any = 0;
        for (int r = 0; r < nr; r++) any |= active[r0 + r];
        if (!any) continue;
        const float *gt = gj + r0 * ldg;
        if (split) {
#define QNG 2
            QDOT_ROWS(nr, wj, FN(groups)(K), hq + r0 * ldq, ldq, hs + r0, gt, ldg, pre)
#undef QNG
            for (int r = 0; r < nr; r++) {
                const long row = r0 + r;
                if (active[row])
                    FN(gru_q_first)(pre[r], h0 + row * ldh + hj, clip, rh0 + row * ldc + hj, o0 + row * ldo + hj);
            }
        } else {
            float init[QBT][3 * VL];
            for (int r = 0; r < nr; r++) FN(gru_q_init)(init[r], gt + r * ldg, hn_bias);
#define QNG 3
            QDOT_ROWS(nr, wj, FN(groups)(K), hq + r0 * ldq, ldq, hs + r0, init[0], 3 * VL, pre)
#undef QNG
            for (int r = 0; r < nr; r++) {
                const long row = r0 + r;
                if (active[row])
                    FN(gru_q_full)(pre[r], gt + r * ldg + 2 * VL, h0 + row * ldh + hj, clip, o0 + row * ldo + hj);
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
    AMX_BEGIN(B)
    QBUF(hq, (G + AMX_PAD) * ldq)
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
    AMX_END()
    QBUF_FREE(hq)
}

/* The second half of a split step for block j and n rows (tiles of QBT) from quantized r * h_{t-1} rows rq (n, ldq),
   scales rs: n = tanh(gx_n + W_hn (r * h_{t-1})), h' written over z in o0. Arguments as for gru_qcell_block. */
ATTR static void FN(gru_qfinish_block)(const lstm_layer *layer, int j, const QEL *rq, long ldq, const float *rs,
                                       int n, const float *g0, long ldg, const float *h0, long ldh, float *o0,
                                       long ldo, const unsigned char *active)
{
    const int K = layer->out_size;
    const char *wn = (const char *)layer->w_hh + j * FN(gru_hh_bytes)(K) + FN(block_bytes)(K, 2);
    const float clip = (float)layer->clip;
    const long hj = (long)j * VL;
    const float *gn = g0 + (long)j * 3 * VL + 2 * VL;
    VEC pre[QBT][4];
#if QAMX
    if (FN(amx_fits)(K)) {
        FN(amx_sum) sums[(n + 2 * AMX_ROWS - 1) / AMX_ROWS * AMX_ROWS][4 * VL] __attribute__((aligned(64)));
        FN(amx_sums)(wn, FN(groups)(K), rq, ldq, n, active, sums, 1);
        for (long r = 0; r < n; r++)
            if (active[r]) {
                FN(amx_pre)(sums[r], wn, rs[r], gn + r * ldg, pre[0], 1);
                FN(gru_q_second)(pre[0], h0 + r * ldh + hj, clip, o0 + r * ldo + hj);
            }
        return;
    }
#endif
    for (int r0 = 0; r0 < n; r0 += QBT) {
        const int nr = n - r0 < QBT ? n - r0 : QBT;
        int any = 0;
        for (int r = 0; r < nr; r++) any |= active[r0 + r];
        if (!any) continue;
#define QNG 1
        QDOT_ROWS(nr, wn, FN(groups)(K), rq + r0 * ldq, ldq, rs + r0, gn + r0 * ldg, ldg, pre)
#undef QNG
        for (int r = 0; r < nr; r++) {
            const long row = r0 + r;
            if (active[row]) FN(gru_q_second)(pre[r], h0 + row * ldh + hj, clip, o0 + row * ldo + hj);
        }
    }
}

/* The second half of a split step t for blocks [first, end) (the `finish` kernel kind), after every thread of the
   direction has run the first: from all of r * h (state->c), each row rounded once per group; h' written over z
   in state->hout. Arguments as for gru_qcell_blocks. */
ATTR static void FN(gru_qfinish_blocks)(const lstm_layer *layer, const lstm_rows *rows, const void *gx_any, long ldg,
                                        const lstm_state *state, int t, lstm_blocks blocks)
{
    const float *gx = (const float *)gx_any, *h = (const float *)state->h, *rh = (const float *)state->c;
    float *hout = (float *)state->hout;
    const long ldh = state->ldh, ldc = state->ldc, ldo = state->ldo;
    const int B = rows->count, K = layer->out_size, j0 = blocks.first, j1 = blocks.end, descending = t & 1;
    const long ldq = (long)FN(groups)(K) * QK;
    const int G = FN(group_rows)(ldq);
    AMX_BEGIN(B)
    QBUF(rq, (G + AMX_PAD) * ldq)
    float rs[G];
    unsigned char active[G];
    for (int b0 = 0; b0 < B; b0 += G) {
        const int n = B - b0 < G ? B - b0 : G;
        int any = 0;
        for (int r = 0; r < n; r++) any |= active[r] = t < rows->lengths[b0 + r];
        if (!any) continue;
        FN(quant_rows)(rh + b0 * ldc, ldc, n, K, rq, ldq, rs);
        for (int jj = j0; jj < j1; jj++) {
            const int j = descending ? j1 - 1 - (jj - j0) : jj;
            FN(gru_qfinish_block)(layer, j, rq, ldq, rs, n, gx + b0 * ldg, ldg, h + b0 * ldh, ldh, hout + b0 * ldo,
                                  ldo, active);
        }
    }
    AMX_END()
    QBUF_FREE(rq)
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
    AMX_BEGIN(B)
    QBUF(xq, (G + AMX_PAD) * ldx)
    QBUF(hq, (G + AMX_PAD) * ldq)
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
    AMX_END()
    QBUF_FREE(xq)
    QBUF_FREE(hq)
}

/* the GRU kernel table of this instantiation (no projection) */
static const lstm_kernel_table FN(gru_table) = {GRU_QTABLE_NAME, VBYTES, QBT, FN(gru_qinput_blocks),
                                                FN(gru_qcell_blocks), FN(gru_qstep_blocks), 0,
                                                FN(gru_qfinish_blocks)};
