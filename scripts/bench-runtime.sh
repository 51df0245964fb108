#!/usr/bin/env bash
# Benchmark: acs's runtime against diffusers on this CPU, same model and pairs, one run; prints
# the ratio. Arguments go to scripts/bench_runtime.py (--topology, --size, --steps, --pairs,
# --batch-pairs, --threads). Uses the test command's cached virtual environment.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${ACS_VENV:-$HOME/.cache/acs/venv}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --bin acs
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
"$target/release/acs" model init-tiny "$scratch/tiny" > /dev/null
HF_HUB_OFFLINE=1 "$venv/bin/python" -W ignore scripts/bench_runtime.py --acs "$target/release/acs" \
    --tokenizer "$scratch/tiny/tokenizer" "$@"
