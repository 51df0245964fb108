#!/usr/bin/env bash
# Builds `acs` with the `cuda` feature on a machine without a GPU or CUDA libraries, for copying
# to a GPU machine (scripts/gpu-check.sh runs there). nvcc and the headers come from NVIDIA's
# PyPI wheels (scripts/cuda-env.sh). candle links the CUDA libraries dynamically, so the link
# needs libcuda, libcublas, libcublasLt, libcurand, libnvrtc: this script writes stub libraries
# with their SONAMEs and the symbols the build references (empty functions, never run) into the
# wheel's lib folder, which cudarc's build script already passes to the linker. At run time the
# GPU machine's driver and PyTorch's nvidia wheels provide the real ones (gpu-check.sh puts them
# on LD_LIBRARY_PATH).
#
#     scripts/build-cuda.sh [OUT.xz]      (default: target/acs-cuda.xz)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${CARGO_TARGET_DIR:-target}/acs-cuda.xz}"
. scripts/cuda-env.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}-cuda"
lib="$acs_cuda_prefix/lib"
# First pass: everything compiles; the final link may fail for want of the libraries.
cargo build --release --features cuda -p acs-builder --bin acs 2>/dev/null || true
if [ ! -e "$lib/libcuda.so" ]; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    archives=$(ls "$CARGO_TARGET_DIR"/release/deps/libcudarc-*.rlib \
        "$CARGO_TARGET_DIR"/release/deps/libcandle_core-*.rlib 2>/dev/null; \
        find "$CARGO_TARGET_DIR/release/build" -name 'libmoe.a' 2>/dev/null)
    nm -u --format=just-symbols $archives 2>/dev/null | sort -u > "$work/undefined"
    stub() { # stub SONAME LINKNAME PATTERN
        grep -E "$3" "$work/undefined" | sed 's/$/(void) {}/; s/^/void /' > "$work/$2.c" || true
        gcc -shared -fPIC -o "$lib/$1" -Wl,-soname,"$1" "$work/$2.c"
        ln -sf "$1" "$lib/$2.so"
    }
    stub libcuda.so.1 libcuda '^cu[A-Z]'
    stub libcublas.so.13 libcublas '^cublas[A-Z]'
    stub libcublasLt.so.13 libcublasLt '^cublasLt'
    stub libcurand.so.10 libcurand '^curand'
    stub libnvrtc.so.13 libnvrtc '^nvrtc'
    if [ ! -e "$lib/libcudart.so" ]; then
        ln -sf "$(ls "$lib"/libcudart.so.13* | head -n 1)" "$lib/libcudart.so"
    fi
fi
cargo build --release --features cuda -p acs-builder --bin acs
strip -o "$CARGO_TARGET_DIR/release/acs-stripped" "$CARGO_TARGET_DIR/release/acs"
xz -6 -T0 -c "$CARGO_TARGET_DIR/release/acs-stripped" > "$out"
ls -l "$out"
