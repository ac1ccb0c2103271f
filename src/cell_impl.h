/* cell_impl.h: the LSTM cell micro-kernels for one (dtype, instruction set) pair.
 *
 * Included several times by cell_kernels.h, each time with these macros defined:
 *   REAL    float or double
 *   IREAL   the signed integer of the same width (int32_t / int64_t)
 *   SFX     suffix of every function name (f32_avx512, f64_base, ...)
 *   VBYTES  vector width in bytes (64, 32, 16); one block of hidden units is VBYTES/sizeof(REAL) wide
 *   LANES   VBYTES / sizeof(REAL), as a number the preprocessor can test
 *   BT      batch rows per register tile of the gate kernel
 *   ATTR    function attributes selecting the instruction set (target("...")) or nothing
 *   TABLE_NAME  the name of the kernel table this instantiation defines ("lstm/f32/avx512", ...)
 * It defines the kernels of LSTM_KERNEL_KINDS (kernel_api.h) and the table FN(lstm_table) holding them.
 *
 * Vectors are GCC vector extensions (GCC and clang), so one source serves every instruction set: the compiler
 * maps a 64-byte vector to one zmm, two ymm or four xmm (or NEON) registers. No -ffast-math anywhere: NaN
 * propagates.
 *
 * Packed layouts (built by fastlstm/_packing.py, V = VBYTES / sizeof(REAL), Hp = H rounded up to V):
 *   w_hh  (NB, K, 4, V):  w_hh[j, k, g, v] = W_hh[g*H + j*V + v, k]   (gate order i, f, g, o; zero padded)
 *   w_ih  (NB, I, 4, V):  the same for W_ih
 *   gx    per batch row (NB, 4, V): b_ih + b_hh + W_ih x_t, columns in the same packed order
 *   bias  (NB, 4, V):     b_ih + b_hh in packed order
 *   peep  (NB, 3, V):     peephole weights i, f, o in packed order (only read when peepholes is set)
 *   w_hr  (NP, H, V):     w_hr[q, k, v] = W_hr[q*V + v, k]           (projection, zero padded)
 * A narrow last block (0 < H mod V <= V/2, see _packing.narrow_last_block) holds only V/2 units, with two
 * gates per vector: w_hh[NB-1] and w_ih[NB-1] start with (K, 2, V), vector 0 = [i | f] and vector 1 = [g | o]
 * (V/2 lanes each); bias and gx use the first 2V of their slot the same way, peep the first 2V as
 * [p_i | p_f], [0 | p_o]. It costs half the loads and FMAs of a full block with the same per-lane arithmetic.
 */

#define FN(name) CAT3(name, _, SFX)
#define VL (VBYTES / (int)sizeof(REAL))
#define VEC FN(vec)
#define IVEC FN(ivec)

typedef REAL VEC __attribute__((vector_size(VBYTES), aligned(sizeof(REAL))));
typedef IREAL IVEC __attribute__((vector_size(VBYTES), aligned(sizeof(REAL))));

ATTR static inline VEC FN(vload)(const REAL *p) { return *(const VEC *)p; }
ATTR static inline void FN(vstore)(REAL *p, VEC v) { *(VEC *)p = v; }
ATTR static inline VEC FN(vset1)(REAL s) { VEC z = {0}; return z + s; }

/* halves of a vector: [a | b] -> [b | a]; the lower half loaded into both; the lower half stored;
   all-ones in the lanes of the lower half */
#if LANES == 16
#define SWAP_HALVES_INDICES 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7
#elif LANES == 8
#define SWAP_HALVES_INDICES 4, 5, 6, 7, 0, 1, 2, 3
#elif LANES == 4
#define SWAP_HALVES_INDICES 2, 3, 0, 1
#else
#define SWAP_HALVES_INDICES 1, 0
#endif
ATTR static inline VEC FN(vswap_halves)(VEC v) { return __builtin_shufflevector(v, v, SWAP_HALVES_INDICES); }
#undef SWAP_HALVES_INDICES
ATTR static inline VEC FN(vload_half_dup)(const REAL *p) {
    VEC v;
    memcpy(&v, p, VBYTES / 2);
    memcpy((char *)&v + VBYTES / 2, p, VBYTES / 2);
    return v;
}
ATTR static inline void FN(vstore_half)(REAL *p, VEC v) { memcpy(p, &v, VBYTES / 2); }
ATTR static inline IVEC FN(vlower_mask)(void) {
    IVEC m;
    for (int i = 0; i < VL; i++) m[i] = i < VL / 2 ? -1 : 0;
    return m;
}

/* lane-wise (m ? a : b) for a comparison mask m */
ATTR static inline VEC FN(vselect)(IVEC m, VEC a, VEC b) {
    return (VEC)((m & (IVEC)a) | (~m & (IVEC)b));
}

/* lane-wise (a > b ? a : b) and (a < b ? a : b): b when either is NaN. On x86 one max/min instruction,
   whose NaN rule is exactly this (the second operand is returned). */
#ifdef FASTLSTM_X86
#if VBYTES == 64
#define X86_PAIRWISE(op, a, b) (sizeof(REAL) == 4 ? (VEC)_mm512_##op##_ps((__m512)(a), (__m512)(b)) \
                                                   : (VEC)_mm512_##op##_pd((__m512d)(a), (__m512d)(b)))
#elif VBYTES == 32
#define X86_PAIRWISE(op, a, b) (sizeof(REAL) == 4 ? (VEC)_mm256_##op##_ps((__m256)(a), (__m256)(b)) \
                                                   : (VEC)_mm256_##op##_pd((__m256d)(a), (__m256d)(b)))
#else
#define X86_PAIRWISE(op, a, b) (sizeof(REAL) == 4 ? (VEC)_mm_##op##_ps((__m128)(a), (__m128)(b)) \
                                                   : (VEC)_mm_##op##_pd((__m128d)(a), (__m128d)(b)))
#endif
ATTR static inline VEC FN(vmax_or_second)(VEC a, VEC b) { return X86_PAIRWISE(max, a, b); }
ATTR static inline VEC FN(vmin_or_second)(VEC a, VEC b) { return X86_PAIRWISE(min, a, b); }
#undef X86_PAIRWISE
#else
ATTR static inline VEC FN(vmax_or_second)(VEC a, VEC b) { return FN(vselect)(a > b, a, b); }
ATTR static inline VEC FN(vmin_or_second)(VEC a, VEC b) { return FN(vselect)(a < b, a, b); }
#endif

/* clamp to [lo, hi] keeping NaN as NaN */
ATTR static inline VEC FN(vclamp)(VEC x, REAL lo, REAL hi) {
    return FN(vmin_or_second)(FN(vset1)(hi), FN(vmax_or_second)(FN(vset1)(lo), x));
}

/* exp(x): x = n ln2 + r, |r| <= ln2/2, exp(r) by its Taylor polynomial, 2^n built in the exponent bits.
   float: degree 7 (truncation < 1e-8 relative); double: degree 13 (< 1e-17). */
ATTR static inline VEC FN(vexp)(VEC x) {
    const int is_f32 = sizeof(REAL) == 4;
    const REAL lo = is_f32 ? (REAL)-87.0 : (REAL)-708.0;
    const REAL hi = is_f32 ? (REAL)88.0 : (REAL)709.0;
    const REAL magic = is_f32 ? (REAL)12582912.0 : (REAL)6755399441055744.0; /* 1.5 * 2^mantissa_bits */
    const REAL ln2_hi = is_f32 ? (REAL)0.693145751953125 : (REAL)0.6931471803691238;
    const REAL ln2_lo = is_f32 ? (REAL)1.428606765330187e-06 : (REAL)1.9082149292705877e-10;
    const int mant_bits = is_f32 ? 23 : 52;
    const IREAL exp_bias = is_f32 ? 127 : 1023;
    x = FN(vclamp)(x, lo, hi);
    VEC shifted = x * (REAL)1.4426950408889634 + magic;   /* n sits in the low mantissa bits */
    VEC n = shifted - magic;
    IVEC n_int = (IVEC)shifted - (IVEC)FN(vset1)(magic);
    VEC r = x - n * ln2_hi;
    r = r - n * ln2_lo;
    /* the polynomial in Estrin's scheme: pairs c_2i + c_2i+1 r, combined with r^2, r^4 (and r^8), a chain of
       3 (5) dependent operations after r instead of Horner's 7 (13) */
    VEC r2 = r * r, r4 = r2 * r2, p;
    VEC p01 = r + (REAL)1.0, p23 = r * (REAL)(1.0 / 6.0) + (REAL)0.5;
    VEC p45 = r * (REAL)(1.0 / 120.0) + (REAL)(1.0 / 24.0), p67 = r * (REAL)(1.0 / 5040.0) + (REAL)(1.0 / 720.0);
    VEC p0_3 = p23 * r2 + p01, p4_7 = p67 * r2 + p45;
    if (is_f32) {
        p = p4_7 * r4 + p0_3;
    } else {
        VEC p89 = r * (REAL)(1.0 / 362880.0) + (REAL)(1.0 / 40320.0);
        VEC p10_11 = r * (REAL)(1.0 / 39916800.0) + (REAL)(1.0 / 3628800.0);
        VEC p12_13 = r * (REAL)(1.0 / 6227020800.0) + (REAL)(1.0 / 479001600.0);
        VEC p8_11 = p10_11 * r2 + p89;
        VEC p8_13 = p12_13 * r4 + p8_11;
        p = (p8_13 * r4 + p4_7) * r4 + p0_3;
    }
    IVEC scale = (n_int + exp_bias) << mant_bits;
    return p * (VEC)scale;
}

ATTR static inline VEC FN(vsigmoid)(VEC x) { return (REAL)1.0 / ((REAL)1.0 + FN(vexp)(-x)); }

ATTR static inline VEC FN(vtanh)(VEC x) {
    return (REAL)1.0 - (REAL)2.0 / ((REAL)1.0 + FN(vexp)(x + x));
}

/* clip a gate pre-activation to [-clip, clip] (clip <= 0 means no clipping) */
ATTR static inline VEC FN(vclip)(VEC x, REAL clip) { return clip > 0 ? FN(vclamp)(x, -clip, clip) : x; }

/* Gate pre-activations of one block (ng vectors: 4 for a full block, 2 for a narrow one) for nr batch rows.
   w (K, ng, V) packed block; gx rows (nr, ng*V) with stride ldg (bias included); h (nr, K) stride ldh;
   pre (nr, ng) vectors, written. */
ATTR static inline __attribute__((always_inline)) void FN(gate_sums)(
    const REAL *restrict w, const REAL *restrict gx, long ldg, const REAL *restrict h, long ldh,
    VEC pre[BT][4], int K, const int nr, const int ng)
{
    /* With few rows, one FMA chain per gate would wait on FMA latency: split the sum over k into
       SPLIT interleaved partial sums, added in a fixed order at the end. */
    const int SPLIT = nr == 1 ? 4 : nr == 2 ? 2 : 1;
    VEC acc[4][BT][4];
    for (int r = 0; r < nr; r++)
        for (int g = 0; g < ng; g++) {
            acc[0][r][g] = FN(vload)(gx + r * ldg + g * VL);
            for (int s = 1; s < SPLIT; s++) acc[s][r][g] = FN(vset1)(0);
        }
    int k = 0;
    for (; k + SPLIT <= K; k += SPLIT) {
        for (int s = 0; s < SPLIT; s++) {
            const REAL *wk = w + (long)(k + s) * ng * VL;
            VEC wv[4];
            for (int g = 0; g < ng; g++) wv[g] = FN(vload)(wk + g * VL);
            for (int r = 0; r < nr; r++) {
                REAL hk = h[r * ldh + k + s];
                for (int g = 0; g < ng; g++) acc[s][r][g] += wv[g] * hk;
            }
        }
    }
    for (; k < K; k++) {
        const REAL *wk = w + (long)k * ng * VL;
        VEC wv[4];
        for (int g = 0; g < ng; g++) wv[g] = FN(vload)(wk + g * VL);
        for (int r = 0; r < nr; r++) {
            REAL hk = h[r * ldh + k];
            for (int g = 0; g < ng; g++) acc[0][r][g] += wv[g] * hk;
        }
    }
    for (int r = 0; r < nr; r++)
        for (int g = 0; g < ng; g++) {
            if (SPLIT == 4) pre[r][g] = (acc[0][r][g] + acc[1][r][g]) + (acc[2][r][g] + acc[3][r][g]);
            else if (SPLIT == 2) pre[r][g] = acc[0][r][g] + acc[1][r][g];
            else pre[r][g] = acc[0][r][g];
        }
}

/* The cell update of one block for one batch row, from its gate pre-activations pre (ng vectors).
   peep (3, V), or (2, V) when narrow, or NULL; c (V,) updated; hout (V,) written (V/2 lanes of each when
   narrow). */
ATTR static inline __attribute__((always_inline)) void FN(cell_update)(
    const VEC *pre, const REAL *restrict peep, REAL clip, int input_forget, REAL *restrict c,
    REAL *restrict hout, const int ng)
{
    if (ng == 4) {
        VEC c_prev = FN(vload)(c);
        VEC pre_i = pre[0], pre_f = pre[1], pre_o = pre[3];
        if (peep) {
            pre_i += FN(vload)(peep) * c_prev;
            pre_f += FN(vload)(peep + VL) * c_prev;
        }
        VEC gate_i = FN(vsigmoid)(FN(vclip)(pre_i, clip));
        VEC gate_f = input_forget ? (REAL)1.0 - gate_i : FN(vsigmoid)(FN(vclip)(pre_f, clip));
        VEC gate_g = FN(vtanh)(FN(vclip)(pre[2], clip));
        VEC c_new = gate_f * c_prev + gate_i * gate_g;
        if (peep) pre_o += FN(vload)(peep + 2 * VL) * c_new;
        VEC gate_o = FN(vsigmoid)(FN(vclip)(pre_o, clip));
        FN(vstore)(c, c_new);
        FN(vstore)(hout, gate_o * FN(vtanh)(c_new));
    } else {
        /* narrow: vector 0 = [i | f], vector 1 = [g | o]; the results live in the lower lanes. The same
           operations per lane as above: tanh(x) = 1 - 2/(1 + exp(x + x)), sigmoid(x) = 1/(1 + exp(-x)). */
        const IVEC lower = FN(vlower_mask)();
        VEC c_prev = FN(vload_half_dup)(c);
        VEC pre_if = pre[0], pre_go = pre[1];
        if (peep) pre_if += FN(vload)(peep) * c_prev;
        VEC gates_if = FN(vsigmoid)(FN(vclip)(pre_if, clip));
        VEC gate_f = input_forget ? (REAL)1.0 - gates_if : FN(vswap_halves)(gates_if);
        VEC x_go = FN(vclip)(pre_go, clip);
        VEC e = FN(vexp)(FN(vselect)(lower, x_go + x_go, -x_go));
        VEC ratio = FN(vselect)(lower, FN(vset1)((REAL)2.0), FN(vset1)((REAL)1.0)) / ((REAL)1.0 + e);
        VEC gates_go = FN(vselect)(lower, (REAL)1.0 - ratio, ratio);     /* [tanh(g) | sigmoid(o)] */
        VEC c_new = gate_f * c_prev + gates_if * gates_go;
        if (peep) gates_go = FN(vsigmoid)(FN(vclip)(pre_go + FN(vload)(peep + VL) * FN(vswap_halves)(c_new), clip));
        FN(vstore_half)(c, c_new);
        FN(vstore_half)(hout, FN(vswap_halves)(gates_go) * FN(vtanh)(c_new));
    }
}

/* One register tile: gate_sums, then the cell update in place, for nr rows of one block (ng gate vectors).
   peep, c (nr, V) stride ldc and hout (nr, V) stride ldo as in cell_update; rows r with active[r] == 0 are
   left untouched. */
ATTR static inline __attribute__((always_inline)) void FN(cell_tile)(
    const REAL *restrict w, const REAL *restrict gx, long ldg,
    const REAL *restrict peep, REAL clip, int input_forget,
    const REAL *restrict h, long ldh, REAL *restrict c, long ldc, REAL *restrict hout, long ldo,
    const unsigned char *active, int K, const int nr, const int ng)
{
    VEC pre[BT][4];
    FN(gate_sums)(w, gx, ldg, h, ldh, pre, K, nr, ng);
    for (int r = 0; r < nr; r++)
        if (active[r]) FN(cell_update)(pre[r], peep, clip, input_forget, c + r * ldc, hout + r * ldo, ng);
}

/* Blocks [first, end) of one time step t for rows.count rows (the `cell` kernel kind, kernel_api.h).
   w_hh (NB, K, 4, V); gx (B, NB*4V) stride ldg, from the input kernel; state: h (B, K), c (B, NB*V),
   hout (B, NB*V); a row b is computed only when t < lengths[b]. */
ATTR static void FN(cell_blocks)(const lstm_layer *layer, const lstm_rows *rows, const void *gx_any, long ldg,
                                 const lstm_state *state, int t, lstm_blocks blocks)
{
    const REAL *w_hh = (const REAL *)layer->w_hh, *gx = (const REAL *)gx_any, *peep = (const REAL *)layer->peep;
    const REAL *h = (const REAL *)state->h;
    REAL *c = (REAL *)state->c, *hout = (REAL *)state->hout;
    const long ldh = state->ldh, ldc = state->ldc, ldo = state->ldo;
    const REAL clip = (REAL)layer->clip;
    const int input_forget = layer->input_forget, K = layer->out_size, narrow = layer->narrow;
    const int *lengths = rows->lengths, B = rows->count, j0 = blocks.first, j1 = blocks.end;
    unsigned char active[BT];
    /* Alternate the order of the blocks from step to step: when a thread's weights exceed its L2, the
       blocks used last at step t (still cached) are then the first read at step t + 1. */
    const int descending = t & 1;
    for (int jj = j0; jj < j1; jj++) {
        const int j = descending ? j1 - 1 - (jj - j0) : jj;
        const REAL *wj = w_hh + (long)j * K * 4 * VL;
        const REAL *pj = peep ? peep + (long)j * 3 * VL : 0;
        for (int b0 = 0; b0 < B; b0 += BT) {
            int nr = B - b0 < BT ? B - b0 : BT, any = 0;
            for (int r = 0; r < nr; r++) any |= active[r] = t < lengths[b0 + r];
            if (!any) continue;
            const REAL *g0 = gx + b0 * ldg + (long)j * 4 * VL;
            const REAL *h0 = h + b0 * ldh;
            REAL *c0 = c + b0 * ldc + (long)j * VL, *o0 = hout + b0 * ldo + (long)j * VL;
#define CELL_TILE(n, ng) FN(cell_tile)(wj, g0, ldg, pj, clip, input_forget, h0, ldh, c0, ldc, o0, ldo, active, K, n, ng)
#define CELL_TILES(ng)                         \
            switch (nr) {                      \
                CELL_TILE_CASES_BT4(ng)        \
                case 2: CELL_TILE(2, ng); break; \
                default: CELL_TILE(1, ng); break; \
            }
#if BT >= 4
#define CELL_TILE_CASES_BT4(ng) case 4: CELL_TILE(4, ng); break; case 3: CELL_TILE(3, ng); break;
#else
#define CELL_TILE_CASES_BT4(ng)
#endif
            if (j == narrow) {
                CELL_TILES(2)
            } else {
                CELL_TILES(4)
            }
#undef CELL_TILE_CASES_BT4
#undef CELL_TILES
#undef CELL_TILE
        }
    }
}

/* One register tile of the input projection: gx rows = bias + W_ih x for nr rows of one block (ng gate
   vectors: 4, or 2 for a narrow block). w (I, ng, V) packed block; bias (ng, V); x rows xr[r] (I,);
   gx rows gr[r] (ng*V,). */
ATTR static inline __attribute__((always_inline)) void FN(input_tile)(
    const REAL *restrict w, const REAL *restrict bias, const REAL *const *xr, REAL *const *gr, int n_in,
    const int nr, const int ng)
{
    VEC acc[BT][4];
    const REAL *xp[BT];
    for (int r = 0; r < nr; r++) {
        xp[r] = xr[r];
        for (int g = 0; g < ng; g++) acc[r][g] = FN(vload)(bias + g * VL);
    }
    for (int k = 0; k < n_in; k++) {
        const REAL *wk = w + (long)k * ng * VL;
        VEC wv[4];
        for (int g = 0; g < ng; g++) wv[g] = FN(vload)(wk + g * VL);
        for (int r = 0; r < nr; r++) {
            REAL xk = xp[r][k];
            for (int g = 0; g < ng; g++) acc[r][g] += wv[g] * xk;
        }
    }
    for (int r = 0; r < nr; r++)
        for (int g = 0; g < ng; g++) FN(vstore)(gr[r] + g * VL, acc[r][g]);
}

/* Input projection of blocks [first, end) (the `input` kernel kind, kernel_api.h) for the rows (s, b),
   s in [0, nsteps), b in [0, rows.count), of a chunk of time steps starting at t0: gx[s, b] (NB*4V) =
   bias + W_ih x[s, b]. w_ih (NB, I, 4, V); bias (NB, 4, V); x[s, b] (I,) and gx[s, b] where chunk says.
   Rows past lengths[b] are not read. */
ATTR static void FN(input_blocks)(const lstm_layer *layer, const lstm_rows *rows, const lstm_chunk *chunk, int t0,
                                  int nsteps, lstm_blocks blocks)
{
    const REAL *w_ih = (const REAL *)layer->w_ih, *bias = (const REAL *)layer->bias, *x = (const REAL *)chunk->x;
    REAL *gx = (REAL *)chunk->gx;
    const long x_ts = chunk->x_ts, x_bs = chunk->x_bs, g_ts = chunk->g_ts, g_bs = chunk->g_bs;
    const int n_in = layer->input_size, narrow = layer->narrow, B = rows->count, j0 = blocks.first, j1 = blocks.end;
    const int *lengths = rows->lengths;
    const REAL *xr[BT];
    REAL *gr[BT];
    for (int j = j0; j < j1; j++) {
        const REAL *wj = w_ih + (long)j * n_in * 4 * VL;
        const REAL *bj = bias + (long)j * 4 * VL;
        const int is_narrow = j == narrow;
#define INPUT_TILE(n) \
    (is_narrow ? FN(input_tile)(wj, bj, xr, gr, n_in, n, 2) : FN(input_tile)(wj, bj, xr, gr, n_in, n, 4))
        int nr = 0;
        for (int s = 0; s < nsteps; s++) {
            for (int b = 0; b < B; b++) {
                if (t0 + s >= lengths[b]) continue;
                xr[nr] = x + s * x_ts + b * x_bs;
                gr[nr] = gx + s * g_ts + b * g_bs + (long)j * 4 * VL;
                if (++nr == BT) {
                    INPUT_TILE(BT);
                    nr = 0;
                }
            }
        }
        switch (nr) {
#if BT >= 4
            case 3: INPUT_TILE(3); break;
#endif
#if BT >= 3
            case 2: INPUT_TILE(2); break;
#endif
            case 1: INPUT_TILE(1); break;
            default: break;
        }
#undef INPUT_TILE
    }
}

/* One time step (T = 1) of blocks [first, end) (the `step` kernel kind, kernel_api.h): each block's input
   projection followed by its gate sums and cell update, in descending block order when `descending`. A block's
   input and recurrent weights are read one after the other, so when a thread's weights exceed its L2 and the
   caller alternates the order from step to step, the blocks read last (both their matrices) are still cached
   when the next step starts with them. chunk: the step's x rows (B, I) stride x_bs and a gx scratch (B, NB*4V)
   stride g_bs; the rest as cell_blocks at t = 0. */
ATTR static void FN(step_blocks)(const lstm_layer *layer, const lstm_rows *rows, const lstm_chunk *chunk,
                                 const lstm_state *state, lstm_blocks blocks, int descending)
{
    for (int jj = blocks.first; jj < blocks.end; jj++) {
        const int j = descending ? blocks.end - 1 - (jj - blocks.first) : jj;
        const lstm_blocks one = {j, j + 1};
        FN(input_blocks)(layer, rows, chunk, 0, 1, one);
        FN(cell_blocks)(layer, rows, chunk->gx, chunk->g_bs, state, 0, one);
    }
}

/* One projection tile: hout[r, :V] = W_hr block (Kc, V) applied to hc rows (nr, Kc), stride ldc. */
ATTR static inline __attribute__((always_inline)) void FN(proj_tile)(
    const REAL *restrict w, const REAL *restrict hc, long ldc, REAL *restrict hout, long ldo, int Kc, const int nr)
{
    VEC acc[4 * BT];
    for (int r = 0; r < nr; r++) acc[r] = FN(vset1)(0);
    for (int k = 0; k < Kc; k++) {
        VEC wk = FN(vload)(w + (long)k * VL);
        for (int r = 0; r < nr; r++) acc[r] += wk * hc[r * ldc + k];
    }
    for (int r = 0; r < nr; r++) FN(vstore)(hout + r * ldo, acc[r]);
}

/* Projection blocks [first, end) (the `proj` kernel kind, kernel_api.h): w_hr (NP, H, V); hc (B, H) stride ldc;
   hout (B, NP*V) stride ldo. Rows with t >= lengths[b] are skipped (the caller keeps their state). */
ATTR static void FN(proj_blocks)(const lstm_layer *layer, const lstm_rows *rows, const void *hc_any, long ldc,
                                 void *hout_any, long ldo, int t, lstm_blocks blocks)
{
    const REAL *w_hr = (const REAL *)layer->w_hr, *hc = (const REAL *)hc_any;
    REAL *hout = (REAL *)hout_any;
    const int Kc = layer->hidden_size, B = rows->count, q0 = blocks.first, q1 = blocks.end;
    const int *lengths = rows->lengths;
    for (int q = q0; q < q1; q++) {
        const REAL *wq = w_hr + (long)q * Kc * VL;
        for (int b = 0; b < B; b++) {
            if (t >= lengths[b]) continue;
            /* a run of consecutive active rows, at most 4*BT long, shares one pass over wq */
            int nr = 1;
            while (nr < 4 * BT && b + nr < B && t < lengths[b + nr]) nr++;
            const REAL *hb = hc + b * ldc;
            REAL *ob = hout + b * ldo + (long)q * VL;
#define PROJ_TILE(n) FN(proj_tile)(wq, hb, ldc, ob, ldo, Kc, n)
            switch (nr) {
#if BT >= 4
                case 16: PROJ_TILE(16); break;
                case 15: PROJ_TILE(15); break;
                case 14: PROJ_TILE(14); break;
                case 13: PROJ_TILE(13); break;
                case 12: PROJ_TILE(12); break;
                case 11: PROJ_TILE(11); break;
                case 10: PROJ_TILE(10); break;
                case 9: PROJ_TILE(9); break;
#endif
                case 8: PROJ_TILE(8); break;
                case 7: PROJ_TILE(7); break;
                case 6: PROJ_TILE(6); break;
                case 5: PROJ_TILE(5); break;
                case 4: PROJ_TILE(4); break;
                case 3: PROJ_TILE(3); break;
                case 2: PROJ_TILE(2); break;
                default: PROJ_TILE(1); break;
            }
#undef PROJ_TILE
            b += nr - 1;
        }
    }
}

/* the kernel table of this instantiation (kernel_api.h) */
static const lstm_kernel_table FN(lstm_table) = {TABLE_NAME, VBYTES, BT, FN(input_blocks), FN(cell_blocks),
                                                 FN(step_blocks), FN(proj_blocks)};

#undef FN
#undef VL
#undef VEC
#undef IVEC
