"""The fixed cost of a call and of a streaming step: what fastlstm adds on top of its native kernel call.

    python benchmarks/call_cost.py

A model small enough that the kernel takes well under a microsecond (I=8, H=16, one thread), one time step,
B=1. Each way of calling it is timed against the bare native call with preallocated arrays
(fastlstm._kernels.forward): the difference is checking the arguments, looking up the cached plan or
workspace and allocating the outputs. The last call passes lengths the cached plan does not take (an
int16 array), so it shows the checked path. Medians of interleaved rounds of 2000 calls each.
"""
import argparse
import timeit

import numpy as np

import fastlstm
from fastlstm import _bench, _kernels


def main(rounds: int = 15, number: int = 2000):
    fastlstm.set_num_threads(1)
    I, H = 8, 16
    model = fastlstm.LSTM(I, H, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, I)).astype(np.float32)
    _, hx = model(x)
    x_unbatched, hx_unbatched = x[0], (hx[0][:, 0], hx[1][:, 0])
    model(x_unbatched, hx_unbatched)  # the first call of each shape is checked in full and leaves its plan
    stream = model.stream(1)
    x_t, out_t = x[0], np.empty((1, H), np.float32)
    lengths, full_lengths, short_lengths = np.ones(1, np.int64), np.ones(1, np.int32), np.ones(1, np.int16)
    out, hn, cn = np.empty((1, 1, H), np.float32), np.empty_like(hx[0]), np.empty_like(hx[1])
    workspace = model._acquire_workspace(model._packed.workspace_size(1, 1))
    runners = {
        "native call (preallocated arrays)": lambda: _kernels.forward(
            model._packed, x, False, hx[0], hx[1], full_lengths, out, hn, cn, workspace, 1),
        "stream.step(x_t, out=out)": lambda: stream.step(x_t, out=out_t),
        "stream.step(x_t)": lambda: stream.step(x_t),
        "lstm(x)": lambda: model(x),
        "lstm(x, hx)": lambda: model(x, hx),
        "lstm(x, hx), unbatched": lambda: model(x_unbatched, hx_unbatched),
        "lstm(x, hx, lengths=lengths)": lambda: model(x, hx, lengths=lengths),
        "lstm(x.astype(float64), hx) (converted)": lambda: model(x.astype(np.float64), hx),
        "lstm(x, hx, lengths=int16 array) (checked)": lambda: model(x, hx, lengths=short_lengths),
    }
    samples = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            samples[name].append(timeit.timeit(run, number=number) / number)
    medians = {name: float(np.median(s)) for name, s in samples.items()}
    base = medians["native call (preallocated arrays)"]
    print(f"I={I}, H={H}, T=1, B=1, 1 thread: medians of {rounds} rounds of {number} calls")
    print(f"{'call':<46} {'us':>7} {'above the native call, us':>26}")
    for name, t in medians.items():
        print(f"{name:<46} {t * 1e6:>7.2f} {(t - base) * 1e6:>26.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=_bench.at_least(1), default=15, help="timing rounds per way, medians (default: %(default)s)")
    parser.add_argument("--number", type=_bench.at_least(1), default=2000, help="calls per round (default: %(default)s)")
    args = parser.parse_args()
    main(args.rounds, args.number)
