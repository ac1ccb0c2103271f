"""Build of fastlstm's compiled modules: the Cython sources in src/ become modules of the fastlstm package.

Everything about how the native code is compiled is decided here, in one place:
- OpenMP is probed by compiling a tiny program; without it the build warns and goes serial
  (FASTLSTM_NO_OPENMP=1 forces the serial build).
- The code is compiled for the x86-64 baseline (no -march=native): faster instruction sets are selected at
  run time by the kernels themselves. No -ffast-math: NaN must propagate.
- Cython's safety checks are off for speed; FASTLSTM_DEBUG_CHECKS=1 turns them back on for debugging.
"""
import os
import subprocess
import sys
import sysconfig
import tempfile
import warnings

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

PROBE = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"


def openmp_flags():
    """Compiler and linker flags for OpenMP, or None when the compiler cannot build an OpenMP program."""
    if os.environ.get("FASTLSTM_NO_OPENMP", "") not in ("", "0"):
        return None
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(PROBE)
        cmd = compiler.split() + ["-fopenmp", src, "-o", os.path.join(tmp, "probe")]
        try:
            ok = subprocess.run(cmd, capture_output=True).returncode == 0
        except OSError:
            ok = False
    return ["-fopenmp"] if ok else None


omp = openmp_flags()
if omp is None:
    warnings.warn("fastlstm: building WITHOUT OpenMP; the kernels will run on one thread.")

debug_checks = os.environ.get("FASTLSTM_DEBUG_CHECKS", "") not in ("", "0")
directives = {
    "language_level": 3,
    "boundscheck": debug_checks,
    "wraparound": debug_checks,
    "initializedcheck": debug_checks,
    "cdivision": not debug_checks,
    "embedsignature": True,
}
compile_args = ["-O3", "-fno-math-errno", "-Wno-unused-function"] + (omp or [])
if debug_checks:
    compile_args += ["-g", "-O1"]
extra_cflags = os.environ.get("FASTLSTM_EXTRA_CFLAGS", "").split()
extra_ldflags = os.environ.get("FASTLSTM_EXTRA_LDFLAGS", "").split()



def extension(name, source, headers):
    """One compiled module of the package (fastlstm.<name>) from its Cython source and the headers it includes."""
    return Extension(
        f"fastlstm.{name}",
        [source],
        include_dirs=[numpy.get_include(), "src"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args + extra_cflags,
        extra_link_args=(omp or []) + extra_ldflags,
        depends=[f"src/{h}" for h in headers],
    )


extensions = [
    extension("_kernels", "src/_kernels.pyx", ["kernel_api.h", "cell_kernels.h", "cell_impl.h", "team.h"]),
    extension("_probes", "src/_probes.pyx", ["probes.h", "probe_impl.h", "team.h"]),
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives, include_path=["src"]))
