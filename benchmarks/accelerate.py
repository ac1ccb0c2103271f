"""End to end: two PyTorch models as written, and the same models after fastlstm.torch.accelerate.

    python benchmarks/accelerate.py [--threads 2] [--rounds 15] [--quick] [--only streaming]

The models (fastlstm/_bench_models.py, shared with `python -m fastlstm bench`; random weights stand in for
trained ones):

- text classifier: Embedding(20000, 128) -> 2-layer bidirectional LSTM(256, batch_first) -> Linear(512, 5) on
  the final states of the last layer; T=100 tokens. Batch 1 is a plain tensor; batch 32 is a padded batch of
  lengths 25..100 given to the LSTM as a PackedSequence (enforce_sorted=False);
- streaming speech model: Linear(80, 256) + ReLU -> 2-layer LSTM(512, proj_size=256) -> Linear(256, 40), one
  frame per call (batch 1) with the LSTM state carried from call to call.

Both run under torch.inference_mode() with torch and fastlstm on the same number of threads. Each round times a
block of calls of the torch model, then a block of the accelerated one (the order alternating from round to
round); the ratio is torch time / accelerated time, from the medians of the per-round times, and again from the
fastest round of each (on a machine shared with other programs, the closest to their times alone). Outputs are
checked to agree (2e-5) before anything is timed. The load average printed before and after says how busy
the machine was: torch's LSTM meets its threads at every step, and on a shared machine it was measured 2-30x
slower at 2 threads when other processes kept the cores busy.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch
from torch import nn

import fastlstm
import fastlstm.torch
from fastlstm._bench_models import case_runners


def time_case(calls: int, slow: Callable[[], object], fast: Callable[[], object],
              rounds: int) -> Tuple[float, float, float, float]:
    """(torch seconds per call, accelerated seconds per call, the same two of the fastest round) over rounds of
    alternating blocks of ``calls`` calls (after one round of warm-up): medians, then minima."""
    times: Dict[str, List[float]] = {"torch": [], "fast": []}
    with torch.inference_mode():
        for r in range(rounds + 1):
            order = [("torch", slow), ("fast", fast)]
            for key, fn in order if r % 2 == 0 else order[::-1]:
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                if r:
                    times[key].append((time.perf_counter() - t0) / calls)
    return (float(np.median(times["torch"])), float(np.median(times["fast"])), min(times["torch"]),
            min(times["fast"]))


def wrapper_costs(rounds: int, number: int = 2000) -> List[Tuple[str, float]]:
    """Microseconds per call of what accelerate adds to a call: on an LSTM with the streaming model's parameter
    count (2 layers with projection, 10 parameters) but small enough (I=8, H=16, one thread) that the kernel
    takes about a microsecond, one step with hx: the check that the weights are unchanged, and the accelerated
    module's forward against calling its fastlstm model on NumPy arrays directly; the module's call adds torch's
    own Module.__call__ (hooks), as for any module. Medians of interleaved rounds of ``number`` calls."""
    torch.manual_seed(0)
    threads = fastlstm.get_num_threads()
    fastlstm.set_num_threads(1)
    module = fastlstm.torch.accelerate(nn.LSTM(8, 16, num_layers=2, proj_size=4).eval())
    x = torch.randn(1, 1, 8)
    try:
        with torch.inference_mode():
            _, hx = module(x)
            weights = module.__dict__["_fastlstm_weights"]
            fast = weights.current(module)
            x_np, hx_np = x.numpy(), (hx[0].numpy(), hx[1].numpy())
            runners = {
                f"weight check ({len(weights.names)} parameters)": lambda: weights.current(module),
                "fastlstm.LSTM call on arrays": lambda: fast(x_np, hx_np),
                "accelerated module.forward(x, hx)": lambda: module.forward(x, hx),
                "accelerated module(x, hx)": lambda: module(x, hx),
            }
            times: Dict[str, List[float]] = {name: [] for name in runners}
            for _ in range(rounds):
                for name, fn in runners.items():
                    t0 = time.perf_counter()
                    for _ in range(number):
                        fn()
                    times[name].append((time.perf_counter() - t0) / number * 1e6)
    finally:
        fastlstm.set_num_threads(threads)
    return [(name, float(np.median(t))) for name, t in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for torch and fastlstm")
    parser.add_argument("--rounds", type=int, default=15, help="rounds of alternating blocks")
    parser.add_argument("--quick", action="store_true", help="a run of seconds (fewer, smaller blocks)")
    parser.add_argument("--only", default="", help="time only the models whose name contains this text")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fastlstm.set_num_threads(args.threads)
    rounds = 3 if args.quick else args.rounds
    cases = case_runners(args.quick)
    print(f"torch {torch.__version__} vs fastlstm {fastlstm.__version__} (fastlstm.torch.accelerate), "
          f"float32, {args.threads} threads, torch.inference_mode(); medians of {rounds} rounds; "
          f"load average {os.getloadavg()[0]:.2f} at the start")
    print(f"{'model':<44} {'torch':>11} {'accelerated':>12} {'ratio':>6}   {'best rounds: torch':>18} "
          f"{'accelerated':>12} {'ratio':>6}", flush=True)
    for name, case in cases.items():
        if args.only and args.only not in name:
            continue
        t_slow, t_fast, best_slow, best_fast = time_case(case.calls_per_block, case.torch_call,
                                                         case.accelerated_call, rounds)
        print(f"{name:<44} {_fmt(t_slow):>11} {_fmt(t_fast):>12} {t_slow / t_fast:>5.2f}x   {_fmt(best_slow):>18} "
              f"{_fmt(best_fast):>12} {best_slow / best_fast:>5.2f}x", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end (a team of threads that meets every step, as torch's "
          f"pool does within each step, slows down when other processes take its cores)")
    costs = dict(wrapper_costs(rounds, 200 if args.quick else 2000))
    print("per call, what accelerate adds (LSTM(8, 16, num_layers=2, proj_size=4), one step with hx, 1 thread):")
    for name, us in costs.items():
        print(f"  {name:<42} {us:8.2f} us")
    forward_us, array_us = costs["accelerated module.forward(x, hx)"], costs["fastlstm.LSTM call on arrays"]
    print(f"  {'added by accelerate (forward - arrays)':<42} {forward_us - array_us:8.2f} us")


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} us" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


if __name__ == "__main__":
    main()
