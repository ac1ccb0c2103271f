"""The number of threads fastlstm's kernels use, resolved in one place.

Order: fastlstm.set_num_threads(n) if called; else OMP_NUM_THREADS (its first entry) if set; else the number
of physical cores this process may run on. Small problems use fewer threads (see effective_threads).

threadpoolctl sees this setting as a thread pool of its own (user_api "openmp", internal_api "fastlstm"):
``threadpool_limits(n)`` sets it to n while the limit is in force, for every Python thread of the process (as
it sets OpenMP's and BLAS's counts), and puts back the setting from before on exit. fastlstm does not follow
omp_set_num_threads: its kernels name their team size, and libgomp's limit is one per calling thread while
fastlstm's setting is one per process.

In a process forked from one that ran an OpenMP team, GNU libgomp's thread pool is unusable (a parallel region
hangs), and whether another library of the parent ran one cannot be told: so every child forked from a process
that imported fastlstm runs the kernels on one thread and get_num_threads() says 1 there; results are the same for
any thread count.
"""
from __future__ import annotations

import functools
import numbers
import os
import warnings
from typing import Callable, List, Optional

# The explicit count in force: set_num_threads' value, or a threadpoolctl limit's; None when neither.
# _kernels.ForwardPlan recomputes its cached thread counts when this object changes, so every change goes
# through _apply.
_override: Optional[int] = None
_limited = False                   # whether a threadpoolctl limit is in force
_unlimited: Optional[int] = None   # set_num_threads' value (None: not called) while a limit is in force
_default: Optional[int] = None  # from OMP_NUM_THREADS or the core count, resolved at first use
_forked_child = False
# called after the count in force changed (fastlstm._stream updates the streams made before)
_on_change: List[Callable[[], None]] = []


def _after_fork_in_child() -> None:
    global _forked_child
    _forked_child = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

# Work per step (multiply-adds of the recurrent matvec, 4H * H_out * B) below which a second thread costs
# more in barriers than it saves. Measured with benchmarks/crossover.py on the 2-core test machine (AMD EPYC,
# Zen 5 family) after the own spin barrier: 2 threads gave 0.82x at 4096 (H = 32, B = 1), 1.02-1.04x at
# 4096-9216, 1.27x and more from 16384 up (one block of units, H <= 16, is one thread anyway).
MIN_WORK_PER_THREAD = 4096
# A single streaming step also pays for starting the team, with nothing to amortise it. Work here is
# 4 * H * (I + H_out) * B; per benchmarks/crossover.py's second table a second thread lost at 32768 (H = 64,
# B = 1: 0.61x), broke even at 73728-262144 (0.99-1.06x) and paid from 294912 (H = 192, B = 1: 1.87x).
MIN_STEP_WORK_PER_THREAD = 131_072


def set_num_threads(n: int) -> None:
    """Use at most ``n`` threads (n >= 1) in fastlstm's kernels, overriding OMP_NUM_THREADS.

    It also replaces a threadpoolctl limit in force (as omp_set_num_threads does for OpenMP); leaving the
    ``threadpool_limits`` block then puts back the count from before the block. In a forked child the kernels
    run on one thread whatever the setting (see the module's docstring): asking for more warns there.
    """
    global _limited
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"set_num_threads: n should be of type int, got: {type(n).__name__}")
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    if _forked_child and n > 1:
        warnings.warn(f"fastlstm.set_num_threads({n}) in a process forked from one that imported fastlstm: the "
                      "kernels run on one thread here (GNU libgomp's thread pool does not survive a fork); start "
                      "worker processes with the 'spawn' or 'forkserver' method to use more", RuntimeWarning,
                      stacklevel=2)
    _limited = False
    _apply(int(n))


def get_num_threads() -> int:
    """The thread count fastlstm's kernels will use at most: set_num_threads' value, else OMP_NUM_THREADS,
    else the physical cores; a threadpoolctl limit's while one is in force; 1 in a forked child.

    OMP_NUM_THREADS is read once, the first time fastlstm needs it (as OpenMP runtimes read it at start-up).
    """
    if _forked_child:
        return 1
    if _override is not None:
        return _override
    return _default_threads()


def _default_threads() -> int:
    """OMP_NUM_THREADS (its first entry) if set to a positive integer, else the physical cores; read once."""
    global _default
    if _default is None:
        env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
        _default = int(env) if env.isdigit() and int(env) >= 1 else physical_cores()
    return _default


def _apply(n: Optional[int]) -> None:
    """Make n (None: no explicit count) the count in force and tell the listeners if it changed."""
    global _override
    if n != _override:
        _override = n
        for listener in _on_change:
            listener()


def _limit(n: int) -> None:
    """threadpoolctl's set_num_threads: n threads while a threadpool_limits block is in force. threadpoolctl
    leaves a block by setting the count it read on entering: that count, when it is the one without a limit,
    lifts the limit (an unset setting stays unset)."""
    global _limited, _unlimited
    n = max(1, int(n))
    own = _unlimited if _limited else _override
    if n == (own if own is not None else _default_threads()):
        if _limited:
            _limited = False
            _apply(own)
    else:
        if not _limited:
            _limited, _unlimited = True, own
        _apply(n)


@functools.lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (SMT siblings counted once)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores = set()
    for cpu in cpus:
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
        try:
            with open(base + "physical_package_id") as f:
                package = f.read().strip()
            with open(base + "core_id") as f:
                core = f.read().strip()
            cores.add((package, core))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def stream_threads(hidden_size: int, out_size: int, input_size: int, batch: int = 1) -> int:
    """Threads for one streaming step (each layer reads 4H x (I + H_out) weights per step for B rows)."""
    if _forked_child:
        return 1
    work = 4 * hidden_size * (input_size + out_size) * batch
    return max(1, min(get_num_threads(), work // MIN_STEP_WORK_PER_THREAD))


def effective_threads(hidden_size: int, out_size: int, batch: int, directions: int = 1, *, steps: int = 0,
                      input_size: int = 0) -> int:
    """Threads for one forward: fewer for small work, never more than get_num_threads().

    A forward of one time step (``steps == 1``, the torch habit ``lstm(x_t[None], hx)``) is a streaming step
    and follows stream_threads' rule, which counts the input weights too.

    Forward calls running at the same time (from several Python threads) then share these threads: the
    kernel divides them by the number of calls in flight (a team that waits at a barrier every step loses
    far more to a descheduled member than it gains from it). Results do not depend on the thread count.
    """
    if steps == 1:
        return stream_threads(hidden_size, out_size, input_size, batch * directions)
    if _forked_child:
        return 1
    work = 4 * hidden_size * out_size * batch * directions
    n = get_num_threads()
    return n if work >= n * MIN_WORK_PER_THREAD else max(1, work // MIN_WORK_PER_THREAD)


def _register_with_threadpoolctl() -> None:
    """Make threadpoolctl list fastlstm's thread setting and limit it (when threadpoolctl >= 3 is installed)."""
    try:
        from threadpoolctl import LibController, register
    except ImportError:
        return

    class FastlstmController(LibController):  # type: ignore[misc]  # (threadpoolctl is untyped)
        """fastlstm's kernels (the compiled module fastlstm._kernels) and their thread setting."""

        user_api = "openmp"
        internal_api = "fastlstm"
        filename_prefixes = ("_kernels",)
        # a symbol only fastlstm's module exports: other packages' _kernels modules are not taken for it
        check_symbols = ("__pyx_module_is_main_fastlstm___kernels",)

        def get_num_threads(self) -> int:
            return get_num_threads()

        def set_num_threads(self, num_threads: int) -> None:
            _limit(num_threads)

        def get_version(self) -> Optional[str]:
            from . import __version__

            return __version__

    register(FastlstmController)


_register_with_threadpoolctl()
