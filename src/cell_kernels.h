/* cell_kernels.h: instantiates cell_impl.h for every (cell kind, weight format, instruction set) we ship, finds
 * the CPU's features at run time, chooses a packed model's kernel table from its three keys (kernel_api.h),
 * The OpenMP, waiting and floating-point-mode shims the driver also needs are in team.h.
 *
 * The package is compiled for the architecture's baseline (x86-64: SSE2; aarch64: ASIMD/NEON); the wider
 * x86 paths are compiled through __attribute__((target)) and chosen by lstm_select_kernels(), so one portable
 * wheel runs them all. There is no global dispatch state: each packed model keeps the table it was packed for.
 */
#ifndef FASTLSTM_CELL_KERNELS_H
#define FASTLSTM_CELL_KERNELS_H

#include <float.h>
#include <math.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#define FASTLSTM_X86 1
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#if defined(__linux__)
#include <sys/auxv.h>
#endif
#endif

#include "kernel_api.h"
#include "team.h"

#define CAT3_(a, b, c) a##b##c
#define CAT3(a, b, c) CAT3_(a, b, c)

/* Heap scratch for a kernel, 64-byte aligned (quant_impl.h's QBUF, for rows too long for the stack; freed by the
   kernel). A kernel cannot raise: a failure ends the process with a message. The rows that need it come with
   weights many times their size, already allocated. */
static void *lstm_scratch(long bytes) {
    void *p = aligned_alloc(64, (size_t)(bytes + 63) / 64 * 64);
    if (p == NULL) {
        fprintf(stderr, "fastlstm: no memory for %ld bytes of kernel scratch\n", bytes);
        abort();
    }
    return p;
}

/* ---- instantiations: each defines the tables lstm_table_<SFX> and gru_table_<SFX> (gru_impl.h) ----- */

/* batch rows per register tile of the gate kernel, per vector width (BT in cell_impl.h) */
#define BT_128 2
#define BT_256 2
#define BT_512 4

/* the baseline of the architecture: 16-byte vectors (SSE2 on x86-64, ASIMD on aarch64) */
#define VBYTES 16
#define BT BT_128
#define ATTR
#define REAL float
#define IREAL int32_t
#define LANES 4
#define SFX f32_base
#define TABLE_NAME "lstm/f32/baseline"
#define GRU_TABLE_NAME "gru/f32/baseline"
#include "cell_impl.h"
#include "gru_impl.h"
#undef GRU_TABLE_NAME
#undef REAL
#undef IREAL
#undef LANES
#undef SFX
#undef TABLE_NAME
#define REAL double
#define IREAL int64_t
#define LANES 2
#define SFX f64_base
#define TABLE_NAME "lstm/f64/baseline"
#define GRU_TABLE_NAME "gru/f64/baseline"
#include "cell_impl.h"
#include "gru_impl.h"
#undef GRU_TABLE_NAME
#undef REAL
#undef IREAL
#undef LANES
#undef SFX
#undef TABLE_NAME
#undef VBYTES
#undef BT
#undef ATTR

#ifdef FASTLSTM_X86
#define VBYTES 32
#define BT BT_256
#define ATTR __attribute__((target("avx2,fma")))
#define REAL float
#define IREAL int32_t
#define LANES 8
#define SFX f32_avx2
#define TABLE_NAME "lstm/f32/avx2"
#define GRU_TABLE_NAME "gru/f32/avx2"
#include "cell_impl.h"
#include "gru_impl.h"
#undef GRU_TABLE_NAME
#undef REAL
#undef IREAL
#undef LANES
#undef SFX
#undef TABLE_NAME
#define REAL double
#define IREAL int64_t
#define LANES 4
#define SFX f64_avx2
#define TABLE_NAME "lstm/f64/avx2"
#define GRU_TABLE_NAME "gru/f64/avx2"
#include "cell_impl.h"
#include "gru_impl.h"
#undef GRU_TABLE_NAME
#undef REAL
#undef IREAL
#undef LANES
#undef SFX
#undef TABLE_NAME
#undef VBYTES
#undef BT
#undef ATTR

#define VBYTES 64
#define BT BT_512
#define ATTR __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")))
#define REAL float
#define IREAL int32_t
#define LANES 16
#define SFX f32_avx512
#define TABLE_NAME "lstm/f32/avx512"
#define GRU_TABLE_NAME "gru/f32/avx512"
#include "cell_impl.h"
#include "gru_impl.h"
#undef GRU_TABLE_NAME
#undef REAL
#undef IREAL
#undef LANES
#undef SFX
#undef TABLE_NAME
#define REAL double
#define IREAL int64_t
#define LANES 8
#define SFX f64_avx512
#define TABLE_NAME "lstm/f64/avx512"
#define GRU_TABLE_NAME "gru/f64/avx512"
#include "cell_impl.h"
#include "gru_impl.h"
#undef GRU_TABLE_NAME
#undef REAL
#undef IREAL
#undef LANES
#undef SFX
#undef TABLE_NAME
#undef VBYTES
#undef BT
#undef ATTR
#endif


/* ---- reduced precision: quant_impl.h per (format, instruction set), each defining lstm_table_<SFX> and (through
   gru_quant_impl.h) gru_table_<SFX> ---------
   Their float math has no fused multiply-adds (CELL_NO_FMA; the build has contraction off): the same float
   operations on every instruction set, so the int8 results are bitwise the same everywhere. */
#define CELL_NO_FMA
#define VBYTES 16
#define LANES 4
#define ATTR
#define QNATIVE 0
#define QAMX 0
#define QINT8 0
#define QBT 1         /* the bf16 fallback's two partial sums per gate fill the 16 vector registers at one row */
#define BT 4          /* cell_impl.h's tile of rows: of cell_impl.h, quant_impl.h uses only the float helpers */
#define SFX bf16_base
#define QTABLE_NAME "lstm/bf16/baseline"
#define GRU_QTABLE_NAME "gru/bf16/baseline"
#include "quant_impl.h"
#undef QINT8
#undef QBT
#undef SFX
#undef QTABLE_NAME
#undef GRU_QTABLE_NAME
#define QINT8 1
#define QBT 4
#define SFX int8_base
#define QTABLE_NAME "lstm/int8/baseline"
#define GRU_QTABLE_NAME "gru/int8/baseline"
#include "quant_impl.h"
#undef QINT8
#undef QBT
#undef SFX
#undef QTABLE_NAME
#undef GRU_QTABLE_NAME
#undef VBYTES
#undef LANES
#undef ATTR

#ifdef FASTLSTM_X86
#define VBYTES 32
#define LANES 8
#define ATTR __attribute__((target("avx2,fma")))
#define QINT8 0
#define QBT 1
#define SFX bf16_avx2
#define QTABLE_NAME "lstm/bf16/avx2"
#define GRU_QTABLE_NAME "gru/bf16/avx2"
#include "quant_impl.h"
#undef QINT8
#undef QBT
#undef SFX
#undef QTABLE_NAME
#undef GRU_QTABLE_NAME
#define QINT8 1
#define QBT 4
#define SFX int8_avx2
#define QTABLE_NAME "lstm/int8/avx2"
#define GRU_QTABLE_NAME "gru/int8/avx2"
#include "quant_impl.h"
#undef QINT8
#undef QBT
#undef SFX
#undef QTABLE_NAME
#undef GRU_QTABLE_NAME
#undef VBYTES
#undef LANES
#undef ATTR
#undef QNATIVE

#define VBYTES 64
#define LANES 16
#define QNATIVE 1
#define ATTR __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma,avx512bf16")))
#define QINT8 0
#define QBT 3
#define SFX bf16_avx512
#define QTABLE_NAME "lstm/bf16/avx512bf16"
#define GRU_QTABLE_NAME "gru/bf16/avx512bf16"
#include "quant_impl.h"
#undef ATTR
#undef QINT8
#undef QBT
#undef SFX
#undef QTABLE_NAME
#undef GRU_QTABLE_NAME
#undef QAMX
#define QAMX 1
#define ATTR __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma,avx512bf16,amx-tile,amx-bf16")))
#define QINT8 0
#define QBT 3
#define SFX bf16_amx
#define QTABLE_NAME "lstm/bf16/amx"
#define GRU_QTABLE_NAME "gru/bf16/amx"
#include "quant_impl.h"
#undef ATTR
#undef QINT8
#undef QBT
#undef SFX
#undef QTABLE_NAME
#undef GRU_QTABLE_NAME
#undef QAMX
#define QAMX 0
#define ATTR __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma,avx512vnni")))
#define QINT8 1
#define QBT 4
#define SFX int8_avx512
#define QTABLE_NAME "lstm/int8/avx512vnni"
#define GRU_QTABLE_NAME "gru/int8/avx512vnni"
#include "quant_impl.h"
#undef ATTR
#undef QINT8
#undef QBT
#undef SFX
#undef QTABLE_NAME
#undef GRU_QTABLE_NAME
#undef QAMX
#define QAMX 1
#define ATTR __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma,avx512vnni,amx-tile,amx-int8")))
#define QINT8 1
#define QBT 4
#define SFX int8_amx
#define QTABLE_NAME "lstm/int8/amx"
#define GRU_QTABLE_NAME "gru/int8/amx"
#include "quant_impl.h"
#undef ATTR
#undef QINT8
#undef QBT
#undef SFX
#undef QTABLE_NAME
#undef GRU_QTABLE_NAME
#undef VBYTES
#undef LANES
#endif
#undef QNATIVE
#undef QAMX
#undef BT
#undef CELL_NO_FMA

/* ---- CPU features ------------------------------------------------------------------------------- */

#define LSTM_NEEDS_AVX2 (LSTM_FEATURE_avx2 | LSTM_FEATURE_fma)
#define LSTM_NEEDS_AVX512                                                                                       \
    (LSTM_NEEDS_AVX2 | LSTM_FEATURE_avx512f | LSTM_FEATURE_avx512bw | LSTM_FEATURE_avx512dq | LSTM_FEATURE_avx512vl)

#ifdef FASTLSTM_X86
/* Whether this process may use AMX tiles: Linux gives their register state only to a process that asks
   (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA; children inherit it); elsewhere, no. */
static int lstm_amx_permitted(void) {
#if defined(__linux__)
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#else
    return 0;
#endif
}
#endif

/* The features of this CPU (and enabled by the OS: AVX and AVX-512 register state), LSTM_FEATURE_* bits. */
static unsigned lstm_cpu_features(void) {
    unsigned f = 0;
#ifdef FASTLSTM_X86
    unsigned a, b, c, d, max_leaf = __get_cpuid_max(0, 0);
    if (max_leaf < 1 || !__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    unsigned long long xcr0 = 0;
    if (osxsave) {
        unsigned lo, hi;
        __asm__ __volatile__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        xcr0 = ((unsigned long long)hi << 32) | lo;
    }
    const int ymm_state = avx && (xcr0 & 0x6) == 0x6, zmm_state = ymm_state && (xcr0 & 0xe0) == 0xe0;
    if (!ymm_state || max_leaf < 7) return 0;
    if (fma) f |= LSTM_FEATURE_fma;
    __cpuid_count(7, 0, a, b, c, d);
    const unsigned max_sub = a;
    if ((b >> 5) & 1) f |= LSTM_FEATURE_avx2;
    if (zmm_state) {
        if ((b >> 16) & 1) f |= LSTM_FEATURE_avx512f;
        if ((b >> 17) & 1) f |= LSTM_FEATURE_avx512dq;
        if ((b >> 30) & 1) f |= LSTM_FEATURE_avx512bw;
        if ((b >> 31) & 1) f |= LSTM_FEATURE_avx512vl;
        if ((c >> 11) & 1) f |= LSTM_FEATURE_avx512_vnni;
    }
    /* AMX: the CPU's tiles (leaf 7 EDX bit 24; int8 and bf16 products: bits 25 and 22), their state enabled by the OS (XCR0 bits 17 and 18), and
       this process's permission to use them (Linux asks for it once: lstm_amx_permitted) */
    if (zmm_state && ((d >> 24) & 1) && (xcr0 & 0x60000) == 0x60000 && lstm_amx_permitted()) {
        if ((d >> 25) & 1) f |= LSTM_FEATURE_amx_int8;
        if ((d >> 22) & 1) f |= LSTM_FEATURE_amx_bf16;
    }
    if (max_sub >= 1) {
        __cpuid_count(7, 1, a, b, c, d);
        if ((a >> 4) & 1) f |= LSTM_FEATURE_avx_vnni;
        if (zmm_state && ((a >> 5) & 1)) f |= LSTM_FEATURE_avx512_bf16;
    }
#elif defined(__aarch64__)
    f |= LSTM_FEATURE_asimd;   /* part of the aarch64 baseline */
#if defined(__linux__)
    unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
    if (hw & (1ul << 20)) f |= LSTM_FEATURE_dotprod;   /* HWCAP_ASIMDDP */
    if (hw2 & (1ul << 14)) f |= LSTM_FEATURE_bf16;     /* HWCAP2_BF16 */
    if (hw2 & (1ul << 13)) f |= LSTM_FEATURE_i8mm;     /* HWCAP2_I8MM */
#endif
#endif
    return f;
}

/* The name of feature bit `bit`, or NULL when the bit names no feature. */
static inline const char *lstm_feature_name(int bit) {
    switch (bit) {
#define LSTM_FEATURE_CASE(b, name) case b: return #name;
        LSTM_FEATURES(LSTM_FEATURE_CASE)
#undef LSTM_FEATURE_CASE
        default: return NULL;
    }
}

/* ---- kernel tables ------------------------------------------------------------------------------ */

/* Every instantiation: cell kind, weight format, the features it needs, its table; the best of a kind first. */
#ifdef FASTLSTM_X86
#define LSTM_WIDE_INSTANCES(X)                                                                                  \
    X(LSTM_CELL_LSTM, LSTM_FORMAT_BF16, LSTM_NEEDS_AVX512 | LSTM_FEATURE_avx512_bf16 | LSTM_FEATURE_amx_bf16,         \
      lstm_table_bf16_amx)                                                                                          \
    X(LSTM_CELL_LSTM, LSTM_FORMAT_BF16, LSTM_NEEDS_AVX512 | LSTM_FEATURE_avx512_bf16, lstm_table_bf16_avx512)       \
    X(LSTM_CELL_LSTM, LSTM_FORMAT_INT8, LSTM_NEEDS_AVX512 | LSTM_FEATURE_avx512_vnni | LSTM_FEATURE_amx_int8,         \
      lstm_table_int8_amx)                                                                                          \
    X(LSTM_CELL_LSTM, LSTM_FORMAT_INT8, LSTM_NEEDS_AVX512 | LSTM_FEATURE_avx512_vnni, lstm_table_int8_avx512)       \
    X(LSTM_CELL_LSTM, LSTM_FORMAT_BF16, LSTM_NEEDS_AVX2, lstm_table_bf16_avx2)                                      \
    X(LSTM_CELL_LSTM, LSTM_FORMAT_INT8, LSTM_NEEDS_AVX2, lstm_table_int8_avx2)                                      \
    X(LSTM_CELL_GRU, LSTM_FORMAT_BF16, LSTM_NEEDS_AVX512 | LSTM_FEATURE_avx512_bf16 | LSTM_FEATURE_amx_bf16,          \
      gru_table_bf16_amx)                                                                                           \
    X(LSTM_CELL_GRU, LSTM_FORMAT_BF16, LSTM_NEEDS_AVX512 | LSTM_FEATURE_avx512_bf16, gru_table_bf16_avx512)         \
    X(LSTM_CELL_GRU, LSTM_FORMAT_INT8, LSTM_NEEDS_AVX512 | LSTM_FEATURE_avx512_vnni | LSTM_FEATURE_amx_int8,          \
      gru_table_int8_amx)                                                                                           \
    X(LSTM_CELL_GRU, LSTM_FORMAT_INT8, LSTM_NEEDS_AVX512 | LSTM_FEATURE_avx512_vnni, gru_table_int8_avx512)         \
    X(LSTM_CELL_GRU, LSTM_FORMAT_BF16, LSTM_NEEDS_AVX2, gru_table_bf16_avx2)                                        \
    X(LSTM_CELL_GRU, LSTM_FORMAT_INT8, LSTM_NEEDS_AVX2, gru_table_int8_avx2)                                        \
    X(LSTM_CELL_LSTM, LSTM_FORMAT_F32, LSTM_NEEDS_AVX512, lstm_table_f32_avx512)                                    \
    X(LSTM_CELL_LSTM, LSTM_FORMAT_F64, LSTM_NEEDS_AVX512, lstm_table_f64_avx512)                                    \
    X(LSTM_CELL_LSTM, LSTM_FORMAT_F32, LSTM_NEEDS_AVX2, lstm_table_f32_avx2)                                        \
    X(LSTM_CELL_LSTM, LSTM_FORMAT_F64, LSTM_NEEDS_AVX2, lstm_table_f64_avx2)                                        \
    X(LSTM_CELL_GRU, LSTM_FORMAT_F32, LSTM_NEEDS_AVX512, gru_table_f32_avx512)                                      \
    X(LSTM_CELL_GRU, LSTM_FORMAT_F64, LSTM_NEEDS_AVX512, gru_table_f64_avx512)                                      \
    X(LSTM_CELL_GRU, LSTM_FORMAT_F32, LSTM_NEEDS_AVX2, gru_table_f32_avx2)                                          \
    X(LSTM_CELL_GRU, LSTM_FORMAT_F64, LSTM_NEEDS_AVX2, gru_table_f64_avx2)
#else
#define LSTM_WIDE_INSTANCES(X)
#endif
#define LSTM_INSTANCES(X)                                                                                       \
    LSTM_WIDE_INSTANCES(X)                                                                                      \
    X(LSTM_CELL_LSTM, LSTM_FORMAT_F32, 0u, lstm_table_f32_base)                                                     \
    X(LSTM_CELL_LSTM, LSTM_FORMAT_F64, 0u, lstm_table_f64_base)                                                     \
    X(LSTM_CELL_GRU, LSTM_FORMAT_F32, 0u, gru_table_f32_base)                                                       \
    X(LSTM_CELL_GRU, LSTM_FORMAT_F64, 0u, gru_table_f64_base)                                                       \
    X(LSTM_CELL_LSTM, LSTM_FORMAT_BF16, 0u, lstm_table_bf16_base)                                                   \
    X(LSTM_CELL_LSTM, LSTM_FORMAT_INT8, 0u, lstm_table_int8_base)                                                   \
    X(LSTM_CELL_GRU, LSTM_FORMAT_BF16, 0u, gru_table_bf16_base)                                                     \
    X(LSTM_CELL_GRU, LSTM_FORMAT_INT8, 0u, gru_table_int8_base)

/* The kernels for a cell kind and weight format on a CPU with `features` (LSTM_FEATURE_* bits, possibly
   capped by the caller): the first instantiation of that kind and format whose needs the features meet, or
   NULL when there is none. */
static inline const lstm_kernel_table *lstm_select_kernels(int cell_kind, int format, unsigned features) {
#define LSTM_INSTANCE_MATCH(cell, fmt, needs, table)                                                                \
    if (cell_kind == (cell) && format == (fmt) && ((needs) & ~features) == 0)                                       \
        return &table;
    LSTM_INSTANCES(LSTM_INSTANCE_MATCH)
#undef LSTM_INSTANCE_MATCH
    return NULL;
}

#endif
