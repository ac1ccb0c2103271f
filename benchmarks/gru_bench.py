"""GRU speed: fastlstm.GRU against torch.nn.GRU, onnxruntime's GRU and OpenVINO (f32), each installed one, on the
shapes of issue 18, float32, all on the same number of threads, measured side by side in one run.

    python benchmarks/gru_bench.py [--threads 2] [--seconds 3] [--rounds 3]

Every implementation is checked against fastlstm first (max |diff| printed; torch must agree within 2e-5).
Timing: the implementations of a shape take turns in blocks of calls of about 50 ms (A A A B B B ...), each
block after a short pause and one uncounted call (a peer's pool may still spin after its last call); the
printed time is the median of all calls, the ratio = peer time / fastlstm time.
"""
from __future__ import annotations

import argparse
import importlib.util
import time
from typing import Callable, Dict, List

import numpy as np

import fastlstm
from fastlstm import _peers_gru

PAUSE_S = 0.05
# (name, T or None for a streaming step, B, I, H, layers, bidirectional)
SHAPES = [
    ("step B=1 I=H=128", None, 1, 128, 128, 1, False),
    ("step B=1 I=256 H=512", None, 1, 256, 512, 1, False),
    ("T=100 B=1 I=32 H=70", 100, 1, 32, 70, 1, False),
    ("T=100 B=1 I=256 H=512", 100, 1, 256, 512, 1, False),
    ("T=100 B=32 I=256 H=512", 100, 32, 256, 512, 1, False),
    ("T=100 B=1 I=128 H=256 bi L=2", 100, 1, 128, 256, 2, True),
]


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def time_interleaved(calls: Dict[str, Callable[[], object]], seconds: float) -> Dict[str, float]:
    """Median seconds per call of each, over rotating blocks of about 50 ms (see the module docstring)."""
    samples: Dict[str, List[float]] = {name: [] for name in calls}
    block = {}
    for name, call in calls.items():
        t0 = time.perf_counter()
        call()
        block[name] = int(min(200, max(3, 0.05 / max(time.perf_counter() - t0, 1e-7))))
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or min(len(s) for s in samples.values()) < 20:
        for name, call in calls.items():
            time.sleep(PAUSE_S)
            call()
            for _ in range(block[name]):
                t0 = time.perf_counter()
                call()
                samples[name].append(time.perf_counter() - t0)
    return {name: float(np.median(s)) for name, s in samples.items()}


def runners(shape, threads: int):
    """(calls to time, max |diff| of each peer against fastlstm) for one shape."""
    name, T, B, I, H, L, bi = shape
    gru = fastlstm.GRU(I, H, L, bidirectional=bi, seed=0)
    rng = np.random.default_rng(0)
    diffs, calls = {}, {}
    if T is None:  # a streaming step: agreement over 8 steps from zero, then every stepper keeps stepping
        xs = rng.standard_normal((8, B, I)).astype(np.float32)
        stream, out = gru.stream(B), np.empty((B, H), np.float32)
        ours = np.stack([stream.step(x).copy() for x in xs])
        steppers = {}
        if installed("torch"):
            steppers["torch"] = _peers_gru.torch_step_runner(gru, threads)
        if installed("onnxruntime") and installed("onnx"):
            steppers["onnxruntime"] = _peers_gru.ort_step_runner(gru, threads)
        if installed("openvino") and installed("onnx"):
            steppers["openvino f32"] = _peers_gru.openvino_step_runner(gru, threads)
        for peer, step in steppers.items():
            diffs[peer] = float(np.abs(np.stack([step(x) for x in xs]) - ours).max())
        calls["fastlstm"] = lambda: stream.step(xs[0], out=out)
        calls.update({peer: (lambda s=s: s(xs[0])) for peer, s in steppers.items()})
    else:
        x = rng.standard_normal((T, B, I)).astype(np.float32)
        ours = gru(x)[0]
        peers = {}
        if installed("torch"):
            peers["torch"] = _peers_gru.torch_runner(gru, threads)
        if installed("onnxruntime") and installed("onnx"):
            peers["onnxruntime"] = _peers_gru.ort_runner(gru, threads)
        if installed("openvino") and installed("onnx"):
            peers["openvino f32"] = _peers_gru.openvino_runner(gru, threads)
        for peer, run in peers.items():
            diffs[peer] = float(np.abs(run(x) - ours).max())
        calls["fastlstm"] = lambda: gru(x)
        calls.update({peer: (lambda r=r: r(x)) for peer, r in peers.items()})
    return calls, diffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per shape and round")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the whole table; ratios are per round")
    args = parser.parse_args()
    fastlstm.set_num_threads(args.threads)
    kernel = fastlstm.GRU(4, 4)._packed.kernel_name
    print(f"fastlstm.GRU {kernel}, {args.threads} threads, float32; ratio = peer time / fastlstm time")
    for r in range(args.rounds):
        print(f"round {r + 1}")
        for shape in SHAPES:
            calls, diffs = runners(shape, args.threads)
            medians = time_interleaved(calls, args.seconds)
            ours = medians["fastlstm"]
            parts = [f"fastlstm {1e6 * ours:9.1f} us"]
            for peer in calls:
                if peer != "fastlstm":
                    parts.append(f"{peer} {1e6 * medians[peer]:9.1f} us (x{medians[peer] / ours:5.2f}, "
                                 f"|diff| {diffs[peer]:.1e})")
            print(f"  {shape[0]:30s} " + "  ".join(parts), flush=True)
            if "torch" in diffs and diffs["torch"] > 2e-5:
                raise SystemExit(f"{shape[0]}: fastlstm and torch differ by {diffs['torch']:.3g} > 2e-5")


if __name__ == "__main__":
    main()
