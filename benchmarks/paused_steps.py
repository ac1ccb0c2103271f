"""Streaming steps after a pause, as a real-time stream makes them (say an audio frame every 10 ms).

    python benchmarks/paused_steps.py [--pause-ms 10] [--steps 40] [--threads 2]

`python -m fastlstm bench` times steps back to back, so each finds the weights in the caches the step before
left them in. A stream that waits for its input between steps may not: on a machine shared with other programs,
they evict the weights from the shared L3 during the pause, and the step reads them from memory. This program
times the streaming shapes of the bench both ways, for fastlstm (stream.step with out=) and the installed peers
(torch nn.LSTM with T=1 and hx, onnxruntime with the state as graph inputs and outputs, as the bench runs them).

Each library is timed in its own block of calls, fastlstm first: a peer's thread pool keeps spinning on the
cores for a while after its calls, and a team of threads that meets every step cannot run beside it. Before
each block the program waits 0.2 s. Medians of --steps steps.
"""
import argparse
import time
from typing import Callable, Dict

import numpy as np

import fastlstm
from fastlstm import _bench

SHAPES = [(128, 128), (256, 512)]  # (input_size, hidden_size) of the bench's streaming rows, B=1
BLOCK_PAUSE_S = 0.2


def median_step_us(step: Callable[[], object], steps: int, pause_s: float) -> float:
    """Median microseconds of one call of step, each after sleeping pause_s (0: back to back)."""
    times = []
    for _ in range(steps):
        if pause_s:
            time.sleep(pause_s)
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e6


def step_calls(input_size: int, hidden_size: int, threads: int) -> Dict[str, Callable[[], object]]:
    """One streaming step of a B=1 model of this shape, per installed library, fastlstm first."""
    model = fastlstm.LSTM(input_size, hidden_size, seed=0)
    x_t = np.random.default_rng(0).standard_normal((1, input_size)).astype(np.float32)
    stream, out = model.stream(1), np.empty((1, hidden_size), np.float32)
    calls: Dict[str, Callable[[], object]] = {"fastlstm": lambda: stream.step(x_t, out=out)}
    for name, peer_step in _bench.peer_steppers(model, 1, threads).items():
        calls[name] = lambda s=peer_step: s(x_t)
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pause-ms", type=_bench.at_least(0, float), default=10.0, help="sleep before each paused step (ms)")
    parser.add_argument("--steps", type=_bench.at_least(1), default=40, help="steps timed per library, shape and way")
    parser.add_argument("--threads", type=_bench.at_least(1), default=2, help="threads for every library")
    args = parser.parse_args()
    fastlstm.set_num_threads(args.threads)
    pause_s = args.pause_ms / 1000
    print(f"one streaming step, B=1, float32, {args.threads} threads: medians of {args.steps} steps (us)")
    print(f"{'shape':<16} {'library':<12} {'back to back':>13} {f'after {args.pause_ms:g} ms':>14} {'ratio':>6}")
    for input_size, hidden_size in SHAPES:
        for name, step in step_calls(input_size, hidden_size, args.threads).items():
            time.sleep(BLOCK_PAUSE_S)
            for _ in range(20):  # warm-up: first calls, and this library's threads awake
                step()
            back_to_back = median_step_us(step, args.steps, 0.0)
            paused = median_step_us(step, args.steps, pause_s)
            shape = f"I={input_size}, H={hidden_size}"
            print(f"{shape:<16} {name:<12} {back_to_back:>13.1f} {paused:>14.1f} {paused / back_to_back:>6.1f}")


if __name__ == "__main__":
    main()
