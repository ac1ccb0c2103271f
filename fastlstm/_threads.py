"""The number of threads fastlstm's kernels use, resolved in one place.

Order: fastlstm.set_num_threads(n) if called; else OMP_NUM_THREADS (its first entry) if set; else the number
of physical cores this process may run on. Small problems use fewer threads (see effective_threads).

In a process forked from one that ran fastlstm, GNU libgomp's thread pool is unusable (a parallel region
hangs), so forked children run the kernels on one thread; results are the same for any thread count.
"""
from __future__ import annotations

import functools
import numbers
import os
from typing import Optional

_override: Optional[int] = None
_default: Optional[int] = None  # from OMP_NUM_THREADS or the core count, resolved at first use
_forked_child = False


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
    """Use at most ``n`` threads (n >= 1) in fastlstm's kernels, overriding OMP_NUM_THREADS."""
    global _override
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"set_num_threads: n should be of type int, got: {type(n).__name__}")
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    _override = int(n)


def get_num_threads() -> int:
    """The thread count fastlstm's kernels will use at most.

    OMP_NUM_THREADS is read once, the first time fastlstm needs it (as OpenMP runtimes read it at start-up).
    """
    global _default
    if _override is not None:
        return _override
    if _default is None:
        env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
        _default = int(env) if env.isdigit() and int(env) >= 1 else physical_cores()
    return _default


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
