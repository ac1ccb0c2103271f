/* kernel_api.h: what the driver (_kernels.pyx) and the micro-kernels (cell_impl.h) agree on.
 *
 * - the keys that choose a packed model's kernels: cell kind, weight format, CPU features;
 * - the argument structs every kernel takes (a layer-direction's packed weights and cell parameters, the rows,
 *   the blocks, the state, a chunk of the sequence);
 * - LSTM_KERNEL_KINDS: the one list of kernel kinds and their signatures, from which the function-pointer
 *   typedefs and the fields of a kernel table are generated;
 * - lstm_kernel_table: the kernels of one (cell kind, weight format, instruction set), stored with the packed
 *   weights (see cell_kernels.h for the instantiations and the selection).
 * Pointers to weights and activations are untyped: a table's kernels know their element type, so the driver
 * calls each kernel kind once whatever the format.
 */
#ifndef FASTLSTM_KERNEL_API_H
#define FASTLSTM_KERNEL_API_H

/* cell kinds: the gates a step computes and the update that consumes them */
enum { LSTM_CELL_LSTM = 0, LSTM_CELL_GRU = 1 };

/* weight formats: how a block of weights is stored and dotted; bf16 and int8 models (quant_impl.h) keep float32
   activations, rounded to the format inside the dot products */
enum { LSTM_FORMAT_F32 = 0, LSTM_FORMAT_F64 = 1, LSTM_FORMAT_BF16 = 2, LSTM_FORMAT_INT8 = 3 };

/* CPU features, one bit each (cell_kernels.h finds them at run time): bit, name */
#define LSTM_FEATURES(X)                                                                                        \
    X(0, avx2) X(1, fma) X(2, avx512f) X(3, avx512bw) X(4, avx512dq) X(5, avx512vl) X(6, avx512_bf16)            \
    X(7, avx512_vnni) X(8, avx_vnni) X(9, amx_int8) X(10, amx_bf16) X(16, asimd) X(17, bf16) X(18, dotprod) X(19, i8mm)
#define LSTM_FEATURE_ENUM(bit, name) LSTM_FEATURE_##name = 1u << bit,
enum { LSTM_FEATURES(LSTM_FEATURE_ENUM) };
#undef LSTM_FEATURE_ENUM

/* One layer-direction as the kernels read it: packed weights (layouts at the top of cell_impl.h) and the
   cell's parameters. */
typedef struct {
    const void *w_ih;   /* (NB, I, 4, V) */
    const void *w_hh;   /* (NB, K, 4, V) */
    const void *bias;   /* (NB, 4, V): b_ih + b_hh */
    const void *peep;   /* (NB, 3, V), or NULL without peepholes */
    const void *w_hr;   /* (NP, H, V), or NULL without a projection */
    int input_size;     /* I of this layer */
    int hidden_size;    /* H */
    int out_size;       /* K: H_out, the recurrent input size */
    int narrow;         /* index of the narrow last block of units, or -1 */
    double clip;        /* gate pre-activations clipped to [-clip, clip]; <= 0: no clipping */
    int input_forget;   /* f = 1 - i */
    const void *bias_hn;   /* GRU: (NB, V) b_hn, kept inside the reset product (linear_before_reset), or NULL */
    int split_step;     /* the cell kernel runs the first half of a step; once every thread of the direction has,
                           the finish kernel the second (GRU without linear_before_reset: r * h of all units) */
} lstm_layer;

/* The rows of a batch a kernel computes: row b < count is active at step t while t < lengths[b]. */
typedef struct {
    const int *lengths;
    int count;
} lstm_rows;

/* Blocks [first, end) of hidden units (or of projected units, for the projection). */
typedef struct {
    int first, end;
} lstm_blocks;

/* The state one step reads and writes, row strides in elements. */
typedef struct {
    const void *h;  /* (B, K) h_{t-1}, stride ldh */
    long ldh;
    void *c;        /* (B, Hp) cell state, updated in place, stride ldc (a GRU: its r * h, see gru_impl.h) */
    long ldc;
    void *hout;     /* (B, Hp) h_t before any projection, stride ldo */
    long ldo;
} lstm_state;

/* A chunk of the input sequence and of its projection: x[s, b] (I,) at x + s*x_ts + b*x_bs, gx[s, b]
   (NB*4V,) at gx + s*g_ts + b*g_bs, strides in elements. */
typedef struct {
    const void *x;
    long x_ts, x_bs;
    void *gx;
    long g_ts, g_bs;
} lstm_chunk;

/* Every kernel kind, with its signature (the one place it is written):
   input  gx[s, b] = bias + W_ih x[s, b] for the chunk's steps t0 .. t0 + nsteps - 1 (rows past their length
          are not read);
   cell   gates = gx + W_hh h, then the cell update in place, at step t (gx (B, NB*4V) stride ldg);
   step   one time step (T = 1): each block's input projection right before its cell update, blocks in
          descending order when `descending` (chunk: x rows and a gx scratch of one step);
   proj   h_t = W_hr hc for the projection blocks at step t (hc (B, H) stride ldc; hout (B, NP*V) stride ldo);
   finish the second half of a split step t (layer->split_step), arguments as for cell; NULL in tables of cells
          whose steps are never split. */
#define LSTM_KERNEL_KINDS(X)                                                                                    \
    X(input, (const lstm_layer *layer, const lstm_rows *rows, const lstm_chunk *chunk, int t0, int nsteps,      \
              lstm_blocks blocks))                                                                              \
    X(cell, (const lstm_layer *layer, const lstm_rows *rows, const void *gx, long ldg, const lstm_state *state, \
             int t, lstm_blocks blocks))                                                                        \
    X(step, (const lstm_layer *layer, const lstm_rows *rows, const lstm_chunk *chunk, const lstm_state *state,  \
             lstm_blocks blocks, int descending))                                                               \
    X(proj, (const lstm_layer *layer, const lstm_rows *rows, const void *hc, long ldc, void *hout, long ldo,    \
             int t, lstm_blocks blocks))                                                                        \
    X(finish, (const lstm_layer *layer, const lstm_rows *rows, const void *gx, long ldg,                         \
               const lstm_state *state, int t, lstm_blocks blocks))

#define LSTM_KERNEL_TYPEDEF(kind, params) typedef void (*lstm_##kind##_fn) params;
LSTM_KERNEL_KINDS(LSTM_KERNEL_TYPEDEF)
#undef LSTM_KERNEL_TYPEDEF

/* The kernels of one packed model, chosen when its weights are packed and stored with them. */
typedef struct {
    const char *name;   /* "<cell>/<format>/<instruction set>", e.g. "lstm/f32/avx512" */
    int vector_bytes;   /* one block of units is vector_bytes / element size wide in the packed layout */
    int tile_rows;      /* batch rows per register tile of the cell kernel */
#define LSTM_KERNEL_FIELD(kind, params) lstm_##kind##_fn kind;
    LSTM_KERNEL_KINDS(LSTM_KERNEL_FIELD)
#undef LSTM_KERNEL_FIELD
} lstm_kernel_table;

#endif
