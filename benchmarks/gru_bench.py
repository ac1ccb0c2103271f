"""GRU speed: fastlstm.GRU against torch.nn.GRU, onnxruntime's GRU and OpenVINO (f32), each installed one, on the
shapes of issue 18, float32, all on the same number of threads, measured side by side in one run.

    python benchmarks/gru_bench.py [--threads 2] [--seconds 3] [--rounds 3]

The shapes and runners are the "gru" section of ``python -m fastlstm bench`` (fastlstm/_bench_sections.py), timed
the bench's way (fastlstm._bench.time_rounds), here repeated over whole rounds of the table. Every implementation
is checked against fastlstm first (max |diff| printed; torch must agree within 2e-5). Timing: the implementations
of a shape take turns in blocks of calls of about 50 ms (A A A B B B ...), each block after a short pause and one
uncounted call (a peer's pool may still spin after its last call); the printed time is the median of all calls,
the ratio = peer time / fastlstm time.
"""
from __future__ import annotations

import argparse

import fastlstm
from fastlstm import _bench, _bench_sections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=_bench.at_least(1), default=2)
    parser.add_argument("--seconds", type=_bench.at_least(0.001, float), default=3.0, help="timing per shape and round")
    parser.add_argument("--rounds", type=_bench.at_least(1), default=1, help="repeat the whole table; ratios are per round")
    args = parser.parse_args()
    fastlstm.set_num_threads(args.threads)
    kernel = fastlstm.GRU(4, 4)._packed.kernel_name
    print(f"fastlstm.GRU {kernel}, {args.threads} threads, float32; ratio = peer time / fastlstm time")
    for r in range(args.rounds):
        print(f"round {r + 1}")
        for shape in _bench_sections.GRU_SHAPES:
            case = _bench_sections.gru_case(shape, args.threads, quick=False)
            medians = _bench.time_interleaved(case.calls, args.seconds, case.min_rounds)
            ours = medians["fastlstm"]
            parts = [f"fastlstm {1e6 * ours:9.1f} us"]
            for peer, diff in case.diffs.items():
                parts.append(f"{peer} {1e6 * medians[peer]:9.1f} us (x{medians[peer] / ours:5.2f}, |diff| {diff:.1e})")
            print(f"  {shape.name:42s} " + "  ".join(parts), flush=True)
            if case.diffs.get("torch", 0.0) > _bench.AGREEMENT:
                raise SystemExit(f"{shape.name}: fastlstm and torch differ by {case.diffs['torch']:.3g} > 2e-5")


if __name__ == "__main__":
    main()
