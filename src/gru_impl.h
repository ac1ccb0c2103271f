/* gru_impl.h: the GRU cell micro-kernels for one (dtype, instruction set) pair.
 *
 * Included by cell_kernels.h right after each inclusion of cell_impl.h, with the same macros defined (REAL,
 * SFX, VBYTES, BT, ATTR, ...) plus GRU_TABLE_NAME ("gru/f32/avx512", ...). It reuses that instantiation's
 * vector helpers and its dot-product tiles (FN(gate_sums), FN(input_tile)), so every GRU dot product sums in
 * the LSTM's order, and defines the table FN(gru_table) (kernel_api.h, cell kind LSTM_CELL_GRU).
 *
 * The cell (torch.nn.GRU, gate order r, z, n):
 *   r = sigmoid(W_ir x + b_ir + W_hr h + b_hr),  z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
 *   n = tanh(W_in x + b_in + r * (W_hn h + b_hn))        linear_before_reset (torch, Keras reset_after=True)
 *   n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)        otherwise (ONNX's default, Keras reset_after=False)
 *   h' = (1 - z) * n + z * h
 * clip (ONNX) clips each of the three pre-activations before its activation.
 *
 * Packed layouts (fastlstm/_packing.py, V = VBYTES / sizeof(REAL), Hp = H rounded up to V; no narrow block):
 *   w_ih  (NB, I, 3, V):  w_ih[j, k, g, v] = W_ih[g*H + j*V + v, k]   (gate order r, z, n; zero padded)
 *   bias  (NB, 3, V):     b_ir + b_hr, b_iz + b_hz, b_in (+ b_hn without linear_before_reset)
 *   gx    per batch row (NB, 3, V): bias + W_ih x_t, in the same packed order
 *   w_hh  per block j, K*3*V elements: linear_before_reset: (K, 3, V) gates r, z, n interleaved;
 *         otherwise (K, 2, V) gates r, z, then (K, 1, V) gate n (its sum runs after r * h is complete)
 *   bias_hn (NB, V):      b_hn (read only with linear_before_reset)
 * Without linear_before_reset a step has two halves (layer->split_step): `cell` computes r and z, writes r * h
 * to state->c (B, Hp) and z to state->hout; once every thread of the direction has done so, `finish` computes
 * n from all of r * h and writes h' over z.
 */

#define FN(name) CAT3(name, _, SFX)
#define VL (VBYTES / (int)sizeof(REAL))
#define VEC FN(vec)

/* One register tile, linear_before_reset: the three gate sums (r and z start from gx, the n row from b_hn,
   kept apart from gx_n because r multiplies it), then h' for the active rows. w (K, 3, V); gx rows (nr, 3V)
   stride ldg; hn_bias (V,); h (nr, K) stride ldh, whose lanes [j*V, j*V + V) are this block's h_{t-1}
   (offset hj); hout (nr, V) stride ldo. */
ATTR static inline __attribute__((always_inline)) void FN(gru_tile)(
    const REAL *restrict w, const REAL *restrict gx, long ldg, const REAL *restrict hn_bias, REAL clip,
    const REAL *restrict h, long ldh, long hj, REAL *restrict hout, long ldo, const unsigned char *active, int K,
    const int nr)
{
    REAL init[BT][3 * VL];       /* gate_sums' starting values: gx_r, gx_z, b_hn */
    VEC pre[BT][4];
    for (int r = 0; r < nr; r++) {
        FN(vstore)(init[r], FN(vload)(gx + r * ldg));
        FN(vstore)(init[r] + VL, FN(vload)(gx + r * ldg + VL));
        FN(vstore)(init[r] + 2 * VL, FN(vload)(hn_bias));
    }
    FN(gate_sums)(w, init[0], 3 * VL, h, ldh, pre, K, nr, 3);
    for (int r = 0; r < nr; r++) {
        if (!active[r]) continue;
        VEC gate_r = FN(vsigmoid)(FN(vclip)(pre[r][0], clip));
        VEC gate_z = FN(vsigmoid)(FN(vclip)(pre[r][1], clip));
        VEC gate_n = FN(vtanh)(FN(vclip)(FN(vload)(gx + r * ldg + 2 * VL) + gate_r * pre[r][2], clip));
        VEC h_prev = FN(vload)(h + r * ldh + hj);
        FN(vstore)(hout + r * ldo, ((REAL)1.0 - gate_z) * gate_n + gate_z * h_prev);
    }
}

/* One register tile of the first half of a split step: r and z from w (K, 2, V) and gx rows (slots r, z);
   r * h_{t-1} to rh (nr, V) stride ldc, z to hout (nr, V) stride ldo, for the active rows. */
ATTR static inline __attribute__((always_inline)) void FN(gru_rz_tile)(
    const REAL *restrict w, const REAL *restrict gx, long ldg, REAL clip, const REAL *restrict h, long ldh, long hj,
    REAL *restrict rh, long ldc, REAL *restrict hout, long ldo, const unsigned char *active, int K, const int nr)
{
    VEC pre[BT][4];
    FN(gate_sums)(w, gx, ldg, h, ldh, pre, K, nr, 2);
    for (int r = 0; r < nr; r++) {
        if (!active[r]) continue;
        VEC gate_r = FN(vsigmoid)(FN(vclip)(pre[r][0], clip));
        FN(vstore)(rh + r * ldc, gate_r * FN(vload)(h + r * ldh + hj));
        FN(vstore)(hout + r * ldo, FN(vsigmoid)(FN(vclip)(pre[r][1], clip)));
    }
}

/* One register tile of the second half of a split step: n from w (K, 1, V), gx rows (slot n, bias b_in + b_hn
   included) and all of r * h (rh (nr, K) stride ldc); h' written over z in hout (nr, V) stride ldo. */
ATTR static inline __attribute__((always_inline)) void FN(gru_n_tile)(
    const REAL *restrict w, const REAL *restrict gx_n, long ldg, REAL clip, const REAL *restrict rh, long ldc,
    const REAL *restrict h, long ldh, long hj, REAL *restrict hout, long ldo, const unsigned char *active, int K,
    const int nr)
{
    VEC pre[BT][4];
    FN(gate_sums)(w, gx_n, ldg, rh, ldc, pre, K, nr, 1);
    for (int r = 0; r < nr; r++) {
        if (!active[r]) continue;
        VEC gate_n = FN(vtanh)(FN(vclip)(pre[r][0], clip));
        VEC gate_z = FN(vload)(hout + r * ldo);
        VEC h_prev = FN(vload)(h + r * ldh + hj);
        FN(vstore)(hout + r * ldo, ((REAL)1.0 - gate_z) * gate_n + gate_z * h_prev);
    }
}

/* the row tiles of one block: TILE(n) for n rows, n a constant (the tiles are inlined per row count) */
#if BT >= 4
#define GRU_TILES(TILE, nr)                                                                                     \
    switch (nr) {                                                                                               \
        case 4: TILE(4); break;                                                                                 \
        case 3: TILE(3); break;                                                                                 \
        case 2: TILE(2); break;                                                                                 \
        default: TILE(1); break;                                                                                \
    }
#else
#define GRU_TILES(TILE, nr)                                                                                     \
    switch (nr) {                                                                                               \
        case 2: TILE(2); break;                                                                                 \
        default: TILE(1); break;                                                                                \
    }
#endif

/* Blocks [first, end) of one time step t (the `cell` kernel kind, kernel_api.h): h' of every active row, or
   with layer->split_step the first half (r * h to state->c, z to state->hout). w_hh as packed above; gx
   (B, NB*3V) stride ldg; state: h (B, K) stride ldh, hout (B, NB*V) stride ldo, c (B, Hp) stride ldc. Blocks
   run in ascending order at even t and descending at odd t (see cell_impl.h's cell_blocks). */
ATTR static void FN(gru_cell_blocks)(const lstm_layer *layer, const lstm_rows *rows, const void *gx_any, long ldg,
                                     const lstm_state *state, int t, lstm_blocks blocks)
{
    const REAL *w_hh = (const REAL *)layer->w_hh, *gx = (const REAL *)gx_any, *hn_bias = (const REAL *)layer->bias_hn;
    const REAL *h = (const REAL *)state->h;
    REAL *rh = (REAL *)state->c, *hout = (REAL *)state->hout;
    const long ldh = state->ldh, ldc = state->ldc, ldo = state->ldo;
    const REAL clip = (REAL)layer->clip;
    const int K = layer->out_size, split = layer->split_step;
    const int *lengths = rows->lengths, B = rows->count, j0 = blocks.first, j1 = blocks.end;
    unsigned char active[BT];
    const int descending = t & 1;
    for (int jj = j0; jj < j1; jj++) {
        const int j = descending ? j1 - 1 - (jj - j0) : jj;
        const REAL *wj = w_hh + (long)j * K * 3 * VL;
        const long hj = (long)j * VL;
        for (int b0 = 0; b0 < B; b0 += BT) {
            int nr = B - b0 < BT ? B - b0 : BT, any = 0;
            for (int r = 0; r < nr; r++) any |= active[r] = t < lengths[b0 + r];
            if (!any) continue;
            const REAL *g0 = gx + b0 * ldg + (long)j * 3 * VL, *h0 = h + b0 * ldh;
            REAL *o0 = hout + b0 * ldo + hj;
            if (split) {
#define RZ_TILE(n) FN(gru_rz_tile)(wj, g0, ldg, clip, h0, ldh, hj, rh + b0 * ldc + hj, ldc, o0, ldo, active, K, n)
                GRU_TILES(RZ_TILE, nr)
#undef RZ_TILE
            } else {
#define GRU_TILE(n) FN(gru_tile)(wj, g0, ldg, hn_bias + hj, clip, h0, ldh, hj, o0, ldo, active, K, n)
                GRU_TILES(GRU_TILE, nr)
#undef GRU_TILE
            }
        }
    }
}

/* The second half of a split step t for blocks [first, end) (the `finish` kernel kind): arguments as for
   gru_cell_blocks, after every thread of the direction has run it. */
ATTR static void FN(gru_finish_blocks)(const lstm_layer *layer, const lstm_rows *rows, const void *gx_any, long ldg,
                                       const lstm_state *state, int t, lstm_blocks blocks)
{
    const REAL *w_hh = (const REAL *)layer->w_hh, *gx = (const REAL *)gx_any;
    const REAL *h = (const REAL *)state->h, *rh = (const REAL *)state->c;
    REAL *hout = (REAL *)state->hout;
    const long ldh = state->ldh, ldc = state->ldc, ldo = state->ldo;
    const REAL clip = (REAL)layer->clip;
    const int K = layer->out_size;
    const int *lengths = rows->lengths, B = rows->count, j0 = blocks.first, j1 = blocks.end;
    unsigned char active[BT];
    const int descending = t & 1;
    for (int jj = j0; jj < j1; jj++) {
        const int j = descending ? j1 - 1 - (jj - j0) : jj;
        const REAL *wn = w_hh + (long)j * K * 3 * VL + (long)K * 2 * VL;
        const long hj = (long)j * VL;
        for (int b0 = 0; b0 < B; b0 += BT) {
            int nr = B - b0 < BT ? B - b0 : BT, any = 0;
            for (int r = 0; r < nr; r++) any |= active[r] = t < lengths[b0 + r];
            if (!any) continue;
            const REAL *g0 = gx + b0 * ldg + (long)j * 3 * VL + 2 * VL;
#define N_TILE(n) FN(gru_n_tile)(wn, g0, ldg, clip, rh + b0 * ldc, ldc, h + b0 * ldh, ldh, hj, \
                                 hout + b0 * ldo + hj, ldo, active, K, n)
            GRU_TILES(N_TILE, nr)
#undef N_TILE
        }
    }
}

/* Input projection of blocks [first, end) (the `input` kernel kind): gx[s, b] (NB*3V) = bias + W_ih x[s, b]
   for the chunk's rows, as cell_impl.h's input_blocks does for four gates. Rows past lengths[b] are not read. */
ATTR static void FN(gru_input_blocks)(const lstm_layer *layer, const lstm_rows *rows, const lstm_chunk *chunk,
                                      int t0, int nsteps, lstm_blocks blocks)
{
    const REAL *w_ih = (const REAL *)layer->w_ih, *bias = (const REAL *)layer->bias, *x = (const REAL *)chunk->x;
    REAL *gx = (REAL *)chunk->gx;
    const long x_ts = chunk->x_ts, x_bs = chunk->x_bs, g_ts = chunk->g_ts, g_bs = chunk->g_bs;
    const int n_in = layer->input_size, B = rows->count;
    const int *lengths = rows->lengths;
    const REAL *xr[BT];
    REAL *gr[BT];
    /* weights beyond L1 go in passes over k (cell_impl.h's CELL_PASS_K rows of 4 gate vectors; the same sums) */
    const int passes = (n_in + CELL_PASS_K - 1) / CELL_PASS_K;
    for (int pass = 0; pass < (blocks.end - blocks.first) * passes; pass++) {
        const int j = blocks.first + pass / passes, k0 = pass % passes * CELL_PASS_K;
        const int k1 = n_in - k0 < CELL_PASS_K ? n_in : k0 + CELL_PASS_K;
        const REAL *wj = w_ih + (long)j * n_in * 3 * VL, *bj = bias + (long)j * 3 * VL;
        int nr = 0;
        for (int s = 0; s < nsteps; s++) {
            for (int b = 0; b < B; b++) {
                if (t0 + s >= lengths[b]) continue;
                xr[nr] = x + s * x_ts + b * x_bs;
                gr[nr] = gx + s * g_ts + b * g_bs + (long)j * 3 * VL;
                if (++nr == BT) {
                    FN(input_tile)(wj, bj, xr, gr, k0, k1, BT, 3);
                    nr = 0;
                }
            }
        }
#define INPUT_TILE(n) FN(input_tile)(wj, bj, xr, gr, k0, k1, n, 3)
        if (nr > 0) GRU_TILES(INPUT_TILE, nr)
#undef INPUT_TILE
    }
}

/* One time step (T = 1) of blocks [first, end) (the `step` kernel kind): each block's input projection right
   before its gate sums, in descending block order when `descending` (see cell_impl.h's step_blocks). */
ATTR static void FN(gru_step_blocks)(const lstm_layer *layer, const lstm_rows *rows, const lstm_chunk *chunk,
                                     const lstm_state *state, lstm_blocks blocks, int descending)
{
    for (int jj = blocks.first; jj < blocks.end; jj++) {
        const int j = descending ? blocks.end - 1 - (jj - blocks.first) : jj;
        const lstm_blocks one = {j, j + 1};
        FN(gru_input_blocks)(layer, rows, chunk, 0, 1, one);
        FN(gru_cell_blocks)(layer, rows, chunk->gx, chunk->g_bs, state, 0, one);
    }
}

/* the GRU kernel table of this instantiation (no projection) */
static const lstm_kernel_table FN(gru_table) = {GRU_TABLE_NAME, VBYTES, BT, FN(gru_input_blocks),
                                                FN(gru_cell_blocks), FN(gru_step_blocks), 0,
                                                FN(gru_finish_blocks)};

#undef GRU_TILES
#undef FN
#undef VL
#undef VEC
