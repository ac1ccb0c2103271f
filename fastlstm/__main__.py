"""The command line: python -m fastlstm info | bench [--quick] [--only SECTION[,SECTION]] [--threads N]
[--plot FILE.png] [--json FILE]."""
from __future__ import annotations

import argparse
import platform
import sys
from typing import List, Optional

import numpy as np

from . import __version__, _cpu, _kernels, _threads, openmp_enabled

DESCRIPTION = """\
fastlstm runs trained LSTM networks on the CPU with torch.nn.LSTM's semantics, NumPy in and out.
Run these commands from outside a source checkout (python -m imports the current directory first)."""


def info() -> None:
    """Print the version, the build (OpenMP, compiler), the CPU features and the kernels each model kind runs, the
    threads."""
    found = _kernels.cpu_features()
    print(f"fastlstm {__version__}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    print(f"OpenMP: {'yes' if openmp_enabled() else 'no (serial build)'}; compiler: {_kernels.compiler()}")
    print(f"CPU features: {' '.join(_cpu.feature_names(found)) or 'baseline only'}")
    if _cpu.features() != found:
        print(f"  used (FASTLSTM_ISA): {' '.join(_cpu.feature_names(_cpu.features())) or 'baseline only'}")
    print("kernels per model kind:")
    for cell in _kernels.CELL_KINDS:
        for weight_format in _kernels.FORMATS:
            table = _kernels.kernel_table(cell, weight_format, _cpu.features())
            print(f"  {cell} {weight_format}: {table[0] if table else 'none (not in this release)'}")
    print("BLAS: none used (the input projection runs on fastlstm's packed micro-kernel)")
    print(f"threads: {_threads.get_num_threads()} (physical cores here: {_threads.physical_cores()})")


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line with `argv` (default: sys.argv[1:]); returns the exit status."""
    from . import _bench

    parser = argparse.ArgumentParser(
        prog="python -m fastlstm", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"fastlstm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{info,bench}")
    sub.add_parser("info",
                   help="version, build (OpenMP, compiler), CPU features, the kernels each model kind runs, threads")
    bench = sub.add_parser(
        "bench",
        help="time fastlstm against the installed peers (torch, onnxruntime, OpenVINO) and the NumPy reference",
        description="Time fastlstm against the installed peers and the NumPy reference on built-in shapes, in "
        "sections: f32 (float32 LSTMs: torch, onnxruntime, OpenVINO f32, the reference), quant (bf16 and int8 "
        "weights: OpenVINO at its default precision, onnxruntime int8), gru (torch, onnxruntime, OpenVINO f32), "
        "models (PyTorch models before and after fastlstm.torch.accelerate; needs torch). A summary first (speed "
        "ratios and agreement or errors per peer and section), then the details per shape. Peers that are not "
        "installed are left out (and said so).",
    )
    bench.add_argument("--quick", action="store_true",
                       help="fewer and smaller shapes, shorter timing: a run of about a minute for all sections")
    bench.add_argument("--only", metavar="SECTION[,SECTION]", default=None,
                       help=f"run only these sections, of {', '.join(_bench.SECTION_NAMES)} (default: all)")
    bench.add_argument("--threads", type=int, default=None, metavar="N",
                       help="threads for fastlstm and the peers (default: fastlstm's own setting)")
    bench.add_argument("--plot", metavar="FILE.png", default=None,
                       help="draw every section's ratios to this PNG file, a panel per section (needs matplotlib)")
    bench.add_argument("--json", metavar="FILE", default=None, help="write the measurements to this JSON file")
    args = parser.parse_args(argv)
    if args.command == "info":
        info()
        return 0
    if args.threads is not None and args.threads < 1:
        bench.error(f"--threads must be >= 1, got {args.threads}")
    try:
        only = None if args.only is None else _bench.parse_only(args.only)
        _bench.check_output_paths(args.plot, args.json)
    except ValueError as exc:
        bench.error(str(exc))
    _bench.run(quick=args.quick, threads=args.threads, plot_path=args.plot, json_path=args.json, only=only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
