"""Speed of fastlstm's bf16 and int8 models beside the peers' reduced precision, on the issue's shapes.

    python benchmarks/quant_speed.py [--rounds N] [--quick] [--threads 2] [--cpu-time]

For each shape every runner (fastlstm float32, bf16, int8; OpenVINO at its default precision, bf16 on a CPU
with AVX512-BF16; onnxruntime int8 from quantize_dynamic, per channel) runs in blocks of calls, the runners
alternating within each round so that a slow spell of the shared machine hits them all; a block's time is its
mean per call. Printed: the median block time of each runner, and the medians over the rounds of the ratios
peer time / fastlstm time (bf16 vs OpenVINO default, int8 vs onnxruntime int8, int8 vs fastlstm float32).
Peers that are not installed are left out. Same weights and inputs for all; 2 threads unless told.
--cpu-time measures the CPU time of the process instead of the wall clock: with --threads 1, what each runner
costs whatever else the machine runs (a shared machine's load inflates the wall clock of teams that meet at
every step far more than their CPU time).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fastlstm  # noqa: E402
import quant_peers  # noqa: E402

# (label, T, B, I, H, layers); T = 0: one streaming step
SHAPES = [
    ("streaming step, B=1, I=256, H=512", 0, 1, 256, 512, 1),
    ("T=100, B=1, I=256, H=512", 100, 1, 256, 512, 1),
    ("T=100, B=4, I=128, H=256", 100, 4, 128, 256, 1),
    ("T=100, B=32, I=256, H=512", 100, 32, 256, 512, 1),
    ("T=50, B=64, I=512, H=1024, 2 layers", 50, 64, 512, 1024, 2),
]
RATIOS = [("bf16 vs OpenVINO default", "openvino default", "fastlstm bf16"),
          ("int8 vs onnxruntime int8", "onnxruntime int8", "fastlstm int8"),
          ("int8 vs fastlstm f32", "fastlstm f32", "fastlstm int8")]


def runners(T, B, I, H, L, threads):
    """{name: zero-argument callable running one call} for one shape, each on the same weights and input."""
    rng = np.random.default_rng(0)
    model = fastlstm.LSTM(I, H, L, seed=0)
    found = {}
    if T == 0:
        x = rng.standard_normal((B, I)).astype(np.float32)
        for fmt in ("f32", "bf16", "int8"):
            stream = (model if fmt == "f32" else model.quantize(fmt)).stream(batch_size=B)
            out = np.empty((B, H), np.float32)
            found[f"fastlstm {fmt}"] = lambda s=stream, o=out: s.step(x, out=o)
        peers = [("openvino default", lambda: quant_peers.openvino_step_runner(model, B, threads)[0]),
                 ("onnxruntime int8", lambda: quant_peers.ort_int8_step_runner(model, threads))]
        for name, make in peers:
            try:
                step = make()
            except ImportError:
                continue
            found[name] = lambda step=step: step(x)
        return found
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    for fmt in ("f32", "bf16", "int8"):
        m = model if fmt == "f32" else model.quantize(fmt)
        found[f"fastlstm {fmt}"] = lambda m=m: m(x)
    peers = [("openvino default", lambda: quant_peers.openvino_runner(model, x.shape, threads)[0]),
             ("onnxruntime int8", lambda: quant_peers.ort_int8_runner(model, threads))]
    for name, make in peers:
        try:
            run = make()
        except ImportError:
            continue
        found[name] = lambda run=run: run(x)
    return found


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
            t0 = clock()
            for _ in range(reps[name]):
                fn()
            times[name].append((clock() - t0) / reps[name])
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="3 rounds of short blocks, the first three shapes")
    parser.add_argument("--cpu-time", action="store_true", help="time by the process's CPU time (use --threads 1)")
    args = parser.parse_args(argv)
    fastlstm.set_num_threads(args.threads)
    rounds, block = (3, 0.05) if args.quick else (args.rounds, 0.2)
    shapes = SHAPES[:3] if args.quick else SHAPES
    clock = time.process_time if args.cpu_time else time.perf_counter
    print(f"threads {args.threads}, {rounds} rounds, medians of {'CPU' if args.cpu_time else 'wall-clock'} time; "
          "ratio = peer time / fastlstm time")
    for label, T, B, I, H, L in shapes:
        found = runners(T, B, I, H, L, args.threads)
        times = measure(found, rounds, block, clock)
        unit, scale = ("us", 1e6) if T == 0 else ("ms", 1e3)
        cells = ", ".join(f"{name} {np.median(t) * scale:.3g} {unit}" for name, t in times.items())
        ratios = []
        for text, peer, ours in RATIOS:
            if peer in times and ours in times:
                ratio = np.median(np.array(times[peer]) / np.array(times[ours]))
                ratios.append(f"{text} {ratio:.2f}x")
        print(f"{label}: {cells}\n    " + "; ".join(ratios), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
