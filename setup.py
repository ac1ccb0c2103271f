"""Build of fastlstm's compiled modules: the Cython sources in src/ become modules of the fastlstm package.

Everything about how the native code is compiled is decided here, in one place:
- The compiler is $CC when set (setuptools then links with it too), else the one Python was built with.
- OpenMP is probed by compiling a tiny program, with -fopenmp and then Apple clang's
  -Xpreprocessor -fopenmp -lomp; without it the build warns and goes serial (FASTLSTM_NO_OPENMP=1 forces the
  serial build).
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

# How compilers take OpenMP, tried in order: (compile flags, link flags). GCC and LLVM's clang accept -fopenmp;
# Apple's clang does not, but passes it on to its compiler behind -Xpreprocessor and then needs the runtime,
# libomp (Homebrew's or MacPorts'), linked by name; its include and library directories come from CPPFLAGS or
# CFLAGS and LDFLAGS, which the probe uses as the build does.
OPENMP_VARIANTS = (
    (["-fopenmp"], ["-fopenmp"]),
    (["-Xpreprocessor", "-fopenmp"], ["-lomp"]),
)


def openmp_flags():
    """(compile_args, link_args) for OpenMP with the compiler of the build ($CC, else Python's), or None when
    no variant of OPENMP_VARIANTS compiles and links a tiny OpenMP program."""
    if os.environ.get("FASTLSTM_NO_OPENMP", "") not in ("", "0"):
        return None
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    env_flags = [flag for var in ("CPPFLAGS", "CFLAGS", "LDFLAGS") for flag in os.environ.get(var, "").split()]
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(PROBE)
        for compile_args, link_args in OPENMP_VARIANTS:
            cmd = compiler.split() + env_flags + compile_args + [src, "-o", os.path.join(tmp, "probe")] + link_args
            try:
                if subprocess.run(cmd, capture_output=True).returncode == 0:
                    return compile_args, link_args
            except OSError:
                return None
    return None


omp = openmp_flags()
if omp is None:
    warnings.warn("fastlstm: building WITHOUT OpenMP; the kernels will run on one thread.")
omp_compile, omp_link = omp or ([], [])

debug_checks = os.environ.get("FASTLSTM_DEBUG_CHECKS", "") not in ("", "0")
directives = {
    "language_level": 3,
    "boundscheck": debug_checks,
    "wraparound": debug_checks,
    "initializedcheck": debug_checks,
    "cdivision": not debug_checks,
    "embedsignature": True,
}
# -ffp-contract=off: the kernels write out every fused multiply-add (src/cell_impl.h), so that an element rounds
# the same in every context it is inlined into and a sequence gives the same bits in any batch
compile_args = ["-O3", "-fno-math-errno", "-ffp-contract=off", "-Wno-unused-function"] + omp_compile
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
        extra_link_args=omp_link + extra_ldflags,
        depends=[f"src/{h}" for h in headers],
    )


extensions = [
    extension("_kernels", "src/_kernels.pyx", ["kernel_api.h", "cell_kernels.h", "cell_impl.h", "quant_impl.h", "gru_impl.h",
                                                   "gru_quant_impl.h", "team.h"]),
    extension("_probes", "src/_probes.pyx", ["probes.h", "probe_impl.h", "team.h"]),
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives, include_path=["src"]))
