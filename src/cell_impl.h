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
 *   TABLE_NAME  the name of the kernel table this instantiation defines ("lstm/f32/avx512", ...); left undefined
 *               by quant_impl.h, which uses only the float helpers (no table)
 * It defines the kernels of LSTM_KERNEL_KINDS (kernel_api.h) and the table FN(lstm_table) holding them.
 *
 * Vectors are GCC vector extensions (GCC and clang), so one source serves every instruction set: the compiler
 * maps a 64-byte vector to one zmm, two ymm or four xmm (or NEON) registers. No -ffast-math anywhere: NaN
 * propagates. Built with -ffp-contract=off: every fused multiply-add is written out (vfma), so that an element
 * rounds the same in every context the compiler inlines it into (a tile of any row count, a pair of blocks).
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
/* consecutive active rows the projection kernel runs through one pass over a block of W_hr */
#if BT >= 3
#define PROJ_ROWS 16
#else
#define PROJ_ROWS 8
#endif
#define VEC FN(vec)
#define IVEC FN(ivec)

typedef REAL VEC __attribute__((vector_size(VBYTES), aligned(sizeof(REAL))));
typedef IREAL IVEC __attribute__((vector_size(VBYTES), aligned(sizeof(REAL))));

ATTR static inline VEC FN(vload)(const REAL *p) { return *(const VEC *)p; }
ATTR static inline void FN(vstore)(REAL *p, VEC v) { *(VEC *)p = v; }
/* every lane s: an initializer, so that a scalar read from memory becomes one broadcast load (no arithmetic
   uop: on Intel, `zero + s` took an add and a shuffle on the FMA ports for each row of each k) */
#if LANES == 16
#define SPLAT_LANES(s) {s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s}
#elif LANES == 8
#define SPLAT_LANES(s) {s, s, s, s, s, s, s, s}
#elif LANES == 4
#define SPLAT_LANES(s) {s, s, s, s}
#else
#define SPLAT_LANES(s) {s, s}
#endif
ATTR static inline VEC FN(vset1)(REAL s) { VEC v = SPLAT_LANES(s); return v; }
#undef SPLAT_LANES

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

/* a * b + c for the dot products, as one fused multiply-add wherever the instruction set has one, written out so
   that every path summing an element (a tile of any row count, a pair of blocks) rounds it the same way rather
   than wherever the compiler chooses to contract a * b + c. (The x86 baseline has no FMA, so nothing can be
   contracted there.) With CELL_NO_FMA defined, a multiply then an add on every instruction set: quant_impl.h
   instantiates these helpers so, for the same float bits everywhere. */
#if defined(CELL_NO_FMA)
#define VFMA_(a, b, c) ((a) * (b) + (c))
#elif defined(FASTLSTM_X86) && VBYTES == 64
#define VFMA_(a, b, c) (sizeof(REAL) == 4 ? (VEC)_mm512_fmadd_ps((__m512)(a), (__m512)(b), (__m512)(c)) \
                                          : (VEC)_mm512_fmadd_pd((__m512d)(a), (__m512d)(b), (__m512d)(c)))
#elif defined(FASTLSTM_X86) && VBYTES == 32
#define VFMA_(a, b, c) (sizeof(REAL) == 4 ? (VEC)_mm256_fmadd_ps((__m256)(a), (__m256)(b), (__m256)(c)) \
                                          : (VEC)_mm256_fmadd_pd((__m256d)(a), (__m256d)(b), (__m256d)(c)))
#elif defined(__aarch64__) && VBYTES == 16
#define VFMA_(a, b, c) (sizeof(REAL) == 4 ? (VEC)vfmaq_f32((float32x4_t)(c), (float32x4_t)(a), (float32x4_t)(b)) \
                                          : (VEC)vfmaq_f64((float64x2_t)(c), (float64x2_t)(a), (float64x2_t)(b)))
#else
#define VFMA_(a, b, c) ((a) * (b) + (c))
#endif
ATTR static inline VEC FN(vfma)(VEC a, VEC b, VEC c) { return VFMA_(a, b, c); }
#undef VFMA_

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
#define S(c) FN(vset1)((REAL)(c))
    VEC shifted = FN(vfma)(x, S(1.4426950408889634), S(magic));   /* n sits in the low mantissa bits */
    VEC n = shifted - magic;
    IVEC n_int = (IVEC)shifted - (IVEC)FN(vset1)(magic);
    VEC r = FN(vfma)(n, S(-ln2_hi), x);
    r = FN(vfma)(n, S(-ln2_lo), r);
    /* the polynomial in Estrin's scheme: pairs c_2i + c_2i+1 r, combined with r^2, r^4 (and r^8), a chain of
       3 (5) dependent operations after r instead of Horner's 7 (13) */
    VEC r2 = r * r, r4 = r2 * r2, p;
    VEC p01 = r + (REAL)1.0, p23 = FN(vfma)(r, S(1.0 / 6.0), S(0.5));
    VEC p45 = FN(vfma)(r, S(1.0 / 120.0), S(1.0 / 24.0)), p67 = FN(vfma)(r, S(1.0 / 5040.0), S(1.0 / 720.0));
    VEC p0_3 = FN(vfma)(p23, r2, p01), p4_7 = FN(vfma)(p67, r2, p45);
    if (is_f32) {
        p = FN(vfma)(p4_7, r4, p0_3);
    } else {
        VEC p89 = FN(vfma)(r, S(1.0 / 362880.0), S(1.0 / 40320.0));
        VEC p10_11 = FN(vfma)(r, S(1.0 / 39916800.0), S(1.0 / 3628800.0));
        VEC p12_13 = FN(vfma)(r, S(1.0 / 6227020800.0), S(1.0 / 479001600.0));
        VEC p8_11 = FN(vfma)(p10_11, r2, p89);
        VEC p8_13 = FN(vfma)(p12_13, r4, p8_11);
        p = FN(vfma)(FN(vfma)(p8_13, r4, p4_7), r4, p0_3);
    }
    IVEC scale = (n_int + exp_bias) << mant_bits;
    return p * (VEC)scale;
#undef S
}

ATTR static inline VEC FN(vsigmoid)(VEC x) { return (REAL)1.0 / ((REAL)1.0 + FN(vexp)(-x)); }

ATTR static inline VEC FN(vtanh)(VEC x) {
    return (REAL)1.0 - (REAL)2.0 / ((REAL)1.0 + FN(vexp)(x + x));
}

/* clip a gate pre-activation to [-clip, clip] (clip <= 0 means no clipping) */
ATTR static inline VEC FN(vclip)(VEC x, REAL clip) { return clip > 0 ? FN(vclamp)(x, -clip, clip) : x; }

/* Gate pre-activations of one block (ng vectors: 4 for a full block, 2 for a narrow one) for nr batch rows.
   Each (row, gate) is one chain of FMAs over k in order, the same for every row whatever the tile's row count or
   the blocks beside it, so that a row's result does not depend on the rows beside it (a sequence gives the
   same bits alone, in any batch and padded with lengths). From 2 rows a tile has enough independent chains to
   cover the FMA latency; one row pairs two blocks (gate_sums_pair).
   w (K, ng, V) packed block; gx rows (nr, ng*V) with stride ldg (bias included); h (nr, K) stride ldh;
   pre (nr, ng) vectors, written. */
ATTR static inline __attribute__((always_inline)) void FN(gate_sums)(
    const REAL *restrict w, const REAL *restrict gx, long ldg, const REAL *restrict h, long ldh,
    VEC pre[BT][4], int K, const int nr, const int ng)
{
    VEC acc[BT][4];
    for (int r = 0; r < nr; r++)
        for (int g = 0; g < ng; g++) acc[r][g] = FN(vload)(gx + r * ldg + g * VL);
    for (int k = 0; k < K; k++) {
        const REAL *wk = w + (long)k * ng * VL;
        VEC wv[4];
        for (int g = 0; g < ng; g++) wv[g] = FN(vload)(wk + g * VL);
        for (int r = 0; r < nr; r++) {
            REAL hk = h[r * ldh + k];
            for (int g = 0; g < ng; g++) acc[r][g] = FN(vfma)(wv[g], FN(vset1)(hk), acc[r][g]);
        }
    }
    for (int r = 0; r < nr; r++)
        for (int g = 0; g < ng; g++) pre[r][g] = acc[r][g];
}

/* gate_sums of two blocks (ng1 and ng2 gate vectors) for one row: twice the independent chains, each summed
   exactly as gate_sums sums it. w1 (K, ng1, V), w2 (K, ng2, V); gx1, gx2 their gate rows; h (K,);
   pre1, pre2 written. */
ATTR static inline __attribute__((always_inline)) void FN(gate_sums_pair)(
    const REAL *restrict w1, const REAL *restrict w2, const REAL *restrict gx1, const REAL *restrict gx2,
    const REAL *restrict h, VEC pre1[4], VEC pre2[4], int K, const int ng1, const int ng2)
{
    VEC acc1[4], acc2[4];
    for (int g = 0; g < ng1; g++) acc1[g] = FN(vload)(gx1 + g * VL);
    for (int g = 0; g < ng2; g++) acc2[g] = FN(vload)(gx2 + g * VL);
    for (int k = 0; k < K; k++) {
        const REAL *wk1 = w1 + (long)k * ng1 * VL, *wk2 = w2 + (long)k * ng2 * VL;
        const REAL hk = h[k];
        for (int g = 0; g < ng1; g++) acc1[g] = FN(vfma)(FN(vload)(wk1 + g * VL), FN(vset1)(hk), acc1[g]);
        for (int g = 0; g < ng2; g++) acc2[g] = FN(vfma)(FN(vload)(wk2 + g * VL), FN(vset1)(hk), acc2[g]);
    }
    for (int g = 0; g < ng1; g++) pre1[g] = acc1[g];
    for (int g = 0; g < ng2; g++) pre2[g] = acc2[g];
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
            pre_i = FN(vfma)(FN(vload)(peep), c_prev, pre_i);
            pre_f = FN(vfma)(FN(vload)(peep + VL), c_prev, pre_f);
        }
        VEC gate_i = FN(vsigmoid)(FN(vclip)(pre_i, clip));
        VEC gate_f = input_forget ? (REAL)1.0 - gate_i : FN(vsigmoid)(FN(vclip)(pre_f, clip));
        VEC gate_g = FN(vtanh)(FN(vclip)(pre[2], clip));
        VEC c_new = FN(vfma)(gate_f, c_prev, gate_i * gate_g);
        if (peep) pre_o = FN(vfma)(FN(vload)(peep + 2 * VL), c_new, pre_o);
        VEC gate_o = FN(vsigmoid)(FN(vclip)(pre_o, clip));
        FN(vstore)(c, c_new);
        FN(vstore)(hout, gate_o * FN(vtanh)(c_new));
    } else {
        /* narrow: vector 0 = [i | f], vector 1 = [g | o]; the results live in the lower lanes. The same
           operations per lane as above: tanh(x) = 1 - 2/(1 + exp(x + x)), sigmoid(x) = 1/(1 + exp(-x)). */
        const IVEC lower = FN(vlower_mask)();
        VEC c_prev = FN(vload_half_dup)(c);
        VEC pre_if = pre[0], pre_go = pre[1];
        if (peep) pre_if = FN(vfma)(FN(vload)(peep), c_prev, pre_if);
        VEC gates_if = FN(vsigmoid)(FN(vclip)(pre_if, clip));
        VEC gate_f = input_forget ? (REAL)1.0 - gates_if : FN(vswap_halves)(gates_if);
        VEC x_go = FN(vclip)(pre_go, clip);
        VEC e = FN(vexp)(FN(vselect)(lower, x_go + x_go, -x_go));
        VEC ratio = FN(vselect)(lower, FN(vset1)((REAL)2.0), FN(vset1)((REAL)1.0)) / ((REAL)1.0 + e);
        VEC gates_go = FN(vselect)(lower, (REAL)1.0 - ratio, ratio);     /* [tanh(g) | sigmoid(o)] */
        VEC c_new = FN(vfma)(gate_f, c_prev, gates_if * gates_go);
        if (peep) gates_go = FN(vsigmoid)(FN(vclip)(FN(vfma)(FN(vload)(peep + VL), FN(vswap_halves)(c_new), pre_go), clip));
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

/* Weights per pass of cell_block_passes (and of the input kernels, gru_impl.h too; the macro stays defined, the
   same for every inclusion): CELL_PASS_K rows of k of a full block (4 gate vectors) make 32 KiB, which
   stay in L1 while every tile of up to CELL_PASS_ROWS rows takes them. */
#define CELL_PASS_K (32768 / (4 * VBYTES))
#define CELL_PASS_ROWS 64

/* Gate sums and cell update of block jb for rows [0, B) in passes over k (when its weights exceed L1 and more
   than one tile of rows reads them): each row's chains stop after a pass in `partial` and go on from there, so
   every row is summed exactly as gate_sums sums it in one pass (the same bits). w (K, ng, V); gx rows (B, ng*V)
   stride ldg at this block; peep as cell_update; h (B, K) stride ldh; c, hout (B, V) strides ldc, ldo at this
   block; rows with t >= lengths[b] untouched. */
ATTR static inline __attribute__((always_inline)) void FN(cell_block_passes)(const REAL *w, const REAL *gx, long ldg, const REAL *peep, REAL clip,
    int input_forget, const REAL *h, long ldh, REAL *c, long ldc, REAL *hout, long ldo, const int *lengths, int t, int B,
    int K, const int ng)
{
    REAL partial[CELL_PASS_ROWS * 4 * VL] __attribute__((aligned(64)));
    unsigned char active[CELL_PASS_ROWS];
    VEC pre[BT][4];
    const long ldp = 4 * VL;
    for (int b0 = 0; b0 < B; b0 += CELL_PASS_ROWS) {
        const int nb = B - b0 < CELL_PASS_ROWS ? B - b0 : CELL_PASS_ROWS;
        int any_row = 0;
        for (int r = 0; r < nb; r++) any_row |= active[r] = t < lengths[b0 + r];
        if (!any_row) continue;
        for (int k0 = 0; k0 < K; k0 += CELL_PASS_K) {
            const int kn = K - k0 < CELL_PASS_K ? K - k0 : CELL_PASS_K, last = k0 + kn == K;
            for (int r0 = 0; r0 < nb; r0 += BT) {
                const int nr = nb - r0 < BT ? nb - r0 : BT;
                int any = 0;
                for (int r = r0; r < r0 + nr; r++) any |= active[r];
                if (!any) continue;
                const REAL *init = k0 == 0 ? gx + (b0 + r0) * ldg : partial + r0 * ldp;
                const long ldi = k0 == 0 ? ldg : ldp;
                const REAL *hk = h + (b0 + r0) * ldh + k0, *wk = w + (long)k0 * ng * VL;
#define PASS_SUMS(n) FN(gate_sums)(wk, init, ldi, hk, ldh, pre, kn, n, ng)
                switch (nr) {
#if BT >= 4
                    case 4: PASS_SUMS(4); break;
                    case 3: PASS_SUMS(3); break;
#endif
                    case 2: PASS_SUMS(2); break;
                    default: PASS_SUMS(1); break;
                }
#undef PASS_SUMS
                for (int r = 0; r < nr; r++) {
                    if (last) {
                        if (active[r0 + r])
                            FN(cell_update)(pre[r], peep, clip, input_forget, c + (b0 + r0 + r) * ldc,
                                            hout + (b0 + r0 + r) * ldo, ng);
                    } else {
                        for (int g = 0; g < ng; g++) FN(vstore)(partial + (r0 + r) * ldp + g * VL, pre[r][g]);
                    }
                }
            }
        }
    }
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
       blocks used last at step t (still cached) are then the first read at step t + 1. Blocks go in pairs:
       a tile of one row computes both blocks of its pair in one pass (gate_sums_pair); larger tiles do the
       first block for every tile, then the second. */
    const int descending = t & 1;
    /* weights beyond L1 read by several tiles of rows: in passes (cell_block_passes; the same bits) */
    const int passes = K > CELL_PASS_K && B > BT;
    for (int jj = j0; jj < j1; jj += 2) {
        const int j = descending ? j1 - 1 - (jj - j0) : jj, paired = jj + 1 < j1;
        const int j2 = descending ? j - 1 : j + 1;
        for (int second = 0; second <= paired; second++) {
            const int jb = second ? j2 : j, ng = jb == narrow ? 2 : 4;
            const REAL *wj = w_hh + (long)jb * K * 4 * VL;
            const REAL *pj = peep ? peep + (long)jb * 3 * VL : 0;
            if (passes) {
#define BLOCK_PASSES(n) FN(cell_block_passes)(wj, gx + (long)jb * 4 * VL, ldg, pj, clip, input_forget, h, ldh, \
                                              c + (long)jb * VL, ldc, hout + (long)jb * VL, ldo, lengths, t, B, K, n)
                if (ng == 4) BLOCK_PASSES(4);
                else BLOCK_PASSES(2);
#undef BLOCK_PASSES
                continue;
            }
            for (int b0 = 0; b0 < B; b0 += BT) {
                int nr = B - b0 < BT ? B - b0 : BT, any = 0;
                if (nr == 1 && second) continue;           /* done with its pair */
                for (int r = 0; r < nr; r++) any |= active[r] = t < lengths[b0 + r];
                if (!any) continue;
                const REAL *g0 = gx + b0 * ldg + (long)jb * 4 * VL;
                const REAL *h0 = h + b0 * ldh;
                REAL *c0 = c + b0 * ldc + (long)jb * VL, *o0 = hout + b0 * ldo + (long)jb * VL;
                if (nr == 1 && paired) {
                    const int ng2 = j2 == narrow ? 2 : 4;
                    const REAL *w2 = w_hh + (long)j2 * K * 4 * VL;
                    const REAL *p2 = peep ? peep + (long)j2 * 3 * VL : 0;
                    const REAL *g2 = gx + b0 * ldg + (long)j2 * 4 * VL;
                    REAL *c2 = c + b0 * ldc + (long)j2 * VL, *o2 = hout + b0 * ldo + (long)j2 * VL;
                    VEC pre1[4] = {{0}}, pre2[4] = {{0}};   /* (a narrow block leaves two unused) */
#define PAIR(n1, n2) FN(gate_sums_pair)(wj, w2, g0, g2, h0, pre1, pre2, K, n1, n2)
                    if (ng == 4 && ng2 == 4) PAIR(4, 4);
                    else if (ng == 4) PAIR(4, 2);
                    else PAIR(2, 4);
#undef PAIR
                    FN(cell_update)(pre1, pj, clip, input_forget, c0, o0, ng);
                    FN(cell_update)(pre2, p2, clip, input_forget, c2, o2, ng2);
                    continue;
                }
#define CELL_TILE(n, ng) FN(cell_tile)(wj, g0, ldg, pj, clip, input_forget, h0, ldh, c0, ldc, o0, ldo, active, K, n, ng)
#define CELL_TILES(ng)                         \
                switch (nr) {                  \
                    CELL_TILE_CASES_BT4(ng)    \
                    case 2: CELL_TILE(2, ng); break; \
                    default: CELL_TILE(1, ng); break; \
                }
#if BT >= 4
#define CELL_TILE_CASES_BT4(ng) case 4: CELL_TILE(4, ng); break; case 3: CELL_TILE(3, ng); break;
#else
#define CELL_TILE_CASES_BT4(ng)
#endif
                if (ng == 2) {
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
}

/* One register tile of the input projection over k in [k0, k1): gx rows = bias + W_ih x for nr rows of one
   block (ng gate vectors: 4, or 2 for a narrow block), each row's chains starting from bias when k0 == 0, else
   from the gx row where the pass before stopped (the same sums as one pass). w (I, ng, V) packed block;
   bias (ng, V); x rows xr[r] (I,); gx rows gr[r] (ng*V,). */
ATTR static inline __attribute__((always_inline)) void FN(input_tile)(
    const REAL *restrict w, const REAL *restrict bias, const REAL *const *xr, REAL *const *gr, int k0, int k1,
    const int nr, const int ng)
{
    VEC acc[BT][4];
    const REAL *xp[BT];
    for (int r = 0; r < nr; r++) {
        xp[r] = xr[r];
        for (int g = 0; g < ng; g++) acc[r][g] = FN(vload)((k0 == 0 ? bias : gr[r]) + g * VL);
    }
    for (int k = k0; k < k1; k++) {
        const REAL *wk = w + (long)k * ng * VL;
        VEC wv[4];
        for (int g = 0; g < ng; g++) wv[g] = FN(vload)(wk + g * VL);
        for (int r = 0; r < nr; r++) {
            REAL xk = xp[r][k];
            for (int g = 0; g < ng; g++) acc[r][g] = FN(vfma)(wv[g], FN(vset1)(xk), acc[r][g]);
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
    /* weights beyond L1 (CELL_PASS_K rows of k of a block) go in passes over k, every row taking each pass */
    for (int pass = 0; pass < (j1 - j0) * ((n_in + CELL_PASS_K - 1) / CELL_PASS_K); pass++) {
        const int passes_per_block = (n_in + CELL_PASS_K - 1) / CELL_PASS_K;
        const int j = j0 + pass / passes_per_block, k0 = pass % passes_per_block * CELL_PASS_K;
        const int k1 = n_in - k0 < CELL_PASS_K ? n_in : k0 + CELL_PASS_K;
        const REAL *wj = w_ih + (long)j * n_in * 4 * VL;
        const REAL *bj = bias + (long)j * 4 * VL;
        const int is_narrow = j == narrow;
#define INPUT_TILE(n) \
    (is_narrow ? FN(input_tile)(wj, bj, xr, gr, k0, k1, n, 2) : FN(input_tile)(wj, bj, xr, gr, k0, k1, n, 4))
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
ATTR static __attribute__((unused)) void FN(step_blocks)(const lstm_layer *layer, const lstm_rows *rows, const lstm_chunk *chunk,
                                 const lstm_state *state, lstm_blocks blocks, int descending)
{
    for (int jj = blocks.first; jj < blocks.end; jj += 2) {
        /* a pair of blocks at a time (one of the range is left alone when it has an odd count), so that one
           row's cell kernel has the pair's chains (see cell_blocks) */
        const int last = jj + 2 < blocks.end ? jj + 2 : blocks.end;
        const lstm_blocks pair = descending ? (lstm_blocks){blocks.first + blocks.end - last,
                                                            blocks.first + blocks.end - jj}
                                            : (lstm_blocks){jj, last};
        FN(input_blocks)(layer, rows, chunk, 0, 1, pair);
        FN(cell_blocks)(layer, rows, chunk->gx, chunk->g_bs, state, 0, pair);
    }
}

/* One projection tile: hout[r, :V] = W_hr block (Kc, V) applied to hc rows (nr, Kc), stride ldc. */
ATTR static inline __attribute__((always_inline)) void FN(proj_tile)(
    const REAL *restrict w, const REAL *restrict hc, long ldc, REAL *restrict hout, long ldo, int Kc, const int nr)
{
    VEC acc[PROJ_ROWS];
    for (int r = 0; r < nr; r++) acc[r] = FN(vset1)(0);
    for (int k = 0; k < Kc; k++) {
        VEC wk = FN(vload)(w + (long)k * VL);
        for (int r = 0; r < nr; r++) acc[r] = FN(vfma)(wk, FN(vset1)(hc[r * ldc + k]), acc[r]);
    }
    for (int r = 0; r < nr; r++) FN(vstore)(hout + r * ldo, acc[r]);
}

/* Projection blocks [first, end) (the `proj` kernel kind, kernel_api.h): w_hr (NP, H, V); hc (B, H) stride ldc;
   hout (B, NP*V) stride ldo. Rows with t >= lengths[b] are skipped (the caller keeps their state). */
ATTR static __attribute__((unused)) void FN(proj_blocks)(const lstm_layer *layer, const lstm_rows *rows, const void *hc_any, long ldc,
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
            /* a run of consecutive active rows, at most PROJ_ROWS long, shares one pass over wq */
            int nr = 1;
            while (nr < PROJ_ROWS && b + nr < B && t < lengths[b + nr]) nr++;
            const REAL *hb = hc + b * ldc;
            REAL *ob = hout + b * ldo + (long)q * VL;
#define PROJ_TILE(n) FN(proj_tile)(wq, hb, ldc, ob, ldo, Kc, n)
            switch (nr) {
#if PROJ_ROWS == 16
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
#ifdef TABLE_NAME
static const lstm_kernel_table FN(lstm_table) = {TABLE_NAME, VBYTES, BT, FN(input_blocks), FN(cell_blocks),
                                                 FN(step_blocks), FN(proj_blocks), 0 /* finish: never split */};
#endif

#undef FN
#undef VL
#undef PROJ_ROWS
#undef CELL_PASS_ROWS
#undef VEC
#undef IVEC
