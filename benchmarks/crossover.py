"""Where does a second thread start to pay? Prints 1-thread / 2-thread time ratios over a grid of shapes.

    python benchmarks/crossover.py

fastlstm._threads.MIN_WORK_PER_THREAD (work = 4 * H * H_out * B multiply-adds per step) is set from this:
below it, the per-step barrier costs more than the second thread saves. Medians of interleaved rounds.
"""
import numpy as np

import fastlstm
from fastlstm._bench import time_interleaved
from fastlstm import _threads


def main():
    _threads.MIN_WORK_PER_THREAD = 1  # let the measurement decide, not the current threshold
    rng = np.random.default_rng(0)
    print(f"{'H':>5} {'B':>3} {'work':>9} {'1 thread ms':>12} {'2 threads ms':>13} {'speed-up':>9}")
    for H in (16, 32, 48, 64, 96, 128, 192, 256):
        for B in (1, 4):
            model = fastlstm.LSTM(H, H, seed=0)
            x = rng.standard_normal((100, B, H)).astype(np.float32)

            def run(n):
                fastlstm.set_num_threads(n)
                model(x)

            t = time_interleaved({"one": lambda: run(1), "two": lambda: run(2)}, seconds=0.3, min_rounds=20)
            one, two = t["one"], t["two"]
            work = 4 * H * H * B
            print(f"{H:>5} {B:>3} {work:>9} {one * 1e3:>12.3f} {two * 1e3:>13.3f} {one / two:>9.2f}")


if __name__ == "__main__":
    main()
