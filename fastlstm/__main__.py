"""Command line: ``python -m fastlstm info`` and ``python -m fastlstm bench [--quick] [--threads N]
[--plot FILE.png] [--json FILE]``."""
from __future__ import annotations

import argparse
import platform
import sys
from typing import List, Optional

import numpy as np

from . import __version__, _cpu, _kernels, _threads, openmp_enabled


def info() -> None:
    found = _kernels.cpu_features()
    print(f"fastlstm {__version__}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    print(f"OpenMP: {'yes' if openmp_enabled() else 'no (serial build)'}")
    print(f"CPU features: {' '.join(_cpu.feature_names(found)) or 'baseline only'}")
    if _cpu.features() != found:
        print(f"  used (FASTLSTM_ISA): {' '.join(_cpu.feature_names(_cpu.features())) or 'baseline only'}")
    print("kernels per model kind:")
    for cell in _kernels.CELL_KINDS:
        for weight_format in _kernels.FORMATS:
            print(f"  {cell} {weight_format}: {_cpu.kernels_for(cell, np.dtype(weight_format))[0]}")
    print("BLAS: none used (the input projection runs on fastlstm's packed micro-kernel)")
    print(f"threads: {_threads.get_num_threads()} (physical cores here: {_threads.physical_cores()})")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastlstm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="version, build (OpenMP), CPU features, the kernels each model kind runs, threads")
    bench = sub.add_parser("bench", help="compare fastlstm with the reference and installed peers")
    bench.add_argument("--quick", action="store_true", help="small shapes, a run of seconds")
    bench.add_argument("--threads", type=int, default=None, help="threads for fastlstm and the peers")
    bench.add_argument("--plot", metavar="FILE.png", default=None, help="draw the speed-ups (needs matplotlib)")
    bench.add_argument("--json", metavar="FILE", default=None, help="write the measurements as JSON")
    args = parser.parse_args(argv)
    if args.command == "info":
        info()
    else:
        from . import _bench

        if args.threads is not None and args.threads < 1:
            parser.error("--threads must be >= 1")
        _bench.run(quick=args.quick, threads=args.threads, plot_path=args.plot, json_path=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
