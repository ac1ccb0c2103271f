/* native_test.h: what the native kernel test's three files share: one LSTM direction in torch's layout
 * (float64), the plain C reference that runs it, and its weights packed the way fastlstm/_packing.py packs
 * them for a block width of V elements.
 *
 * reference.c and packing.c know nothing of the kernels (they do not include src/); kernel_test.c runs the
 * kernels on the packed weights and compares with the reference.
 */
#ifndef FASTLSTM_NATIVE_TEST_H
#define FASTLSTM_NATIVE_TEST_H

#include <stddef.h>

/* One layer-direction and its input. K = P when P > 0, else H: the width of h and of the outputs. */
typedef struct {
    int T, B, I, H, P;          /* steps, batch rows, input size, hidden units, projection size (0: none) */
    int input_forget;           /* f = 1 - i */
    int reverse;                /* steps run from T - 1 down to 0 */
    double clip;                /* pre-activations clipped to [-clip, clip]; <= 0: no clipping */
    const double *w_ih;         /* (4H, I), gate rows i, f, g, o */
    const double *w_hh;         /* (4H, K) */
    const double *bias;         /* (4H,): b_ih + b_hh */
    const double *peep;         /* (3, H): peephole weights i, f, o; NULL: no peepholes */
    const double *w_hr;         /* (P, H); NULL when P == 0 */
    const double *x;            /* (T, B, I) */
    const double *h0;           /* (B, K) */
    const double *c0;           /* (B, H) */
    const int *lengths;         /* (B,): row b runs steps t < lengths[b], 1 <= lengths[b] <= T */
} kt_lstm;

static inline int kt_out_size(const kt_lstm *p) { return p->P > 0 ? p->P : p->H; }

/* The forward of one direction in scalar float64 with libm's exp and tanh, from the gate equations:
   out (T, B, K), zero at t >= lengths[b]; hn (B, K), cn (B, H), the states after each row's last step. */
void kt_reference(const kt_lstm *p, double *out, double *hn, double *cn);

/* p's weights in the packed layout of block width V (see src/cell_impl.h and fastlstm/_packing.py). */
typedef struct {
    int V, NB, NP;              /* block width, blocks of hidden units, blocks of projected units */
    int narrow;                 /* the last block is narrow (0 < H mod V <= V/2) */
    double *w_ih;               /* (NB, I, 4, V) */
    double *w_hh;               /* (NB, K, 4, V) */
    double *bias;               /* (NB, 4, V) */
    double *peep;               /* (NB, 3, V) or NULL */
    double *w_hr;               /* (NP, H, V) or NULL */
    size_t n_w_ih, n_w_hh, n_bias, n_peep, n_w_hr;   /* their element counts */
} kt_packed;

/* Pack p's weights for block width V (even, >= 2). Returns 0, or -1 when out of memory. */
int kt_pack(const kt_lstm *p, int V, kt_packed *out);
void kt_packed_free(kt_packed *w);

/* n elements, zeroed, on a 64-byte boundary (free with free()); NULL when out of memory */
void *kt_alloc(size_t n, size_t elem_size);

#endif
