"""Where does a second thread start to pay? Prints 1-thread / 2-thread time ratios over a grid of shapes.

    python benchmarks/crossover.py

Three tables: forwards over T=100 steps set fastlstm._threads.MIN_WORK_PER_THREAD (work = 4 * H * H_out * B
multiply-adds of the recurrent product per step: below it, the per-step barrier costs more than the second
thread saves); single streaming steps set MIN_STEP_WORK_PER_THREAD (work = 4 * H * (I + H_out) * B: a step
also pays for starting the team); forwards of a batch on 2 threads, split by units or by rows of the batch,
set ROW_SPLIT_MAX_HIDDEN in src/_kernels.pyx. Medians of interleaved rounds.
"""
import argparse

import numpy as np

import fastlstm
from fastlstm._bench import time_interleaved
from fastlstm import _kernels, _threads


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
    print()
    print("one streaming step (I = H)")
    print(f"{'H':>5} {'B':>3} {'work':>9} {'1 thread us':>12} {'2 threads us':>13} {'speed-up':>9}")
    for H in (64, 96, 128, 192, 256, 512):
        for B in (1, 8):
            model = fastlstm.LSTM(H, H, seed=0)
            one_stream, two_stream = model.stream(B), model.stream(B)
            one_stream._threads, two_stream._threads = 1, 2
            x = rng.standard_normal((B, H)).astype(np.float32)
            out = np.empty((B, H), np.float32)
            t = time_interleaved(
                {"one": lambda: one_stream.step(x, out=out), "two": lambda: two_stream.step(x, out=out)},
                seconds=0.3,
                min_rounds=200,
            )
            work = 4 * H * 2 * H * B
            print(f"{H:>5} {B:>3} {work:>9} {t['one'] * 1e6:>12.2f} {t['two'] * 1e6:>13.2f} {t['one'] / t['two']:>9.2f}")
    print()
    print("T = 100, I = 32, 2 threads: units or rows of the batch per thread")
    print(f"{'H':>5} {'B':>3} {'units ms':>9} {'rows ms':>9} {'rows speed-up':>14}")
    fastlstm.set_num_threads(2)
    for H in (16, 32, 48, 64, 96, 128, 256):
        for B in (8, 32):
            model = fastlstm.LSTM(32, H, seed=0)
            x = rng.standard_normal((100, B, 32)).astype(np.float32)

            def split(mode):
                _kernels.set_row_split(mode)
                model(x)

            try:
                t = time_interleaved({"units": lambda: split(0), "rows": lambda: split(1)}, seconds=0.3, min_rounds=20)
            finally:
                _kernels.set_row_split(-1)
            print(f"{H:>5} {B:>3} {t['units'] * 1e3:>9.3f} {t['rows'] * 1e3:>9.3f} {t['units'] / t['rows']:>14.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    main()
