#!/usr/bin/env bash
# Runs every test: the Rust workspace (unit and end-to-end; the smoke build's bytes on every CPU
# kernel path this machine runs, and under qemu as on CPUs without AVX-512 or AVX; set
# ACS_KERNEL_PATH=cpu-avx2 or cpu-generic to test as if on such a CPU), a compile of the `cuda` feature
# (no GPU needed), the Python peers (Hugging Face datasets, pyarrow, polars, scikit-image,
# torch, diffusers, transformers, nudenet) on a freshly built smoke dataset and the README's main
# job (the shapes demonstrator, checked against diffusers and its training record), the object-storage
# tests against moto's S3 server on 127.0.0.1 (tests/python/test_object_storage.py), and the GPU check
# script in its CPU mode. Python packages go into a cached virtual environment (ACS_VENV,
# default ~/.cache/acs/venv); the CUDA compiler wheels into another (scripts/cuda-env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${ACS_VENV:-$HOME/.cache/acs/venv}"
requirements=tests/python/requirements.txt
stamp="$venv/.acs-requirements"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! cmp -s "$requirements" "$stamp" 2>/dev/null; then
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet -r "$requirements"
    cp "$requirements" "$stamp"
fi

# qemu's user-mode emulator runs acs as if on a CPU without AVX-512 (Haswell) and without AVX
# (Nehalem), to check that the kernel paths forced here give those CPUs' bytes
# (tests/e2e/smoke_hashes.rs). Installed from Debian's packages where this user may (root, apt).
if ! command -v qemu-x86_64 > /dev/null && [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user; } \
        > /dev/null || echo "test.sh: qemu-user could not be installed; the emulated-CPU test will say so" >&2
fi

# A one-node Slurm cluster for tests/python/test_slurm_cluster.py (Debian's slurm-wlm and
# munge; the test starts and stops the daemons itself, on 127.0.0.1).
if ! command -v slurmctld > /dev/null && [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge; } \
        > /dev/null || echo "test.sh: slurm-wlm could not be installed; the Slurm test will say so" >&2
fi

# Azurite, Azure Blob Storage's emulator, for tests/python/test_azure_storage.py (from npm, into
# a cached folder beside the virtualenv).
azurite="${ACS_AZURITE_DIR:-$HOME/.cache/acs/azurite}"
if [ ! -x "$azurite/node_modules/.bin/azurite-blob" ]; then
    mkdir -p "$azurite"
    (cd "$azurite" && npm install --silent --no-audit --no-fund azurite@3.35.0) \
        || echo "test.sh: azurite could not be installed; the Azure tests will say so" >&2
fi

# One profile and one feature set for everything, so dependencies compile once: the default
# features plus `nudenet` (the NudeNet judge, which the default build leaves out). This also
# replays every fuzz corpus through the fuzz harness on stable Rust (tests/e2e/fuzz_corpus.rs);
# live fuzzing (nightly, cargo-fuzz) is scripts/fuzz.sh.
cargo test --release --workspace --features acs-builder/nudenet

# The GPU code paths compile (nvcc and headers from NVIDIA's wheels; no GPU, no driver).
# `cargo check`: a runnable cuda binary also needs the CUDA libraries (scripts/build-cuda.sh).
(
    . scripts/cuda-env.sh
    cargo check --release --features cuda -p acs-builder --lib --bins
)

target="${CARGO_TARGET_DIR:-target}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
ACS_HOME="$scratch/home" "$target/release/acs" build \
    --manifest manifests/smoke.toml --out "$scratch/smoke"
# The README's main job: the embedded shapes demonstrator's pairs.
ACS_HOME="$scratch/home" "$target/release/acs" build \
    --manifest manifests/shapes.toml --out "$scratch/shapes"
ACS_BIN="$target/release/acs" ACS_SMOKE_DIR="$scratch/smoke" ACS_SHAPES_DIR="$scratch/shapes" \
    ACS_TINY_DIR="$scratch/home/models/tiny-sd-v1" ACS_SHAPES_MODEL_DIR="$scratch/home/models/shapes-sd-v1" \
    HF_HOME="$scratch/hf" HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 \
    ACS_AZURITE="$azurite/node_modules/.bin/azurite-blob" \
    "$venv/bin/python" -m pytest -q tests/python

# The GPU check's harness, on a small configuration on the CPU.
ACS_VENV="$venv" scripts/gpu-check.sh --device cpu --small --acs "$target/release/acs" \
    --out "$scratch/gpu-check"
