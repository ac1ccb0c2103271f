#!/usr/bin/env bash
# The clang build (macOS and the BSDs compile with clang):
# 1. tests/native (the kernels against a plain C reference, see tests/native/kernel_test.c) compiled with clang
#    -Werror and run on every kernel set of this CPU, then again under AddressSanitizer + UBSan.
# 2. fastlstm built with CC=clang and LLVM's OpenMP runtime (libomp) into a fresh venv from a clean copy of
#    this clone; no compiler warning may point into src/*.h; the test suite's parts that need no peer library
#    run against it (the parity tests with the peers run in .ci/run on the gcc build).
# 3. setup.py's OpenMP probe with a clang that refuses -fopenmp as Apple's does: the build must find
#    -Xpreprocessor -fopenmp -lomp (libomp's directory given in LDFLAGS, as Homebrew's would be) and run on a
#    team of threads.
# Installs clang and libomp-dev with apt-get when they are missing. Usage: bash .ci/clang.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT     # its venv and builds take hundreds of MB: do not leave them behind
tests=("$@")
[ $# -eq 0 ] && tests=(-q tests/test_reference.py tests/test_api.py tests/test_threads.py tests/test_stream.py
                       tests/test_kernel_table.py tests/test_batch_invariance.py tests/test_hostile.py
                       tests/test_properties.py tests/test_concurrency.py)

missing=()
for pkg in clang libomp-dev; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=(); [ "$(id -u)" -ne 0 ] && sudo=(sudo)
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" apt-get install -y -q "${missing[@]}"
fi
clang --version | head -1

native=(tests/native/kernel_test.c tests/native/reference.c tests/native/packing.c)
run_native() {  # $1: the test binary; prints its header, failures and summary (everything when it fails)
    if "$1" > "$work/native.log"; then
        grep -v '^ok  ' "$work/native.log"
    else
        cat "$work/native.log"
        return 1
    fi
}
echo "== tests/native with clang"
clang -O2 -fopenmp -Wall -Wextra -Werror -Isrc "${native[@]}" -lm -o "$work/kernel_test"
run_native "$work/kernel_test"
clang -O2 -fopenmp -Wall -Wextra -Werror -Isrc tests/native/gru_test.c -lm -o "$work/gru_test"
run_native "$work/gru_test"
echo "== tests/native with clang under AddressSanitizer + UBSan"
clang -O1 -g -fopenmp -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
    -Wall -Wextra -Werror -Isrc "${native[@]}" -lm -o "$work/kernel_test_asan"
ASAN_OPTIONS=detect_leaks=1 run_native "$work/kernel_test_asan"
clang -O1 -g -fopenmp -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
    -Wall -Wextra -Werror -Isrc tests/native/gru_test.c -lm -o "$work/gru_test_asan"
ASAN_OPTIONS=detect_leaks=1 run_native "$work/gru_test_asan"

# a clean copy of the clone's files (tracked and new, not ignored): no build/ or generated C of another
# compiler can be reused by the builds below
mkdir "$work/src"
git ls-files -co --exclude-standard -z | xargs -0 -I{} cp --parents {} "$work/src"

echo "== fastlstm built with CC=clang in a fresh venv"
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip
# the build's own requirements once, for both builds (no isolated build environment each time)
"$work/venv/bin/python" -m pip install --quiet "pytest>=7" "hypothesis>=6" scipy "setuptools>=77" wheel "Cython>=3.0" \
    "numpy>=2.0" mypy threadpoolctl
build() {  # $1: log file; the rest: environment assignments for the build
    local log="$1"
    shift
    rm -rf "$work/src/build" "$work/src/src/_kernels.c"     # else setuptools keeps the previous build's module
    if ! (cd "$work/src" && env "$@" "$work/venv/bin/python" -m pip install --force-reinstall --no-deps \
            --no-build-isolation --no-cache-dir -v . > "$log" 2>&1); then
        cat "$log"
        return 1
    fi
    grep -E '^ *[^ ]*clang .*_kernels' "$log" | sed 's/^ */  /'
}
build "$work/clang.log" CC=clang
if grep -E 'src/[a-z_]+\.h:[0-9]+:[0-9]+: (warning|error)' "$work/clang.log"; then
    echo "clang warns about the kernel headers (above)"
    exit 1
fi
(cd "$work" && "$work/venv/bin/python" - <<'PY'
import fastlstm
from fastlstm import _kernels
assert fastlstm.openmp_enabled(), "the clang build has no OpenMP"
assert _kernels.compiler().startswith("clang "), _kernels.compiler()
print(f"clang build: openmp_enabled() == True, compiler() == {_kernels.compiler()!r}")
PY
)
ldd "$work"/venv/lib/python3*/site-packages/fastlstm/_kernels*.so | grep libomp     # LLVM's runtime, not GNU's
(cd "$repo" && "$work/venv/bin/pytest" -p no:cacheprovider "${tests[@]}")

echo "== setup.py's OpenMP probe with a clang that refuses -fopenmp, as Apple's does"
cat > "$work/apple-clang" <<'SH'
#!/bin/sh
# clang as Apple ships it: its driver rejects -fopenmp, which only reaches the compiler as -Xpreprocessor -fopenmp
prev=
for arg in "$@"; do
    if [ "$arg" = -fopenmp ] && [ "$prev" != -Xpreprocessor ]; then
        echo "clang: error: unsupported option '-fopenmp'" >&2
        exit 1
    fi
    prev=$arg
done
exec clang "$@"
SH
chmod +x "$work/apple-clang"
libomp_dir="$(clang -print-resource-dir)/../.."     # LLVM's lib/, where clang -fopenmp finds libomp
[ -e "$libomp_dir/libomp.so" ] || { echo "libomp.so not found in $libomp_dir"; exit 1; }
build "$work/apple.log" CC="$work/apple-clang" LDFLAGS="-L$libomp_dir"
grep -q -- '-Xpreprocessor -fopenmp' "$work/apple.log"
(cd "$work" && "$work/venv/bin/python" - <<'PY'
import numpy as np
import fastlstm
import fastlstm.reference
assert fastlstm.openmp_enabled(), "the Apple-style clang build has no OpenMP"
model = fastlstm.LSTM(16, 64, num_layers=2, seed=0)
oracle = fastlstm.reference.LSTM(16, 64, num_layers=2, seed=0)
x = np.random.default_rng(0).standard_normal((20, 3, 16)).astype(np.float32)
fastlstm.set_num_threads(2)
np.testing.assert_allclose(model(x)[0], oracle(x)[0], rtol=1e-4, atol=1e-5)
print("Apple-style clang build: -Xpreprocessor -fopenmp -lomp, openmp_enabled() == True, a 2-thread forward "
      "matches the reference")
PY
)
echo "clang.sh: all passed"
