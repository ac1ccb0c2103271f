"""Native core of fastlstm: the forward pass over all layers and directions, without the GIL.

Per layer and direction: the input projection of a chunk of time steps is one BLAS GEMM (biases are added
in the cell kernel); then one OpenMP parallel region runs the recurrence over the chunk. Each thread owns a
fixed range of blocks of hidden units for the whole sequence (so its slice of W_hh stays in its core's
cache) and meets the others at one barrier per step (two with a projection). The cell micro-kernels live
in cell_kernels.h. Every element is computed by one thread in a fixed order, so results do not depend on
the thread count. Python (fastlstm/_lstm.py) validates every argument before calling in here.
"""
from cython cimport floating
from cython.parallel cimport parallel
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
cimport numpy as cnp
import numpy as np

from blas cimport gemm_nt

cnp.import_array()

cdef extern from "cell_kernels.h" nogil:
    int lstm_select_isa(int max_level)
    int lstm_cpu_isa_level()
    const char *lstm_isa_name()
    int lstm_vector_bytes()
    int lstm_openmp_enabled()
    int lstm_thread_id()
    int lstm_team_size()
    void lstm_barrier()
    unsigned int lstm_ftz_enter()
    void lstm_ftz_leave(unsigned int saved)
    void cell_blocks_f32(const float *w, const float *gx, long ldg, const float *bias, const float *peep,
                         float clip, int input_forget, const float *h, long ldh, float *c, long ldc,
                         float *hout, long ldo, const int *lengths, int t, int B, int K, int j0, int j1)
    void cell_blocks_f64(const double *w, const double *gx, long ldg, const double *bias, const double *peep,
                         double clip, int input_forget, const double *h, long ldh, double *c, long ldc,
                         double *hout, long ldo, const int *lengths, int t, int B, int K, int j0, int j1)
    void proj_blocks_f32(const float *w, const float *hc, long ldc, float *hout, long ldo,
                         const int *lengths, int t, int B, int Kc, int q0, int q1)
    void proj_blocks_f64(const double *w, const double *hc, long ldc, double *hout, long ldo,
                         const int *lengths, int t, int B, int Kc, int q0, int q1)

cdef enum:
    # Budget for one chunk of the input projection (T_chunk * B * 4 * Hp elements), in bytes.
    GX_CHUNK_BYTES = 4 * 1024 * 1024
    # Workspace sections start on 64-byte boundaries (in elements of the smallest dtype: 16 floats).
    ALIGN_ELEMS = 16


def select_isa(int max_level=-1):
    """Select the micro-kernels: the best the CPU supports, capped at ``max_level`` (2 AVX-512, 1 AVX2, 0 SSE2).

    Returns the level used. Packed weights depend on the vector width, so models must be repacked after.
    """
    return lstm_select_isa(max_level)


def isa_name():
    """Name of the selected instruction set: "avx512", "avx2" or "sse2"."""
    return lstm_isa_name().decode()


def cpu_isa_level():
    """Best level this CPU supports (2 AVX-512, 1 AVX2+FMA, 0 baseline)."""
    return lstm_cpu_isa_level()


def vector_bytes():
    """Width in bytes of one block of hidden units in the packed layout of the selected kernels."""
    return lstm_vector_bytes()


def openmp_enabled():
    """Whether this build was compiled with OpenMP."""
    return bool(lstm_openmp_enabled())


def gemm_nt_check(floating[:, ::1] A, floating[:, ::1] B):
    """Test twin of the BLAS wrapper: returns A (M, K) @ B (N, K).T."""
    cdef int M = A.shape[0], K = A.shape[1], N = B.shape[0]
    C = np.zeros((M, N), dtype=np.float32 if floating is float else np.float64)
    cdef floating[:, ::1] c = C
    if M > 0 and N > 0 and K > 0:
        gemm_nt(M, N, K, &A[0, 0], K, &B[0, 0], K, 0, &c[0, 0], N)
    return C


cdef struct DirWeights:
    const void *w_ih     # (4Hp, I_k): rows of W_ih in packed gate order, zero rows for padding units
    const void *w_hh     # (NB, K, 4, V)
    const void *bias     # (NB, 4, V): b_ih + b_hh
    const void *peep     # (NB, 3, V) or NULL
    const void *w_hr     # (NP, H, V) or NULL
    int input_size


cdef struct ModelInfo:
    int num_layers, num_directions, hidden_size, proj_size, out_size, block, num_blocks, num_proj_blocks
    int is_double, input_forget, reverse_only
    double clip
    DirWeights *dirs     # (num_layers * num_directions,)


cdef class PackedModel:
    """Pointers to the packed weights of every layer and direction, and the shapes the kernels need.

    Built by fastlstm._packing from NumPy arrays, which it keeps alive; immutable once built.
    """
    cdef ModelInfo info
    cdef readonly tuple arrays

    def __cinit__(self, int num_layers, int num_directions, int hidden_size, int proj_size, int block,
                  bint is_double, double clip, bint input_forget, bint reverse_only, tuple arrays):
        self.info.dirs = <DirWeights *> malloc(num_layers * num_directions * sizeof(DirWeights))
        if self.info.dirs == NULL:
            raise MemoryError()
        self.info.num_layers = num_layers
        self.info.num_directions = num_directions
        self.info.hidden_size = hidden_size
        self.info.proj_size = proj_size
        self.info.out_size = proj_size if proj_size > 0 else hidden_size
        self.info.block = block
        self.info.num_blocks = (hidden_size + block - 1) // block
        self.info.num_proj_blocks = (proj_size + block - 1) // block
        self.info.is_double = is_double
        self.info.clip = clip
        self.info.input_forget = input_forget
        self.info.reverse_only = reverse_only
        self.arrays = arrays
        cdef int i
        cdef tuple entry
        cdef DirWeights *w
        for i in range(num_layers * num_directions):
            entry = arrays[i]
            w = &self.info.dirs[i]
            w.w_ih = cnp.PyArray_DATA(entry[0])
            w.w_hh = cnp.PyArray_DATA(entry[1])
            w.bias = cnp.PyArray_DATA(entry[2])
            w.peep = NULL if entry[3] is None else cnp.PyArray_DATA(entry[3])
            w.w_hr = NULL if entry[4] is None else cnp.PyArray_DATA(entry[4])
            w.input_size = entry[0].shape[1]

    def __dealloc__(self):
        free(self.info.dirs)

    def workspace_size(self, long T, long B):
        """Elements of workspace a forward over T steps and B rows needs (see _plan_workspace)."""
        return _plan_workspace(&self.info, T, B).total


cdef long _chunk_steps(const ModelInfo *m, long T, long B) noexcept nogil:
    """Time steps per chunk of the input projection, so that a chunk of gx fits GX_CHUNK_BYTES."""
    cdef long row_bytes = B * 4 * m.num_blocks * m.block * (8 if m.is_double else 4)
    cdef long steps = GX_CHUNK_BYTES // row_bytes if row_bytes > 0 else T
    return max(1, min(T, steps))


cdef struct Sections:
    long gx, h, c, hc, seq0, seq1, total


cdef Sections _plan_workspace(const ModelInfo *m, long T, long B) noexcept nogil:
    """Offsets of the workspace sections, each aligned: gx (T_chunk, B, 4Hp) input projection;
    h (2, B, ldh) double-buffered hidden state; c (B, Hp) cell state; hc (B, Hp) pre-projection
    output; seq0/seq1 (T, B, D*K) outputs of inner layers."""
    cdef Sections s
    cdef long Hp = m.num_blocks * m.block
    cdef long ldh = m.num_proj_blocks * m.block if m.proj_size > 0 else Hp
    cdef long seq = T * B * m.num_directions * m.out_size
    s.gx = 0
    s.h = _aligned(s.gx + _chunk_steps(m, T, B) * B * 4 * Hp)
    s.c = _aligned(s.h + 2 * B * ldh)
    s.hc = _aligned(s.c + B * Hp)
    s.seq0 = _aligned(s.hc + (B * Hp if m.proj_size > 0 else 0))
    s.seq1 = _aligned(s.seq0 + (seq if m.num_layers >= 2 else 0))
    s.total = _aligned(s.seq1 + (seq if m.num_layers >= 3 else 0))
    return s


cdef inline long _aligned(long n) noexcept nogil:
    return (n + ALIGN_ELEMS - 1) // ALIGN_ELEMS * ALIGN_ELEMS


cdef struct StepContext:
    # shapes
    int T, B, H, Hp, K, ldh, P, num_blocks, num_proj_blocks, reverse, input_forget
    double clip
    # this layer-direction's packed weights
    DirWeights w
    # input projection of the chunk: gx[t, b] at gx + (t - t_lo) * gx_ts + b * gx_bs
    void *gx
    long gx_ts, gx_bs
    int t_lo, t_hi
    long step0               # steps done before this chunk (selects the h buffer)
    # state and outputs
    void *h                  # (2, B, ldh)
    void *c                  # (B, Hp)
    void *hc                 # (B, Hp) or NULL
    void *out                # out[t, b, u] at out + t * out_ts + b * out_bs + u (direction offset applied)
    long out_ts, out_bs
    const int *lengths       # (B,)


cdef void _thread_steps(StepContext *ctx, floating *h_buf) noexcept nogil:
    """One thread's share of the steps [t_lo, t_hi) of one chunk: its blocks of units, all B rows."""
    cdef int tid = lstm_thread_id(), nt = lstm_team_size()
    cdef int j0 = ctx.num_blocks * tid // nt, j1 = ctx.num_blocks * (tid + 1) // nt
    cdef int q0 = ctx.num_proj_blocks * tid // nt, q1 = ctx.num_proj_blocks * (tid + 1) // nt
    cdef int B = ctx.B, K = ctx.K, ldh = ctx.ldh
    # units of h this thread writes: hidden units without a projection, projected units with one
    cdef int u0, u1
    if ctx.P > 0:
        u0 = q0 * (ctx.Hp // ctx.num_blocks)
        u1 = min(q1 * (ctx.Hp // ctx.num_blocks), ctx.P)
    else:
        u0 = j0 * (ctx.Hp // ctx.num_blocks)
        u1 = min(j1 * (ctx.Hp // ctx.num_blocks), ctx.H)
    cdef floating *c = <floating *> ctx.c
    cdef floating *hc = <floating *> ctx.hc
    cdef const floating *gx
    cdef floating *h_prev
    cdef floating *h_next
    cdef floating *out_row
    cdef floating *src
    cdef int s, t, b, u, nsteps = ctx.t_hi - ctx.t_lo
    cdef long step
    cdef unsigned int saved_mode = lstm_ftz_enter()
    for s in range(nsteps):
        t = ctx.t_hi - 1 - s if ctx.reverse else ctx.t_lo + s
        step = ctx.step0 + s
        h_prev = h_buf + (step % 2) * B * ldh
        h_next = h_buf + ((step + 1) % 2) * B * ldh
        gx = <const floating *> ctx.gx + (t - ctx.t_lo) * ctx.gx_ts
        if floating is float:
            cell_blocks_f32(<const float *> ctx.w.w_hh, gx, ctx.gx_bs, <const float *> ctx.w.bias,
                            <const float *> ctx.w.peep, <float> ctx.clip, ctx.input_forget,
                            h_prev, ldh, c, ctx.Hp, hc if ctx.P > 0 else h_next, ctx.Hp if ctx.P > 0 else ldh,
                            ctx.lengths, t, B, K, j0, j1)
        else:
            cell_blocks_f64(<const double *> ctx.w.w_hh, gx, ctx.gx_bs, <const double *> ctx.w.bias,
                            <const double *> ctx.w.peep, ctx.clip, ctx.input_forget,
                            h_prev, ldh, c, ctx.Hp, hc if ctx.P > 0 else h_next, ctx.Hp if ctx.P > 0 else ldh,
                            ctx.lengths, t, B, K, j0, j1)
        if ctx.P > 0:
            lstm_barrier()       # all of hc is written
            if floating is float:
                proj_blocks_f32(<const float *> ctx.w.w_hr, hc, ctx.Hp, h_next, ldh, ctx.lengths, t, B, ctx.H, q0, q1)
            else:
                proj_blocks_f64(<const double *> ctx.w.w_hr, hc, ctx.Hp, h_next, ldh, ctx.lengths, t, B, ctx.H, q0, q1)
        for b in range(B):
            out_row = <floating *> ctx.out + t * ctx.out_ts + b * ctx.out_bs
            if t < ctx.lengths[b]:
                src = h_next + b * ldh
                for u in range(u0, u1):
                    out_row[u] = src[u]
            else:           # past this row's length: state carried over, output zero
                src = h_prev + b * ldh
                for u in range(u0, u1):
                    h_next[b * ldh + u] = src[u]
                    out_row[u] = 0
        lstm_barrier()           # all of h_next is written before anyone reads it as h_prev
    lstm_ftz_leave(saved_mode)


cdef void _run_direction(StepContext *ctx, const floating *x, long x_ts, long x_bs, int I,
                         const floating *h0, const floating *c0, floating *hn, floating *cn,
                         long chunk, int num_threads) noexcept nogil:
    """One layer in one direction over the whole sequence: h0/c0 (B, K)/(B, H) in, hn/cn out."""
    cdef int T = ctx.T, B = ctx.B, K = ctx.K, H = ctx.H, Hp = ctx.Hp, ldh = ctx.ldh
    cdef int b, nchunks = <int> ((T + chunk - 1) // chunk), ci, rows, G = 4 * Hp
    cdef floating *h_buf = <floating *> ctx.h
    cdef floating *c = <floating *> ctx.c
    cdef floating *gx = <floating *> ctx.gx
    cdef floating *final_h
    cdef unsigned int saved_mode
    for b in range(B):
        memcpy(h_buf + b * ldh, h0 + b * K, K * sizeof(floating))
        memcpy(c + b * Hp, c0 + b * H, H * sizeof(floating))
    ctx.step0 = 0
    for ci in range(nchunks):
        if ctx.reverse:
            ctx.t_hi = T - ci * chunk
            ctx.t_lo = max(0, ctx.t_hi - chunk)
        else:
            ctx.t_lo = ci * chunk
            ctx.t_hi = min(T, ctx.t_lo + chunk)
        rows = ctx.t_hi - ctx.t_lo
        saved_mode = lstm_ftz_enter()
        if x_bs == I:        # time-major: the chunk's rows are contiguous
            ctx.gx_ts = B * G
            ctx.gx_bs = G
            gemm_nt(rows * B, G, I, x + ctx.t_lo * x_ts, I, <const floating *> ctx.w.w_ih, I, 0, gx, G)
        elif rows == T:      # batch-major, whole sequence: one GEMM over (b, t) rows
            ctx.gx_ts = G
            ctx.gx_bs = <long> T * G
            gemm_nt(B * T, G, I, x, I, <const floating *> ctx.w.w_ih, I, 0, gx, G)
        else:                # batch-major chunk: one GEMM per batch row
            ctx.gx_ts = G
            ctx.gx_bs = rows * G
            for b in range(B):
                gemm_nt(rows, G, I, x + b * x_bs + ctx.t_lo * x_ts, I, <const floating *> ctx.w.w_ih, I, 0,
                        gx + b * rows * G, G)
        lstm_ftz_leave(saved_mode)
        with parallel(num_threads=num_threads):
            _thread_steps(ctx, h_buf)
        ctx.step0 += rows
    final_h = h_buf + (T % 2) * B * ldh
    for b in range(B):
        memcpy(hn + b * K, final_h + b * ldh, K * sizeof(floating))
        memcpy(cn + b * H, c + b * Hp, H * sizeof(floating))


cdef void _forward(const ModelInfo *m, const floating *x, int T, int B, bint batch_first,
                   const floating *h0, const floating *c0, const int *lengths,
                   floating *out, floating *hn, floating *cn, floating *ws, int num_threads) noexcept nogil:
    """All layers and directions. x (T, B, I) or (B, T, I); h0/hn (L*D, B, K); c0/cn (L*D, B, H);
    out (T, B, D*K) or (B, T, D*K); ws sized by PackedModel.workspace_size."""
    cdef Sections sec = _plan_workspace(m, T, B)
    cdef StepContext ctx
    cdef int L = m.num_layers, D = m.num_directions, K = m.out_size, H = m.hidden_size
    cdef int layer, d, I
    cdef long idx, chunk = _chunk_steps(m, T, B), DK = D * K
    cdef const floating *inp = x
    cdef floating *dst
    memset(&ctx, 0, sizeof(StepContext))
    ctx.T = T
    ctx.B = B
    ctx.H = H
    ctx.Hp = m.num_blocks * m.block
    ctx.K = K
    ctx.P = m.proj_size
    ctx.ldh = m.num_proj_blocks * m.block if m.proj_size > 0 else ctx.Hp
    ctx.num_blocks = m.num_blocks
    ctx.num_proj_blocks = m.num_proj_blocks
    ctx.clip = m.clip
    ctx.input_forget = m.input_forget
    ctx.gx = ws + sec.gx
    ctx.h = ws + sec.h
    ctx.c = ws + sec.c
    ctx.hc = ws + sec.hc if m.proj_size > 0 else NULL
    ctx.lengths = lengths
    num_threads = max(1, min(num_threads, m.num_blocks))
    for layer in range(L):
        I = m.dirs[layer * D].input_size
        if layer == L - 1:
            dst = out
        else:
            dst = ws + (sec.seq0 if layer % 2 == 0 else sec.seq1)
        ctx.out_ts = DK if batch_first else B * DK
        ctx.out_bs = T * DK if batch_first else DK
        for d in range(D):
            idx = layer * D + d
            ctx.w = m.dirs[idx]
            ctx.reverse = d == 1 or m.reverse_only
            ctx.out = dst + d * K
            _run_direction(&ctx, inp, I if batch_first else B * I, T * I if batch_first else I, I,
                           h0 + idx * B * K, c0 + idx * B * H, hn + idx * B * K, cn + idx * B * H,
                           chunk, num_threads)
        inp = dst


def forward(PackedModel m, cnp.ndarray x, bint batch_first, cnp.ndarray h0, cnp.ndarray c0,
            cnp.ndarray lengths, cnp.ndarray out, cnp.ndarray hn, cnp.ndarray cn,
            cnp.ndarray workspace, int num_threads):
    """Run the forward pass into preallocated arrays, with the GIL released.

    Parameters
    ----------
    m : PackedModel
    x : ndarray (T, B, I), or (B, T, I) when batch_first           # IN READ-ONLY, C-contiguous
    h0, c0 : ndarray (L*D, B, K), (L*D, B, H)                      # IN READ-ONLY, C-contiguous
    lengths : ndarray (B,) int32, 1 <= lengths[b] <= T              # IN READ-ONLY
    out : ndarray shaped like x with last axis D*K                  # OUT
    hn, cn : ndarray shaped like h0, c0                             # OUT
    workspace : ndarray of at least m.workspace_size(T, B) elements # scratch, 64-byte aligned
    num_threads : int, upper bound on the OpenMP team size

    All arrays must have the model's dtype and be C-contiguous; fastlstm.LSTM checks this.
    """
    cdef int T = x.shape[1] if batch_first else x.shape[0]
    cdef int B = x.shape[0] if batch_first else x.shape[1]
    cdef const int *lens = <const int *> cnp.PyArray_DATA(lengths)
    if m.info.is_double:
        with nogil:
            _forward[double](&m.info, <const double *> cnp.PyArray_DATA(x), T, B, batch_first,
                                 <const double *> cnp.PyArray_DATA(h0), <const double *> cnp.PyArray_DATA(c0), lens,
                                 <double *> cnp.PyArray_DATA(out), <double *> cnp.PyArray_DATA(hn),
                                 <double *> cnp.PyArray_DATA(cn), <double *> cnp.PyArray_DATA(workspace),
                                 num_threads)
    else:
        with nogil:
            _forward[float](&m.info, <const float *> cnp.PyArray_DATA(x), T, B, batch_first,
                                <const float *> cnp.PyArray_DATA(h0), <const float *> cnp.PyArray_DATA(c0), lens,
                                <float *> cnp.PyArray_DATA(out), <float *> cnp.PyArray_DATA(hn),
                                <float *> cnp.PyArray_DATA(cn), <float *> cnp.PyArray_DATA(workspace),
                                num_threads)
