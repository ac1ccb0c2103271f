/* quant_impl.h: the LSTM kernels for reduced-precision weights (bf16 or int8) on one instruction set.
 *
 * Included by cell_kernels.h once per (format, instruction set), with these macros defined:
 *   QINT8        1: int8 weights (per-row scales, int32 dot products); 0: bf16 weights (float32 dot products)
 *   QNATIVE      1: the format's dot-product instruction (vpdpbusd with AVX512-VNNI, vdpbf16ps with
 *                AVX512-BF16; VBYTES 64); 0: the portable widening fallback (same int8 bits, bf16 within rounding)
 *   QAMX         1 (with QNATIVE): the dot products take AMX tiles, 16 rows at a time, wherever their length is a
 *                multiple of 64 (int8) or 32 (bf16), for every batch: tdpbusd's int32 sums are vpdpbusd's (the same
 *                bits); tdpbf16ps sums a row's products in the order of k (bf16 within rounding of vdpbf16ps)
 *   SFX, VBYTES, LANES, ATTR, QBT (batch rows per register tile), QTABLE_NAME ("lstm/int8/avx512vnni", ...),
 *   GRU_QTABLE_NAME ("gru/int8/avx512vnni", ...)
 * It defines the kernels of LSTM_KERNEL_KINDS (kernel_api.h) and the table FN(lstm_table), and through
 * gru_quant_impl.h the GRU's kernels on the same quantization and dot products, and the table FN(gru_table).
 * The float math (activations, cell update) is cell_impl.h's, instantiated here for float; cell_kernels.h
 * includes this file with floating-point contraction off, so the same float operations run on every
 * instruction set and the int8 kernels give the same bits everywhere.
 *
 * Numerics (mirrored by fastlstm/_quant.py, the oracle's rules):
 *   bf16  weights rounded to bf16 when packed; x and h rounded float32 -> bf16 (nearest even) at run time;
 *         products summed in float32, over pairs of k, in two interleaved partial sums (even and odd pairs)
 *         added at the end, whatever the number of rows in a tile.
 *   int8  weights q = rint(w / s_n), s_n = max|W[n, :]| / 127 per output row n; every row v of x, of h and of
 *         the projection's input is quantized at run time with its own scale s = max|v| / 127
 *         (q = rint(v * (127 / max|v|))): per batch row, so a sequence's bits never depend on its batch. (A fixed
 *         1/127 for h, which |h| <= 1 would allow, was measured less accurate than onnxruntime's per-call scales
 *         on models whose h stays small; benchmarks/quant_accuracy.py.) Exact int32 dot products, then
 *         pre = init + (float)dot * (s_n * s). A row holding NaN or inf gets s = NaN (its results become NaN,
 *         never another row's).
 *
 * Packed layouts (fastlstm/_packing.py, V = VBYTES / 4 units per block, blocks never narrow):
 *   bf16  w_ih (NB, I2, 4, V, 2), w_hh (NB, K2, 4, V, 2), w_hr (NP, H2, V, 2) uint16: w[j, kk, g, v, e] =
 *         W[g*H + j*V + v, 2*kk + e], K2 = ceil(K / 2), zero padded.
 *   int8  each block starts with a header: scales (ng, V) float32 and corrections (ng, V) int32 = -128 * the row
 *         sums of q (vpdpbusd multiplies unsigned bytes: h is stored as q + 128); then (K4, ng, V, 4) int8:
 *         w[j, kk, g, v, e] = q[g*H + j*V + v, 4*kk + e], K4 = ceil(K / 4), zero padded; ng = 4 (w_ih, w_hh) or
 *         1 (w_hr).
 *   bias, peep, gx as for float32 (cell_impl.h).
 */

#define REAL float
#define IREAL int32_t
#include "cell_impl.h"
#undef REAL
#undef IREAL

#define FN(name) CAT3(name, _, SFX)
#define VL (VBYTES / 4)
#define VEC FN(vec)
#define IVEC FN(ivec)
#define UVEC FN(uvec)

typedef uint32_t UVEC __attribute__((vector_size(VBYTES), aligned(4)));

#if QNATIVE
/* acc += the lane-wise dot products of h and w (vpdpbusd: unsigned bytes of h with signed bytes of w, 4 per lane;
   vdpbf16ps: 2 bf16 per lane), in place: written as instructions because GCC 12 copies the accumulators around
   every call of these intrinsics (two register moves per instruction in the inner loop) */
#define QDPBUSD(acc, h, w) __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(h), "v"(w))
#define QDPBF16(acc, w, h) __asm__("vdpbf16ps %2, %1, %0" : "+v"(acc) : "v"(h), "v"(w))
#endif

#if QINT8
#define QK 4                        /* k per weight group */
typedef uint8_t FN(qel);            /* a quantized activation: q + Q8_OFFSET as a byte */
#if QNATIVE
#define Q8_OFFSET 128               /* vpdpbusd: unsigned activations, corrected by the row sums */
#else
#define Q8_OFFSET 0                 /* the widening fallback multiplies signed bytes */
#endif
#else
#define QK 2
typedef uint16_t FN(qel);           /* a bf16 activation */
#endif
#define QEL FN(qel)

/* q rows (nr, np) stride ldq from rows x (nr, n) stride ldx, np = n rounded up to QK (padded with zeros);
   int8: the dequantization factor of each row in scale[r] (max|row| / 127). */
ATTR static inline void FN(quant_rows)(const float *x, long ldx, int nr, int n, QEL *q, long ldq,
                                       float *scale)
{
    const int np = (n + QK - 1) / QK * QK;
    for (int r = 0; r < nr; r++) {
        const float *xr = x + r * ldx;
        QEL *qr = q + r * ldq;
        int k = 0;
#if QINT8
        const IVEC abs_mask = (IVEC)FN(vset1)(0) + 0x7fffffff;
        VEC vmax = FN(vset1)(0);
        IVEC bad = (IVEC)vmax;
        const VEC big = FN(vset1)(FLT_MAX);
        for (; k + VL <= n; k += VL) {
            VEC a = (VEC)((IVEC)FN(vload)(xr + k) & abs_mask);
            vmax = FN(vselect)(a > vmax, a, vmax);
            bad |= ~(a <= big);      /* NaN or inf */
        }
        float amax = 0.0f;
        int any_bad = 0;
        for (int i = 0; i < VL; i++) {
            amax = vmax[i] > amax ? vmax[i] : amax;
            any_bad |= bad[i] != 0;
        }
        for (; k < n; k++) {
            float a = fabsf(xr[k]);
            amax = a > amax ? a : amax;
            any_bad |= !(a <= FLT_MAX);
        }
        if (any_bad) {
            scale[r] = NAN;
            memset(qr, Q8_OFFSET, (size_t)np);
            continue;
        }
        float inv, s;
        if (amax == 0.0f) {
            inv = s = 0.0f;
        } else {
            inv = 127.0f / amax;
            s = amax / 127.0f;
        }
        scale[r] = s;
        const float magic = 12582912.0f;    /* 1.5 * 2^23: (f + magic) - magic rounds to the nearest even integer */
        typedef uint8_t FN(bytes) __attribute__((vector_size(VL)));
        for (k = 0; k + VL <= n; k += VL) {
            VEC f = FN(vclamp)(FN(vload)(xr + k) * inv, -127.0f, 127.0f);
            f = (f + magic) - magic;
            IVEC qi = __builtin_convertvector(f, IVEC) + Q8_OFFSET;
            FN(bytes) qb = __builtin_convertvector(qi, FN(bytes));
            memcpy(qr + k, &qb, VL);
        }
        for (; k < n; k++) {
            float f = xr[k] * inv;
            f = f > 127.0f ? 127.0f : f < -127.0f ? -127.0f : f;
            f = (f + magic) - magic;
            qr[k] = (uint8_t)((int)f + Q8_OFFSET);
        }
        for (; k < np; k++) qr[k] = Q8_OFFSET;
#else
        (void)scale;
        typedef uint16_t FN(halves) __attribute__((vector_size(VBYTES / 2)));
        for (; k + VL <= n; k += VL) {
            UVEC u = (UVEC)FN(vload)(xr + k);
            UVEC rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;   /* nearest even */
            UVEC quiet = (u >> 16) | 0x40u;                          /* NaN stays a (quiet) NaN */
            UVEC is_nan = (UVEC)((u & 0x7fffffffu) > 0x7f800000u);
            UVEC b = (is_nan & quiet) | (~is_nan & rounded);
            FN(halves) h = __builtin_convertvector(b, FN(halves));
            memcpy(qr + k, &h, VBYTES / 2);
        }
        for (; k < n; k++) {
            uint32_t u;
            memcpy(&u, xr + k, 4);
            qr[k] = (u & 0x7fffffffu) > 0x7f800000u ? (uint16_t)((u >> 16) | 0x40u)
                                                    : (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
        }
        for (; k < np; k++) qr[k] = 0;
#endif
    }
}

#if QINT8
/* One gate vector of a row from its exact int32 sums: init + (float)tot * (s_w * s_row) (init NULL: no addend);
   sw (V,) the rows' weight scales. */
ATTR static inline __attribute__((always_inline)) VEC FN(dequant)(IVEC tot, const float *sw, float rscale,
                                                                   const float *init)
{
    VEC p = __builtin_convertvector(tot, VEC) * (FN(vload)(sw) * rscale);
    return init ? FN(vload)(init) + p : p;
}

/* pre[r][g] = init[r][g] + (float)(q_r . w[:, g]) * (s_w[g] * rscale[r]) (init NULL: no addend) for nr rows and
   ng gate vectors of one packed block `blk` (header and (K4, ng, V, 4) weights, see the top); q rows (nr, 4*K4)
   stride ldq; init rows (nr, ng*V) stride ldi. */
ATTR static inline __attribute__((always_inline)) void FN(qdot)(
    const char *restrict blk, int K4, const QEL *restrict q, long ldq, const float *rscale,
    const float *restrict init, long ldi, VEC pre[QBT][4], const int nr, const int ng)
{
    const float *sw = (const float *)blk;
    const int8_t *w = (const int8_t *)(blk + 2 * ng * VBYTES);
    IVEC tot[QBT][4];
#if QNATIVE
    const int32_t *corr = (const int32_t *)(blk + ng * VBYTES);
    __m512i acc[QBT][4];
    for (int r = 0; r < nr; r++)
        for (int g = 0; g < ng; g++) acc[r][g] = _mm512_loadu_si512(corr + g * VL);
    int kk = 0;
    if (nr == 1) {
        /* int32 sums are exact: one row's chain split in two (even and odd groups) hides the latency */
        __m512i odd[4];
        for (int g = 0; g < ng; g++) odd[g] = _mm512_setzero_si512();
        for (; kk + 2 <= K4; kk += 2) {
            const int8_t *wk = w + (long)kk * ng * VBYTES;
            int32_t words[2];
            memcpy(words, q + 4 * kk, 8);
            __m512i h0 = _mm512_set1_epi32(words[0]), h1 = _mm512_set1_epi32(words[1]);
            for (int g = 0; g < ng; g++) {
                QDPBUSD(acc[0][g], h0, *(const __m512i *)(wk + g * VBYTES));
                QDPBUSD(odd[g], h1, *(const __m512i *)(wk + (ng + g) * VBYTES));
            }
        }
        for (int g = 0; g < ng; g++) acc[0][g] = _mm512_add_epi32(acc[0][g], odd[g]);
    }
    for (; kk < K4; kk++) {
        const int8_t *wk = w + (long)kk * ng * VBYTES;
        __m512i hb[QBT];
        for (int r = 0; r < nr; r++) {
            int32_t word;
            memcpy(&word, q + r * ldq + 4 * kk, 4);
            hb[r] = _mm512_set1_epi32(word);
        }
        for (int g = 0; g < ng; g++) {    /* each weight vector loaded once, used by every row */
            __m512i wv = _mm512_load_si512(wk + g * VBYTES);
            for (int r = 0; r < nr; r++) QDPBUSD(acc[r][g], hb[r], wv);
        }
    }
    for (int r = 0; r < nr; r++)
        for (int g = 0; g < ng; g++) tot[r][g] = (IVEC)acc[r][g];
#else
    /* widen bytes to int16 and multiply-add pairs (pmaddwd): lanes hold (unit, k pair) partial sums, the two
       pairs of a unit added at the end */
    typedef int8_t FN(i8half) __attribute__((vector_size(VBYTES / 2), aligned(1)));
    typedef int16_t FN(i16vec) __attribute__((vector_size(VBYTES)));
    typedef int64_t FN(i64vec) __attribute__((vector_size(VBYTES)));
    for (int r = 0; r < nr; r++) {
        IVEC lo[4], hi[4];
        for (int g = 0; g < ng; g++) lo[g] = hi[g] = (IVEC)FN(vset1)(0);
        const int8_t *qr = (const int8_t *)(q + r * ldq);
        for (int kk = 0; kk < K4; kk++) {
            int16_t h4[4] = {qr[4 * kk], qr[4 * kk + 1], qr[4 * kk + 2], qr[4 * kk + 3]};
            int64_t word;
            memcpy(&word, h4, 8);
            FN(i16vec) hp = (FN(i16vec))((FN(i64vec)){0} + word);
            const int8_t *wk = w + (long)kk * ng * VBYTES;
            for (int g = 0; g < ng; g++) {
                FN(i8half) w_lo = *(const FN(i8half) *)(wk + g * VBYTES);
                FN(i8half) w_hi = *(const FN(i8half) *)(wk + g * VBYTES + VBYTES / 2);
                FN(i16vec) a = __builtin_convertvector(w_lo, FN(i16vec)), b = __builtin_convertvector(w_hi, FN(i16vec));
#if defined(FASTLSTM_X86) && VBYTES == 16
                lo[g] += (IVEC)_mm_madd_epi16((__m128i)a, (__m128i)hp);
                hi[g] += (IVEC)_mm_madd_epi16((__m128i)b, (__m128i)hp);
#elif defined(FASTLSTM_X86) && VBYTES == 32
                lo[g] += (IVEC)_mm256_madd_epi16((__m256i)a, (__m256i)hp);
                hi[g] += (IVEC)_mm256_madd_epi16((__m256i)b, (__m256i)hp);
#else
                for (int i = 0; i < VL; i++) {
                    lo[g][i] += a[2 * i] * hp[2 * i] + a[2 * i + 1] * hp[2 * i + 1];
                    hi[g][i] += b[2 * i] * hp[2 * i] + b[2 * i + 1] * hp[2 * i + 1];
                }
#endif
            }
        }
        for (int g = 0; g < ng; g++) {
            IVEC t = lo[g];
            for (int i = 0; i < VL / 2; i++) {
                t[i] = lo[g][2 * i] + lo[g][2 * i + 1];
                t[VL / 2 + i] = hi[g][2 * i] + hi[g][2 * i + 1];
            }
            tot[r][g] = t;
        }
    }
#endif
    for (int r = 0; r < nr; r++)
        for (int g = 0; g < ng; g++)
            pre[r][g] = FN(dequant)(tot[r][g], sw + g * VL, rscale[r], init ? init + r * ldi + g * VL : 0);
}


#else
/* pre[r][g] = init[r][g] + sum_k w[k, g] q_r[k] (init NULL: from zero) for nr rows and ng gate vectors of one
   packed block w (K2, ng, V, 2) bf16; q rows (nr, 2*K2) bf16 stride ldq; init rows (nr, ng*V) stride ldi.
   Two partial sums, over even and odd pairs of k, added at the end: the same order for any nr. rscale unused. */
ATTR static inline __attribute__((always_inline)) void FN(qdot)(
    const char *restrict blk, int K2, const QEL *restrict q, long ldq, const float *rscale,
    const float *restrict init, long ldi, VEC pre[QBT][4], const int nr, const int ng)
{
    (void)rscale;
    const uint16_t *w = (const uint16_t *)blk;
    VEC acc[2][QBT][4];
    for (int r = 0; r < nr; r++)
        for (int g = 0; g < ng; g++) {
            acc[0][r][g] = init ? FN(vload)(init + r * ldi + g * VL) : FN(vset1)(0);
            acc[1][r][g] = FN(vset1)(0);
        }
    /* one pair of k into partial sum s (a constant in every expansion) */
#if QNATIVE
#define BF16_PAIR(kk, s)                                                                                        \
    do {                                                                                                        \
        const uint16_t *wk = w + (long)(kk) * ng * VL * 2;                                                      \
        __m512i hb[QBT];                                                                                        \
        for (int r = 0; r < nr; r++) {                                                                          \
            int32_t pair;                                                                                       \
            memcpy(&pair, q + r * ldq + 2 * (kk), 4);                                                           \
            hb[r] = _mm512_set1_epi32(pair);                                                                    \
        }                                                                                                       \
        for (int g = 0; g < ng; g++) {     /* each weight vector loaded once, used by every row */             \
            __m512i wv = _mm512_load_si512(wk + g * VL * 2);                                                    \
            for (int r = 0; r < nr; r++) QDPBF16(acc[s][r][g], wv, hb[r]);                                      \
        }                                                                                                       \
    } while (0)
#else
    /* vdpbf16ps's arithmetic: the products are exact in float32; the odd k is added first */
#define BF16_PAIR(kk, s)                                                                                        \
    do {                                                                                                        \
        const uint16_t *wk = w + (long)(kk) * ng * VL * 2;                                                      \
        UVEC wv[4];                                                                                             \
        for (int g = 0; g < ng; g++) wv[g] = *(const UVEC *)(wk + g * VL * 2);                                  \
        for (int r = 0; r < nr; r++) {                                                                          \
            uint32_t pair;                                                                                      \
            memcpy(&pair, q + r * ldq + 2 * (kk), 4);                                                           \
            uint32_t even_bits = pair << 16, odd_bits = pair & 0xffff0000u;                                     \
            float he, ho;                                                                                       \
            memcpy(&he, &even_bits, 4);                                                                         \
            memcpy(&ho, &odd_bits, 4);                                                                          \
            for (int g = 0; g < ng; g++) {                                                                      \
                VEC we = (VEC)(wv[g] << 16), wo = (VEC)(wv[g] & 0xffff0000u);                                   \
                acc[s][r][g] = acc[s][r][g] + wo * ho;                                                          \
                acc[s][r][g] = acc[s][r][g] + we * he;                                                          \
            }                                                                                                   \
        }                                                                                                       \
    } while (0)
#endif
    int kk = 0;
    for (; kk + 2 <= K2; kk += 2) {
        BF16_PAIR(kk, 0);
        BF16_PAIR(kk + 1, 1);
    }
    if (kk < K2) BF16_PAIR(kk, 0);
#undef BF16_PAIR
    for (int r = 0; r < nr; r++)
        for (int g = 0; g < ng; g++) pre[r][g] = acc[0][r][g] + acc[1][r][g];
}
#endif

/* weight groups of a K-long dot product, and the bytes of one packed block of ng gate vectors */
static inline int FN(groups)(int K) { return (K + QK - 1) / QK; }
static inline long FN(block_bytes)(int K, int ng) {
    return (long)FN(groups)(K) * ng * VBYTES + (QINT8 ? 2 * ng * VBYTES : 0);
}

#if QAMX
/* Rows per AMX tile, and whether a K-long dot product takes the tiles: its groups of 4 k fill whole tiles of 16
   groups (64 bytes per row). A tile of activations holds up to AMX_ROWS rows (the buffers of quantized rows have
   AMX_ROWS rows more than they use); the rows past the used ones are never read back. */
#define AMX_ROWS 16
static inline int FN(amx_fits)(int K) { return FN(groups)(K) % 16 == 0; }

/* Configure this thread's tiles for a kernel call whose groups have at most `rows` rows: tiles 0-3 the sums of up
   to 4 gate vectors (m rows x 16 units), tile 4 m rows of quantized activations (16 groups of 4 bytes), tiles 5-7
   weights (16 groups x 16 units x 4 bytes; tile 5 the second tile of rows of amx_pass2x2 when m is 16), with
   m = rows below AMX_ROWS, else AMX_ROWS. Fewer rows are fewer to load, multiply and store, not other bits: each
   row's sums are its own. A standalone loop over 1 MiB of bf16 weights (one thread's share of T=100 B=1 H=512,
   in L2) with one row took 8.3-8.7 us per step with m = 1 against 10.4-10.8 with 16. Called by the kernels that
   may use the tiles, _tile_release() at their end. */
ATTR static inline void FN(amx_begin)(long rows)
{
    struct { uint8_t palette, start_row, reserved[14]; uint16_t colsb[16]; uint8_t rows[16]; } cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    const int m = rows < 1 ? 1 : rows < AMX_ROWS ? (int)rows : AMX_ROWS;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = t <= 4 ? m : AMX_ROWS;
    }
    _tile_loadconfig(&cfg);
}

#if QINT8
#define AMX_DOT(c, a, b) _tile_dpbusd(c, a, b)     /* int32 += unsigned bytes of a . signed bytes of b */
typedef int32_t FN(amx_sum);
#else
#define AMX_DOT(c, a, b) _tile_dpbf16ps(c, a, b)   /* float32 += bf16 pairs of a . bf16 pairs of b, k in order */
typedef float FN(amx_sum);
#endif

/* Groups of k per pass over a block's weights with 4 gate vectors (4 times as many with one): AMX_KC * 4 * 64
   bytes = 16 KiB of weights per pass, which stay in L1 (48 KiB on the Intel Xeon here) while every 16 rows take
   them, beside the 8 KiB of a pair of row tiles' activations. Passes of 32 KiB (AMX_KC 128, which with those
   activations filled L1) took 6-7% longer at T=50 B=64 I=512 H=1024 in bf16 and int8 on one thread; 8 KiB
   passes (32) gained half as much. */
#define AMX_KC 64

/* Two tiles of rows (a: rows r0.., b: rows r0+16..) by two gate vectors (g, g+1) over the groups [k0, k1):
   sums of tiles 0-3 (a g, a g+1, b g, b g+1) loaded from s (or zero when k0 == 0), summed, stored back. Each
   loaded tile of rows and of weights takes two products. */
ATTR static inline void FN(amx_pass2x2)(const char *w, long ldw, int g, const QEL *q, long ldq, int k0, int k1,
                                        FN(amx_sum) *s, long lds)
{
    FN(amx_sum) *sb = s + AMX_ROWS * (lds / (long)sizeof(FN(amx_sum)));
    if (k0 == 0) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    } else {
        _tile_loadd(0, s + g * VL, lds);
        _tile_loadd(1, s + (g + 1) * VL, lds);
        _tile_loadd(2, sb + g * VL, lds);
        _tile_loadd(3, sb + (g + 1) * VL, lds);
    }
    const long ldq_bytes = ldq * (long)sizeof(QEL);
    for (int kk = k0; kk < k1; kk += 16) {
        const char *wk = w + (long)kk * ldw + g * VBYTES;
        _tile_loadd(4, q + QK * kk, ldq_bytes);
        _tile_loadd(6, wk, ldw);
        AMX_DOT(0, 4, 6);
        _tile_loadd(7, wk + VBYTES, ldw);
        AMX_DOT(1, 4, 7);
        _tile_loadd(5, q + AMX_ROWS * ldq + QK * kk, ldq_bytes);
        AMX_DOT(2, 5, 6);
        AMX_DOT(3, 5, 7);
    }
    _tile_stored(0, s + g * VL, lds);
    _tile_stored(1, s + (g + 1) * VL, lds);
    _tile_stored(2, sb + g * VL, lds);
    _tile_stored(3, sb + (g + 1) * VL, lds);
}

/* One tile of rows by ng = 1 to 4 gate vectors (the GRU's blocks have 3 or 2) over the groups [k0, k1), as
   amx_pass2x2. */
ATTR static inline void FN(amx_pass1)(const char *w, long ldw, const QEL *q, long ldq, int k0, int k1,
                                      FN(amx_sum) *s, long lds, const int ng)
{
    if (k0 == 0) {
        _tile_zero(0);
        if (ng >= 2) _tile_zero(1);
        if (ng >= 3) _tile_zero(2);
        if (ng == 4) _tile_zero(3);
    } else {
        _tile_loadd(0, s, lds);
        if (ng >= 2) _tile_loadd(1, s + VL, lds);
        if (ng >= 3) _tile_loadd(2, s + 2 * VL, lds);
        if (ng == 4) _tile_loadd(3, s + 3 * VL, lds);
    }
    for (int kk = k0; kk < k1; kk += 16) {
        const char *wk = w + (long)kk * ldw;
        _tile_loadd(4, q + QK * kk, ldq * (long)sizeof(QEL));
        _tile_loadd(5, wk, ldw);
        AMX_DOT(0, 4, 5);
        if (ng >= 2) {
            _tile_loadd(6, wk + VBYTES, ldw);
            AMX_DOT(1, 4, 6);
        }
        if (ng >= 3) {
            _tile_loadd(7, wk + 2 * VBYTES, ldw);
            AMX_DOT(2, 4, 7);
        }
        if (ng == 4) {
            _tile_loadd(5, wk + 3 * VBYTES, ldw);
            AMX_DOT(3, 4, 5);
        }
    }
    _tile_stored(0, s, lds);
    if (ng >= 2) _tile_stored(1, s + VL, lds);
    if (ng >= 3) _tile_stored(2, s + 2 * VL, lds);
    if (ng == 4) _tile_stored(3, s + 3 * VL, lds);
}

/* The dot products of n rows with ng = 1 to 4 gate vectors of the block blk (see the top), on the tiles amx_begin
   configured: sums[r][g*V + v] = q_r . w[:, g, v] (int8: exact int32; bf16: float32 summed in the order of k,
   from zero, so a row's bits depend on no other row). q rows (n, QK*KG) stride ldq, KG groups of QK k (a
   multiple of 16), readable up to the next multiple of 16 rows; active (n) or NULL: tiles of rows without an
   active row are skipped. The weights go in passes of AMX_KC groups, every tile of rows taking each pass while it
   is in L1; a tile's sums wait in `sums` between passes (stored and loaded exactly). */
ATTR static void FN(amx_sums)(const char *restrict blk, int KG, const QEL *restrict q, long ldq, int n,
                              const unsigned char *active, FN(amx_sum) (*restrict sums)[4 * VL], const int ng)
{
    const long ldw = (long)ng * VBYTES;    /* bytes of one group of k across the block's gate vectors */
    const long lds = sizeof sums[0];
    const char *w = blk + (QINT8 ? 2 * ng * VBYTES : 0);
    /* the same bytes per pass for any ng, whole tiles of groups; one pass for one tile of rows (its sums would
       only be stored and loaded again between passes) */
    const int kc = n <= AMX_ROWS ? KG : 4 * AMX_KC / ng / 16 * 16;
    for (int k0 = 0; k0 < KG; k0 += kc) {
        const int k1 = KG - k0 < kc ? KG : k0 + kc;
        for (int r0 = 0; r0 < n;) {
            const int pair = ng == 4 && n - r0 > AMX_ROWS, rows = pair ? 2 * AMX_ROWS : AMX_ROWS;
            int any = !active;
            for (int r = r0; !any && r < n && r < r0 + rows; r++) any = active[r];
            if (any) {
                if (pair) {
                    FN(amx_pass2x2)(w, ldw, 0, q + r0 * ldq, ldq, k0, k1, sums[r0], lds);
                    FN(amx_pass2x2)(w, ldw, 2, q + r0 * ldq, ldq, k0, k1, sums[r0], lds);
                } else {
                    FN(amx_pass1)(w, ldw, q + r0 * ldq, ldq, k0, k1, sums[r0], lds, ng);
                }
            }
            r0 += rows;
        }
    }
}

/* A row's gate vectors from its amx_sums row: int8: pre[g] = init[g] + (float)(sum + corrections) * (s_w[g] *
   rscale), as qdot; bf16: pre[g] = init[g] + sum. init (ng*V) or NULL. */
ATTR static inline __attribute__((always_inline)) void FN(amx_pre)(const FN(amx_sum) *sum, const char *blk,
                                                                    float rscale, const float *init, VEC pre[4],
                                                                    const int ng)
{
    for (int g = 0; g < ng; g++) {
        const float *gate_init = init ? init + g * VL : 0;
#if QINT8
        const int32_t *corr = (const int32_t *)(blk + ng * VBYTES);
        IVEC tot = *(const IVEC *)(sum + g * VL) + *(const IVEC *)(corr + g * VL);
        pre[g] = FN(dequant)(tot, (const float *)blk + g * VL, rscale, gate_init);
#else
        (void)blk;
        (void)rscale;
        VEC v = *(const VEC *)(sum + g * VL);
        pre[g] = gate_init ? FN(vload)(gate_init) + v : v;
#endif
    }
}
#undef AMX_DOT
#endif

/* qdot for nr <= QBT rows (switching to a compile-time row count); QNG gate vectors */
#if QBT >= 4
#define QDOT_CASES_34(...) case 4: FN(qdot)(__VA_ARGS__, 4, QNG); break; case 3: FN(qdot)(__VA_ARGS__, 3, QNG); break;
#elif QBT == 3
#define QDOT_CASES_34(...) case 3: FN(qdot)(__VA_ARGS__, 3, QNG); break;
#else
#define QDOT_CASES_34(...)
#endif
#if QBT >= 2
#define QDOT_CASE_2(...) case 2: FN(qdot)(__VA_ARGS__, 2, QNG); break;
#else
#define QDOT_CASE_2(...)
#endif
#define QDOT_ROWS(nr, ...)                                                                                     \
    switch (nr) {                                                                                               \
        QDOT_CASES_34(__VA_ARGS__)                                                                              \
        QDOT_CASE_2(__VA_ARGS__)                                                                                \
        default: FN(qdot)(__VA_ARGS__, 1, QNG); break;                                                          \
    }

/* With AMX, the kernels below configure the tiles at their start for the most rows a group of theirs has (rows)
   and release them at their end, and their buffers of quantized rows have AMX_PAD rows more than they use (see
   amx_fits). */
#if QAMX
#define AMX_BEGIN(rows) FN(amx_begin)(rows);
#define AMX_END() _tile_release();
#define AMX_PAD AMX_ROWS
#else
#define AMX_BEGIN(rows)
#define AMX_END()
#define AMX_PAD 0
#endif

/* Rows are quantized once per call, a group of rows at a time (at most QGROUP_BYTES of quantized rows), and each
   block of weights then serves every tile of the group while it is in cache. */
#define QGROUP_BYTES 262144
#define QGROUP_MAX 256
static inline int FN(group_rows)(long row_elems) {
    long n = QGROUP_BYTES / (row_elems * (long)sizeof(QEL)) / QBT * QBT;
    return n < QBT ? QBT : n > QGROUP_MAX ? QGROUP_MAX : (int)n;
}

/* A kernel's buffer `name` of n quantized activations: on the stack up to QSTACK_BYTES, else from the heap. A group
   has at least QBT rows and the tiles' AMX_PAD rows come on top, so a very long row (input_size 262144 in bf16:
   10 MB) overflowed an 8 MiB stack, and far shorter ones the 2 MiB that glibc gives a worker thread by default;
   QBUF_FREE(name) at the kernel's end. */
#define QSTACK_BYTES 524288
#define QBUF(name, n)                                                                                          \
    const long name##_elems = (n);                                                                             \
    const int name##_heap = name##_elems * (long)sizeof(QEL) > QSTACK_BYTES;                                   \
    QEL name##_stack[name##_heap ? 1 : name##_elems];                                                           \
    QEL *name = name##_heap ? (QEL *)lstm_scratch(name##_elems * (long)sizeof(QEL)) : name##_stack;
#define QBUF_FREE(name)                                                                                        \
    if (name##_heap) free(name);

/* gx rows of block j for the group's rows: gx_r + j*ng*V = bias + W_ih x_r, ng gate vectors per block (4: LSTM,
   3: GRU); quantized x rows (n, ldq), row pointers gr (n). Not inlined: inlined into the input and step kernels,
   gcc 12 kept the int8 accumulators in memory, storing and reloading them at every group of k (T=50 B=64 I=512
   H=1024 int8 on the AMD EPYC here: 121 -> 70 ms once a function of its own). */
ATTR static __attribute__((noinline)) void FN(qinput_block)(
    const lstm_layer *layer, int j, const QEL *xq, long ldq, const float *xs, int n, float *const *gr, const int ng)
{
    const int n_in = layer->input_size;
    const char *wj = (const char *)layer->w_ih + j * FN(block_bytes)(n_in, ng);
    const float *bj = (const float *)layer->bias + (long)j * ng * VL;
    VEC pre[QBT][4];
#if QAMX
    if (FN(amx_fits)(n_in)) {
        FN(amx_sum) sums[(n + 2 * AMX_ROWS - 1) / AMX_ROWS * AMX_ROWS][4 * VL] __attribute__((aligned(64)));
        FN(amx_sums)(wj, FN(groups)(n_in), xq, ldq, n, 0, sums, ng);
        for (int r = 0; r < n; r++) {
            FN(amx_pre)(sums[r], wj, xs[r], bj, pre[0], ng);
            for (int g = 0; g < ng; g++) FN(vstore)(gr[r] + (long)j * ng * VL + g * VL, pre[0][g]);
        }
        return;
    }
#endif
    for (int r0 = 0; r0 < n; r0 += QBT) {
        const int nr = n - r0 < QBT ? n - r0 : QBT;
#define QNG ng
        QDOT_ROWS(nr, wj, FN(groups)(n_in), xq + r0 * ldq, ldq, xs + r0, bj, 0, pre)
#undef QNG
        for (int r = 0; r < nr; r++)
            for (int g = 0; g < ng; g++) FN(vstore)(gr[r0 + r] + (long)j * ng * VL + g * VL, pre[r][g]);
    }
}

/* Input projection of a cell of ng gates (the `input` kernel kind; ng 4 here, 3 in gru_quant_impl.h): as
   cell_impl.h's input_blocks, each row of x quantized once. */
ATTR static inline __attribute__((always_inline)) void FN(qinput_gate_blocks)(
    const lstm_layer *layer, const lstm_rows *rows, const lstm_chunk *chunk, int t0, int nsteps, lstm_blocks blocks,
    const int ng)
{
    const float *x = (const float *)chunk->x;
    float *gx = (float *)chunk->gx;
    const int n_in = layer->input_size, B = rows->count;
    const long ldq = (long)FN(groups)(n_in) * QK;
    const int G = FN(group_rows)(ldq);
    AMX_BEGIN((long)nsteps * B)
    QBUF(xq, (G + AMX_PAD) * ldq)
    float xs[G];
    float *gr[G];
    int n = 0;
    for (int s = 0; s < nsteps; s++)
        for (int b = 0; b < B; b++) {
            if (t0 + s >= rows->lengths[b]) continue;
            FN(quant_rows)(x + s * chunk->x_ts + b * chunk->x_bs, 0, 1, n_in, xq + n * ldq, ldq, xs + n);
            gr[n++] = gx + s * chunk->g_ts + b * chunk->g_bs;
            if (n == G) {
                for (int j = blocks.first; j < blocks.end; j++) FN(qinput_block)(layer, j, xq, ldq, xs, n, gr, ng);
                n = 0;
            }
        }
    if (n)
        for (int j = blocks.first; j < blocks.end; j++) FN(qinput_block)(layer, j, xq, ldq, xs, n, gr, ng);
    AMX_END()
    QBUF_FREE(xq)
}

/* the LSTM's input projection: qinput_gate_blocks with 4 gates per block */
ATTR static void FN(qinput_blocks)(const lstm_layer *layer, const lstm_rows *rows, const lstm_chunk *chunk, int t0,
                                   int nsteps, lstm_blocks blocks)
{
    FN(qinput_gate_blocks)(layer, rows, chunk, t0, nsteps, blocks, 4);
}

#if QAMX
/* Rows ahead of the cell update whose gate inputs and cell state are prefetched: a row's gx (4 lines) and c are
   in another page than the row before (rows 16 KiB apart at H=1024) and, after the step's weights streamed
   through L2, often in L3. 8 rows ahead, alternated with the build before, 4 rounds, ms: T=100 B=32 I=256 H=512
   bf16 8.51 -> 8.01, int8 6.03 -> 6.17; T=50 B=64 I=512 H=1024 2 layers bf16 67.4 -> 64.9, int8 44.1 -> 41.0;
   B=4 the same; on one thread and under a busy process within 2% (int8 B=64 under one busy 82.0 -> 77.2). A
   second run gained less: B=32 bf16 9.13 -> 9.10, int8 6.92 -> 6.84, B=64 bf16 74.9 -> 74.3, int8 48.2 -> 48.3;
   under two busy processes B=32 bf16 21.9 -> 20.6, int8 16.2 -> 16.3, B=64 bf16 164 -> 162, int8 105 -> 109. */
#define AMX_CELL_AHEAD 8
/* gx row (4 gate vectors) and c row of one block, into L1 */
static inline void FN(prefetch_cell_row)(const float *gx, const float *c)
{
    for (int g = 0; g < 4; g++) _mm_prefetch((const char *)(gx + g * VL), _MM_HINT_T0);
    _mm_prefetch((const char *)c, _MM_HINT_T0);
}
#endif

/* gate sums and cell update of block j for n rows (tiles of QBT) from quantized h rows; rows with active[r] == 0
   untouched */
ATTR static void FN(qcell_block)(const lstm_layer *layer, int j, const QEL *hq, long ldq, const float *hs, int n,
                                 const float *g0, long ldg, float *c0, long ldc, float *o0, long ldo,
                                 const unsigned char *active)
{
    const int K = layer->out_size;
    const char *wj = (const char *)layer->w_hh + j * FN(block_bytes)(K, 4);
    const float *pj = layer->peep ? (const float *)layer->peep + (long)j * 3 * VL : 0;
    VEC pre[QBT][4];
#if QAMX
    if (FN(amx_fits)(K)) {
        FN(amx_sum) sums[(n + 2 * AMX_ROWS - 1) / AMX_ROWS * AMX_ROWS][4 * VL] __attribute__((aligned(64)));
        const float *gj = g0 + (long)j * 4 * VL;      /* the block's columns of gx, c and h */
        float *cj = c0 + (long)j * VL, *oj = o0 + (long)j * VL;
        FN(amx_sums)(wj, FN(groups)(K), hq, ldq, n, active, sums, 4);
        for (int r = 0; r < AMX_CELL_AHEAD && r < n; r++) FN(prefetch_cell_row)(gj + r * ldg, cj + r * ldc);
        for (int r = 0; r < n; r++)
            if (active[r]) {
                const int ahead = r + AMX_CELL_AHEAD;
                if (ahead < n) FN(prefetch_cell_row)(gj + ahead * ldg, cj + ahead * ldc);
                FN(amx_pre)(sums[r], wj, hs[r], gj + r * ldg, pre[0], 4);
                FN(cell_update)(pre[0], pj, (float)layer->clip, layer->input_forget, cj + r * ldc, oj + r * ldo, 4);
            }
        return;
    }
#endif
    for (int r0 = 0; r0 < n; r0 += QBT) {
        const int nr = n - r0 < QBT ? n - r0 : QBT;
        int any = 0;
        for (int r = 0; r < nr; r++) any |= active[r0 + r];
        if (!any) continue;
#define QNG 4
        QDOT_ROWS(nr, wj, FN(groups)(K), hq + r0 * ldq, ldq, hs + r0, g0 + r0 * ldg + (long)j * 4 * VL, ldg, pre)
#undef QNG
        for (int r = 0; r < nr; r++)
            if (active[r0 + r])
                FN(cell_update)(pre[r], pj, (float)layer->clip, layer->input_forget,
                                c0 + (r0 + r) * ldc + (long)j * VL, o0 + (r0 + r) * ldo + (long)j * VL, 4);
    }
}

/* One time step of blocks [first, end) for every row (the `cell` kernel kind), as cell_impl.h's cell_blocks:
   each group of rows quantizes its h once, then runs the blocks, alternating their order from step to step. */
ATTR static void FN(qcell_blocks)(const lstm_layer *layer, const lstm_rows *rows, const void *gx_any, long ldg,
                                  const lstm_state *state, int t, lstm_blocks blocks)
{
    const float *gx = (const float *)gx_any, *h = (const float *)state->h;
    float *c = (float *)state->c, *hout = (float *)state->hout;
    const int B = rows->count, j0 = blocks.first, j1 = blocks.end, descending = t & 1;
    const long ldq = (long)FN(groups)(layer->out_size) * QK;
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
        FN(quant_rows)(h + b0 * state->ldh, state->ldh, n, layer->out_size, hq, ldq, hs);
        for (int jj = j0; jj < j1; jj++) {
            const int j = descending ? j1 - 1 - (jj - j0) : jj;
            FN(qcell_block)(layer, j, hq, ldq, hs, n, gx + b0 * ldg, ldg, c + b0 * state->ldc, state->ldc,
                            hout + b0 * state->ldo, state->ldo, active);
        }
    }
    AMX_END()
    QBUF_FREE(hq)
}

/* One time step (T = 1, the `step` kernel kind), as cell_impl.h's step_blocks: per group of rows, x and h
   quantized once, then for each block its input projection (into the gx scratch) and its cell update. The same
   operations as the input and cell kernels, so the same bits. */
ATTR static void FN(qstep_blocks)(const lstm_layer *layer, const lstm_rows *rows, const lstm_chunk *chunk,
                                  const lstm_state *state, lstm_blocks blocks, int descending)
{
    const float *x = (const float *)chunk->x, *h = (const float *)state->h;
    float *gx = (float *)chunk->gx, *c = (float *)state->c, *hout = (float *)state->hout;
    const int B = rows->count, n_in = layer->input_size, j0 = blocks.first, j1 = blocks.end;
    const long ldx = (long)FN(groups)(n_in) * QK, ldq = (long)FN(groups)(layer->out_size) * QK, ldg = chunk->g_bs;
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
        FN(quant_rows)(h + b0 * state->ldh, state->ldh, n, layer->out_size, hq, ldq, hs);
        for (int jj = j0; jj < j1; jj++) {
            const int j = descending ? j1 - 1 - (jj - j0) : jj;
            FN(qinput_block)(layer, j, xq, ldx, xs, n, gr, 4);
            FN(qcell_block)(layer, j, hq, ldq, hs, n, gx + b0 * ldg, ldg, c + b0 * state->ldc, state->ldc,
                            hout + b0 * state->ldo, state->ldo, active);
        }
    }
    AMX_END()
    QBUF_FREE(xq)
    QBUF_FREE(hq)
}

/* projected block q of the group's rows: hout[idx[r]] + q*V = W_hr hc_r from quantized hc rows (n, ldq) */
ATTR static void FN(qproj_block)(const lstm_layer *layer, int q, const QEL *hq, long ldq, const float *hs, int n,
                                 const int *idx, float *hout, long ldo)
{
    const int H = layer->hidden_size;
    const char *wq = (const char *)layer->w_hr + q * FN(block_bytes)(H, 1);
    VEC pre[QBT][4];
#if QAMX
    if (FN(amx_fits)(H)) {
        FN(amx_sum) sums[(n + 2 * AMX_ROWS - 1) / AMX_ROWS * AMX_ROWS][4 * VL] __attribute__((aligned(64)));
        FN(amx_sums)(wq, FN(groups)(H), hq, ldq, n, 0, sums, 1);
        for (int r = 0; r < n; r++) {
            FN(amx_pre)(sums[r], wq, hs[r], 0, pre[0], 1);
            FN(vstore)(hout + idx[r] * ldo + (long)q * VL, pre[0][0]);
        }
        return;
    }
#endif
    for (int r0 = 0; r0 < n; r0 += QBT) {
        const int nr = n - r0 < QBT ? n - r0 : QBT;
#define QNG 1
        QDOT_ROWS(nr, wq, FN(groups)(H), hq + r0 * ldq, ldq, hs + r0, 0, 0, pre)
#undef QNG
        for (int r = 0; r < nr; r++) FN(vstore)(hout + idx[r0 + r] * ldo + (long)q * VL, pre[r][0]);
    }
}

/* Projection blocks [first, end) (the `proj` kernel kind): hout[b] + q*V = W_hr hc[b] for the rows with
   t < lengths[b]; each row of hc quantized once. */
ATTR static void FN(qproj_blocks)(const lstm_layer *layer, const lstm_rows *rows, const void *hc_any, long ldc,
                                  void *hout_any, long ldo, int t, lstm_blocks blocks)
{
    const float *hc = (const float *)hc_any;
    float *hout = (float *)hout_any;
    const int H = layer->hidden_size, B = rows->count;
    const long ldq = (long)FN(groups)(H) * QK;
    const int G = FN(group_rows)(ldq);
    AMX_BEGIN(B)
    QBUF(hq, (G + AMX_PAD) * ldq)
    float hs[G];
    int idx[G];
    int n = 0;
    for (int b = 0; b < B; b++) {
        if (t >= rows->lengths[b]) continue;
        FN(quant_rows)(hc + b * ldc, 0, 1, H, hq + n * ldq, ldq, hs + n);
        idx[n++] = b;
        if (n == G) {
            for (int q = blocks.first; q < blocks.end; q++) FN(qproj_block)(layer, q, hq, ldq, hs, n, idx, hout, ldo);
            n = 0;
        }
    }
    if (n)
        for (int q = blocks.first; q < blocks.end; q++) FN(qproj_block)(layer, q, hq, ldq, hs, n, idx, hout, ldo);
    AMX_END()
    QBUF_FREE(hq)
}

/* the GRU's kernels of this instantiation, on the same machinery (gru_quant_impl.h) */
#ifdef GRU_QTABLE_NAME
#include "gru_quant_impl.h"
#endif

#undef QGROUP_BYTES
#undef QGROUP_MAX
#undef QSTACK_BYTES
#undef QBUF
#undef QBUF_FREE
#undef QDOT_ROWS
#undef QDOT_CASES_34
#undef QDOT_CASE_2
#undef AMX_BEGIN
#undef AMX_END
#undef AMX_ROWS
#undef AMX_PAD
#undef AMX_KC
#undef AMX_CELL_AHEAD

/* the kernel table of this instantiation (kernel_api.h) */
static const lstm_kernel_table FN(lstm_table) = {QTABLE_NAME, VBYTES, QBT, FN(qinput_blocks), FN(qcell_blocks),
                                                  FN(qstep_blocks), FN(qproj_blocks), 0 /* finish: never split */};

#undef QK
#undef QEL
#undef QDPBUSD
#undef QDPBF16
#undef Q8_OFFSET
#undef FN
#undef VL
#undef VEC
#undef IVEC
#undef UVEC
