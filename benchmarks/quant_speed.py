"""Speed of fastlstm's bf16 and int8 models beside the peers' reduced precision, on the issue's shapes.

    python benchmarks/quant_speed.py [--rounds N] [--quick] [--threads 2] [--cpu-time]

For each shape every runner (fastlstm float32, bf16, int8; OpenVINO at its default precision, bf16 on a CPU
with AVX512-BF16; onnxruntime int8 from quantize_dynamic, per channel) runs in blocks of calls, the runners
alternating within each round so that a slow spell of the shared machine hits them all, with a pause before each
block (the peers' thread pools spin for a while after a call); a block's time is its mean per call. Printed: the
median block time of each runner, and the medians over the rounds of the ratios peer time / fastlstm time
(bf16 vs OpenVINO default, int8 vs onnxruntime int8, int8 vs fastlstm float32).
Peers that are not installed are left out. Same weights and inputs for all; 2 threads unless told.
--cpu-time measures the CPU time of the process instead of the wall clock: with --threads 1, what each runner
costs whatever else the machine runs (a shared machine's load inflates the wall clock of teams that meet at
every step far more than their CPU time).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import fastlstm
from fastlstm import _bench, _bench_sections

# seconds between two blocks: the thread pools of the runner before (onnxruntime's and OpenVINO's spin after a
# call) go back to sleep instead of taking the cores from the next block's team
PAUSE = 0.05
SECTION = next(s for s in _bench_sections.SECTIONS if s.name == "quant")


def measure(found, rounds, block_seconds, clock=time.perf_counter):
    """{name: [mean seconds per call of each round's block]}, runners alternating within each round."""
    reps = {}
    for name, fn in found.items():  # warm up, and size each block to about block_seconds
        fn()
        t0 = time.perf_counter()
        n = 0
        while time.perf_counter() - t0 < block_seconds / 4 or n < 2:
            fn()
            n += 1
        reps[name] = max(1, int(n * block_seconds / (time.perf_counter() - t0)))
    times = {name: [] for name in found}
    for r in range(rounds):
        order = list(found) if r % 2 == 0 else list(reversed(list(found)))
        for name in order:
            fn = found[name]
            time.sleep(PAUSE)
            t0 = clock()
            for _ in range(reps[name]):
                fn()
            times[name].append((clock() - t0) / reps[name])
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=_bench.at_least(1), default=7)
    parser.add_argument("--threads", type=_bench.at_least(1), default=2)
    parser.add_argument("--quick", action="store_true", help="3 rounds of short blocks, the first three shapes")
    parser.add_argument("--cpu-time", action="store_true", help="time by the process's CPU time (use --threads 1)")
    args = parser.parse_args(argv)
    fastlstm.set_num_threads(args.threads)
    rounds, block = (3, 0.05) if args.quick else (args.rounds, 0.2)
    shapes = _bench_sections.QUANT_SHAPES[:3] if args.quick else _bench_sections.QUANT_SHAPES
    clock = time.process_time if args.cpu_time else time.perf_counter
    print(f"threads {args.threads}, {rounds} rounds, medians of {'CPU' if args.cpu_time else 'wall-clock'} time; "
          "ratio = peer time / fastlstm time")
    for shape in shapes:
        found = _bench_sections.quant_case(shape, args.threads, args.quick).calls
        times = measure(found, rounds, block, clock)
        unit, scale = ("us", 1e6) if shape.streaming else ("ms", 1e3)
        cells = ", ".join(f"{name} {np.median(t) * scale:.3g} {unit}" for name, t in times.items())
        ratios = []
        for text, peer, ours in SECTION.comparisons:
            if peer in times and ours in times:
                ratio = np.median(np.array(times[peer]) / np.array(times[ours]))
                ratios.append(f"{text} {ratio:.2f}x")
        print(f"{shape.name}: {cells}\n    " + "; ".join(ratios), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
