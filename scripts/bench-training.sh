#!/usr/bin/env bash
# Benchmark: the cost of the training outputs (trajectory targets, change masks): the same pairs
# built with and without them, in one run. Arguments go to scripts/bench_training.py (--model,
# --size, --steps, --record, --pairs, --batch-pairs, --repeats, --threads).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${ACS_VENV:-$HOME/.cache/acs/venv}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --bin acs
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
"$target/release/acs" model init-tiny "$scratch/tiny" > /dev/null
HF_HUB_OFFLINE=1 "$venv/bin/python" -W ignore scripts/bench_training.py --acs "$target/release/acs" \
    --tokenizer "$scratch/tiny/tokenizer" "$@"
