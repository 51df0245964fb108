#!/usr/bin/env bash
# Benchmark: acs's CPU runtime against diffusers on every case of issue 16 (tiny / small / medium
# topologies, the full-size SD 1.5 UNet call, VAE decode and load), both sides in one run, ratios
# printed as a table. Arguments go to scripts/bench_suite.py (--cases, --threads).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${ACS_VENV:-$HOME/.cache/acs/venv}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --bin acs
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
"$target/release/acs" model init-tiny "$scratch/tiny" > /dev/null
HF_HUB_OFFLINE=1 "$venv/bin/python" -W ignore scripts/bench_suite.py --acs "$target/release/acs" \
    --tokenizer "$scratch/tiny/tokenizer" "$@"
