#!/usr/bin/env bash
# The kernels on aarch64, from this x86-64 machine: tests/native (the kernels against a plain C reference in
# float and double, odd H and B > 1, one thread and OpenMP teams, and the kernels' flush-to-zero mode; see
# tests/native/kernel_test.c) cross-compiled with Debian's gcc-aarch64-linux-gnu, statically linked, and run
# under qemu-user; once with OpenMP (the static libgomp) and once without (the serial shims); then compiled
# by clang for aarch64 (the compiler of Apple silicon Macs, here with Linux's ABI), without OpenMP.
# Installs the cross compiler, clang and qemu-user with apt-get when they are missing.
# Usage: bash .ci/aarch64.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

missing=()
for pkg in gcc-aarch64-linux-gnu libc6-dev-arm64-cross clang; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
command -v qemu-aarch64 >/dev/null || command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=(); [ "$(id -u)" -ne 0 ] && sudo=(sudo)
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" apt-get install -y -q "${missing[@]}"
fi
qemu="$(command -v qemu-aarch64 || command -v qemu-aarch64-static)"
aarch64-linux-gnu-gcc --version | head -1
"$qemu" --version | head -1

native=(tests/native/kernel_test.c tests/native/reference.c tests/native/packing.c)
for compiler in "aarch64-linux-gnu-gcc -fopenmp" aarch64-linux-gnu-gcc "clang --target=aarch64-linux-gnu"; do
    echo "== tests/native built by $compiler for aarch64, under qemu-aarch64"
    # (the static libgomp's dlopen draws a link-time warning that does not concern a program without plugins)
    $compiler -static -O2 -Wall -Wextra -Werror -Isrc "${native[@]}" -lm \
        -o "$work/kernel_test" 2> >(grep -v "dlopen\|in function .goacc_profiling_initialize" >&2)
    aarch64-linux-gnu-readelf -h "$work/kernel_test" | grep -q "Machine: *AArch64"
    if aarch64-linux-gnu-readelf -l "$work/kernel_test" | grep -q INTERP; then
        echo "kernel_test is not statically linked"
        exit 1
    fi
    if "$qemu" "$work/kernel_test" > "$work/native.log"; then
        grep -v '^ok  ' "$work/native.log"
    else
        cat "$work/native.log"
        exit 1
    fi
    $compiler -static -O2 -Wall -Wextra -Werror -Isrc tests/native/gru_test.c -lm \
        -o "$work/gru_test" 2> >(grep -v "dlopen\|in function .goacc_profiling_initialize" >&2)
    if "$qemu" "$work/gru_test" > "$work/native.log"; then
        grep -v '^ok  ' "$work/native.log"
    else
        cat "$work/native.log"
        exit 1
    fi
done
echo "aarch64.sh: all passed"
