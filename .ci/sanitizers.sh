#!/usr/bin/env bash
# Memory-safety checks of the native code.
# 1. Build the extension with AddressSanitizer + UndefinedBehaviorSanitizer (and Cython's bounds checks on)
#    into a fresh venv and run the test suite's kernel-heavy part under it (any report aborts the run).
# 2. valgrind memcheck on a small forward/stream run of a normal build.
# Usage: bash .ci/sanitizers.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT     # its venvs and builds take gigabytes: do not leave them behind
tests=("$@")
[ $# -eq 0 ] && tests=(-q -x tests/test_reference.py tests/test_api.py tests/test_threads.py
                       -k "not subprocess and not types_as_a_user_sees_them")   # (mypy is not run under ASan)

python3 -m venv "$work/asan"
"$work/asan/bin/python" -m pip install --quiet --upgrade pip
"$work/asan/bin/python" -m pip install --quiet "pytest>=7" "hypothesis>=6" numpy scipy threadpoolctl
echo "== build with -fsanitize=address,undefined"
FASTLSTM_DEBUG_CHECKS=1 \
FASTLSTM_EXTRA_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
FASTLSTM_EXTRA_LDFLAGS="-fsanitize=address,undefined" \
    "$work/asan/bin/python" -m pip install --quiet --no-cache-dir "$repo"
asan_lib="$(gcc -print-file-name=libasan.so)"
ubsan_lib="$(gcc -print-file-name=libubsan.so)"
echo "== tests under ASan/UBSan"
(cd "$repo" && LD_PRELOAD="$asan_lib $ubsan_lib" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 "$work/asan/bin/pytest" -p no:cacheprovider "${tests[@]}")

echo "== valgrind memcheck"
python3 -m venv "$work/plain"
"$work/plain/bin/python" -m pip install --quiet --upgrade pip
"$work/plain/bin/python" -m pip install --quiet "$repo"
cat > "$work/small_run.py" <<'PY'
import numpy as np, fastlstm
rng = np.random.default_rng(0)
for kw in (dict(), dict(num_layers=2, bidirectional=True, proj_size=3), dict(peepholes=True, clip=1.0, dtype=np.float64)):
    m = fastlstm.LSTM(5, 7, seed=0, **kw)
    m(rng.standard_normal((4, 3, 5)), lengths=[4, 1, 2])
s = fastlstm.LSTM(5, 7, seed=0).stream(2)
for _ in range(3):
    s.step(rng.standard_normal((2, 5)))
print("small run done")
PY
# CPython and the dynamic loader have known memcheck reports of their own (dl-load.c, obmalloc): the check
# fails on any error record whose stack passes through fastlstm's extension module.
(cd "$work" && PYTHONMALLOC=malloc OMP_NUM_THREADS=2 valgrind --tool=memcheck --errors-for-leak-kinds=none \
    --num-callers=40 --log-file="$work/memcheck.log" "$work/plain/bin/python" small_run.py)
python3 - "$work/memcheck.log" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
records = [r for r in re.split(r"\n==\d+== \n", text) if re.search(r"Invalid|uninitialised|Mismatched|overlap", r)]
ours = [r for r in records if "_kernels" in r]
print(f"memcheck: {len(records)} error records in all, {len(ours)} in fastlstm's module")
for r in ours[:5]:
    print(r)
sys.exit(1 if ours else 0)
PY
echo "sanitizers.sh: all passed"
