#!/usr/bin/env bash
# The GPU check (scripts/gpu_check.py): parity against the CPU, determinism, and the benchmark
# against diffusers, in one call. On a GPU machine with PyTorch and diffusers, no Rust and no
# network, given an acs binary built with `--features cuda` here (scripts/build-cuda.sh writes
# a stripped, xz-compressed one):
#
#     scripts/gpu-check.sh --acs acs-cuda.xz --out gpu-check-out
#
# Here, on a small configuration on the CPU (the test command runs this):
#
#     scripts/gpu-check.sh --device cpu --small --acs target/release/acs --out /tmp/gpu-check
#
# Options: --device cuda|cuda:N|cpu (default cuda), --small, --acs PATH (a binary or a .xz of
# one; default $ACS_BIN, else the release build), --out DIR (default ./gpu-check-out),
# --budget SECONDS (benchmark rows after it are skipped; default 450). Python: $ACS_PYTHON,
# else the test venv's, else python3.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
acs="${ACS_BIN:-${CARGO_TARGET_DIR:-$here/../target}/release/acs}"
out="gpu-check-out"
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --acs) acs="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
python="${ACS_PYTHON:-}"
if [ -z "$python" ]; then
    venv="${ACS_VENV:-$HOME/.cache/acs/venv}"
    if [ -x "$venv/bin/python" ]; then python="$venv/bin/python"; else python=python3; fi
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
case "$acs" in
    *.xz) xz -dc "$acs" > "$scratch/acs"; chmod +x "$scratch/acs"; acs="$scratch/acs" ;;
esac
# The CUDA libraries a cuda build of acs links against (libcublas, libcurand, libcudart,
# libnvrtc) ship in PyTorch's nvidia wheels; the driver provides libcuda.
nvidia_libs="$("$python" - <<'PY' 2>/dev/null || true
import glob, os, site
dirs = []
for base in site.getsitepackages():
    dirs += [d for d in glob.glob(os.path.join(base, "nvidia", "*", "lib")) + glob.glob(os.path.join(base, "nvidia", "*", "*", "lib")) if os.path.isdir(d)]
print(":".join(dirs))
PY
)"
if [ -n "$nvidia_libs" ]; then
    export LD_LIBRARY_PATH="$nvidia_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 ACS_HOME="$scratch/home"
"$python" -W ignore "$here/gpu_check.py" --acs "$acs" --out "$out" "${args[@]}"
