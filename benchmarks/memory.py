"""Resident memory stays flat over many calls and streaming steps (no leak in the kernels or the pools).

    python benchmarks/memory.py [--count 100000]

Runs forwards of several configurations and streaming steps, `count` in all, and prints the resident set
size after a warm-up and at the end. Exits 1 if it grew by more than --max-growth-mb (default 8).
"""
import argparse
import sys

import numpy as np

import fastlstm
from fastlstm import _bench


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=_bench.at_least(1), default=100_000)
    parser.add_argument("--max-growth-mb", type=float, default=8.0)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    models = [
        fastlstm.LSTM(16, 32, seed=0),
        fastlstm.LSTM(16, 24, 2, bidirectional=True, proj_size=8, seed=1, batch_first=True),
        fastlstm.LSTM(16, 32, peepholes=True, clip=3.0, input_forget=True, dtype=np.float64, seed=2),
    ]
    xs = [rng.standard_normal((5, 3, 16)).astype(np.float32) for _ in models]  # (T, B, I); (B, T, I) for model 1
    stream = models[0].stream(2)
    x_t = rng.standard_normal((2, 16)).astype(np.float32)
    out = np.empty((2, 32), np.float32)

    def one_round(k):
        m = models[k % len(models)]
        x = xs[k % len(models)]
        T, B = (x.shape[1], x.shape[0]) if m.batch_first else x.shape[:2]
        lengths = [1 + k % T] * B if k % 2 else None
        m(x, lengths=lengths)
        stream.step(x_t, out=out)
        if k % 1000 == 0:
            stream.reset()

    warm = min(2000, args.count // 10)
    for k in range(warm):
        one_round(k)
    start = rss_mb()
    for k in range(warm, args.count):
        one_round(k)
    end = rss_mb()
    print(f"{args.count} calls + {args.count} streaming steps: RSS {start:.1f} MB after warm-up, {end:.1f} MB at the end "
          f"({end - start:+.1f} MB)")
    return 0 if end - start <= args.max_growth_mb else 1


if __name__ == "__main__":
    sys.exit(main())
