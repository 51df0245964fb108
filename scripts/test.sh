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

# One profile and one feature set for everything, so dependencies compile once.
cargo test --release --workspace

# Fuzz smoke: every cargo-fuzz target runs briefly from its committed corpus (longer runs:
# docs/fuzzing.md). cargo-fuzz needs the nightly toolchain; both are installed when missing.
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
fuzz_scratch="$(mktemp -d)"
for target in $(cargo +nightly fuzz list); do
    mkdir -p "$fuzz_scratch/$target"
    log="$fuzz_scratch/$target.log"
    if ! cargo +nightly fuzz run --sanitizer none "$target" "$fuzz_scratch/$target" \
        "fuzz/corpus/$target" -- -max_total_time="${ACS_FUZZ_SECONDS:-10}" -rss_limit_mb=2048 \
        -timeout=30 >"$log" 2>&1; then
        cat "$log"
        echo "fuzz smoke: $target failed" >&2
        exit 1
    fi
    echo "fuzz smoke: $target: $(grep -c . "$log") log lines, $(grep -o 'exec/s: [0-9]*' "$log" | tail -n 1)"
done
rm -rf "$fuzz_scratch"

target="${CARGO_TARGET_DIR:-target}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
ACS_HOME="$scratch/home" "$target/release/acs" build \
    --manifest manifests/smoke.toml --out "$scratch/smoke"
ACS_BIN="$target/release/acs" ACS_SMOKE_DIR="$scratch/smoke" \
    ACS_TINY_DIR="$scratch/home/models/tiny-sd-v1" HF_HOME="$scratch/hf" HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 \
    "$venv/bin/python" -m pytest -q tests/python
