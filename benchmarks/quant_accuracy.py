"""Accuracy of fastlstm's bf16 and int8 models beside the peers' reduced precision, on the bench's shapes.

    python benchmarks/quant_accuracy.py [--seed 0]

For each shape of ``python -m fastlstm bench`` (a streaming shape is measured as one forward over T = 100 steps:
fastlstm's streamed steps give the forward's bits, as tests/test_stream.py checks), one model with torch's
initialisation and one standard-normal input: the max abs difference of each reduced-precision output from the
float32 model's output (fastlstm float32, which matches torch float32 to 2e-5) for fastlstm bf16 and int8,
OpenVINO at its default precision (bf16 on a CPU with AVX512-BF16) and onnxruntime int8 (quantize_dynamic, per
channel), and the ratios fastlstm / peer (the contract: at most 1.25). Peers that are not installed are left out.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

import fastlstm
from fastlstm import _bench_sections

# (label, T, B, I, H, layers, bidirectional): the bench's shapes
SHAPES = [
    ("streaming, I=128, H=128 (100 steps)", 100, 1, 128, 128, 1, False),
    ("streaming, I=256, H=512 (100 steps)", 100, 1, 256, 512, 1, False),
    ("T=100, B=1, I=32, H=70", 100, 1, 32, 70, 1, False),
    ("T=100, B=1, I=256, H=512", 100, 1, 256, 512, 1, False),
    ("T=100, B=4, I=128, H=256", 100, 4, 128, 256, 1, False),
    ("T=100, B=32, I=256, H=512", 100, 32, 256, 512, 1, False),
    ("T=50, B=64, I=512, H=1024, 2 layers", 50, 64, 512, 1024, 2, False),
    ("T=100, B=1, I=128, H=256, 2 layers, bidirectional", 100, 1, 128, 256, 2, True),
]


def errors(T, B, I, H, L, bidirectional, seed):
    """{name: max abs difference from the float32 model} for one shape, and OpenVINO's precision ("" when it is
    not installed)."""
    model = fastlstm.LSTM(I, H, L, bidirectional=bidirectional, seed=seed)
    x = np.random.default_rng(seed).standard_normal((T, B, I)).astype(np.float32)
    runners, precision = _bench_sections.quant_runners(model, x.shape, threads=None)
    exact = runners.pop("fastlstm f32")(x)
    return {name: _bench_sections.max_abs_diff(run(x), exact) for name, run in runners.items()}, precision


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print("max abs error against the float32 model (same weights and input); ratio = fastlstm / peer")
    print(f"{'shape':<52} {'bf16':>9} {'OpenVINO':>9} {'ratio':>6} {'int8':>9} {'ORT int8':>9} {'ratio':>6}")
    for label, *shape in SHAPES:
        found, precision = errors(*shape, seed=args.seed)
        cells = [found["fastlstm bf16"], found.get("openvino default"), None,
                 found["fastlstm int8"], found.get("onnxruntime int8"), None]
        for ours, peer in ((0, 1), (3, 4)):
            if cells[peer] is not None:
                cells[peer + 1] = cells[ours] / cells[peer]
        text = [f"{'-':>9}" if v is None else (f"{v:>6.2f}" if i in (2, 5) else f"{v:>9.2e}") for i, v in
                enumerate(cells)]
        print(f"{label:<52} " + " ".join(text), flush=True)
    if precision:
        print(f"(OpenVINO's default precision here: {precision})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
