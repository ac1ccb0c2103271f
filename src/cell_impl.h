/* cell_impl.h: the LSTM cell micro-kernels for one (dtype, instruction set) pair.
 *
 * Included several times by cell_kernels.h, each time with these macros defined:
 *   REAL    float or double
 *   IREAL   the signed integer of the same width (int32_t / int64_t)
 *   SFX     suffix of every function name (f32_avx512, f64_sse2, ...)
 *   VBYTES  vector width in bytes (64, 32, 16); one block of hidden units is VBYTES/sizeof(REAL) wide
 *   BT      batch rows per register tile of the gate kernel
 *   ATTR    function attributes selecting the instruction set (target("...")) or nothing
 *
 * Vectors are GCC vector extensions, so one source serves every instruction set: the compiler maps a
 * 64-byte vector to one zmm, two ymm or four xmm registers. No -ffast-math anywhere: NaN propagates.
 *
 * Packed layouts (built by fastlstm/_packing.py, V = VBYTES / sizeof(REAL), Hp = H rounded up to V):
 *   w_hh  (NB, K, 4, V):  w_hh[j, k, g, v] = W_hh[g*H + j*V + v, k]   (gate order i, f, g, o; zero padded)
 *   w_ih  (NB, I, 4, V):  the same for W_ih
 *   gx    per batch row (NB, 4, V): b_ih + b_hh + W_ih x_t, columns in the same packed order
 *   bias  (NB, 4, V):     b_ih + b_hh in packed order
 *   peep  (NB, 3, V):     peephole weights i, f, o in packed order (only read when peepholes is set)
 *   w_hr  (NP, H, V):     w_hr[q, k, v] = W_hr[q*V + v, k]           (projection, zero padded)
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

/* lane-wise (m ? a : b) for a comparison mask m */
ATTR static inline VEC FN(vselect)(IVEC m, VEC a, VEC b) {
    return (VEC)((m & (IVEC)a) | (~m & (IVEC)b));
}

/* clamp to [lo, hi] keeping NaN as NaN (comparisons with NaN are false) */
ATTR static inline VEC FN(vclamp)(VEC x, REAL lo, REAL hi) {
    VEC vlo = FN(vset1)(lo), vhi = FN(vset1)(hi);
    x = FN(vselect)(x < vlo, vlo, x);
    return FN(vselect)(x > vhi, vhi, x);
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
    VEC p;
    if (is_f32) {
        p = FN(vset1)((REAL)(1.0 / 5040.0));
        p = p * r + (REAL)(1.0 / 720.0);
        p = p * r + (REAL)(1.0 / 120.0);
    } else {
        p = FN(vset1)((REAL)(1.0 / 6227020800.0));
        p = p * r + (REAL)(1.0 / 479001600.0);
        p = p * r + (REAL)(1.0 / 39916800.0);
        p = p * r + (REAL)(1.0 / 3628800.0);
        p = p * r + (REAL)(1.0 / 362880.0);
        p = p * r + (REAL)(1.0 / 40320.0);
        p = p * r + (REAL)(1.0 / 5040.0);
        p = p * r + (REAL)(1.0 / 720.0);
        p = p * r + (REAL)(1.0 / 120.0);
    }
    p = p * r + (REAL)(1.0 / 24.0);
    p = p * r + (REAL)(1.0 / 6.0);
    p = p * r + (REAL)0.5;
    p = p * r + (REAL)1.0;
    p = p * r + (REAL)1.0;
    IVEC scale = (n_int + exp_bias) << mant_bits;
    return p * (VEC)scale;
}

ATTR static inline VEC FN(vsigmoid)(VEC x) { return (REAL)1.0 / ((REAL)1.0 + FN(vexp)(-x)); }

ATTR static inline VEC FN(vtanh)(VEC x) {
    return (REAL)1.0 - (REAL)2.0 / ((REAL)1.0 + FN(vexp)(x + x));
}

/* clip a gate pre-activation to [-clip, clip] (clip <= 0 means no clipping) */
ATTR static inline VEC FN(vclip)(VEC x, REAL clip) { return clip > 0 ? FN(vclamp)(x, -clip, clip) : x; }

/* One register tile: gates of one block (4 x V) for nr batch rows, then the cell update in place.
   w (K, 4, V) packed block; gx rows (nr, 4V) with stride ldg (bias included); peep (3, V) or NULL;
   h (nr, K) stride ldh; c (nr, V) stride ldc, updated; hout (nr, V) stride ldo, written.
   Rows r with active[r] == 0 are left untouched. */
ATTR static inline __attribute__((always_inline)) void FN(cell_tile)(
    const REAL *restrict w, const REAL *restrict gx, long ldg,
    const REAL *restrict peep, REAL clip, int input_forget,
    const REAL *restrict h, long ldh, REAL *restrict c, long ldc, REAL *restrict hout, long ldo,
    const unsigned char *active, int K, const int nr)
{
    /* With few rows, one FMA chain per gate would wait on FMA latency: split the sum over k into
       SPLIT interleaved partial sums, added in a fixed order at the end. */
    const int SPLIT = nr == 1 ? 4 : nr == 2 ? 2 : 1;
    VEC acc[4][BT][4];
    for (int r = 0; r < nr; r++)
        for (int g = 0; g < 4; g++) {
            acc[0][r][g] = FN(vload)(gx + r * ldg + g * VL);
            for (int s = 1; s < SPLIT; s++) acc[s][r][g] = FN(vset1)(0);
        }
    int k = 0;
    for (; k + SPLIT <= K; k += SPLIT) {
        for (int s = 0; s < SPLIT; s++) {
            const REAL *wk = w + (long)(k + s) * 4 * VL;
            VEC w0 = FN(vload)(wk), w1 = FN(vload)(wk + VL), w2 = FN(vload)(wk + 2 * VL), w3 = FN(vload)(wk + 3 * VL);
            for (int r = 0; r < nr; r++) {
                REAL hk = h[r * ldh + k + s];
                acc[s][r][0] += w0 * hk;
                acc[s][r][1] += w1 * hk;
                acc[s][r][2] += w2 * hk;
                acc[s][r][3] += w3 * hk;
            }
        }
    }
    for (; k < K; k++) {
        const REAL *wk = w + (long)k * 4 * VL;
        VEC w0 = FN(vload)(wk), w1 = FN(vload)(wk + VL), w2 = FN(vload)(wk + 2 * VL), w3 = FN(vload)(wk + 3 * VL);
        for (int r = 0; r < nr; r++) {
            REAL hk = h[r * ldh + k];
            acc[0][r][0] += w0 * hk;
            acc[0][r][1] += w1 * hk;
            acc[0][r][2] += w2 * hk;
            acc[0][r][3] += w3 * hk;
        }
    }
    for (int r = 0; r < nr; r++)
        for (int g = 0; g < 4; g++) {
            if (SPLIT == 4) acc[0][r][g] = (acc[0][r][g] + acc[1][r][g]) + (acc[2][r][g] + acc[3][r][g]);
            if (SPLIT == 2) acc[0][r][g] = acc[0][r][g] + acc[1][r][g];
        }
    for (int r = 0; r < nr; r++) {
        if (!active[r]) continue;
        VEC c_prev = FN(vload)(c + r * ldc);
        VEC pre_i = acc[0][r][0], pre_f = acc[0][r][1], pre_o = acc[0][r][3];
        if (peep) {
            pre_i += FN(vload)(peep) * c_prev;
            pre_f += FN(vload)(peep + VL) * c_prev;
        }
        VEC gate_i = FN(vsigmoid)(FN(vclip)(pre_i, clip));
        VEC gate_f = input_forget ? (REAL)1.0 - gate_i : FN(vsigmoid)(FN(vclip)(pre_f, clip));
        VEC gate_g = FN(vtanh)(FN(vclip)(acc[0][r][2], clip));
        VEC c_new = gate_f * c_prev + gate_i * gate_g;
        if (peep) pre_o += FN(vload)(peep + 2 * VL) * c_new;
        VEC gate_o = FN(vsigmoid)(FN(vclip)(pre_o, clip));
        FN(vstore)(c + r * ldc, c_new);
        FN(vstore)(hout + r * ldo, gate_o * FN(vtanh)(c_new));
    }
}

/* Blocks [j0, j1) of one time step for all B rows.
   w_hh (NB, K, 4, V); gx (B, NB*4V) stride ldg, from input_blocks; h (B, K) stride ldh; c (B, NB*V) stride ldc;
   hout (B, NB*V) stride ldo; a row b is computed only when t < lengths[b]. */
ATTR static void FN(cell_blocks)(
    const REAL *w_hh, const REAL *gx, long ldg, const REAL *peep, REAL clip, int input_forget,
    const REAL *h, long ldh, REAL *c, long ldc, REAL *hout, long ldo,
    const int *lengths, int t, int B, int K, int j0, int j1)
{
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
#define CELL_TILE(n) FN(cell_tile)(wj, g0, ldg, pj, clip, input_forget, h0, ldh, c0, ldc, o0, ldo, active, K, n)
            switch (nr) {
#if BT >= 4
                case 4: CELL_TILE(4); break;
                case 3: CELL_TILE(3); break;
#endif
                case 2: CELL_TILE(2); break;
                default: CELL_TILE(1); break;
            }
#undef CELL_TILE
        }
    }
}

/* One register tile of the input projection: gx rows = bias + W_ih x for nr rows of one block.
   w (I, 4, V) packed block; bias (4, V); x rows xr[r] (I,); gx rows gr[r] (4V,). */
ATTR static inline __attribute__((always_inline)) void FN(input_tile)(
    const REAL *restrict w, const REAL *restrict bias, const REAL *const *xr, REAL *const *gr, int n_in, const int nr)
{
    VEC acc[BT][4];
    const REAL *xp[BT];
    for (int r = 0; r < nr; r++) {
        xp[r] = xr[r];
        for (int g = 0; g < 4; g++) acc[r][g] = FN(vload)(bias + g * VL);
    }
    for (int k = 0; k < n_in; k++) {
        const REAL *wk = w + (long)k * 4 * VL;
        VEC w0 = FN(vload)(wk), w1 = FN(vload)(wk + VL), w2 = FN(vload)(wk + 2 * VL), w3 = FN(vload)(wk + 3 * VL);
        for (int r = 0; r < nr; r++) {
            REAL xk = xp[r][k];
            acc[r][0] += w0 * xk;
            acc[r][1] += w1 * xk;
            acc[r][2] += w2 * xk;
            acc[r][3] += w3 * xk;
        }
    }
    for (int r = 0; r < nr; r++)
        for (int g = 0; g < 4; g++) FN(vstore)(gr[r] + g * VL, acc[r][g]);
}

/* Input projection of blocks [j0, j1) for the rows (s, b), s in [0, nsteps), b in [0, B), of a chunk of
   time steps starting at t0: gx[s, b] (NB*4V) = bias + W_ih x[s, b]. w_ih (NB, I, 4, V); bias (NB, 4, V);
   x[s, b] at x + s*x_ts + b*x_bs (I,); gx[s, b] at gx + s*g_ts + b*g_bs. Rows past lengths[b] are not read. */
ATTR static void FN(input_blocks)(
    const REAL *w_ih, const REAL *bias, const REAL *x, long x_ts, long x_bs, REAL *gx, long g_ts, long g_bs,
    const int *lengths, int t0, int nsteps, int B, int n_in, int j0, int j1)
{
    const REAL *xr[BT];
    REAL *gr[BT];
    for (int j = j0; j < j1; j++) {
        const REAL *wj = w_ih + (long)j * n_in * 4 * VL;
        const REAL *bj = bias + (long)j * 4 * VL;
        int nr = 0;
        for (int s = 0; s < nsteps; s++) {
            for (int b = 0; b < B; b++) {
                if (t0 + s >= lengths[b]) continue;
                xr[nr] = x + s * x_ts + b * x_bs;
                gr[nr] = gx + s * g_ts + b * g_bs + (long)j * 4 * VL;
                if (++nr == BT) {
                    FN(input_tile)(wj, bj, xr, gr, n_in, BT);
                    nr = 0;
                }
            }
        }
        switch (nr) {
#if BT >= 4
            case 3: FN(input_tile)(wj, bj, xr, gr, n_in, 3); break;
#endif
#if BT >= 3
            case 2: FN(input_tile)(wj, bj, xr, gr, n_in, 2); break;
#endif
            case 1: FN(input_tile)(wj, bj, xr, gr, n_in, 1); break;
            default: break;
        }
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

/* Projection blocks [q0, q1): w_hr (NP, Kc, V); hc (B, Kc) stride ldc; hout (B, NP*V) stride ldo.
   Rows with t >= lengths[b] are skipped (the caller keeps their state). */
ATTR static void FN(proj_blocks)(
    const REAL *w_hr, const REAL *hc, long ldc, REAL *hout, long ldo,
    const int *lengths, int t, int B, int Kc, int q0, int q1)
{
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

#undef FN
#undef VL
#undef VEC
#undef IVEC
