#!/usr/bin/env bash
# Runs every test: the Rust workspace (unit and end-to-end), then the Python peers (Hugging
# Face datasets, pyarrow, polars, scikit-image) on a freshly built smoke dataset.
# Python packages go into a cached virtual environment (ACS_VENV, default ~/.cache/acs/venv).
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

# One profile and one feature set for everything, so dependencies compile once. This also
# replays every fuzz corpus through the fuzz harness on stable Rust (tests/e2e/fuzz_corpus.rs);
# live fuzzing (nightly, cargo-fuzz) is scripts/fuzz.sh.
cargo test --release --workspace

target="${CARGO_TARGET_DIR:-target}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
ACS_HOME="$scratch/home" "$target/release/acs" build \
    --manifest manifests/smoke.toml --out "$scratch/smoke"
ACS_BIN="$target/release/acs" ACS_SMOKE_DIR="$scratch/smoke" \
    ACS_TINY_DIR="$scratch/home/models/tiny-sd-v1" HF_HOME="$scratch/hf" HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 \
    "$venv/bin/python" -m pytest -q tests/python
