"""Two Python threads running fastlstm at once get a real speed-up: the kernels release the GIL.

    python benchmarks/gil_release.py

Each thread runs its own forwards (kernels capped at one thread each, so the two calls can use the two
cores); prints sequential time / concurrent time for the same total work. ~2 on 2 idle cores.
"""
import argparse
import threading
import time

import numpy as np

import fastlstm


def main(calls: int = 20):
    fastlstm.set_num_threads(1)
    rng = np.random.default_rng(0)
    models = [fastlstm.LSTM(128, 256, seed=k) for k in range(2)]
    xs = [rng.standard_normal((100, 4, 128)).astype(np.float32) for _ in models]

    def work(k):
        for _ in range(calls):
            models[k](xs[k])

    for k in range(2):
        work(k)  # warm up
    t0 = time.perf_counter()
    work(0)
    work(1)
    sequential = time.perf_counter() - t0
    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    concurrent = time.perf_counter() - t0
    print(f"2 x {calls} forwards: sequential {sequential * 1e3:.1f} ms, two Python threads {concurrent * 1e3:.1f} ms, "
          f"speed-up {sequential / concurrent:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20, help="forwards per thread (default: %(default)s)")
    args = parser.parse_args()
    main(args.calls)
