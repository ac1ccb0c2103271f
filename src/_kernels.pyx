"""Native core of fastlstm: the forward pass over all layers and directions, without the GIL.

One OpenMP parallel region runs the whole forward. Each thread owns a fixed range of blocks of hidden units
for every layer and direction, so its slices of W_ih and W_hh stay in its core's cache. Per chunk of time
steps a thread first computes the input projection (b + W_ih x_t) of its own blocks for all the chunk's rows,
then runs the steps (a single step projects each block right before the block's step: step_blocks). After
each step the threads of a direction wait for one another (each publishes its count of finished steps), so
h_t is complete before anyone reads it; the whole team meets at a barrier per layer, and mid-step with a
projection.
A one-direction LSTM of few units with a batch splits whole tiles of rows of the batch instead (_row_split_wins):
each thread runs all units of its rows through every layer, and no thread waits for another.
The micro-kernels live in cell_kernels.h. Every element is computed by one thread in a fixed order, so
results do not depend on the thread count. Python (fastlstm/_lstm.py) validates every argument of a first
call; ForwardPlan and StreamCore check repeated calls in C the same way, and hand anything else back.

The input projection is not a BLAS call: measured here (2-core AMD EPYC, float32), scipy's OpenBLAS sgemm
reached ~114 GFLOP/s per core while the packed micro-kernel reaches ~200, and OpenBLAS's spinning worker
threads halved the speed of the OpenMP team that followed each GEMM.
"""
from cython cimport floating
from cython.parallel cimport parallel
from libc.stdlib cimport malloc, free
cdef extern from "stdlib.h" nogil:
    void *aligned_alloc(size_t alignment, size_t size)
from libc.string cimport memset
cimport numpy as cnp
import numpy as np

from . import _threads


cnp.import_array()

cdef extern from "team.h" nogil:
    int lstm_openmp_enabled()
    const char *lstm_compiler()
    int lstm_thread_id()
    int lstm_team_size()
    ctypedef struct lstm_team_barrier:
        pass
    void lstm_barrier_init(lstm_team_barrier *bar)
    ctypedef struct lstm_team_state:
        int late, abort, can_abort, clocked, stacked
    enum:
        LSTM_WAIT_DONE
        LSTM_WAIT_ABORTED
        LSTM_WAIT_LATE
    int lstm_barrier_wait(lstm_team_barrier *bar, lstm_team_state *state, int may_abort)
    void lstm_team_start(lstm_team_barrier *bar, lstm_team_state *state)
    int lstm_team_abort(lstm_team_state *state)
    ctypedef struct lstm_step_flag:
        int steps
    void lstm_step_publish(lstm_step_flag *flags, int tid, int steps)
    int lstm_step_wait(lstm_step_flag *flags, int tid, int first, int count, int steps,
                       lstm_team_state *state, int may_abort)
    int lstm_team_contended()
    void lstm_team_report(int late, long long call_ns)
    enum:
        LSTM_WAY_ALONE
        LSTM_WAY_MEET
        LSTM_WAY_SPLIT
    int lstm_contended_way(long model, long rows, long steps, int ways)
    void lstm_contended_record(long model, long rows, int way, long long ns_per_step)
    long long lstm_now_ns()
    ctypedef struct lstm_share_clock:
        long long wall, cpu
    lstm_share_clock lstm_share_start()
    void lstm_share_end(lstm_share_clock start, lstm_team_state *state)
    void lstm_sleep_setup()
    long long lstm_contended_until
    long long lstm_contention_window
    unsigned long lstm_ftz_enter()
    void lstm_ftz_leave(unsigned long saved)

lstm_sleep_setup()   # waiters may sleep on the words they wait for (team.h)

cdef extern from "cell_kernels.h" nogil:
    # the argument structs and the kernel table of kernel_api.h; the kernels' signatures are written once, in
    # its LSTM_KERNEL_KINDS (the C compiler checks every call below against them)
    ctypedef struct lstm_layer:
        const void *w_ih
        const void *w_hh
        const void *bias
        const void *peep
        const void *w_hr
        int input_size, hidden_size, out_size, narrow, input_forget
        double clip
        const void *bias_hn
        int split_step
    ctypedef struct lstm_rows:
        const int *lengths
        int count
    ctypedef struct lstm_blocks:
        int first, end
    ctypedef struct lstm_state:
        const void *h
        long ldh
        void *c
        long ldc
        void *hout
        long ldo
    ctypedef struct lstm_chunk:
        const void *x
        long x_ts, x_bs
        void *gx
        long g_ts, g_bs
    ctypedef void (*lstm_input_fn)(const lstm_layer *, const lstm_rows *, const lstm_chunk *, int, int,
                                   lstm_blocks) noexcept nogil
    ctypedef void (*lstm_cell_fn)(const lstm_layer *, const lstm_rows *, const void *, long, const lstm_state *, int,
                                  lstm_blocks) noexcept nogil
    ctypedef void (*lstm_step_fn)(const lstm_layer *, const lstm_rows *, const lstm_chunk *, const lstm_state *,
                                  lstm_blocks, int) noexcept nogil
    ctypedef void (*lstm_proj_fn)(const lstm_layer *, const lstm_rows *, const void *, long, void *, long, int,
                                  lstm_blocks) noexcept nogil
    ctypedef void (*lstm_finish_fn)(const lstm_layer *, const lstm_rows *, const void *, long, const lstm_state *,
                                    int, lstm_blocks) noexcept nogil
    ctypedef struct lstm_kernel_table:
        const char *name
        int vector_bytes, tile_rows
        lstm_input_fn input
        lstm_cell_fn cell
        lstm_step_fn step
        lstm_proj_fn proj
        lstm_finish_fn finish
    const lstm_kernel_table *lstm_select_kernels(int cell_kind, int format, unsigned features)
    unsigned lstm_cpu_features()
    const char *lstm_feature_name(int bit)
    enum:
        LSTM_CELL_LSTM
        LSTM_CELL_GRU
        LSTM_FORMAT_F32
        LSTM_FORMAT_F64
        LSTM_FORMAT_BF16
        LSTM_FORMAT_INT8

cdef enum:
    # Budget for one chunk of the input projection (T_chunk * B * 4 * Hp elements), in bytes: small
    # enough that each thread's share stays in its L2 until the steps read it.
    GX_CHUNK_BYTES = 1024 * 1024
    # The same for bf16 and int8 weights when a thread's share of a direction's W_hh is at most
    # QUANT_L2_SHARE_BYTES (half the 2 MiB L2 of the development Xeon), which it then keeps in its L2 across
    # steps: a chunk of 1 MiB pushed it out. Alternated, T=100 B=32 I=256 H=512 on 2 threads (1 MiB of bf16
    # W_hh each): 256 KiB took bf16 from 9.04 to 7.94 ms and int8 from 6.41 to 5.87; on one thread (2 MiB of bf16,
    # which does not stay) bf16 went from 16.7 to 18.3 ms with 256 KiB, int8 (1 MiB) from 11.4 to 10.6. Float32
    # weights keep GX_CHUNK_BYTES (256 KiB took 6.5% longer at that shape on 2 threads).
    QUANT_GX_CHUNK_BYTES = 256 * 1024
    QUANT_L2_SHARE_BYTES = 1024 * 1024
    # Workspace sections start on 64-byte boundaries (in elements of the smallest dtype: 16 floats).
    ALIGN_ELEMS = 16
    # The largest team that splits the rows of the batch (one tile of rows per thread at least).
    MAX_ROW_TEAM = 64
    # Hidden sizes up to which a one-direction forward splits rows rather than units when the batch allows it.
    # benchmarks/crossover.py, third table (2 threads, T = 100, B = 8 and 32, float32, AVX-512), two runs: rows
    # were 0.97-1.73x as fast at H = 16-48 (11 of 12 above 1.04), 0.92-1.24x at 64 and 0.87-1.08x from 96 up.
    ROW_SPLIT_MAX_HIDDEN = 48
    # int8 weights split rows at any hidden size when every thread gets a tile of rows and either W_hh is small (at
    # most QUANT_ROW_SPLIT_MAX_BYTES: between the sizes measured to win, 1 MiB, and to lose, 4 MiB, with a core's
    # L2 of 1 MiB), or each thread gets enough rows to hide streaming all of it from L3: a unit split's threads
    # each quantize every row of h at every step (its per-row scale needs the whole row) and meet, a row split's
    # quantize only their own rows and never meet. Measured with _kernels.set_row_split on the
    # AMD EPYC (Zen 5, 1 MiB L2 per core), 2 threads, rows / units time: H=256 B=8 0.93, H=512 B=8 0.90, B=16
    # 0.97-0.98, B=32 0.95-0.97; H=1024 (W_hh 4 MiB) B=8 1.03, B=16 0.96, B=32 0.97, B=64 (2 layers) 0.96-0.99;
    # H=2048 (16 MiB) B=8 1.07, B=16 1.04, B=32 0.98; the GRU at H=512 B=8 and B=32 1.01 and 0.99, H=1024 B=64
    # 0.96. bf16 rows lost at small batches (H=512 B=8 1.16, B=16 1.09) and tied at B=32, so bf16 keeps the unit
    # split. Measured on 2 threads only: with more, a thread's share of a unit split shrinks, a row split's does
    # not.
    QUANT_ROW_SPLIT_MAX_BYTES = 2 * 1024 * 1024
    QUANT_ROW_SPLIT_MIN_ROWS = 12
    # On a busy machine (see lstm_team_contended), the tiles of rows each thread must get for a batch that would meet
    # every step to be split rather than run on one thread (an int8 row split by the rule can always split).
    # benchmarks/contention.py, 2 threads and load average ~10 on 2 cores: rows split at B = 4 (one tile) took 2.5x
    # one thread's time, at B = 32 (8 tiles) 0.67x.
    CONTENDED_ROW_SPLIT_TILES = 2


def cpu_features():
    """This CPU's features as a bit mask (the LSTM_FEATURE_* bits of kernel_api.h; see feature_names)."""
    return lstm_cpu_features()


def feature_names():
    """{bit: name} of every CPU feature the kernels know ("avx2", "avx512_bf16", "dotprod", ...)."""
    cdef int bit
    names = {}
    for bit in range(32):
        if lstm_feature_name(bit) != NULL:
            names[bit] = lstm_feature_name(bit).decode()
    return names


CELL_KINDS = {"lstm": LSTM_CELL_LSTM, "gru": LSTM_CELL_GRU}
# gate rows per unit, and whether the cell carries a cell state c besides h
CELL_GATES = {"lstm": 4, "gru": 3}
FORMATS = {"float32": LSTM_FORMAT_F32, "float64": LSTM_FORMAT_F64, "bf16": LSTM_FORMAT_BF16, "int8": LSTM_FORMAT_INT8}


def kernel_table(str cell, str weight_format, unsigned features):
    """The kernels a model of this cell kind ("lstm", "gru") and weight format ("float32", "float64", "bf16",
    "int8") is packed for on a
    CPU with these features: (name, vector_bytes, tile_rows), or None when no kernels exist for them."""
    if cell not in CELL_KINDS:
        raise ValueError(f"cell must be one of {sorted(CELL_KINDS)}, got {cell!r}")
    if weight_format not in FORMATS:
        raise ValueError(f"weight_format must be one of {sorted(FORMATS)}, got {weight_format!r}")
    cdef const lstm_kernel_table *k = lstm_select_kernels(CELL_KINDS[cell], FORMATS[weight_format], features)
    if k == NULL:
        return None
    return k.name.decode(), k.vector_bytes, k.tile_rows


def contention():
    """How this process's teams stand with the machine's load: (window, remaining), in seconds. A forward whose
    team meets every step and finds a member late (not running: the machine is busy) opens a window of
    `window` seconds in which such forwards split rows or run on one thread; `remaining` is what is left of the
    current window (0: teams meet)."""
    cdef long long until = lstm_contended_until, now = lstm_now_ns()
    return lstm_contention_window / 1e9, max(0, until - now) / 1e9 if until else 0.0


def openmp_enabled():
    """Whether this build was compiled with OpenMP."""
    return bool(lstm_openmp_enabled())


def compiler():
    """The compiler that built the kernels, e.g. "gcc 14.2.0" or "clang 19.1.7"."""
    return lstm_compiler().decode().strip()     # (clang's version string ends with a space)


cdef struct ModelInfo:
    int num_layers, num_directions, hidden_size, proj_size, out_size, block, num_blocks, num_proj_blocks
    int narrow_block     # index of the narrow last block (see cell_impl.h), or -1
    int is_double, reverse_only
    int gates            # gate rows per unit: 4 (LSTM), 3 (GRU)
    int has_c            # the state is (h, c) (LSTM); else h alone (GRU: the c buffers are the kernels' scratch)
    long quant_recurrent_bytes  # bf16/int8: the largest layer-direction's packed W_hh, in bytes; 0 for float
    int int8_weights     # the weight format is int8
    const lstm_kernel_table *kernels   # chosen when packed, from the cell kind, weight format and CPU features
    lstm_layer *dirs     # (num_layers * num_directions,): each layer-direction's packed weights and cell parameters
    long serial          # this model's number among the process's packed models (1, 2, ...; never reused)


cdef long _packed_models = 0   # models packed so far (their serial numbers)


cdef class PackedModel:
    """Pointers to the packed weights of every layer and direction, and the shapes the kernels need.

    Built by fastlstm._packing from NumPy arrays, which it keeps alive; immutable once built.
    """
    cdef ModelInfo info
    cdef readonly tuple arrays
    cdef bint step_parity      # flips at every call of one time step: the order of its blocks

    def __cinit__(self, str cell, str weight_format, unsigned features, int num_layers, int num_directions,
                  int hidden_size, int proj_size, bint narrow_last, double clip, bint input_forget,
                  bint reverse_only, tuple arrays, bint linear_before_reset=True):
        """The packed weights `arrays` (one (w_ih, w_hh, bias, peep or None, w_hr or None) per layer-direction, as
        fastlstm._packing packs them for kernel_table(cell, weight_format, features); a GRU's entries add a sixth,
        b_hn packed or None; bf16 and int8 entries end with the layer's input size: (..., w_hr or None, I) for an
        LSTM, (..., None, b_hn or None, I) for a GRU) of a model of this shape; its
        kernels are chosen here from the same three keys and kept: later changes to the feature cap do not affect
        this model. linear_before_reset: the GRU's n (without it, each step runs in two halves)."""
        info = kernel_table(cell, weight_format, features)
        if info is None:
            raise ValueError(f"no {cell} kernels for {weight_format} weights on CPU features {features:#x}")
        self.info.kernels = lstm_select_kernels(CELL_KINDS[cell], FORMATS[weight_format], features)
        self.info.dirs = <lstm_layer *> malloc(num_layers * num_directions * sizeof(lstm_layer))
        if self.info.dirs == NULL:
            raise MemoryError()
        cdef int block = self.info.kernels.vector_bytes // (8 if weight_format == "float64" else 4)
        global _packed_models
        _packed_models += 1
        self.info.serial = _packed_models
        self.info.num_layers = num_layers
        self.info.num_directions = num_directions
        self.info.hidden_size = hidden_size
        self.info.proj_size = proj_size
        self.info.out_size = proj_size if proj_size > 0 else hidden_size
        self.info.block = block
        self.info.num_blocks = (hidden_size + block - 1) // block
        self.info.num_proj_blocks = (proj_size + block - 1) // block
        self.info.narrow_block = self.info.num_blocks - 1 if narrow_last else -1
        self.info.is_double = weight_format == "float64"
        self.info.reverse_only = reverse_only
        self.info.gates = CELL_GATES[cell]
        self.info.has_c = cell == "lstm"
        self.arrays = arrays
        cdef int i
        cdef tuple entry
        cdef lstm_layer *w
        cdef bint quantized = weight_format in ("bf16", "int8")
        self.info.quant_recurrent_bytes = max([a[1].nbytes for a in arrays]) if quantized else 0
        self.info.int8_weights = weight_format == "int8"
        for i in range(num_layers * num_directions):
            entry = arrays[i]
            w = &self.info.dirs[i]
            w.w_ih = cnp.PyArray_DATA(entry[0])
            w.w_hh = cnp.PyArray_DATA(entry[1])
            w.bias = cnp.PyArray_DATA(entry[2])
            w.peep = NULL if entry[3] is None else cnp.PyArray_DATA(entry[3])
            w.w_hr = NULL if entry[4] is None else cnp.PyArray_DATA(entry[4])
            # a quantized entry ends with the layer's input size (its packed w_ih pads it); a float one has w_ih
            # (NB, I, gates, V); a GRU's holds b_hn packed, or None, at index 5
            w.input_size = entry[len(entry) - 1] if quantized else entry[0].shape[1]
            w.hidden_size = hidden_size
            w.out_size = self.info.out_size
            w.narrow = self.info.narrow_block
            w.clip = clip
            w.input_forget = input_forget
            w.bias_hn = NULL if cell != "gru" or entry[5] is None else cnp.PyArray_DATA(entry[5])
            w.split_step = cell == "gru" and not linear_before_reset

    def __dealloc__(self):
        free(self.info.dirs)

    @property
    def kernel_name(self):
        """The name of the kernel table this model runs ("lstm/f32/avx512", ...)."""
        return self.info.kernels.name.decode()

    @property
    def num_layers(self):
        """Layers of the packed model."""
        return self.info.num_layers

    @property
    def block(self):
        """Hidden units per block of the packed layout."""
        return self.info.block

    @property
    def tile_rows(self):
        """Batch rows per register tile of the cell kernel."""
        return self.info.kernels.tile_rows

    def workspace_size(self, long T, long B):
        """Elements of workspace a forward over T steps and B rows needs (see _plan_workspace)."""
        return _plan_workspace(&self.info, T, B).total

    def team(self, long B, int num_threads):
        """How a forward over B rows on up to num_threads threads splits its work: (team size, splits rows, widest
        team of one direction that meets at every step; 1 when no thread waits for another)."""
        cdef bint row_split = _row_split_wins(&self.info, B, num_threads)
        cdef int nt = _team_size(&self.info, B, num_threads, row_split)
        cdef int widest = nt - nt // 2 if self.info.num_directions == 2 else nt    # the larger sub-team
        return nt, row_split, 1 if row_split else widest


cdef long _chunk_steps(const ModelInfo *m, long T, long B, long budget=GX_CHUNK_BYTES) noexcept nogil:
    """Time steps per chunk of the input projection, so that a chunk of gx fits budget bytes (the workspace is
    planned for GX_CHUNK_BYTES)."""
    cdef long row_bytes = B * m.gates * m.num_blocks * m.block * (8 if m.is_double else 4)
    cdef long steps = budget // row_bytes if row_bytes > 0 else T
    return max(1, min(T, steps))


cdef long _run_chunk_steps(const ModelInfo *m, long T, long B, int readers) noexcept nogil:
    """_chunk_steps for a call whose direction's W_hh is read by `readers` threads: bf16/int8 weights whose share
    per thread stays in its L2 take QUANT_GX_CHUNK_BYTES chunks, which do not push it out (the threads splitting a
    direction's units share its W_hh; a row split's or a lone thread reads all of it)."""
    if 0 < m.quant_recurrent_bytes <= QUANT_L2_SHARE_BYTES * readers:
        return _chunk_steps(m, T, B, QUANT_GX_CHUNK_BYTES)
    return _chunk_steps(m, T, B)


cdef struct Sections:
    long gx, h, c, hc, seq0, seq1, flags, total
    long slot           # elements between the buffers of direction slot 0 and slot 1


cdef Sections _plan_workspace(const ModelInfo *m, long T, long B) noexcept nogil:
    """Offsets of the workspace sections, each aligned. Per direction slot (one per direction, so that the
    two directions of a layer can run at the same time): gx (T_chunk, B, gates*Hp) input projection; h (2, B, ldh)
    double-buffered hidden state; c (B, Hp) cell state (a GRU's r * h); hc (B, Hp) pre-projection output. Then seq0/seq1
    (T, B, D*K), the outputs of inner layers; flags, one lstm_step_flag (two cache lines) per possible thread."""
    cdef Sections s
    cdef long Hp = m.num_blocks * m.block
    cdef long ldh = m.num_proj_blocks * m.block if m.proj_size > 0 else Hp
    cdef long seq = T * B * m.num_directions * m.out_size
    s.gx = 0
    s.h = _aligned(s.gx + _chunk_steps(m, T, B) * B * m.gates * Hp)
    s.c = _aligned(s.h + 2 * B * ldh)
    s.hc = _aligned(s.c + B * Hp)
    s.slot = _aligned(s.hc + (B * Hp if m.proj_size > 0 else 0))
    s.seq0 = s.slot * m.num_directions
    s.seq1 = _aligned(s.seq0 + (seq if m.num_layers >= 2 else 0))
    s.flags = _aligned(s.seq1 + (seq if m.num_layers >= 3 else 0))
    s.total = _aligned(s.flags + max(_max_threads(m), min(B, MAX_ROW_TEAM)) * sizeof(lstm_step_flag)
                       // (8 if m.is_double else 4))
    return s


cdef inline int _max_threads(const ModelInfo *m) noexcept nogil:
    """The largest team a forward splitting units starts: one block of units per thread at least."""
    return m.num_blocks * m.num_directions


# -1: split rows where _row_split_wins says so; 0 / 1: never / wherever the batch has two tiles of rows
cdef int _row_split_mode = -1


def set_row_split(int mode):
    """Force the team's split (benchmarks/crossover.py): 1 rows, 0 units, -1 back to the measured rule."""
    global _row_split_mode
    if mode not in (-1, 0, 1):
        raise ValueError(f"set_row_split: mode must be -1, 0 or 1, got {mode}")
    _row_split_mode = mode


def splits_rows(PackedModel m, long B, int num_threads):
    """Whether a forward of m over B rows on num_threads (two or more) threads splits the rows of the batch among
    them."""
    return _row_split_wins(&m.info, B, num_threads)


cdef inline long _row_tiles(const ModelInfo *m, long B) noexcept nogil:
    """Register tiles of rows in a batch of B rows, as the model's cell kernel groups them."""
    return (B + m.kernels.tile_rows - 1) // m.kernels.tile_rows


cdef inline bint _row_split_wins(const ModelInfo *m, long B, int num_threads) noexcept nogil:
    """Whether a team of up to num_threads threads splits the rows of the batch rather than the units (see
    _thread_forward), when the batch holds two full tiles of rows (fewer would leave one thread a partial tile):
    for a one-direction layer of few units, whose short steps cannot hide the exchange of h between the threads
    of a unit split, and for int8 weights (QUANT_ROW_SPLIT_MAX_BYTES). A bidirectional layer already runs its
    directions on different threads without waiting."""
    if _row_split_mode >= 0:
        return _row_split_mode == 1 and _row_tiles(m, B) >= 2
    if m.num_directions != 1 or B < 2 * m.kernels.tile_rows:
        return False
    if m.hidden_size <= ROW_SPLIT_MAX_HIDDEN:
        return True
    return m.int8_weights and _row_tiles(m, B) >= num_threads and (
        m.quant_recurrent_bytes <= QUANT_ROW_SPLIT_MAX_BYTES or B >= QUANT_ROW_SPLIT_MIN_ROWS * num_threads)


cdef inline int _team_size(const ModelInfo *m, long B, int num_threads, bint row_split) noexcept nogil:
    """The team a forward over B rows starts with up to num_threads threads: for a row split one row (a tile of
    rows when there are enough) per thread at least."""
    return max(1, min(num_threads, min(B, MAX_ROW_TEAM) if row_split else _max_threads(m)))


cdef inline bint _meets_every_step(const ModelInfo *m, int team, bint row_split) noexcept nogil:
    """Whether a team of this size hands each time step between its threads (a direction's units split among two
    or more), rather than each thread running alone (rows split, or a bidirectional layer's directions on one
    thread each)."""
    return not row_split and (team - team // 2 if m.num_directions == 2 else team) >= 2


cdef inline long _aligned(long n) noexcept nogil:
    return (n + ALIGN_ELEMS - 1) // ALIGN_ELEMS * ALIGN_ELEMS


cdef struct Run:
    # shapes
    int T, B, H, Hp, K, ldh, P, V, num_blocks, num_proj_blocks, chunk
    int gates                 # gate rows per unit (4 LSTM, 3 GRU)
    int ldb                   # rows of the batch in the arrays and buffers; B counts the rows this run computes
    int row_split             # each thread runs whole tiles of rows of the batch (see _thread_forward)
    int input_aliases_output  # x and out overlap (a stream fed its own output): wait until x is read
    int timed_split           # a row split whose threads start together and time their shares (team.h)
    int descending            # T = 1: run the blocks in descending order (alternated by the caller per step)
    const lstm_kernel_table *kernels
    const int *lengths       # (B,)
    # workspace sections of direction slot 0 (slot 1 is slot_stride elements further); shared by the
    # threads of a direction, each touching only its own units, except h
    long slot_stride
    void *gx                 # (chunk, B, gates*Hp)
    void *h                  # (2, B, ldh) double-buffered
    void *c                  # (B, Hp): the cell state, or a GRU's r * h
    void *hc                 # (B, Hp) or NULL
    lstm_team_barrier *barrier  # met by the whole team (a no-op outside a parallel region, or when NULL)
    lstm_step_flag *step_flags  # (team size,): steps finished by each thread (and its sleepers), cache lines of their own
    lstm_team_state *team_state # lateness shared by the team (see team.h), or NULL
    long rerun_bytes            # bytes of a workspace for rerunning the call alone (after giving the team up)
    int solo                    # this run is one thread's rerun of the whole call: thread 0 of a team of 1


cdef int _take_over(const Run *run, void **rerun_ws) noexcept nogil:
    """A waiter found a member late: give the team up and rerun the call alone, if a workspace for the rerun can
    be had (else -1: keep waiting). LSTM_WAIT_LATE when this thread gave the team up (*rerun_ws is its rerun's
    workspace), LSTM_WAIT_ABORTED when another waiter did."""
    cdef void *ws = aligned_alloc(64, (run.rerun_bytes + 63) // 64 * 64)
    if ws == NULL:
        return -1
    if lstm_team_abort(run.team_state):
        rerun_ws[0] = ws
        return LSTM_WAIT_LATE
    free(ws)
    return LSTM_WAIT_ABORTED


cdef int _meet(const Run *run, int tid, int first, int count, int steps, void **rerun_ws) noexcept nogil:
    """Wait for the other threads of a direction to finish `steps` steps (steps < 0: the team's barrier).
    LSTM_WAIT_DONE when they have; else the team was given up (see _take_over) and the caller stops."""
    cdef int code, may_abort = 1
    while True:
        if steps < 0:
            code = lstm_barrier_wait(run.barrier, run.team_state, may_abort)
        else:
            code = lstm_step_wait(run.step_flags, tid, first, count, steps, run.team_state, may_abort)
        if code != LSTM_WAIT_LATE:
            return code
        code = _take_over(run, rerun_ws)
        if code >= 0:
            return code
        may_abort = 0            # no memory for a rerun: wait on


cdef int _direction(const Run *run, int slot, const lstm_layer *w, bint reverse,
                     const floating *x, long x_ts, long x_bs,           # IN READ-ONLY x[t, b] (I,)
                     const floating *h0, const floating *c0,            # IN READ-ONLY (B, K), (B, H) or NULL
                     floating *out, long out_ts, long out_bs,           # OUT out[t, b] (K,) of this direction
                     floating *hn, floating *cn,                        # OUT (B, K), (B, H) or NULL
                     int j0, int j1, int q0, int q1, int tid, int first, int count,
                     int *steps_done, void **rerun_ws) noexcept nogil:
    """One thread's share of one layer in one direction: blocks [j0, j1) (and projection blocks [q0, q1)),
    using the buffers of direction slot ``slot``. Thread tid works with threads [first, first + count) on
    this direction; steps_done counts the steps (and the halves of split steps) it has finished in this forward
    (the count it publishes). c0 and cn are NULL for a cell without a cell state (GRU).
    Returns LSTM_WAIT_DONE, or the code of a wait that gave the team up (see _meet): the caller stops."""
    cdef int T = run.T, B = run.B, ldb = run.ldb, K = run.K, H = run.H, Hp = run.Hp, ldh = run.ldh, V = run.V
    cdef long G = run.gates * Hp, offset = slot * run.slot_stride
    cdef floating *h_buf = <floating *> run.h + offset
    cdef floating *c = <floating *> run.c + offset
    cdef floating *hc = (<floating *> run.hc + offset) if run.hc != NULL else NULL
    cdef floating *gx = <floating *> run.gx + offset
    cdef floating *h_prev
    cdef floating *h_next
    cdef floating *out_row
    cdef const floating *src
    cdef int t, t_lo, t_hi, s, nchunks = (T + run.chunk - 1) // run.chunk, ci
    cdef long b, u
    # units of h this thread writes: hidden units without a projection, projected units with one
    cdef int u0 = (q0 if run.P > 0 else j0) * V
    cdef int u1 = min(q1 * V, run.P) if run.P > 0 else min(j1 * V, H)
    cdef int cu0 = j0 * V, cu1 = min(j1 * V, H)     # units of c this thread owns
    cdef long step = 0
    cdef int code
    # one time step: each block's input projection right before its step (see step_blocks), unless x and out
    # overlap, where every thread must have read all of x before any writes out
    cdef bint fused = T == 1 and not run.input_aliases_output
    cdef lstm_rows rows
    cdef lstm_blocks blocks, proj_blocks
    cdef lstm_chunk chunk
    cdef lstm_state state
    rows.lengths, rows.count = run.lengths, B
    blocks.first, blocks.end = j0, j1
    proj_blocks.first, proj_blocks.end = q0, q1
    chunk.x_ts, chunk.x_bs, chunk.gx, chunk.g_ts, chunk.g_bs = x_ts, x_bs, gx, ldb * G, G
    state.ldh, state.c, state.ldc = ldh, c, Hp
    state.hout, state.ldo = hc, Hp                # with a projection, hc; else h_next of each step, set below
    if run.P == 0:
        state.ldo = ldh
    for b in range(B):
        for u in range(u0, u1):
            h_buf[b * ldh + u] = h0[b * K + u]
        if c0 != NULL:
            for u in range(cu0, cu1):
                c[b * Hp + u] = c0[b * H + u]
    code = _meet(run, tid, first, count, -1, rerun_ws)     # all of h_0 is in place before any thread reads it
    if code != LSTM_WAIT_DONE:
        return code
    for ci in range(nchunks):
        if reverse:
            t_hi = T - ci * run.chunk
            t_lo = max(0, t_hi - run.chunk)
        else:
            t_lo = ci * run.chunk
            t_hi = min(T, t_lo + run.chunk)
        chunk.x = x + t_lo * x_ts
        if not fused:                            # (fused: each block's projection comes with its step)
            run.kernels.input(w, &rows, &chunk, t_lo, t_hi - t_lo, blocks)
        if run.input_aliases_output:
            code = _meet(run, tid, first, count, -1, rerun_ws)    # every thread has read x before any writes out
            if code != LSTM_WAIT_DONE:
                return code
        for s in range(t_hi - t_lo):
            t = t_hi - 1 - s if reverse else t_lo + s
            h_prev = h_buf + (step % 2) * ldb * ldh
            h_next = h_buf + ((step + 1) % 2) * ldb * ldh
            state.h = h_prev
            if run.P == 0:
                state.hout = h_next
            if fused:
                chunk.x = x + t * x_ts
                run.kernels.step(w, &rows, &chunk, &state, blocks, run.descending)
            else:
                run.kernels.cell(w, &rows, gx + (t - t_lo) * ldb * G, G, &state, t, blocks)
            if w.split_step:                     # the second half, once the direction's first halves are all done
                steps_done[0] += 1               # (a half step: each of the direction's threads counts it alike)
                lstm_step_publish(run.step_flags, tid, steps_done[0])
                code = _meet(run, tid, first, count, steps_done[0], rerun_ws)
                if code != LSTM_WAIT_DONE:
                    return code
                run.kernels.finish(w, &rows, gx if fused else gx + (t - t_lo) * ldb * G, G, &state, t, blocks)
            if run.P > 0:
                code = _meet(run, tid, first, count, -1, rerun_ws)    # all of hc is written
                if code != LSTM_WAIT_DONE:
                    return code
                run.kernels.proj(w, &rows, hc, Hp, h_next, ldh, t, proj_blocks)
            for b in range(B):
                if t >= run.lengths[b]:     # past this row's length: the state is carried over
                    src = h_prev + b * ldh
                    for u in range(u0, u1):
                        h_next[b * ldh + u] = src[u]
            step += 1
            steps_done[0] += 1              # all of h_next is written: the others may read it as h_prev
            lstm_step_publish(run.step_flags, tid, steps_done[0])
            for b in range(B):              # the outputs, which no other thread reads in this layer
                out_row = out + t * out_ts + b * out_bs
                if t < run.lengths[b]:
                    src = h_next + b * ldh
                    for u in range(u0, u1):
                        out_row[u] = src[u]
                else:
                    for u in range(u0, u1):
                        out_row[u] = 0
            code = _meet(run, tid, first, count, steps_done[0], rerun_ws)
            if code != LSTM_WAIT_DONE:
                return code
    src = h_buf + (step % 2) * ldb * ldh
    for b in range(B):
        for u in range(u0, u1):
            hn[b * K + u] = src[b * ldh + u]
        if cn != NULL:
            for u in range(cu0, cu1):
                cn[b * H + u] = c[b * Hp + u]
    return LSTM_WAIT_DONE


cdef void _thread_forward(const ModelInfo *m, const Run *run, const floating *x, bint batch_first,
                          const floating *h0, const floating *c0, floating *out, floating *hn, floating *cn,
                          floating *seq0, floating *seq1) noexcept nogil:
    """Everything one thread of the team does: its blocks of every layer and direction, in order.

    A bidirectional model on two or more threads runs its directions at the same time: the first half of
    the team takes the forward direction, the rest the reverse one, each with its own buffers. Both halves
    pass the same number of (team-wide) barriers per layer, so the barriers still line up.
    With run.row_split each thread instead takes a range of rows of the batch, all of their units in every
    layer and direction, in its rows of the shared buffers: no thread reads another's rows, so none waits.
    """
    cdef int tid = 0 if run.solo else lstm_thread_id(), nt = 1 if run.solo else lstm_team_size()
    cdef int L = m.num_layers, D = m.num_directions, K = m.out_size, H = m.hidden_size
    cdef long T = run.T, B = run.ldb, DK = D * K, idx, I, b0 = 0
    cdef bint rows_alone = run.row_split and nt >= 2
    cdef bint split = D == 2 and nt >= 2 and not rows_alone
    if nt >= 2 and (run.timed_split or not rows_alone):
        # the team starts together, without counting lateness, and on different CPUs (team.h). Counted, a
        # worker's wake-up opened a contention window at the first call after every idle spell, and the calls of
        # the window left the worker asleep again for the next one.
        lstm_team_start(run.barrier, run.team_state)
    cdef int d_first = 0, d_last = D - 1, sub_tid = tid, sub_nt = nt
    cdef Run rows
    cdef long tiles = _row_tiles(m, B)
    cdef long unit = m.kernels.tile_rows if tiles >= nt else 1     # whole register tiles when there are enough
    cdef long units = (B + unit - 1) // unit
    cdef lstm_share_clock share
    share.wall, share.cpu = 0, -1
    if rows_alone:          # rows [b0, b0 + rows.B) of the batch, all units and directions, without waiting
        # (a row's bits do not depend on the rows computed beside it)
        if run.timed_split:
            share = lstm_share_start()      # its CPU taken meanwhile: the call reports late (team.h)
        b0 = units * tid // nt * unit
        rows = run[0]
        rows.B = min(B, units * (tid + 1) // nt * unit) - b0
        rows.lengths = run.lengths + b0
        rows.gx = <floating *> run.gx + b0 * run.gates * run.Hp
        rows.h = <floating *> run.h + b0 * run.ldh
        rows.c = <floating *> run.c + b0 * run.Hp
        rows.hc = (<floating *> run.hc + b0 * run.Hp) if run.hc != NULL else NULL
        rows.barrier = NULL
        run = &rows
        sub_tid, sub_nt = 0, 1
    elif split:
        if tid < nt // 2:
            d_last = 0
            sub_nt = nt // 2
        else:
            d_first = 1
            sub_tid = tid - nt // 2
            sub_nt = nt - nt // 2
    cdef int j0 = m.num_blocks * sub_tid // sub_nt, j1 = m.num_blocks * (sub_tid + 1) // sub_nt
    cdef int q0 = m.num_proj_blocks * sub_tid // sub_nt, q1 = m.num_proj_blocks * (sub_tid + 1) // sub_nt
    cdef int layer, d, steps_done = 0
    cdef long x_ts, x_bs, out_ts = DK if batch_first else B * DK, out_bs = T * DK if batch_first else DK
    cdef bint reverse
    cdef const floating *inp = x
    cdef floating *dst
    cdef int code = LSTM_WAIT_DONE
    cdef void *rerun_ws = NULL
    cdef unsigned long saved_mode = lstm_ftz_enter()
    for layer in range(L):
        I = m.dirs[layer * D].input_size
        x_ts, x_bs = (I, T * I) if batch_first else (B * I, I)
        dst = out if layer == L - 1 else (seq0 if layer % 2 == 0 else seq1)
        for d in range(d_first, d_last + 1):
            idx = layer * D + d
            reverse = d == 1 or m.reverse_only != 0
            code = _direction(run, d if split else 0, &m.dirs[idx], reverse, inp + b0 * x_bs, x_ts, x_bs,
                              h0 + (idx * B + b0) * K, (c0 + (idx * B + b0) * H) if m.has_c else NULL,
                              dst + d * K + b0 * out_bs, out_ts, out_bs,
                              hn + (idx * B + b0) * K, (cn + (idx * B + b0) * H) if m.has_c else NULL,
                              j0, j1, q0, q1, tid, tid - sub_tid, sub_nt, &steps_done, &rerun_ws)
            if code != LSTM_WAIT_DONE:
                break
        if code != LSTM_WAIT_DONE:
            break
        inp = dst
    lstm_ftz_leave(saved_mode)
    if rows_alone and run.timed_split:
        lstm_share_end(share, run.team_state)
    if code == LSTM_WAIT_LATE:   # this thread gave the team up: the whole call again, alone
        _rerun_alone(m, run, <floating *> rerun_ws, x, batch_first, h0, c0, out, hn, cn)
        free(rerun_ws)


cdef void _rerun_alone(const ModelInfo *m, const Run *run, floating *ws, const floating *x, bint batch_first,
                       const floating *h0, const floating *c0, floating *out, floating *hn,
                       floating *cn) noexcept nogil:
    """The whole call on this thread alone, in its own workspace ws (run.rerun_bytes), after it gave its team up.

    The other members stop at their next wait; until then they may still write parts of out, hn and cn, but only
    values this rerun writes too (every element is computed the same way by any thread), and no input: a call
    can be given up only when its outputs do not alias its inputs (lstm_team_state.can_abort)."""
    cdef Sections sec = _plan_workspace(m, run.T, run.B)
    cdef Run alone = run[0]
    alone.solo = 1
    alone.chunk = _run_chunk_steps(m, run.T, run.B, 1)
    alone.team_state = NULL
    alone.barrier = NULL
    alone.gx = ws + sec.gx
    alone.h = ws + sec.h
    alone.c = ws + sec.c
    alone.hc = ws + sec.hc if m.proj_size > 0 else NULL
    alone.step_flags = <lstm_step_flag *> (ws + sec.flags)
    memset(alone.step_flags, 0, sizeof(lstm_step_flag))
    _thread_forward(m, &alone, x, batch_first, h0, c0, out, hn, cn, ws + sec.seq0, ws + sec.seq1)


cdef void _forward(const ModelInfo *m, const floating *x, int T, int B, bint batch_first,
                   const floating *h0, const floating *c0, const int *lengths,
                   floating *out, floating *hn, floating *cn, floating *ws, int num_threads,
                   bint input_aliases_output=False, bint descending=False) noexcept nogil:
    """All layers and directions in one parallel region. x (T, B, I) or (B, T, I); h0/hn (L*D, B, K);
    c0/cn (L*D, B, H); out (T, B, D*K) or (B, T, D*K); ws sized by PackedModel.workspace_size."""
    cdef Sections sec = _plan_workspace(m, T, B)
    cdef Run run
    cdef lstm_team_barrier barrier
    lstm_barrier_init(&barrier)
    run.barrier = &barrier
    run.T = T
    run.B = run.ldb = B
    run.H = m.hidden_size
    run.V = m.block
    run.Hp = m.num_blocks * m.block
    run.K = m.out_size
    run.P = m.proj_size
    run.ldh = m.num_proj_blocks * m.block if m.proj_size > 0 else run.Hp
    run.num_blocks = m.num_blocks
    run.num_proj_blocks = m.num_proj_blocks
    run.gates = m.gates
    run.input_aliases_output = input_aliases_output
    run.descending = descending
    run.kernels = m.kernels
    run.lengths = lengths
    run.slot_stride = sec.slot
    run.gx = ws + sec.gx
    run.h = ws + sec.h
    run.c = ws + sec.c
    run.hc = ws + sec.hc if m.proj_size > 0 else NULL
    run.row_split = _row_split_wins(m, B, num_threads) and not input_aliases_output
    cdef int team = _team_size(m, B, num_threads, run.row_split)
    cdef bint meets = _meets_every_step(m, team, run.row_split)
    # an int8 model's row split by the rule: its threads report their CPU taken (team.h), as a meeting team's
    # waits do, so that a busy machine opens the window for it too (float32's few-unit row splits, short calls,
    # do not)
    cdef bint rule_split = run.row_split and team >= 2 and m.int8_weights
    # the machine is busy (a recent call found its team late): the call runs on one thread (which no other waits
    # for), meets every step (splitting units), or splits a large batch's rows among the threads (no meeting, only
    # the end of the call waits for the slowest), whichever was fastest for this model and batch size lately
    # (team.h); the same bits every way
    cdef int way = -1
    cdef bint can_split
    if (meets or rule_split) and lstm_team_contended():
        can_split = rule_split or (not input_aliases_output and
                                   B >= CONTENDED_ROW_SPLIT_TILES * num_threads * m.kernels.tile_rows)
        way = lstm_contended_way(m.serial, B, T, (1 << LSTM_WAY_SPLIT) * can_split | (1 << LSTM_WAY_ALONE))
        run.row_split = way == LSTM_WAY_SPLIT
        team = 1 if way == LSTM_WAY_ALONE else _team_size(m, B, num_threads, run.row_split)
        meets = _meets_every_step(m, team, run.row_split)
    run.chunk = _run_chunk_steps(m, T, B, 1 if run.row_split else (max(1, team // 2) if m.num_directions == 2
                                                                   else team))
    cdef lstm_team_state state
    state.late, state.abort, state.clocked, state.stacked = 0, 0, 0, 0
    # a late member can be given up (the call rerun by the waiter that found it late) when no output aliases an
    # input (a stream's step updates its state in place), and not when a busy process chose to meet: that way's
    # time must be the team's own, not a rerun's on one thread
    state.can_abort = meets and way < 0 and not input_aliases_output and <const void *> h0 != <void *> hn and \
        <const void *> c0 != <void *> cn
    run.team_state = &state
    run.timed_split = rule_split and run.row_split
    cdef long long started = lstm_now_ns() if meets or run.timed_split or way >= 0 else 0
    run.rerun_bytes = sec.total * sizeof(floating)
    run.solo = 0
    run.step_flags = <lstm_step_flag *> (ws + sec.flags)
    memset(run.step_flags, 0, team * sizeof(lstm_step_flag))
    if team == 1:            # no team to start: outside a parallel region the barriers are no-ops
        _thread_forward(m, &run, x, batch_first, h0, c0, out, hn, cn, ws + sec.seq0, ws + sec.seq1)
    else:
        with parallel(num_threads=team):
            _thread_forward(m, &run, x, batch_first, h0, c0, out, hn, cn, ws + sec.seq0, ws + sec.seq1)
    cdef long long took = lstm_now_ns() - started if started else 0
    if way >= 0:
        lstm_contended_record(m.serial, B, way, took // max(T, 1))
    if meets or run.timed_split:
        lstm_team_report(state.late or state.stacked, took)


cdef void _forward_any(const ModelInfo *m, const void *x, int T, int B, bint batch_first, const void *h0,
                      const void *c0, const int *lengths, void *out, void *hn, void *cn, void *ws, int num_threads,
                      bint input_aliases_output, bint descending) noexcept nogil:
    """_forward in the model's dtype, on untyped pointers to arrays of that dtype."""
    if m.is_double:
        _forward[double](m, <const double *> x, T, B, batch_first, <const double *> h0, <const double *> c0,
                         lengths, <double *> out, <double *> hn, <double *> cn, <double *> ws, num_threads,
                         input_aliases_output, descending)
    else:
        _forward[float](m, <const float *> x, T, B, batch_first, <const float *> h0, <const float *> c0,
                        lengths, <float *> out, <float *> hn, <float *> cn, <float *> ws, num_threads,
                        input_aliases_output, descending)


cdef inline bint _next_step_order(PackedModel m) noexcept:
    """Whether this single-step call runs its blocks in descending order: flips from one call to the next."""
    m.step_parity = not m.step_parity
    return m.step_parity


# forward() calls running now, from all Python threads (changed only with the GIL held)
cdef int _calls_in_flight = 0


def calls_in_flight():
    """How many forward() calls are running now (from all Python threads)."""
    return _calls_in_flight


cpdef forward(PackedModel m, cnp.ndarray x, bint batch_first, cnp.ndarray h0, cnp.ndarray c0,
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
    num_threads : int, upper bound on the OpenMP team size; calls running at the same time share it

    All arrays must have the model's dtype and be C-contiguous; fastlstm.LSTM checks this.
    """
    _forward_arrays(m, x, x.shape[1] if batch_first else x.shape[0], x.shape[0] if batch_first else x.shape[1],
                    batch_first, h0, c0, <const int *> cnp.PyArray_DATA(lengths), out, hn, cn, workspace, num_threads)


cdef void _forward_arrays(PackedModel m, cnp.ndarray x, int T, int B, bint batch_first, cnp.ndarray h0,
                          cnp.ndarray c0, const int *lens, cnp.ndarray out, cnp.ndarray hn, cnp.ndarray cn,
                          cnp.ndarray workspace, int num_threads) except *:
    """forward() with T and B given: x is (T, B, I) or (B, T, I) in memory, whatever its shape (an unbatched
    (T, I) is (T, 1, I)); h0, c0, hn, cn likewise (L*D, B, K) and (L*D, B, H) in memory; lens (B,)."""
    global _calls_in_flight
    cdef bint descending = _next_step_order(m) if T == 1 else False
    _calls_in_flight += 1
    num_threads = max(1, num_threads // _calls_in_flight)
    try:
        with nogil:
            _forward_any(&m.info, cnp.PyArray_DATA(x), T, B, batch_first, cnp.PyArray_DATA(h0), cnp.PyArray_DATA(c0),
                         lens, cnp.PyArray_DATA(out), cnp.PyArray_DATA(hn), cnp.PyArray_DATA(cn),
                         cnp.PyArray_DATA(workspace), num_threads, False, descending)
    finally:
        _calls_in_flight -= 1


cdef inline bint _has_shape(cnp.ndarray arr, int ndim, const cnp.npy_intp *dims) noexcept:
    """arr has ndim axes of sizes dims."""
    cdef int i
    if cnp.PyArray_NDIM(arr) != ndim:
        return False
    for i in range(ndim):
        if arr.shape[i] != dims[i]:
            return False
    return True


cdef inline bint _is_plain_array(object a, int typenum, int ndim, const cnp.npy_intp *dims) noexcept:
    """a is exactly an ndarray of typenum in native byte order, C-contiguous, aligned, of shape dims (ndim axes)."""
    if not cnp.PyArray_CheckExact(a):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray> a
    # ISCARRAY_RO: C-contiguous, aligned and not byte-swapped
    return cnp.PyArray_TYPE(arr) == typenum and cnp.PyArray_ISCARRAY_RO(arr) and _has_shape(arr, ndim, dims)


cdef object _plain_or_converted(object a, int typenum, int ndim, const cnp.npy_intp *dims):
    """a if it is a plain array (_is_plain_array); for any other exact ndarray of integers or floats of this
    shape, its values converted to typenum in a new C-contiguous array (as np.ascontiguousarray(a, dtype) does);
    None for anything else."""
    if _is_plain_array(a, typenum, ndim, dims):
        return a
    if not cnp.PyArray_CheckExact(a):
        return None
    cdef cnp.ndarray arr = <cnp.ndarray> a
    if arr.descr.kind not in b"iuf" or not _has_shape(arr, ndim, dims):
        return None
    return cnp.PyArray_FROMANY(arr, typenum, ndim, ndim, cnp.NPY_ARRAY_CARRAY | cnp.NPY_ARRAY_FORCECAST)


cdef bint _read_lengths(object lengths, long B, long T, int *buf) except -1:
    """lengths into buf (B,) if they are B integers in [1, T]: an exact ndarray of int32 or int64, C-contiguous
    in native byte order, or a list or tuple of ints or signed NumPy integers. False for anything else, or a
    value out of range (the checked path then converts or raises)."""
    cdef long i, v
    cdef cnp.ndarray arr
    cdef int typenum
    if cnp.PyArray_CheckExact(lengths):
        arr = <cnp.ndarray> lengths
        typenum = cnp.PyArray_TYPE(arr)
        if not (cnp.PyArray_NDIM(arr) == 1 and arr.shape[0] == B and cnp.PyArray_ISCARRAY_RO(arr)
                and (typenum == cnp.NPY_INT32 or typenum == cnp.NPY_INT64)):
            return False
        for i in range(B):
            v = (<const int *> cnp.PyArray_DATA(arr))[i] if typenum == cnp.NPY_INT32 else \
                (<const long long *> cnp.PyArray_DATA(arr))[i]
            if v < 1 or v > T:
                return False
            buf[i] = <int> v
        return True
    if (type(lengths) is list or type(lengths) is tuple) and len(lengths) == B:
        for i in range(B):
            item = lengths[i]
            # Python ints and signed NumPy integers: np.asarray gives an integer array of any mix of them (a
            # NumPy unsigned integer among signed ones would make it float64, which the checked path rejects)
            if not (type(item) is int or isinstance(item, np.signedinteger)) or not 1 <= item <= T:
                return False
            buf[i] = <int> item
        return True
    return False


cdef class ForwardPlan:
    """The parts of a forward call that depend only on its layout and batch, not on T: zero initial states,
    the shapes of hx and h_n, thread counts. fastlstm.LSTM caches one per input shape without its time axis;
    run() then does the common call in one step from Python: an exact ndarray of numbers with this plan's
    batch and input size and T >= 1 steps (batched or not), hx None or a pair of such arrays (a GRU's: one such
    array), lengths None or B integers in [1, T] (batched calls).
    """
    cdef readonly PackedModel packed
    cdef cnp.ndarray h0, c0
    cdef int ndim                 # 3 for a batched call, 2 for an unbatched one (x, out, hx and h_n, c_n alike)
    cdef int time_axis            # x's and out's axis of time steps
    cdef cnp.npy_intp x_dims[3]   # x's shape, with the time axis filled in by each call
    cdef cnp.npy_intp out_dims[3]
    cdef cnp.npy_intp h_dims[3]
    cdef cnp.npy_intp c_dims[3]
    cdef int typenum
    cdef bint batch_first
    cdef int max_pooled
    cdef readonly int B
    cdef long long max_steps_rows        # T * B above this is too large, as the checked path says (2^62 / max(I, 4H))
    cdef tuple thread_args               # (H, H_out, B, D, I) for _threads.effective_threads
    cdef int threads_one, threads_many   # its answers for T = 1 and T > 1, when the settings were these two:
    cdef object threads_override         # _threads._override (set_num_threads)
    cdef object threads_forked           # _threads._forked_child

    def __cinit__(self, PackedModel packed, bint batch_first, tuple x_shape, tuple out_shape, tuple h_shape,
                  tuple c_shape, cnp.ndarray h0, cnp.ndarray c0, tuple thread_args, int max_pooled):
        """The shapes of one call (x_shape, out_shape, h_shape of hx[0] and h_n, c_shape), all with 3 axes or
        all with 2 (unbatched); batch_first: x's layout when batched; h0 and c0 zeros of h_shape and c_shape;
        thread_args (H, H_out, B, D, I) as effective_threads takes them; max_pooled: how many workspaces the
        model keeps."""
        cdef int i
        self.packed, self.ndim = packed, len(x_shape)
        self.batch_first = batch_first and self.ndim == 3
        self.time_axis = 1 if self.batch_first else 0
        self.B = (x_shape[0] if self.batch_first else x_shape[1]) if self.ndim == 3 else 1
        self.h0, self.c0 = h0, c0
        self.typenum = cnp.PyArray_TYPE(h0)
        for i in range(self.ndim):
            self.x_dims[i], self.out_dims[i] = x_shape[i], out_shape[i]
            self.h_dims[i], self.c_dims[i] = h_shape[i], c_shape[i]
        self.max_steps_rows = (<long long> 1 << 62) // max(packed.info.dirs[0].input_size,
                                                            packed.info.gates * packed.info.hidden_size)
        self.thread_args, self.max_pooled = thread_args, max_pooled
        self.threads_override = self.threads_forked = self     # (never an actual setting: computed at first run)

    def run(self, model, x, hx, lengths):
        """forward() of x with hx (None, or a tuple or list of two arrays) and lengths into new arrays, if this
        is a call the plan can run: x, hx and lengths as the class docstring says, and the model's weights still
        the plan's. Inputs of another dtype or layout are converted as the checked path converts them. Returns
        (out, (h_n, c_n)) (a GRU's: (out, h_n)), or None for any other call (the caller then takes the checked
        path). A workspace is taken from the model's pool (or made) and put back if the pool has room."""
        cdef int nd = self.ndim, i
        if not cnp.PyArray_Check(x) or cnp.PyArray_NDIM(<cnp.ndarray> x) != nd or model._packed is not self.packed:
            return None
        cdef cnp.npy_intp T = (<cnp.ndarray> x).shape[self.time_axis]
        if T < 1 or T > 2147483647 or T * self.B > self.max_steps_rows:
            return None
        cdef cnp.npy_intp x_dims[3]
        cdef cnp.npy_intp out_dims[3]
        for i in range(nd):
            x_dims[i], out_dims[i] = self.x_dims[i], self.out_dims[i]
        x_dims[self.time_axis] = out_dims[self.time_axis] = T
        x = _plain_or_converted(x, self.typenum, nd, x_dims)
        if x is None:
            return None
        cdef object h0 = self.h0, c0 = self.c0
        cdef bint has_c = self.packed.info.has_c
        if hx is not None:
            if not has_c:
                h0 = _plain_or_converted(hx, self.typenum, nd, self.h_dims)
            elif not ((type(hx) is tuple or type(hx) is list) and len(hx) == 2):
                return None
            else:
                h0 = _plain_or_converted(hx[0], self.typenum, nd, self.h_dims)
                c0 = _plain_or_converted(hx[1], self.typenum, nd, self.c_dims)
            if h0 is None or c0 is None:
                return None
        cdef int lens_on_stack[64]
        cdef int *lens = lens_on_stack
        cdef cnp.ndarray lens_array
        cdef cnp.npy_intp B = self.B
        if B > 64:
            lens_array = cnp.PyArray_EMPTY(1, &B, cnp.NPY_INT32, 0)
            lens = <int *> cnp.PyArray_DATA(lens_array)
        if lengths is None:
            for i in range(B):
                lens[i] = <int> T
        elif nd != 3 or not _read_lengths(lengths, B, T, lens):
            return None
        override, forked = _threads._override, _threads._forked_child
        if override is not self.threads_override or forked is not self.threads_forked:
            H, K, B_, D, I = self.thread_args
            self.threads_one = _threads.effective_threads(H, K, B_, D, steps=1, input_size=I)
            self.threads_many = _threads.effective_threads(H, K, B_, D, input_size=I)  # any T > 1
            self.threads_override, self.threads_forked = override, forked
        cdef cnp.ndarray out = cnp.PyArray_EMPTY(nd, out_dims, self.typenum, 0)
        cdef cnp.ndarray hn = cnp.PyArray_EMPTY(nd, self.h_dims, self.typenum, 0)
        cdef cnp.ndarray cn = cnp.PyArray_EMPTY(nd, self.c_dims, self.typenum, 0)
        cdef long workspace_size = _plan_workspace(&self.packed.info, T, B).total
        cdef list workspaces = model._workspaces
        cdef cnp.ndarray workspace = workspaces.pop() if workspaces else None
        if workspace is None or cnp.PyArray_SIZE(workspace) < workspace_size:
            from ._packing import _aligned_empty
            workspace = _aligned_empty((workspace_size,), x.dtype)
        try:
            _forward_arrays(self.packed, x, T, B, self.batch_first, h0, c0, lens, out, hn, cn, workspace,
                            self.threads_one if T == 1 else self.threads_many)
        finally:
            if len(workspaces) < self.max_pooled:
                workspaces.append(workspace)
        return (out, (hn, cn)) if has_c else (out, hn)


cdef class StreamCore:
    """The native half of fastlstm.Stream, which subclasses it: the state (h, c) and one time step.

    step() recognises the common call in C: x_t, and out if given, exact ndarrays of the model's dtype and the
    stream's shapes, C-contiguous and aligned (out writable). Any other call goes to the subclass's
    _step_checked, which converts or raises and then calls _run.
    """
    cdef readonly object _model
    cdef readonly cnp.ndarray _h, _c
    cdef cnp.ndarray _lengths, _workspace
    cdef PackedModel _packed
    cdef public int _threads
    cdef int _typenum
    cdef cnp.npy_intp _x_dims[2]
    cdef cnp.npy_intp _out_dims[2]

    def __init__(self, model, batch_size, int threads):
        """State for ``batch_size`` rows of ``model`` (zeros), stepped on at most ``threads`` threads. A batch too
        large for memory fails in the allocation (MemoryError or ValueError), before any C int holds it."""
        dtype = np.dtype(model.dtype)
        self._model, self._threads, self._typenum = model, threads, dtype.num
        self._h = np.zeros((model.num_layers, batch_size, model.out_size), dtype)
        # a GRU has no cell state: an empty c, never read
        self._c = np.zeros((model.num_layers, batch_size, model.hidden_size if len(model._cell.state) == 2 else 0),
                           dtype)
        self._lengths = np.ones(batch_size, np.int32)
        self._x_dims[0], self._x_dims[1] = batch_size, model.input_size
        self._out_dims[0], self._out_dims[1] = batch_size, model.out_size

    def step(self, x_t, out=None):
        """Advance one time step: x_t (B, I) -> y_t (B, H_out), whatever batch_first is.

        With ``out`` (C-contiguous, (B, H_out), the model's dtype, writable) the result is written there and
        ``out`` itself is returned; nothing is allocated.
        """
        if _is_plain_array(x_t, self._typenum, 2, self._x_dims) and (
                out is None or (_is_plain_array(out, self._typenum, 2, self._out_dims)
                                and cnp.PyArray_ISWRITEABLE(<cnp.ndarray> out))):
            if out is None:
                out = cnp.PyArray_EMPTY(2, self._out_dims, self._typenum, 0)
            self._advance(x_t, out)
            return out
        return self._step_checked(x_t, out)

    def _run(self, cnp.ndarray x, cnp.ndarray out):
        """One step of checked arrays: x (B, I) and out (B, H_out), C-contiguous in the model's dtype."""
        self._advance(x, out)

    cdef void _advance(self, cnp.ndarray x, cnp.ndarray out) except *:
        """One time step of every layer, the state updated in place, with the GIL released. out may overlap x.

        h (L, B, K) and c (L, B, H) are read and written in place: each thread reads and then writes only its
        own units (or rows, see _thread_forward). The workspace follows the model's packed weights (its
        parameters may have been reassigned).
        """
        cdef PackedModel m = self._model._packed
        if m is not self._packed:
            from ._packing import _aligned_empty
            self._workspace = _aligned_empty((m.workspace_size(1, self._x_dims[0]),), self._model.dtype)
            self._packed = m
        cdef int threads = 1 if _threads._forked_child else self._threads
        cdef int B = self._x_dims[0]
        cdef const int *lens = <const int *> cnp.PyArray_DATA(self._lengths)
        cdef char *x_lo = <char *> cnp.PyArray_DATA(x)
        cdef char *out_lo = <char *> cnp.PyArray_DATA(out)
        cdef bint overlap = x_lo < out_lo + cnp.PyArray_NBYTES(out) and out_lo < x_lo + cnp.PyArray_NBYTES(x)
        cdef void *h = cnp.PyArray_DATA(self._h)
        cdef void *c = cnp.PyArray_DATA(self._c)
        cdef cnp.ndarray workspace = self._workspace     # held here: another thread may replace the attribute
        cdef void *ws = cnp.PyArray_DATA(workspace)
        cdef bint descending = _next_step_order(m)
        with nogil:
            _forward_any(&m.info, x_lo, 1, B, False, h, c, lens, out_lo, h, c, ws, threads, overlap, descending)
