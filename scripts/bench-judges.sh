#!/usr/bin/env bash
# Benchmark: acs's Q16 judge (CLIP ViT-L/14 in Rust) against transformers on this CPU, same
# random weights and images, one run; prints images per second and the ratio. Arguments go to
# scripts/bench_judges.py (--images, --size, --batch, --threads, --models). The random tower is
# saved once under ~/.cache/acs/bench-models (about 1.2 GB). Uses the test command's cached
# virtual environment. ACS_BIN: an acs binary to time instead of building target/release/acs.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${ACS_VENV:-$HOME/.cache/acs/venv}"
if [ -z "${ACS_BIN:-}" ]; then
    target="${CARGO_TARGET_DIR:-target}"
    cargo build --release --bin acs
    ACS_BIN="$target/release/acs"
fi
HF_HUB_OFFLINE=1 "$venv/bin/python" -W ignore scripts/bench_judges.py --acs "$ACS_BIN" "$@"
