/* probe_impl.h: the bench's probes of the machine's limits for one instruction set, in float32.
 * Included by probes.h with VBYTES, ATTR and SFX defined (as cell_impl.h is by cell_kernels.h).
 */

#define FN(name) CAT3(name, _, SFX)
#define VL (VBYTES / (int)sizeof(float))
#define VEC FN(pvec)
#define IVEC FN(pivec)

typedef float VEC __attribute__((vector_size(VBYTES), aligned(sizeof(float))));
typedef int32_t IVEC __attribute__((vector_size(VBYTES), aligned(sizeof(float))));

ATTR static inline VEC FN(vload)(const float *p) { return *(const VEC *)p; }
ATTR static inline void FN(vstore)(float *p, VEC v) { *(VEC *)p = v; }
ATTR static inline VEC FN(vset1)(float s) { VEC z = {0}; return z + s; }

/* a * b + c as one fused multiply-add where the instruction set has one, written out as the kernels' vfma is: the
   package is built with -ffp-contract=off, under which `a * b + c` stayed a multiply and an add, so the probe
   measured half the FMA peak (about 200 against 340-400 GFLOP/s on 2 cores here) and every bench run reported
   its rows faster than the limit */
#if defined(FASTLSTM_X86) && VBYTES == 64
#define PROBE_FMA(a, b, c) ((VEC)_mm512_fmadd_ps((__m512)(a), (__m512)(b), (__m512)(c)))
#elif defined(FASTLSTM_X86) && VBYTES == 32
#define PROBE_FMA(a, b, c) ((VEC)_mm256_fmadd_ps((__m256)(a), (__m256)(b), (__m256)(c)))
#elif defined(__aarch64__)
#define PROBE_FMA(a, b, c) ((VEC)vfmaq_f32((float32x4_t)(c), (float32x4_t)(a), (float32x4_t)(b)))
#else
#define PROBE_FMA(a, b, c) ((a) * (b) + (c))   /* the x86 baseline has no FMA */
#endif

/* FMA throughput: rounds x PROBE_CHAINS independent vector FMAs acc = acc * 0.5 + 1, enough chains to keep
   every FMA unit busy through the FMA latency. Chain i starts at i, so after r rounds each of its lanes holds
   i / 2^r + 2 - 2^(1 - r); returns the sum of all lanes, so that no work can be dropped. (rounds) -> scalar */
ATTR static float FN(probe_fma)(long rounds) {
    const VEC half = FN(vset1)((float)0.5), one = FN(vset1)((float)1.0);
    VEC acc[PROBE_CHAINS];
    for (int i = 0; i < PROBE_CHAINS; i++) acc[i] = FN(vset1)((float)i);
    for (long r = 0; r < rounds; r++)
        for (int i = 0; i < PROBE_CHAINS; i++) acc[i] = PROBE_FMA(acc[i], half, one);
    float sum = 0;
    for (int i = 0; i < PROBE_CHAINS; i++)
        for (int l = 0; l < VL; l++) sum += acc[i][l];
    return sum;
}

/* Read bandwidth: the sum of p[0:n], read as vectors into PROBE_READ_SUMS running sums, the way the gate
   kernels stream their weights; from the end backwards when descending (cell_blocks alternates its order
   from step to step). p aligned to VBYTES, n a multiple of PROBE_READ_SUMS * VL. (n,) -> scalar */
ATTR static float FN(probe_read)(const float *p, long n, int descending) {
    const long step = PROBE_READ_SUMS * VL;
    VEC sums[PROBE_READ_SUMS] = {{0}};
    for (long i = 0; i < n; i += step) {
        const float *q = p + (descending ? n - step - i : i);
        for (int j = 0; j < PROBE_READ_SUMS; j++) sums[j] += FN(vload)(q + j * VL);
    }
    float sum = 0;
    for (int j = 0; j < PROBE_READ_SUMS; j++)
        for (int l = 0; l < VL; l++) sum += sums[j][l];
    return sum;
}

/* The hand-off probe's writes and reads of h, in vectors as the cell kernels store and load it: p[0:n] = value;
   and how many of p[0:n] differ from value. p aligned to VBYTES, n a multiple of VL. (n,) -> (n,), scalar */
ATTR static void FN(probe_fill)(float *p, long n, float value) {
    const VEC v = FN(vset1)(value);
    for (long i = 0; i < n; i += VL) FN(vstore)(p + i, v);
}
ATTR static long FN(probe_mismatches)(const float *p, long n, float value) {
    const VEC v = FN(vset1)(value);
    IVEC count = {0};
    for (long i = 0; i < n; i += VL) count -= FN(vload)(p + i) != v;   /* a true lane is -1 */
    long total = 0;
    for (int l = 0; l < VL; l++) total += count[l];
    return total;
}

/* this instruction set's probes */
static const probe_table FN(probe_table) = {FN(probe_fma), FN(probe_read), FN(probe_fill), FN(probe_mismatches)};

#undef PROBE_FMA
#undef FN
#undef VL
#undef VEC
#undef IVEC
