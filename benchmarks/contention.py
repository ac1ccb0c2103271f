"""fastlstm on a busy machine: the default thread count against one thread and against onnxruntime, while 0, 1
or 2 other processes keep cores busy.

    python benchmarks/contention.py [--loads 0 1 2] [--rounds 3] [--block-s 0.2] [--quick]

A team of threads that meets at every time step waits for its slowest member; when another process takes a
member's core for a time slice, the whole call waits for it. fastlstm's teams notice such late members and then
stop meeting for a while (the rows of a batch are split among the threads, or one thread runs the call), so the
default must never be much slower than one thread under the same load (DESIGN.md, "Threads").

A busy process is `python -c "while True: pass"` at normal priority. For each load, the three ways to run each
shape (fastlstm with its default threads, fastlstm on one thread, onnxruntime with as many threads as fastlstm's
default, when installed) are timed in rotating blocks of calls, each block after a 30 ms pause, and the medians
over all rounds are printed with the ratios default / one thread and default / onnxruntime (below 1: the
default is faster). The numbers move with the machine's other load: compare ratios within a run.
"""
import argparse
import subprocess
import sys
import time
from typing import Callable, Dict, List

import numpy as np

import fastlstm
from fastlstm import _bench

# (T, B, I, H) of the bench's T=100 shapes
SHAPES = [(100, 1, 32, 70), (100, 1, 256, 512), (100, 4, 128, 256), (100, 32, 256, 512)]
QUICK_SHAPES = [(100, 1, 32, 70), (100, 4, 128, 256)]
BLOCK_PAUSE_S = 0.03


def busy_processes(count: int) -> List[subprocess.Popen]:
    """Start `count` processes that keep a core busy each."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def time_block(call: Callable[[], object], seconds: float, min_calls: int) -> List[float]:
    """Per-call times (s) of a block of calls lasting about `seconds` (at least min_calls calls)."""
    times: List[float] = []
    end = time.perf_counter() + seconds
    while len(times) < min_calls or time.perf_counter() < end:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return times


def ways(T: int, B: int, I: int, H: int, threads: int) -> Dict[str, Callable[[], object]]:
    """The ways to run one shape: fastlstm with `threads` threads (the default), on one thread, onnxruntime."""
    model = fastlstm.LSTM(I, H, seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)

    def with_threads(n: int) -> Callable[[], object]:
        def call() -> object:
            fastlstm.set_num_threads(n)
            return model(x)
        return call

    calls: Dict[str, Callable[[], object]] = {"default": with_threads(threads), "1 thread": with_threads(1)}
    if _bench.installed("onnxruntime") and _bench.installed("onnx"):
        from fastlstm import _peers

        ort = _peers.ort_runner(model, threads)
        calls["onnxruntime"] = lambda: ort(x)
    return calls


def measure(shapes, threads: int, rounds: int, block_s: float) -> Dict[str, Dict[str, float]]:
    """Median ms per shape and way, over `rounds` rounds of blocks rotating between the ways."""
    results: Dict[str, Dict[str, float]] = {}
    for T, B, I, H in shapes:
        calls = ways(T, B, I, H, threads)
        for call in calls.values():  # first calls: allocations, plans, thread pools
            call()
        times: Dict[str, List[float]] = {name: [] for name in calls}
        for _ in range(rounds):
            for name, call in calls.items():
                time.sleep(BLOCK_PAUSE_S)
                times[name] += time_block(call, block_s, 5)
        results[f"T={T}, B={B}, I={I}, H={H}"] = {name: float(np.median(t)) * 1e3 for name, t in times.items()}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", type=_bench.at_least(0), nargs="+", default=[0, 1, 2], help="busy processes (each value)")
    parser.add_argument("--rounds", type=_bench.at_least(1), default=3, help="rounds of rotating blocks per shape")
    parser.add_argument("--block-s", type=_bench.at_least(0.001, float), default=0.2, help="seconds per block of calls")
    parser.add_argument("--quick", action="store_true", help="two shapes, short blocks (a run of seconds)")
    args = parser.parse_args()
    threads = fastlstm.get_num_threads()
    shapes = QUICK_SHAPES if args.quick else SHAPES
    rounds, block_s = (1, 0.05) if args.quick else (args.rounds, args.block_s)
    print(f"float32, fastlstm default = {threads} threads, onnxruntime {threads} threads; medians in ms "
          f"({rounds} rounds of {block_s:g} s blocks)")
    header = f"{'load':<8} {'shape':<26} {'default':>9} {'1 thread':>9} {'ort':>9} {'def/1thr':>9} {'def/ort':>8}"
    print(header)
    for load in args.loads:
        procs = busy_processes(load)
        try:
            time.sleep(0.2)  # the busy processes are running
            results = measure(shapes, threads, rounds, block_s)
        finally:
            for p in procs:
                p.kill()
                p.wait()
        for shape, ms in results.items():
            ort = ms.get("onnxruntime", float("nan"))
            print(f"{f'{load} busy':<8} {shape:<26} {ms['default']:>9.3f} {ms['1 thread']:>9.3f} {ort:>9.3f} "
                  f"{ms['default'] / ms['1 thread']:>9.2f} {ms['default'] / ort:>8.2f}")
    fastlstm.set_num_threads(threads)


if __name__ == "__main__":
    main()
