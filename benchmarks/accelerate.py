"""End to end: two PyTorch models as written, and the same models after fastlstm.torch.accelerate.

    python benchmarks/accelerate.py [--threads 2] [--rounds 15] [--quick] [--only streaming]

The models (random weights stand in for trained ones):

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
slower at 2 threads when other processes kept the cores busy. `case_runners` gives the cases for other programs (the bench).
"""
from __future__ import annotations

import argparse
import copy
import os
import time
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fastlstm
import fastlstm.torch

VOCAB, EMBED, HIDDEN, CLASSES, TOKENS = 20000, 128, 256, 5, 100
FEATURES, FRONT, SPEECH_HIDDEN, SPEECH_PROJ, SYMBOLS = 80, 256, 512, 256, 40
TOLERANCE = 2e-5


class TextClassifier(nn.Module):
    """Embedding -> 2-layer bidirectional LSTM (batch_first) -> Linear on the last layer's two final states."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMBED)
        self.lstm = nn.LSTM(EMBED, HIDDEN, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * HIDDEN, CLASSES)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, T) int64; lengths (B,) when the batch is padded (then packed), else None."""
        x = self.embedding(tokens)
        if lengths is not None:
            x = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(x)
        return self.head(torch.cat([h_n[-2], h_n[-1]], dim=1))


class StreamingSpeech(nn.Module):
    """Linear + ReLU front-end -> 2-layer LSTM with projection -> Linear, one frame per call."""

    def __init__(self) -> None:
        super().__init__()
        self.front = nn.Linear(FEATURES, FRONT)
        self.lstm = nn.LSTM(FRONT, SPEECH_HIDDEN, num_layers=2, proj_size=SPEECH_PROJ)
        self.head = nn.Linear(SPEECH_PROJ, SYMBOLS)

    def forward(self, frame: torch.Tensor, state: Tuple[torch.Tensor, torch.Tensor] | None = None):
        """frame (B, 80) -> (logits (B, 40), state for the next frame)."""
        x = torch.relu(self.front(frame)).unsqueeze(0)  # (T=1, B, 256)
        y, state = self.lstm(x, state)
        return self.head(y[0]), state


def case_runners(quick: bool = False) -> Dict[str, Tuple[int, Callable[[], object], Callable[[], object]]]:
    """Per case: (calls per block, a call of the torch model, the same call of the accelerated model).

    The two models of a case have the same weights; the outputs of their calls are checked to agree here.
    """
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    cases = {}

    classifier = TextClassifier().eval()
    fast_classifier = fastlstm.torch.accelerate(copy.deepcopy(classifier))
    tokens1 = torch.randint(0, VOCAB, (1, TOKENS), generator=gen)
    tokens32 = torch.randint(0, VOCAB, (32, TOKENS), generator=gen)
    lengths32 = torch.randint(TOKENS // 4, TOKENS + 1, (32,), generator=gen)
    lengths32[0] = TOKENS
    tokens32[torch.arange(TOKENS)[None, :] >= lengths32[:, None]] = 0  # padding
    cases["text classifier, batch 1"] = (5 if quick else 20, lambda: classifier(tokens1),
                                         lambda: fast_classifier(tokens1))
    cases["text classifier, batch 32, PackedSequence"] = (
        1 if quick else 3, lambda: classifier(tokens32, lengths32), lambda: fast_classifier(tokens32, lengths32))

    speech = StreamingSpeech().eval()
    fast_speech = fastlstm.torch.accelerate(copy.deepcopy(speech))
    frames = torch.randn(64, 1, FEATURES, generator=gen)

    def stream(model: nn.Module) -> Callable[[], object]:
        carried = {"state": None, "i": 0}

        def call():
            i = carried["i"] = (carried["i"] + 1) % len(frames)
            logits, carried["state"] = model(frames[i], carried["state"])
            return logits
        return call

    cases["streaming speech, one frame per call"] = (50 if quick else 200, stream(speech), stream(fast_speech))

    with torch.inference_mode():
        for name, (_, slow, fast) in cases.items():
            _check_same(name, slow, fast)
    return cases


def _check_same(name: str, slow: Callable[[], object], fast: Callable[[], object]) -> None:
    """Both calls (several for the streaming case, its state carried) give the same outputs within TOLERANCE."""
    for _ in range(3):
        a, b = slow(), fast()
        diff = float((a - b).abs().max())
        if not diff <= TOLERANCE:
            raise AssertionError(f"{name}: accelerated output differs from torch's by {diff:.3g}")


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
    for name, (calls, slow, fast) in cases.items():
        if args.only and args.only not in name:
            continue
        t_slow, t_fast, best_slow, best_fast = time_case(calls, slow, fast, rounds)
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
